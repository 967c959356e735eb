//! One replica's view of the log stream: the shared in-memory [`Index`], which stream message
//! holds which positions, and how far it has applied the stream.
//!
//! Every message is applied exactly once, in stream order, whoever wrote it: the replica's own
//! writer applies its batches as soon as JetStream acknowledges them ([`Log::apply_staged`]),
//! and the follower applies everything else ([`Log::apply_message`]); each skips what the other
//! already applied. A message written by another replica is checked before it is applied:
//! consecutive positions, and every entry's version and `prev_hash` following its loop's head.

use std::collections::{HashMap, VecDeque};

use closeloop_domain::LoopId;
use closeloop_store::backend::commit::Staging;
use closeloop_store::backend::entry;
use closeloop_store::backend::index::{HeadHash, Index};
use closeloop_store::{Hash, StoreError};

use crate::batch;

/// How many recent message ids a replica remembers, to recognise its own batch after a publish
/// whose acknowledgement was lost.
const RECENT_IDS: usize = 4096;

/// One batch message of the stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchAt {
    /// Its stream sequence.
    pub sequence: u64,
    /// The position of its first entry.
    pub first: u64,
}

/// What applying a message did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It was already applied.
    Before,
    /// It moved the log to this head position.
    Now(u64),
}

/// A replica's view of the log.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub index: Index,
    /// Batches in stream order; the genesis (sequence 1) is not one.
    batches: Vec<BatchAt>,
    /// The last stream sequence applied (0: not even the genesis).
    pub applied: u64,
    /// The last position applied.
    pub head: u64,
    recent_ids: VecDeque<(String, u64)>,
}

impl Log {
    /// The batch holding `position`, if it is applied.
    pub fn batch_of(&self, position: u64) -> Option<BatchAt> {
        if position == 0 || position > self.head {
            return None;
        }
        let at = self.batches.partition_point(|b| b.first <= position);
        at.checked_sub(1).map(|at| self.batches[at])
    }

    /// The batches holding positions `after + 1 ..= upto`, in order.
    pub fn batches_between(&self, after: u64, upto: u64) -> Vec<BatchAt> {
        let upto = upto.min(self.head);
        if after >= upto {
            return Vec::new();
        }
        let start = self
            .batches
            .partition_point(|b| b.first <= after + 1)
            .saturating_sub(1);
        self.batches[start..]
            .iter()
            .take_while(|b| b.first <= upto)
            .copied()
            .collect()
    }

    /// The stream sequence of a recent message with this `Nats-Msg-Id`.
    pub fn sequence_of_id(&self, id: &str) -> Option<u64> {
        self.recent_ids
            .iter()
            .rev()
            .find(|(seen, _)| seen == id)
            .map(|&(_, sequence)| sequence)
    }

    fn remember(&mut self, id: Option<&str>, sequence: u64) {
        if let Some(id) = id {
            if self.recent_ids.len() == RECENT_IDS {
                self.recent_ids.pop_front();
            }
            self.recent_ids.push_back((id.to_owned(), sequence));
        }
    }

    /// Applies the batch this replica staged and JetStream stored as message `sequence`.
    pub fn apply_staged(&mut self, sequence: u64, staging: &Staging, id: &str) -> Applied {
        if sequence <= self.applied {
            return Applied::Before;
        }
        debug_assert_eq!(
            sequence,
            self.applied + 1,
            "the fence admits only the next message"
        );
        staging.apply(&mut self.index);
        self.batches.push(BatchAt {
            sequence,
            first: staging.first_position(),
        });
        self.head = staging.next_position() - 1;
        self.applied = sequence;
        self.remember(Some(id), sequence);
        Applied::Now(self.head)
    }

    /// Applies message `sequence` of the stream, written by anyone, after checking it.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when it does not follow the log (a gap in positions, a version
    /// or chain link that does not follow its loop's head, bytes that do not decode), and
    /// [`StoreError::Backend`] when the stream skips a sequence: the caller fetches the
    /// missing ones first.
    pub fn apply_message(
        &mut self,
        sequence: u64,
        bytes: &[u8],
        id: Option<&str>,
    ) -> Result<Applied, StoreError> {
        if sequence <= self.applied {
            return Ok(Applied::Before);
        }
        if sequence != self.applied + 1 {
            return Err(StoreError::Backend(format!(
                "log stream message {} is missing before {sequence}",
                self.applied + 1
            )));
        }
        if sequence == 1 {
            batch::check_genesis(bytes)?;
            self.applied = 1;
            return Ok(Applied::Now(self.head));
        }
        let decoded = batch::decode(sequence, bytes)?;
        if decoded.first != self.head + 1 {
            return Err(StoreError::Corrupt {
                position: self.head + 1,
                detail: format!(
                    "log stream message {sequence} starts at position {} where {} was due",
                    decoded.first,
                    self.head + 1
                ),
            });
        }
        // Check the whole batch before changing anything.
        let mut heads: HashMap<LoopId, (u64, Hash)> = HashMap::new();
        let mut checked = Vec::with_capacity(decoded.entries.len());
        for (offset, bytes) in decoded.entries.iter().enumerate() {
            let position = decoded.first + offset as u64;
            let (header, _) = entry::decode(position, bytes)?;
            let loop_id = header.parsed_loop_id(position)?;
            let (version, head_hash) = match heads.get(&loop_id) {
                Some(&head) => head,
                None => match self.index.head(&loop_id) {
                    (version, HeadHash::Known(hash)) => (version, hash),
                    (_, HeadHash::OfEntry(_)) => {
                        unreachable!("a replica's index keeps every loop's head hash")
                    }
                },
            };
            if header.version != version + 1 || header.prev_hash != head_hash {
                return Err(StoreError::Corrupt {
                    position,
                    detail: format!(
                        "entry is version {} of loop {loop_id}, which is at version {version}, \
                         or does not chain onto its last entry",
                        header.version
                    ),
                });
            }
            heads.insert(loop_id.clone(), (header.version, header.hash));
            checked.push((
                loop_id,
                header.source.to_owned(),
                header.event_id.to_owned(),
                position,
                header.hash,
            ));
        }
        for (loop_id, source, event_id, position, hash) in checked {
            self.index
                .insert(&loop_id, &source, &event_id, position, hash);
        }
        self.batches.push(BatchAt {
            sequence,
            first: decoded.first,
        });
        self.head = decoded.first + decoded.entries.len() as u64 - 1;
        self.applied = sequence;
        self.remember(id, sequence);
        Ok(Applied::Now(self.head))
    }
}

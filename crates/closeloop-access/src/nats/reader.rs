//! Reading the access log's stream: its tail (for the publisher's fence and stamps), the first
//! message with an entry after a time (a binary search by sequence), and a bounded scan from
//! there, message by message.
//!
//! Every message holds entries as JSON lines, and times strictly increase along the stream
//! (see the [module](super) docs), so "the newest entry of the first message at or after
//! sequence `s`" grows with `s`: that is what the binary search relies on. It reads the
//! entries' own times, not the messages' (a message is stored a little after the read it
//! records, and a clock that stepped back makes its entries later than it), so `after` stays
//! an exact cursor. Every request is a message get from the stream's leader — not a direct get,
//! which a lagging follower may answer, and not a consumer, whose creation in a cluster goes
//! through the JetStream meta leader and timed out while a restarted node rejoined — so a query
//! sees every entry acknowledged before it, whichever process recorded it, and needs no more
//! of the cluster than recording does.

use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use futures::StreamExt;
use jiff::Timestamp;

/// How many messages a query asks the stream leader for at once.
const READ_AHEAD: usize = 16;

use super::unavailable;
use crate::{AccessEntry, AccessLogError, AccessQuery};

/// The end of the stream as a writer must know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The stream's last sequence (0 for a stream never written to). Messages removed by age
    /// or pruning keep it: JetStream never reuses a sequence.
    pub(crate) seq: u64,
    /// The time of the newest entry still in the stream (in the message at `seq`, unless that
    /// one was removed); `None` when the stream holds none.
    pub(crate) last_at: Option<Timestamp>,
}

/// Reads one access log stream; every request is bounded by `timeout`.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    stream: Stream,
    subject: String,
    timeout: Duration,
}

/// The entries of a message, and how many of its lines were not entries.
pub(crate) struct Decoded {
    pub(crate) entries: Vec<AccessEntry>,
    pub(crate) skipped: usize,
}

/// The entries in a message's payload, oldest first. Lines that are not entries (written by
/// something else, or damaged) are counted and skipped.
pub(crate) fn decode(payload: &[u8]) -> Decoded {
    let mut decoded = Decoded {
        entries: Vec::new(),
        skipped: 0,
    };
    for line in payload.split(|byte| *byte == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<AccessEntry>(line) {
            Ok(entry) => decoded.entries.push(entry),
            Err(_) => decoded.skipped += 1,
        }
    }
    if decoded.skipped > 0 {
        metrics::counter!("closeloop_access_log_skipped_lines_total")
            .increment(u64::try_from(decoded.skipped).unwrap_or(u64::MAX));
        tracing::warn!(
            skipped = decoded.skipped,
            "access log: skipped lines of the NATS stream that are not entries"
        );
    }
    decoded
}

/// The time of the newest entry of `message`, or when JetStream stored it if it holds no
/// entry (which Closeloop never writes).
fn newest(message: &StreamMessage) -> Timestamp {
    decode(&message.payload)
        .entries
        .last()
        .map_or_else(|| stored_at(message), |entry| entry.at)
}

/// When JetStream stored `message`.
fn stored_at(message: &StreamMessage) -> Timestamp {
    Timestamp::from_nanosecond(message.time.unix_timestamp_nanos()).unwrap_or(Timestamp::MIN)
}

impl Reader {
    /// A reader of `subject` in `stream`.
    pub(crate) fn new(stream: Stream, subject: String, timeout: Duration) -> Self {
        Self {
            stream,
            subject,
            timeout,
        }
    }

    /// The stream's name.
    pub(crate) fn stream_name(&self) -> &str {
        &self.stream.cached_info().config.name
    }

    /// Runs one request to JetStream within the timeout.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, AccessLogError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(unavailable(format!(
                "cannot {what} of the stream {}: {err}",
                self.stream_name()
            ))),
            Err(_) => Err(unavailable(format!(
                "NATS did not answer within {:?} when asked to {what} of the stream {}",
                self.timeout,
                self.stream_name()
            ))),
        }
    }

    /// The first and last sequence of the stream now, and how many messages it holds.
    pub(crate) async fn bounds(&self) -> Result<(u64, u64, u64), AccessLogError> {
        let info = self
            .bounded("read the state", self.stream.get_info())
            .await?;
        Ok((
            info.state.first_sequence,
            info.state.last_sequence,
            info.state.messages,
        ))
    }

    /// The stream's tail: its last sequence, then the newest message still there. The fence
    /// is the sequence (JetStream never reuses one, even when its message is gone), and the
    /// stamps follow the newest entry that still exists; should another writer append between
    /// the requests, the fence fails and the tail is read again.
    pub(crate) async fn tail(&self) -> Result<Tail, AccessLogError> {
        let (first, seq, messages) = self.bounds().await?;
        if messages == 0 {
            return Ok(Tail { seq, last_at: None });
        }
        if let Some(message) = self.message_at(seq).await? {
            return Ok(Tail {
                seq,
                last_at: Some(newest(&message)),
            });
        }
        // The last message was deleted by hand (age and pruning remove the oldest first, so
        // they would have emptied the stream). JetStream 2.9's "last message of the subject"
        // does not skip it, so find the newest one left by a binary search over sequences.
        let (mut low, mut high) = (first.max(1), seq);
        let mut last_left = None;
        while low < high {
            let middle = low + (high - low) / 2;
            match self.message_at_or_after(middle).await? {
                Some(message) if message.sequence < seq => {
                    low = message.sequence + 1;
                    last_left = Some(message);
                }
                _ => high = middle,
            }
        }
        Ok(Tail {
            seq,
            last_at: last_left.as_ref().map(newest),
        })
    }

    /// The first message at or after `seq`, if any.
    async fn message_at_or_after(&self, seq: u64) -> Result<Option<StreamMessage>, AccessLogError> {
        let request = async {
            match self
                .stream
                .get_first_raw_message_by_subject(&self.subject, seq)
                .await
            {
                Ok(message) => Ok(Some(message)),
                Err(err) if matches!(err.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(err) => Err(err),
            }
        };
        self.bounded("read a message", request).await
    }

    /// The sequence of the first message, between `first` and `last`, whose newest entry is
    /// later than `lower`; `None` when there is none. A binary search: about log2(last - first)
    /// requests, whatever the stream holds.
    pub(crate) async fn first_after(
        &self,
        lower: Timestamp,
        first: u64,
        last: u64,
    ) -> Result<Option<u64>, AccessLogError> {
        // Invariant: no message before `low` qualifies, and the first message at or after
        // `high` is `found` (qualifying) or there is none within `last`.
        let (mut low, mut high) = (first.max(1), last.saturating_add(1));
        let mut found = None;
        while low < high {
            let middle = low + (high - low) / 2;
            match self.message_at_or_after(middle).await? {
                Some(message) if message.sequence <= last => {
                    if newest(&message) > lower {
                        high = middle;
                        found = Some(message.sequence);
                    } else {
                        low = message.sequence + 1;
                    }
                }
                // Nothing from `middle` to `last`.
                _ => high = middle,
            }
        }
        Ok(found)
    }

    /// The entries later than `lower` that `query` asks for, reading the messages from
    /// `start` to `last` in order and stopping as soon as the query's limit is reached. Each
    /// message is one request to the stream leader, [`READ_AHEAD`] of them in flight, so a
    /// query reads at most that many messages past the one that fills it.
    pub(crate) async fn scan(
        &self,
        start: u64,
        last: u64,
        lower: Timestamp,
        query: &AccessQuery,
    ) -> Result<Vec<AccessEntry>, AccessLogError> {
        let want = query.limit.get();
        let mut found = Vec::with_capacity(want.min(128));
        let mut messages = futures::stream::iter(start..=last)
            .map(|seq| self.message_at(seq))
            .buffered(READ_AHEAD);
        while let Some(message) = messages.next().await {
            // A sequence without a message was deleted: there is nothing to read there.
            let Some(message) = message? else {
                continue;
            };
            for entry in decode(&message.payload).entries {
                if entry.at > lower && query.matches(&entry) {
                    found.push(entry);
                    if found.len() >= want {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }

    /// The message at `seq`, if it is there.
    async fn message_at(&self, seq: u64) -> Result<Option<StreamMessage>, AccessLogError> {
        let request = async {
            match self.stream.get_raw_message(seq).await {
                Ok(message) => Ok(Some(message)),
                Err(err) if matches!(err.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
                Err(err) => Err(err),
            }
        };
        self.bounded("read a message", request).await
    }

    /// Removes every message before `seq` (all of whose entries are past the retention).
    pub(crate) async fn purge_before(&self, seq: u64) -> Result<u64, AccessLogError> {
        let purged = self
            .bounded(
                "remove old messages",
                self.stream.purge().sequence(seq).into_future(),
            )
            .await?;
        Ok(purged.purged)
    }
}

//! Writes: keys for writing and erasures. Each write is planned on the mirror, published fenced
//! on the stream's last sequence, applied once acked; a fence that fails means another process
//! wrote first, so the mirror reads the tail and the write is planned again.

use std::time::Instant;

use futures::StreamExt;

use super::format::{KeyRecord, Record};
use super::io::{KeyStream, Published, unavailable};
use super::subjects::Topic;
use super::{Inner, State};
use crate::wrap::wrap_data_key;
use crate::{DataKey, KeyError, KeyRequest, KeyState};

/// How many erasures are in flight at once.
const ERASES_IN_FLIGHT: usize = 32;

/// The next step of a write, planned on the mirror.
enum Step {
    /// Nothing (more) to write: here is the key.
    Done(DataKey),
    /// Finish an interrupted erasure of the loop first: erase these messages.
    Erase(Vec<u64>),
    /// Publish a record, fenced.
    Publish(Box<Fenced>),
}

/// A record to publish, with the fences it is stored under.
struct Fenced {
    topic: Topic,
    record: Record,
    /// The stream's last sequence as the mirror has applied it.
    last_in_stream: u64,
    /// The subject's last sequence, when the write depends on it.
    last_on_subject: Option<u64>,
}

impl Inner {
    pub(super) async fn keys_for_writing(
        &self,
        requests: &[KeyRequest<'_>],
    ) -> Result<Vec<DataKey>, KeyError> {
        let stream = self.stream()?;
        let mut keys = Vec::with_capacity(requests.len());
        for request in requests {
            let deadline = Instant::now() + stream.timeout();
            loop {
                let step = self.lock().plan_key(request)?;
                match step {
                    Step::Done(key) => {
                        keys.push(key);
                        break;
                    }
                    Step::Erase(seqs) => self.erase_all(&seqs).await?,
                    Step::Publish(fenced) => {
                        if !self.publish(stream, *fenced).await? {
                            check_deadline(stream, deadline)?;
                            self.catch_up().await?;
                        }
                    }
                }
            }
        }
        Ok(keys)
    }

    pub(super) async fn destroy_loop(&self, loop_id: &str) -> Result<usize, KeyError> {
        let stream = self.stream()?;
        // Plan on the freshest view: the erasure record lists the keys it destroys.
        self.catch_up().await?;
        let deadline = Instant::now() + stream.timeout();
        let destroyed = loop {
            let (fenced, had_key) = {
                let state = self.lock();
                state.writable()?;
                let live = state.mirror.live_key(loop_id);
                if live.is_none() && state.mirror.is_erased(loop_id) {
                    break 0;
                }
                let fenced = Fenced {
                    topic: Topic::Erased(loop_id.to_owned()),
                    record: Record::Erased(live.into_iter().collect()),
                    last_in_stream: state.mirror.applied(),
                    last_on_subject: None,
                };
                (fenced, live.is_some())
            };
            if self.publish(stream, fenced).await? {
                break usize::from(had_key);
            }
            check_deadline(stream, deadline)?;
            self.catch_up().await?;
        };
        // From the erasure record on, every handle treats the keys as destroyed; now overwrite
        // the bytes of every message that held them or the loop's contact digests.
        let garbage = self.lock().mirror.garbage_of(loop_id);
        self.erase_all(&garbage).await?;
        if destroyed > 0 {
            tracing::info!(
                messages = garbage.len(),
                "destroyed a loop's keys in the key stream"
            );
        }
        Ok(destroyed)
    }

    /// Publishes a fenced record and applies it; `false` when a fence failed.
    async fn publish(&self, stream: &KeyStream, fenced: Fenced) -> Result<bool, KeyError> {
        let subject = fenced.topic.subject();
        let payload = fenced.record.encode();
        match stream
            .publish(
                subject.clone(),
                payload.clone(),
                fenced.last_in_stream,
                fenced.last_on_subject,
            )
            .await?
        {
            Published::At(seq) => {
                self.applied_own(seq, &subject, &payload).await?;
                Ok(true)
            }
            Published::Conflict => Ok(false),
        }
    }

    /// Erases the messages at `seqs` (overwriting their bytes) and forgets them.
    pub(super) async fn erase_all(&self, seqs: &[u64]) -> Result<(), KeyError> {
        let stream = self.stream()?;
        let mut erasing = futures::stream::iter(seqs.iter().copied())
            .map(|seq| async move { stream.erase(seq).await.map(|()| seq) })
            .buffer_unordered(ERASES_IN_FLIGHT);
        let mut first_error = None;
        while let Some(erased) = erasing.next().await {
            match erased {
                Ok(seq) => self.lock().mirror.erased(seq),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl State {
    /// What writing `request` needs next.
    fn plan_key(&self, request: &KeyRequest<'_>) -> Result<Step, KeyError> {
        let master = self.writable()?;
        let loop_id = request.loop_id;
        let applied = self.mirror.applied();
        if let Some(id) = self.mirror.live_key(loop_id) {
            if let Some(digest) = request.contact
                && !self.mirror.has_contact(loop_id, &digest)
            {
                return Ok(Step::Publish(Box::new(Fenced {
                    topic: Topic::Contact(loop_id.to_owned()),
                    record: Record::Contact(digest),
                    last_in_stream: applied,
                    last_on_subject: None,
                })));
            }
            return match self.key_state(loop_id, id, true)? {
                Some(KeyState::Live(key)) => Ok(Step::Done(key)),
                other => Err(KeyError::corrupt(format!(
                    "the live key {id} of a loop reads as {other:?}"
                ))),
            };
        }
        let leftovers = self.mirror.garbage_of(loop_id);
        if !leftovers.is_empty() {
            return Ok(Step::Erase(leftovers));
        }
        let epoch = self
            .mirror
            .meta()
            .map(|meta| meta.record.epoch)
            .unwrap_or_default();
        // The fence on the stream's last sequence makes the message's sequence, the key's id,
        // known before it is sent: the id is bound into the wrapping.
        let id = applied + 1;
        let key = DataKey::generate(id);
        Ok(Step::Publish(Box::new(Fenced {
            topic: Topic::Key(loop_id.to_owned()),
            record: Record::Key(KeyRecord {
                epoch,
                id,
                wrapped: wrap_data_key(&master, loop_id, &key),
                digest: request.contact,
            }),
            last_in_stream: applied,
            last_on_subject: Some(0),
        })))
    }
}

/// Fails a write that kept losing the race to the stream for the whole timeout.
fn check_deadline(stream: &KeyStream, deadline: Instant) -> Result<(), KeyError> {
    if Instant::now() < deadline {
        Ok(())
    } else {
        Err(unavailable(
            stream.name(),
            "writing to the key stream",
            format_args!(
                "other processes kept writing first for {} ms",
                stream.timeout().as_millis()
            ),
        ))
    }
}

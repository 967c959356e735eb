//! The writer thread: group commit onto the stream, one fenced message per batch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use closeloop_store::backend::commit::{Job, Reply, Staging, StoredEntries};
use closeloop_store::chain::Hash;
use closeloop_store::{AppendError, AppendOutcome, Committed, StoreError};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use closeloop_store::backend::entry;
use futures::StreamExt;

use crate::log::{Applied, BatchAt, Log};
use crate::{Shared, batch, follower};

/// How many fences in a row one batch may lose to other replicas before its appends fail.
pub const MAX_FENCE_ATTEMPTS: u32 = 64;

/// The longest pause between two tries of one publish.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long one publish waits for its acknowledgement before it is sent again (same id, same
/// fence): an acknowledgement lost in a leader change costs this, not the whole request timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How one fenced publish ended.
enum Published {
    /// Stored as this stream sequence.
    At(u64),
    /// Someone else wrote since this replica's last applied message.
    FenceLost,
    /// NATS did not take it in time; it may or may not be stored.
    Failed(String),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    runtime: Handle,
    /// Makes every attempt's message id unique across replicas and restarts.
    writer_id: String,
    attempts: u64,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, runtime: Handle) -> Self {
        Self {
            shared,
            runtime,
            writer_id: uuid::Uuid::new_v4().simple().to_string(),
            attempts: 0,
        }
    }

    /// Takes batches of jobs until every sender is gone.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let max_events = self.shared.options.max_batch_events.max(1);
        let max_bytes = self.shared.max_message_bytes;
        let mut carried: Option<Job> = None;
        loop {
            let Some(first) = carried.take().or_else(|| jobs.blocking_recv()) else {
                return;
            };
            let mut events = first.request.event_count();
            let mut bytes = batch::BATCH_HEADER + first.request.max_entry_bytes();
            let mut batch = vec![first];
            while events < max_events {
                let Ok(job) = jobs.try_recv() else { break };
                let size = job.request.max_entry_bytes();
                if bytes + size > max_bytes {
                    carried = Some(job);
                    break;
                }
                events += job.request.event_count();
                bytes += size;
                batch.push(job);
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Job>) {
        if let Some(reason) = self.shared.stopped() {
            answer_all(
                batch.into_iter().map(|job| job.reply),
                &StoreError::Stopped(reason),
            );
            return;
        }
        for _ in 0..MAX_FENCE_ATTEMPTS {
            let (staging, results, fence) = self.stage(&batch);
            if staging.entries().is_empty() {
                // Every job was a repeat or refused: nothing to write.
                reply(batch, results);
                return;
            }
            self.attempts += 1;
            let id = format!("{}-{}", self.writer_id, self.attempts);
            let payload = batch::encode(
                staging.first_position(),
                staging.entries().iter().map(|e| e.bytes.as_slice()),
            );
            let outcome = self.runtime.block_on(self.publish(payload, fence, &id));
            match outcome {
                Published::At(sequence) => {
                    self.applied(sequence, &staging, &id);
                    metrics::counter!("closeloop_events_appended_total")
                        .increment(staging.entries().len() as u64);
                    reply(batch, results);
                    return;
                }
                Published::FenceLost => {
                    metrics::counter!("closeloop_store_fences_lost_total").increment(1);
                    if let Err(err) = self.runtime.block_on(self.catch_up()) {
                        answer_all(batch.into_iter().map(|job| job.reply), &err);
                        return;
                    }
                    // A copy whose acknowledgement was lost may be the message that took the
                    // fence: then it is stored, and applied by the catch-up.
                    if self.shared.log().sequence_of_id(&id).is_some() {
                        self.publish_applied_head();
                        reply(batch, results);
                        return;
                    }
                }
                Published::Failed(reason) => {
                    // It may still have been stored: the next batch's fence finds out, and
                    // callers that retry with the same keys hear of the original.
                    answer_all(
                        batch.into_iter().map(|job| job.reply),
                        &StoreError::Backend(reason),
                    );
                    return;
                }
            }
        }
        answer_all(
            batch.into_iter().map(|job| job.reply),
            &StoreError::Backend(format!(
                "other replicas wrote to the log before this one {MAX_FENCE_ATTEMPTS} times in a \
                 row; try again"
            )),
        );
    }

    /// Stages every job against the log as this replica has applied it; returns the staging,
    /// each job's result, and the stream sequence the batch must follow.
    ///
    /// Staging holds the log for reading and so never waits on NATS: entries it lacks are
    /// fetched with the log let go, and the batch staged again (see the crate docs).
    fn stage(&self, batch: &[Job]) -> (Staging, Vec<Result<AppendOutcome, AppendError>>, u64) {
        let mut fetched = HashMap::new();
        for round in 1..=MAX_STAGING_ROUNDS {
            let log = self.shared.log();
            let mut staging = Staging::new(log.head + 1);
            let stored = StoredBatches {
                log: &log,
                shared: &self.shared,
                fetched: &fetched,
                missing: RefCell::default(),
                last_round: round == MAX_STAGING_ROUNDS,
            };
            let results = batch
                .iter()
                .map(|job| staging.stage(&log.index, &job.request, &stored))
                .collect();
            let missing = stored.missing.into_inner();
            if missing.is_empty() || round == MAX_STAGING_ROUNDS {
                let fence = log.applied;
                return (staging, results, fence);
            }
            drop(log);
            fetched.extend(self.runtime.block_on(self.fetch_entries(missing)));
        }
        unreachable!("the last round returns")
    }

    /// The entries at `wanted` (position, and the message that holds it), or why they could not
    /// be read. Only their headers are kept (the records are not read by staging), so a batch of
    /// repeats holds a few KiB an entry, not the messages or the records.
    async fn fetch_entries(&self, mut wanted: Vec<(BatchAt, u64)>) -> Vec<(u64, Fetched)> {
        wanted.sort_unstable_by_key(|&(at, position)| (at.sequence, position));
        wanted.dedup_by_key(|&mut (_, position)| position);
        let mut by_message: Vec<(BatchAt, Vec<u64>)> = Vec::new();
        for (at, position) in wanted {
            match by_message.last_mut() {
                Some((last, positions)) if last.sequence == at.sequence => positions.push(position),
                _ => by_message.push((at, vec![position])),
            }
        }
        let shared = &self.shared;
        futures::stream::iter(by_message)
            .map(|(at, positions)| async move {
                let message = shared.message(at.sequence).await;
                positions
                    .into_iter()
                    .map(|position| {
                        let entry = match &message {
                            Ok(message) => crate::entry_in(at.sequence, message, position)
                                .and_then(|entry| {
                                    entry
                                        .map(|entry| entry::without_record(position, entry))
                                        .transpose()
                                })
                                .map(|header| header.map(<[u8]>::to_vec))
                                .map_err(|err| FetchError::from(&err)),
                            Err(err) => Err(FetchError::from(err)),
                        };
                        (position, entry)
                    })
                    .collect::<Vec<_>>()
            })
            .buffered(FETCH_CONCURRENCY)
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    fn applied(&self, sequence: u64, staging: &Staging, id: &str) {
        let head = {
            let mut log = self
                .shared
                .log
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match log.apply_staged(sequence, staging, id) {
                Applied::Now(head) => head,
                // The follower applied the message first and publishes the head once it has
                // let go of the log: publish it here too, before the callers hear back, so
                // that they read what they wrote.
                Applied::Before => log.head,
            }
        };
        self.shared.publish_head(head);
    }

    /// Publishes the head of the log as this replica has applied it (after a catch-up whose
    /// messages the follower may have applied, and not yet published).
    fn publish_applied_head(&self) {
        let head = self.shared.log().head;
        self.shared.publish_head(head);
    }

    /// Publishes `payload` after stream message `fence`, retrying the same bytes under the same
    /// id until it is stored, the fence is lost, or the request timeout passes.
    async fn publish(&self, payload: Vec<u8>, fence: u64, id: &str) -> Published {
        let payload = bytes::Bytes::from(payload);
        let deadline = Instant::now() + self.shared.options.request_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id)
                .expected_last_sequence(fence);
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), async {
                self.shared
                    .js
                    .send_publish(self.shared.options.subject.clone(), message)
                    .await?
                    .await
            })
            .await;
            let error = match attempt {
                Ok(Ok(ack)) => return Published::At(ack.sequence),
                Ok(Err(err)) if err.kind() == PublishErrorKind::WrongLastSequence => {
                    return Published::FenceLost;
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => "no acknowledgement".to_owned(),
            };
            if Instant::now() + backoff >= deadline {
                return Published::Failed(format!(
                    "NATS did not store the batch within {} s ({error}); is a JetStream quorum up?",
                    self.shared.options.request_timeout.as_secs_f64()
                ));
            }
            tracing::warn!(%error, "publishing to the log failed; trying again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Applies every message the stream has beyond what this replica applied.
    async fn catch_up(&self) -> Result<(), StoreError> {
        let last = crate::last_sequence(&self.shared).await?;
        loop {
            let next = self.shared.log().applied + 1;
            if next > last {
                return Ok(());
            }
            let (payload, id) = follower::fetch(&self.shared, next).await?;
            follower::apply(&self.shared, next, payload, id.as_deref()).await?;
        }
    }
}

fn reply(batch: Vec<Job>, results: Vec<Result<AppendOutcome, AppendError>>) {
    for (job, result) in batch.into_iter().zip(results) {
        // A caller that stopped waiting has nothing to hear.
        let _ = job.reply.send(result);
    }
}

fn answer_all(replies: impl Iterator<Item = Reply>, err: &StoreError) {
    for reply in replies {
        let err = match err {
            StoreError::Stopped(reason) => StoreError::Stopped(reason.clone()),
            other => StoreError::Backend(other.to_string()),
        };
        let _ = reply.send(Err(err.into()));
    }
}

/// How many times one batch is staged before an entry staging needs and does not have in
/// memory is refused: a second round has every entry the first one missed, so more happen only
/// while the follower applies other replicas' writes under the same keys.
const MAX_STAGING_ROUNDS: u32 = 4;

/// How many messages staging fetches at once between two rounds.
const FETCH_CONCURRENCY: usize = 16;

/// An entry fetched between two rounds of staging: its header ([`entry::without_record`]),
/// `None` when the message the index names does not hold it, or why it could not be read, kept
/// to be told again.
type Fetched = Result<Option<Vec<u8>>, FetchError>;

/// A failed read kept for the next round; a [`StoreError`] cannot be cloned.
#[derive(Debug, Clone)]
enum FetchError {
    Backend(String),
    Corrupt { position: u64, detail: String },
}

impl From<&StoreError> for FetchError {
    fn from(err: &StoreError) -> Self {
        match err {
            StoreError::Corrupt { position, detail } => Self::Corrupt {
                position: *position,
                detail: detail.clone(),
            },
            StoreError::Backend(reason) => Self::Backend(reason.clone()),
            other => Self::Backend(other.to_string()),
        }
    }
}

impl From<&FetchError> for StoreError {
    fn from(err: &FetchError) -> Self {
        match err {
            FetchError::Backend(reason) => StoreError::Backend(reason.clone()),
            FetchError::Corrupt { position, detail } => StoreError::Corrupt {
                position: *position,
                detail: detail.clone(),
            },
        }
    }
}

/// The log stream's entries as staging reads them, while the writer holds the log for reading:
/// from the cache or from what an earlier round fetched, never from NATS. A replica's index
/// keeps every loop's head hash, so staging reads only idempotency keys here.
struct StoredBatches<'a> {
    log: &'a Log,
    shared: &'a Shared,
    /// Entries (their headers) by position, fetched since the batch was first staged.
    fetched: &'a HashMap<u64, Fetched>,
    /// Entries this round needed and had not: fetched before the next round.
    missing: RefCell<Vec<(BatchAt, u64)>>,
    last_round: bool,
}

impl StoredBatches<'_> {
    /// What `read` makes of the entry at `position` (`None` when its message does not hold
    /// it), if the entry is in memory.
    fn with_entry<R>(
        &self,
        at: BatchAt,
        position: u64,
        read: impl FnOnce(Option<&[u8]>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if let Some(fetched) = self.fetched.get(&position) {
            return match fetched {
                Ok(entry) => read(entry.as_deref()),
                Err(err) => Err(err.into()),
            };
        }
        if let Some(message) = self.shared.cache.get(at.sequence) {
            return read(crate::entry_in(at.sequence, &message, position)?);
        }
        if self.last_round {
            return Err(StoreError::Backend(format!(
                "the log kept moving while this append was checked against the entry at \
                 position {position}; try again"
            )));
        }
        self.missing.borrow_mut().push((at, position));
        // Staging stages nothing of a request whose read failed; the whole batch is staged
        // again once the entry is fetched.
        Err(StoreError::Backend(format!(
            "the entry at position {position} is read before the batch is staged again"
        )))
    }
}

impl StoredEntries for StoredBatches<'_> {
    fn confirm_key(
        &self,
        position: u64,
        source: &str,
        event_id: &str,
    ) -> Result<Option<Committed>, StoreError> {
        let Some(at) = self.log.batch_of(position) else {
            return Ok(None);
        };
        self.with_entry(at, position, |entry| match entry {
            Some(entry) => entry::committed_under_key(position, entry, source, event_id),
            None => Ok(None),
        })
    }

    fn entry_hash(&self, position: u64) -> Result<Hash, StoreError> {
        let missing = |detail: String| StoreError::Corrupt { position, detail };
        let at = self.log.batch_of(position).ok_or_else(|| {
            missing("no log stream message holds the entry, though the index points at it".into())
        })?;
        self.with_entry(at, position, |found| match found {
            Some(found) => Ok(entry::decode(position, found)?.0.hash),
            None => Err(missing(format!(
                "log stream message {} does not hold the entry",
                at.sequence
            ))),
        })
    }
}

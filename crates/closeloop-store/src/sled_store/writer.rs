//! The writer and flusher threads behind [`SledStore`](super::SledStore): group commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use closeloop_domain::{LoopEvent, LoopId};
use closeloop_keys::{ContactDigest, KeyRequest, KeyStore};
use tokio::sync::{mpsc, oneshot};

use super::index::Index;
use super::{FaultInjector, FaultPoint, Shared, entry};
use crate::chain::entry_hash;
use crate::record;
use crate::{
    AppendError, AppendOutcome, AppendRequest, Committed, ExpectedVersion, RequestDigest,
    StoreError,
};

/// An append on its way to the writer.
#[derive(Debug)]
pub(super) struct Job {
    pub request: Prepared,
    pub reply: Reply,
}

type Reply = oneshot::Sender<Result<AppendOutcome, AppendError>>;

/// An [`AppendRequest`] that passed validation, with its records encoded.
#[derive(Debug)]
pub(super) struct Prepared {
    loops: Vec<PreparedLoop>,
    event_count: usize,
}

#[derive(Debug)]
struct PreparedLoop {
    loop_id: LoopId,
    expected: ExpectedVersion,
    events: Vec<PreparedEvent>,
}

#[derive(Debug)]
struct PreparedEvent {
    source: String,
    event_id: String,
    request: Option<RequestDigest>,
    /// The record bytes, once sealed (see [`Writer::seal`]).
    record: Vec<u8>,
    /// The record before its personal data is sealed with its loop's key.
    draft: Option<record::Draft>,
    /// The keyed digest of the author's contact, for the key store's contact index.
    contact: Option<ContactDigest>,
}

/// Validates a request and encodes its records, up to sealing their personal data: everything
/// that needs no ordering.
pub(super) fn prepare(
    request: AppendRequest,
    key_store: Option<&dyn KeyStore>,
) -> Result<Prepared, AppendError> {
    if request.loops.is_empty() || request.loops.iter().any(|l| l.events.is_empty()) {
        return Err(AppendError::Invalid(
            "an append needs at least one event for every loop it names".to_owned(),
        ));
    }
    let mut loops = HashSet::new();
    let mut keys = HashSet::new();
    for append in &request.loops {
        if !append.requests.is_empty() && append.requests.len() != append.events.len() {
            return Err(AppendError::Invalid(format!(
                "loop {} has {} events but {} request digests; give one per event or none",
                append.loop_id,
                append.events.len(),
                append.requests.len()
            )));
        }
        if !loops.insert(&append.loop_id) {
            return Err(AppendError::Invalid(format!(
                "loop {} appears twice in one append",
                append.loop_id
            )));
        }
        for event in &append.events {
            if event.source.len() > entry::MAX_KEY_PART
                || event.event_id.len() > entry::MAX_KEY_PART
            {
                return Err(AppendError::Invalid(format!(
                    "an event's source and id may be at most {} bytes each",
                    entry::MAX_KEY_PART
                )));
            }
            if !keys.insert((&event.source, &event.event_id)) {
                return Err(AppendError::Invalid(format!(
                    "event ({:?}, {:?}) appears twice in one append",
                    event.source, event.event_id
                )));
            }
        }
    }
    let event_count = request.event_count();
    let mut loops = Vec::with_capacity(request.loops.len());
    let mut event_index = 0;
    for append in request.loops {
        let mut events = Vec::with_capacity(append.events.len());
        let mut requests = append.requests.into_iter();
        for event in append.events {
            let bound = requests.next().flatten();
            let draft = record::Draft::new(append.loop_id.as_str(), &event);
            if draft.max_len() > record::MAX_RECORD_BYTES {
                return Err(AppendError::TooLarge {
                    event_index,
                    size: draft.max_len(),
                    limit: record::MAX_RECORD_BYTES,
                });
            }
            event_index += 1;
            let contact = match (key_store, contact_of(&event)) {
                (Some(key_store), Some(contact)) => Some(
                    key_store
                        .contact_digest(contact)
                        .map_err(|err| StoreError::Backend(format!("key store: {err}")))?,
                ),
                _ => None,
            };
            events.push(PreparedEvent {
                record: Vec::new(),
                draft: Some(draft),
                contact,
                source: event.source,
                event_id: event.event_id,
                request: bound,
            });
        }
        loops.push(PreparedLoop {
            loop_id: append.loop_id,
            expected: append.expected,
            events,
        });
    }
    Ok(Prepared { loops, event_count })
}

/// Every event of a batch with its loop.
fn drafts(batch: &mut [Job]) -> impl Iterator<Item = (&LoopId, &mut PreparedEvent)> {
    batch
        .iter_mut()
        .flat_map(|job| job.request.loops.iter_mut())
        .flat_map(|l| l.events.iter_mut().map(|e| (&l.loop_id, e)))
}

/// The author's contact of a `feedback.received`, for the contact index.
fn contact_of(event: &closeloop_domain::Event) -> Option<&str> {
    match &event.payload {
        LoopEvent::FeedbackReceived(data) => data.author.as_ref()?.contact.as_deref(),
        _ => None,
    }
}

/// A batch the writer applied, waiting for its flush.
pub(super) struct Ticket {
    last_position: u64,
    /// New events in the batch (duplicates and refusals not counted).
    appended: u64,
    replies: Vec<(Reply, Result<AppendOutcome, AppendError>)>,
}

/// The writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    next_position: u64,
    max_batch_events: usize,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, next_position: u64, max_batch_events: usize) -> Self {
        Self {
            shared,
            next_position,
            max_batch_events,
        }
    }

    /// Takes batches of jobs until every sender is gone, handing each to the flusher.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>, tickets: &std_mpsc::Sender<Ticket>) {
        while let Some(first) = jobs.blocking_recv() {
            let mut events = first.request.event_count;
            let mut batch = vec![first];
            while events < self.max_batch_events {
                let Ok(job) = jobs.try_recv() else { break };
                events += job.request.event_count;
                batch.push(job);
            }
            let ticket = self.commit(batch);
            if tickets.send(ticket).is_err() {
                // The flusher is gone, so nothing can be made durable any more.
                self.shared.stop("the flusher thread ended".to_owned());
                break;
            }
        }
    }

    /// Seals the personal data of every record in the batch with its loop's key, creating the
    /// keys that do not exist yet in one durable step. Keys are made here, on the one writer
    /// thread, so two first writes to a loop never make two keys; and before the records that
    /// need them are written, so no durable record names a key that is not.
    fn seal(&self, batch: &mut [Job]) -> Result<(), String> {
        // The loops whose records need a key, each once (the batch may hold thousands), with
        // the contact to index; `index` finds a loop's place in `wanted`, and so its key.
        let mut index: HashMap<LoopId, usize> = HashMap::new();
        let mut wanted: Vec<(LoopId, Option<ContactDigest>)> = Vec::new();
        if self.shared.keys.is_some() {
            for (loop_id, event) in drafts(batch) {
                if !event.draft.as_ref().is_some_and(record::Draft::needs_key) {
                    continue;
                }
                match index.get(loop_id) {
                    Some(&at) => wanted[at].1 = wanted[at].1.or(event.contact),
                    None => {
                        index.insert(loop_id.clone(), wanted.len());
                        wanted.push((loop_id.clone(), event.contact));
                    }
                }
            }
        }
        let made = match self.shared.keys.as_deref() {
            Some(keys) if !wanted.is_empty() => {
                let requests: Vec<KeyRequest<'_>> = wanted
                    .iter()
                    .map(|(loop_id, contact)| KeyRequest {
                        loop_id: loop_id.as_str(),
                        contact: *contact,
                    })
                    .collect();
                keys.keys_for_writing(&requests)
                    .map_err(|err| format!("key store failed: {err}"))?
            }
            _ => Vec::new(),
        };
        for (loop_id, event) in drafts(batch) {
            if let Some(draft) = event.draft.take() {
                // `None` without a key store, or for a record with nothing personal.
                let key = index.get(loop_id).map(|&at| &made[at]);
                event.record = draft.finish(key);
            }
        }
        Ok(())
    }

    /// Stages every job of a batch and applies the writes in one atomic sled batch.
    fn commit(&mut self, mut batch: Vec<Job>) -> Ticket {
        let first_position = self.next_position;
        if let Some(reason) = self.shared.stopped() {
            return failed_ticket(
                batch.into_iter().map(|job| job.reply),
                &reason,
                first_position - 1,
            );
        }
        if let Err(reason) = self.seal(&mut batch) {
            // The key store is on the same disk: fail fast, as for a failed write.
            self.shared.stop(reason.clone());
            return failed_ticket(
                batch.into_iter().map(|job| job.reply),
                &reason,
                first_position - 1,
            );
        }
        let mut writes = sled::Batch::default();
        let mut staged = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        {
            let shared = Arc::clone(&self.shared);
            let Ok(mut index) = shared.index.write() else {
                // Only this thread writes the index: a poisoned lock means it panicked earlier
                // mid-batch, so the index cannot be trusted for new positions.
                let reason = "the store's index was left half-updated by a panic".to_owned();
                self.shared.stop(reason.clone());
                return failed_ticket(
                    batch.into_iter().map(|job| job.reply),
                    &reason,
                    first_position - 1,
                );
            };
            for job in batch {
                let result = self.stage(&mut index, &job.request, &mut staged, &mut writes);
                replies.push((job.reply, result));
            }
        }
        // The index now holds this batch's entries. If the write fails they stay there, past
        // the durable head, where no reader looks (reads stop at the durable head, and a lookup
        // of a key staged there fails once the store has stopped); the store never writes
        // again, so nothing is ever chained onto them.
        if self.next_position > first_position
            && let Err(err) = FaultInjector::check(self.shared.faults.as_ref(), FaultPoint::Apply)
                .and_then(|()| {
                    self.shared
                        .tree()
                        .apply_batch(writes)
                        .map_err(|e| e.to_string())
                })
        {
            let reason = format!("write failed: {err}");
            self.shared.stop(reason.clone());
            return failed_ticket(
                replies.into_iter().map(|(reply, _)| reply),
                &reason,
                first_position - 1,
            );
        }
        Ticket {
            last_position: self.next_position - 1,
            appended: self.next_position - first_position,
            replies,
        }
    }

    /// Checks one request against the index and, when it passes, adds its entries to the
    /// batch and the index. Nothing is changed for a request that fails.
    fn stage(
        &mut self,
        index: &mut Index,
        request: &Prepared,
        staged: &mut Vec<(String, String, Committed)>,
        writes: &mut sled::Batch,
    ) -> Result<AppendOutcome, AppendError> {
        // Idempotency: all keys known means a repeat of an earlier append; some means misuse,
        // and so does a key bound to another request than this one.
        let mut originals = Vec::with_capacity(request.event_count);
        for event in request.loops.iter().flat_map(|l| &l.events) {
            let original = self.original(index, staged, &event.source, &event.event_id)?;
            if let Some(original) = &original
                && RequestDigest::conflict(original.request, event.request)
            {
                return Err(AppendError::IdempotencyMismatch {
                    event_source: event.source.clone(),
                    event_id: event.event_id.clone(),
                });
            }
            originals.push(original);
        }
        if originals.iter().all(Option::is_some) {
            return Ok(AppendOutcome {
                committed: originals.into_iter().flatten().collect(),
                duplicate: true,
            });
        }
        if let Some(taken) = originals.iter().position(Option::is_some) {
            let event = request
                .loops
                .iter()
                .flat_map(|l| &l.events)
                .nth(taken)
                .expect("index within the request's events");
            return Err(AppendError::IdempotencyMismatch {
                event_source: event.source.clone(),
                event_id: event.event_id.clone(),
            });
        }

        // Optimistic concurrency: check every loop before writing anything.
        for append in &request.loops {
            let (version, _) = index.head(&append.loop_id);
            if !append.expected.admits(version) {
                return Err(AppendError::Conflict {
                    loop_id: append.loop_id.clone(),
                    expected: append.expected,
                    actual: version,
                });
            }
        }

        let mut committed = Vec::with_capacity(request.event_count);
        for append in &request.loops {
            let loop_id = append.loop_id.as_str();
            for event in &append.events {
                let (version, prev_hash) = index.head(&append.loop_id);
                let version = version + 1;
                let position = self.next_position;
                self.next_position += 1;
                let hash = entry_hash(position, version, loop_id, &prev_hash, &event.record);
                let header = entry::Header {
                    version,
                    prev_hash,
                    hash,
                    loop_id,
                    source: &event.source,
                    event_id: &event.event_id,
                    request: event.request,
                };
                writes.insert(
                    entry::key(position).to_vec(),
                    entry::encode(&header, &event.record),
                );
                index.insert(
                    &append.loop_id,
                    &event.source,
                    &event.event_id,
                    position,
                    hash,
                );
                let done = Committed {
                    loop_id: append.loop_id.clone(),
                    version,
                    position,
                    request: event.request,
                };
                staged.push((event.source.clone(), event.event_id.clone(), done.clone()));
                committed.push(done);
            }
        }
        Ok(AppendOutcome {
            committed,
            duplicate: false,
        })
    }

    /// Where an idempotency key was stored before, confirmed against the entry itself.
    fn original(
        &self,
        index: &Index,
        staged: &[(String, String, Committed)],
        source: &str,
        event_id: &str,
    ) -> Result<Option<Committed>, StoreError> {
        for position in index.candidates_for_key(source, event_id) {
            let confirmed = match staged.iter().find(|(_, _, done)| done.position == position) {
                Some((s, e, done)) => (s == source && e == event_id).then(|| done.clone()),
                None => self.shared.confirm_key(position, source, event_id)?,
            };
            if confirmed.is_some() {
                return Ok(confirmed);
            }
        }
        Ok(None)
    }
}

fn failed_ticket(replies: impl Iterator<Item = Reply>, reason: &str, last_position: u64) -> Ticket {
    Ticket {
        last_position,
        appended: 0,
        replies: replies
            .map(|reply| (reply, Err(StoreError::Stopped(reason.to_owned()).into())))
            .collect(),
    }
}

/// The flusher thread: one fsync for every batch waiting, then the durable head moves and
/// callers hear back.
///
/// The fsync itself runs on a helper thread and is given `deadline`: a disk that blocks a
/// flush indefinitely (seen with a full filesystem) stops the store instead of holding every
/// caller until its own timeout. Once the store has stopped — here, or in the writer — nothing
/// more is flushed or acknowledged: batches still waiting are answered with the error.
pub(super) fn run_flusher(
    shared: &Arc<Shared>,
    tickets: &std_mpsc::Receiver<Ticket>,
    deadline: Duration,
) {
    let mut fsync = Fsync::start(shared);
    while let Ok(first) = tickets.recv() {
        let mut pending = vec![first];
        pending.extend(tickets.try_iter());
        let last_position = pending.iter().map(|t| t.last_position).max().unwrap_or(0);
        if let Some(reason) = shared.stopped() {
            answer_failed(pending, &reason);
            continue;
        }
        match fsync.as_mut().map(|fsync| fsync.flush(deadline)) {
            Some(Ok(())) => {
                // Move the durable head before answering, so a caller that hears "stored"
                // and then reads finds its events.
                shared.durable.send_if_modified(|head| {
                    let moved = last_position > *head;
                    *head = (*head).max(last_position);
                    moved
                });
                metrics::counter!("closeloop_store_flushes_total").increment(1);
                metrics::counter!("closeloop_events_appended_total")
                    .increment(pending.iter().map(|t| t.appended).sum());
                for ticket in pending {
                    for (reply, result) in ticket.replies {
                        // A caller that stopped waiting has nothing to hear.
                        let _ = reply.send(result);
                    }
                }
            }
            Some(Err(failure)) => {
                let reason = failure.to_string();
                shared.stop(reason.clone());
                answer_failed(pending, &reason);
                if matches!(failure, FlushFailure::TimedOut(_)) {
                    // The helper thread is stuck in the disk; leave it behind.
                    fsync = None;
                }
            }
            None => {
                let reason = "the flush thread could not be started".to_owned();
                shared.stop(reason.clone());
                answer_failed(pending, &reason);
            }
        }
    }
    // The fsync thread holds the database open: wait for it, so that once the store is closed
    // the directory can be opened again. One stuck in the disk was left behind above.
    if let Some(fsync) = fsync {
        fsync.finish();
    }
}

fn answer_failed(pending: Vec<Ticket>, reason: &str) {
    for ticket in pending {
        for (reply, _) in ticket.replies {
            let _ = reply.send(Err(StoreError::Stopped(reason.to_owned()).into()));
        }
    }
}

/// Why an fsync did not succeed.
#[derive(Debug, thiserror::Error)]
enum FlushFailure {
    /// sled reported an error.
    #[error("flush failed: {0}")]
    Failed(String),
    /// It did not return within the deadline; the thread running it is stuck.
    #[error("flush did not finish within {} s; the disk may be full or failing", .0.as_secs_f64())]
    TimedOut(Duration),
    /// The thread running it is gone.
    #[error("the flush thread ended")]
    ThreadEnded,
}

/// A thread that runs sled's fsync on request, so the flusher can stop waiting for it.
struct Fsync {
    requests: std_mpsc::Sender<()>,
    done: std_mpsc::Receiver<Result<(), String>>,
    thread: std::thread::JoinHandle<()>,
}

impl Fsync {
    fn start(shared: &Arc<Shared>) -> Option<Self> {
        let (requests, request_rx) = std_mpsc::channel::<()>();
        let (done_tx, done) = std_mpsc::channel();
        let shared = Arc::clone(shared);
        let thread = std::thread::Builder::new()
            .name("closeloop-fsync".into())
            .spawn(move || {
                while request_rx.recv().is_ok() {
                    let result = FaultInjector::check(shared.faults.as_ref(), FaultPoint::Flush)
                        .and_then(|()| shared.db().flush().map(drop).map_err(|e| e.to_string()));
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self {
            requests,
            done,
            thread,
        })
    }

    /// Ends the thread and waits for it.
    fn finish(self) {
        drop(self.requests);
        // A panicked fsync thread has nothing left to release.
        let _ = self.thread.join();
    }

    fn flush(&mut self, deadline: Duration) -> Result<(), FlushFailure> {
        self.requests
            .send(())
            .map_err(|_| FlushFailure::ThreadEnded)?;
        match self.done.recv_timeout(deadline) {
            Ok(result) => result.map_err(FlushFailure::Failed),
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(FlushFailure::TimedOut(deadline)),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(FlushFailure::ThreadEnded),
        }
    }
}

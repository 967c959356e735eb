//! The writer thread behind [`SledStore`](super::SledStore): group commit.
//!
//! One thread takes every append waiting, applies them to sled as one batch, fsyncs, and only
//! then answers; meanwhile new appends queue up and become the next batch. When fewer come
//! than the last batch answered, it waits a moment for the rest (see [`Writer::gather`]).
//! Overlapping the two on two threads (a writer staging the next batch while a flusher fsyncs
//! the last) gained nothing on this kind of disk, where the fsyncs are the slow part: sled's
//! `apply_batch` took twice as long beside a concurrent flush, and the overlap split the
//! appends in flight into smaller batches, so more fsyncs for the same events. One thread
//! measured as fast in alternate runs, with one thread hand-off less per append. See
//! `docs/benchmarks.md`.

use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{FaultInjector, FaultPoint, Shared, keys};
use crate::backend::commit::{Job, Reply, StagedEntry, Staging};
use crate::{AppendError, AppendOutcome, StoreError};

/// The longest the writer waits for the callers of its last batch to append again (see
/// [`Writer::gather`]): about half an fsync of this machine's disk, so a batch of 64 callers
/// stays one batch. Measured in `docs/benchmarks.md`.
const GATHER_WAIT: Duration = Duration::from_micros(300);
/// How long the writer sleeps between looks for more jobs while it waits.
const GATHER_POLL: Duration = Duration::from_micros(20);

/// A batch the writer applied, waiting for its flush.
struct Ticket {
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
    flush_deadline: Duration,
    /// With a key pool: the log position its assignments were last synced through.
    key_sync: Option<u64>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        next_position: u64,
        max_batch_events: usize,
        flush_deadline: Duration,
        key_sync: Option<u64>,
    ) -> Self {
        Self {
            shared,
            next_position,
            max_batch_events,
            flush_deadline,
            key_sync,
        }
    }

    /// Takes batches of jobs until every sender is gone: each applied, flushed and answered
    /// before the next.
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut flusher = Flusher::start(&self.shared, self.flush_deadline, self.key_sync);
        // The callers the last batch answered: most of them append again at once.
        let mut expected = 1;
        while let Some(first) = jobs.blocking_recv() {
            let batch = self.gather(&mut jobs, first, expected);
            expected = batch.len();
            let ticket = self.commit(batch);
            flusher.flush(ticket);
        }
        flusher.finish();
    }

    /// The batch that starts with `first`: every job waiting, and, while fewer than `expected`
    /// came, whatever else arrives within [`GATHER_WAIT`].
    ///
    /// The callers a batch answers hear back at once, but take a moment to send their next
    /// append; without the wait the writer would start on the first few of them, and 64
    /// callers would be split into two batches and two fsyncs. A lone caller (`expected` 1)
    /// never waits.
    fn gather(&self, jobs: &mut mpsc::Receiver<Job>, first: Job, expected: usize) -> Vec<Job> {
        let mut events = first.request.event_count();
        let mut batch = vec![first];
        let mut deadline = None;
        while events < self.max_batch_events {
            match jobs.try_recv() {
                Ok(job) => {
                    events += job.request.event_count();
                    batch.push(job);
                }
                Err(mpsc::error::TryRecvError::Empty) if batch.len() < expected => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + GATHER_WAIT);
                    if Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(GATHER_POLL);
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Stages every job of a batch and writes its entries to sled atomically
    /// ([`write_entries`]).
    fn commit(&mut self, batch: Vec<Job>) -> Ticket {
        let first_position = self.next_position;
        if let Some(reason) = self.shared.stopped() {
            return failed_ticket(
                batch.into_iter().map(|job| job.reply),
                &reason,
                first_position - 1,
            );
        }
        let mut staging = Staging::new(first_position);
        let mut replies = Vec::with_capacity(batch.len());
        {
            // Only this thread changes the index, so it cannot move while the batch is staged.
            let index = self.shared.index();
            for job in batch {
                let result = staging.stage(&index, &job.request, &*self.shared);
                replies.push((job.reply, result));
            }
        }
        if !staging.entries().is_empty() {
            if let Err(err) = FaultInjector::check(self.shared.faults.as_ref(), FaultPoint::Apply)
                .and_then(|()| {
                    write_entries(self.shared.tree(), staging.entries()).map_err(|e| e.to_string())
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
            // The entries are past the durable head until the flusher moves it, so no reader
            // sees them before they are on disk.
            let Ok(mut index) = self.shared.index.write() else {
                // Only this thread writes the index: a poisoned lock means it panicked earlier
                // mid-batch, so the index cannot be trusted for new positions.
                let reason = "the store's index was left half-updated by a panic".to_owned();
                self.shared.stop(reason.clone());
                return failed_ticket(
                    replies.into_iter().map(|(reply, _)| reply),
                    &reason,
                    first_position - 1,
                );
            };
            staging.apply(&mut index);
        }
        self.next_position = staging.next_position();
        Ticket {
            last_position: self.next_position - 1,
            appended: self.next_position - first_position,
            replies,
        }
    }
}

/// Writes a batch's entries to sled, atomically: one entry is a plain insert (atomic by
/// itself), several one `apply_batch`. The insert skips what a batch costs on top — sled's
/// process-wide write lock, which waits for every reader of any tree, and a batch manifest
/// in the log: a lone entry took 28–41 µs to apply as a batch on this machine, 5–7 µs as an
/// insert.
fn write_entries(tree: &sled::Tree, entries: &[StagedEntry]) -> sled::Result<()> {
    if let [entry] = entries {
        tree.insert(keys::key(entry.position), entry.bytes.as_slice())?;
        return Ok(());
    }
    let mut writes = sled::Batch::default();
    for entry in entries {
        writes.insert(keys::key(entry.position).to_vec(), entry.bytes.as_slice());
    }
    tree.apply_batch(writes)
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

/// Makes applied batches durable: one fsync each, then the durable head moves and callers
/// hear back.
///
/// The fsync itself runs on a helper thread and is given a deadline: a disk that blocks a
/// flush indefinitely (seen with a full filesystem) stops the store instead of holding every
/// caller until its own timeout. Once the store has stopped — here, or in the writer — nothing
/// more is flushed or acknowledged: batches are answered with the error.
struct Flusher {
    shared: Arc<Shared>,
    /// `None` once a flush got stuck in the disk (the helper thread is left behind) or when
    /// the helper thread could not be started.
    fsync: Option<Fsync>,
    deadline: Duration,
    /// With a key pool: when and through which log position its assignments were last
    /// synced (see [`KEY_SYNC_EVERY`]).
    key_sync: Option<(Instant, u64)>,
}

/// Pooled keys given to new loops before their assignments are synced (one fsync of the key
/// file); after a crash, opening reads the records written since the last sync to recover
/// them (see `backend::key_recovery`), so this and [`KEY_SYNC_INTERVAL`] bound that work.
const KEY_SYNC_EVERY: usize = 128;
/// The longest a given key's assignment waits for a sync while appends keep coming.
const KEY_SYNC_INTERVAL: Duration = Duration::from_secs(1);

impl Flusher {
    fn start(shared: &Arc<Shared>, deadline: Duration, key_sync: Option<u64>) -> Self {
        Self {
            shared: Arc::clone(shared),
            fsync: Fsync::start(shared),
            deadline,
            key_sync: key_sync.map(|through| (Instant::now(), through)),
        }
    }

    fn flush(&mut self, ticket: Ticket) {
        let shared = &self.shared;
        if let Some(reason) = shared.stopped() {
            answer_failed(ticket, &reason);
            return;
        }
        match self.fsync.as_mut().map(|fsync| fsync.flush(self.deadline)) {
            Some(Ok(())) => {
                // Move the durable head before answering, so a caller that hears "stored"
                // and then reads finds its events.
                let last_position = ticket.last_position;
                shared.durable.send_if_modified(|head| {
                    let moved = last_position > *head;
                    *head = (*head).max(last_position);
                    moved
                });
                metrics::counter!("closeloop_store_flushes_total").increment(1);
                metrics::counter!("closeloop_events_appended_total").increment(ticket.appended);
                for (reply, result) in ticket.replies {
                    // A caller that stopped waiting has nothing to hear.
                    let _ = reply.send(result);
                }
                self.sync_key_assignments(last_position);
            }
            Some(Err(failure)) => {
                let reason = failure.to_string();
                shared.stop(reason.clone());
                answer_failed(ticket, &reason);
                if matches!(failure, FlushFailure::TimedOut(_)) {
                    // The helper thread is stuck in the disk; leave it behind.
                    self.fsync = None;
                }
            }
            None => {
                let reason = "the flush thread could not be started".to_owned();
                shared.stop(reason.clone());
                answer_failed(ticket, &reason);
            }
        }
    }

    /// Syncs pooled keys' assignments when enough are waiting, or when the last sync is a
    /// second old and the log has grown since: every record up to `durable` was sealed (and
    /// its key given) before it was written. Moving the watermark on while no key is given
    /// keeps the records a recovery reads to about a second's worth.
    fn sync_key_assignments(&mut self, durable: u64) {
        let (Some(keys), Some((last, through))) = (&self.shared.keys, self.key_sync) else {
            return;
        };
        let waiting = keys.unsynced_assignments();
        let due =
            waiting >= KEY_SYNC_EVERY || (durable > through && last.elapsed() >= KEY_SYNC_INTERVAL);
        if !due {
            return;
        }
        if let Err(err) = keys.sync_assignments(durable) {
            // The key store shares the disk: fail fast, as for a failed write.
            self.shared.stop(format!("key store failed: {err}"));
        }
        self.key_sync = Some((Instant::now(), durable));
    }

    /// The fsync thread holds the database open: wait for it, so that once the store is
    /// closed the directory can be opened again. One stuck in the disk was left behind.
    fn finish(self) {
        if let Some(fsync) = self.fsync {
            fsync.finish();
        }
    }
}

fn answer_failed(ticket: Ticket, reason: &str) {
    for (reply, _) in ticket.replies {
        let _ = reply.send(Err(StoreError::Stopped(reason.to_owned()).into()));
    }
}

/// Why an fsync did not succeed.
#[derive(Debug, thiserror::Error)]
enum FlushFailure {
    /// sled's flush or the fsync reported an error (the text says which).
    #[error("{0}")]
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
                        .and_then(|()| shared.make_durable());
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

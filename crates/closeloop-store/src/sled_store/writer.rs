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
//!
//! The writer makes its own disk calls (apply, flush and fsync, the key store's sync), with
//! no thread hand-off on the way, and a **watchdog** thread keeps the deadline: a call that
//! does not return within [`SledStoreOptions::flush_deadline`](super::SledStoreOptions)
//! (seen with a full filesystem) stops the store, and the watchdog answers the batch waiting
//! for it and every append queued after it, so nobody waits for a disk that stopped
//! answering. The writer is left behind in the disk; closing does not wait for it.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::thread::JoinHandle;
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

/// Pooled keys given to new loops before their assignments are synced (one fsync of the key
/// file); after a crash, opening reads the records written since the last sync to recover
/// them (see `backend::key_recovery`), so this and [`KEY_SYNC_INTERVAL`] bound that work.
const KEY_SYNC_EVERY: usize = 128;
/// The longest a given key's assignment waits for a sync while appends keep coming.
const KEY_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the writer thread, and the watchdog that keeps its disk calls to `flush_deadline`.
/// Returns the watchdog's thread, which ends after the writer's (and joins it) — or, once
/// the writer is stuck in the disk, when every sender of `jobs` is gone and each job queued
/// has heard that the store stopped.
///
/// # Errors
/// When a thread cannot be started. The writer, if it started, ends once `jobs` closes.
pub(super) fn start(writer: Writer, jobs: mpsc::Receiver<Job>) -> std::io::Result<JoinHandle<()>> {
    let deadline = writer.flush_deadline;
    let watch = Arc::clone(&writer.watch);
    let shared = Arc::clone(&writer.shared);
    *watch.jobs.lock().unwrap_or_else(PoisonError::into_inner) = Some(jobs);
    let (alive, writer_ended) = std_mpsc::channel::<()>();
    let writer = std::thread::Builder::new()
        .name("closeloop-writer".into())
        .spawn(move || {
            writer.run();
            drop(alive);
        })?;
    std::thread::Builder::new()
        .name("closeloop-watchdog".into())
        .spawn(move || watch.keep(&shared, deadline, writer, &writer_ended))
}

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
    watch: Arc<Watch>,
    next_position: u64,
    max_batch_events: usize,
    flush_deadline: Duration,
    /// With a key pool: when and through which log position its assignments were last
    /// synced (see [`KEY_SYNC_EVERY`]).
    key_sync: Option<(Instant, u64)>,
}

/// The writer's call that got stuck, for the store's reason to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum DiskCall {
    Write = 1,
    Flush = 2,
    KeySync = 3,
}

impl DiskCall {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Write,
            3 => Self::KeySync,
            _ => Self::Flush,
        }
    }

    fn did_not_finish(self, deadline: Duration) -> String {
        let what = match self {
            Self::Write => "write",
            Self::Flush => "flush",
            Self::KeySync => "key store sync",
        };
        format!(
            "{what} did not finish within {} s; the disk may be full or failing",
            deadline.as_secs_f64()
        )
    }
}

/// What the writer and its watchdog share. Whoever claims a disk call that is running — the
/// writer when it returns, the watchdog when it is past its deadline — answers the batch
/// waiting for it: one compare-and-swap on [`Watch::busy_since`] decides, so nothing is
/// answered twice or not at all.
struct Watch {
    epoch: Instant,
    /// When the writer's running disk call started (nanoseconds since `epoch`, at least 1);
    /// 0 while none runs, [`ABANDONED`] once the watchdog gave up on it.
    busy_since: AtomicU64,
    /// Which call that is ([`DiskCall`]).
    busy_with: AtomicU8,
    /// The batch the running call is for, if any.
    in_flight: Mutex<Option<Ticket>>,
    /// The writer's queue; the watchdog takes it over once the writer is stuck.
    jobs: Mutex<Option<mpsc::Receiver<Job>>>,
}

const ABANDONED: u64 = u64::MAX;

impl Watch {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            busy_with: AtomicU8::new(0),
            in_flight: Mutex::new(None),
            jobs: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(ABANDONED - 1)
            .clamp(1, ABANDONED - 1)
    }

    /// Runs the disk call `call` under the watchdog's eye: `None` when the watchdog gave up
    /// on it meanwhile (the store has stopped, and the batch in flight was answered).
    fn watched<T>(&self, call: DiskCall, work: impl FnOnce() -> T) -> Option<T> {
        self.busy_with.store(call as u8, Ordering::Relaxed);
        let started = self.now();
        self.busy_since.store(started, Ordering::Release);
        let done = work();
        self.busy_since
            .compare_exchange(started, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(done)
    }

    fn set_in_flight(&self, ticket: Ticket) {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(ticket);
    }

    fn take_in_flight(&self) -> Option<Ticket> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The watchdog thread: looks at the writer's disk call a few times per deadline until
    /// the writer ends. A call past the deadline stops the store; the watchdog then answers
    /// the batch in flight and every job queued until the queue closes, and leaves the
    /// writer behind.
    fn keep(
        &self,
        shared: &Shared,
        deadline: Duration,
        writer: JoinHandle<()>,
        writer_ended: &std_mpsc::Receiver<()>,
    ) {
        let look_every = (deadline / 8).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let deadline_nanos = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        loop {
            if writer_ended.recv_timeout(look_every) != Err(std_mpsc::RecvTimeoutError::Timeout) {
                // A panicked writer has nothing left to answer: its callers hear "closed".
                let _ = writer.join();
                return;
            }
            let since = self.busy_since.load(Ordering::Acquire);
            // Only this thread abandons a call, and then it returns: `since` is 0 or a start.
            if since == 0 || self.now().saturating_sub(since) < deadline_nanos {
                continue;
            }
            let call = DiskCall::from_u8(self.busy_with.load(Ordering::Relaxed));
            if self
                .busy_since
                .compare_exchange(since, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // It returned just now.
                continue;
            }
            let reason = call.did_not_finish(deadline);
            shared.stop(reason.clone());
            if let Some(ticket) = self.take_in_flight() {
                answer_failed(ticket, &reason);
            }
            let jobs = self
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(mut jobs) = jobs {
                while let Some(job) = jobs.blocking_recv() {
                    answer_stopped(job.reply, &reason);
                }
            }
            return;
        }
    }
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
            watch: Arc::new(Watch::new()),
            next_position,
            max_batch_events,
            flush_deadline,
            key_sync: key_sync.map(|through| (Instant::now(), through)),
        }
    }

    /// Takes batches of jobs until every sender is gone (or the watchdog gave up on a disk
    /// call): each applied, flushed and answered before the next.
    fn run(mut self) {
        // The callers the last batch answered: most of them append again at once.
        let mut expected = 1;
        loop {
            let batch = {
                let mut jobs = self
                    .watch
                    .jobs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let Some(jobs) = jobs.as_mut() else { return };
                let Some(first) = jobs.blocking_recv() else {
                    return;
                };
                self.gather(jobs, first, expected)
            };
            expected = batch.len();
            if self.commit(batch).is_none() {
                // Stuck in the disk until now: the watchdog answered everyone.
                return;
            }
        }
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

    /// Stages every job of a batch, writes its entries to sled atomically ([`write_entries`]),
    /// makes them durable and answers. A batch that stores nothing (each append a repeat of an
    /// original, which an earlier batch made durable, or refused) is answered without a flush.
    /// `None` when the watchdog gave up on a disk call meanwhile: the writer must stop.
    fn commit(&mut self, batch: Vec<Job>) -> Option<()> {
        let first_position = self.next_position;
        if let Some(reason) = self.shared.stopped() {
            for job in batch {
                answer_stopped(job.reply, &reason);
            }
            return Some(());
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
        let last_position = staging.next_position() - 1;
        self.watch.set_in_flight(Ticket {
            last_position,
            appended: last_position + 1 - first_position,
            replies,
        });
        if staging.entries().is_empty() {
            return self.answer();
        }
        {
            // A block of its own: the index's write lock is let go before the flush.
            let written = self.watch.watched(DiskCall::Write, || {
                FaultInjector::check(self.shared.faults.as_ref(), FaultPoint::Apply).and_then(
                    |()| {
                        write_entries(self.shared.tree(), staging.entries())
                            .map_err(|e| e.to_string())
                    },
                )
            })?;
            if let Err(err) = written {
                return self.fail(format!("write failed: {err}"));
            }
            // The entries are past the durable head until the flush moves it, so no reader
            // sees them before they are on disk.
            let Ok(mut index) = self.shared.index.write() else {
                // Only this thread writes the index: a poisoned lock means it panicked earlier
                // mid-batch, so the index cannot be trusted for new positions.
                return self.fail("the store's index was left half-updated by a panic".to_owned());
            };
            staging.apply(&mut index);
        }
        self.next_position = staging.next_position();
        self.flush()
    }

    /// Makes the batch in flight durable (one flush and fsync), then answers it.
    fn flush(&mut self) -> Option<()> {
        if let Some(reason) = self.shared.stopped() {
            // Stopped meanwhile (the sealer's key store failed): acknowledge nothing more.
            return self.fail(reason);
        }
        let flushed = self.watch.watched(DiskCall::Flush, || {
            FaultInjector::check(self.shared.faults.as_ref(), FaultPoint::Flush)
                .and_then(|()| self.shared.make_durable())
        })?;
        if let Err(reason) = flushed {
            return self.fail(reason);
        }
        metrics::counter!("closeloop_store_flushes_total").increment(1);
        self.answer()
    }

    /// Moves the durable head to the end of the batch in flight and answers its callers.
    fn answer(&mut self) -> Option<()> {
        let ticket = self.watch.take_in_flight()?;
        // Move the durable head before answering, so a caller that hears "stored" and then
        // reads finds its events.
        let last_position = ticket.last_position;
        self.shared.durable.send_if_modified(|head| {
            let moved = last_position > *head;
            *head = (*head).max(last_position);
            moved
        });
        metrics::counter!("closeloop_events_appended_total").increment(ticket.appended);
        for (reply, result) in ticket.replies {
            // A caller that stopped waiting has nothing to hear.
            let _ = reply.send(result);
        }
        self.sync_key_assignments(last_position)
    }

    /// Stops the store for `reason` and answers the batch in flight with it.
    fn fail(&self, reason: String) -> Option<()> {
        self.shared.stop(reason.clone());
        if let Some(ticket) = self.watch.take_in_flight() {
            answer_failed(ticket, &reason);
        }
        Some(())
    }

    /// Syncs pooled keys' assignments when enough are waiting, or when the last sync is a
    /// second old and the log has grown since: every record up to `durable` was sealed (and
    /// its key given) before it was written. Moving the watermark on while no key is given
    /// keeps the records a recovery reads to about a second's worth.
    fn sync_key_assignments(&mut self, durable: u64) -> Option<()> {
        let (Some(keys), Some((last, through))) = (&self.shared.keys, self.key_sync) else {
            return Some(());
        };
        let waiting = keys.unsynced_assignments();
        let due =
            waiting >= KEY_SYNC_EVERY || (durable > through && last.elapsed() >= KEY_SYNC_INTERVAL);
        if !due {
            return Some(());
        }
        let synced = self
            .watch
            .watched(DiskCall::KeySync, || keys.sync_assignments(durable))?;
        if let Err(err) = synced {
            // The key store shares the disk: fail fast, as for a failed write.
            self.shared.stop(format!("key store failed: {err}"));
        }
        self.key_sync = Some((Instant::now(), durable));
        Some(())
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

fn answer_failed(ticket: Ticket, reason: &str) {
    for (reply, _) in ticket.replies {
        answer_stopped(reply, reason);
    }
}

fn answer_stopped(reply: Reply, reason: &str) {
    // A caller that stopped waiting has nothing to hear.
    let _ = reply.send(Err(StoreError::Stopped(reason.to_owned()).into()));
}

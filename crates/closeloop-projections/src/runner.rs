//! The projector: keeps shared [`ReadModels`] caught up with the event store.
//!
//! [`run_projector`] reads the global log from the read models' checkpoint, page by page,
//! applies each entry in position order, publishes the applied position on a
//! [`watch`](tokio::sync::watch) channel, and then waits for the store's head to move. Readers
//! share the models through [`Projections`] and use [`Projections::wait_for`] to see their own
//! writes. Snapshots are written periodically and on shutdown, so a restart replays only the
//! tail of the log; [`ProjectorOptions::saved`] tells the caller each time one is saved (the
//! `serve` command copies it to a JetStream object store bucket then).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use closeloop_domain::Event;
use closeloop_store::record::RecordError;
use closeloop_store::{EventStore, StoreError, StoredEvent};
use tokio::sync::watch;

use crate::model::ReadModels;
use crate::snapshot::{self, SnapshotError};

/// How many entries are applied under one write lock: small enough that readers never wait
/// long, large enough that locking costs nothing.
const APPLY_CHUNK: usize = 256;
/// The first and the longest wait before reading again when the log has a gap or a short read.
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Why the shared read models or the projector cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionsError {
    /// An update of the read models panicked part-way (a bug), so they may be inconsistent:
    /// they are neither updated nor saved any more.
    #[error(
        "the read models were left inconsistent by an update that failed part-way; restart the service so that they are rebuilt from the log"
    )]
    Poisoned,
    /// The event store failed, or holds an entry that cannot be decoded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Read models shared between the projector (the only writer) and any number of readers.
#[derive(Debug)]
pub struct Projections {
    models: RwLock<ReadModels>,
    applied: watch::Sender<u64>,
    /// Set once the projector has stopped for good on a failure: the models fall behind the
    /// log from then on, and readiness says so.
    halted: watch::Sender<bool>,
}

impl Projections {
    /// Shares `models`, whose checkpoint becomes the applied position.
    #[must_use]
    pub fn new(models: ReadModels) -> Self {
        let (applied, _) = watch::channel(models.checkpoint());
        let (halted, _) = watch::channel(false);
        Self {
            models: RwLock::new(models),
            applied,
            halted,
        }
    }

    /// Records that the projector stopped on a failure (it calls this itself; a supervisor
    /// calls it when the projector's task panicked). Readers waiting for the models to catch
    /// up are woken and give up at once.
    pub fn halt(&self) {
        self.halted.send_replace(true);
    }

    /// Whether the projector stopped on a failure: the models no longer follow the log.
    #[must_use]
    pub fn is_halted(&self) -> bool {
        *self.halted.borrow()
    }

    /// Read access to the models. Hold the guard only for one query: the projector waits for
    /// it to apply new entries.
    ///
    /// # Errors
    /// [`ProjectionsError::Poisoned`] when an update of the models panicked part-way (the
    /// projector has stopped): they may be inconsistent, and a restart rebuilds them.
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, ReadModels>, ProjectionsError> {
        self.models.read().map_err(|_| ProjectionsError::Poisoned)
    }

    /// Read access to the models, even after an update panicked part-way: see
    /// [`try_read`](Self::try_read), which callers should prefer so that they can report the
    /// failure instead of serving models that may be inconsistent.
    pub fn read(&self) -> RwLockReadGuard<'_, ReadModels> {
        match self.try_read() {
            Ok(models) => models,
            Err(err) => {
                // Serving the models as they were beats failing every read until a restart,
                // for the callers that have not moved to `try_read` yet.
                tracing::error!(%err, "serving read models that may be inconsistent");
                self.models.read().unwrap_or_else(PoisonError::into_inner)
            }
        }
    }

    /// The position of the last log entry applied.
    #[must_use]
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A live view of [`applied`](Self::applied).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Waits until every entry up to `position` is applied (read-your-writes), at most
    /// `timeout`. Returns whether it was.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let mut halted = self.halted.subscribe();
        let reached = async {
            tokio::select! {
                reached = applied.wait_for(|&applied| applied >= position) => reached.is_ok(),
                // A halted projector never gets there: say so now rather than at the timeout.
                _ = halted.wait_for(|&halted| halted) => self.applied() >= position,
            }
        };
        matches!(tokio::time::timeout(timeout, reached).await, Ok(true))
    }

    /// Loads read models from the snapshot file at `path`; a missing file gives empty models
    /// at position 0. A leftover temporary file from an interrupted save is ignored.
    ///
    /// This does not check the snapshot against a log: to start a projector on a store, use
    /// [`load_snapshot_checked`](Self::load_snapshot_checked).
    ///
    /// # Errors
    /// [`SnapshotError`] when the file exists but cannot be read or is not a valid snapshot:
    /// log it and start from empty models, which rebuild from the log.
    pub fn load_snapshot(path: &Path) -> Result<ReadModels, SnapshotError> {
        snapshot::read_file(path)
    }

    /// Read models for a projector on `store`: those of the snapshot at `path` when it was
    /// built from this store's log, otherwise empty ones, which the projector rebuilds from
    /// position 0 (see [`PendingSnapshot::checked`]).
    pub async fn load_snapshot_checked<S: EventStore>(path: &Path, store: &S) -> ReadModels {
        Self::start_loading_snapshot(path).checked(store).await
    }

    /// Starts reading the snapshot at `path` on a blocking thread, so that it can be decoded
    /// while the stores open; [`PendingSnapshot::checked`] then checks it against the log.
    #[must_use]
    pub fn start_loading_snapshot(path: &Path) -> PendingSnapshot {
        let owned = path.to_path_buf();
        PendingSnapshot(tokio::task::spawn_blocking(move || {
            snapshot::read_file(&owned)
        }))
    }

    /// Writes a snapshot of the models (data and checkpoint together) to `path`, atomically:
    /// a crash leaves either the previous snapshot or this one.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] when the file cannot be written; [`SnapshotError::Poisoned`]
    /// when an update of the models panicked part-way, so they must not be kept.
    pub fn save_snapshot(&self, path: &Path) -> Result<(), SnapshotError> {
        let bytes = self
            .try_read()
            .map_err(|_| SnapshotError::Poisoned)?
            .to_snapshot();
        snapshot::write_atomically(path, &bytes)
    }

    /// Applies decoded entries in order, a chunk per write lock, publishing the applied
    /// position after each chunk.
    ///
    /// # Errors
    /// [`ProjectionsError::Poisoned`] when an earlier update panicked part-way: applying more
    /// to models that may be inconsistent would only spread the damage.
    fn apply_all(&self, entries: &[(StoredEvent, Event)]) -> Result<(), ProjectionsError> {
        for chunk in entries.chunks(APPLY_CHUNK) {
            let checkpoint = {
                let mut models = self
                    .models
                    .write()
                    .map_err(|_| ProjectionsError::Poisoned)?;
                for (entry, event) in chunk {
                    models.apply(entry, event);
                }
                models.checkpoint()
            };
            self.applied.send_replace(checkpoint);
        }
        Ok(())
    }
}

/// A snapshot being read (see [`Projections::start_loading_snapshot`]).
#[derive(Debug)]
pub struct PendingSnapshot(tokio::task::JoinHandle<Result<ReadModels, SnapshotError>>);

impl PendingSnapshot {
    /// The snapshot's read models when it was built from `store`'s log, otherwise empty ones,
    /// which the projector rebuilds from position 0.
    ///
    /// The snapshot is trusted only when the store holds an entry at the snapshot's checkpoint
    /// and that entry's hash is the one the snapshot recorded: a snapshot of another log (a
    /// store restored from a backup, or replaced) would otherwise be served as if it were this
    /// one's. Every reason not to use it (no file is not one) is logged as a warning.
    pub async fn checked<S: EventStore>(self, store: &S) -> ReadModels {
        let loaded = match self.0.await {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::warn!(%err, "reading the read models' snapshot failed; rebuilding them from the log");
                return ReadModels::default();
            }
        };
        let models = match loaded {
            Ok(models) => models,
            Err(err) => {
                tracing::warn!(%err, "cannot use the read models' snapshot; rebuilding them from the log");
                return ReadModels::default();
            }
        };
        let checkpoint = models.checkpoint();
        if checkpoint == 0 {
            return models;
        }
        let head = store.head();
        if checkpoint > head {
            tracing::warn!(
                checkpoint,
                head,
                "the snapshot is ahead of the log (was the store replaced?); rebuilding the read models"
            );
            return ReadModels::default();
        }
        let entry = match store.read_all(checkpoint - 1, 1).await {
            Ok(mut entries) => entries.drain(..).next(),
            Err(err) => {
                tracing::warn!(%err, checkpoint, "cannot read the log entry the snapshot was built up to; rebuilding the read models");
                return ReadModels::default();
            }
        };
        if models.built_from(entry.as_ref()) {
            tracing::info!(checkpoint, "read models loaded from their snapshot");
            models
        } else {
            tracing::warn!(
                checkpoint,
                found = entry.as_ref().map(|e| e.position),
                "the snapshot was built from another log (the entry at its checkpoint differs); rebuilding the read models"
            );
            ReadModels::default()
        }
    }
}

/// How the projector reads and snapshots.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// How many log entries to read at a time.
    pub page: usize,
    /// Where to keep the snapshot; `None`: no snapshots.
    pub snapshot_path: Option<PathBuf>,
    /// Snapshot after this many entries applied since the last one.
    pub snapshot_every_events: u64,
    /// Snapshot at least this often while entries are being applied.
    pub snapshot_every: Duration,
    /// Told the checkpoint of each snapshot once it is saved (written and renamed into place
    /// at `snapshot_path`), e.g. for a task that copies the file elsewhere; `None`: nobody
    /// listens. The projector drops it when it stops, after its last save, so a receiver's
    /// `changed()` failing means no snapshot will follow.
    pub saved: Option<watch::Sender<u64>>,
    /// Save a snapshot as soon as the projector starts, even with nothing new applied: the
    /// models hold what their snapshot lacks (SLA figures computed at start, see
    /// [`ReadModels::prepare`](crate::ReadModels::prepare)), which the next start would
    /// otherwise compute again.
    pub snapshot_at_start: bool,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            page: 4096,
            snapshot_path: None,
            snapshot_every_events: 100_000,
            snapshot_every: Duration::from_secs(30),
            saved: None,
            snapshot_at_start: false,
        }
    }
}

/// The leading entries of `page` that continue `checkpoint` without a gap, and the position
/// of the first entry that does not, if any.
fn contiguous(checkpoint: u64, mut page: Vec<StoredEvent>) -> (Vec<StoredEvent>, Option<u64>) {
    let ready = (checkpoint + 1..)
        .zip(&page)
        .take_while(|&(expected, entry)| entry.position == expected)
        .count();
    let gap = page.get(ready).map(|entry| entry.position);
    page.truncate(ready);
    (page, gap)
}

/// The error for a stored entry whose record cannot be decoded.
fn undecodable(position: u64, err: &RecordError) -> StoreError {
    StoreError::Corrupt {
        position,
        detail: format!("cannot decode the stored event: {err}"),
    }
}

/// Decodes entries; on the first that cannot be decoded, the ones before it and the error.
fn decode(entries: Vec<StoredEvent>) -> (Vec<(StoredEvent, Event)>, Option<StoreError>) {
    let mut decoded = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.event() {
            Ok(event) => decoded.push((entry, event)),
            Err(err) => {
                let error = undecodable(entry.position, &err);
                return (decoded, Some(error));
            }
        }
    }
    (decoded, None)
}

/// Keeps `projections` caught up with `store` until `shutdown` completes.
///
/// Reads the log after the applied position, `options.page` entries at a time; applies them
/// strictly in position order; then waits for the store's head to move. The checkpoint never
/// passes an entry that was not applied: when a read returns a gap (an entry after the next
/// expected position), the entries before the gap are applied and the rest is read again
/// later, with a warning; nothing is ever skipped. Snapshots are written every
/// `snapshot_every_events` entries or `snapshot_every`, whichever comes first (also when the
/// log goes quiet: entries applied are saved `snapshot_every` after the last snapshot), and
/// once more on shutdown, after applying what the log held when the stop came; a failed
/// snapshot is logged and retried at the next occasion. Each saved snapshot's checkpoint is
/// sent on `options.saved`, which is dropped when this returns.
///
/// # Errors
/// [`ProjectionsError::Store`] when the store fails, or holds an entry that cannot be decoded
/// ([`StoreError::Corrupt`]): a projection that skipped it would be silently wrong, so it
/// stops instead. [`ProjectionsError::Poisoned`] when an update of the models panicked.
pub async fn run_projector<S: EventStore>(
    store: Arc<S>,
    projections: Arc<Projections>,
    options: ProjectorOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectionsError> {
    tokio::pin!(shutdown);
    let page_size = options.page.max(1);
    let mut head = store.subscribe();
    let mut snapshots = Snapshots::new(&options, projections.applied());
    let mut retry = RETRY_MIN;
    tracing::info!(
        applied = projections.applied(),
        head = store.head(),
        "projector starting"
    );
    let result = loop {
        let checkpoint = projections.applied();
        let page = tokio::select! {
            page = store.read_all(checkpoint, page_size) => page,
            () = &mut shutdown => break Ok(()),
        };
        let page = match page {
            Ok(page) => page,
            // The store failing to read (a failed disk, say) is the store's state to report,
            // not a reason for the projector to give up: it keeps what it has, tries again
            // with back-off, and catches up if the store recovers.
            Err(err @ (StoreError::Backend(_) | StoreError::Stopped(_))) => {
                if retry == RETRY_MIN {
                    tracing::warn!(%err, "projector cannot read the log; trying again");
                }
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = &mut shutdown => break Ok(()),
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
            Err(err) => break Err(err.into()),
        };
        let read = page.len();
        let (ready, gap) = contiguous(checkpoint, page);
        let applied_now = ready.len();
        if applied_now > 0 {
            if let Err(err) = apply_entries(&projections, ready).await {
                break Err(err);
            }
            retry = RETRY_MIN;
        }
        snapshots.maybe_save(&projections).await;
        let applied = projections.applied();
        if let Some(found) = gap {
            tracing::warn!(
                expected = applied + 1,
                found,
                "the log read has a gap; waiting for the missing entry instead of skipping it"
            );
        }
        let short = applied_now == 0 && store.head() > applied;
        if gap.is_some() || short {
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = &mut shutdown => break Ok(()),
            }
            retry = (retry * 2).min(RETRY_MAX);
            continue;
        }
        if read == page_size || store.head() > applied {
            continue;
        }
        // Caught up: entries applied since the last snapshot are saved once `snapshot_every`
        // has passed even if nothing more comes, so an idle replica's snapshot (and the copy
        // new replicas start from) does not stay behind.
        let save_due = snapshots.due(applied);
        let quiet = tokio::select! {
            changed = head.wait_for(|&head| head > applied) => {
                if changed.is_err() {
                    tracing::info!("event store closed; projector stops");
                    break Ok(());
                }
                false
            }
            () = sleep_until_some(save_due) => true,
            () = &mut shutdown => break Ok(()),
        };
        if quiet {
            snapshots.maybe_save(&projections).await;
        }
    };
    // Stopping cleanly: what was stored before the stop goes into the read models and so into
    // the last snapshot, e.g. a write acknowledged just before SIGTERM.
    let result = match result {
        Ok(()) => drain(&*store, &projections, page_size).await,
        failed => failed,
    };
    snapshots.save(&projections).await;
    if result.is_err() {
        projections.halt();
    }
    tracing::info!(applied = projections.applied(), "projector stopped");
    result
}

/// When to snapshot, where, and who hears of it.
struct Snapshots {
    path: Option<PathBuf>,
    saved: Option<watch::Sender<u64>>,
    every_events: u64,
    every: Duration,
    last_position: u64,
    last_at: Instant,
    /// Whether the models hold something the last snapshot lacks, whatever the position.
    stale: bool,
    /// Whether to try saving at the first occasion. After that attempt, models still stale
    /// (the save failed) are tried every `every`, as pending entries are, not at every page.
    first_now: bool,
}

impl Snapshots {
    fn new(options: &ProjectorOptions, position: u64) -> Self {
        Self {
            path: options.snapshot_path.clone(),
            saved: options.saved.clone(),
            every_events: options.snapshot_every_events.max(1),
            every: options.snapshot_every,
            last_position: position,
            last_at: Instant::now(),
            stale: options.snapshot_at_start,
            first_now: options.snapshot_at_start,
        }
    }

    /// When entries up to `applied` are due to be saved, if any are pending.
    fn due(&self, applied: u64) -> Option<Instant> {
        (self.path.is_some() && (applied > self.last_position || self.stale))
            .then(|| self.last_at + self.every)
    }

    async fn maybe_save(&mut self, projections: &Arc<Projections>) {
        let pending = projections.applied().saturating_sub(self.last_position);
        if self.first_now
            || pending >= self.every_events
            || ((pending > 0 || self.stale) && self.last_at.elapsed() >= self.every)
        {
            self.save(projections).await;
        }
    }

    async fn save(&mut self, projections: &Arc<Projections>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let position = projections.applied();
        if position == self.last_position && !self.stale {
            return;
        }
        self.first_now = false;
        let shared = Arc::clone(projections);
        let started = Instant::now();
        let saved = tokio::task::spawn_blocking(move || shared.save_snapshot(&path)).await;
        self.last_at = Instant::now();
        match saved {
            Ok(Ok(())) => {
                self.last_position = position;
                self.stale = false;
                tracing::info!(
                    position,
                    seconds = started.elapsed().as_secs_f64(),
                    "projection snapshot saved"
                );
                if let Some(saved) = &self.saved {
                    saved.send_replace(position);
                }
            }
            Ok(Err(err)) => tracing::warn!(%err, "projection snapshot failed; will retry"),
            Err(err) => tracing::warn!(%err, "projection snapshot task failed; will retry"),
        }
    }
}

/// Decodes `entries` (contiguous, in position order) and applies them on a blocking thread;
/// logs why the projector must stop when it must.
async fn apply_entries(
    projections: &Arc<Projections>,
    entries: Vec<StoredEvent>,
) -> Result<(), ProjectionsError> {
    let shared = Arc::clone(projections);
    let joined = tokio::task::spawn_blocking(move || {
        let (decoded, error) = decode(entries);
        shared.apply_all(&decoded).map(|()| error)
    })
    .await;
    match joined {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(err))) => {
            tracing::error!(%err, "projector stops: a stored event cannot be decoded");
            Err(err.into())
        }
        Ok(Err(err)) => {
            tracing::error!(%err, "projector stops");
            Err(err)
        }
        Err(err) => {
            tracing::error!(%err, "projector stops: applying log entries failed");
            // A panic while applying (a bug) leaves the models poisoned for good.
            Err(if projections.models.is_poisoned() {
                ProjectionsError::Poisoned
            } else {
                StoreError::Backend(format!("projector task failed: {err}")).into()
            })
        }
    }
}

/// Applies the log up to the head it has when the projector stops. A read that fails or
/// returns a gap ends it quietly (what was applied is saved; the next start goes on from
/// there); an entry that cannot be applied is the projector's failure, as at any other time.
async fn drain<S: EventStore>(
    store: &S,
    projections: &Arc<Projections>,
    page_size: usize,
) -> Result<(), ProjectionsError> {
    let head = store.head();
    while projections.applied() < head {
        let checkpoint = projections.applied();
        let page = match store.read_all(checkpoint, page_size).await {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(%err, "cannot read the rest of the log while stopping");
                return Ok(());
            }
        };
        let (ready, _) = contiguous(checkpoint, page);
        if ready.is_empty() {
            return Ok(());
        }
        apply_entries(projections, ready).await?;
    }
    Ok(())
}

/// Sleeps until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Builds fresh read models from position 0 up to the head the store has when this starts,
/// calling `progress(applied, head)` after each page (for the `rebuild` command's progress
/// bar).
///
/// Two stages run side by side: this task reads pages from the store, and a worker thread
/// decodes and applies them in order, so reading and applying share the machine's cores. A
/// couple of pages wait between them at most; while they wait (the worker is behind), this
/// task decodes the entries of its next page itself, so neither core idles while the other
/// has work ([`Page`]).
///
/// # Errors
/// [`StoreError`] when the store fails, a stored entry cannot be decoded, or an entry below
/// the head stays missing after repeated reads.
///
/// # Panics
/// When applying an entry panicked on the worker thread (a bug): the panic is passed on.
pub async fn rebuild<S: EventStore>(
    store: &S,
    page: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<ReadModels, StoreError> {
    const MAX_RETRIES: u32 = 50;
    const PAGES_IN_FLIGHT: usize = 2;
    let head = store.head();
    let applied = Arc::new(AtomicU64::new(0));
    let (pages, to_apply) = std::sync::mpsc::sync_channel::<Page>(PAGES_IN_FLIGHT);
    let worker = {
        let applied = Arc::clone(&applied);
        std::thread::Builder::new()
            .name("rebuild-apply".to_owned())
            .spawn(move || apply_pages(&to_apply, &applied))
            .map_err(|err| StoreError::Backend(format!("cannot start the rebuild worker: {err}")))?
    };

    let mut read_upto = 0;
    let mut retries = 0;
    let mut read_error = None;
    progress(0, head);
    while read_upto < head {
        let entries = match store.read_all(read_upto, page.max(1)).await {
            Ok(entries) => entries,
            Err(err) => {
                read_error = Some(err);
                break;
            }
        };
        let (ready, gap) = contiguous(read_upto, entries);
        if ready.is_empty() {
            retries += 1;
            if retries > MAX_RETRIES {
                read_error = Some(StoreError::Corrupt {
                    position: read_upto + 1,
                    detail: format!(
                        "the entry is missing from the log (read returned {gap:?} instead)"
                    ),
                });
                break;
            }
            tokio::time::sleep(RETRY_MIN * retries).await;
            continue;
        }
        retries = 0;
        read_upto += ready.len() as u64;
        if hand_over(&pages, Page::new(ready)).is_err() {
            // The worker stopped on an entry it could not decode; its error says which.
            break;
        }
        progress(applied.load(Ordering::Acquire), head);
    }
    drop(pages);
    let (models, apply_error) = match worker.join() {
        Ok(outcome) => outcome,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if let Some(err) = apply_error.or(read_error) {
        return Err(err);
    }
    progress(models.checkpoint(), head);
    Ok(models)
}

/// A page of entries on its way from the rebuild's reader to its worker, with the events of
/// the first of them already decoded by the reader while it waited for the worker.
struct Page {
    entries: Vec<StoredEvent>,
    /// The events of `entries[..decoded.len()]`.
    decoded: Vec<Event>,
    /// The reader met an entry it could not decode: the worker decodes it again, in its turn,
    /// and reports it with everything before it applied.
    decoding_failed: bool,
}

impl Page {
    /// Entries the reader decodes between two looks at whether the worker has room.
    const DECODE_STEP: usize = 64;

    fn new(entries: Vec<StoredEvent>) -> Self {
        Self {
            entries,
            decoded: Vec::new(),
            decoding_failed: false,
        }
    }

    /// Decodes up to [`DECODE_STEP`](Self::DECODE_STEP) more entries; false when none are
    /// left to decode here.
    fn decode_ahead(&mut self) -> bool {
        for _ in 0..Self::DECODE_STEP {
            if self.decoding_failed {
                return false;
            }
            let Some(entry) = self.entries.get(self.decoded.len()) else {
                return false;
            };
            match entry.event() {
                Ok(event) => self.decoded.push(event),
                Err(_) => self.decoding_failed = true,
            }
        }
        true
    }
}

/// Sends `page` to the worker; while the worker has no room for it, decodes its entries here
/// rather than wait idle ([`offer`]). An error when the worker has stopped.
fn hand_over(pages: &std::sync::mpsc::SyncSender<Page>, page: Page) -> Result<(), ()> {
    match offer(pages, page)? {
        None => Ok(()),
        Some(decoded) => pages.send(decoded).map_err(|_| ()),
    }
}

/// Offers `page` to the worker, decoding its entries between offers while the worker has no
/// room; gives the page back once it is decoded as far as it goes and there is still no room.
/// An error when the worker has stopped.
fn offer(pages: &std::sync::mpsc::SyncSender<Page>, mut page: Page) -> Result<Option<Page>, ()> {
    use std::sync::mpsc::TrySendError;
    loop {
        match pages.try_send(page) {
            Ok(()) => return Ok(None),
            Err(TrySendError::Disconnected(_)) => return Err(()),
            Err(TrySendError::Full(back)) => page = back,
        }
        if !page.decode_ahead() {
            return Ok(Some(page));
        }
    }
}

/// The rebuild worker: decodes (where the reader has not) and applies pages in the order they
/// arrive, until the sender hangs up or an entry cannot be decoded.
fn apply_pages(
    pages: &std::sync::mpsc::Receiver<Page>,
    applied: &AtomicU64,
) -> (ReadModels, Option<StoreError>) {
    let mut models = ReadModels::default();
    for page in pages {
        let ahead = page.decoded.len();
        for (entry, event) in page.entries.iter().zip(&page.decoded) {
            models.apply(entry, event);
        }
        // Each of the rest is applied as soon as it is decoded: a page of decoded events
        // beside the page of entries would be megabytes of fresh memory per page for nothing.
        for entry in &page.entries[ahead..] {
            match entry.event() {
                Ok(event) => models.apply(entry, &event),
                Err(err) => {
                    applied.store(models.checkpoint(), Ordering::Release);
                    return (models, Some(undecodable(entry.position, &err)));
                }
            }
        }
        applied.store(models.checkpoint(), Ordering::Release);
    }
    (models, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poisons the models' lock the way a panic while applying would.
    fn poisoned() -> Arc<Projections> {
        let projections = Arc::new(Projections::new(ReadModels::default()));
        let shared = Arc::clone(&projections);
        let _ = std::thread::spawn(move || {
            let _models = shared.models.write();
            panic!("an update failed part-way");
        })
        .join();
        assert!(projections.models.is_poisoned());
        projections
    }

    #[test]
    fn a_poisoned_lock_is_an_error_not_a_panic() {
        let projections = poisoned();
        let err = projections.try_read().unwrap_err();
        assert!(matches!(err, ProjectionsError::Poisoned));
        assert!(err.to_string().contains("restart"), "{err}");
        // The old accessor still serves the models, without panicking.
        assert_eq!(projections.read().checkpoint(), 0);
        // Nothing more is applied, and nothing is saved.
        let event = Event {
            event_id: "e-1".to_owned(),
            source: "urn:test:runner".to_owned(),
            time: "2026-11-23T09:00:00Z".parse().unwrap(),
            payload: closeloop_domain::LoopEvent::from_stored_data(
                closeloop_domain::EventType::FeedbackReceived,
                serde_json::json!({"org_unit": "rxx", "channel": "web", "ratings": {"fft": 1}}),
            )
            .unwrap(),
            actor: None,
        };
        let entry = StoredEvent {
            position: 1,
            loop_id: closeloop_domain::LoopId::parse("a").unwrap(),
            version: 1,
            prev_hash: closeloop_store::Hash::ZERO,
            hash: closeloop_store::Hash::ZERO,
            record: closeloop_store::record::encode(&event),
        };
        assert!(matches!(
            projections.apply_all(&[(entry, event)]),
            Err(ProjectionsError::Poisoned)
        ));
        assert_eq!(projections.applied(), 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projections.snapshot");
        assert!(matches!(
            projections.save_snapshot(&path),
            Err(SnapshotError::Poisoned)
        ));
        assert!(!path.exists());
    }

    /// `count` entries at positions 1…, each the feedback opening its own loop, on a unit of
    /// its own (so an event applied with another's entry would show).
    fn feedback_entries(count: usize) -> Vec<StoredEvent> {
        (0..count)
            .map(|n| {
                let event = Event {
                    event_id: format!("e-{n}"),
                    source: "urn:test:runner".to_owned(),
                    time: "2026-11-23T09:00:00Z".parse().unwrap(),
                    payload: closeloop_domain::LoopEvent::from_stored_data(
                        closeloop_domain::EventType::FeedbackReceived,
                        serde_json::json!({"org_unit": format!("rxx/unit-{n}"), "channel": "web"}),
                    )
                    .unwrap(),
                    actor: None,
                };
                StoredEvent {
                    position: n as u64 + 1,
                    loop_id: closeloop_domain::LoopId::parse(&format!("loop-{n}")).unwrap(),
                    version: 1,
                    prev_hash: closeloop_store::Hash::ZERO,
                    hash: closeloop_store::Hash::ZERO,
                    record: closeloop_store::record::encode(&event),
                }
            })
            .collect()
    }

    /// What the rebuild worker makes of `pages`, and the position it says it applied.
    fn work_through(pages: Vec<Page>) -> (ReadModels, Option<StoreError>, u64) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(pages.len());
        for page in pages {
            sender.send(page).unwrap();
        }
        drop(sender);
        let applied = AtomicU64::new(0);
        let (models, err) = apply_pages(&receiver, &applied);
        (models, err, applied.load(Ordering::Acquire))
    }

    #[test]
    fn events_the_reader_decoded_ahead_make_the_same_models_as_the_worker_decoding_them() {
        let (reference, err, _) = work_through(vec![Page::new(feedback_entries(150))]);
        assert!(err.is_none());
        for steps in [1, 2, 3] {
            let mut page = Page::new(feedback_entries(150));
            for _ in 0..steps {
                page.decode_ahead();
            }
            assert_eq!(page.decoded.len(), (steps * Page::DECODE_STEP).min(150));
            let (models, err, applied) = work_through(vec![page]);
            assert!(err.is_none());
            assert_eq!((models.checkpoint(), applied), (150, 150));
            assert!(
                models.to_snapshot() == reference.to_snapshot(),
                "{steps} steps ahead: the models differ"
            );
        }
        let mut page = Page::new(feedback_entries(150));
        while page.decode_ahead() {}
        assert_eq!(page.decoded.len(), 150, "a page is decoded to its end");
    }

    #[test]
    fn an_entry_the_reader_cannot_decode_is_reported_by_the_worker_after_those_before_it() {
        let mut entries = feedback_entries(150);
        entries[99].record = b"{not a record".to_vec();
        let mut page = Page::new(entries);
        while page.decode_ahead() {}
        assert_eq!(
            page.decoded.len(),
            99,
            "decoding ahead stops at the bad entry"
        );
        assert!(!page.decode_ahead(), "and does not try it again");
        let (models, err, applied) = work_through(vec![page]);
        assert!(
            matches!(err, Some(StoreError::Corrupt { position: 100, .. })),
            "{err:?}"
        );
        assert_eq!((models.checkpoint(), applied), (99, 99));
    }

    #[test]
    fn a_page_goes_to_the_worker_at_once_while_it_has_room_and_not_once_it_stopped() {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        assert!(hand_over(&sender, Page::new(feedback_entries(10))).is_ok());
        let page = receiver.try_recv().expect("sent");
        assert!(
            page.decoded.is_empty(),
            "nothing decoded while the worker had room"
        );
        drop(receiver);
        assert!(hand_over(&sender, Page::new(feedback_entries(10))).is_err());
    }

    #[test]
    fn a_page_the_worker_has_no_room_for_is_decoded_while_it_waits() {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        sender.send(Page::new(Vec::new())).unwrap();
        let waiting = offer(&sender, Page::new(feedback_entries(150)))
            .unwrap()
            .expect("no room: the page comes back");
        assert_eq!(waiting.decoded.len(), 150, "decoded to its end");
        receiver
            .try_recv()
            .expect("the worker takes the page before");
        assert!(offer(&sender, waiting).unwrap().is_none(), "sent now");
        assert_eq!(receiver.try_recv().expect("sent").decoded.len(), 150);
    }
}

//! The embedded [`EventStore`] on sled, with group commit.
//!
//! # Layout
//! One sled tree, `events`, holds the log: one key per event, `e` ‖ position, whose value is
//! the entry header (version, prev_hash, hash, loop id, idempotency key) and the record bytes
//! (see [`entry`](crate::backend::entry)). One more key, `mformat`, holds the on-disk format version.
//!
//! Each loop's positions and chain head, and the set of idempotency keys, are kept in memory
//! ([`Index`]), not in sled: sled's cost is per key written, so keeping secondary indexes out
//! of sled is what lets an append cost one key. A clean close writes the index to a file of
//! its own ([`INDEX_FILE_NAME`]); an open reads that file when it matches the log and then
//! only the entries after it, or else rebuilds the index from every entry header.
//!
//! # Group commit
//! A caller's task validates and encodes its request; one with personal data is sealed by the
//! **sealer thread**, which makes new loops' keys for everything waiting in one durable step of
//! the key store ([`intake`](crate::backend::intake)). Then the request goes, with a reply
//! channel, to one **writer thread**. The writer takes everything waiting (up to a cap), checks
//! each request against loop versions and idempotency keys (later requests in a batch see
//! earlier ones), assigns positions and hashes, applies the whole batch in one atomic
//! `apply_batch`, fsyncs once, moves the durable head, and only then answers. Appends arriving
//! meanwhile wait together and become the next batch (the `writer` module says why the flush
//! is not overlapped with the next batch).
//!
//! Reads stop at the durable head: nobody sees an event that a crash could still take away.
//! If a write or a flush fails (or does not finish within
//! [`SledStoreOptions::flush_deadline`], which a watchdog thread keeps), the store stops: it cannot know what reached the disk,
//! so it acknowledges nothing more until it is reopened. Every waiter hears at once — appends
//! queued or in flight, and idempotency lookups waiting for an entry to become durable.
//!
//! # Blocking
//! sled reads block on disk, so every read runs on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), never on the async worker threads that answer requests.

mod index_file;
mod keys;
mod raw_scan;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use closeloop_domain::LoopId;
use closeloop_keys::KeyStore;
use tokio::sync::{mpsc, watch};

pub use self::index_file::INDEX_FILE_NAME;
pub use self::raw_scan::{MAX_SCAN_THREADS, RawScan, scan_raw};
use self::writer::Writer;
use crate::backend::commit::{self, StoredEntries};
use crate::backend::entry;
use crate::backend::index::Index;
use crate::backend::intake::{Intake, IntakeOptions};
use crate::backend::key_recovery;
use crate::{
    AppendError, AppendOutcome, AppendRequest, Committed, EventStore, StoreError, StoredEvent,
};

/// How long [`SledStore::close`] waits for sled to release the store's directory: for a
/// store that stopped after a failure, or for sled's own I/O threads to finish the last write.
const RELEASE_DEADLINE: Duration = Duration::from_secs(3);

/// The on-disk format this build writes and reads.
///
/// - 1: the first format.
/// - 2: an entry may carry a request digest, flagged in the top bit of its version field
///   (see [`entry`]). Format 1 entries read unchanged, so a format 1 store is marked 2 when
///   it opens; a build that reads only format 1 then refuses it instead of misreading versions.
const FORMAT_VERSION: u32 = 2;
const FORMAT_KEY: &[u8] = b"mformat";

/// Tuning for [`SledStore`]; the defaults suit a laptop and a production node alike.
#[derive(Debug, Clone)]
pub struct SledStoreOptions {
    /// The most events one group commit takes.
    pub max_batch_events: usize,
    /// sled's page cache size in bytes. Small by default: loop heads and idempotency keys are
    /// indexed in memory and the read models answer queries, so the cache mostly serves
    /// reading one loop's few entries and sequential audit scans.
    pub cache_capacity_bytes: u64,
    /// How many appends may wait for the writer before callers are held back.
    pub queue_capacity: usize,
    /// How long one of the writer's disk calls (a batch's write, its flush and fsync, the key
    /// store's sync) may take before the store gives up on the disk: it stops, and every
    /// append waiting for that call or queued behind it hears an error, instead of hanging
    /// until its caller's timeout (a disk that is full or failing can block a flush
    /// indefinitely).
    pub flush_deadline: Duration,
    /// Failures injected by tests; see [`FaultInjector`].
    pub faults: Option<FaultInjector>,
    /// The key store personal data is sealed with, one data key per loop (see
    /// [`record`](crate::record)). `None` stores personal data in plain: for tests and
    /// benchmarks only; `closeloop serve` always gives one.
    pub keys: Option<KeyHandle>,
    /// How many keys the key store makes ahead for new loops, in one durable step (see
    /// [`KeyStore::start_pool`]); 0 makes each batch's new keys durable before its records.
    /// The store recovers pooled keys' assignments after a crash when it opens.
    pub key_pool: usize,
}

/// A shared key store, as the store's options hold it.
#[derive(Clone)]
pub struct KeyHandle(pub Arc<dyn KeyStore>);

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHandle(..)")
    }
}

impl std::ops::Deref for KeyHandle {
    type Target = dyn KeyStore;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

impl Default for SledStoreOptions {
    fn default() -> Self {
        Self {
            max_batch_events: 4096,
            cache_capacity_bytes: 64 * 1024 * 1024,
            queue_capacity: 8192,
            flush_deadline: Duration::from_secs(10),
            faults: None,
            keys: None,
            key_pool: 256,
        }
    }
}

/// Where a [`FaultInjector`] is asked whether to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before the writer applies a batch to sled.
    Apply,
    /// Before the writer fsyncs; a fault here may also block, to imitate a hung disk.
    Flush,
}

/// Makes the store fail on purpose, for fault-injection tests: called at each [`FaultPoint`],
/// an `Err` there acts as if sled had returned that error. Not for production use.
#[derive(Clone)]
pub struct FaultInjector(Arc<dyn Fn(FaultPoint) -> Result<(), String> + Send + Sync>);

impl FaultInjector {
    /// An injector that consults `decide` at every fault point.
    pub fn new(decide: impl Fn(FaultPoint) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(decide))
    }

    pub(crate) fn check(faults: Option<&Self>, point: FaultPoint) -> Result<(), String> {
        faults.map_or(Ok(()), |faults| (faults.0)(point))
    }
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultInjector")
    }
}

/// The embedded event store. See the [module docs](self) for layout and group commit.
#[derive(Debug)]
pub struct SledStore {
    shared: Arc<Shared>,
    /// How many positions of the log the index was read for from the index file.
    from_index_file: u64,
    intake: Intake,
    /// The sealer (with a key store), then the writer's watchdog (which joins the writer):
    /// the order they finish in.
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    /// The store's directory.
    dir: PathBuf,
    /// The sled database; `None` only while the store is being dropped (see `Drop`).
    disk: Option<Disk>,
    /// Told when a stopped store's database has been released (see `Drop`), so that
    /// [`SledStore::close`] can wait a bounded time for it.
    released: Mutex<Option<std_mpsc::Sender<()>>>,
    index: RwLock<Index>,
    durable: watch::Sender<u64>,
    /// Why the store stopped, once it has; a watch so that waiters wake when it happens.
    failure: watch::Sender<Option<String>>,
    faults: Option<FaultInjector>,
    /// Where loops' data keys live; `None`: personal data is stored plain (tests, benchmarks).
    keys: Option<KeyHandle>,
}

/// The sled database and the tree that holds the log.
#[derive(Debug)]
struct Disk {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file, opened a second time to fsync it (see [`Shared::make_durable`]).
    log: std::fs::File,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let Some(disk) = self.disk.take() else { return };
        let released = self.released.get_mut().ok().and_then(Option::take);
        if self.stopped().is_some() {
            // sled flushes as it drops, and on a disk that has failed that flush can wait for
            // ever (seen on a full filesystem): let it wait on a thread of its own, so that the
            // process can still shut down. If no thread can be started, drop it here.
            let _ = std::thread::Builder::new()
                .name("closeloop-release".into())
                .spawn(move || {
                    drop(disk);
                    if let Some(released) = released {
                        let _ = released.send(());
                    }
                });
        }
    }
}

impl Shared {
    /// Makes everything applied so far durable: sled's `flush`, then an fsync of its log file.
    ///
    /// On Linux, sled's `flush` waits for `sync_file_range` on the pages it wrote, which puts
    /// them on the device but neither flushes the device's write cache nor writes the file's
    /// metadata (sled fsyncs on its own only every 500 ms): a power cut could still take away
    /// an append it flushed. `fdatasync` on the same file does both, so an acknowledged append
    /// survives a power cut, as `docs/operations.md` promises.
    fn make_durable(&self) -> Result<(), String> {
        let disk = self.disk();
        disk.db.flush().map_err(|e| format!("flush failed: {e}"))?;
        disk.log
            .sync_data()
            .map_err(|e| format!("fsync of the event log failed: {e}"))
    }

    fn tree(&self) -> &sled::Tree {
        &self.disk().tree
    }

    fn disk(&self) -> &Disk {
        self.disk
            .as_ref()
            .expect("the database is taken only when the store is dropped")
    }

    fn stopped(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Stops the store for good (until it is reopened). `reason` may hold backend error text:
    /// it goes to the log and to [`StoreError::Stopped`], which callers must not show to users.
    fn stop(&self, reason: String) {
        let first = self.failure.send_if_modified(|failure| {
            if failure.is_some() {
                return false;
            }
            *failure = Some(reason.clone());
            true
        });
        if first {
            tracing::error!(%reason, "event store stopped: it accepts no more appends until restarted");
            metrics::counter!("closeloop_store_failures_total").increment(1);
        }
    }

    fn durable_head(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Waits until the entry at `position` is durable; fails at once when the store stops
    /// first, since then it never will be.
    async fn wait_durable(&self, position: u64) -> Result<(), StoreError> {
        let mut durable = self.durable.subscribe();
        let mut failure = self.failure.subscribe();
        loop {
            if *durable.borrow_and_update() >= position {
                return Ok(());
            }
            if let Some(reason) = failure.borrow_and_update().clone() {
                return Err(StoreError::Stopped(reason));
            }
            // Both senders live as long as `self`, so neither wait can fail.
            tokio::select! {
                _ = durable.changed() => {}
                _ = failure.changed() => {}
            }
        }
    }

    /// The in-memory index, for reading. Entries up to the durable head are complete even if a
    /// store thread panicked while holding the lock (it panicked staging a later batch), and
    /// every reader stops at the durable head, so a poisoned lock is still safe to read.
    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The durable positions of a loop's entries, in version order.
    fn loop_positions(&self, loop_id: &LoopId) -> Vec<u64> {
        let durable = self.durable_head();
        self.index().positions_upto(loop_id, durable)
    }

    /// Up to `limit` durable entries after `after`; blocks on disk.
    fn read_range(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let durable = self.durable_head();
        if after >= durable || limit == 0 {
            return Ok(Vec::new());
        }
        // Sized once: a page grown by doubling would touch twice its memory in fresh pages.
        // A caller's limit reserves no more than a rebuild's page; longer reads grow.
        const RESERVE_AT_MOST: usize = 16_384;
        let mut entries = Vec::with_capacity(
            limit
                .min(usize::try_from(durable - after).unwrap_or(limit))
                .min(RESERVE_AT_MOST),
        );
        for item in self
            .tree()
            .range(keys::key(after + 1)..=keys::key(durable))
            .take(limit)
        {
            let (key, value) = item.map_err(backend)?;
            entries.push(entry::to_stored(keys::position_of(&key)?, &value)?);
        }
        Ok(entries)
    }

    fn read_entry(&self, position: u64) -> Result<StoredEvent, StoreError> {
        entry::to_stored(position, &self.entry_bytes(position)?)
    }

    /// The stored bytes of the entry at `position`, which the indexes say exists.
    fn entry_bytes(&self, position: u64) -> Result<sled::IVec, StoreError> {
        self.tree()
            .get(keys::key(position))
            .map_err(backend)?
            .ok_or_else(|| StoreError::Corrupt {
                position,
                detail: "the entry is missing, though the indexes point at it".to_owned(),
            })
    }
}

/// The writer reads idempotency keys and head hashes back from the tree: the sled store's
/// index keeps neither whole ([`Index::reading_head_hashes`]; only the last few thousand
/// entries' hashes). The entries of a batch not yet flushed are in the tree already, so a
/// loop's last entry is always there to read.
impl StoredEntries for Shared {
    /// The index holds digests of keys, so a hit is confirmed here; a mismatch (a digest
    /// collision) means the key is new.
    fn confirm_key(
        &self,
        position: u64,
        source: &str,
        event_id: &str,
    ) -> Result<Option<Committed>, StoreError> {
        let value = self.entry_bytes(position)?;
        entry::committed_under_key(position, &value, source, event_id)
    }

    fn entry_hash(&self, position: u64) -> Result<crate::chain::Hash, StoreError> {
        let value = self.entry_bytes(position)?;
        Ok(entry::decode(position, &value)?.0.hash)
    }
}

impl SledStore {
    /// Opens (or creates) the store in `path`, rebuilds its in-memory indexes from the log,
    /// and starts its writer thread (and, with a key store, its sealer).
    ///
    /// # Errors
    /// When the directory cannot be opened (another process holds it, permissions, damage) or
    /// holds a newer format.
    pub fn open(path: &Path, options: &SledStoreOptions) -> Result<Self, StoreError> {
        let (db, tree) = open_log(path, options.cache_capacity_bytes)?;
        check_format(&db, &tree)?;
        // sled 0.34 keeps its log in the file `db` of its directory.
        let log_path = path.join("db");
        let log = std::fs::File::open(&log_path).map_err(|err| {
            StoreError::Backend(format!("cannot open {}: {err}", log_path.display()))
        })?;
        let started = Instant::now();
        let index_file::Opened {
            index,
            head,
            damage,
            from_file,
        } = index_file::open(&tree, path)?;
        tracing::info!(
            path = %path.display(),
            head,
            loops = index.loop_count(),
            from_index_file = from_file,
            seconds = started.elapsed().as_secs_f64(),
            "event store opened"
        );
        let (durable, _) = watch::channel(head);
        let (failure, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            dir: path.to_owned(),
            disk: Some(Disk { db, tree, log }),
            released: Mutex::new(None),
            index: RwLock::new(index),
            durable,
            failure,
            faults: options.faults.clone(),
            keys: options.keys.clone(),
        });
        if let Some(damage) = damage {
            // Appends would chain onto an index with a hole: refuse them, but keep reading,
            // so that `verify` and auditors can see what is wrong.
            shared.stop(format!("{damage}; run `closeloop verify`"));
        } else if let Some(keys) = &options.keys {
            // Before anything can write or erase: every key a record names is its loop's.
            key_recovery::recover(&**keys, head, |position| shared.read_entry(position))?;
            keys.start_pool(options.key_pool)
                .map_err(|err| StoreError::Backend(format!("key store: {err}")))?;
        }
        // Pooled keys' assignments are synced as the log grows (see `writer`).
        let key_sync = (options.keys.is_some() && options.key_pool > 0).then_some(head);
        let (jobs, job_rx) = mpsc::channel(options.queue_capacity.max(1));
        let writer = Writer::new(
            Arc::clone(&shared),
            head + 1,
            options.max_batch_events.max(1),
            options.flush_deadline,
            key_sync,
        );
        let spawn_failed =
            |err: std::io::Error| StoreError::Backend(format!("cannot start store thread: {err}"));
        let sealer_shared = Arc::clone(&shared);
        let (intake, sealer) = Intake::start(
            jobs,
            IntakeOptions {
                keys: options.keys.clone(),
                queue_capacity: options.queue_capacity,
                max_batch_events: options.max_batch_events,
                // The key store is on the same disk: fail fast, as for a failed write.
                on_failure: move |reason: &str| {
                    sealer_shared.stop(reason.to_owned());
                    StoreError::Stopped(reason.to_owned())
                },
            },
        )?;
        let writer = writer::start(writer, job_rx).map_err(spawn_failed)?;
        let threads = sealer.into_iter().chain([writer]).collect();
        Ok(Self {
            shared,
            from_index_file: from_file,
            intake,
            threads,
        })
    }

    /// How many positions of the log this open took from the index file the last clean close
    /// wrote ([`INDEX_FILE_NAME`]) rather than from the entries; 0 when it rebuilt the index
    /// from the whole log.
    #[must_use]
    pub fn indexed_from_file(&self) -> u64 {
        self.from_index_file
    }

    /// Stops accepting appends, answers everything queued, waits for the sealer and writer
    /// to finish and flushes: afterwards the directory can be opened again. A writer stuck in
    /// the disk is not waited for (its watchdog answered everything queued).
    ///
    /// A store that stopped after a failure skips the final flush (the disk already failed
    /// it once). Either way closing waits at most a few seconds (`RELEASE_DEADLINE`) for sled
    /// to let go of the directory, so it never hangs on a broken disk; after that the
    /// directory may stay locked until the process exits (logged).
    pub async fn close(self) {
        let Self {
            shared,
            mut intake,
            threads,
            ..
        } = self;
        intake.close();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                // A panicked thread has nothing left to flush; its join error carries nothing
                // we could act on.
                let _ = thread.join();
            }
            let deadline = Instant::now() + RELEASE_DEADLINE;
            let lock_file = shared.dir.join("db");
            let closed = if shared.stopped().is_some() {
                release_stopped(shared, deadline);
                Ok(())
            } else {
                let closed = finish(&shared);
                drop(shared);
                closed
            };
            // Dropping sled's handles is not enough: its I/O threads may still hold the
            // directory's lock for the write they just finished. Waiting for it here is what
            // lets the caller open the directory again at once.
            if !wait_until_unlocked(&lock_file, deadline) {
                tracing::warn!(
                    "the event store's directory was still locked {} s after closing; it stays locked until the process exits",
                    RELEASE_DEADLINE.as_secs()
                );
            }
            closed
        })
        .await;
        if let Ok(Err(err)) = joined {
            tracing::error!(%err, "closing the event store");
        }
    }
}

/// The last steps of closing a store that did not fail: flush, sync the key store, save the
/// index file.
fn finish(shared: &Shared) -> Result<(), String> {
    shared
        .make_durable()
        .map_err(|err| format!("final flush failed: {err}"))?;
    if let Some(keys) = &shared.keys {
        // Every pooled key given so far is its loop's on disk: the next open reads no
        // records to recover assignments.
        keys.sync_assignments(shared.durable_head())
            .map_err(|err| format!("syncing the key store failed: {err}"))?;
    }
    // Everything applied is durable and nothing more will be: the index now describes the log
    // exactly, and the next open starts from it.
    let head = shared.durable_head();
    index_file::save(shared.tree(), &shared.dir, &shared.index(), head)
        .map_err(|err| format!("{err}; the next open rebuilds the index from the log"))
}

/// Drops a stopped store's sled handles on a thread of their own (see `Shared`'s `Drop`) and
/// waits for that until `deadline` (the caller warns if the directory stays locked).
fn release_stopped(shared: Arc<Shared>, deadline: Instant) {
    let (released, wait) = std_mpsc::channel();
    if let Ok(mut slot) = shared.released.lock() {
        *slot = Some(released);
    }
    drop(shared);
    let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// Waits until no one holds sled's exclusive lock on `lock_file` (or `deadline` passes):
/// true once it is free. A lock file that cannot be opened or locked for another reason than
/// "someone holds it" counts as free: opening the store will say what is wrong.
fn wait_until_unlocked(lock_file: &Path, deadline: Instant) -> bool {
    let Ok(file) = std::fs::File::open(lock_file) else {
        return true;
    };
    loop {
        match file.try_lock() {
            // Closing `file` (on return) releases the lock just taken.
            Ok(()) | Err(std::fs::TryLockError::Error(_)) => return true,
            Err(std::fs::TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Runs a blocking store read on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|err| {
            Err(StoreError::Backend(format!(
                "a read of the event store did not finish: {err}"
            )))
        })
}

impl EventStore for SledStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        if let Some(reason) = self.shared.stopped() {
            return Err(StoreError::Stopped(reason).into());
        }
        // Validation and encoding run here, on the caller's task, and sealing ahead of the
        // writer ([`Intake`]), so the single writer thread only does the work that must be
        // ordered.
        let request = commit::prepare(request, self.shared.keys.as_deref())?;
        self.intake.submit(request).await
    }

    async fn read_loop(&self, loop_id: &LoopId) -> Result<Vec<StoredEvent>, StoreError> {
        let positions = self.shared.loop_positions(loop_id);
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let shared = Arc::clone(&self.shared);
        blocking(move || {
            positions
                .into_iter()
                .map(|position| shared.read_entry(position))
                .collect()
        })
        .await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        if after >= self.shared.durable_head() || limit == 0 {
            return Ok(Vec::new());
        }
        let shared = Arc::clone(&self.shared);
        blocking(move || shared.read_range(after, limit)).await
    }

    fn head(&self) -> u64 {
        self.shared.durable_head()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    async fn lookup(&self, source: &str, event_id: &str) -> Result<Option<Committed>, StoreError> {
        let candidates = self.shared.index().candidates_for_key(source, event_id);
        for position in candidates {
            // The original may still be on its way to disk: answer only once it is durable,
            // so nobody hears "already stored" about an event a crash could take away. If the
            // store stops first, it never will be: say so at once.
            self.shared.wait_durable(position).await?;
            let shared = Arc::clone(&self.shared);
            let (source, event_id) = (source.to_owned(), event_id.to_owned());
            let confirmed =
                blocking(move || shared.confirm_key(position, &source, &event_id)).await?;
            if confirmed.is_some() {
                return Ok(confirmed);
            }
        }
        Ok(None)
    }

    fn with_merkle<R>(&self, f: impl FnOnce(&crate::merkle::MerkleIndex) -> R) -> R {
        f(&self.shared.index().merkle)
    }

    fn ready(&self) -> Result<(), StoreError> {
        match self.shared.stopped() {
            Some(reason) => Err(StoreError::Stopped(reason)),
            None if self.intake.is_closed() => Err(StoreError::Stopped(
                "the writer or sealer thread ended".to_owned(),
            )),
            None => Ok(()),
        }
    }
}

/// Whether `path` holds a store: sled keeps a `conf` and a `db` file in its directory from the
/// moment it creates a database, and an empty or unrelated directory has neither. Opening a
/// directory without them would create an empty store there.
#[must_use]
pub fn holds_store(path: &Path) -> bool {
    path.join("conf").is_file() && path.join("db").is_file()
}

/// Opens (or creates) sled's database in `path` and the tree of the log.
fn open_log(path: &Path, cache_capacity_bytes: u64) -> Result<(sled::Db, sled::Tree), StoreError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        .open()
        .map_err(|err| StoreError::Backend(format!("cannot open {}: {err}", path.display())))?;
    let tree = db.open_tree("events").map_err(backend)?;
    Ok((db, tree))
}

fn check_format(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    match tree.get(FORMAT_KEY).map_err(backend)? {
        Some(value) => {
            let found = value
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| {
                    StoreError::Backend("the store's format marker is damaged".to_owned())
                })?;
            if found > FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            if found < FORMAT_VERSION {
                // Every older format reads as it is: only the marker moves on.
                mark_format(db, tree)?;
            }
            Ok(())
        }
        None => mark_format(db, tree),
    }
}

fn mark_format(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    tree.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
        .map_err(backend)?;
    db.flush().map_err(backend)?;
    Ok(())
}

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(db: &sled::Db) -> Option<u32> {
        let tree = db.open_tree("events").expect("tree");
        tree.get(FORMAT_KEY)
            .expect("read")
            .map(|value| u32::from_be_bytes(value.as_ref().try_into().expect("4 bytes")))
    }

    #[test]
    fn an_older_format_is_marked_current_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::open(dir.path()).expect("open");
        let tree = db.open_tree("events").expect("tree");
        check_format(&db, &tree).expect("a new store");
        assert_eq!(marker(&db), Some(FORMAT_VERSION));

        tree.insert(FORMAT_KEY, &1u32.to_be_bytes()).expect("write");
        check_format(&db, &tree).expect("format 1 reads as it is");
        assert_eq!(marker(&db), Some(FORMAT_VERSION));

        tree.insert(FORMAT_KEY, &(FORMAT_VERSION + 1).to_be_bytes())
            .expect("write");
        let refused = check_format(&db, &tree).expect_err("newer format");
        assert!(
            matches!(refused, StoreError::UnsupportedFormat { found, .. } if found == FORMAT_VERSION + 1),
            "{refused}"
        );
    }
}

//! The projector: it never passes an entry it has not applied, stops on undecodable entries,
//! and catches up with a real store, snapshotting on the way out.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use closeloop_domain::{EventType, LoopId};
use closeloop_projections::{
    Projections, ProjectionsError, ProjectorOptions, ReadModels, StatusFilter, rebuild,
    run_projector,
};
use closeloop_store::merkle::MerkleIndex;
use closeloop_store::{
    AppendError, AppendOutcome, AppendRequest, Committed, EventStore, ExpectedVersion, SledStore,
    SledStoreOptions, StoreError, StoredEvent,
};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use crate::properties::dump;
use crate::{Log, all, ids_of, ts};

/// A sled store in `dir/log` holding the ten entries of [`ten`].
async fn ten_in_a_store(dir: &std::path::Path) -> (Arc<SledStore>, Log) {
    let store = Arc::new(SledStore::open(&dir.join("log"), &SledStoreOptions::default()).unwrap());
    let log = ten();
    append_all(&store, &log, 0).await;
    (store, log)
}

/// Ten entries over three loops.
fn ten() -> Log {
    let mut log = Log::default();
    log.feedback("a", "2026-11-23T09:00:00Z", "rxx/site-a")
        .feedback("b", "2026-11-23T10:00:00Z", "rxx/site-b")
        .close("a", "2026-11-24T09:00:00Z")
        .feedback("c", "2026-11-24T10:00:00Z", "rxx/site-a")
        .cmd(
            "b",
            "2026-11-24T11:00:00Z",
            EventType::Responded,
            json!({"by": "pals", "text": "On it"}),
        )
        .close("c", "2026-11-25T09:00:00Z");
    assert_eq!(log.entries.len(), 10);
    log
}

/// What the fake store shows of its ten entries.
const ONLY_FIRST_FIVE: u8 = 0;
const SIX_MISSING: u8 = 1;
const EVERYTHING: u8 = 2;

/// A store whose head says 10 while its reads show only part of the log, like a replica that
/// has not caught up (or a buggy backend).
struct FakeStore {
    entries: Vec<StoredEvent>,
    phase: AtomicU8,
    reads_in_phase: AtomicUsize,
    head: watch::Sender<u64>,
    merkle: MerkleIndex,
}

impl FakeStore {
    fn new(entries: Vec<StoredEvent>, phase: u8) -> Self {
        let head = entries.last().map_or(0, |e| e.position);
        Self {
            entries,
            phase: AtomicU8::new(phase),
            reads_in_phase: AtomicUsize::new(0),
            head: watch::channel(head).0,
            merkle: MerkleIndex::new(),
        }
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    fn set_phase(&self, phase: u8) {
        self.reads_in_phase.store(0, Ordering::SeqCst);
        self.phase.store(phase, Ordering::SeqCst);
    }
}

impl EventStore for FakeStore {
    async fn append(&self, _request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        Err(AppendError::Invalid("the fake store is read-only".into()))
    }

    async fn read_loop(&self, _loop_id: &LoopId) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(Vec::new())
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let phase = self.phase();
        self.reads_in_phase.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .entries
            .iter()
            .filter(|e| e.position > after)
            .filter(|e| match phase {
                ONLY_FIRST_FIVE => e.position <= 5,
                SIX_MISSING => e.position != 6,
                _ => true,
            })
            .take(limit)
            .cloned()
            .collect())
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn with_merkle<R>(&self, f: impl FnOnce(&MerkleIndex) -> R) -> R {
        f(&self.merkle)
    }

    async fn lookup(
        &self,
        _source: &str,
        _event_id: &str,
    ) -> Result<Option<Committed>, StoreError> {
        Ok(None)
    }
}

fn entries(log: &Log) -> Vec<StoredEvent> {
    log.entries.iter().map(|(entry, _)| entry.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_gap_in_the_log_holds_the_checkpoint_until_it_fills() {
    let log = ten();
    let store = Arc::new(FakeStore::new(entries(&log), ONLY_FIRST_FIVE));
    let projections = Arc::new(Projections::new(ReadModels::default()));

    // Every applied position the projector publishes, with what the store showed then.
    let observed = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let (mut applied, store, observed) = (
            projections.subscribe(),
            Arc::clone(&store),
            Arc::clone(&observed),
        );
        tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let position = *applied.borrow_and_update();
                observed.lock().unwrap().push((position, store.phase()));
            }
        })
    };

    let (stop, projector) = start_projector(&store, &projections, ProjectorOptions::default());
    assert!(projections.wait_for(5, Duration::from_secs(10)).await);

    // Entries 7 to 10 become readable, 6 does not: nothing past 5 may be applied.
    store.set_phase(SIX_MISSING);
    while store.reads_in_phase.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The projector has read the log five times since 7 to 10 appeared: it saw them, and
    // applied nothing past the hole at 6.
    assert_eq!(projections.applied(), 5);

    store.set_phase(EVERYTHING);
    assert!(projections.wait_for(10, Duration::from_secs(10)).await);
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();
    drop(projections.subscribe());

    assert_eq!(projections.applied(), 10);
    let now = ts("2026-12-01T00:00:00Z");
    assert_eq!(dump(&projections.read(), now), dump(&log.models(), now));
    let observed = observed.lock().unwrap().clone();
    assert!(observed.contains(&(5, ONLY_FIRST_FIVE)) || observed.iter().any(|&(p, _)| p == 5));
    for (position, phase) in observed {
        assert!(
            position <= 5 || phase == EVERYTHING,
            "applied {position} while entry 6 was not readable"
        );
    }
    observer.abort();
}

#[tokio::test(start_paused = true)]
async fn an_entry_that_cannot_be_decoded_stops_the_projector() {
    let log = ten();
    let mut entries = entries(&log);
    entries[2].record = b"{not a record".to_vec();
    let store = Arc::new(FakeStore::new(entries, EVERYTHING));
    let projections = Arc::new(Projections::new(ReadModels::default()));
    let err = run_projector(
        store,
        Arc::clone(&projections),
        ProjectorOptions::default(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionsError::Store(StoreError::Corrupt { position: 3, .. })
        ),
        "{err}"
    );
    assert_eq!(
        projections.applied(),
        2,
        "entries before the bad one are applied, none after"
    );
}

/// Runs the projector on its own task until the returned sender sends (or is dropped).
fn start_projector<S: EventStore + 'static>(
    store: &Arc<S>,
    projections: &Arc<Projections>,
    options: ProjectorOptions,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ProjectionsError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let projector = tokio::spawn(run_projector(
        Arc::clone(store),
        Arc::clone(projections),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    (stop, projector)
}

pub async fn append_all(store: &SledStore, log: &Log, from: usize) {
    for (entry, event) in &log.entries[from..] {
        let outcome = store
            .append(AppendRequest::single(
                entry.loop_id.clone(),
                ExpectedVersion::Any,
                vec![event.clone()],
            ))
            .await
            .unwrap();
        assert_eq!(outcome.committed[0].position, entry.position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_with_a_sled_store_and_resumes_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SledStore::open(&dir.path().join("log"), &SledStoreOptions::default()).unwrap());
    let snapshot = dir.path().join("projections.snapshot");
    let options = ProjectorOptions {
        page: 3,
        snapshot_path: Some(snapshot.clone()),
        snapshot_every_events: 4,
        snapshot_every: Duration::from_secs(3600),
        saved: None,
        snapshot_at_start: false,
    };
    let mut log = ten();
    append_all(&store, &log, 0).await;

    let projections = Arc::new(
        Projections::load_snapshot(&snapshot)
            .map(Projections::new)
            .unwrap(),
    );
    let (stop, projector) = start_projector(&store, &projections, options.clone());
    assert!(projections.wait_for(10, Duration::from_secs(10)).await);

    // New writes reach the read models (read-your-writes through `wait_for`).
    log.feedback("d", "2026-11-26T09:00:00Z", "rxx/site-c");
    append_all(&store, &log, 10).await;
    assert!(projections.wait_for(11, Duration::from_secs(10)).await);
    let now = ts("2026-12-01T00:00:00Z");
    assert_eq!(
        ids_of(&projections.read(), &all(), now),
        ["a", "b", "c", "d"]
    );
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();

    // The snapshot written on shutdown holds everything, checkpoint included.
    let loaded = Projections::load_snapshot(&snapshot).unwrap();
    assert_eq!(loaded.checkpoint(), 11);
    assert_eq!(dump(&loaded, now), dump(&log.models(), now));

    // A restart resumes from the snapshot and goes on with the log.
    log.feedback("e", "2026-11-27T09:00:00Z", "rxx/site-c");
    append_all(&store, &log, 11).await;
    let projections = Arc::new(Projections::new(loaded));
    let (stop, projector) = start_projector(&store, &projections, options);
    assert!(projections.wait_for(12, Duration::from_secs(10)).await);
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();
    assert_eq!(dump(&projections.read(), now), dump(&log.models(), now));

    // `rebuild` from position 0 agrees, and reports its progress up to the head.
    let mut progress = Vec::new();
    let rebuilt = rebuild(&*store, 5, |done, head| progress.push((done, head)))
        .await
        .unwrap();
    assert_eq!(progress.first(), Some(&(0, 12)));
    assert_eq!(progress.last(), Some(&(12, 12)));
    assert_eq!(dump(&rebuilt, now), dump(&log.models(), now));
    let open = closeloop_projections::LoopQuery {
        status: StatusFilter::Open,
        ..all()
    };
    assert_eq!(ids_of(&rebuilt, &open, now), ["b", "d", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_log_gets_its_last_entries_snapshotted_without_more_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ten_in_a_store(dir.path()).await;
    let snapshot = dir.path().join("projections.snapshot");
    let (saved, mut heard) = tokio::sync::watch::channel(0);
    let options = ProjectorOptions {
        page: 100,
        snapshot_path: Some(snapshot.clone()),
        snapshot_every_events: 1_000,
        snapshot_every: Duration::from_millis(200),
        saved: Some(saved),
        snapshot_at_start: false,
    };
    let projections = Arc::new(Projections::new(ReadModels::default()));
    let (stop, projector) = start_projector(&store, &projections, options);

    // Far fewer entries than `snapshot_every_events`, and no write after them: the snapshot
    // follows anyway once `snapshot_every` has passed.
    tokio::time::timeout(Duration::from_secs(10), heard.wait_for(|&at| at == 10))
        .await
        .expect("a snapshot of the quiet log within 10 s")
        .unwrap();
    assert_eq!(
        Projections::load_snapshot(&snapshot).unwrap().checkpoint(),
        10
    );
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_stopped_before_it_read_anything_still_snapshots_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = ten_in_a_store(dir.path()).await;
    let snapshot = dir.path().join("projections.snapshot");
    let projections = Arc::new(Projections::new(ReadModels::default()));
    let options = ProjectorOptions {
        page: 3,
        snapshot_path: Some(snapshot.clone()),
        ..ProjectorOptions::default()
    };

    // The stop has come before the projector starts: what the log holds (say a write
    // acknowledged just before SIGTERM) still goes into the read models and the snapshot.
    run_projector(
        Arc::clone(&store),
        Arc::clone(&projections),
        options,
        async {},
    )
    .await
    .unwrap();
    assert_eq!(projections.applied(), 10);
    let now = ts("2026-12-01T00:00:00Z");
    let saved = Projections::load_snapshot(&snapshot).unwrap();
    assert_eq!(saved.checkpoint(), 10);
    assert_eq!(dump(&saved, now), dump(&log.models(), now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_computed_at_start_are_snapshotted_without_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = ten_in_a_store(dir.path()).await;
    let snapshot = dir.path().join("projections.snapshot");
    // A snapshot of all ten entries without SLA figures, as `closeloop rebuild` leaves it.
    let mut models = ReadModels::default();
    for (entry, event) in &log.entries {
        models.apply(entry, event);
    }
    Projections::new(models).save_snapshot(&snapshot).unwrap();

    let models = Projections::load_snapshot(&snapshot).unwrap();
    let sla = closeloop_domain::Sla::default();
    assert!(models.prepare(&sla), "the snapshot had no figures");
    let (saved, mut heard) = tokio::sync::watch::channel(0);
    let options = ProjectorOptions {
        page: 100,
        snapshot_path: Some(snapshot.clone()),
        snapshot_every_events: 1_000,
        snapshot_every: Duration::from_secs(3600),
        saved: Some(saved),
        snapshot_at_start: true,
    };
    let projections = Arc::new(Projections::new(models));
    let (stop, projector) = start_projector(&store, &projections, options);
    tokio::time::timeout(Duration::from_secs(10), heard.wait_for(|&at| at == 10))
        .await
        .expect("a snapshot at start, with nothing new applied")
        .unwrap();
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();

    let reloaded = Projections::load_snapshot(&snapshot).unwrap();
    assert!(
        !reloaded.prepare(&sla),
        "the figures came back from the snapshot"
    );
}

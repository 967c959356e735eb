//! Snapshots: file round trip, an interrupted save, damage and unknown formats, and the check
//! against the log they are loaded for.

use std::sync::Arc;
use std::time::Duration;

use closeloop_projections::{
    Projections, ProjectorOptions, ReadModels, SNAPSHOT_HEADER_MAX_BYTES, SnapshotError,
    SnapshotHeader, rebuild, run_projector, tmp_path,
};
use closeloop_store::{EventStore, SledStore, SledStoreOptions};
use tokio::sync::oneshot;

use crate::projector::append_all;
use crate::properties::dump;
use crate::{Log, ts};

fn models() -> (Log, ReadModels) {
    let mut log = Log::default();
    log.feedback("a", "2026-11-23T09:00:00Z", "rxx/site-a")
        .feedback("b", "2026-11-24T09:00:00Z", "rxx/site-b")
        .close("a", "2026-11-25T09:00:00Z");
    let models = log.models();
    (log, models)
}

#[test]
fn a_snapshot_file_round_trips_data_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projections.snapshot");
    let (log, models) = models();
    let before = dump(&models, ts("2026-12-01T00:00:00Z"));
    let projections = Projections::new(models);
    projections.save_snapshot(&path).unwrap();
    assert!(!tmp_path(&path).exists(), "the temporary file was renamed");

    let loaded = Projections::load_snapshot(&path).unwrap();
    assert_eq!(loaded.checkpoint(), log.entries.len() as u64);
    assert_eq!(dump(&loaded, ts("2026-12-01T00:00:00Z")), before);
}

#[test]
fn a_crash_while_saving_leaves_the_previous_snapshot_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projections.snapshot");

    // No snapshot yet, only a half-written temporary file: start empty.
    std::fs::write(tmp_path(&path), b"\x01half a snap").unwrap();
    let empty = Projections::load_snapshot(&path).unwrap();
    assert_eq!((empty.checkpoint(), empty.loop_count()), (0, 0));

    // A good snapshot, then a crash in the middle of writing the next one.
    let (_, models) = models();
    let checkpoint = models.checkpoint();
    Projections::new(models).save_snapshot(&path).unwrap();
    std::fs::write(tmp_path(&path), b"\x01half a snap").unwrap();
    let loaded = Projections::load_snapshot(&path).unwrap();
    assert_eq!(loaded.checkpoint(), checkpoint);
    assert_eq!(loaded.loop_count(), 2);

    // The next save simply replaces the leftover.
    Projections::new(loaded).save_snapshot(&path).unwrap();
    assert!(!tmp_path(&path).exists());
    assert_eq!(
        Projections::load_snapshot(&path).unwrap().checkpoint(),
        checkpoint
    );
}

#[test]
fn damaged_or_foreign_snapshots_are_refused_with_a_reason() {
    let (_, models) = models();
    let bytes = models.to_snapshot();
    assert_eq!(bytes[0], closeloop_projections::SNAPSHOT_VERSION);

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    assert!(matches!(
        ReadModels::from_snapshot(&flipped),
        Err(SnapshotError::Corrupt(_))
    ));
    assert!(matches!(
        ReadModels::from_snapshot(&bytes[..bytes.len() - 1]),
        Err(SnapshotError::Corrupt(_))
    ));
    assert!(matches!(
        ReadModels::from_snapshot(&[]),
        Err(SnapshotError::Corrupt(_))
    ));
    // Format 4 had no SLA figures: refused, so that the models rebuild and save them.
    let mut older = bytes.clone();
    older[0] = 4;
    let err = ReadModels::from_snapshot(&older).unwrap_err();
    assert!(matches!(err, SnapshotError::UnsupportedVersion(4)), "{err}");
    let mut future = bytes;
    future[0] = 9;
    let err = ReadModels::from_snapshot(&future).unwrap_err();
    assert!(matches!(err, SnapshotError::UnsupportedVersion(9)), "{err}");
    assert!(err.to_string().contains("rebuild"), "{err}");
}

#[test]
fn empty_models_round_trip() {
    let bytes = ReadModels::default().to_snapshot();
    let back = ReadModels::from_snapshot(&bytes).unwrap();
    assert_eq!((back.checkpoint(), back.loop_count()), (0, 0));
}

/// Two stores whose logs have the same length but different entries.
async fn two_stores(dir: &std::path::Path) -> [(Arc<SledStore>, Log); 2] {
    let mut first = Log::default();
    first
        .feedback("a", "2026-11-23T09:00:00Z", "rxx/site-a")
        .close("a", "2026-11-24T09:00:00Z");
    let mut second = Log::default();
    second
        .feedback("b", "2026-11-23T10:00:00Z", "rxx/site-b")
        .close("b", "2026-11-25T09:00:00Z");
    assert_eq!(first.entries.len(), second.entries.len());
    let mut out = Vec::new();
    for (name, log) in [("first", first), ("second", second)] {
        let store =
            Arc::new(SledStore::open(&dir.join(name), &SledStoreOptions::default()).unwrap());
        append_all(&store, &log, 0).await;
        out.push((store, log));
    }
    out.try_into()
        .unwrap_or_else(|_| unreachable!("two stores"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_log_is_not_trusted_and_the_models_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let [(first, first_log), (second, second_log)] = two_stores(dir.path()).await;
    let path = dir.path().join("projections.snapshot");
    let now = ts("2026-12-01T00:00:00Z");
    let built = rebuild(&*first, 100, |_, _| {}).await.unwrap();
    Projections::new(built).save_snapshot(&path).unwrap();

    // Against its own store the snapshot is used as it is.
    let own = Projections::load_snapshot_checked(&path, &*first).await;
    assert_eq!(own.checkpoint(), first.head());
    assert_eq!(dump(&own, now), dump(&first_log.models(), now));

    // The other store has an entry at the same position, but another one: start from zero.
    let loaded = Projections::load_snapshot_checked(&path, &*second).await;
    assert_eq!((loaded.checkpoint(), loaded.loop_count()), (0, 0));
    let projections = Arc::new(Projections::new(loaded));
    let (stop, stopped) = oneshot::channel::<()>();
    let projector = tokio::spawn(run_projector(
        Arc::clone(&second),
        Arc::clone(&projections),
        ProjectorOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    assert!(
        projections
            .wait_for(second.head(), Duration::from_secs(10))
            .await
    );
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();
    assert_eq!(
        dump(&projections.try_read().unwrap(), now),
        dump(&second_log.models(), now)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_ahead_of_the_log_or_of_the_old_format_are_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let [(first, _), _] = two_stores(dir.path()).await;
    let path = dir.path().join("projections.snapshot");

    // Built from a longer log than the store holds.
    let (log, models) = models();
    assert!(log.entries.len() as u64 > first.head());
    Projections::new(models).save_snapshot(&path).unwrap();
    let loaded = Projections::load_snapshot_checked(&path, &*first).await;
    assert_eq!(loaded.checkpoint(), 0);

    // Format 1 had no entry hash to check: such a snapshot is rebuilt, whatever it says.
    let mut old = vec![1_u8];
    old.extend_from_slice(&[0; 40]);
    std::fs::write(&path, &old).unwrap();
    let loaded = Projections::load_snapshot_checked(&path, &*first).await;
    assert_eq!(loaded.checkpoint(), 0);
    assert!(matches!(
        ReadModels::from_snapshot(&old),
        Err(SnapshotError::UnsupportedVersion(1))
    ));

    // No snapshot yet: empty models, nothing to check.
    std::fs::remove_file(&path).unwrap();
    let loaded = Projections::load_snapshot_checked(&path, &*first).await;
    assert_eq!(loaded.checkpoint(), 0);
}

#[test]
fn the_header_says_checkpoint_and_hash_without_reading_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projections.snapshot");
    assert_eq!(SnapshotHeader::read(&path).unwrap(), None, "no file yet");

    let (log, models) = models();
    let bytes = models.to_snapshot();
    std::fs::write(&path, &bytes).unwrap();
    let header = SnapshotHeader::read(&path).unwrap().unwrap();
    assert_eq!(header.checkpoint, log.entries.len() as u64);
    assert_eq!(
        SnapshotHeader::parse(&bytes[..SNAPSHOT_HEADER_MAX_BYTES]).unwrap(),
        header,
        "the first bytes are enough"
    );
    // It is the models' own: the entry they were built from matches, another does not.
    let (last, _) = log.entries.last().unwrap();
    assert!(header.built_from(Some(last)));
    assert!(!header.built_from(Some(&log.entries[0].0)));
    assert!(!header.built_from(None));

    // Empty models say position 0; other formats and scraps are refused.
    let empty = SnapshotHeader::parse(&ReadModels::default().to_snapshot()).unwrap();
    assert_eq!(empty.checkpoint, 0);
    assert!(empty.built_from(None));
    assert!(matches!(
        SnapshotHeader::parse(&[1, 2, 3]),
        Err(SnapshotError::UnsupportedVersion(1))
    ));
    assert!(matches!(
        SnapshotHeader::parse(&bytes[..5]),
        Err(SnapshotError::Corrupt(_))
    ));
    assert!(matches!(
        SnapshotHeader::parse(&[]),
        Err(SnapshotError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_says_when_a_snapshot_is_saved_and_hangs_up_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let [(store, _), _] = two_stores(dir.path()).await;
    let path = dir.path().join("projections.snapshot");
    let (saved, mut heard) = tokio::sync::watch::channel(0_u64);
    let projections = Arc::new(Projections::new(ReadModels::default()));
    let (stop, stopped) = oneshot::channel::<()>();
    let projector = tokio::spawn(run_projector(
        Arc::clone(&store),
        Arc::clone(&projections),
        ProjectorOptions {
            snapshot_path: Some(path.clone()),
            snapshot_every_events: 1,
            saved: Some(saved),
            ..ProjectorOptions::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    // A save while catching up is heard, and the file is in place when it is.
    let head = store.head();
    tokio::time::timeout(Duration::from_secs(10), heard.wait_for(|&at| at == head))
        .await
        .expect("a snapshot at the head within 10 s")
        .unwrap();
    let header = SnapshotHeader::read(&path).unwrap().unwrap();
    assert_eq!(header.checkpoint, head);

    // Once the projector has stopped, the channel says no snapshot will follow.
    stop.send(()).unwrap();
    projector.await.unwrap().unwrap();
    assert!(heard.changed().await.is_err(), "the sender was dropped");
    assert_eq!(*heard.borrow(), head);
}

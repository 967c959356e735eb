//! Snapshots: file round trip, an interrupted save, damage and unknown formats.

use closeloop_projections::{Projections, ReadModels, SnapshotError, tmp_path};

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

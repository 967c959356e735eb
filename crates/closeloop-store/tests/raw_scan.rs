//! `scan_raw`, the floor `closeloop-bench rebuild` sets the rebuild beside: it reads every
//! entry once whatever the number of threads, and never makes a store where there is none.

use closeloop_domain::LoopId;
use closeloop_store::conformance::{feedback, opening};
use closeloop_store::{EventStore, RawScan, SledStore, SledStoreOptions, scan_raw};

/// Enough entries for several sled leaves, few enough to write in a moment.
const LOOPS: usize = 1_000;

fn loop_id(n: usize) -> LoopId {
    LoopId::parse(&format!("loop-{n:04}")).expect("valid loop id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_read_once_on_any_number_of_threads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("open");
    let loops = (0..LOOPS).map(|n| (loop_id(n), feedback("urn:test", &format!("fb-{n}"))));
    store.append(opening(loops)).await.expect("append");
    let records: u64 = store
        .read_all(0, LOOPS + 1)
        .await
        .expect("read")
        .iter()
        .map(|stored| stored.record.len() as u64)
        .sum();
    store.close().await;

    let one = scan_raw(dir.path(), 1).expect("scan on one thread");
    assert_eq!(one.entries, LOOPS as u64);
    // Each entry is its header and its record.
    assert!(
        one.bytes > records,
        "{} bytes of entries, {records} of records",
        one.bytes
    );
    for threads in [0, 2, 3, 7, LOOPS + 5, usize::MAX] {
        assert_eq!(
            scan_raw(dir.path(), threads).expect("scan"),
            one,
            "{threads} threads"
        );
    }
}

#[test]
fn a_store_with_no_entries_scans_to_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        SledStore::open(dir.path(), &SledStoreOptions::default())
            .expect("open")
            .close()
            .await;
    });
    assert_eq!(
        scan_raw(dir.path(), 2).expect("scan"),
        RawScan {
            entries: 0,
            bytes: 0
        }
    );
}

#[test]
fn a_directory_without_a_store_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = scan_raw(dir.path(), 1).expect_err("no store here");
    assert!(err.to_string().contains("holds no event store"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "nothing was created"
    );
}

//! A log long enough for sled to split its nodes many times over (leaves and the index nodes
//! above them), written in ascending order as the store always writes: every entry reads back
//! where it was written, before and after reopening. The vendored sled splits the rightmost
//! node of a level unevenly (`vendor/README.md`); this is the test of that.

use closeloop_domain::LoopId;
use closeloop_store::conformance::{feedback, opening};
use closeloop_store::{EventStore, SledStore, SledStoreOptions, verify};

/// More than 256 full leaves of 21 entries: the index level above them splits too.
const LOOPS: usize = 12_000;
/// Loops in one append (one atomic batch), so that the test spends its time in sled.
const PER_APPEND: usize = 200;

fn loop_id(n: usize) -> LoopId {
    LoopId::parse(&format!("loop-{n:05}")).expect("valid loop id")
}

async fn read_everything(store: &SledStore) -> Vec<(u64, String)> {
    let mut seen = Vec::with_capacity(LOOPS);
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position;
        seen.extend(
            page.into_iter()
                .map(|stored| (stored.position, stored.loop_id.as_str().to_owned())),
        );
    }
    seen
}

fn check(seen: &[(u64, String)]) {
    assert_eq!(seen.len(), LOOPS, "every entry reads back");
    for (n, (position, id)) in seen.iter().enumerate() {
        assert_eq!(
            *position,
            n as u64 + 1,
            "positions are gapless and in order"
        );
        assert_eq!(id, loop_id(n).as_str(), "entry {position} is its own");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_reads_back_whole_and_in_order_before_and_after_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("open");
    for first in (0..LOOPS).step_by(PER_APPEND) {
        let loops = (first..first + PER_APPEND)
            .map(|n| (loop_id(n), feedback("urn:test", &format!("fb-{n}"))));
        store.append(opening(loops)).await.expect("append");
    }
    check(&read_everything(&store).await);
    store.close().await;

    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("reopen");
    check(&read_everything(&store).await);
    for n in [0, 20, 21, 22, 5_000, LOOPS - 1] {
        let events = store.read_loop(&loop_id(n)).await.expect("read loop");
        assert_eq!(events.len(), 1, "loop {n}");
        assert_eq!(events[0].position, n as u64 + 1, "loop {n}");
    }
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok, "{report:?}");
    store.close().await;
}

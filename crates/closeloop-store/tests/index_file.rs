//! The sled store's index file: a clean close writes it, the next open starts from it, and an
//! open that finds it stale, damaged or from another log rebuilds the index instead, with the
//! same answers either way.

use std::path::Path;

use closeloop_domain::{Command, EventType, LoopEvent, LoopId};
use closeloop_store::chain::Hash;
use closeloop_store::write::{self, Origin};
use closeloop_store::{EventStore, INDEX_FILE_NAME, SledStore, SledStoreOptions};
use serde_json::json;

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, &SledStoreOptions::default()).expect("open")
}

fn command(loop_id: &str, event_type: EventType) -> Command {
    let data = match event_type {
        EventType::FeedbackReceived => {
            json!({"org_unit": "rxx/a", "channel": "web", "story": "ok"})
        }
        _ => json!({"by": "pals"}),
    };
    Command {
        loop_id: LoopId::parse(loop_id).expect("loop id"),
        at: "2026-11-23T10:00:00Z".parse().expect("time"),
        payload: LoopEvent::from_data(event_type, data).expect("valid data"),
    }
}

fn origin(id: &str) -> Origin {
    Origin {
        source: "urn:test".to_owned(),
        event_id: id.to_owned(),
        request: None,
        actor: None,
    }
}

/// Records a feedback for loops `from..to` and acknowledges every other one.
async fn record_loops(store: &SledStore, from: u32, to: u32) {
    record_loops_keyed(store, "", from, to).await;
}

/// [`record_loops`], with event ids that start with `prefix`.
async fn record_loops_keyed(store: &SledStore, prefix: &str, from: u32, to: u32) {
    for n in from..to {
        let loop_id = format!("loop-{n}");
        write::record(
            store,
            command(&loop_id, EventType::FeedbackReceived),
            origin(&format!("{prefix}f{n}")),
            None,
        )
        .await
        .expect("feedback");
        if n % 2 == 0 {
            write::record(
                store,
                command(&loop_id, EventType::Acknowledged),
                origin(&format!("{prefix}a{n}")),
                None,
            )
            .await
            .expect("acknowledgement");
        }
    }
}

/// What the index answers: every loop's positions, keys found, the Merkle tree's parts.
async fn answers(store: &SledStore, loops: u32) -> Vec<String> {
    let mut seen = Vec::new();
    for n in 0..loops {
        let events = store
            .read_loop(&LoopId::parse(&format!("loop-{n}")).expect("id"))
            .await
            .expect("read loop");
        let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
        let key = store
            .lookup("urn:test", &format!("f{n}"))
            .await
            .expect("lookup")
            .map(|c| c.position);
        seen.push(format!("loop-{n}: {positions:?} key at {key:?}"));
    }
    let (roots, partial): (Vec<Hash>, Vec<Hash>) = store.with_merkle(|merkle| {
        let (roots, partial) = merkle.parts();
        (roots.to_vec(), partial.to_vec())
    });
    seen.push(format!("merkle {roots:?} {partial:?}"));
    seen.push(format!("head {}", store.head()));
    seen
}

#[tokio::test]
async fn a_clean_close_lets_the_next_open_start_from_the_index_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    assert_eq!(store.indexed_from_file(), 0, "a new store has no file");
    record_loops(&store, 0, 300).await;
    let before = answers(&store, 300).await;
    store.close().await;
    assert!(dir.path().join(INDEX_FILE_NAME).exists());

    let store = open(dir.path());
    assert_eq!(
        store.indexed_from_file(),
        450,
        "every position from the file"
    );
    assert_eq!(answers(&store, 300).await, before);

    // Appends go on from it, and a repeated key is still a repeat.
    let again = write::record(
        &store,
        command("loop-7", EventType::FeedbackReceived),
        origin("f7"),
        None,
    )
    .await
    .expect("repeat");
    assert!(again.duplicate);
    record_loops(&store, 300, 320).await;
    let after = answers(&store, 320).await;
    store.close().await;

    let store = open(dir.path());
    assert_eq!(store.indexed_from_file(), 480);
    assert_eq!(answers(&store, 320).await, after);
    store.close().await;
}

#[tokio::test]
async fn appends_after_opening_from_the_file_chain_onto_each_loops_last_entry() {
    // The file keeps no head hashes: an append reads its loop's from the log.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    record_loops(&store, 0, 40).await;
    store.close().await;

    let store = open(dir.path());
    assert_eq!(store.indexed_from_file(), 60);
    for n in (1..40).step_by(2) {
        let loop_id = format!("loop-{n}");
        write::record(
            &store,
            command(&loop_id, EventType::Acknowledged),
            origin(&format!("later-a{n}")),
            None,
        )
        .await
        .expect("acknowledgement of a loop from the file");
    }
    // A loop from the file and one new since, twice each.
    record_loops_keyed(&store, "new-", 40, 41).await;
    for (n, loop_id) in ["loop-2", "loop-40", "loop-2"].into_iter().enumerate() {
        let reply = Command {
            payload: LoopEvent::from_data(
                EventType::Responded,
                json!({"by": "pals", "text": "thank you"}),
            )
            .expect("valid data"),
            ..command(loop_id, EventType::Acknowledged)
        };
        write::record(&store, reply, origin(&format!("reply-{n}")), None)
            .await
            .expect("response");
    }
    let report = closeloop_store::verify(&store, None).await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events, 60 + 20 + 2 + 3);
    let versions: Vec<u64> = store
        .read_loop(&LoopId::parse("loop-2").expect("id"))
        .await
        .expect("read loop")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    store.close().await;
}

#[tokio::test]
async fn after_a_stop_without_close_the_old_file_is_used_and_the_rest_read_from_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    record_loops(&store, 0, 100).await;
    store.close().await;
    let file = dir.path().join(INDEX_FILE_NAME);
    let older = std::fs::read(&file).expect("read");

    let store = open(dir.path());
    record_loops(&store, 100, 150).await;
    let expected = answers(&store, 150).await;
    store.close().await;
    // As after a crash, which writes no file: the one from the clean close before it, which
    // covers the first 150 positions of the 225.
    std::fs::write(&file, older).expect("write");

    let store = open(dir.path());
    assert_eq!(store.indexed_from_file(), 150);
    assert_eq!(answers(&store, 150).await, expected);
    store.close().await;
}

#[tokio::test]
async fn a_damaged_file_or_one_from_another_log_is_ignored_and_the_index_rebuilt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    record_loops(&store, 0, 60).await;
    let expected = answers(&store, 60).await;
    store.close().await;
    let file = dir.path().join(INDEX_FILE_NAME);

    // Damaged: one bit flipped.
    let good = std::fs::read(&file).expect("read");
    let mut damaged = good.clone();
    damaged[100] ^= 0x10;
    std::fs::write(&file, &damaged).expect("write");
    let store = open(dir.path());
    assert_eq!(store.indexed_from_file(), 0);
    assert_eq!(answers(&store, 60).await, expected);
    store.close().await;

    // From another log of the same length: its last entry is not this log's.
    let other = tempfile::tempdir().expect("temp dir");
    let store = open(other.path());
    record_loops_keyed(&store, "other-", 0, 60).await;
    store.close().await;
    std::fs::copy(other.path().join(INDEX_FILE_NAME), &file).expect("copy");
    let store = open(dir.path());
    assert_eq!(store.indexed_from_file(), 0);
    assert_eq!(answers(&store, 60).await, expected);
    store.close().await;

    // And one covering more of the log than there is (the log restored from an older copy).
    let shorter = tempfile::tempdir().expect("temp dir");
    let store = open(shorter.path());
    record_loops(&store, 0, 30).await;
    let expected = answers(&store, 30).await;
    store.close().await;
    std::fs::write(shorter.path().join(INDEX_FILE_NAME), &good).expect("write");
    let store = open(shorter.path());
    assert_eq!(store.indexed_from_file(), 0);
    assert_eq!(answers(&store, 30).await, expected);
    store.close().await;
}

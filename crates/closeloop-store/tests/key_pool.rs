//! Pooled keys: a new loop's key comes from a pool made ahead in one durable step, and the
//! key store's slot naming the loop is synced later. A power cut can lose that slot while the
//! record sealed with the key is durable; reopening the store must give the key back to its
//! loop (contact digest included) before anything can erase it.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use closeloop_domain::{EventType, LoopEvent, LoopId};
use closeloop_keys::file_format::SLOT_SIZE;
use closeloop_keys::{FileKeyStore, KEY_FILE_NAME, KeyStore, MasterKey};
use closeloop_store::conformance::event;
use closeloop_store::record::Reveal;
use closeloop_store::{
    AppendRequest, EventStore, ExpectedVersion, KeyHandle, SledStore, SledStoreOptions,
};
use serde_json::json;

fn open(dir: &Path, master: &MasterKey) -> (SledStore, Arc<FileKeyStore>) {
    let keys = Arc::new(FileKeyStore::open(&dir.join("keys"), Some(master)).expect("key store"));
    let options = SledStoreOptions {
        keys: Some(KeyHandle(Arc::clone(&keys) as Arc<dyn KeyStore>)),
        key_pool: 4,
        ..SledStoreOptions::default()
    };
    let store = SledStore::open(&dir.join("log"), &options).expect("open store");
    (store, keys)
}

async fn feedback(store: &SledStore, loop_id: &str, contact: &str) {
    let data = json!({
        "org_unit": "rxx/site-a/ward-7",
        "channel": "web",
        "story": format!("the story of {loop_id}"),
        "author": {"name": "Jo", "contact": contact},
    });
    let event = event("urn:test", loop_id, EventType::FeedbackReceived, data);
    store
        .append(AppendRequest::single(
            LoopId::parse(loop_id).expect("loop id"),
            ExpectedVersion::NoLoop,
            vec![event],
        ))
        .await
        .expect("append");
}

async fn story(store: &SledStore, keys: &FileKeyStore, loop_id: &str) -> Option<String> {
    let entries = store
        .read_loop(&LoopId::parse(loop_id).expect("loop id"))
        .await
        .expect("read loop");
    let event = entries[0].event_as(Reveal::With(keys)).expect("decodes");
    match event.payload {
        LoopEvent::FeedbackReceived(data) => data.story,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_slot_a_power_cut_lost_goes_back_to_its_loop_on_open() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let master = MasterKey::generate();
    let key_file = dir.join("keys").join(KEY_FILE_NAME);

    let (store, keys) = open(dir, &master);
    feedback(&store, "loop-first", "first@example.org").await;
    // What the disk holds before the next loop's key is given: the rest of the pool, and
    // the header's watermark as of now.
    let before = fs::read(&key_file).expect("key file");
    feedback(&store, "loop-lost", "jo@example.org").await;
    let jo = keys.contact_digest("jo@example.org").expect("digest");
    let lost_loops = keys.loops_with_contact(&jo).expect("contact index");
    assert_eq!(lost_loops, ["loop-lost"]);
    store.close().await;
    drop(keys);

    // The power cut: every key-file write since `before` is lost (the record is durable),
    // the close's sync of the assignments too.
    let after = fs::read(&key_file).expect("key file");
    let changed: Vec<usize> = (0..before.len() / SLOT_SIZE)
        .filter(|slot| {
            before[slot * SLOT_SIZE..][..SLOT_SIZE] != after[slot * SLOT_SIZE..][..SLOT_SIZE]
        })
        .collect();
    assert!(
        !changed.is_empty(),
        "the second loop's key slot was written"
    );
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&key_file)
        .expect("open");
    file.write_all_at(&before, 0).expect("restore");
    drop(file);

    let (store, keys) = open(dir, &master);
    assert_eq!(
        story(&store, &keys, "loop-lost").await.as_deref(),
        Some("the story of loop-lost"),
        "the record opens with the recovered key"
    );
    assert_eq!(
        keys.loops_with_contact(&jo).expect("contact index"),
        ["loop-lost"]
    );
    // A new loop gets a key of its own, not the recovered one.
    feedback(&store, "loop-next", "sam@example.org").await;
    assert_eq!(
        story(&store, &keys, "loop-next").await.as_deref(),
        Some("the story of loop-next")
    );
    assert_eq!(keys.destroy_loop("loop-lost").expect("destroy"), 1);
    assert_eq!(
        story(&store, &keys, "loop-lost").await.as_deref(),
        Some(closeloop_store::record::ERASED),
        "the erasure destroyed the recovered key"
    );
    assert_eq!(
        story(&store, &keys, "loop-next").await.as_deref(),
        Some("the story of loop-next")
    );
    store.close().await;
    // A clean close synced the assignments: the next open reads no records to recover.
    assert_eq!(keys.assignments_to_recover_after(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_leaves_nothing_to_recover() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let master = MasterKey::generate();
    let (store, keys) = open(dir, &master);
    for n in 0..6 {
        feedback(&store, &format!("loop-{n}"), "jo@example.org").await;
    }
    let head = store.head();
    store.close().await;
    drop(keys);
    let keys = FileKeyStore::open(&dir.join("keys"), Some(&master)).expect("key store");
    // Pooled keys are left, so recovery would start at the watermark: the log's head.
    assert_eq!(keys.assignments_to_recover_after(), Some(head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_syncs_assignments_as_new_loops_come() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let (store, keys) = open(dir, &MasterKey::generate());
    // Each append is answered before the writer syncs, and the next batch waits for that
    // sync: by the 200th new loop the sync due at the 128th has run.
    for n in 0..200 {
        feedback(&store, &format!("loop-{n}"), "jo@example.org").await;
    }
    let waiting = keys.unsynced_assignments();
    assert!(
        waiting < 128,
        "{waiting} assignments wait for a sync after 200 new loops"
    );
    store.close().await;
    assert_eq!(
        keys.unsynced_assignments(),
        0,
        "a clean close syncs the rest"
    );
}

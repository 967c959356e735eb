//! What only the file store must do: keep its promises about the bytes on disk. Erased keys and
//! digests are gone from every file, torn tails are dropped, damage is refused, one process at a
//! time, and a full disk stops writes without losing an acknowledged key.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use closeloop_keys::conformance::{first_master, second_master};
use closeloop_keys::file_format::{SLOT_SIZE, SLOT_WRAPPED_KEY};
use closeloop_keys::{
    ContactDigest, DataKey, FileKeyStore, KEY_FILE_NAME, KeyError, KeyRequest, KeyState, KeyStore,
};
use closeloop_testkit::Tmpfs;

fn open(dir: &Path) -> FileKeyStore {
    FileKeyStore::open(dir, Some(&first_master())).expect("open the key store")
}

fn key_file(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE_NAME)
}

fn file_len(dir: &Path) -> u64 {
    fs::metadata(key_file(dir)).expect("key file").len()
}

fn key_for(store: &FileKeyStore, loop_id: &str, contact: Option<ContactDigest>) -> DataKey {
    store
        .keys_for_writing(&[KeyRequest { loop_id, contact }])
        .expect("a key")
        .remove(0)
}

/// The bytes of slot `id` as they sit in the key file now.
fn slot_bytes(dir: &Path, id: u64) -> Vec<u8> {
    let bytes = fs::read(key_file(dir)).expect("read key file");
    let start = usize::try_from(id).unwrap() * SLOT_SIZE;
    bytes[start..start + SLOT_SIZE].to_vec()
}

/// The wrapped bytes of key `id` as they sit in the key file now.
fn wrapped_bytes(dir: &Path, id: u64) -> Vec<u8> {
    slot_bytes(dir, id)[SLOT_WRAPPED_KEY].to_vec()
}

/// Every byte of every file under `dir`, file by file.
fn every_file_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(every_file_under(&path));
        } else {
            let bytes = fs::read(&path).expect("read file");
            files.push((path, bytes));
        }
    }
    files
}

fn found_under(dir: &Path, needle: &[u8]) -> bool {
    every_file_under(dir)
        .iter()
        .any(|(_, bytes)| bytes.windows(needle.len()).any(|window| window == needle))
}

fn flip_byte(dir: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(key_file(dir))
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], offset).unwrap();
}

fn append_bytes(dir: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(key_file(dir)).unwrap();
    file.write_all(bytes).unwrap();
}

fn is_live(store: &FileKeyStore, loop_id: &str, key: &DataKey) -> bool {
    match store.key(loop_id, key.id).expect("key state") {
        KeyState::Live(found) => {
            let sealed = key.seal(b"", b"probe");
            found.open(b"", &sealed.nonce, &sealed.ciphertext).is_ok()
        }
        _ => false,
    }
}

#[test]
fn an_erased_loops_wrapped_key_and_digests_are_nowhere_in_the_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    let jo = store.contact_digest("jo@example.org").unwrap();
    let jo_phone = store.contact_digest("07700 900123").unwrap();
    let sam = store.contact_digest("sam@example.org").unwrap();
    let erased = key_for(&store, "erased", Some(jo));
    key_for(&store, "erased", Some(jo_phone));
    let kept = key_for(&store, "kept", Some(sam));
    let erased_wrapped = wrapped_bytes(dir, erased.id);
    let kept_wrapped = wrapped_bytes(dir, kept.id);
    // The scan sees what it looks for while it is there.
    for needle in [
        &erased_wrapped[..],
        &kept_wrapped,
        &jo.0,
        &jo_phone.0,
        &sam.0,
    ] {
        assert!(found_under(dir, needle), "the scan cannot see live bytes");
    }

    assert_eq!(store.destroy_loop("erased").unwrap(), 1);
    drop(store);
    let store = open(dir);

    assert!(
        !found_under(dir, &erased_wrapped),
        "the erased wrapped key is still on disk"
    );
    assert!(
        !found_under(dir, &jo.0),
        "the erased loop's contact digest is still on disk"
    );
    assert!(
        !found_under(dir, &jo_phone.0),
        "the erased loop's second digest is still on disk"
    );
    assert!(found_under(dir, &kept_wrapped), "a live key went missing");
    assert!(found_under(dir, &sam.0), "a live digest went missing");
    assert!(matches!(
        store.key("erased", erased.id).unwrap(),
        KeyState::Destroyed
    ));
    assert!(is_live(&store, "kept", &kept));
    assert!(store.loops_with_contact(&jo).unwrap().is_empty());
}

#[test]
fn rotation_leaves_no_key_wrapped_under_the_old_master_on_disk() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    let kept = key_for(&store, "kept", None);
    let old_wrapped = wrapped_bytes(dir, kept.id);
    key_for(&store, "erased", None);
    store.destroy_loop("erased").unwrap();
    assert_eq!(store.rotate_master_key(&second_master()).unwrap(), 1);
    drop(store);

    assert!(
        !found_under(dir, &old_wrapped),
        "a key wrapped under the old master is on disk"
    );
    let names: Vec<_> = every_file_under(dir)
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    assert_eq!(names, [key_file(dir)], "rotation leaves only the key file");
    let store = FileKeyStore::open(dir, Some(&second_master())).unwrap();
    assert!(is_live(&store, "kept", &kept));
}

#[test]
fn key_ids_are_slot_numbers_and_each_key_or_contact_takes_one_slot() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    assert_eq!(file_len(dir), SLOT_SIZE as u64, "a new store is its header");
    let jo = store.contact_digest("jo@example.org").unwrap();
    let ids: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|loop_id| key_for(&store, loop_id, None).id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    key_for(&store, "a", Some(jo));
    assert_eq!(
        file_len(dir),
        5 * SLOT_SIZE as u64,
        "header, three keys and a contact"
    );
    assert_eq!(
        key_for(&store, "d", Some(jo)).id,
        5,
        "a first key carries its contact"
    );
    assert_eq!(file_len(dir), 6 * SLOT_SIZE as u64);
}

#[test]
fn a_partial_slot_at_the_tail_is_dropped() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let a = key_for(&open(dir), "a", None);
    append_bytes(dir, &[0xee; 100]);

    let store = open(dir);
    assert_eq!(file_len(dir), 2 * SLOT_SIZE as u64);
    assert!(is_live(&store, "a", &a));
    assert_eq!(key_for(&store, "b", None).id, 2);
}

#[test]
fn torn_last_slots_are_dropped_and_a_sealed_open_leaves_them_alone() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    let a = key_for(&store, "a", None);
    let b = key_for(&store, "b", None);
    drop(store);
    // A crash tore slot 2 and left a zero-filled slot 3 behind it, as delayed allocation can.
    flip_byte(dir, 2 * SLOT_SIZE as u64 + 150);
    append_bytes(dir, &[0; SLOT_SIZE]);
    let torn_len = file_len(dir);

    let sealed = FileKeyStore::open(dir, None).unwrap();
    assert!(matches!(sealed.key("a", a.id).unwrap(), KeyState::Sealed));
    assert!(matches!(sealed.key("b", b.id).unwrap(), KeyState::Unknown));
    drop(sealed);
    assert_eq!(file_len(dir), torn_len, "a sealed open writes nothing");

    let store = open(dir);
    assert_eq!(file_len(dir), 2 * SLOT_SIZE as u64);
    assert!(is_live(&store, "a", &a));
    assert!(matches!(store.key("b", b.id).unwrap(), KeyState::Unknown));
    let again = key_for(&store, "b", None);
    assert_eq!(again.id, b.id, "the torn slot's number is free again");
    assert!(!is_live(&store, "b", &b), "a torn key is never handed out");
}

#[test]
fn a_bad_slot_before_a_good_one_is_corruption() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    for loop_id in ["a", "b", "c"] {
        key_for(&store, loop_id, None);
    }
    drop(store);
    flip_byte(dir, SLOT_SIZE as u64 + 10);
    let error = FileKeyStore::open(dir, Some(&first_master())).unwrap_err();
    assert!(matches!(error, KeyError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("slot 1"), "{error}");
    assert!(error.to_string().contains("backup"), "{error}");
}

#[test]
fn a_damaged_header_is_corruption_not_a_wrong_key() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    drop(open(dir));
    flip_byte(dir, 60);
    let error = FileKeyStore::open(dir, Some(&first_master())).unwrap_err();
    assert!(matches!(error, KeyError::Corrupt { .. }), "{error:?}");
    flip_byte(dir, 60);
    flip_byte(dir, 0);
    let error = FileKeyStore::open(dir, None).unwrap_err();
    assert!(error.to_string().contains("header"), "{error}");
}

#[test]
fn one_process_at_a_time() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    let error = FileKeyStore::open(dir, Some(&first_master())).unwrap_err();
    assert!(matches!(error, KeyError::Locked { .. }), "{error:?}");
    assert!(matches!(
        FileKeyStore::open(dir, None),
        Err(KeyError::Locked { .. })
    ));
    drop(store);
    let first = FileKeyStore::open(dir, None).unwrap();
    let second = FileKeyStore::open(dir, None).expect("sealed readers share the store");
    assert!(matches!(
        FileKeyStore::open(dir, Some(&first_master())),
        Err(KeyError::Locked { .. })
    ));
    drop((first, second));
}

#[test]
fn a_sealed_open_of_an_empty_directory_creates_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("no-keys-yet");
    let store = FileKeyStore::open(&dir, None).unwrap();
    assert!(matches!(store.key("a", 1).unwrap(), KeyState::Unknown));
    assert!(!store.is_erased("a"));
    assert!(matches!(
        store.keys_for_writing(&[KeyRequest {
            loop_id: "a",
            contact: None
        }]),
        Err(KeyError::Sealed)
    ));
    assert!(!dir.exists());
}

#[test]
fn an_interrupted_rotation_leaves_the_old_store_in_force() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let a = key_for(&open(dir), "a", None);
    // A rotation that crashed before its rename leaves its half-written file behind.
    fs::write(dir.join("keys.rotating"), [0x42; 3 * SLOT_SIZE]).unwrap();
    assert!(matches!(
        FileKeyStore::open(dir, Some(&second_master())),
        Err(KeyError::WrongMasterKey)
    ));
    let store = open(dir);
    assert!(is_live(&store, "a", &a));
    assert!(!dir.join("keys.rotating").exists());
}

#[test]
fn many_threads_making_keys_for_different_loops_lose_none() {
    const THREADS: usize = 16;
    const LOOPS_EACH: usize = 25;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let store = open(dir);
    let made: Vec<(String, DataKey)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let store = &store;
                scope.spawn(move || {
                    (0..LOOPS_EACH)
                        .map(|n| {
                            let loop_id = format!("t{thread}-l{n}");
                            let key = key_for(store, &loop_id, None);
                            (loop_id, key)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    drop(store);
    let mut ids: Vec<u64> = made.iter().map(|(_, key)| key.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), THREADS * LOOPS_EACH);
    let store = open(dir);
    for (loop_id, key) in &made {
        assert!(is_live(&store, loop_id, key), "{loop_id} lost its key");
    }
}

#[test]
fn a_full_disk_stops_writes_and_loses_no_acknowledged_key() {
    let Some(tmpfs) = Tmpfs::mount(1) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = tmpfs.path().join("keys");
    let store = open(&dir);
    // Fill the disk, leaving the key file two pages to grow into: count the free pages, then
    // take all but two.
    let filler = tmpfs.path().join("filler");
    let free_pages = {
        let mut file = fs::File::create(&filler).unwrap();
        std::iter::from_fn(|| file.write_all(&[0; 4096]).ok()).count()
    };
    assert!(
        free_pages > 2,
        "the tmpfs had room for the key file to grow"
    );
    fs::remove_file(&filler).unwrap();
    {
        let mut file = fs::File::create(&filler).unwrap();
        for _ in 0..free_pages - 2 {
            file.write_all(&[0; 4096]).unwrap();
        }
    }

    let mut acknowledged = Vec::new();
    let failure = loop {
        assert!(acknowledged.len() < 1000, "the disk never filled up");
        let loop_id = format!("loop-{}", acknowledged.len());
        match store.keys_for_writing(&[KeyRequest {
            loop_id: &loop_id,
            contact: None,
        }]) {
            Ok(mut keys) => acknowledged.push((loop_id, keys.remove(0))),
            Err(error) => break error,
        }
    };
    assert!(matches!(failure, KeyError::Io { .. }), "{failure:?}");
    assert!(!acknowledged.is_empty(), "nothing fitted at all");
    // Stopped: even a write that would fit in an allocated page is refused now.
    let next = store.keys_for_writing(&[KeyRequest {
        loop_id: "after",
        contact: None,
    }]);
    assert!(matches!(next, Err(KeyError::Failed { .. })), "{next:?}");
    assert!(matches!(
        store.destroy_loop("loop-0"),
        Err(KeyError::Failed { .. })
    ));
    drop(store);

    // The operator frees space and restarts: every acknowledged key is there.
    fs::remove_file(&filler).unwrap();
    let store = open(&dir);
    for (loop_id, key) in &acknowledged {
        assert!(is_live(&store, loop_id, key), "{loop_id} lost its key");
    }
    key_for(&store, "after", None);
}

fn write_slot_bytes(dir: &Path, id: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(key_file(dir)).unwrap();
    file.write_all_at(bytes, id * SLOT_SIZE as u64).unwrap();
}

/// A store in a fresh directory giving new loops keys from a pool of `keys`.
fn pooled_store(keys: usize) -> (tempfile::TempDir, FileKeyStore) {
    let temp = tempfile::tempdir().unwrap();
    let store = open(temp.path());
    store.start_pool(keys).unwrap();
    (temp, store)
}

#[test]
fn a_pooled_key_whose_assignment_a_crash_lost_is_recovered_and_then_erasable() {
    let (temp, store) = pooled_store(4);
    let dir = temp.path();
    let jo = store.contact_digest("jo@example.org").unwrap();
    let warm = key_for(&store, "warm", None);
    // The pool was made in one durable step: four slots, the first given to "warm".
    assert_eq!(file_len(dir), 5 * SLOT_SIZE as u64);
    let pooled_slot = slot_bytes(dir, warm.id + 1);
    let lost = key_for(&store, "lost", Some(jo));
    assert_eq!(lost.id, warm.id + 1, "the lowest pooled key goes first");
    assert_eq!(store.unsynced_assignments(), 2);
    drop(store);
    // A crash before the slot naming "lost" reached the disk: the slot is pooled again.
    write_slot_bytes(dir, lost.id, &pooled_slot);

    let store = open(dir);
    assert_eq!(store.assignments_to_recover_after(), Some(0));
    assert!(matches!(
        store.key("lost", lost.id).unwrap(),
        KeyState::Unknown
    ));
    assert!(store.loops_with_contact(&jo).unwrap().is_empty());
    assert!(
        !store.recover_assignment("lost", warm.id).unwrap(),
        "not a pooled key"
    );
    assert!(store.recover_assignment("lost", lost.id).unwrap());
    assert!(!store.recover_assignment("lost", lost.id).unwrap(), "once");
    assert!(
        is_live(&store, "lost", &lost),
        "the same key, back with its loop"
    );
    assert!(is_live(&store, "warm", &warm));
    // The store keeps the pool going after the recovered key.
    store.start_pool(4).unwrap();
    let next = key_for(&store, "next", None);
    assert_eq!(next.id, lost.id + 1);
    store.sync_assignments(42).unwrap();
    assert_eq!(store.unsynced_assignments(), 0);
    assert_eq!(store.assignments_to_recover_after(), None);

    let lost_wrapped = wrapped_bytes(dir, lost.id);
    assert!(found_under(dir, &lost_wrapped));
    assert_eq!(store.destroy_loop("lost").unwrap(), 1);
    assert!(
        !found_under(dir, &lost_wrapped),
        "the recovered key was destroyed"
    );
    drop(store);

    let store = open(dir);
    // One pooled key is left, and the watermark says where recovery would start.
    assert_eq!(store.assignments_to_recover_after(), Some(42));
    assert!(matches!(
        store.key("lost", lost.id).unwrap(),
        KeyState::Destroyed
    ));
    assert!(is_live(&store, "next", &next));
}

#[test]
fn a_recovered_key_never_becomes_a_second_key_of_a_loop() {
    let (_temp, store) = pooled_store(4);
    let first = key_for(&store, "loop-a", None);
    let pooled = first.id + 1;
    assert!(matches!(
        store.recover_assignment("loop-a", pooled),
        Err(KeyError::Corrupt { .. })
    ));
    assert!(is_live(&store, "loop-a", &first));
}

#[test]
fn rotation_rewraps_pooled_keys_and_keeps_the_watermark() {
    let (temp, store) = pooled_store(3);
    let dir = temp.path();
    let given = key_for(&store, "given", None);
    store.sync_assignments(7).unwrap();
    let pooled_wrapped = wrapped_bytes(dir, given.id + 1);
    assert_eq!(store.rotate_master_key(&second_master()).unwrap(), 3);
    drop(store);
    assert!(
        !found_under(dir, &pooled_wrapped),
        "a pooled key is still under the old master"
    );
    let store = FileKeyStore::open(dir, Some(&second_master())).unwrap();
    assert_eq!(store.assignments_to_recover_after(), Some(7));
    assert!(is_live(&store, "given", &given));
    store.start_pool(3).unwrap();
    let next = key_for(&store, "next", None);
    assert_eq!(next.id, given.id + 1, "the rotated pool still gives keys");
    assert!(is_live(&store, "next", &next));
}

#[test]
fn a_pool_keeps_giving_keys_after_a_rotation_without_a_restart() {
    let (temp, store) = pooled_store(3);
    let dir = temp.path();
    let before = key_for(&store, "before", None);
    store.rotate_master_key(&second_master()).unwrap();
    // The next pooled key was wrapped under the old master when the pool was made.
    let after = key_for(&store, "after", None);
    assert_eq!(after.id, before.id + 1, "taken from the same pool");
    assert!(is_live(&store, "after", &after));
    drop(store);
    let store = FileKeyStore::open(dir, Some(&second_master())).unwrap();
    assert!(is_live(&store, "before", &before));
    assert!(is_live(&store, "after", &after));
}

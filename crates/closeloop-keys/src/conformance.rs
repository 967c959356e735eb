//! The test suite every [`KeyStore`] implementation must pass.
//!
//! Each check is a function taking a [`KeyStoreHarness`]: something that opens one store, fresh
//! and empty the first time, and the same store again (a reopen) afterwards.
//! [`conformance_tests!`] turns the checks into one `#[test]` each for a backend:
//!
//! ```ignore
//! fn harness() -> MyHarness { ... }
//! closeloop_keys::conformance_tests!(harness);
//! ```
//!
//! [`conformance_tests!`]: crate::conformance_tests

use std::collections::{BTreeSet, HashMap};
use std::sync::{Barrier, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::{DataKey, KeyError, KeyRequest, KeyState, KeyStore, MasterKey, MemoryKeyStore};

/// Opens the one store a check works on.
pub trait KeyStoreHarness {
    /// The store under test.
    type Store: KeyStore + std::fmt::Debug;

    /// Opens the store under `master` (`None`: sealed). The first call, always with a master
    /// key, creates it empty; later calls reopen it, after the check dropped every earlier handle.
    ///
    /// # Errors
    /// Whatever opening the store answers, e.g. [`KeyError::WrongMasterKey`].
    fn open(&self, master: Option<&MasterKey>) -> Result<Self::Store, KeyError>;
}

/// Expands to one `#[test]` per conformance check. `$make` is a fn returning a fresh
/// [`KeyStoreHarness`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make, [
            one_live_key_per_loop,
            batches_answer_in_request_order,
            concurrent_first_writes_make_one_key,
            destroying_makes_keys_destroyed_and_later_writes_get_a_new_key,
            erasing_a_loop_without_keys_marks_it_erased,
            keys_are_checked_against_their_loop,
            contact_index_finds_loops_and_forgets_destroyed_ones,
            equal_contacts_have_equal_digests,
            public_ids_are_stable_opaque_and_32_hex,
            reopening_keeps_keys_secrets_and_tombstones,
            a_wrong_master_key_is_refused,
            sealed_stores_tell_key_states_and_refuse_writes,
            rotation_rewraps_every_key_and_refuses_the_old_master,
            invalid_inputs_are_refused_and_write_nothing,
        ]);
    };
    (@each $make:path, [$($check:ident),* $(,)?]) => {
        $(
            #[test]
            fn $check() {
                let harness = $make();
                $crate::conformance::$check(&harness);
            }
        )*
    };
}

/// The master key the checks create stores under.
#[must_use]
pub fn first_master() -> MasterKey {
    MasterKey::from_bytes([0x11; 32])
}

/// The master key rotation checks move to.
#[must_use]
pub fn second_master() -> MasterKey {
    MasterKey::from_bytes([0x22; 32])
}

/// A harness over [`MemoryKeyStore`]: the first open creates the store, later ones reopen it.
#[derive(Debug, Default)]
pub struct MemoryHarness {
    store: Mutex<Option<MemoryKeyStore>>,
}

impl KeyStoreHarness for MemoryHarness {
    type Store = MemoryKeyStore;

    fn open(&self, master: Option<&MasterKey>) -> Result<MemoryKeyStore, KeyError> {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        match &*store {
            Some(existing) => existing.reopen(master),
            None => {
                let master = master.ok_or(KeyError::Sealed)?;
                let created = MemoryKeyStore::new(master);
                let handle = created.reopen(Some(master))?;
                *store = Some(created);
                Ok(handle)
            }
        }
    }
}

fn create<H: KeyStoreHarness>(harness: &H) -> H::Store {
    harness
        .open(Some(&first_master()))
        .expect("a fresh store opens")
}

fn request(loop_id: &str) -> KeyRequest<'_> {
    KeyRequest {
        loop_id,
        contact: None,
    }
}

fn key_for<S: KeyStore>(store: &S, loop_id: &str) -> DataKey {
    let mut keys = store
        .keys_for_writing(&[request(loop_id)])
        .expect("a key for writing");
    assert_eq!(keys.len(), 1, "one key per request");
    keys.remove(0)
}

fn live<S: KeyStore>(store: &S, loop_id: &str, id: u64) -> DataKey {
    match store.key(loop_id, id).expect("key state") {
        KeyState::Live(key) => key,
        other => panic!("key {id} of {loop_id} should be live, is {other:?}"),
    }
}

/// Whether two handles hold the same key material: one opens what the other sealed.
fn same_material(a: &DataKey, b: &DataKey) -> bool {
    let sealed = a.seal(b"probe", b"conformance probe");
    b.open(b"probe", &sealed.nonce, &sealed.ciphertext).is_ok()
}

/// A loop keeps one live key: later writes and reads get the same id and material; other loops
/// get other keys.
pub fn one_live_key_per_loop<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let first = key_for(&store, "loop-1");
    let again = key_for(&store, "loop-1");
    assert_eq!(first.id, again.id);
    assert!(same_material(&first, &again));
    assert!(same_material(&first, &live(&store, "loop-1", first.id)));
    let other = key_for(&store, "loop-2");
    assert_ne!(other.id, first.id);
    assert!(!same_material(&first, &other));
}

/// One key per request, in request order, the same key for a loop named twice in one batch.
pub fn batches_answer_in_request_order<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let b = key_for(&store, "loop-b");
    let keys = store
        .keys_for_writing(&[request("loop-a"), request("loop-b"), request("loop-a")])
        .expect("keys for a batch");
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[1].id, b.id);
    assert_eq!(keys[0].id, keys[2].id);
    assert_ne!(keys[0].id, b.id);
    assert!(
        store
            .keys_for_writing(&[])
            .expect("an empty batch")
            .is_empty()
    );
}

/// Sixteen threads asking at once for the first keys of the same eight loops (each in its own
/// order) all get one key per loop.
pub fn concurrent_first_writes_make_one_key<H: KeyStoreHarness>(harness: &H) {
    const THREADS: usize = 16;
    let store = create(harness);
    let loops: Vec<String> = (0..8).map(|n| format!("race-{n}")).collect();
    let barrier = Barrier::new(THREADS);
    let answers: Vec<Vec<(String, u64)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (store, loops, barrier) = (&store, &loops, &barrier);
                scope.spawn(move || {
                    let mut mine: Vec<&str> = loops.iter().map(String::as_str).collect();
                    mine.rotate_left(thread % loops.len());
                    let requests: Vec<KeyRequest<'_>> = mine.iter().map(|l| request(l)).collect();
                    barrier.wait();
                    let keys = store
                        .keys_for_writing(&requests)
                        .expect("keys under a race");
                    mine.iter()
                        .zip(keys)
                        .map(|(loop_id, key)| ((*loop_id).to_owned(), key.id))
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let mut ids: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for (loop_id, id) in answers.into_iter().flatten() {
        ids.entry(loop_id).or_default().insert(id);
    }
    assert_eq!(ids.len(), loops.len());
    let mut all: BTreeSet<u64> = BTreeSet::new();
    for (loop_id, loop_ids) in &ids {
        assert_eq!(loop_ids.len(), 1, "{loop_id} got keys {loop_ids:?}");
        all.extend(loop_ids);
    }
    assert_eq!(all.len(), loops.len(), "every loop has a key of its own");
}

/// `destroy_loop` makes the loop's key `Destroyed` for good; the next write gets a new key; other
/// loops are untouched.
pub fn destroying_makes_keys_destroyed_and_later_writes_get_a_new_key<H: KeyStoreHarness>(
    harness: &H,
) {
    let store = create(harness);
    let doomed = key_for(&store, "doomed");
    let kept = key_for(&store, "kept");
    assert!(!store.is_erased("doomed"));
    assert_eq!(store.destroy_loop("doomed").expect("destroy"), 1);
    assert!(matches!(
        store.key("doomed", doomed.id).expect("state"),
        KeyState::Destroyed
    ));
    assert!(store.is_erased("doomed"));
    assert!(!store.is_erased("kept"));
    assert!(same_material(&kept, &live(&store, "kept", kept.id)));

    let fresh = key_for(&store, "doomed");
    assert_ne!(fresh.id, doomed.id);
    assert!(!same_material(&fresh, &doomed));
    assert!(matches!(
        store.key("doomed", doomed.id).expect("state"),
        KeyState::Destroyed
    ));
    assert!(
        store.is_erased("doomed"),
        "the tombstone outlives a new key"
    );
    assert_eq!(store.destroy_loop("doomed").expect("destroy again"), 1);
    assert_eq!(store.destroy_loop("doomed").expect("nothing left"), 0);
    assert!(matches!(
        store.key("doomed", fresh.id).expect("state"),
        KeyState::Destroyed
    ));
}

/// Erasing a loop that has no key destroys nothing but still leaves it erased.
pub fn erasing_a_loop_without_keys_marks_it_erased<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    assert!(!store.is_erased("never-keyed"));
    assert_eq!(store.destroy_loop("never-keyed").expect("destroy"), 0);
    assert!(store.is_erased("never-keyed"));
    drop(store);
    let store = harness.open(Some(&first_master())).expect("reopen");
    assert!(store.is_erased("never-keyed"));
}

/// A key asked for under another loop's id, or an id never made, is `Unknown`.
pub fn keys_are_checked_against_their_loop<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let key = key_for(&store, "owner");
    key_for(&store, "neighbour");
    assert!(matches!(
        store.key("neighbour", key.id).expect("state"),
        KeyState::Unknown
    ));
    assert!(matches!(
        store.key("stranger", key.id).expect("state"),
        KeyState::Unknown
    ));
    assert!(matches!(
        store.key("owner", key.id + 1000).expect("state"),
        KeyState::Unknown
    ));
    assert!(matches!(
        store.key("owner", 0).expect("state"),
        KeyState::Unknown
    ));
    assert!(matches!(
        store.key("not a loop id", key.id).expect("state"),
        KeyState::Unknown
    ));
}

/// The contact index finds every loop of a contact once, and forgets a loop when it is erased.
pub fn contact_index_finds_loops_and_forgets_destroyed_ones<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let jo = store.contact_digest("jo@example.org").expect("digest");
    let sam = store.contact_digest("07700 900123").expect("digest");
    let with = |loop_id, contact| KeyRequest {
        loop_id,
        contact: Some(contact),
    };
    store
        .keys_for_writing(&[with("jo-1", jo), with("jo-2", jo), with("sam-1", sam)])
        .expect("keys");
    // The same contact again, and a second contact for a loop that already has a key.
    store
        .keys_for_writing(&[with("jo-1", jo), with("jo-2", sam), request("anonymous")])
        .expect("keys");
    assert_eq!(
        store.loops_with_contact(&jo).expect("lookup"),
        ["jo-1", "jo-2"]
    );
    assert_eq!(
        store.loops_with_contact(&sam).expect("lookup"),
        ["jo-2", "sam-1"]
    );

    store.destroy_loop("jo-2").expect("destroy");
    assert_eq!(store.loops_with_contact(&jo).expect("lookup"), ["jo-1"]);
    assert_eq!(store.loops_with_contact(&sam).expect("lookup"), ["sam-1"]);
    drop(store);
    let store = harness.open(Some(&first_master())).expect("reopen");
    assert_eq!(store.loops_with_contact(&jo).expect("lookup"), ["jo-1"]);
    assert_eq!(store.loops_with_contact(&sam).expect("lookup"), ["sam-1"]);
    let nobody = store.contact_digest("nobody@example.org").expect("digest");
    assert!(
        store
            .loops_with_contact(&nobody)
            .expect("lookup")
            .is_empty()
    );
}

/// Differently spelled equal contacts have one digest; different contacts do not share one.
pub fn equal_contacts_have_equal_digests<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let digest = |contact: &str| store.contact_digest(contact).expect("digest");
    assert_eq!(digest("Jo@Example.org "), digest("jo@example.org"));
    assert_eq!(digest("07700 900123"), digest("+44 7700 900123"));
    assert_eq!(digest("07700 900123"), digest("0044 (0)7700-900123"));
    assert_ne!(digest("jo@example.org"), digest("jo@example.com"));
    assert_ne!(digest("07700 900123"), digest("07700 900124"));
    let plain: [u8; 32] = Sha256::digest(b"jo@example.org").into();
    assert_ne!(digest("jo@example.org").0, plain, "the digest is keyed");
}

/// Public ids are 32 lowercase hex characters, stable across reopening, distinct per loop and
/// not a plain hash anyone could recompute from a guessed loop id.
pub fn public_ids_are_stable_opaque_and_32_hex<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let id = store.public_id_of("case-2026-000123").expect("public id");
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{id}"
    );
    assert_eq!(store.public_id_of("case-2026-000123").expect("again"), id);
    assert_ne!(store.public_id_of("case-2026-000124").expect("other"), id);
    let plain = hex::encode(Sha256::digest(b"case-2026-000123"));
    assert_ne!(id, plain[..32]);
    drop(store);
    let store = harness.open(Some(&first_master())).expect("reopen");
    assert_eq!(
        store
            .public_id_of("case-2026-000123")
            .expect("after reopen"),
        id
    );
}

/// Reopening keeps keys, contacts, public ids and tombstones.
pub fn reopening_keeps_keys_secrets_and_tombstones<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let digest = store.contact_digest("jo@example.org").expect("digest");
    let keys = store
        .keys_for_writing(&[
            KeyRequest {
                loop_id: "kept",
                contact: Some(digest),
            },
            request("erased"),
        ])
        .expect("keys");
    let public_id = store.public_id_of("kept").expect("public id");
    store.destroy_loop("erased").expect("destroy");
    drop(store);

    let store = harness.open(Some(&first_master())).expect("reopen");
    assert!(same_material(&keys[0], &live(&store, "kept", keys[0].id)));
    assert_eq!(key_for(&store, "kept").id, keys[0].id);
    assert!(matches!(
        store.key("erased", keys[1].id).expect("state"),
        KeyState::Destroyed
    ));
    assert!(store.is_erased("erased"));
    assert_eq!(
        store.contact_digest("jo@example.org").expect("digest"),
        digest
    );
    assert_eq!(store.loops_with_contact(&digest).expect("lookup"), ["kept"]);
    assert_eq!(store.public_id_of("kept").expect("public id"), public_id);
    let newer = key_for(&store, "newer");
    assert!(
        !keys.iter().any(|key| key.id == newer.id),
        "ids are never reused"
    );
}

/// A store opened with another master key answers `WrongMasterKey`, and its message tells the
/// operator what to set.
pub fn a_wrong_master_key_is_refused<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    key_for(&store, "loop-1");
    drop(store);
    let error = harness
        .open(Some(&second_master()))
        .expect_err("another master key opens nothing");
    assert!(matches!(error, KeyError::WrongMasterKey), "{error:?}");
    assert!(
        error.to_string().contains("CLOSELOOP_MASTER_KEY"),
        "{error}"
    );
}

/// Opened without a master key, a store tells live keys (`Sealed`), destroyed and unknown ones
/// apart and answers erasure and contact lookups, but hands out no key material and writes
/// nothing.
pub fn sealed_stores_tell_key_states_and_refuse_writes<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let digest = store.contact_digest("jo@example.org").expect("digest");
    let live_key = key_for(&store, "live");
    let gone = store
        .keys_for_writing(&[KeyRequest {
            loop_id: "gone",
            contact: Some(digest),
        }])
        .expect("keys")
        .remove(0);
    store.destroy_loop("gone").expect("destroy");
    drop(store);

    let sealed = harness.open(None).expect("a sealed open");
    assert!(matches!(
        sealed.key("live", live_key.id).expect("state"),
        KeyState::Sealed
    ));
    assert!(matches!(
        sealed.key("gone", gone.id).expect("state"),
        KeyState::Destroyed
    ));
    assert!(matches!(
        sealed.key("live", gone.id).expect("state"),
        KeyState::Unknown
    ));
    assert!(sealed.is_erased("gone"));
    assert!(!sealed.is_erased("live"));
    assert!(matches!(
        sealed.keys_for_writing(&[request("live")]),
        Err(KeyError::Sealed)
    ));
    assert!(matches!(
        sealed.keys_for_writing(&[request("new")]),
        Err(KeyError::Sealed)
    ));
    assert!(matches!(sealed.destroy_loop("live"), Err(KeyError::Sealed)));
    assert!(matches!(
        sealed.contact_digest("jo@example.org"),
        Err(KeyError::Sealed)
    ));
    assert!(matches!(sealed.public_id_of("live"), Err(KeyError::Sealed)));
    assert!(matches!(
        sealed.rotate_master_key(&second_master()),
        Err(KeyError::Sealed)
    ));
    drop(sealed);

    let store = harness
        .open(Some(&first_master()))
        .expect("reopen with the key");
    assert!(same_material(&live_key, &live(&store, "live", live_key.id)));
    assert!(matches!(
        store.key("new", 1_000).expect("state"),
        KeyState::Unknown
    ));
}

/// Rotation rewraps every live key and the secrets: after it the store opens under the new
/// master key with every key, digest, public id and tombstone as before, and refuses the old
/// master key.
pub fn rotation_rewraps_every_key_and_refuses_the_old_master<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let digest = store.contact_digest("jo@example.org").expect("digest");
    let keys = store
        .keys_for_writing(&[
            KeyRequest {
                loop_id: "a",
                contact: Some(digest),
            },
            request("b"),
            request("c"),
        ])
        .expect("keys");
    let sealed = keys[0].seal(b"a/story", b"personal text");
    let public_id = store.public_id_of("a").expect("public id");
    store.destroy_loop("c").expect("destroy");
    assert_eq!(
        store.rotate_master_key(&second_master()).expect("rotate"),
        2
    );
    // The handle goes on working under the new key.
    assert!(same_material(&keys[1], &live(&store, "b", keys[1].id)));
    let d = key_for(&store, "d");
    drop(store);

    let error = harness
        .open(Some(&first_master()))
        .expect_err("the old master key opens nothing");
    assert!(matches!(error, KeyError::WrongMasterKey), "{error:?}");

    let store = harness
        .open(Some(&second_master()))
        .expect("open under the new key");
    let a = live(&store, "a", keys[0].id);
    let opened = a
        .open(b"a/story", &sealed.nonce, &sealed.ciphertext)
        .expect("old ciphertext opens after rotation");
    assert_eq!(opened.as_slice(), b"personal text");
    assert!(same_material(&keys[1], &live(&store, "b", keys[1].id)));
    assert!(same_material(&d, &live(&store, "d", d.id)));
    assert!(matches!(
        store.key("c", keys[2].id).expect("state"),
        KeyState::Destroyed
    ));
    assert!(store.is_erased("c"));
    assert_eq!(
        store.contact_digest("jo@example.org").expect("digest"),
        digest
    );
    assert_eq!(store.loops_with_contact(&digest).expect("lookup"), ["a"]);
    assert_eq!(store.public_id_of("a").expect("public id"), public_id);
}

/// An invalid loop id anywhere in a batch fails the batch before any key is made; oversized
/// contacts are refused.
pub fn invalid_inputs_are_refused_and_write_nothing<H: KeyStoreHarness>(harness: &H) {
    let store = create(harness);
    let too_long = "x".repeat(129);
    for bad in ["", "with space", "slash/y", too_long.as_str()] {
        let result = store.keys_for_writing(&[request("bystander"), request(bad)]);
        assert!(
            matches!(result, Err(KeyError::InvalidLoopId)),
            "{bad:?}: {result:?}"
        );
        assert!(matches!(
            store.destroy_loop(bad),
            Err(KeyError::InvalidLoopId)
        ));
        assert!(matches!(
            store.public_id_of(bad),
            Err(KeyError::InvalidLoopId)
        ));
    }
    drop(store);
    let store = harness.open(Some(&first_master())).expect("reopen");
    assert_eq!(
        store.destroy_loop("bystander").expect("destroy"),
        0,
        "a refused batch made no key for its valid loops"
    );
    let huge = "a".repeat(crate::MAX_CONTACT_LEN + 1);
    assert!(matches!(
        store.contact_digest(&huge),
        Err(KeyError::ContactTooLong { .. })
    ));
}

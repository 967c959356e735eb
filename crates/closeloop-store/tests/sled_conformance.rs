//! The sled store against the conformance suite every event store must pass.

use closeloop_store::{SledStore, SledStoreOptions};
use tempfile::TempDir;

async fn fresh_store() -> (SledStore, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("open store");
    (store, dir)
}

closeloop_store::conformance_tests!(fresh_store);

/// The same suite with personal data sealed, as `closeloop serve` runs the store: appends with
/// personal data go through the sealer thread, the others straight to the writer. All but
/// `reads_see_every_acknowledged_append`, which compares a story read back without its key
/// (sealed, it reads `[encrypted]`).
mod sealed {
    use std::sync::Arc;

    use closeloop_keys::{FileKeyStore, MasterKey};
    use closeloop_store::{KeyHandle, SledStore, SledStoreOptions};
    use tempfile::TempDir;

    async fn fresh_store() -> (SledStore, TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = FileKeyStore::open(&dir.path().join("keys"), Some(&MasterKey::generate()))
            .expect("open key store");
        let options = SledStoreOptions {
            keys: Some(KeyHandle(Arc::new(keys))),
            ..SledStoreOptions::default()
        };
        let store = SledStore::open(&dir.path().join("log"), &options).expect("open store");
        (store, dir)
    }

    closeloop_store::conformance_tests!(@each fresh_store, [
        conflicts_are_detected,
        repeated_idempotency_keys_store_nothing,
        reused_keys_for_new_events_are_refused,
        appends_across_loops_are_all_or_nothing,
        positions_stay_gapless_under_64_concurrent_writers,
        exactly_one_of_many_racing_writers_wins,
        chains_and_merkle_head_verify,
        malformed_requests_are_refused,
        idempotency_keys_can_be_looked_up,
        records_too_large_to_publish_are_refused,
        keys_bound_to_another_request_are_refused,
    ]);
}

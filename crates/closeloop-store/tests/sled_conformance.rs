//! The sled store against the conformance suite every event store must pass.

use closeloop_store::{SledStore, SledStoreOptions};
use tempfile::TempDir;

async fn fresh_store() -> (SledStore, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("open store");
    (store, dir)
}

closeloop_store::conformance_tests!(fresh_store);

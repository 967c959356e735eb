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
/// personal data go through the sealer thread, the others straight to the writer.
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

    closeloop_store::conformance_tests!(sealed fresh_store);
}

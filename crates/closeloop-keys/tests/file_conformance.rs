//! The file store against the conformance suite every key store must pass.

use closeloop_keys::conformance::KeyStoreHarness;
use closeloop_keys::{FileKeyStore, KeyError, MasterKey};
use tempfile::TempDir;

/// Opens the store in one temp directory, which lives as long as the harness.
struct FileHarness(TempDir);

impl KeyStoreHarness for FileHarness {
    type Store = FileKeyStore;

    fn open(&self, master: Option<&MasterKey>) -> Result<FileKeyStore, KeyError> {
        FileKeyStore::open(&self.0.path().join("keys-dir"), master)
    }
}

fn harness() -> FileHarness {
    FileHarness(tempfile::tempdir().expect("temp dir"))
}

closeloop_keys::conformance_tests!(harness);

/// The same store giving new loops keys from a pool of three (so the suite refills it often).
mod pooled {
    use closeloop_keys::conformance::KeyStoreHarness;
    use closeloop_keys::{FileKeyStore, KeyError, KeyStore, MasterKey};
    use tempfile::TempDir;

    struct PooledHarness(TempDir);

    impl KeyStoreHarness for PooledHarness {
        type Store = FileKeyStore;

        fn open(&self, master: Option<&MasterKey>) -> Result<FileKeyStore, KeyError> {
            let store = FileKeyStore::open(&self.0.path().join("keys-dir"), master)?;
            store.start_pool(3)?;
            Ok(store)
        }
    }

    fn harness() -> PooledHarness {
        PooledHarness(tempfile::tempdir().expect("temp dir"))
    }

    closeloop_keys::conformance_tests!(harness);
}

//! One module per subcommand.

pub mod demo;
pub mod replay;
pub mod serve;
pub mod verify;

use std::path::Path;

use anyhow::Context;
use closeloop_store::{SledStore, SledStoreOptions};

/// Opens the embedded store, explaining the usual reason it fails: another process has it.
pub fn open_store(data_dir: &Path) -> anyhow::Result<SledStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    SledStore::open(data_dir, &SledStoreOptions::default()).with_context(|| {
        format!(
            "cannot open the event store in {}; if `closeloop serve` is running on it, stop it \
             first (one process owns a store at a time) or read the log over HTTP",
            data_dir.display()
        )
    })
}

//! One module per subcommand.

pub mod demo;
pub mod rebuild;
pub mod replay;
pub mod serve;
pub mod verify;

use std::path::Path;

use std::path::PathBuf;

use anyhow::Context;
use closeloop_projections::{Projections, ReadModels};
use closeloop_store::{EventStore, SledStore, SledStoreOptions};

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

/// Where the read models' snapshot lives.
pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("projections.snapshot")
}

/// The read models from their snapshot when it was built from this store's log, or empty
/// ones (rebuilt from the log as the projector catches up) when there is no usable snapshot.
pub async fn load_projections(data_dir: &Path, store: &impl EventStore) -> ReadModels {
    Projections::load_snapshot_checked(&snapshot_path(data_dir), store).await
}

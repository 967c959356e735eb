//! One module per subcommand.

pub mod demo;
pub mod rebuild;
pub mod replay;
pub mod serve;
pub mod verify;

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Exit status of `verify` when the log does not verify (tampering or damage).
pub const EXIT_TAMPERED: u8 = 1;
/// Exit status of `verify --upto N` when N is beyond the head of the log.
pub const EXIT_BEYOND_HEAD: u8 = 3;
/// Exit status of `verify`, `replay` and `rebuild` when the data directory holds no store.
pub const EXIT_NO_STORE: u8 = 4;
/// Exit status of `verify`, `replay` and `rebuild` for any other failure (the store cannot be
/// opened or read, the output cannot be written).
pub const EXIT_ERROR: u8 = 5;

/// The data directory holds no event store: a command that only reads one refuses it rather
/// than create an empty store and report on that.
#[derive(Debug)]
pub struct NoStore(PathBuf);

impl std::fmt::Display for NoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} holds no event store; check --data-dir (or CLOSELOOP_DATA_DIR): it must name \
             the directory `closeloop serve` keeps its data in",
            self.0.display()
        )
    }
}

impl std::error::Error for NoStore {}

/// Opens the store in `data_dir` for a command that reads it (`verify`, `replay`,
/// `rebuild`); refuses with [`NoStore`] when there is none, instead of creating one.
pub fn open_existing_store(data_dir: &Path) -> anyhow::Result<SledStore> {
    // sled keeps a `conf` and a `db` file in the directory from the moment it creates a
    // database; an empty or unrelated directory has neither.
    if !(data_dir.join("conf").is_file() && data_dir.join("db").is_file()) {
        return Err(NoStore(data_dir.to_owned()).into());
    }
    open_store(data_dir)
}

/// The exit status of a read-only command's result, printing its error the way `main` does:
/// [`EXIT_NO_STORE`] for a missing store, [`EXIT_ERROR`] for any other failure, so that no
/// failure to run is mistaken for a verdict (`verify` exits 1 on tampering).
pub fn exit_status(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<NoStore>().is_some() {
                ExitCode::from(EXIT_NO_STORE)
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
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

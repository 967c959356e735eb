//! One module per subcommand.

pub mod backends;
pub mod demo;
pub mod rebuild;
pub mod replay;
pub mod rotate;
pub mod serve;
pub mod snapshots;
pub mod verify;

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context;
use closeloop_keys::{FileKeyStore, KeyStore, MasterKey};
use closeloop_projections::{Projections, ReadModels};
use closeloop_store::{EventStore, KeyHandle, SledStore, SledStoreOptions};

use crate::config::MasterKeyArgs;

/// Exit status of `serve` and `rotate-master-key` when a master key is missing or malformed
/// (and of `serve` for any other configuration it refuses).
pub const EXIT_CONFIG: u8 = 2;

/// The master key the flags or environment give, if any.
///
/// # Errors
/// When the key (or its file) is not 64 hex characters.
pub fn master_key(args: &MasterKeyArgs) -> anyhow::Result<Option<MasterKey>> {
    if let Some(hex) = &args.master_key {
        return MasterKey::from_hex(hex)
            .map(Some)
            .context("CLOSELOOP_MASTER_KEY must be 32 bytes as 64 hex characters");
    }
    if let Some(path) = &args.master_key_file {
        return MasterKey::from_file(path).map(Some).with_context(|| {
            format!(
                "CLOSELOOP_MASTER_KEY_FILE {} must hold 32 bytes as 64 hex characters",
                path.display()
            )
        });
    }
    Ok(None)
}

/// The master key of a command that writes personal data: the configured one, or, only where
/// `demo_allowed`, the fixed demo key (said in the log). `None`: there is none, and the caller
/// refuses to start with [`EXIT_CONFIG`].
pub fn master_key_or_demo(
    args: &MasterKeyArgs,
    demo_allowed: bool,
) -> anyhow::Result<Option<MasterKey>> {
    if let Some(key) = master_key(args)? {
        return Ok(Some(key));
    }
    if demo_allowed {
        tracing::warn!(
            "demo mode: personal data is encrypted under the fixed, published demo master key; never use it for real data (set CLOSELOOP_MASTER_KEY_FILE)"
        );
        return Ok(Some(MasterKey::demo()));
    }
    Ok(None)
}

/// The message of a command that needs a master key and has none.
pub const NO_MASTER_KEY: &str = "no master key: personal data is encrypted at rest under a master key. Set CLOSELOOP_MASTER_KEY_FILE to a file holding 64 hex characters (make one with `openssl rand -hex 32 > master.key`) or CLOSELOOP_MASTER_KEY to the characters themselves; or try Closeloop with `serve --demo`, which uses a fixed demo key";

/// Where the key store lives in a data directory.
pub fn keys_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("keys")
}

/// Opens (or creates) the key store of `data_dir`; without a master key it is sealed:
/// personal data reads as `"[encrypted]"`.
pub fn open_keys(data_dir: &Path, master: Option<&MasterKey>) -> anyhow::Result<Arc<dyn KeyStore>> {
    let dir = keys_dir(data_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create key store directory {}", dir.display()))?;
    let keys = FileKeyStore::open(&dir, master)
        .with_context(|| format!("cannot open the key store in {}", dir.display()))?;
    Ok(Arc::new(keys))
}

/// Loops stored before public ids existed get theirs from the key store's secret (see
/// [`closeloop_projections::install_legacy_public_ids`]); a sealed key store cannot derive
/// them, and the read models then fall back to a per-process secret.
pub fn install_legacy_public_ids(keys: &Arc<dyn KeyStore>) {
    if keys.public_id_of("probe").is_err() {
        return;
    }
    let keys = Arc::clone(keys);
    closeloop_projections::install_legacy_public_ids(Arc::new(move |loop_id: &str| {
        let mut id = [0; 16];
        if let Ok(hex) = keys.public_id_of(loop_id) {
            let _ = hex::decode_to_slice(hex, &mut id);
        }
        id
    }));
}

/// Opens the embedded store, explaining the usual reason it fails: another process has it.
/// With `keys`, personal data is sealed with each loop's data key as it is written.
pub fn open_store(data_dir: &Path, keys: Option<Arc<dyn KeyStore>>) -> anyhow::Result<SledStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let options = SledStoreOptions {
        keys: keys.map(KeyHandle),
        ..SledStoreOptions::default()
    };
    SledStore::open(data_dir, &options).with_context(|| {
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
    if !closeloop_store::holds_store(data_dir) {
        return Err(NoStore(data_dir.to_owned()).into());
    }
    // Read-only commands write nothing, so need no keys to seal with.
    open_store(data_dir, None)
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

//! `closeloop rotate-master-key`: rewraps every data key under a new master key.
//!
//! The event log is not touched (records are sealed with the loops' data keys, which do not
//! change); only the key store's file is rewritten, atomically: a crash leaves the old file or
//! the new one, never a mix. The store is opened first so that sled's lock keeps a running
//! `serve` and this command apart.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use closeloop_keys::MasterKey;

use crate::config::{MasterKeyArgs, RotateArgs};

/// Rewraps the key store of `data_dir` from the current master key to the one in
/// `--new-master-key-file`.
pub fn run(data_dir: &Path, master: &MasterKeyArgs, args: &RotateArgs) -> anyhow::Result<ExitCode> {
    let current = match super::master_key(master) {
        Ok(Some(key)) => key,
        Ok(None) => {
            eprintln!(
                "error: give the current master key (CLOSELOOP_MASTER_KEY_FILE or \
                 CLOSELOOP_MASTER_KEY) and the new one (--new-master-key-file)"
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let new = match MasterKey::from_file(&args.new_master_key_file) {
        Ok(key) => key,
        Err(err) => {
            eprintln!(
                "error: --new-master-key-file {} must hold 32 bytes as 64 hex characters: {err}",
                args.new_master_key_file.display()
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    Ok(super::exit_status(rotate(data_dir, &current, &new)))
}

fn rotate(data_dir: &Path, current: &MasterKey, new: &MasterKey) -> anyhow::Result<ExitCode> {
    // Held for the whole rotation: no `serve` can write new keys meanwhile.
    let store = super::open_existing_store(data_dir)?;
    let keys = super::open_keys(data_dir, Some(current))?;
    let rewrapped = keys
        .rotate_master_key(new)
        .context("cannot rewrap the data keys; the key store is unchanged")?;
    drop(keys);
    drop(store);
    eprintln!(
        "rewrapped {rewrapped} data keys under the master key with fingerprint {}; start \
         `closeloop serve` with the new key now, and destroy the old one once backups made \
         under it have expired",
        new.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

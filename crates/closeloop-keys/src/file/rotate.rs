//! Master key rotation: a whole new key file, every live key rewrapped under the new master key
//! in the same slot (key ids do not change), swapped in by rename.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use super::format::{Header, SlotState};
use super::open::sync_dir;
use super::{FileKeyStore, State, writable};
use crate::wrap::{Wrapped, unwrap_data_key, wrap_data_key};
use crate::{KeyError, MasterKey};

/// The temporary file a rotation writes before renaming it over the key file.
pub(super) const ROTATING_FILE_NAME: &str = "keys.rotating";

pub(super) fn rotate(store: &FileKeyStore, new: &MasterKey) -> Result<usize, KeyError> {
    let mut guard = store.lock();
    let state = &mut *guard;
    let old = writable(state)?;
    let temp = store.dir.join(ROTATING_FILE_NAME);
    let file = match write_rotated(store, state, &old, new) {
        Ok(done) => done,
        Err(error) => {
            // The old file is untouched and still holds: nothing to undo but the temp file.
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
    };
    let Rotated {
        file,
        rewrapped,
        pooled,
    } = file;
    if let Err(error) = fs::rename(&temp, &store.path) {
        let _ = fs::remove_file(&temp);
        return Err(KeyError::io(&store.path, error));
    }
    // From here on the path names the new file: use it, under the new key.
    state.file = Some(Arc::new(file));
    state.master = Some(new.clone());
    // Pooled keys not given yet are handed out with the bytes kept in memory: the new ones.
    for key in &mut state.pool {
        if let Some(wrapped) = pooled.get(&key.at.slot) {
            key.wrapped = *wrapped;
        }
    }
    let written = state.write_seq;
    state.synced_upto(written);
    if let Err(error) = sync_dir(&store.dir) {
        let detail = format!(
            "fsync of {} after rotating the master key failed",
            store.dir.display()
        );
        tracing::error!(%detail, "key store directory fsync failed; no more writes until restart");
        state.failed.get_or_insert(detail);
        return Err(error);
    }
    tracing::info!(
        rewrapped,
        old_master_key = %old.fingerprint(),
        new_master_key = %new.fingerprint(),
        "rotated the key store's master key; reopen it with the new key from now on"
    );
    Ok(rewrapped)
}

/// The rotated file, fsynced and locked.
struct Rotated {
    file: std::fs::File,
    /// How many keys were rewrapped.
    rewrapped: usize,
    /// The new wrapped bytes of the pooled keys no loop has taken, by slot.
    pooled: HashMap<u64, Wrapped>,
}

/// Writes the rotated file beside the key file.
fn write_rotated(
    store: &FileKeyStore,
    state: &State,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<Rotated, KeyError> {
    let temp = store.dir.join(ROTATING_FILE_NAME);
    let io = |e| KeyError::io(&temp, e);
    let secrets = state.secrets.as_ref().ok_or(KeyError::Sealed)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io)?;
    // Locked before it is renamed into place, so no other process can open it in between.
    file.try_lock()
        .map_err(|_| KeyError::Locked { path: temp.clone() })?;
    let header = Header {
        assignments_synced: store.read_header(state)?.assignments_synced,
        ..Header::from(secrets.wrap(new))
    };
    let mut out = BufWriter::new(&file);
    out.write_all(&header.encode()).map_err(io)?;
    let mut rewrapped = 0;
    let mut pooled = HashMap::new();
    for slot_no in 1..state.next_slot {
        let mut slot = store.read_slot(state, slot_no)?;
        if matches!(slot.state, SlotState::LiveKey | SlotState::PooledKey)
            && let Some(wrapped) = &slot.wrapped_key
        {
            // A key made for the pool stays wrapped for no loop, wherever it went since.
            let key = unwrap_data_key(old, slot.wrapped_for(), slot_no, wrapped).map_err(|_| {
                KeyError::corrupt(format!(
                    "the key in slot {slot_no} does not unwrap under the current master key"
                ))
            })?;
            let rewrapped_key = wrap_data_key(new, slot.wrapped_for(), &key);
            if slot.state == SlotState::PooledKey {
                pooled.insert(slot_no, rewrapped_key);
            }
            slot.wrapped_key = Some(rewrapped_key);
            rewrapped += 1;
        }
        out.write_all(&slot.encode()).map_err(io)?;
    }
    out.flush().map_err(io)?;
    drop(out);
    file.sync_all().map_err(io)?;
    Ok(Rotated {
        file,
        rewrapped,
        pooled,
    })
}

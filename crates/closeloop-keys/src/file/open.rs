//! Opening a key store: creating the file when there is none, locking it, checking the master
//! key, dropping a torn tail and building the in-memory index.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use super::format::{Header, SLOT_SIZE, Slot, SlotBytes, SlotProblem, SlotState};
use super::rotate::ROTATING_FILE_NAME;
use super::{FileKeyStore, KEY_FILE_NAME, Pooled, SlotRef, State, UnsyncedSlots};
use crate::index::LoopIndex;
use crate::secrets::{StoreSecrets, UnwrapSecretsError};
use crate::{KeyError, MasterKey};

/// The prefix of the temporary file a new store's header is written to before it is linked
/// into place.
const CREATING_FILE_PREFIX: &str = "keys.new.";

/// How often opening retries when a rotation replaced the file between opening and locking it.
const LOCK_ATTEMPTS: usize = 5;

pub(super) fn open(dir: &Path, master: Option<&MasterKey>) -> Result<FileKeyStore, KeyError> {
    let path = dir.join(KEY_FILE_NAME);
    let file = match master {
        Some(master) => {
            fs::create_dir_all(dir).map_err(|e| KeyError::io(dir, e))?;
            if !path.exists() {
                create(dir, &path, master)?;
            }
            Some(open_locked(&path, true)?)
        }
        None if path.exists() => Some(open_locked(&path, false)?),
        None => None,
    };
    let mut state = State {
        file: None,
        master: master.cloned(),
        secrets: None,
        index: LoopIndex::default(),
        next_slot: 1,
        write_seq: 0,
        synced_seq: 0,
        unsynced_slots: UnsyncedSlots::default(),
        syncing: false,
        failed: None,
        pool_size: 0,
        pool: Vec::new(),
        unsynced_assignments: 0,
        recover_after: None,
    };
    if let Some(file) = file {
        if master.is_some() {
            remove_leftovers(dir)?;
        }
        let loaded = load(&file, &path, master)?;
        let valid_len = loaded.next_slot * SLOT_SIZE as u64;
        if loaded.file_len > valid_len && master.is_some() {
            // Slots nobody was told about (their fsync never returned): drop them.
            file.set_len(valid_len)
                .map_err(|e| KeyError::io(&path, e))?;
            file.sync_all().map_err(|e| KeyError::io(&path, e))?;
            tracing::warn!(
                dropped_bytes = loaded.file_len - valid_len,
                "dropped a torn tail of the key file left by a crash; no acknowledged key was in it"
            );
        }
        state.file = Some(Arc::new(file));
        state.secrets = loaded.secrets;
        state.index = loaded.index;
        state.next_slot = loaded.next_slot;
        // A pooled key found here may have been given to a loop by a run that crashed before
        // the slot said so: the records after the watermark tell.
        if !loaded.pool.is_empty() {
            state.recover_after = Some(loaded.assignments_synced);
        }
        state.pool = loaded.pool;
        state.pool.reverse();
    }
    let store = FileKeyStore {
        dir: dir.to_owned(),
        path,
        state: Mutex::new(state),
        synced: Condvar::new(),
    };
    if let Some(master) = master {
        tracing::info!(master_key = %master.fingerprint(), "key store opened");
    } else {
        tracing::info!("key store opened sealed (no master key): personal data stays encrypted");
    }
    Ok(store)
}

/// Writes a new store's header with fresh secrets to a temporary file, fsyncs it and links it
/// into place. Linking fails when a key file appeared meanwhile (another opener won the race),
/// so an existing store is never replaced.
fn create(dir: &Path, path: &Path, master: &MasterKey) -> Result<(), KeyError> {
    let header = Header::from(StoreSecrets::generate().wrap(master));
    let suffix: [u8; 8] = crate::random::random_bytes();
    let temp = dir.join(format!("{CREATING_FILE_PREFIX}{}", hex::encode(suffix)));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(&header.encode())?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(KeyError::io(&temp, error));
    }
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            tracing::info!(master_key = %master.fingerprint(), "created a new key store");
            Ok(())
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(KeyError::io(path, error)),
    }
}

/// Opens and locks the key file: exclusively to write, shared to read sealed. Retries when a
/// rotation renamed a new file over the path between our open and our lock.
fn open_locked(path: &Path, writable: bool) -> Result<File, KeyError> {
    for _ in 0..LOCK_ATTEMPTS {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| KeyError::io(path, e))?;
        let locked = if writable {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(KeyError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(error)) => return Err(KeyError::io(path, error)),
        }
        let ours = file.metadata().map_err(|e| KeyError::io(path, e))?;
        let named = fs::metadata(path).map_err(|e| KeyError::io(path, e))?;
        if (ours.dev(), ours.ino()) == (named.dev(), named.ino()) {
            return Ok(file);
        }
    }
    Err(KeyError::Locked {
        path: path.to_owned(),
    })
}

/// Removes what a crash can leave behind: an unfinished rotation (the old file still holds) and
/// unlinked headers of a creation.
fn remove_leftovers(dir: &Path) -> Result<(), KeyError> {
    let entries = fs::read_dir(dir).map_err(|e| KeyError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| KeyError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == ROTATING_FILE_NAME || name.starts_with(CREATING_FILE_PREFIX) {
            fs::remove_file(entry.path()).map_err(|e| KeyError::io(entry.path(), e))?;
            tracing::info!(file = %name, "removed a key store file left by an interrupted operation");
        }
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io(dir, e))
}

/// What reading a key file found.
struct Loaded {
    secrets: Option<StoreSecrets>,
    index: LoopIndex<u64>,
    /// One past the last intact slot.
    next_slot: u64,
    file_len: u64,
    /// Pooled keys no slot gives to a loop, lowest first.
    pool: Vec<Pooled>,
    /// The header's watermark.
    assignments_synced: u64,
}

fn load(file: &File, path: &Path, master: Option<&MasterKey>) -> Result<Loaded, KeyError> {
    let io = |e| KeyError::io(path, e);
    let file_len = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::with_capacity(64 * SLOT_SIZE, file);
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut bytes: SlotBytes = [0; SLOT_SIZE];
    reader.read_exact(&mut bytes).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            corrupt(path, "it is shorter than its header")
        } else {
            io(e)
        }
    })?;
    let header = Header::decode(&bytes).map_err(|detail| corrupt(path, &detail))?;
    let secrets = master
        .map(|master| unlock(&header, master, path))
        .transpose()?;

    let whole_slots = file_len / SLOT_SIZE as u64;
    let mut index = LoopIndex::default();
    index.reserve(usize::try_from(whole_slots).unwrap_or(0));
    let mut first_torn: Option<u64> = None;
    let mut pool = Vec::new();
    for slot_no in 1..whole_slots {
        reader.read_exact(&mut bytes).map_err(io)?;
        match Slot::decode(&bytes) {
            Ok(slot) => {
                if let Some(torn) = first_torn {
                    return Err(corrupt(
                        path,
                        &format!(
                            "slot {torn} fails its checksum but slot {slot_no} after it is intact"
                        ),
                    ));
                }
                if let (SlotState::PooledKey, Some(wrapped)) = (slot.state, slot.wrapped_key) {
                    pool.push(Pooled {
                        at: SlotRef {
                            slot: slot_no,
                            seq: 0,
                        },
                        wrapped,
                    });
                    continue;
                }
                add_to_index(&mut index, &slot, slot_no)
                    .map_err(|detail| corrupt(path, &format!("slot {slot_no}: {detail}")))?;
            }
            Err(SlotProblem::Checksum) => {
                first_torn.get_or_insert(slot_no);
            }
            Err(SlotProblem::Invalid(detail)) => {
                return Err(corrupt(path, &format!("slot {slot_no}: {detail}")));
            }
        }
    }
    Ok(Loaded {
        secrets,
        index,
        next_slot: first_torn.unwrap_or(whole_slots.max(1)),
        file_len,
        pool,
        assignments_synced: header.assignments_synced,
    })
}

/// Checks the master key against the header and unwraps the secrets.
fn unlock(header: &Header, master: &MasterKey, path: &Path) -> Result<StoreSecrets, KeyError> {
    header.secrets().unwrap(master).map_err(|error| match error {
        UnwrapSecretsError::WrongMasterKey => KeyError::WrongMasterKey,
        UnwrapSecretsError::Damaged => corrupt(
            path,
            "the master key matches the header's check value but a store secret does not unwrap",
        ),
    })
}

fn add_to_index(index: &mut LoopIndex<u64>, slot: &Slot<'_>, slot_no: u64) -> Result<(), String> {
    let at = slot_no;
    let loop_id = &*slot.loop_id;
    match slot.state {
        SlotState::LiveKey => {
            if let Some(other) = index.live_key(loop_id) {
                return Err(format!(
                    "a second live key for a loop whose live key is in slot {other}"
                ));
            }
            index.set_key(loop_id, at);
        }
        SlotState::LiveContact | SlotState::PooledKey => {}
        SlotState::DestroyedKey | SlotState::DestroyedContact | SlotState::Tombstone => {
            index.mark_erased(loop_id);
        }
    }
    if let Some(digest) = slot.digest
        && index.contact(loop_id, &digest).is_none()
    {
        index.add_contact(loop_id, digest, at);
    }
    Ok(())
}

fn corrupt(path: &Path, detail: &str) -> KeyError {
    KeyError::corrupt(format!("{}: {detail}", path.display()))
}

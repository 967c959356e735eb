//! [`FileKeyStore`]: the durable key store, one file of fixed-size slots (see [`format`]).

mod commit;
pub mod format;
mod open;
mod rotate;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use self::format::{Header, NO_LOOP_YET, SLOT_SIZE, Slot, SlotBytes, SlotProblem, SlotState};
use crate::index::LoopIndex;
use crate::loop_id::check_loop_id;
use crate::secrets::StoreSecrets;
use crate::wrap::{Wrapped, unwrap_data_key, wrap_data_key};
use crate::{ContactDigest, DataKey, KeyError, KeyId, KeyRequest, KeyState, KeyStore, MasterKey};

/// The name of the key file in the store's directory.
pub const KEY_FILE_NAME: &str = "keys";

/// A key store in one file of fixed-size slots in its own directory (not sled: see the crate
/// documentation). Opened with the master key it reads and writes; opened without it
/// (sealed) it answers [`KeyState::Sealed`] for live keys and refuses writes.
pub struct FileKeyStore {
    dir: PathBuf,
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled whenever an fsync finishes (or fails).
    synced: Condvar,
}

/// Where a live slot is, and the write sequence number that wrote it (0: found on disk at open).
#[derive(Debug, Clone, Copy)]
struct SlotRef {
    slot: u64,
    seq: u64,
}

/// A pooled key not given to a loop yet: its slot and the wrapped key the slot holds.
#[derive(Clone, Copy)]
struct Pooled {
    at: SlotRef,
    wrapped: Wrapped,
}

struct State {
    /// `None` for a sealed store over a directory without a key file: it holds no keys.
    file: Option<Arc<File>>,
    master: Option<MasterKey>,
    secrets: Option<StoreSecrets>,
    /// Each loop's key and contact slots, by slot number.
    index: LoopIndex<u64>,
    /// The number the next appended slot gets; slots `1..next_slot` exist.
    next_slot: u64,
    /// Counts slot writes; `synced_seq` is the last one an fsync is known to cover.
    write_seq: u64,
    synced_seq: u64,
    /// The indexed slots an fsync has not covered yet: the index keeps slot numbers only.
    unsynced_slots: UnsyncedSlots,
    /// Whether some caller is running an fsync now (the others wait for it).
    syncing: bool,
    /// The first write or fsync failure: after it the store writes nothing more.
    failed: Option<String>,
    /// Keys made ahead at a time for new loops (0: no pool, each new loop's key its own
    /// durable step).
    pool_size: usize,
    /// Pooled keys not given to a loop yet, the lowest slot last.
    pool: Vec<Pooled>,
    /// Keys given from the pool since the last `sync_assignments`.
    unsynced_assignments: usize,
    /// Set at open when pooled keys were found (one may have been given to a loop by a run
    /// that crashed before its slot said so): the watermark recovery starts after.
    recover_after: Option<u64>,
}

impl FileKeyStore {
    /// Opens the key store in `dir`, creating it (with fresh random secrets) when `dir` holds
    /// none and a master key is given. Without a master key the store is sealed; a sealed open of
    /// a directory without a key file is an empty store and creates nothing.
    ///
    /// # Errors
    /// [`KeyError::WrongMasterKey`] when the store was created under another master key,
    /// [`KeyError::Locked`] when another process has it open, [`KeyError::Corrupt`] when a file
    /// does not hold what it should, [`KeyError::Io`].
    pub fn open(dir: &Path, master: Option<&MasterKey>) -> Result<Self, KeyError> {
        open::open(dir, master)
    }

    /// The directory the store lives in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made after the I/O it depends on succeeded, so a panic
        // elsewhere while the lock was held leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_slot(&self, state: &State, slot: u64) -> Result<Slot<'static>, KeyError> {
        let file = state.file.as_ref().ok_or_else(|| {
            KeyError::corrupt(format!(
                "slot {slot} was asked for but there is no key file"
            ))
        })?;
        let mut bytes: SlotBytes = [0; SLOT_SIZE];
        file.read_exact_at(&mut bytes, slot_offset(slot))
            .map_err(|e| KeyError::io(&self.path, e))?;
        Slot::decode(&bytes)
            .map(Slot::into_owned)
            .map_err(|problem| {
                KeyError::corrupt(match problem {
                    SlotProblem::Checksum => {
                        format!("slot {slot} of {} fails its checksum", self.path.display())
                    }
                    SlotProblem::Invalid(what) => {
                        format!("slot {slot} of {}: {what}", self.path.display())
                    }
                })
            })
    }

    /// Writes `slot` at slot number `at`; returns the write's sequence number. Any failure stops
    /// all later writes.
    fn write_slot(&self, state: &mut State, at: u64, slot: &Slot<'_>) -> Result<u64, KeyError> {
        self.write_at(state, at, &slot.encode())
    }

    /// Writes `bytes` (whole slots) from slot number `at` (0: the header); returns the write's
    /// sequence number. Any failure stops all later writes.
    fn write_at(&self, state: &mut State, at: u64, bytes: &[u8]) -> Result<u64, KeyError> {
        let file = state.file.as_ref().expect("a writable store has its file");
        if let Err(error) = file.write_all_at(bytes, slot_offset(at)) {
            let detail = format!(
                "writing slot {at} of {} failed: {error}",
                self.path.display()
            );
            tracing::error!(%detail, "key store write failed; no more writes until restart");
            state.failed.get_or_insert(detail);
            return Err(KeyError::io(&self.path, error));
        }
        state.write_seq += 1;
        Ok(state.write_seq)
    }

    /// The header as the file holds it now.
    fn read_header(&self, state: &State) -> Result<Header, KeyError> {
        let file = state.file.as_ref().ok_or_else(|| {
            KeyError::corrupt("the header was asked for but there is no key file".to_owned())
        })?;
        let mut bytes: SlotBytes = [0; SLOT_SIZE];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| KeyError::io(&self.path, e))?;
        Header::decode(&bytes)
            .map_err(|detail| KeyError::corrupt(format!("{}: {detail}", self.path.display())))
    }

    /// Appends `slot` at the end of the file; returns where it went.
    fn append_slot(&self, state: &mut State, slot: &Slot<'_>) -> Result<SlotRef, KeyError> {
        let at = state.next_slot;
        let seq = self.write_slot(state, at, slot)?;
        state.next_slot += 1;
        Ok(SlotRef { slot: at, seq })
    }

    fn unwrap_live_key(&self, state: &State, loop_id: &str, at: u64) -> Result<DataKey, KeyError> {
        let slot = self.read_slot(state, at)?;
        let master = state.master.as_ref().ok_or(KeyError::Sealed)?;
        match (slot.state, &slot.wrapped_key) {
            (SlotState::LiveKey, Some(wrapped)) if slot.loop_id == loop_id => {
                unwrap_data_key(master, slot.wrapped_for(), at, wrapped).map_err(|_| {
                    KeyError::corrupt(format!(
                        "the key in slot {at} does not unwrap under the master key that opened the store"
                    ))
                })
            }
            _ => Err(KeyError::corrupt(format!(
                "slot {at} should hold the live key of the loop the index names, and does not"
            ))),
        }
    }

    /// Gives the lowest pooled key to `loop_id`, making `pool_size` more (appended, to be
    /// fsynced before the caller answers) when none is left. The slot is rewritten to name
    /// the loop without waiting for the disk: see [`KeyStore::start_pool`].
    fn take_pooled(
        &self,
        state: &mut State,
        master: &MasterKey,
        loop_id: &str,
        digest: Option<ContactDigest>,
    ) -> Result<(DataKey, SlotRef), KeyError> {
        if state.pool.is_empty() {
            self.fill_pool(state, master)?;
        }
        let pooled = state.pool.pop().expect("the pool was just filled");
        let key = self.assign_pooled(state, master, loop_id, pooled, digest)?;
        Ok((key, pooled.at))
    }

    /// Appends `pool_size` pooled keys at the end of the file in one write.
    fn fill_pool(&self, state: &mut State, master: &MasterKey) -> Result<(), KeyError> {
        let first = state.next_slot;
        let mut made = Vec::with_capacity(state.pool_size);
        let mut bytes = Vec::with_capacity(state.pool_size * SLOT_SIZE);
        for slot in first..first + state.pool_size as u64 {
            let wrapped = wrap_data_key(master, NO_LOOP_YET, &DataKey::generate(slot));
            bytes.extend_from_slice(&Slot::pooled_key(wrapped).encode());
            made.push((slot, wrapped));
        }
        let seq = self.write_at(state, first, &bytes)?;
        state.next_slot += state.pool_size as u64;
        state.pool = made
            .into_iter()
            .rev()
            .map(|(slot, wrapped)| Pooled {
                at: SlotRef { slot, seq },
                wrapped,
            })
            .collect();
        Ok(())
    }

    /// Rewrites a pooled key's slot to name `loop_id` (not fsynced) and indexes it.
    fn assign_pooled(
        &self,
        state: &mut State,
        master: &MasterKey,
        loop_id: &str,
        Pooled { at, wrapped }: Pooled,
        digest: Option<ContactDigest>,
    ) -> Result<DataKey, KeyError> {
        let key = unwrap_data_key(master, NO_LOOP_YET, at.slot, &wrapped).map_err(|_| {
            KeyError::corrupt(format!(
                "the pooled key in slot {} does not unwrap under the master key that opened the store",
                at.slot
            ))
        })?;
        self.write_slot(
            state,
            at.slot,
            &Slot::assigned_key(loop_id, wrapped, digest),
        )?;
        state.index.set_key(loop_id, at.slot);
        if let Some(digest) = digest {
            state.index.add_contact(loop_id, digest, at.slot);
        }
        // Callers rely on the key, which is durable once its pool is.
        state.note_write(at);
        state.unsynced_assignments += 1;
        Ok(key)
    }
}

impl State {
    /// Remembers that callers relying on slot `at.slot` wait for an fsync covering `at.seq`.
    fn note_write(&mut self, at: SlotRef) {
        self.unsynced_slots.note(at, self.synced_seq);
    }

    /// The write sequence number an fsync must cover before a caller relies on `slot` (0:
    /// one already has).
    fn written_seq(&self, slot: u64) -> u64 {
        self.unsynced_slots.seq(slot)
    }

    /// Records that an fsync covered every write up to `covered`.
    fn synced_upto(&mut self, covered: u64) {
        self.synced_seq = self.synced_seq.max(covered);
        self.unsynced_slots.forget_upto(self.synced_seq);
    }
}

/// Indexed slots written since the last fsync, each with the write sequence number an fsync
/// must cover before a caller relies on it. Holding these apart lets the index keep a bare
/// slot number a loop (8 bytes, not 24): at a million loops it held 16 MiB of sequence
/// numbers nobody needed once their fsync was done.
#[derive(Debug, Default)]
struct UnsyncedSlots(HashMap<u64, u64>);

impl UnsyncedSlots {
    /// Notes `at` unless an fsync up to `synced_seq` covers it already.
    fn note(&mut self, at: SlotRef, synced_seq: u64) {
        if at.seq > synced_seq {
            self.0.insert(at.slot, at.seq);
        }
    }

    fn seq(&self, slot: u64) -> u64 {
        self.0.get(&slot).copied().unwrap_or(0)
    }

    /// Forgets what an fsync up to `synced_seq` covers.
    fn forget_upto(&mut self, synced_seq: u64) {
        self.0.retain(|_, seq| *seq > synced_seq);
    }
}

/// Refuses writes to a store that failed or is sealed; otherwise hands out the master key.
fn writable(state: &State) -> Result<MasterKey, KeyError> {
    if let Some(detail) = &state.failed {
        return Err(KeyError::Failed {
            detail: detail.clone(),
        });
    }
    state.master.clone().ok_or(KeyError::Sealed)
}

fn slot_offset(slot: u64) -> u64 {
    slot * SLOT_SIZE as u64
}

impl KeyStore for FileKeyStore {
    fn keys_for_writing(&self, requests: &[KeyRequest<'_>]) -> Result<Vec<DataKey>, KeyError> {
        for request in requests {
            check_loop_id(request.loop_id)?;
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let master = writable(state)?;
        // The highest write sequence the answer depends on: it returns once an fsync covers it.
        let mut needed = 0;
        let mut keys = Vec::with_capacity(requests.len());
        for request in requests {
            let loop_id = request.loop_id;
            let key = if let Some(slot) = state.index.live_key(loop_id) {
                needed = needed.max(state.written_seq(slot));
                self.unwrap_live_key(state, loop_id, slot)?
            } else if state.pool_size > 0 {
                let digest = request
                    .contact
                    .filter(|digest| state.index.contact(loop_id, digest).is_none());
                // The key is durable once the fsync of its pool is (at once for a pool found
                // at open); the slot naming the loop is written now and synced later.
                let (key, at) = self.take_pooled(state, &master, loop_id, digest)?;
                needed = needed.max(at.seq);
                key
            } else {
                let key = DataKey::generate(state.next_slot);
                let digest = request
                    .contact
                    .filter(|digest| state.index.contact(loop_id, digest).is_none());
                let slot = Slot::live_key(loop_id, wrap_data_key(&master, loop_id, &key), digest);
                let at = self.append_slot(state, &slot)?;
                debug_assert_eq!(at.slot, key.id);
                state.index.set_key(loop_id, at.slot);
                if let Some(digest) = digest {
                    state.index.add_contact(loop_id, digest, at.slot);
                }
                state.note_write(at);
                needed = needed.max(at.seq);
                key
            };
            if let Some(digest) = request.contact {
                let seq = match state.index.contact(loop_id, &digest) {
                    Some(slot) => state.written_seq(slot),
                    None => {
                        let at = self.append_slot(state, &Slot::live_contact(loop_id, digest))?;
                        state.index.add_contact(loop_id, digest, at.slot);
                        state.note_write(at);
                        at.seq
                    }
                };
                needed = needed.max(seq);
            }
            keys.push(key);
        }
        self.wait_until_synced(guard, needed)?;
        Ok(keys)
    }

    fn key(&self, loop_id: &str, id: KeyId) -> Result<KeyState, KeyError> {
        if check_loop_id(loop_id).is_err() {
            return Ok(KeyState::Unknown);
        }
        let state = self.lock();
        if id == 0 || id >= state.next_slot {
            return Ok(KeyState::Unknown);
        }
        let slot = self.read_slot(&state, id)?;
        if slot.loop_id != loop_id {
            return Ok(KeyState::Unknown);
        }
        Ok(match slot.state {
            SlotState::LiveKey if state.master.is_none() => KeyState::Sealed,
            SlotState::LiveKey => KeyState::Live(self.unwrap_live_key(&state, loop_id, id)?),
            SlotState::DestroyedKey => KeyState::Destroyed,
            SlotState::LiveContact
            | SlotState::DestroyedContact
            | SlotState::Tombstone
            | SlotState::PooledKey => KeyState::Unknown,
        })
    }

    fn destroy_loop(&self, loop_id: &str) -> Result<usize, KeyError> {
        check_loop_id(loop_id)?;
        let mut guard = self.lock();
        let state = &mut *guard;
        writable(state)?;
        let forgotten = state.index.destroy(loop_id);
        let mut erased: Vec<(u64, SlotState)> = Vec::new();
        if let Some(key) = forgotten.key {
            erased.push((key, SlotState::DestroyedKey));
        }
        for &(_, at) in &forgotten.contacts {
            if !erased.iter().any(|&(slot, _)| slot == at) {
                erased.push((at, SlotState::DestroyedContact));
            }
        }
        // With nothing to write, the answer still waits for whatever is written so far (another
        // caller's erasure of this loop may be on its way to disk).
        let mut needed = state.write_seq;
        for (slot, erased_state) in &erased {
            needed = self.write_slot(state, *slot, &Slot::erased(*erased_state, loop_id))?;
        }
        if erased.is_empty() && !forgotten.erased {
            needed = self
                .append_slot(state, &Slot::erased(SlotState::Tombstone, loop_id))?
                .seq;
        }
        let destroyed = usize::from(forgotten.key.is_some());
        self.wait_until_synced(guard, needed)?;
        if destroyed > 0 {
            tracing::info!(
                slots = erased.len(),
                "destroyed a loop's keys in the key store"
            );
        }
        Ok(destroyed)
    }

    fn is_erased(&self, loop_id: &str) -> bool {
        self.lock().index.is_erased(loop_id)
    }

    fn loops_with_contact(&self, digest: &ContactDigest) -> Result<Vec<String>, KeyError> {
        Ok(self.lock().index.loops_with(digest))
    }

    fn contact_digest(&self, contact: &str) -> Result<ContactDigest, KeyError> {
        let state = self.lock();
        state
            .secrets
            .as_ref()
            .ok_or(KeyError::Sealed)?
            .contact_digest(contact)
    }

    fn public_id_of(&self, loop_id: &str) -> Result<String, KeyError> {
        let state = self.lock();
        state
            .secrets
            .as_ref()
            .ok_or(KeyError::Sealed)?
            .public_id_of(loop_id)
    }

    fn rotate_master_key(&self, new: &MasterKey) -> Result<usize, KeyError> {
        rotate::rotate(self, new)
    }

    fn start_pool(&self, keys: usize) -> Result<(), KeyError> {
        self.lock().pool_size = keys;
        Ok(())
    }

    fn unsynced_assignments(&self) -> usize {
        self.lock().unsynced_assignments
    }

    fn sync_assignments(&self, log_position: u64) -> Result<(), KeyError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        writable(state)?;
        let given = state.unsynced_assignments;
        let mut header = self.read_header(state)?;
        header.assignments_synced = log_position;
        // Written over the header in place, like an erasure's slots: one aligned 256-byte
        // write. The fsync covers it and every slot written before it.
        let seq = self.write_at(state, 0, &header.encode())?;
        self.wait_until_synced(guard, seq)?;
        let mut state = self.lock();
        state.unsynced_assignments = state.unsynced_assignments.saturating_sub(given);
        state.recover_after = None;
        Ok(())
    }

    fn assignments_to_recover_after(&self) -> Option<u64> {
        let state = self.lock();
        state.master.as_ref()?;
        state.recover_after
    }

    fn recover_assignment(&self, loop_id: &str, id: KeyId) -> Result<bool, KeyError> {
        check_loop_id(loop_id)?;
        let mut guard = self.lock();
        let state = &mut *guard;
        let master = writable(state)?;
        let Some(at) = state.pool.iter().position(|pooled| pooled.at.slot == id) else {
            return Ok(false);
        };
        if let Some(live) = state.index.live_key(loop_id) {
            return Err(KeyError::corrupt(format!(
                "a record names pooled key {id} for a loop whose live key is in slot {live}"
            )));
        }
        let pooled = state.pool.remove(at);
        self.assign_pooled(state, &master, loop_id, pooled, None)?;
        tracing::info!(
            key = id,
            "gave back to its loop a pooled key whose assignment a crash lost"
        );
        Ok(true)
    }
}

impl fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FileKeyStore")
            .field("path", &self.path)
            .field("sealed", &state.master.is_none())
            .field("slots", &state.next_slot.saturating_sub(1))
            .field("pooled", &state.pool.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod unsynced_tests {
    use super::{SlotRef, UnsyncedSlots};

    #[test]
    fn a_slot_waits_for_its_write_until_an_fsync_covers_it() {
        let mut slots = UnsyncedSlots::default();
        slots.note(SlotRef { slot: 5, seq: 3 }, 2);
        slots.note(SlotRef { slot: 6, seq: 2 }, 2);
        slots.note(SlotRef { slot: 7, seq: 4 }, 2);
        assert_eq!(
            (slots.seq(5), slots.seq(6), slots.seq(7), slots.seq(8)),
            (3, 0, 4, 0)
        );
        slots.forget_upto(3);
        assert_eq!((slots.seq(5), slots.seq(7)), (0, 4));
        // A slot noted again waits for the later write.
        slots.note(SlotRef { slot: 7, seq: 9 }, 3);
        assert_eq!(slots.seq(7), 9);
        slots.forget_upto(9);
        assert!(slots.0.is_empty());
    }
}

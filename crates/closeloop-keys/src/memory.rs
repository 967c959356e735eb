//! [`MemoryKeyStore`]: the key store semantics with nothing on disk, for tests.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::index::LoopIndex;
use crate::loop_id::check_loop_id;
use crate::mac::constant_time_eq;
use crate::secrets::StoreSecrets;
use crate::{ContactDigest, DataKey, KeyError, KeyId, KeyRequest, KeyState, KeyStore, MasterKey};

/// A key store in memory, with the same semantics as [`FileKeyStore`](crate::FileKeyStore):
/// [`reopen`](Self::reopen) gives another handle on the same keys, checking the master key as
/// opening a file store does.
pub struct MemoryKeyStore {
    shared: Arc<Mutex<MemoryState>>,
    /// Whether this handle was opened with the master key.
    unsealed: bool,
}

struct MemoryState {
    master_check: [u8; 32],
    secrets: StoreSecrets,
    next_id: KeyId,
    /// Every key ever made, by id; `None` once destroyed.
    keys: HashMap<KeyId, (String, Option<DataKey>)>,
    index: LoopIndex<KeyId>,
}

impl MemoryKeyStore {
    /// A new, empty store under `master`, with fresh secrets.
    #[must_use]
    pub fn new(master: &MasterKey) -> Self {
        let state = MemoryState {
            master_check: master.check_value(),
            secrets: StoreSecrets::generate(),
            next_id: 1,
            keys: HashMap::new(),
            index: LoopIndex::default(),
        };
        MemoryKeyStore {
            shared: Arc::new(Mutex::new(state)),
            unsealed: true,
        }
    }

    /// Another handle on the same keys, opened with `master` (`None`: sealed).
    ///
    /// # Errors
    /// [`KeyError::WrongMasterKey`] when the store is under another master key.
    pub fn reopen(&self, master: Option<&MasterKey>) -> Result<Self, KeyError> {
        if let Some(master) = master
            && !constant_time_eq(&self.lock().master_check, &master.check_value())
        {
            return Err(KeyError::WrongMasterKey);
        }
        Ok(MemoryKeyStore {
            shared: Arc::clone(&self.shared),
            unsealed: master.is_some(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // Nothing panics half-way through a change of the state, so a poisoned lock holds a
        // consistent state.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unsealed(&self) -> Result<(), KeyError> {
        if self.unsealed {
            Ok(())
        } else {
            Err(KeyError::Sealed)
        }
    }
}

impl KeyStore for MemoryKeyStore {
    fn keys_for_writing(&self, requests: &[KeyRequest<'_>]) -> Result<Vec<DataKey>, KeyError> {
        self.unsealed()?;
        for request in requests {
            check_loop_id(request.loop_id)?;
        }
        let mut state = self.lock();
        let state = &mut *state;
        let mut keys = Vec::with_capacity(requests.len());
        for request in requests {
            let id = if let Some(id) = state.index.live_key(request.loop_id) {
                id
            } else {
                let id = state.next_id;
                state.next_id += 1;
                let key = DataKey::generate(id);
                state
                    .keys
                    .insert(id, (request.loop_id.to_owned(), Some(key)));
                state.index.set_key(request.loop_id, id);
                id
            };
            if let Some(digest) = request.contact
                && state.index.contact(request.loop_id, &digest).is_none()
            {
                state.index.add_contact(request.loop_id, digest, id);
            }
            let key = state.keys[&id]
                .1
                .clone()
                .expect("a live key is not destroyed");
            keys.push(key);
        }
        Ok(keys)
    }

    fn key(&self, loop_id: &str, id: KeyId) -> Result<KeyState, KeyError> {
        let state = self.lock();
        Ok(match state.keys.get(&id) {
            Some((owner, _)) if owner != loop_id => KeyState::Unknown,
            Some((_, None)) => KeyState::Destroyed,
            Some((_, Some(_))) if !self.unsealed => KeyState::Sealed,
            Some((_, Some(key))) => KeyState::Live(key.clone()),
            None => KeyState::Unknown,
        })
    }

    fn destroy_loop(&self, loop_id: &str) -> Result<usize, KeyError> {
        self.unsealed()?;
        check_loop_id(loop_id)?;
        let mut state = self.lock();
        let forgotten = state.index.destroy(loop_id);
        let Some(id) = forgotten.key else {
            return Ok(0);
        };
        if let Some((_, key)) = state.keys.get_mut(&id) {
            // Dropping the key zeroes its bytes.
            *key = None;
        }
        Ok(1)
    }

    fn is_erased(&self, loop_id: &str) -> bool {
        self.lock().index.is_erased(loop_id)
    }

    fn loops_with_contact(&self, digest: &ContactDigest) -> Result<Vec<String>, KeyError> {
        Ok(self.lock().index.loops_with(digest))
    }

    fn contact_digest(&self, contact: &str) -> Result<ContactDigest, KeyError> {
        self.unsealed()?;
        self.lock().secrets.contact_digest(contact)
    }

    fn public_id_of(&self, loop_id: &str) -> Result<String, KeyError> {
        self.unsealed()?;
        self.lock().secrets.public_id_of(loop_id)
    }

    fn rotate_master_key(&self, new: &MasterKey) -> Result<usize, KeyError> {
        self.unsealed()?;
        let mut state = self.lock();
        state.master_check = new.check_value();
        Ok(state.keys.values().filter(|(_, key)| key.is_some()).count())
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("unsealed", &self.unsealed)
            .finish_non_exhaustive()
    }
}

//! Group commit: callers that wrote slots share fsyncs. Whoever finds no fsync running starts
//! one covering every write so far; the rest wait for it and then check whether it covered
//! theirs.

use std::sync::{MutexGuard, PoisonError};

use super::{FileKeyStore, State};
use crate::KeyError;

impl FileKeyStore {
    /// Returns once an fsync that started after write `needed` has finished (at once when one
    /// already has). Consumes the guard: the fsync runs without the lock, so other callers keep
    /// writing slots meanwhile.
    pub(super) fn wait_until_synced<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        needed: u64,
    ) -> Result<(), KeyError> {
        loop {
            if let Some(detail) = &state.failed {
                return Err(KeyError::Failed {
                    detail: detail.clone(),
                });
            }
            if state.synced_seq >= needed {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let covered = state.write_seq;
            let file = state
                .file
                .clone()
                .expect("a store with writes to sync has its file");
            drop(state);
            let result = file.sync_data();
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.synced_upto(covered),
                Err(error) => {
                    let detail = format!("fsync of {} failed: {error}", self.path.display());
                    tracing::error!(%detail, "key store fsync failed; no more writes until restart");
                    state.failed.get_or_insert(detail);
                }
            }
            self.synced.notify_all();
        }
    }
}

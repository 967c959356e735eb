//! After a crash, giving pooled keys back to their loops.
//!
//! With a key pool ([`KeyStore::start_pool`]) a new loop's key is durable before its first
//! record, but the key store's slot saying which loop has it is written without waiting for
//! the disk; the store syncs those slots every so often and on close, recording each time the
//! log position they cover. A crash in between can leave a durable record naming a key whose
//! slot still says "pooled". The record names its loop and its key, so on opening the store
//! reads every record after that position and gives each such key back to its loop (with its
//! author's contact digest, opened from the record), before anything else can write or erase:
//! an erasure then destroys every key of the loop, as without a pool.

use closeloop_domain::LoopEvent;
use closeloop_keys::{KeyRequest, KeyStore};

use crate::record::{self, Reveal};
use crate::{StoreError, StoredEvent};

/// Reads the entries after the key store's watermark up to `head` with `read` and recovers
/// every lost assignment; then syncs, so the next open starts at `head`. Returns how many
/// keys it gave back.
///
/// # Errors
/// When an entry cannot be read or the key store cannot write: the store must not open, or
/// an erasure could miss a key.
pub(crate) fn recover(
    keys: &dyn KeyStore,
    head: u64,
    mut read: impl FnMut(u64) -> Result<StoredEvent, StoreError>,
) -> Result<usize, StoreError> {
    let Some(after) = keys.assignments_to_recover_after() else {
        return Ok(0);
    };
    let failed = |err: closeloop_keys::KeyError| {
        StoreError::Backend(format!(
            "cannot give pooled keys back to their loops after a crash: {err}"
        ))
    };
    let mut recovered = 0;
    for position in after.saturating_add(1)..=head {
        let entry = read(position)?;
        let corrupt = |err: record::RecordError| StoreError::Corrupt {
            position,
            detail: err.to_string(),
        };
        let Some(kid) = record::sealed_with(&entry.record).map_err(corrupt)? else {
            continue;
        };
        let loop_id = entry.loop_id.as_str();
        if !keys.recover_assignment(loop_id, kid).map_err(failed)? {
            continue;
        }
        recovered += 1;
        // The slot that was lost also carried the author's contact digest, for erasure by
        // contact: the record has the contact, sealed with the key just recovered.
        let event =
            record::decode_as(loop_id, &entry.record, Reveal::With(keys)).map_err(corrupt)?;
        let LoopEvent::FeedbackReceived(feedback) = &event.payload else {
            continue;
        };
        if let Some(contact) = feedback.author.as_ref().and_then(|a| a.contact.as_deref()) {
            let digest = keys.contact_digest(contact).map_err(failed)?;
            keys.keys_for_writing(&[KeyRequest {
                loop_id,
                contact: Some(digest),
            }])
            .map_err(failed)?;
        }
    }
    keys.sync_assignments(head.max(after)).map_err(failed)?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "gave pooled keys back to their loops: a crash had lost which loop each belonged to"
        );
    }
    Ok(recovered)
}

//! Re-walking the log: gapless positions, per-loop chains, and the Merkle tree head.

use std::collections::HashMap;

use serde::Serialize;

use crate::merkle::MerkleFrontier;
use crate::{EventStore, Hash, StoreError};

/// How many entries a verification reads at a time.
const PAGE: usize = 4096;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether every entry up to `upto` checked out.
    pub ok: bool,
    /// How many entries were checked (up to the first bad one, exclusive).
    pub events: u64,
    /// The RFC 6962 tree head over the entries checked.
    pub head_hash: Hash,
    /// The first position that does not add up, if any.
    pub first_bad_position: Option<u64>,
    /// What is wrong there, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Re-walks the log from position 1 up to `upto` (default: the head): positions are gapless,
/// every `hash` is recomputed, every `prev_hash` equals the `hash` of the loop's previous entry
/// (zeros for version 1) and versions count up from 1. Computes the Merkle tree head on the way.
///
/// # Errors
/// Only when the store cannot be read at all; damage is reported in the [`VerifyReport`].
pub async fn verify<S: EventStore>(
    store: &S,
    upto: Option<u64>,
) -> Result<VerifyReport, StoreError> {
    let upto = upto.unwrap_or_else(|| store.head());
    let mut frontier = MerkleFrontier::new();
    // Each loop's last (version, hash): what its next entry must chain to.
    let mut heads: HashMap<String, (u64, Hash)> = HashMap::new();
    let mut next = 1;
    let bad = |frontier: &MerkleFrontier, position: u64, problem: String| VerifyReport {
        ok: false,
        events: frontier.size(),
        head_hash: frontier.root(),
        first_bad_position: Some(position),
        problem: Some(problem),
    };
    while next <= upto {
        let limit = usize::try_from(upto - next + 1).unwrap_or(PAGE).min(PAGE);
        let page = match store.read_all(next - 1, limit).await {
            Ok(page) => page,
            Err(StoreError::Corrupt { position, detail }) => {
                return Ok(bad(&frontier, position, detail));
            }
            Err(err) => return Err(err),
        };
        if page.is_empty() {
            return Ok(bad(
                &frontier,
                next,
                format!("the log ends before position {upto}"),
            ));
        }
        for entry in page {
            if entry.position != next {
                return Ok(bad(
                    &frontier,
                    next,
                    format!(
                        "position {next} is missing (next entry is {})",
                        entry.position
                    ),
                ));
            }
            let (last_version, last_hash) = heads
                .get(entry.loop_id.as_str())
                .copied()
                .unwrap_or((0, Hash::ZERO));
            if entry.version != last_version + 1 {
                return Ok(bad(
                    &frontier,
                    next,
                    format!(
                        "loop {} jumps from version {last_version} to {}",
                        entry.loop_id, entry.version
                    ),
                ));
            }
            if entry.prev_hash != last_hash {
                return Ok(bad(
                    &frontier,
                    next,
                    format!(
                        "prev_hash does not match the hash of loop {}'s version {last_version}",
                        entry.loop_id
                    ),
                ));
            }
            if entry.recomputed_hash() != entry.hash {
                return Ok(bad(
                    &frontier,
                    next,
                    "hash does not match the entry's contents".to_owned(),
                ));
            }
            frontier.push(&entry.hash);
            heads.insert(
                entry.loop_id.as_str().to_owned(),
                (entry.version, entry.hash),
            );
            next += 1;
        }
    }
    Ok(VerifyReport {
        ok: true,
        events: frontier.size(),
        head_hash: frontier.root(),
        first_bad_position: None,
        problem: None,
    })
}

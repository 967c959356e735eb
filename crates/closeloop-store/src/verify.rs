//! Re-walking the log: gapless positions, per-loop chains, and the Merkle tree head.

use std::collections::HashMap;

use serde::Serialize;

use crate::merkle::MerkleFrontier;
use crate::{EventStore, Hash, StoreError, StoredEvent};

/// How many entries a verification reads at a time.
const PAGE: usize = 2048;

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
/// The walk goes a page at a time, and the hashing of each page runs on tokio's blocking pool:
/// however long the log, it never holds an async worker thread for long, and dropping the
/// future (a client that went away, a request timeout) stops it between pages.
///
/// # Errors
/// Only when the store cannot be read at all; damage is reported in the [`VerifyReport`].
pub async fn verify<S: EventStore>(
    store: &S,
    upto: Option<u64>,
) -> Result<VerifyReport, StoreError> {
    let upto = upto.unwrap_or_else(|| store.head());
    let mut walk = Walk::default();
    while walk.next <= upto {
        let next = walk.next;
        let limit = usize::try_from(upto - next + 1).unwrap_or(PAGE).min(PAGE);
        let page = match store.read_all(next - 1, limit).await {
            Ok(page) => page,
            Err(StoreError::Corrupt { position, detail }) => {
                return Ok(walk.bad(position, detail));
            }
            Err(err) => return Err(err),
        };
        if page.is_empty() {
            return Ok(walk.bad(next, format!("the log ends before position {upto}")));
        }
        let (checked, found) = tokio::task::spawn_blocking(move || {
            let found = walk.check(page);
            (walk, found)
        })
        .await
        .map_err(|err| StoreError::Backend(format!("verification did not finish: {err}")))?;
        walk = checked;
        if let Some(report) = found {
            return Ok(report);
        }
    }
    Ok(VerifyReport {
        ok: true,
        events: walk.frontier.size(),
        head_hash: walk.frontier.root(),
        first_bad_position: None,
        problem: None,
    })
}

/// Where a verification has got to.
struct Walk {
    frontier: MerkleFrontier,
    /// Each loop's last (version, hash): what its next entry must chain to.
    heads: HashMap<String, (u64, Hash)>,
    /// The position the next entry must have.
    next: u64,
}

impl Default for Walk {
    fn default() -> Self {
        Self {
            frontier: MerkleFrontier::new(),
            heads: HashMap::new(),
            next: 1,
        }
    }
}

impl Walk {
    fn bad(&self, position: u64, problem: String) -> VerifyReport {
        VerifyReport {
            ok: false,
            events: self.frontier.size(),
            head_hash: self.frontier.root(),
            first_bad_position: Some(position),
            problem: Some(problem),
        }
    }

    /// Checks one page of entries; the report of the first bad one, if any.
    fn check(&mut self, page: Vec<StoredEvent>) -> Option<VerifyReport> {
        for entry in page {
            let next = self.next;
            if entry.position != next {
                return Some(self.bad(
                    next,
                    format!(
                        "position {next} is missing (next entry is {})",
                        entry.position
                    ),
                ));
            }
            let (last_version, last_hash) = self
                .heads
                .get(entry.loop_id.as_str())
                .copied()
                .unwrap_or((0, Hash::ZERO));
            if entry.version != last_version + 1 {
                return Some(self.bad(
                    next,
                    format!(
                        "loop {} jumps from version {last_version} to {}",
                        entry.loop_id, entry.version
                    ),
                ));
            }
            if entry.prev_hash != last_hash {
                return Some(self.bad(
                    next,
                    format!(
                        "prev_hash does not match the hash of loop {}'s version {last_version}",
                        entry.loop_id
                    ),
                ));
            }
            if entry.recomputed_hash() != entry.hash {
                return Some(self.bad(next, "hash does not match the entry's contents".to_owned()));
            }
            self.frontier.push(&entry.hash);
            self.heads.insert(
                entry.loop_id.as_str().to_owned(),
                (entry.version, entry.hash),
            );
            self.next += 1;
        }
        None
    }
}

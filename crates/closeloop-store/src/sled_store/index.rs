//! The in-memory indexes over the log: each loop's positions and chain head, and every
//! idempotency key. They are derived data, rebuilt from the entry headers when the store opens,
//! so the log on disk needs one sled key per event (sled's cost is per key, not per byte).

use std::collections::HashMap;

use closeloop_domain::LoopId;
use sha2::{Digest, Sha256};

use crate::chain::Hash;
use crate::merkle::MerkleIndex;

/// One loop's positions (index = version - 1) and the hash of its last entry.
#[derive(Debug, Default)]
pub(super) struct LoopEntries {
    pub positions: Vec<u64>,
    pub head_hash: Hash,
}

impl LoopEntries {
    /// The loop's current version (0: no such loop).
    pub fn version(&self) -> u64 {
        self.positions.len() as u64
    }
}

/// Where every loop's entries are and which idempotency keys are taken.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub loops: HashMap<LoopId, LoopEntries>,
    /// First 16 bytes of SHA-256 over the key → position. A hit is confirmed against the
    /// entry's header before it counts, so even a collision cannot misreport a duplicate.
    keys: HashMap<u128, u64>,
    /// Every entry hash in position order, as RFC 6962 block roots, for tree heads and proofs.
    pub merkle: MerkleIndex,
}

impl Index {
    /// Records an entry; entries must arrive in position order.
    pub fn insert(
        &mut self,
        loop_id: &LoopId,
        source: &str,
        event_id: &str,
        position: u64,
        hash: Hash,
    ) {
        let entries = match self.loops.get_mut(loop_id) {
            Some(entries) => entries,
            None => self.loops.entry(loop_id.clone()).or_default(),
        };
        entries.positions.push(position);
        entries.head_hash = hash;
        self.keys.insert(key_digest(source, event_id), position);
        self.merkle.push(&hash);
    }

    /// The position stored under an idempotency key, if any (to be confirmed by the caller).
    pub fn position_of_key(&self, source: &str, event_id: &str) -> Option<u64> {
        self.keys.get(&key_digest(source, event_id)).copied()
    }

    /// A loop's (version, head hash); (0, zeros) when it does not exist.
    pub fn head(&self, loop_id: &LoopId) -> (u64, Hash) {
        self.loops.get(loop_id).map_or((0, Hash::ZERO), |entries| {
            (entries.version(), entries.head_hash)
        })
    }
}

fn key_digest(source: &str, event_id: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update((source.len() as u64).to_be_bytes());
    hasher.update(source.as_bytes());
    hasher.update(event_id.as_bytes());
    let digest = hasher.finalize();
    u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
}

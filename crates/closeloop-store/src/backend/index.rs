//! The in-memory indexes over the log: each loop's positions and chain head, and every
//! idempotency key. They are derived data, rebuilt from the entry headers when the store opens,
//! so that an append writes nothing but its entries (sled's cost is per key, not per byte; a
//! JetStream append is one message).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use closeloop_domain::LoopId;
use sha2::{Digest, Sha256};

use crate::chain::Hash;
use crate::merkle::MerkleIndex;

/// One loop's positions (index = version - 1) and the hash of its last entry.
#[derive(Debug, Default)]
pub struct LoopEntries {
    /// Where each version is in the log.
    pub positions: Vec<u64>,
    /// The hash of the loop's last entry.
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
pub struct Index {
    pub loops: HashMap<LoopId, LoopEntries>,
    /// First 8 bytes of SHA-256 over the key → position: 16 bytes a key in memory. A hit is
    /// only a candidate; callers confirm it against the entry's header, so a collision can
    /// never misreport a duplicate.
    keys: HashMap<u64, u64>,
    /// Positions of later keys whose digest collides with one in `keys` (rare: about one in
    /// 10^12 pairs), so that no stored key ever becomes unfindable.
    colliding_keys: HashMap<u64, Vec<u64>>,
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
        self.insert_key(key_digest(source, event_id), position);
        self.merkle.push(&hash);
    }

    fn insert_key(&mut self, digest: u64, position: u64) {
        match self.keys.entry(digest) {
            Entry::Vacant(slot) => {
                slot.insert(position);
            }
            Entry::Occupied(_) => self
                .colliding_keys
                .entry(digest)
                .or_default()
                .push(position),
        }
    }

    /// The positions that may hold an idempotency key, oldest first: each is to be confirmed
    /// against its entry by the caller. Almost always none or one.
    pub fn candidates_for_key(&self, source: &str, event_id: &str) -> Vec<u64> {
        self.candidates_for_digest(key_digest(source, event_id))
    }

    fn candidates_for_digest(&self, digest: u64) -> Vec<u64> {
        let Some(&first) = self.keys.get(&digest) else {
            return Vec::new();
        };
        let mut positions = vec![first];
        if let Some(more) = self.colliding_keys.get(&digest) {
            positions.extend_from_slice(more);
        }
        positions
    }

    /// A loop's (version, head hash); (0, zeros) when it does not exist.
    pub fn head(&self, loop_id: &LoopId) -> (u64, Hash) {
        self.loops.get(loop_id).map_or((0, Hash::ZERO), |entries| {
            (entries.version(), entries.head_hash)
        })
    }
}

fn key_digest(source: &str, event_id: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update((source.len() as u64).to_be_bytes());
    hasher.update(source.as_bytes());
    hasher.update(event_id.as_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_whose_digests_collide_all_stay_findable_oldest_first() {
        let mut index = Index::default();
        index.insert_key(7, 10);
        index.insert_key(7, 42);
        index.insert_key(7, 99);
        index.insert_key(8, 11);
        assert_eq!(index.candidates_for_digest(7), vec![10, 42, 99]);
        assert_eq!(index.candidates_for_digest(8), vec![11]);
        assert_eq!(index.candidates_for_digest(9), Vec::<u64>::new());
    }

    #[test]
    fn a_key_is_found_under_its_own_source_and_id_only() {
        let mut index = Index::default();
        let loop_id = LoopId::parse("loop-1").expect("valid id");
        index.insert(&loop_id, "urn:a", "1", 1, Hash::ZERO);
        assert_eq!(index.candidates_for_key("urn:a", "1"), vec![1]);
        assert!(index.candidates_for_key("urn:a", "2").is_empty());
        assert!(index.candidates_for_key("urn:a1", "").is_empty());
    }
}

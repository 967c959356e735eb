//! The RFC 6962 Merkle tree head over the log's entry hashes, in position order, and the
//! proofs an auditor checks against it.
//!
//! Leaves are the entries' 32-byte `hash` values: leaf = SHA-256(0x00 ‖ hash),
//! node = SHA-256(0x01 ‖ left ‖ right), and a tree of n leaves splits at the largest power of
//! two below n. An auditor who noted (size, head) once can later check that that prefix of
//! history is unchanged.
//!
//! Position p of the log is leaf index p - 1.
//!
//! - [`root_of`], [`inclusion_path`] and [`consistency_path`] are the recursive reference
//!   definitions of RFC 6962 §2.1 over an in-memory slice (the test oracle; fine for small
//!   logs).
//! - [`verify_inclusion`] and [`verify_consistency`] are the iterative verifiers of RFC 9162
//!   §2.1.3.2 and §2.1.4.2, what an auditor runs.
//! - [`MerkleFrontier`] computes the head incrementally in O(log n) memory.
//! - [`MerkleIndex`] answers heads and proofs for any size of a big log while keeping only one
//!   hash per [`BLOCK`] entries; proofs are two-phase so the leaves of the few blocks a proof
//!   cuts into can be fetched from storage in between.

mod index;
mod proof;
#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

use crate::Hash;

pub use index::{BLOCK, MerkleError, MerkleIndex};
pub use proof::{consistency_path, inclusion_path, verify_consistency, verify_inclusion};

/// The RFC 6962 leaf hash of an entry hash.
#[must_use]
pub fn leaf_hash(entry: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry.0);
    Hash(hasher.finalize().into())
}

/// The RFC 6962 interior node hash.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// The tree head of the empty log: SHA-256 of nothing.
#[must_use]
pub fn empty_root() -> Hash {
    Hash::of(&[])
}

/// Computes the tree head incrementally, leaf by leaf, in O(log n) memory: it keeps the roots
/// of the perfect subtrees the leaves so far make up.
#[derive(Debug, Clone, Default)]
pub struct MerkleFrontier {
    /// Perfect subtree roots with their heights, left to right, heights strictly decreasing.
    peaks: Vec<(u32, Hash)>,
    size: u64,
}

impl MerkleFrontier {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next entry hash as a leaf.
    pub fn push(&mut self, entry: &Hash) {
        let mut height = 0;
        let mut node = leaf_hash(entry);
        while let Some(&(top_height, top)) = self.peaks.last() {
            if top_height != height {
                break;
            }
            self.peaks.pop();
            node = node_hash(&top, &node);
            height += 1;
        }
        self.peaks.push((height, node));
        self.size += 1;
    }

    /// How many leaves were added.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree head over all leaves added so far.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut root)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            root = node_hash(left, &root);
        }
        root
    }
}

/// The tree head over `entries`, by the recursive definition of RFC 6962 §2.1 (used to check
/// [`MerkleFrontier`] and [`MerkleIndex`]; it holds every leaf in memory).
#[must_use]
pub fn root_of(entries: &[Hash]) -> Hash {
    match entries {
        [] => empty_root(),
        [single] => leaf_hash(single),
        _ => {
            let split = largest_power_of_two_below(entries.len());
            node_hash(&root_of(&entries[..split]), &root_of(&entries[split..]))
        }
    }
}

/// Where RFC 6962 splits a tree of `n` > 1 leaves: the largest power of two below `n`.
fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

//! The RFC 6962 Merkle tree head over the log's entry hashes, in position order.
//!
//! Leaves are the entries' 32-byte `hash` values: leaf = SHA-256(0x00 ‖ hash),
//! node = SHA-256(0x01 ‖ left ‖ right), and a tree of n leaves splits at the largest power of
//! two below n. An auditor who noted (size, head) once can later check that that prefix of
//! history is unchanged.

use sha2::{Digest, Sha256};

use crate::Hash;

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
/// [`MerkleFrontier`]; it holds every leaf in memory).
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

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<Hash> {
        (0..n).map(|i| Hash::of(&i.to_be_bytes())).collect()
    }

    #[test]
    fn frontier_agrees_with_the_recursive_definition_for_every_size() {
        let all = entries(70);
        let mut frontier = MerkleFrontier::new();
        assert_eq!(frontier.root(), root_of(&[]));
        for (i, entry) in all.iter().enumerate() {
            frontier.push(entry);
            assert_eq!(frontier.root(), root_of(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn split_points_are_the_largest_power_of_two_below_n() {
        assert_eq!(largest_power_of_two_below(2), 1);
        assert_eq!(largest_power_of_two_below(3), 2);
        assert_eq!(largest_power_of_two_below(4), 2);
        assert_eq!(largest_power_of_two_below(5), 4);
        assert_eq!(largest_power_of_two_below(8), 4);
        assert_eq!(largest_power_of_two_below(9), 8);
    }

    #[test]
    fn three_leaves_hash_as_rfc_6962_says() {
        let [a, b, c] = [Hash::of(b"a"), Hash::of(b"b"), Hash::of(b"c")];
        let expected = node_hash(&node_hash(&leaf_hash(&a), &leaf_hash(&b)), &leaf_hash(&c));
        assert_eq!(root_of(&[a, b, c]), expected);
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

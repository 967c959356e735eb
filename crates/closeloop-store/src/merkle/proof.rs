//! Inclusion and consistency proofs: the recursive reference generators of RFC 6962 §2.1.1
//! and §2.1.2 over an in-memory slice, and the iterative verifiers of RFC 9162 §2.1.3.2 and
//! §2.1.4.2.

use super::{empty_root, largest_power_of_two_below, leaf_hash, node_hash, root_of};
use crate::Hash;

/// The audit path PATH(index, D\[n\]) of RFC 6962 §2.1.1 proving that leaf `index` (position
/// `index + 1`) is in the tree over all of `entries`: the sibling subtree hashes from the leaf
/// up to the root, nearest first.
///
/// It holds every leaf in memory and hashes O(n) nodes; it is the reference the
/// [`MerkleIndex`](super::MerkleIndex) is tested against and is fine for small logs.
///
/// # Panics
/// When `index >= entries.len()`: no leaf of the tree has that index. Check first.
#[must_use]
pub fn inclusion_path(entries: &[Hash], index: usize) -> Vec<Hash> {
    assert!(
        index < entries.len(),
        "leaf index {index} is not in a tree of {} leaves",
        entries.len()
    );
    let mut path = Vec::new();
    push_inclusion_path(entries, index, &mut path);
    path
}

/// Appends PATH(index, entries) to `path`; `index < entries.len()`.
pub(super) fn push_inclusion_path(entries: &[Hash], index: usize, path: &mut Vec<Hash>) {
    let n = entries.len();
    if n <= 1 {
        return;
    }
    let k = largest_power_of_two_below(n);
    if index < k {
        push_inclusion_path(&entries[..k], index, path);
        path.push(root_of(&entries[k..]));
    } else {
        push_inclusion_path(&entries[k..], index - k, path);
        path.push(root_of(&entries[..k]));
    }
}

/// The consistency proof PROOF(m, D\[n\]) of RFC 6962 §2.1.2 that the tree over the first `m`
/// of `entries` is a prefix of the tree over all of them, built by SUBPROOF.
///
/// RFC 6962 defines it for 0 < m < n only; here `m == 0` (every tree extends the empty one)
/// and `m == n` (a tree is consistent with itself) give the empty proof, which is what
/// [`verify_consistency`] expects for them. Like [`inclusion_path`] it holds every leaf in
/// memory and is the reference for [`MerkleIndex`](super::MerkleIndex).
///
/// # Panics
/// When `m > entries.len()`: a tree has no consistency proof towards a smaller one.
#[must_use]
pub fn consistency_path(entries: &[Hash], m: usize) -> Vec<Hash> {
    assert!(
        m <= entries.len(),
        "no consistency proof from {m} leaves to the smaller tree of {}",
        entries.len()
    );
    let mut proof = Vec::new();
    if m > 0 && m < entries.len() {
        push_subproof(entries, m, true, &mut proof);
    }
    proof
}

/// Appends SUBPROOF(m, entries, complete) to `proof`; `0 < m <= entries.len()`.
pub(super) fn push_subproof(entries: &[Hash], m: usize, complete: bool, proof: &mut Vec<Hash>) {
    let n = entries.len();
    debug_assert!(0 < m && m <= n);
    if m == n {
        if !complete {
            proof.push(root_of(entries));
        }
        return;
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        push_subproof(&entries[..k], m, complete, proof);
        proof.push(root_of(&entries[k..]));
    } else {
        push_subproof(&entries[k..], m - k, false, proof);
        proof.push(root_of(&entries[..k]));
    }
}

/// Whether `path` proves that the entry hash `entry` is leaf `index` (position `index + 1`)
/// of the tree of `size` leaves whose head is `root`, by the algorithm of RFC 9162 §2.1.3.2.
///
/// `entry` is the log entry's `hash`; its leaf hash is computed here. False when
/// `index >= size`, when the path is too short or too long for (`index`, `size`), or when the
/// recomputed head differs from `root`.
#[must_use]
pub fn verify_inclusion(entry: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = leaf_hash(entry);
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// Whether `path` proves that the tree of `from` leaves with head `from_root` is a prefix of
/// the tree of `size` leaves with head `root`, by the algorithm of RFC 9162 §2.1.4.2.
///
/// Edge cases, beyond the RFC's 0 < `from` < `size`:
/// - `from > size`: false (no tree is a prefix of a smaller one);
/// - `from == size`: true exactly when `path` is empty and the two heads are equal;
/// - `from == 0`: every tree extends the empty one, so true exactly when `path` is empty and
///   `from_root` is the empty tree's head ([`empty_root`]); `root` is not constrained by it.
#[must_use]
pub fn verify_consistency(
    from: u64,
    size: u64,
    from_root: &Hash,
    root: &Hash,
    path: &[Hash],
) -> bool {
    if from > size {
        return false;
    }
    if from == size {
        return path.is_empty() && from_root == root;
    }
    if from == 0 {
        return path.is_empty() && *from_root == empty_root();
    }
    // 0 < from < size: a proof is never empty.
    if path.is_empty() {
        return false;
    }
    let mut rest = path.iter();
    let start = if from.is_power_of_two() {
        // The old tree is a perfect subtree of the new one: the RFC prepends its head.
        *from_root
    } else {
        let Some(first) = rest.next() else {
            return false;
        };
        *first
    };
    let (mut f_n, mut s_n) = (from - 1, size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (start, start);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && f_r == *from_root && s_r == *root
}

//! [`MerkleIndex`]: tree heads and proofs for any size of a big log, keeping one hash per
//! [`BLOCK`] entries in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::proof::{push_inclusion_path, push_subproof};
use super::{empty_root, node_hash, root_of};
use crate::Hash;

/// How many leaves make up one block of a [`MerkleIndex`]: block `b` holds leaf indexes
/// `b * BLOCK .. (b + 1) * BLOCK`, that is positions `b * BLOCK + 1 ..= (b + 1) * BLOCK`.
pub const BLOCK: u64 = 256;

/// [`BLOCK`] as a length; it fits every `usize`.
const BLOCK_LEN: usize = BLOCK as usize;

/// Why a [`MerkleIndex`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The tree size asked for is past the entries pushed so far.
    #[error(
        "a tree of size {size} was asked for but only {indexed} entries are indexed; push the \
         missing entries first or ask for a size of at most {indexed}"
    )]
    SizeBeyondIndex {
        /// The tree size asked for.
        size: u64,
        /// How many entries the index holds.
        indexed: u64,
    },
    /// The leaf asked for is not in the tree.
    #[error(
        "leaf index {index} is not in a tree of size {size}; leaf indexes run from 0 to \
         size - 1 (position - 1), so ask for a smaller index or a larger size"
    )]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size asked for.
        size: u64,
    },
    /// A consistency proof was asked for from a larger tree to a smaller one.
    #[error(
        "no consistency proof leads from a tree of size {from} to the smaller tree of size \
         {size}; pass from <= size"
    )]
    FromBeyondSize {
        /// The old tree size asked for.
        from: u64,
        /// The new tree size asked for.
        size: u64,
    },
    /// The leaves of a block the proof cuts into were not supplied.
    #[error(
        "the entry hashes of block {block} (positions {first}..={last}) are needed but were \
         not supplied; fetch every block the matching blocks_needed_for_* call lists and pass \
         them",
        first = block * BLOCK + 1,
        last = (block + 1) * BLOCK
    )]
    MissingBlock {
        /// The block number.
        block: u64,
    },
    /// A block was supplied with fewer entry hashes than the tree size covers.
    #[error(
        "block {block} was supplied with {got} entry hashes but the tree needs its first \
         {needed}; supply the block's entries in position order up to at least the tree size"
    )]
    ShortBlock {
        /// The block number.
        block: u64,
        /// How many entry hashes were supplied.
        got: usize,
        /// How many the tree size needs.
        needed: usize,
    },
    /// A block was supplied with more entry hashes than a block holds.
    #[error(
        "block {block} was supplied with {got} entry hashes, more than the {BLOCK} a block \
         holds; supply only the entries of positions {first}..={last}",
        first = block * BLOCK + 1,
        last = (block + 1) * BLOCK
    )]
    LongBlock {
        /// The block number.
        block: u64,
        /// How many entry hashes were supplied.
        got: usize,
    },
    /// A complete block's entry hashes do not hash to the root the index noted for it.
    #[error(
        "the entry hashes supplied for block {block} (positions {first}..={last}) do not hash \
         to the root indexed for that block; re-read them in position order, and if they still \
         differ the stored log changed under the index: run the audit verify",
        first = block * BLOCK + 1,
        last = (block + 1) * BLOCK
    )]
    BlockMismatch {
        /// The block number.
        block: u64,
    },
}

/// Tree heads, inclusion proofs and consistency proofs for every prefix of a big log,
/// without keeping every leaf in memory.
///
/// It is fed the entry hashes in position order with [`push`](Self::push) and keeps only the
/// root of each complete aligned block of [`BLOCK`] leaves (32 bytes per 256 entries) plus the
/// entry hashes of the current partial block. Subtrees over whole blocks are hashed from the
/// block roots; leaves are needed only inside the few blocks a query cuts into (the block of
/// the leaf proven, the last block of each tree size involved), so every query is two-phase:
///
/// 1. ask `blocks_needed_for_*` which blocks' entry hashes are needed;
/// 2. fetch them from storage (block `b` = positions `b * BLOCK + 1 ..= (b + 1) * BLOCK`, or up
///    to the tree size if that is smaller) and pass them, by block number, to the matching
///    [`root`](Self::root), [`inclusion_proof`](Self::inclusion_proof) or
///    [`consistency_proof`](Self::consistency_proof) call.
///
/// The current partial block is in memory, so queries at the index's own size (or any size in
/// its last block) need nothing fetched for it. Each complete block supplied in full is checked
/// against its stored root. A query hashes O(size / [`BLOCK`] + [`BLOCK`]) nodes at worst.
#[derive(Clone, Default)]
pub struct MerkleIndex {
    /// The root of block `b`, for every complete block.
    block_roots: Vec<Hash>,
    /// The entry hashes of the current partial block (fewer than [`BLOCK`]).
    partial: Vec<Hash>,
}

impl fmt::Debug for MerkleIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleIndex")
            .field("size", &self.size())
            .field("complete_blocks", &self.block_roots.len())
            .field("partial", &self.partial.len())
            .finish()
    }
}

impl MerkleIndex {
    /// An index of the empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next entry hash (the entry at position [`size`](Self::size) + 1).
    pub fn push(&mut self, entry: &Hash) {
        self.partial.push(*entry);
        if self.partial.len() == BLOCK_LEN {
            self.block_roots.push(root_of(&self.partial));
            self.partial.clear();
        }
    }

    /// The complete blocks' roots and the partial block's entry hashes, for the store's index
    /// file.
    #[must_use]
    pub fn parts(&self) -> (&[Hash], &[Hash]) {
        (&self.block_roots, &self.partial)
    }

    /// Restores an index from [`parts`](Self::parts).
    ///
    /// # Errors
    /// A sentence saying what is wrong when the partial block is not shorter than a block.
    pub fn from_parts(block_roots: Vec<Hash>, partial: Vec<Hash>) -> Result<Self, String> {
        if partial.len() >= BLOCK_LEN {
            return Err(format!(
                "a partial Merkle block of {} entry hashes (a block holds {BLOCK_LEN})",
                partial.len()
            ));
        }
        Ok(Self {
            block_roots,
            partial,
        })
    }

    /// How many entry hashes were pushed.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.complete_blocks() * BLOCK + self.partial.len() as u64
    }

    fn complete_blocks(&self) -> u64 {
        self.block_roots.len() as u64
    }

    /// The blocks whose entry hashes [`root`](Self::root) needs for the tree of `size` leaves,
    /// ascending: at most the block holding leaf `size - 1`, when `size` cuts into it and it is
    /// not the partial block held in memory. Empty when `size` is beyond the index (then
    /// `root` says so).
    #[must_use]
    pub fn blocks_needed_for_root(&self, size: u64) -> Vec<u64> {
        self.plan(size, Walk::root)
    }

    /// The blocks whose entry hashes [`inclusion_proof`](Self::inclusion_proof) needs to prove
    /// leaf `index` in the tree of `size` leaves, ascending: the block holding `index` (unless
    /// the proof does not look inside it) and the one holding leaf `size - 1` when `size` cuts
    /// into it, leaving out the partial block held in memory. Empty when the arguments are out
    /// of range (then `inclusion_proof` says why).
    #[must_use]
    pub fn blocks_needed_for_inclusion(&self, index: u64, size: u64) -> Vec<u64> {
        self.plan(size, |walk| walk.inclusion(index))
    }

    /// The blocks whose entry hashes [`consistency_proof`](Self::consistency_proof) needs to
    /// prove the tree of `from` leaves a prefix of the tree of `size` leaves, ascending: the
    /// block holding leaf `from - 1` when `from` cuts into it and the one holding leaf
    /// `size - 1` when `size` cuts into it, leaving out the partial block held in memory. Empty
    /// when the arguments are out of range (then `consistency_proof` says why).
    #[must_use]
    pub fn blocks_needed_for_consistency(&self, from: u64, size: u64) -> Vec<u64> {
        self.plan(size, |walk| walk.consistency(from))
    }

    /// The tree head over the first `size` entries (the empty tree's head for 0).
    ///
    /// `blocks` maps block number to that block's entry hashes and must hold every block
    /// [`blocks_needed_for_root`](Self::blocks_needed_for_root) lists; others are ignored.
    ///
    /// # Errors
    /// [`MerkleError::SizeBeyondIndex`], or a needed block missing, short, too long or not
    /// matching its indexed root.
    pub fn root(&self, size: u64, blocks: &BTreeMap<u64, Vec<Hash>>) -> Result<Hash, MerkleError> {
        Walk::new(self, size, Some(blocks))?.root()
    }

    /// The RFC 6962 audit path (as [`inclusion_path`](super::inclusion_path)) proving leaf
    /// `index` (position `index + 1`) in the tree of the first `size` entries, nearest sibling
    /// first; check it with [`verify_inclusion`](super::verify_inclusion).
    ///
    /// `blocks` must hold every block
    /// [`blocks_needed_for_inclusion`](Self::blocks_needed_for_inclusion) lists.
    ///
    /// # Errors
    /// [`MerkleError::SizeBeyondIndex`], [`MerkleError::IndexOutOfRange`], or a needed block
    /// missing, short, too long or not matching its indexed root.
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        blocks: &BTreeMap<u64, Vec<Hash>>,
    ) -> Result<Vec<Hash>, MerkleError> {
        Walk::new(self, size, Some(blocks))?.inclusion(index)
    }

    /// The RFC 6962 consistency proof (as [`consistency_path`](super::consistency_path))
    /// that the tree of the first `from` entries is a prefix of the tree of the first `size`;
    /// empty when `from` is 0 or equals `size`. Check it with
    /// [`verify_consistency`](super::verify_consistency).
    ///
    /// `blocks` must hold every block
    /// [`blocks_needed_for_consistency`](Self::blocks_needed_for_consistency) lists.
    ///
    /// # Errors
    /// [`MerkleError::SizeBeyondIndex`], [`MerkleError::FromBeyondSize`], or a needed block
    /// missing, short, too long or not matching its indexed root.
    pub fn consistency_proof(
        &self,
        from: u64,
        size: u64,
        blocks: &BTreeMap<u64, Vec<Hash>>,
    ) -> Result<Vec<Hash>, MerkleError> {
        Walk::new(self, size, Some(blocks))?.consistency(from)
    }

    /// Runs `query` without leaves and collects the blocks it would have read.
    fn plan<'s, T>(
        &'s self,
        size: u64,
        query: impl FnOnce(&mut Walk<'s>) -> Result<T, MerkleError>,
    ) -> Vec<u64> {
        let Ok(mut walk) = Walk::new(self, size, None) else {
            return Vec::new();
        };
        match query(&mut walk) {
            Ok(_) => walk.needed.into_iter().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// One query over the tree of the first `size` entries of an index.
///
/// With `fetched` absent it plans: it records every block whose leaves it would read and hashes
/// nothing real. Both runs take the same path, so a plan lists exactly the blocks the real run
/// reads.
struct Walk<'a> {
    index: &'a MerkleIndex,
    size: u64,
    fetched: Option<&'a BTreeMap<u64, Vec<Hash>>>,
    needed: BTreeSet<u64>,
    checked: BTreeSet<u64>,
}

impl<'a> Walk<'a> {
    fn new(
        index: &'a MerkleIndex,
        size: u64,
        fetched: Option<&'a BTreeMap<u64, Vec<Hash>>>,
    ) -> Result<Self, MerkleError> {
        let indexed = index.size();
        if size > indexed {
            return Err(MerkleError::SizeBeyondIndex { size, indexed });
        }
        Ok(Self {
            index,
            size,
            fetched,
            needed: BTreeSet::new(),
            checked: BTreeSet::new(),
        })
    }

    fn root(&mut self) -> Result<Hash, MerkleError> {
        if self.size == 0 {
            return Ok(empty_root());
        }
        self.subtree(0, self.size)
    }

    fn inclusion(&mut self, index: u64) -> Result<Vec<Hash>, MerkleError> {
        if index >= self.size {
            return Err(MerkleError::IndexOutOfRange {
                index,
                size: self.size,
            });
        }
        let mut path = Vec::new();
        self.path(index, 0, self.size, &mut path)?;
        Ok(path)
    }

    fn consistency(&mut self, from: u64) -> Result<Vec<Hash>, MerkleError> {
        if from > self.size {
            return Err(MerkleError::FromBeyondSize {
                from,
                size: self.size,
            });
        }
        let mut proof = Vec::new();
        if from > 0 && from < self.size {
            self.subproof(from, 0, self.size, true, &mut proof)?;
        }
        Ok(proof)
    }

    /// The entry hashes of leaves `lo..hi`, which lie within one block; `None` while planning.
    fn leaves(&mut self, lo: u64, hi: u64) -> Result<Option<&'a [Hash]>, MerkleError> {
        let block = lo / BLOCK;
        debug_assert!(lo < hi && hi <= (block + 1) * BLOCK && hi <= self.size);
        let (start, end) = ((lo - block * BLOCK) as usize, (hi - block * BLOCK) as usize);
        let index: &'a MerkleIndex = self.index;
        if block == index.complete_blocks() {
            return Ok(Some(&index.partial[start..end]));
        }
        let Some(fetched) = self.fetched else {
            self.needed.insert(block);
            return Ok(None);
        };
        let leaves = fetched
            .get(&block)
            .ok_or(MerkleError::MissingBlock { block })?;
        let got = leaves.len();
        if got > BLOCK_LEN {
            return Err(MerkleError::LongBlock { block, got });
        }
        if got < end {
            return Err(MerkleError::ShortBlock {
                block,
                got,
                needed: end,
            });
        }
        // Here `block` is complete in the index; check it when it came whole.
        if got == BLOCK_LEN
            && self.checked.insert(block)
            && root_of(leaves) != index.block_roots[block as usize]
        {
            return Err(MerkleError::BlockMismatch { block });
        }
        Ok(Some(&leaves[start..end]))
    }

    /// MTH(D\[lo:hi\]) for a subtree of the RFC 6962 split structure: `lo` is a multiple of a
    /// power of two at least `hi - lo`, so a subtree of at most [`BLOCK`] leaves lies within
    /// one block and a larger one starts on a block boundary.
    fn subtree(&mut self, lo: u64, hi: u64) -> Result<Hash, MerkleError> {
        let n = hi - lo;
        if n > BLOCK {
            let k = largest_power_of_two_below(n);
            let left = self.subtree(lo, lo + k)?;
            let right = self.subtree(lo + k, hi)?;
            return Ok(node_hash(&left, &right));
        }
        if n == BLOCK {
            debug_assert_eq!(lo % BLOCK, 0);
            return Ok(self.index.block_roots[(lo / BLOCK) as usize]);
        }
        Ok(self.leaves(lo, hi)?.map_or(Hash::ZERO, root_of))
    }

    /// Appends PATH(index, D\[lo:hi\]) to `path`.
    fn path(
        &mut self,
        index: u64,
        lo: u64,
        hi: u64,
        path: &mut Vec<Hash>,
    ) -> Result<(), MerkleError> {
        let n = hi - lo;
        if n == 1 {
            return Ok(());
        }
        if n <= BLOCK {
            if let Some(leaves) = self.leaves(lo, hi)? {
                push_inclusion_path(leaves, (index - lo) as usize, path);
            }
            return Ok(());
        }
        let k = largest_power_of_two_below(n);
        if index < lo + k {
            self.path(index, lo, lo + k, path)?;
            path.push(self.subtree(lo + k, hi)?);
        } else {
            self.path(index, lo + k, hi, path)?;
            path.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }

    /// Appends SUBPROOF(m - lo, D\[lo:hi\], complete) to `proof`; `lo < m <= hi`.
    fn subproof(
        &mut self,
        m: u64,
        lo: u64,
        hi: u64,
        complete: bool,
        proof: &mut Vec<Hash>,
    ) -> Result<(), MerkleError> {
        if m == hi {
            if !complete {
                proof.push(self.subtree(lo, hi)?);
            }
            return Ok(());
        }
        let n = hi - lo;
        if n <= BLOCK {
            if let Some(leaves) = self.leaves(lo, hi)? {
                push_subproof(leaves, (m - lo) as usize, complete, proof);
            }
            return Ok(());
        }
        let k = largest_power_of_two_below(n);
        if m <= lo + k {
            self.subproof(m, lo, lo + k, complete, proof)?;
            proof.push(self.subtree(lo + k, hi)?);
        } else {
            self.subproof(m, lo + k, hi, false, proof)?;
            proof.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }
}

/// Where RFC 6962 splits a tree of `n` > 1 leaves: the largest power of two below `n`.
fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

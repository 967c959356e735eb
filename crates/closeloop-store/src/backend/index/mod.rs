//! The in-memory indexes over the log: each loop's positions and chain head, and every
//! idempotency key. They are derived data, rebuilt from the entry headers when the store opens,
//! so that an append writes nothing but its entries (sled's cost is per key, not per byte; a
//! JetStream append is one message).

use std::collections::HashMap;

use closeloop_domain::LoopId;
use sha2::{Digest, Sha256};

use crate::LoopIds;
use crate::chain::Hash;
use crate::merkle::MerkleIndex;

mod file;
mod keys;

pub use file::{INDEX_FILE_VERSION, IndexFile};
use keys::Keys;

/// Where every loop's entries are and which idempotency keys are taken.
///
/// Memory, at a million loops of five entries each: about 50 bytes a loop (its id once, its
/// last position and version, a table slot; 32 more where it keeps head hashes) and 10 to 11
/// bytes an entry (how far back its loop's previous entry is, 6 for its key; see [`Keys`]):
/// about 100 MiB at 4.9 million entries, where maps of owned ids, lists of positions and
/// 16-byte keys took 350 MiB.
///
/// [`Index::default`] keeps each loop's head hash, which a JetStream replica needs to check
/// every message it applies; [`Index::reading_head_hashes`] does not, for a store that reads
/// the hash from the loop's last entry when it appends (see [`HeadHash`]), unless that entry
/// is one of the last 4,096 (160 KiB).
#[derive(Debug, Default)]
pub struct Index {
    loops: Loops,
    keys: Keys,
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
        self.insert_keyed(loop_id, KeyDigest::of(source, event_id), position, hash);
    }

    /// Records an entry whose idempotency key's digest the caller has already worked out
    /// (an append needs it to look the key up first); entries must arrive in position order.
    pub fn insert_keyed(&mut self, loop_id: &LoopId, key: KeyDigest, position: u64, hash: Hash) {
        self.insert_without_key(loop_id, position, hash);
        self.keys.insert(key.0, position);
    }

    /// Records an entry's loop link and Merkle leaf; the caller adds its key.
    fn insert_without_key(&mut self, loop_id: &LoopId, position: u64, hash: Hash) {
        self.loops.insert(loop_id.as_str(), position, hash);
        self.merkle.push(&hash);
    }

    /// Records many entries in position order, as [`insert`](Self::insert) does one by one,
    /// but sorts their idempotency keys into place once, when the returned [`Bulk`] is
    /// dropped: for opening a store, which adds millions.
    pub fn bulk(&mut self) -> Bulk<'_> {
        Bulk {
            index: self,
            keys: Vec::new(),
        }
    }

    /// The positions that may hold an idempotency key, oldest first: each is to be confirmed
    /// against its entry by the caller. Almost always none or one.
    pub fn candidates_for_key(&self, source: &str, event_id: &str) -> Vec<u64> {
        self.candidates_for_digest(KeyDigest::of(source, event_id))
    }

    /// As [`candidates_for_key`](Self::candidates_for_key), for a key's digest.
    pub fn candidates_for_digest(&self, key: KeyDigest) -> Vec<u64> {
        self.keys.candidates(key.0)
    }

    /// An index that keeps no head hashes, only those of the last [`RecentHashes::LEN`]
    /// entries: [`head`](Self::head) says where to read the others.
    pub fn reading_head_hashes() -> Self {
        Self {
            loops: Loops {
                head_hashes: HeadHashes::InLog(RecentHashes::default()),
                ..Loops::default()
            },
            ..Self::default()
        }
    }

    /// A loop's version and head hash (or, in an index that does not keep them, the position
    /// of the entry whose hash it is); 0 and zeros when the loop does not exist.
    pub fn head(&self, loop_id: &LoopId) -> (u64, HeadHash) {
        let Some(slot) = self.loops.ids.find(loop_id.as_str()) else {
            return (0, HeadHash::Known(Hash::ZERO));
        };
        let row = &self.loops.rows[slot as usize];
        let hash = match &self.loops.head_hashes {
            HeadHashes::Kept(hashes) => HeadHash::Known(hashes[slot as usize]),
            HeadHashes::InLog(recent) => recent
                .get(row.last)
                .map_or(HeadHash::OfEntry(row.last), HeadHash::Known),
        };
        (row.version, hash)
    }

    /// The positions of a loop's entries up to `upto`, in version order (none for an unknown
    /// loop).
    pub fn positions_upto(&self, loop_id: &LoopId, upto: u64) -> Vec<u64> {
        let mut positions = self.loops.positions(loop_id.as_str());
        let durable = positions.partition_point(|&p| p <= upto);
        positions.truncate(durable);
        positions
    }

    /// How many loops there are.
    pub fn loop_count(&self) -> usize {
        self.loops.rows.len()
    }
}

/// Entries being added to an [`Index`] in bulk (see [`Index::bulk`]); their idempotency keys
/// join the index when this is dropped.
#[derive(Debug)]
pub struct Bulk<'i> {
    index: &'i mut Index,
    keys: Vec<(u32, u64)>,
}

impl Bulk<'_> {
    /// Records an entry; entries must arrive in position order.
    pub fn insert(
        &mut self,
        loop_id: &LoopId,
        source: &str,
        event_id: &str,
        position: u64,
        hash: Hash,
    ) {
        self.index.insert_without_key(loop_id, position, hash);
        self.keys
            .push((KeyDigest::of(source, event_id).0, position));
    }
}

impl Drop for Bulk<'_> {
    fn drop(&mut self) {
        self.index.keys.extend(&self.keys);
    }
}

/// A loop's head hash, as [`Index::head`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadHash {
    /// The hash itself.
    Known(Hash),
    /// The hash of the entry at this position (the loop's last), to be read from the log.
    OfEntry(u64),
}

/// Whether an index keeps each loop's head hash: 32 bytes a loop, 32 MiB at a million loops.
#[derive(Debug)]
enum HeadHashes {
    /// By loop slot.
    Kept(Vec<Hash>),
    /// Not kept: read from the loop's last entry when needed, unless that entry is recent.
    InLog(RecentHashes),
}

/// The hashes of the last [`LEN`](Self::LEN) entries, by position: a loop written to again
/// soon after (the next steps of a loop being worked, a burst from one publisher) chains on
/// without reading its last entry back from the log. 160 KiB, whatever the log's size.
#[derive(Debug)]
pub(crate) struct RecentHashes(Box<[(u64, Hash)]>);

impl RecentHashes {
    /// How many entries' hashes are kept.
    pub(crate) const LEN: usize = 4096;

    fn remember(&mut self, position: u64, hash: Hash) {
        self.0[Self::slot(position)] = (position, hash);
    }

    /// The hash of the entry at `position`, if it is one of the last [`LEN`](Self::LEN).
    fn get(&self, position: u64) -> Option<Hash> {
        let (at, hash) = self.0[Self::slot(position)];
        // Position 0 is no entry: an empty slot never matches.
        (at == position && position != 0).then_some(hash)
    }

    fn slot(position: u64) -> usize {
        // LEN is a power of two: the low bits are the slot.
        usize::try_from(position % Self::LEN as u64).expect("below LEN")
    }
}

impl Default for RecentHashes {
    fn default() -> Self {
        Self(vec![(0, Hash::ZERO); Self::LEN].into_boxed_slice())
    }
}

impl Default for HeadHashes {
    fn default() -> Self {
        Self::Kept(Vec::new())
    }
}

/// One loop: its head.
#[derive(Debug, Clone, Copy)]
struct LoopRow {
    /// The position of the loop's last entry.
    last: u64,
    /// The loop's version: how many entries it has.
    version: u64,
}

/// Every loop's head, and each entry's link to its loop's previous entry, so that a loop's
/// positions are found by walking back from its last one.
#[derive(Debug, Default)]
struct Loops {
    /// Loop ids in the order loops first appeared; a loop's slot is its row in `rows`.
    ids: LoopIds,
    rows: Vec<LoopRow>,
    /// Each loop's head hash, by slot, where they are kept.
    head_hashes: HeadHashes,
    /// By position - 1: how many positions back the same loop's previous entry is (0: none,
    /// or no entry at this position).
    back: ByEntry,
    /// The distances that do not fit `back` (a loop quiet for four billion entries), by
    /// position; `back` holds `u32::MAX` for them.
    far_back: HashMap<u64, u64>,
}

impl Loops {
    fn find(&self, id: &str) -> Option<&LoopRow> {
        self.ids.find(id).map(|slot| &self.rows[slot as usize])
    }

    fn insert(&mut self, id: &str, position: u64, hash: Hash) {
        let back = match self.ids.find(id) {
            Some(slot) => {
                let row = &mut self.rows[slot as usize];
                let back = position - row.last;
                row.last = position;
                row.version += 1;
                match &mut self.head_hashes {
                    HeadHashes::Kept(hashes) => hashes[slot as usize] = hash,
                    HeadHashes::InLog(recent) => recent.remember(position, hash),
                }
                back
            }
            None => {
                self.ids.push(id);
                self.rows.push(LoopRow {
                    last: position,
                    version: 1,
                });
                match &mut self.head_hashes {
                    HeadHashes::Kept(hashes) => hashes.push(hash),
                    HeadHashes::InLog(recent) => recent.remember(position, hash),
                }
                0
            }
        };
        let at = entry_at(position);
        // Positions missing from the log (a damaged entry) keep 0.
        let back = u32::try_from(back).unwrap_or_else(|_| {
            self.far_back.insert(position, back);
            u32::MAX
        });
        self.back.set(at, back);
    }

    /// A loop's positions in version order.
    fn positions(&self, id: &str) -> Vec<u64> {
        let Some(row) = self.find(id) else {
            return Vec::new();
        };
        let mut positions = Vec::with_capacity(usize::try_from(row.version).unwrap_or(0));
        let mut position = row.last;
        loop {
            positions.push(position);
            let back = match self.back.get(entry_at(position)) {
                u32::MAX => self.far_back.get(&position).copied().unwrap_or(0),
                back => u64::from(back),
            };
            if back == 0 || back >= position {
                break;
            }
            position -= back;
        }
        positions.reverse();
        positions
    }
}

/// Values per entry, grown a chunk at a time: never more than one chunk to spare, and growing
/// copies nothing (a `Vec` that doubles holds up to twice what it needs and copies it all).
#[derive(Debug, Default)]
struct ByEntry {
    chunks: Vec<Box<[u32]>>,
}

impl ByEntry {
    /// Values a chunk holds: 256 KiB.
    const CHUNK: usize = 1 << 16;

    /// Values `0..n` from `values`, in the chunks [`set`](Self::set) would have made.
    fn from_values(values: impl Iterator<Item = u32>) -> Self {
        let mut chunks = Vec::new();
        let mut chunk: Vec<u32> = Vec::with_capacity(Self::CHUNK);
        for value in values {
            chunk.push(value);
            if chunk.len() == Self::CHUNK {
                chunks.push(
                    std::mem::replace(&mut chunk, Vec::with_capacity(Self::CHUNK))
                        .into_boxed_slice(),
                );
            }
        }
        if !chunk.is_empty() {
            chunk.resize(Self::CHUNK, 0);
            chunks.push(chunk.into_boxed_slice());
        }
        Self { chunks }
    }

    /// The value at `i`; 0 where none was set.
    fn get(&self, i: usize) -> u32 {
        self.chunks
            .get(i / Self::CHUNK)
            .map_or(0, |chunk| chunk[i % Self::CHUNK])
    }

    fn set(&mut self, i: usize, value: u32) {
        while self.chunks.len() <= i / Self::CHUNK {
            self.chunks.push(vec![0; Self::CHUNK].into_boxed_slice());
        }
        self.chunks[i / Self::CHUNK][i % Self::CHUNK] = value;
    }
}

/// Where the entry at `position` (from 1) is in the per-entry vectors.
fn entry_at(position: u64) -> usize {
    usize::try_from(position.saturating_sub(1)).expect("positions fit in memory")
}

/// 32 bits of an idempotency key's SHA-256, as the index (and its file) keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(u32);

impl KeyDigest {
    /// The digest of the key (`source`, `event_id`).
    #[must_use]
    pub fn of(source: &str, event_id: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update((source.len() as u64).to_be_bytes());
        hasher.update(source.as_bytes());
        hasher.update(event_id.as_bytes());
        let digest = hasher.finalize();
        Self(u32::from_be_bytes(digest[..4].try_into().expect("4 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_entry_span_chunks_and_default_to_zero() {
        let mut values = ByEntry::default();
        values.set(3, 7);
        values.set(ByEntry::CHUNK + 5, 9);
        assert_eq!(values.get(3), 7);
        assert_eq!(values.get(ByEntry::CHUNK + 5), 9);
        assert_eq!(values.get(ByEntry::CHUNK + 4), 0);
        assert_eq!(values.get(10 * ByEntry::CHUNK), 0);
        assert_eq!(values.chunks.len(), 2);
    }

    #[test]
    fn a_loops_positions_come_back_in_version_order() {
        let mut index = Index::default();
        let a = LoopId::parse("loop-a").expect("valid id");
        let b = LoopId::parse("loop-b").expect("valid id");
        for (position, id) in [(1, &a), (2, &b), (3, &a), (5, &a), (6, &b)] {
            index.insert(
                id,
                "urn:x",
                &position.to_string(),
                position,
                Hash([u8::try_from(position).unwrap(); 32]),
            );
        }
        assert_eq!(index.positions_upto(&a, u64::MAX), vec![1, 3, 5]);
        assert_eq!(index.positions_upto(&a, 4), vec![1, 3]);
        assert_eq!(index.positions_upto(&b, u64::MAX), vec![2, 6]);
        assert_eq!(index.head(&a), (3, HeadHash::Known(Hash([5; 32]))));
        assert_eq!(
            index.head(&LoopId::parse("loop-c").expect("valid id")),
            (0, HeadHash::Known(Hash::ZERO))
        );
        assert_eq!(index.loop_count(), 2);
    }

    #[test]
    fn an_index_without_head_hashes_names_the_entry_that_has_it() {
        let mut index = Index::reading_head_hashes();
        let a = LoopId::parse("loop-a").expect("valid id");
        let b = LoopId::parse("loop-b").expect("valid id");
        for (position, id) in [(1, &a), (2, &b), (3, &a)] {
            index.insert(id, "urn:x", &position.to_string(), position, Hash([9; 32]));
        }
        assert_eq!(
            index.head(&a),
            (2, HeadHash::Known(Hash([9; 32]))),
            "a recent entry's hash is known"
        );
        // Entries of another loop push the first three out of the recent ones.
        let c = LoopId::parse("loop-c").expect("valid id");
        let recent = RecentHashes::LEN as u64;
        for position in 4..4 + recent {
            index.insert(&c, "urn:x", &position.to_string(), position, Hash([7; 32]));
        }
        assert_eq!(index.head(&a), (2, HeadHash::OfEntry(3)));
        assert_eq!(index.head(&b), (1, HeadHash::OfEntry(2)));
        assert_eq!(index.head(&c), (recent, HeadHash::Known(Hash([7; 32]))));
        assert_eq!(
            index.head(&LoopId::parse("loop-d").expect("valid id")),
            (0, HeadHash::Known(Hash::ZERO)),
            "a new loop chains onto zeros, with nothing to read"
        );
        assert_eq!(index.positions_upto(&a, u64::MAX), vec![1, 3]);
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

//! Loop ids kept compactly: once each, back to back, each known by a dense slot. Used by the
//! key stores' index, the event store's in-memory index and the read models, which all hold
//! every loop's id.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// Loop ids by slot, in one contiguous buffer, with a hash table from id to slot.
///
/// Storing ids once, back to back, costs the id's bytes plus 4; the table adds about 5 bytes
/// a loop. A `HashMap<String, u32>` would cost three times that.
#[derive(Default)]
pub struct LoopIds {
    bytes: String,
    ends: Ends,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

/// Where each id ends in the buffer, as 32 bits: the low half of the offset, and the slots at
/// which it passed another multiple of 4 GiB (none below 4 GiB of ids; ids are short, so an id
/// passes at most one).
#[derive(Default)]
struct Ends {
    low: Vec<u32>,
    /// Slots whose end is in a higher 4 GiB than the slot before's, in order.
    wraps: Vec<u32>,
}

impl Ends {
    fn len(&self) -> usize {
        self.low.len()
    }

    fn is_empty(&self) -> bool {
        self.low.is_empty()
    }

    fn get(&self, slot: usize) -> u64 {
        let high = match self.wraps.as_slice() {
            [] => 0,
            wraps => wraps.partition_point(|&wrap| wrap as usize <= slot) as u64,
        };
        (high << 32) | u64::from(self.low[slot])
    }

    fn push(&mut self, end: u64) {
        let slot = u32::try_from(self.low.len()).expect("fewer than 2^32 loops");
        let before = self
            .low
            .len()
            .checked_sub(1)
            .map_or(0, |last| self.get(last));
        assert!(
            end >= before && end - before < 1 << 32,
            "ids are added in order and are shorter than 4 GiB"
        );
        if end >> 32 != before >> 32 {
            self.wraps.push(slot);
        }
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the high half is in `wraps`"
        )]
        self.low.push(end as u32);
    }

    fn reserve(&mut self, ids: usize) {
        self.low.reserve(ids);
    }
}

impl std::fmt::Debug for LoopIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopIds")
            .field("len", &self.ends.len())
            .finish_non_exhaustive()
    }
}

impl LoopIds {
    /// The id in `slot`.
    ///
    /// # Panics
    /// When `slot` was never handed out.
    pub fn get(&self, slot: u32) -> &str {
        slot_str(&self.bytes, &self.ends, slot)
    }

    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The slot of `id`, if it was ever added.
    pub fn find(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table.find(hash, |&slot| self.get(slot) == id).copied()
    }

    /// Adds `id` and returns its slot, or `None` when it is there already: one probe of the
    /// table for both.
    pub fn push_new(&mut self, id: &str) -> Option<u32> {
        let (slot, added) = self.find_or_push(id);
        added.then_some(slot)
    }

    /// The slot of `id`, added when it is new (then `true`): one probe of the table.
    pub fn find_or_push(&mut self, id: &str) -> (u32, bool) {
        let slot = u32::try_from(self.ends.len()).expect("fewer than 2^32 loops");
        let hash = self.hasher.hash_one(id);
        let Self {
            bytes,
            ends,
            table,
            hasher,
        } = self;
        match table.entry(
            hash,
            |&other| slot_str(bytes, ends, other) == id,
            |&other| hasher.hash_one(slot_str(bytes, ends, other)),
        ) {
            hashbrown::hash_table::Entry::Occupied(found) => (*found.get(), false),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(slot);
                bytes.push_str(id);
                ends.push(bytes.len() as u64);
                (slot, true)
            }
        }
    }

    /// Adds a new id and returns its slot; the caller knows it is not there yet.
    pub fn push(&mut self, id: &str) -> u32 {
        let (slot, added) = self.find_or_push(id);
        debug_assert!(added, "loop id {id:?} was there already");
        slot
    }

    /// Makes room for `ids` more ids of `bytes` bytes in all, so that adding them moves
    /// nothing (growing the table rehashes every id, reading each one's bytes again).
    pub fn reserve(&mut self, ids: usize, bytes: usize) {
        self.bytes.reserve(bytes);
        self.ends.reserve(ids);
        let Self {
            bytes,
            ends,
            table,
            hasher,
        } = self;
        table.reserve(ids, |&other| hasher.hash_one(slot_str(bytes, ends, other)));
    }

    /// The ids in slot order, for snapshots.
    pub fn to_parts(&self) -> (String, Vec<u64>) {
        let ends = (0..self.ends.len())
            .map(|slot| self.ends.get(slot))
            .collect();
        (self.bytes.clone(), ends)
    }

    /// Restores ids written by [`to_parts`](Self::to_parts).
    ///
    /// # Errors
    /// A sentence saying what is wrong when the parts do not describe distinct ids.
    pub fn from_parts(bytes: &str, ends: &[u64]) -> Result<Self, String> {
        let mut ids = Self::default();
        ids.reserve(ends.len(), bytes.len());
        let mut start = 0_u64;
        for &end in ends {
            let id = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(s, e)| bytes.get(s..e))
                .ok_or("loop id offsets do not fit the id buffer")?;
            if ids.push_new(id).is_none() {
                return Err(format!("loop id {id:?} appears twice"));
            }
            start = end;
        }
        if start as usize != bytes.len() {
            return Err("the loop id buffer has trailing bytes".to_owned());
        }
        Ok(ids)
    }
}

fn slot_str<'a>(bytes: &'a str, ends: &Ends, slot: u32) -> &'a str {
    let slot = slot as usize;
    let start = if slot == 0 { 0 } else { ends.get(slot - 1) };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "offsets index an in-memory string, so they fit usize"
    )]
    &bytes[start as usize..ends.get(slot) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_ids_round_trip_and_are_found() {
        let mut ids = LoopIds::default();
        for i in 0..1000 {
            assert_eq!(ids.push(&format!("loop-{i}")), i);
        }
        assert_eq!(ids.find("loop-517"), Some(517));
        assert_eq!(ids.find("loop-1000"), None);
        assert_eq!(ids.get(3), "loop-3");
        let (bytes, ends) = ids.to_parts();
        let back = LoopIds::from_parts(&bytes, &ends).unwrap();
        assert_eq!(back.find("loop-999"), Some(999));
        assert!(LoopIds::from_parts("aa", &[1, 2]).is_err(), "duplicate ids");
    }

    #[test]
    fn ends_past_4_gib_keep_their_high_half() {
        let mut ends = Ends::default();
        let gib4 = 1_u64 << 32;
        for end in [
            5,
            gib4 - 1,
            gib4 + 3,
            gib4 + 9,
            2 * gib4,
            2 * gib4 + 7,
            3 * gib4,
        ] {
            ends.push(end);
        }
        let back: Vec<u64> = (0..ends.len()).map(|slot| ends.get(slot)).collect();
        assert_eq!(
            back,
            [
                5,
                gib4 - 1,
                gib4 + 3,
                gib4 + 9,
                2 * gib4,
                2 * gib4 + 7,
                3 * gib4
            ]
        );
        assert_eq!(ends.wraps, [2, 4, 6]);
    }
}

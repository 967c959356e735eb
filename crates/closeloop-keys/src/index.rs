//! The in-memory index both stores keep: each loop's live key and contact entries, whether it was
//! ever erased, and which loops each contact digest names.
//!
//! It holds an entry for every loop that ever had a key, so it is kept compact (a million loops
//! cost tens of MiB, not hundreds): loop ids once each in [`LoopIds`], where each live key is
//! kept in a vector by the loop's slot there (8 bytes for a file slot number or a key id, and a
//! bit saying there is one), the erased flags as bits, each contact digest once with a table of
//! numbers hashed by it, each loop's first contact (digest number, where it is kept) and each
//! digest's first loop in vectors, further ones in maps. A million loops with a contact each,
//! every contact different: 89 MiB (241 MiB with maps keyed by digest and by slot).

use std::collections::HashMap;

use hashbrown::HashTable;

use crate::{ContactDigest, LoopIds};

/// What the index knows of one loop. `R` is where a store keeps the thing (a slot, a key id).
#[derive(Debug)]
pub(crate) struct LoopEntry<R> {
    /// The loop's live key, if it has one.
    pub(crate) key: Option<R>,
    /// The loop's live contact digests, each with where it is kept.
    pub(crate) contacts: Vec<(ContactDigest, R)>,
    /// Whether `destroy_loop` ever ran for the loop.
    pub(crate) erased: bool,
}

/// Loops by id and contact digests to loops.
#[derive(Debug)]
pub(crate) struct LoopIndex<R> {
    ids: LoopIds,
    /// Each loop's live key, by its slot in `ids`, where `has_key` has the slot's bit.
    keys: Vec<R>,
    /// Whether the loop has a live key, a bit per slot.
    has_key: Vec<u64>,
    /// Whether `destroy_loop` ever ran for the loop, a bit per slot.
    erased: Vec<u64>,
    /// The live contact digests, each once, by number.
    digests: Digests,
    /// By digest number: the slot of one loop whose live contacts include it ([`NO_LOOP`]:
    /// none). Most digests name one loop.
    first_loop: Vec<u32>,
    /// By digest number: the slots of the other loops whose live contacts include it, in no
    /// order.
    more_loops: HashMap<u32, Vec<u32>>,
    /// Each loop's first live contact's digest number, by slot ([`NO_CONTACT`]: none): most
    /// loops have one or none.
    first_contact: Vec<u32>,
    /// Where each loop's first live contact is kept, by slot (meaningless without one).
    first_contact_at: Vec<R>,
    /// A loop's further live contacts, by slot.
    more_contacts: HashMap<u32, Vec<(u32, R)>>,
}

impl<R> Default for LoopIndex<R> {
    fn default() -> Self {
        LoopIndex {
            ids: LoopIds::default(),
            keys: Vec::new(),
            has_key: Vec::new(),
            erased: Vec::new(),
            digests: Digests::default(),
            first_loop: Vec::new(),
            more_loops: HashMap::new(),
            first_contact: Vec::new(),
            first_contact_at: Vec::new(),
            more_contacts: HashMap::new(),
        }
    }
}

impl<R: Copy + Default> LoopIndex<R> {
    /// Makes room for about `loops` more loops (an upper bound is fine: opening a key file
    /// reserves one a slot), so that loading them moves nothing.
    pub(crate) fn reserve(&mut self, loops: usize) {
        self.ids.reserve(loops, loops * 16);
        self.keys.reserve(loops);
        self.first_contact.reserve(loops);
        self.first_contact_at.reserve(loops);
    }

    /// Where the loop's live key is kept.
    pub(crate) fn live_key(&self, loop_id: &str) -> Option<R> {
        let slot = self.ids.find(loop_id)?;
        bit(&self.has_key, slot).then(|| self.keys[slot as usize])
    }

    /// Where the loop's entry for `digest` is kept, if it has one.
    pub(crate) fn contact(&self, loop_id: &str, digest: &ContactDigest) -> Option<R> {
        let slot = self.ids.find(loop_id)?;
        let number = self.digests.find(digest)?;
        self.contacts_of(slot)
            .find(|&(known, _)| known == number)
            .map(|(_, at)| at)
    }

    /// Records the loop's live key. The caller has checked it had none.
    pub(crate) fn set_key(&mut self, loop_id: &str, at: R) {
        let slot = self.slot(loop_id);
        self.keys[slot as usize] = at;
        set_bit(&mut self.has_key, slot, true);
    }

    /// Records a contact digest for the loop. The caller has checked it was not there.
    pub(crate) fn add_contact(&mut self, loop_id: &str, digest: ContactDigest, at: R) {
        let slot = self.slot(loop_id);
        let number = self.digests.find(&digest).unwrap_or_else(|| {
            self.first_loop.push(NO_LOOP);
            self.digests.add(digest)
        });
        if self.first_contact[slot as usize] == NO_CONTACT {
            self.first_contact[slot as usize] = number;
            self.first_contact_at[slot as usize] = at;
        } else {
            self.more_contacts
                .entry(slot)
                .or_default()
                .push((number, at));
        }
        let first = &mut self.first_loop[number as usize];
        if *first == NO_LOOP {
            *first = slot;
        } else {
            self.more_loops.entry(number).or_default().push(slot);
        }
    }

    /// Marks the loop erased (its tombstone).
    pub(crate) fn mark_erased(&mut self, loop_id: &str) {
        let slot = self.slot(loop_id);
        set_bit(&mut self.erased, slot, true);
    }

    /// Forgets the loop's live key and contacts, marks it erased and returns what it forgot, so
    /// the store can destroy them.
    pub(crate) fn destroy(&mut self, loop_id: &str) -> LoopEntry<R> {
        let slot = self.slot(loop_id);
        let numbered: Vec<(u32, R)> = self.contacts_of(slot).collect();
        self.first_contact[slot as usize] = NO_CONTACT;
        self.more_contacts.remove(&slot);
        let mut contacts = Vec::with_capacity(numbered.len());
        for (number, at) in numbered {
            contacts.push((self.digests.get(number), at));
            if !self.forget_loop_of(number, slot) {
                // No live contact has the digest any more: forget it, not only its loops.
                self.digests.remove(number);
            }
        }
        let key = bit(&self.has_key, slot).then(|| self.keys[slot as usize]);
        set_bit(&mut self.has_key, slot, false);
        let forgotten = LoopEntry {
            key,
            contacts,
            erased: bit(&self.erased, slot),
        };
        set_bit(&mut self.erased, slot, true);
        forgotten
    }

    /// Whether `destroy_loop` ever ran for the loop.
    pub(crate) fn is_erased(&self, loop_id: &str) -> bool {
        self.ids
            .find(loop_id)
            .is_some_and(|slot| bit(&self.erased, slot))
    }

    /// The loops whose live contacts include `digest`, in loop id order.
    pub(crate) fn loops_with(&self, digest: &ContactDigest) -> Vec<String> {
        let mut loops: Vec<String> = self
            .digests
            .find(digest)
            .map(|number| {
                let first = self.first_loop[number as usize];
                (first != NO_LOOP)
                    .then_some(first)
                    .into_iter()
                    .chain(self.more_loops.get(&number).into_iter().flatten().copied())
                    .map(|slot| self.ids.get(slot).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        loops.sort_unstable();
        loops
    }

    /// Takes `slot` off the loops that digest `number` names; says whether any are left.
    fn forget_loop_of(&mut self, number: u32, slot: u32) -> bool {
        let first = &mut self.first_loop[number as usize];
        let more = self.more_loops.get_mut(&number);
        if *first == slot {
            *first = match more {
                Some(more) => more.pop().unwrap_or(NO_LOOP),
                None => NO_LOOP,
            };
        } else if let Some(more) = more {
            more.retain(|&other| other != slot);
        }
        if self.more_loops.get(&number).is_some_and(Vec::is_empty) {
            self.more_loops.remove(&number);
        }
        self.first_loop[number as usize] != NO_LOOP
    }

    /// The loop's live contacts as (digest number, where kept).
    fn contacts_of(&self, slot: u32) -> impl Iterator<Item = (u32, R)> + '_ {
        let first = self.first_contact[slot as usize];
        (first != NO_CONTACT)
            .then(|| (first, self.first_contact_at[slot as usize]))
            .into_iter()
            .chain(self.more_contacts.get(&slot).into_iter().flatten().copied())
    }

    /// The loop's slot, adding the loop when it is new.
    fn slot(&mut self, loop_id: &str) -> u32 {
        let (slot, added) = self.ids.find_or_push(loop_id);
        if added {
            self.keys.push(R::default());
            self.first_contact.push(NO_CONTACT);
            self.first_contact_at.push(R::default());
            if self.erased.len() * 64 <= slot as usize {
                self.erased.push(0);
                self.has_key.push(0);
            }
        }
        slot
    }
}

/// In [`LoopIndex::first_contact`]: the loop has no live contact. [`Digests`] hands out
/// numbers below it.
const NO_CONTACT: u32 = u32::MAX;

/// In [`LoopIndex::first_loop`]: no loop's live contacts include the digest. Loop slots stay
/// below it (that many loops would not fit in memory).
const NO_LOOP: u32 = u32::MAX;

/// Contact digests, each once, by number (a number is never reused; a digest no live contact
/// has any more is zeroed), and a table from digest to number that holds only the numbers: 32
/// bytes and about 6 a digest, where a map keyed by digest took about 70 more.
#[derive(Debug, Default)]
struct Digests {
    by_number: Vec<ContactDigest>,
    numbers: HashTable<u32>,
}

impl Digests {
    /// A digest is an HMAC output, evenly spread: its first 8 bytes hash it.
    fn hash(digest: &ContactDigest) -> u64 {
        u64::from_le_bytes(digest.0[..8].try_into().expect("8 bytes"))
    }

    fn find(&self, digest: &ContactDigest) -> Option<u32> {
        self.numbers
            .find(Self::hash(digest), |&number| {
                self.by_number[number as usize] == *digest
            })
            .copied()
    }

    fn get(&self, number: u32) -> ContactDigest {
        self.by_number[number as usize]
    }

    /// Numbers a new digest; the caller has checked it is not there.
    fn add(&mut self, digest: ContactDigest) -> u32 {
        let number = u32::try_from(self.by_number.len())
            .ok()
            .filter(|&number| number != NO_CONTACT)
            .expect("fewer than 2^32 - 1 digests");
        self.by_number.push(digest);
        let by_number = &self.by_number;
        self.numbers
            .insert_unique(Self::hash(&digest), number, |&other| {
                Self::hash(&by_number[other as usize])
            });
        number
    }

    /// Forgets the digest numbered `number`.
    fn remove(&mut self, number: u32) {
        let digest = self.by_number[number as usize];
        if let Ok(entry) = self
            .numbers
            .find_entry(Self::hash(&digest), |&other| other == number)
        {
            entry.remove();
        }
        self.by_number[number as usize] = ContactDigest([0; 32]);
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }
}

/// Bit `slot` of `bits`.
fn bit(bits: &[u64], slot: u32) -> bool {
    bits[slot as usize / 64] & (1 << (slot % 64)) != 0
}

fn set_bit(bits: &mut [u64], slot: u32, on: bool) {
    let word = &mut bits[slot as usize / 64];
    if on {
        *word |= 1 << (slot % 64);
    } else {
        *word &= !(1 << (slot % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> ContactDigest {
        ContactDigest([byte; 32])
    }

    #[test]
    fn keys_contacts_and_erasure_are_kept_per_loop() {
        let mut index: LoopIndex<u64> = LoopIndex::default();
        for n in 0..200_u64 {
            index.set_key(&format!("loop-{n}"), n);
        }
        index.add_contact("loop-7", digest(1), 70);
        index.add_contact("loop-3", digest(1), 30);
        index.add_contact("loop-3", digest(2), 31);
        assert_eq!(index.live_key("loop-150"), Some(150));
        assert_eq!(index.live_key("loop-200"), None);
        assert_eq!(index.contact("loop-3", &digest(2)), Some(31));
        assert_eq!(index.contact("loop-7", &digest(2)), None);
        assert_eq!(index.loops_with(&digest(1)), ["loop-3", "loop-7"]);

        let forgotten = index.destroy("loop-3");
        assert_eq!(forgotten.key, Some(3));
        assert_eq!(forgotten.contacts.len(), 2);
        assert!(!forgotten.erased, "first erasure of the loop");
        assert!(index.is_erased("loop-3"));
        assert!(!index.is_erased("loop-7"));
        assert_eq!(index.live_key("loop-3"), None);
        assert_eq!(index.loops_with(&digest(1)), ["loop-7"]);
        assert!(index.loops_with(&digest(2)).is_empty());
        assert!(
            index.destroy("loop-3").erased,
            "second erasure sees the first"
        );

        // A digest no live contact had any more comes back as new; a loop's third contact.
        index.add_contact("loop-7", digest(2), 72);
        index.add_contact("loop-7", digest(3), 73);
        assert_eq!(index.loops_with(&digest(2)), ["loop-7"]);
        assert_eq!(index.contact("loop-7", &digest(3)), Some(73));
        let forgotten = index.destroy("loop-7");
        let mut numbers: Vec<u64> = forgotten.contacts.iter().map(|(_, at)| *at).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, [70, 72, 73]);
        assert!(index.loops_with(&digest(1)).is_empty());
        assert!(
            index.digests.is_empty() && index.more_loops.is_empty(),
            "no digest is kept once no contact has it"
        );

        // A loop never seen gets a tombstone, past the bits the first 200 loops used.
        index.mark_erased("never-keyed");
        assert!(index.is_erased("never-keyed"));
        assert_eq!(index.live_key("never-keyed"), None);
        assert!(!index.is_erased("unknown"));
    }

    #[test]
    fn loops_sharing_a_contact_match_a_plain_model_through_adds_and_erasures() {
        use std::collections::{BTreeMap, BTreeSet};

        let mut index: LoopIndex<u64> = LoopIndex::default();
        // Digest -> loops, as plain sets.
        let mut model: BTreeMap<u8, BTreeSet<String>> = BTreeMap::new();
        let mut state = 0x2545_f491_u64;
        let mut next = |below: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % below
        };
        for step in 0..4000_u64 {
            let loop_id = format!("loop-{}", next(60));
            let byte = u8::try_from(next(12)).expect("small");
            if next(4) == 0 {
                let forgotten = index.destroy(&loop_id);
                let mut had: Vec<u8> = forgotten.contacts.iter().map(|(d, _)| d.0[0]).collect();
                had.sort_unstable();
                let mut expected = Vec::new();
                for (&byte, loops) in &mut model {
                    if loops.remove(&loop_id) {
                        expected.push(byte);
                    }
                }
                assert_eq!(had, expected, "step {step}: {loop_id}'s contacts");
            } else if index.contact(&loop_id, &digest(byte)).is_none() {
                index.add_contact(&loop_id, digest(byte), step);
                model.entry(byte).or_default().insert(loop_id);
            }
            let byte = u8::try_from(next(12)).expect("small");
            let expected: Vec<String> = model
                .get(&byte)
                .map(|loops| loops.iter().cloned().collect())
                .unwrap_or_default();
            assert_eq!(index.loops_with(&digest(byte)), expected, "step {step}");
        }
        for loops in model.values_mut() {
            for loop_id in std::mem::take(loops) {
                index.destroy(&loop_id);
            }
        }
        assert!(index.digests.is_empty() && index.more_loops.is_empty());
    }
}

//! The in-memory index both stores keep: each loop's live key and contact entries, whether it was
//! ever erased, and which loops each contact digest names.
//!
//! It holds an entry for every loop that ever had a key, so it is kept compact (a million loops
//! cost tens of MiB, not hundreds): loop ids once each in [`LoopIds`], where each live key is
//! kept in a vector by the loop's slot there (8 bytes for a file slot number or a key id, and a
//! bit saying there is one), the erased flags as bits, each contact digest once, and each
//! loop's first contact as a digest number and where it is kept in vectors by slot (12 bytes;
//! a map by slot took about 36), further ones in a map by slot.

use std::collections::HashMap;

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
    /// The live contact digests, each once, by number (a number is never reused; a digest no
    /// live contact has any more is zeroed).
    digests: Vec<ContactDigest>,
    numbers: HashMap<ContactDigest, u32>,
    /// By digest number: the slots of the loops whose live contacts include it, in no order.
    loops_by_digest: Vec<Vec<u32>>,
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
            digests: Vec::new(),
            numbers: HashMap::new(),
            loops_by_digest: Vec::new(),
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
        let number = *self.numbers.get(digest)?;
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
        let number = match self.numbers.get(&digest) {
            Some(&number) => number,
            None => {
                let number = u32::try_from(self.digests.len())
                    .ok()
                    .filter(|&number| number != NO_CONTACT)
                    .expect("fewer than 2^32 - 1 digests");
                self.digests.push(digest);
                self.loops_by_digest.push(Vec::new());
                self.numbers.insert(digest, number);
                number
            }
        };
        if self.first_contact[slot as usize] == NO_CONTACT {
            self.first_contact[slot as usize] = number;
            self.first_contact_at[slot as usize] = at;
        } else {
            self.more_contacts
                .entry(slot)
                .or_default()
                .push((number, at));
        }
        self.loops_by_digest[number as usize].push(slot);
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
            let digest = self.digests[number as usize];
            contacts.push((digest, at));
            let loops = &mut self.loops_by_digest[number as usize];
            loops.retain(|&other| other != slot);
            if loops.is_empty() {
                // No live contact has the digest any more: forget it, not only its loops.
                *loops = Vec::new();
                self.numbers.remove(&digest);
                self.digests[number as usize] = ContactDigest([0; 32]);
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
            .numbers
            .get(digest)
            .map(|&number| {
                self.loops_by_digest[number as usize]
                    .iter()
                    .map(|&slot| self.ids.get(slot).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        loops.sort_unstable();
        loops
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

/// In [`LoopIndex::first_contact`]: the loop has no live contact.
const NO_CONTACT: u32 = u32::MAX;

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
            index.numbers.is_empty(),
            "no digest is kept once no contact has it"
        );

        // A loop never seen gets a tombstone, past the bits the first 200 loops used.
        index.mark_erased("never-keyed");
        assert!(index.is_erased("never-keyed"));
        assert_eq!(index.live_key("never-keyed"), None);
        assert!(!index.is_erased("unknown"));
    }
}

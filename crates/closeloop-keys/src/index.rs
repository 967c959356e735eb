//! The in-memory index both stores keep: each loop's live key and contact entries, whether it was
//! ever erased, and which loops each contact digest names.

use std::collections::{BTreeSet, HashMap};

use crate::ContactDigest;

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

impl<R> Default for LoopEntry<R> {
    fn default() -> Self {
        LoopEntry {
            key: None,
            contacts: Vec::new(),
            erased: false,
        }
    }
}

/// Loops by id and contact digests to loops.
#[derive(Debug)]
pub(crate) struct LoopIndex<R> {
    loops: HashMap<String, LoopEntry<R>>,
    by_digest: HashMap<ContactDigest, BTreeSet<String>>,
}

impl<R> Default for LoopIndex<R> {
    fn default() -> Self {
        LoopIndex {
            loops: HashMap::new(),
            by_digest: HashMap::new(),
        }
    }
}

impl<R: Copy> LoopIndex<R> {
    /// Where the loop's live key is kept.
    pub(crate) fn live_key(&self, loop_id: &str) -> Option<R> {
        self.loops.get(loop_id).and_then(|entry| entry.key)
    }

    /// Where the loop's entry for `digest` is kept, if it has one.
    pub(crate) fn contact(&self, loop_id: &str, digest: &ContactDigest) -> Option<R> {
        let entry = self.loops.get(loop_id)?;
        entry
            .contacts
            .iter()
            .find(|(known, _)| known == digest)
            .map(|(_, at)| *at)
    }

    /// Records the loop's live key. The caller has checked it had none.
    pub(crate) fn set_key(&mut self, loop_id: &str, at: R) {
        self.entry(loop_id).key = Some(at);
    }

    /// Records a contact digest for the loop. The caller has checked it was not there.
    pub(crate) fn add_contact(&mut self, loop_id: &str, digest: ContactDigest, at: R) {
        self.entry(loop_id).contacts.push((digest, at));
        self.by_digest
            .entry(digest)
            .or_default()
            .insert(loop_id.to_owned());
    }

    /// Marks the loop erased (its tombstone).
    pub(crate) fn mark_erased(&mut self, loop_id: &str) {
        self.entry(loop_id).erased = true;
    }

    /// Forgets the loop's live key and contacts, marks it erased and returns what it forgot, so
    /// the store can destroy them.
    pub(crate) fn destroy(&mut self, loop_id: &str) -> LoopEntry<R> {
        let entry = self.entry(loop_id);
        let forgotten = LoopEntry {
            key: entry.key.take(),
            contacts: std::mem::take(&mut entry.contacts),
            erased: entry.erased,
        };
        entry.erased = true;
        for (digest, _) in &forgotten.contacts {
            if let Some(loops) = self.by_digest.get_mut(digest) {
                loops.remove(loop_id);
                if loops.is_empty() {
                    self.by_digest.remove(digest);
                }
            }
        }
        forgotten
    }

    /// Whether `destroy_loop` ever ran for the loop.
    pub(crate) fn is_erased(&self, loop_id: &str) -> bool {
        self.loops.get(loop_id).is_some_and(|entry| entry.erased)
    }

    /// The loops whose live contacts include `digest`, in loop id order.
    pub(crate) fn loops_with(&self, digest: &ContactDigest) -> Vec<String> {
        self.by_digest
            .get(digest)
            .map(|loops| loops.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn entry(&mut self, loop_id: &str) -> &mut LoopEntry<R> {
        // Look up before inserting so the common case allocates no key string.
        if !self.loops.contains_key(loop_id) {
            self.loops.insert(loop_id.to_owned(), LoopEntry::default());
        }
        self.loops.get_mut(loop_id).expect("inserted above")
    }
}

//! Compact storage for the values many loops share: names, lists of names and rating sets
//! (loop ids are kept compactly by [`closeloop_store::LoopIds`]).
//!
//! A million loops name a few hundred org units, themes and tags, so each loop stores `u32`
//! ids and the text lives here once. Ids are dense and handed out in first-seen order, so a
//! snapshot that stores the tables in id order restores the very same ids.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

/// Names (org unit paths, themes, tags, rating names, change descriptions) by dense id.
///
/// Each name is kept once: the table from name to id holds ids and finds names through them.
#[derive(Default)]
pub(crate) struct Names {
    names: Vec<Box<str>>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("len", &self.names.len())
            .finish_non_exhaustive()
    }
}

impl Names {
    /// The id of `name`, interning it when new.
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.get(name) {
            return id;
        }
        let id = next_id(self.names.len());
        self.names.push(name.into());
        let Self {
            names,
            table,
            hasher,
        } = self;
        table.insert_unique(hasher.hash_one(name), id, |&other| {
            hasher.hash_one(&*names[other as usize])
        });
        id
    }

    /// The id of `name`, if it was ever interned.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.table
            .find(self.hasher.hash_one(name), |&id| {
                &*self.names[id as usize] == name
            })
            .copied()
    }

    /// The name with this id.
    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// How many names there are; ids run from 0 to `len() - 1`.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// The names in id order, for snapshots.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.names.iter().map(ToString::to_string).collect()
    }

    /// Restores a table written by [`to_vec`](Self::to_vec).
    pub(crate) fn from_vec(names: Vec<String>) -> Result<Self, String> {
        let mut table = Self::default();
        for name in names {
            let expected = next_id(table.len());
            if table.intern(&name) != expected {
                return Err(format!("name {name:?} appears twice"));
            }
        }
        Ok(table)
    }
}

/// Ordered lists of name ids (a loop's themes or tags), by dense id; id 0 is the empty list.
#[derive(Debug)]
pub(crate) struct Lists {
    lists: Vec<Box<[u32]>>,
    /// Each list without repeats, in first-seen order: what counts and groups use. Kept back
    /// to back in one buffer (list `i` is `distinct[distinct_ends[i - 1]..distinct_ends[i]]`)
    /// because stats scans read it for every loop.
    distinct: Vec<u32>,
    distinct_ends: Vec<u32>,
    ids: HashMap<Box<[u32]>, u32>,
}

impl Default for Lists {
    fn default() -> Self {
        let mut lists = Self {
            lists: Vec::new(),
            distinct: Vec::new(),
            distinct_ends: Vec::new(),
            ids: HashMap::new(),
        };
        lists.intern(&[]);
        lists
    }
}

impl Lists {
    /// The id of `items`, interning the list when new.
    pub(crate) fn intern(&mut self, items: &[u32]) -> u32 {
        if let Some(&id) = self.ids.get(items) {
            return id;
        }
        let id = next_id(self.lists.len());
        let start = self.distinct.len();
        for &item in items {
            if !self.distinct[start..].contains(&item) {
                self.distinct.push(item);
            }
        }
        self.distinct_ends
            .push(u32::try_from(self.distinct.len()).expect("fewer than 2^32 list items"));
        self.lists.push(items.into());
        self.ids.insert(items.into(), id);
        id
    }

    /// The list with this id, as given.
    pub(crate) fn items(&self, id: u32) -> &[u32] {
        &self.lists[id as usize]
    }

    /// The list with this id, each name once.
    pub(crate) fn distinct(&self, id: u32) -> &[u32] {
        let id = id as usize;
        let start = if id == 0 {
            0
        } else {
            self.distinct_ends[id - 1]
        };
        &self.distinct[start as usize..self.distinct_ends[id] as usize]
    }

    /// How many lists there are.
    pub(crate) fn len(&self) -> usize {
        self.lists.len()
    }

    /// The lists in id order, for snapshots.
    pub(crate) fn to_vec(&self) -> Vec<Vec<u32>> {
        self.lists.iter().map(|l| l.to_vec()).collect()
    }

    /// Restores a table written by [`to_vec`](Self::to_vec).
    pub(crate) fn from_vec(lists: Vec<Vec<u32>>) -> Result<Self, String> {
        let mut table = Self {
            lists: Vec::new(),
            distinct: Vec::new(),
            distinct_ends: Vec::new(),
            ids: HashMap::new(),
        };
        for list in lists {
            let expected = next_id(table.len());
            if table.intern(&list) != expected {
                return Err("a list of names appears twice".to_owned());
            }
        }
        if table.len() == 0 || !table.items(0).is_empty() {
            return Err("list 0 must be the empty list".to_owned());
        }
        Ok(table)
    }
}

/// A rating's value exactly as JSON carried it: `serde_json::Number` is one of these three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum RatingValue {
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Signed(i64),
    /// Any other number, as its IEEE 754 bits (so that it can be hashed).
    Float(u64),
}

impl RatingValue {
    pub(crate) fn from_number(number: &serde_json::Number) -> Self {
        if let Some(u) = number.as_u64() {
            RatingValue::Unsigned(u)
        } else if let Some(i) = number.as_i64() {
            RatingValue::Signed(i)
        } else {
            RatingValue::Float(number.as_f64().unwrap_or(0.0).to_bits())
        }
    }

    pub(crate) fn to_number(self) -> serde_json::Number {
        match self {
            RatingValue::Unsigned(u) => u.into(),
            RatingValue::Signed(i) => i.into(),
            // A float that came in as JSON is finite, so this never falls back.
            RatingValue::Float(bits) => {
                serde_json::Number::from_f64(f64::from_bits(bits)).unwrap_or_else(|| 0.into())
            }
        }
    }

    /// The value as a float, for means.
    #[allow(clippy::cast_precision_loss, reason = "ratings are small numbers")]
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            RatingValue::Unsigned(u) => u as f64,
            RatingValue::Signed(i) => i as f64,
            RatingValue::Float(bits) => f64::from_bits(bits),
        }
    }
}

/// One loop's ratings: (rating name id, value), sorted by name.
pub(crate) type RatingSet = Box<[(u32, RatingValue)]>;

/// Rating sets by dense id; id 0 is "no ratings". Most loops carry one FFT answer, so a
/// handful of sets covers them all.
#[derive(Debug)]
pub(crate) struct RatingSets {
    sets: Vec<RatingSet>,
    ids: HashMap<RatingSet, u32>,
}

impl Default for RatingSets {
    fn default() -> Self {
        let mut sets = Self {
            sets: Vec::new(),
            ids: HashMap::new(),
        };
        sets.intern(Box::default());
        sets
    }
}

impl RatingSets {
    pub(crate) fn intern(&mut self, set: RatingSet) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = next_id(self.sets.len());
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        id
    }

    pub(crate) fn get(&self, id: u32) -> &[(u32, RatingValue)] {
        &self.sets[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.sets.len()
    }

    pub(crate) fn to_vec(&self) -> Vec<Vec<(u32, RatingValue)>> {
        self.sets.iter().map(|s| s.to_vec()).collect()
    }

    pub(crate) fn from_vec(sets: Vec<Vec<(u32, RatingValue)>>) -> Result<Self, String> {
        let mut table = Self {
            sets: Vec::new(),
            ids: HashMap::new(),
        };
        for set in sets {
            let expected = next_id(table.len());
            if table.intern(set.into()) != expected {
                return Err("a rating set appears twice".to_owned());
            }
        }
        if table.len() == 0 || !table.get(0).is_empty() {
            return Err("rating set 0 must be empty".to_owned());
        }
        Ok(table)
    }
}

/// The next dense id for a table holding `len` entries.
///
/// # Panics
/// Past 4,294,967,295 entries, far beyond what one process holds in memory.
fn next_id(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 2^32 interned values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_order_and_know_their_distinct_items() {
        let mut lists = Lists::default();
        assert_eq!(lists.intern(&[]), 0);
        let id = lists.intern(&[3, 1, 3]);
        assert_eq!(lists.items(id), &[3, 1, 3]);
        assert_eq!(lists.distinct(id), &[3, 1]);
        assert_eq!(lists.intern(&[3, 1, 3]), id);
        assert_ne!(lists.intern(&[1, 3]), id);
    }

    #[test]
    fn rating_values_keep_their_json_form() {
        for raw in ["2", "-3", "4.5"] {
            let number: serde_json::Number = raw.parse().unwrap();
            assert_eq!(RatingValue::from_number(&number).to_number(), number);
        }
    }
}

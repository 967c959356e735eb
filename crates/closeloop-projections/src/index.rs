//! Secondary indexes over loop slots: one bitmap per filter value, and the `received_at` order.
//!
//! Every filter of `GET /v1/loops` except `overdue` is a [`RoaringBitmap`] of slots: status,
//! stage, channel, every org unit *prefix* (a loop in `rxx/site-a/ward-7` is in the bitmaps of
//! `rxx`, `rxx/site-a` and `rxx/site-a/ward-7`), theme and seldom-heard tag. A query
//! intersects the bitmaps it names; the cardinality of the result is its `total`.
//!
//! [`Order`] keeps slots in (`received_at`, `loop_id`) order as a B-tree of *buckets*: each
//! bucket is a bitmap of at most [`MAX_BUCKET`] slots whose keys fall in its key range. A page
//! walks buckets from the cursor, intersects each with the query's bitmap and sorts the few
//! hits, so its cost depends on the page and the number of buckets, never on the number of
//! loops that come before the cursor. A bucket costs a couple of bytes per loop; a B-tree
//! entry per loop would cost thirty.

use std::collections::BTreeMap;

use roaring::RoaringBitmap;

use crate::record::Ts;

/// The most slots one bucket of [`Order`] holds before it is split in two.
pub(crate) const MAX_BUCKET: u64 = 4096;

/// A position in the list order: `received_at`, then `loop_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OrderKey {
    pub(crate) at: Ts,
    pub(crate) id: Box<str>,
}

impl OrderKey {
    pub(crate) fn new(at: Ts, id: &str) -> Self {
        Self { at, id: id.into() }
    }
}

/// Slots in the order of their keys `K` — (`received_at`, `loop_id`) for the loop list — as
/// buckets keyed by their lowest possible key.
///
/// Invariant: every slot of the bucket under key `k` has a key `>= k` and `<` the key of the
/// next bucket. Keys are unique: no two slots share one.
#[derive(Debug)]
pub(crate) struct Order<K = OrderKey> {
    buckets: BTreeMap<K, RoaringBitmap>,
}

impl<K> Default for Order<K> {
    fn default() -> Self {
        Self {
            buckets: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Order<K> {
    /// Adds `slot` with key `key`. `key_of` gives the key of any slot already in the index,
    /// for when a bucket must be split.
    pub(crate) fn insert(&mut self, slot: u32, key: K, key_of: impl Fn(u32) -> K) {
        let start = match self.buckets.range(..=&key).next_back() {
            Some((start, _)) => start.clone(),
            None => match self.buckets.pop_first() {
                // Below every bucket: the first bucket's range grows down to this key.
                Some((_, bucket)) => {
                    self.buckets.insert(key.clone(), bucket);
                    key
                }
                None => {
                    self.buckets.insert(key.clone(), RoaringBitmap::new());
                    key
                }
            },
        };
        let bucket = self.buckets.get_mut(&start).expect("bucket was just found");
        bucket.insert(slot);
        if bucket.len() > MAX_BUCKET {
            let mut slots: Vec<u32> = bucket.iter().collect();
            // Each key made once: a key may own text (a loop id).
            slots.sort_by_cached_key(|&slot| key_of(slot));
            let upper = slots.split_off(slots.len() / 2);
            *bucket = slots.into_iter().collect();
            self.buckets
                .insert(key_of(upper[0]), upper.into_iter().collect());
        }
    }

    /// Removes `slot`, whose key is `key`.
    pub(crate) fn remove(&mut self, slot: u32, key: &K) {
        let start = self
            .buckets
            .range(..=key)
            .next_back()
            .map(|(start, _)| start.clone());
        if let Some(start) = start
            && let Some(bucket) = self.buckets.get_mut(&start)
        {
            bucket.remove(slot);
            if bucket.is_empty() && self.buckets.len() > 1 {
                self.buckets.remove(&start);
            }
        }
    }

    /// The buckets that may hold keys after `cursor` (all of them without one), in order.
    pub(crate) fn buckets_from(&self, cursor: Option<&K>) -> impl Iterator<Item = &RoaringBitmap> {
        self.entries_from(cursor).map(|(_, bucket)| bucket)
    }

    /// Like [`buckets_from`](Self::buckets_from), with each bucket's lowest possible key.
    pub(crate) fn entries_from(
        &self,
        cursor: Option<&K>,
    ) -> impl Iterator<Item = (&K, &RoaringBitmap)> {
        let start = cursor.and_then(|c| self.buckets.range(..=c).next_back().map(|(k, _)| k));
        match start {
            Some(start) => self.buckets.range(start..),
            None => self.buckets.range(..),
        }
    }

    /// How many buckets there are.
    #[cfg(test)]
    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Builds the index from slots already sorted by key.
    pub(crate) fn from_sorted(sorted: &[u32], key_of: impl Fn(u32) -> K) -> Self {
        let mut buckets = BTreeMap::new();
        // Fill buckets three quarters full so that new loops do not split them at once.
        let per_bucket = usize::try_from(MAX_BUCKET * 3 / 4).unwrap_or(1);
        for chunk in sorted.chunks(per_bucket) {
            buckets.insert(key_of(chunk[0]), chunk.iter().copied().collect());
        }
        Self { buckets }
    }
}

/// The bitmaps of every filter value.
#[derive(Debug, Default)]
pub(crate) struct Bitmaps {
    /// `[open, closed]`.
    pub(crate) status: [RoaringBitmap; 2],
    /// By index in `Stage::ALL`.
    pub(crate) stage: [RoaringBitmap; 6],
    /// By index in `Channel::ALL`.
    pub(crate) channel: [RoaringBitmap; 10],
    /// By id in the org names table: every prefix of every loop's org unit.
    pub(crate) org: Vec<RoaringBitmap>,
    /// By id in the theme names table.
    pub(crate) theme: Vec<RoaringBitmap>,
    /// By id in the tag names table.
    pub(crate) tag: Vec<RoaringBitmap>,
}

/// The slots of each filter value, gathered in increasing order and appended to [`Bitmaps`]
/// a batch at a time ([`append_to`](Self::append_to)): far cheaper than a bit at a time, and
/// the lists stay small when batches are.
#[derive(Default)]
pub(crate) struct SlotLists {
    pub(crate) status: [Vec<u32>; 2],
    pub(crate) stage: [Vec<u32>; 6],
    pub(crate) channel: [Vec<u32>; 10],
    pub(crate) org: Vec<Vec<u32>>,
    pub(crate) theme: Vec<Vec<u32>>,
    pub(crate) tag: Vec<Vec<u32>>,
}

impl SlotLists {
    /// Appends the gathered slots to `bitmaps` and empties the lists (keeping their memory).
    ///
    /// # Panics
    /// When a list's slots are not in increasing order, or not after those of its bitmap.
    pub(crate) fn append_to(&mut self, bitmaps: &mut Bitmaps) {
        fn append(bitmap: &mut RoaringBitmap, slots: &mut Vec<u32>) {
            bitmap
                .append(slots.drain(..))
                .expect("slots gathered in increasing order");
        }
        fn each(bitmaps: &mut [RoaringBitmap], lists: &mut [Vec<u32>]) {
            for (bitmap, slots) in bitmaps.iter_mut().zip(lists) {
                append(bitmap, slots);
            }
        }
        fn family(bitmaps: &mut Vec<RoaringBitmap>, lists: &mut [Vec<u32>]) {
            if bitmaps.len() < lists.len() {
                bitmaps.resize_with(lists.len(), RoaringBitmap::new);
            }
            each(bitmaps, lists);
        }
        each(&mut bitmaps.status, &mut self.status);
        each(&mut bitmaps.stage, &mut self.stage);
        each(&mut bitmaps.channel, &mut self.channel);
        family(&mut bitmaps.org, &mut self.org);
        family(&mut bitmaps.theme, &mut self.theme);
        family(&mut bitmaps.tag, &mut self.tag);
    }
}

/// The list for `id` in a per-name family of [`SlotLists`], created empty when new.
pub(crate) fn list_mut(family: &mut Vec<Vec<u32>>, id: u32) -> &mut Vec<u32> {
    let id = id as usize;
    if family.len() <= id {
        family.resize_with(id + 1, Vec::new);
    }
    &mut family[id]
}

/// The bitmap for `id` in a per-name family, created empty when new.
pub(crate) fn bitmap_mut(family: &mut Vec<RoaringBitmap>, id: u32) -> &mut RoaringBitmap {
    let id = id as usize;
    if family.len() <= id {
        family.resize_with(id + 1, RoaringBitmap::new);
    }
    &mut family[id]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Ts {
        Ts { secs, nanos: 0 }
    }

    #[test]
    fn buckets_split_and_keep_their_order_invariant() {
        // Keys arrive out of order; ids break ties among equal times.
        let n: u32 = 20_000;
        let keys: Vec<(Ts, String)> = (0..n)
            .map(|i| (ts(i64::from((i * 7919) % 5000)), format!("id-{i:05}")))
            .collect();
        let key_of = |slot: u32| OrderKey::new(keys[slot as usize].0, &keys[slot as usize].1);
        let mut order = Order::default();
        for slot in 0..n {
            order.insert(slot, key_of(slot), key_of);
        }
        assert!(order.bucket_count() >= usize::try_from(u64::from(n) / MAX_BUCKET).unwrap());
        let mut walked = Vec::new();
        for bucket in order.buckets_from(None) {
            assert!(bucket.len() <= MAX_BUCKET);
            let mut slots: Vec<u32> = bucket.iter().collect();
            slots.sort_by_key(|&s| key_of(s));
            walked.extend(slots);
        }
        let mut expected: Vec<u32> = (0..n).collect();
        expected.sort_by_key(|&s| key_of(s));
        assert_eq!(walked, expected);

        // Starting from a cursor skips whole buckets before it.
        let cursor = OrderKey::new(ts(4000), "id-00000");
        assert!(order.buckets_from(Some(&cursor)).count() < order.bucket_count() / 2 + 2);
    }
}

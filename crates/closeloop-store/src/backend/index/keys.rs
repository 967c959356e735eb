//! Which entries may hold an idempotency key: 32 bits of each key's digest, sorted.

use std::collections::HashMap;

/// Every idempotency key, as 32 bits of its digest and the entry that holds it, in 65,536
/// buckets by the digest's high 16 bits. A bucket keeps the low 16 bits and the entry of each
/// of its keys, ordered by (low bits, entry): 6 bytes a key (at most an eighth more as buckets
/// grow, and 3 MiB of buckets), where a digest per entry and a hash table of entries took
/// 12 to 13 (62 MB at 4.9 million entries, now 33). The price is time: at 4.9 million keys a
/// lookup binary-searches a bucket of about 75 (about 0.8 µs, where the table took 0.25) and
/// an insert shifts half of one (0.4 µs, was 0.2), small beside an append's fsync.
///
/// A hit is only a candidate (two keys in a few billion share 32 bits): callers confirm it
/// against the entry's header, so a collision can never misreport a duplicate, and keys whose
/// digests collide all stay findable.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// By the digest's high 16 bits; empty until the first key.
    buckets: Vec<Bucket>,
    /// Positions past `u32::MAX + 1`, which a bucket cannot hold, by digest.
    far: HashMap<u32, Vec<u64>>,
}

/// The keys whose digests share their high 16 bits, ordered by (`low`, `at`).
#[derive(Debug, Default, Clone)]
struct Bucket(Vec<Key>);

/// One key of a bucket: 6 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(2))]
struct Key {
    /// The digest's low 16 bits.
    low: u16,
    /// Position - 1 of the entry.
    at: u32,
}

/// How many buckets there are: one for each value of a digest's high 16 bits.
const BUCKETS: usize = 1 << 16;

fn split(digest: u32) -> (usize, u16) {
    let low = u16::try_from(digest & 0xFFFF).expect("16 bits");
    ((digest >> 16) as usize, low)
}

impl Bucket {
    /// Where the keys with these low bits are.
    fn range(&self, low: u16) -> std::ops::Range<usize> {
        let start = self.0.partition_point(|key| key.low < low);
        let end = start + self.0[start..].partition_point(|key| key.low == low);
        start..end
    }

    fn insert(&mut self, low: u16, at: u32) {
        // Keys mostly arrive in entry order: the place is after every (low, at') with at' < at.
        let i = self.0.partition_point(|key| (key.low, key.at) < (low, at));
        if self.0.len() == self.0.capacity() {
            // Grow by an eighth, not double: most buckets stop growing at some point.
            self.0.reserve_exact((self.0.len() / 8).max(4));
        }
        self.0.insert(i, Key { low, at });
    }
}

/// Where a bucket keeps the key of the entry at `position` (position - 1); `None` past
/// `u32::MAX + 1`, whose keys are kept in `far`.
fn bucket_at(position: u64) -> Option<u32> {
    u32::try_from(position.saturating_sub(1)).ok()
}

impl Keys {
    pub(super) fn insert(&mut self, digest: u32, position: u64) {
        match bucket_at(position) {
            Some(at) => {
                if self.buckets.is_empty() {
                    self.buckets = vec![Bucket::default(); BUCKETS];
                }
                let (bucket, low) = split(digest);
                self.buckets[bucket].insert(low, at);
            }
            None => self.far.entry(digest).or_default().push(position),
        }
    }

    /// The positions whose keys have this digest, oldest first.
    pub(super) fn candidates(&self, digest: u32) -> Vec<u64> {
        let (bucket, low) = split(digest);
        let mut positions: Vec<u64> = self.buckets.get(bucket).map_or_else(Vec::new, |bucket| {
            bucket.0[bucket.range(low)]
                .iter()
                .map(|key| u64::from(key.at) + 1)
                .collect()
        });
        if let Some(far) = self.far.get(&digest) {
            positions.extend_from_slice(far);
        }
        positions
    }

    /// The digest of the key at each position `1..=entries` (0 where none is known), for
    /// the index file.
    pub(super) fn digests_by_entry(&self, entries: usize) -> Vec<u32> {
        let mut digests = vec![0; entries];
        for (high, bucket) in self.buckets.iter().enumerate() {
            let high = u32::try_from(high).expect("16 bits") << 16;
            for key in &bucket.0 {
                if let Some(digest) = digests.get_mut(key.at as usize) {
                    *digest = high | u32::from(key.low);
                }
            }
        }
        digests
    }

    /// The far keys (past `u32::MAX + 1`), for the index file.
    pub(super) fn far(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.far
            .iter()
            .flat_map(|(&digest, positions)| positions.iter().map(move |&p| (digest, p)))
    }

    /// Adds `keys` (digest, position) at once, sorting each bucket they reach once instead of
    /// placing each key: opening a store adds millions (4.9 million in about a tenth of the
    /// time the one-by-one inserts take).
    pub(super) fn extend(&mut self, keys: &[(u32, u64)]) {
        // Counting by bucket walks all 65,536 of them: a few keys go in one by one.
        if keys.len() < BUCKETS / 16 {
            keys.iter()
                .for_each(|&(digest, position)| self.insert(digest, position));
            return;
        }
        for &(digest, position) in keys {
            if bucket_at(position).is_none() {
                self.far.entry(digest).or_default().push(position);
            }
        }
        self.add_sorted(
            keys.iter()
                .filter_map(|&(digest, position)| Some((digest, bucket_at(position)?))),
        );
    }

    /// The keys of an index file: `digests` by position - 1 (every one counts, as it did when
    /// the file was written), `far` past `u32::MAX + 1`. Each bucket is sized to fit.
    pub(super) fn from_parts(digests: &[u32], far: HashMap<u32, Vec<u64>>) -> Self {
        let in_buckets = &digests[..digests.len().min(1 << 32)];
        let mut keys = Self {
            buckets: Vec::new(),
            far,
        };
        keys.add_sorted(
            in_buckets
                .iter()
                .enumerate()
                .map(|(at, &digest)| (digest, u32::try_from(at).expect("at most 2^32 digests"))),
        );
        keys
    }

    /// Adds (digest, position - 1) pairs: counts them by bucket, grows each bucket they reach
    /// once to fit, then sorts those buckets.
    fn add_sorted(&mut self, keys: impl Iterator<Item = (u32, u32)> + Clone) {
        let mut counts = vec![0_usize; BUCKETS];
        for (digest, _) in keys.clone() {
            counts[split(digest).0] += 1;
        }
        if counts.iter().all(|&n| n == 0) {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![Bucket::default(); BUCKETS];
        }
        for (bucket, &n) in self.buckets.iter_mut().zip(&counts) {
            bucket.0.reserve_exact(n);
        }
        for (digest, at) in keys {
            let (bucket, low) = split(digest);
            self.buckets[bucket].0.push(Key { low, at });
        }
        for (bucket, &n) in self.buckets.iter_mut().zip(&counts) {
            if n > 0 {
                bucket.0.sort_unstable_by_key(|key| (key.low, key.at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_whose_digests_collide_all_stay_findable_oldest_first() {
        let mut keys = Keys::default();
        keys.insert(7, 42);
        keys.insert(7, 10);
        keys.insert(7, 99);
        keys.insert(8, 11);
        keys.insert(0x0001_0007, 12);
        keys.insert(7, u64::from(u32::MAX) + 7);
        assert_eq!(
            keys.candidates(7),
            vec![10, 42, 99, u64::from(u32::MAX) + 7]
        );
        assert_eq!(keys.candidates(8), vec![11]);
        assert_eq!(keys.candidates(0x0001_0007), vec![12]);
        assert_eq!(keys.candidates(9), Vec::<u64>::new());
        assert_eq!(Keys::default().candidates(7), Vec::<u64>::new());
    }

    #[test]
    fn many_keys_at_once_are_found_as_if_inserted_one_by_one() {
        let digest = |i: u64| u32::try_from((i * 0x9E37_79B9) % (1 << 32)).unwrap();
        let keys: Vec<(u32, u64)> = (1..=20_000).map(|p| (digest(p % 7_000), p)).collect();
        let mut one_by_one = Keys::default();
        let mut at_once = Keys::default();
        one_by_one.insert(digest(3), 5);
        at_once.insert(digest(3), 5);
        for &(digest, position) in &keys {
            one_by_one.insert(digest, position + 5);
        }
        let shifted: Vec<(u32, u64)> = keys.iter().map(|&(d, p)| (d, p + 5)).collect();
        at_once.extend(&shifted);
        for i in 0..7_000 {
            assert_eq!(
                at_once.candidates(digest(i)),
                one_by_one.candidates(digest(i))
            );
        }
        assert_eq!(at_once.candidates(digest(3)).first(), Some(&5));
        assert_eq!(
            at_once.digests_by_entry(20_006),
            one_by_one.digests_by_entry(20_006)
        );
    }

    proptest! {
        /// Keys inserted one by one and keys read back from their per-entry digests answer
        /// like a map from digest to every position that has it, oldest first.
        #[test]
        fn keys_answer_like_a_map_of_digests_to_positions(
            // Few distinct high halves and low halves, so buckets and collisions fill up.
            digests in proptest::collection::vec((0_u32..4, 0_u32..6), 0..300),
        ) {
            let digests: Vec<u32> = digests
                .into_iter()
                .map(|(high, low)| (high << 16) | low)
                .collect();
            let mut keys = Keys::default();
            let mut expected: HashMap<u32, Vec<u64>> = HashMap::new();
            for (at, &digest) in digests.iter().enumerate() {
                let position = at as u64 + 1;
                keys.insert(digest, position);
                expected.entry(digest).or_default().push(position);
            }
            let reread = Keys::from_parts(&keys.digests_by_entry(digests.len()), HashMap::new());
            // The first half one by one, the rest at once, as an open after an index file does.
            let mut extended = Keys::default();
            let half = digests.len() / 2;
            for (at, &digest) in digests[..half].iter().enumerate() {
                extended.insert(digest, at as u64 + 1);
            }
            let rest: Vec<(u32, u64)> = digests[half..]
                .iter()
                .enumerate()
                .map(|(i, &digest)| (digest, (half + i) as u64 + 1))
                .collect();
            extended.extend(&rest);
            prop_assert_eq!(keys.digests_by_entry(digests.len()), digests.clone());
            for high in 0..5 {
                for low in 0..7 {
                    let digest = (high << 16) | low;
                    let want = expected.get(&digest).cloned().unwrap_or_default();
                    prop_assert_eq!(keys.candidates(digest), want.clone());
                    prop_assert_eq!(extended.candidates(digest), want.clone());
                    prop_assert_eq!(reread.candidates(digest), want);
                }
            }
        }
    }
}

//! The aggregates `GET /v1/stats` is answered from: for every group a query may ask for and
//! every day (UTC) on which loops were received, what the group's figures are made of, kept up
//! to date as events are applied, so that a query sums days instead of walking loops.
//!
//! # Keys
//! A loop counts in [`Key::All`], in [`Key::Org`] of its *own* org unit (not its prefixes:
//! `group_by=org_unit` groups by the full path, and a scope is the sum of the units inside it),
//! in [`Key::Theme`] of each distinct theme (or of [`NONE`] without one), in [`Key::Channel`]
//! of its channel, and in [`Key::Tag`] of each distinct seldom-heard tag (or of [`NONE`]):
//! `3 + T + G` keys, T and G its themes and tags (at least 1 each), which the projection caps
//! (`limits`).
//!
//! # Buckets
//! A [`Bucket`] holds, for the loops of one key received on one day: how many; the open ones
//! by the day (UTC) on which they become overdue, so that `overdue` at any `now` is a sum over
//! the days before today's, and only the loops due *today* are checked one by one; loops per
//! rating set and per theme; and exact histograms of the working days each took to be heard
//! back and to be closed, in hundredths of a day (the precision the medians are given in), so
//! that medians over any days are exact. All of it is one sorted list of codes (the kind of
//! entry, then its value) beside their counts, so that a bucket is one allocation, read in
//! order, and each kind a run that merges into a flat histogram in a tight loop.
//!
//! Next to the days, each key keeps the same buckets summed over aligned blocks of
//! [`BLOCK_DAYS`] days, and over aligned eras of [`ERA_DAYS`] days (32 blocks), so that a year
//! is a dozen blocks and at most two partial blocks of days, and all days one era bucket or
//! two: a query reads at most `2 × 31 + 2 × 31 + days / 1024` buckets a group, however many
//! loops there are, and without `from` and `to` the eras alone. What a bucket costs to read is
//! its entries, which grow with its loops only until every value in its range occurs (a block
//! or an era of a large group holds a few thousand).
//!
//! # Cost
//! Memory is a 56-byte bucket per key and day, per key and block and per key and era, in
//! B-trees, and 6 bytes per entry (the figures below are from before the eras, which add
//! about one block's worth a key). At a million demo-like loops over 120 days (20 wards, 11 themes, 6 seldom-heard
//! groups, 8 channels): 47 keys, 5,900 buckets and 3.8 million entries, about 23 MB; the same
//! loops over a year, 17,800 buckets and 6.5 million entries, about 40 MB (the `scale` test
//! in `stats`).
//!
//! Building them from the loop records takes about 1 s at a million loops: one day at a time,
//! each key's codes gathered and sorted into its bucket, and the days of a block merged into
//! the block's, and the blocks of an era into the era's. Applying an event moves the loop's
//! contribution in the day, the block and the era of each of its keys when it changes at all (a
//! contact or a close changes a code or two): a binary search and at worst a shift of a few
//! thousand entries per bucket, which adds 1.5 to 2.5 µs to each event applied (as much as
//! the insights' aggregates do).
//!
//! The aggregates depend on the working-day calendar and the SLA, so they are kept with the
//! other SLA-dependent figures (`timing`) and built from the loop records when those are
//! (beside the insights' aggregates, on a core of their own). A snapshot keeps them with the
//! SLA they were computed for ([`FlatAggregates`]), so that a start under the same SLA loads
//! them instead.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::daily::{Day, TableSizes, day_of};
use crate::histogram::Histogram;
use crate::intern::Lists;
use crate::record::Hot;
use crate::timing::{SlotTiming, due_day};

use super::StatsWork;
use super::range::Days;
use super::tally::{Tally, centi_days};

/// The theme or tag id of the group of loops without one.
pub(crate) const NONE: u32 = u32::MAX;
/// The days of a block: every key also keeps its buckets summed over aligned blocks of this
/// many days (block `b` holds days `32 b ..= 32 b + 31`).
pub(crate) const BLOCK_DAYS: Day = 32;
/// The days of an era (32 blocks, about 2.8 years): every key also keeps its buckets summed
/// over aligned eras, so that a query over all days reads one bucket a group, not a block for
/// every month.
pub(crate) const ERA_DAYS: Day = 1024;

/// The three sizes of bucket, smallest first.
#[derive(Debug, Clone, Copy)]
enum Level {
    Day,
    Block,
    Era,
}

/// The group a bucket counts loops of (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// Every loop.
    All,
    /// Loops whose org unit is exactly this one (an id of the org names table).
    Org(u32),
    /// Loops with this theme, or without any ([`NONE`]).
    Theme(u32),
    /// Loops that came through this channel (an index into `Channel::ALL`).
    Channel(u8),
    /// Loops with this seldom-heard tag, or without any ([`NONE`]).
    Tag(u32),
}

/// What one loop adds to each bucket of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contribution<'a> {
    /// The day it was received.
    pub(crate) day: Day,
    /// While open: the day on which it becomes overdue ([`Day::MAX`] if never); `None` once
    /// closed.
    pub(crate) open: Option<Day>,
    /// Its rating set id (0: none).
    pub(crate) ratings: u32,
    /// Its distinct themes.
    pub(crate) themes: &'a [u32],
    /// Hundredths of working days from receipt to the first contact.
    pub(crate) ack: Option<u32>,
    /// Hundredths of working days from receipt to closing; `Some` exactly while closed.
    pub(crate) close: Option<u32>,
}

impl<'a> Contribution<'a> {
    /// A loop's contribution, from its record and its SLA-dependent figures.
    pub(crate) fn of(hot: &Hot, timing: &SlotTiming, lists: &'a Lists) -> Self {
        Self {
            day: day_of(hot.received()),
            open: (!hot.is_closed()).then(|| {
                due_day(timing.due).map_or(Day::MAX, |day| {
                    // Due instants are nanoseconds in an i64: their days fit an i32.
                    Day::try_from(day).unwrap_or(Day::MAX)
                })
            }),
            ratings: hot.ratings,
            themes: lists.distinct(hot.themes),
            ack: centi_days(timing.ack),
            close: centi_days(timing.close),
        }
    }
}

/// Every key a loop counts in (see the module docs).
pub(crate) fn keys_of(hot: &Hot, lists: &Lists) -> Vec<Key> {
    let themes = lists.distinct(hot.themes);
    let tags = lists.distinct(hot.tags);
    let mut keys = Vec::with_capacity(3 + themes.len().max(1) + tags.len().max(1));
    keys.extend([Key::All, Key::Org(hot.org), Key::Channel(hot.channel)]);
    if themes.is_empty() {
        keys.push(Key::Theme(NONE));
    }
    keys.extend(themes.iter().map(|&theme| Key::Theme(theme)));
    if tags.is_empty() {
        keys.push(Key::Tag(NONE));
    }
    keys.extend(tags.iter().map(|&tag| Key::Tag(tag)));
    keys
}

/// The kinds of entry a bucket holds, in the order it keeps them: a code's top 3 bits.
const OPEN: u32 = 0;
const RATING: u32 = 1;
const THEME: u32 = 2;
const ACKNOWLEDGE: u32 = 3;
const CLOSE: u32 = 4;
const KINDS: u32 = 5;
/// The bits of a code's value, below its kind.
const VALUE_BITS: u32 = 29;
/// The largest value a code holds. Larger ones share it: rating set and theme ids never get
/// there, nor do hundredths of working days (that would be some 20,000 years).
const MAX_VALUE: u32 = (1 << VALUE_BITS) - 1;
/// Due days are kept offset by this, so that days before 1970 are values too.
const DAY_OFFSET: i64 = 1 << (VALUE_BITS - 1);

/// The code of an entry: its kind, then its value, so that sorted codes keep each kind
/// together and in order of value.
fn code(kind: u32, value: u32) -> u32 {
    (kind << VALUE_BITS) | value.min(MAX_VALUE)
}

fn value(code: u32) -> u32 {
    code & MAX_VALUE
}

/// The value of a due day; [`Day::MAX`] (never due) becomes [`MAX_VALUE`], after any day.
fn due_value(day: Day) -> u32 {
    let value = (i64::from(day) + DAY_OFFSET).clamp(0, i64::from(MAX_VALUE));
    u32::try_from(value).expect("clamped")
}

/// The due day of a value, as a day number comparable with `today`.
fn due_of(value: u32) -> i64 {
    i64::from(value) - DAY_OFFSET
}

impl Contribution<'_> {
    /// Calls `f` with each code the loop adds to its buckets: distinct ones, at most
    /// `4 + themes`.
    fn codes(&self, mut f: impl FnMut(u32)) {
        if let Some(due) = self.open {
            f(code(OPEN, due_value(due)));
        }
        if self.ratings != 0 {
            f(code(RATING, self.ratings));
        }
        for &theme in self.themes {
            f(code(THEME, theme));
        }
        if let Some(centis) = self.ack {
            f(code(ACKNOWLEDGE, centis));
        }
        if let Some(centis) = self.close {
            f(code(CLOSE, centis));
        }
    }

    fn code_list(&self) -> Vec<u32> {
        let mut codes = Vec::with_capacity(4 + self.themes.len());
        self.codes(|code| codes.push(code));
        codes
    }
}

/// The loops of one key received on one day (or one block of days): how many, and the
/// loops per code (open loops by due day, rating sets, themes, and hundredths of working
/// days to the first contact and to closing) as a sorted list of codes beside their counts.
///
/// Two lists rather than one of pairs: 6 bytes an entry instead of 8. A code with more than
/// `u16::MAX` loops takes several entries side by side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    received: u32,
    codes: Vec<u32>,
    counts: Vec<u16>,
}

impl Bucket {
    /// A bucket from (code, loops) pairs in increasing code order.
    fn from_sorted(received: u32, pairs: impl Iterator<Item = (u32, u64)>) -> Self {
        let mut bucket = Self {
            received,
            ..Self::default()
        };
        for (code, mut loops) in pairs {
            while loops > 0 {
                let part = u16::try_from(loops).unwrap_or(u16::MAX);
                bucket.codes.push(code);
                bucket.counts.push(part);
                loops -= u64::from(part);
            }
        }
        bucket.codes.shrink_to_fit();
        bucket.counts.shrink_to_fit();
        bucket
    }

    /// Each (code, loops) entry, in order.
    fn pairs(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.codes
            .iter()
            .zip(&self.counts)
            .map(|(&code, &loops)| (code, u64::from(loops)))
    }

    /// Counts one loop more (`add`) or less under `code`; an entry that drops to zero goes.
    fn count(&mut self, code: u32, add: bool) {
        let first = self.codes.partition_point(|&c| c < code);
        if add {
            let mut i = first;
            while self.codes.get(i) == Some(&code) {
                if self.counts[i] < u16::MAX {
                    self.counts[i] += 1;
                    return;
                }
                i += 1;
            }
            self.codes.insert(i, code);
            self.counts.insert(i, 1);
        } else {
            assert_eq!(
                self.codes.get(first),
                Some(&code),
                "a contribution is taken out only after it was added"
            );
            self.counts[first] -= 1;
            if self.counts[first] == 0 {
                self.codes.remove(first);
                self.counts.remove(first);
            }
        }
    }

    /// Adds (`add`) or takes out one loop's contribution.
    fn change(&mut self, c: &Contribution<'_>, add: bool) {
        if add {
            self.received += 1;
        } else {
            self.received -= 1;
        }
        c.codes(|code| self.count(code, add));
    }

    /// Adds this bucket's loops to a group's tally: the open ones due on a day before `today`
    /// are overdue now; those due on `today` are left for the caller to check one by one.
    pub(crate) fn add_to(&self, tally: &mut Tally, today: i64, work: &mut StatsWork) {
        work.buckets += 1;
        work.entries += self.codes.len() as u64;
        // Where each kind starts, and where the last one ends.
        let mut bounds = [0; KINDS as usize + 1];
        for (bound, kind) in bounds.iter_mut().zip(0..=KINDS) {
            *bound = self.codes.partition_point(|&c| c < kind << VALUE_BITS);
        }
        let run = |kind: u32| {
            let range = bounds[kind as usize]..bounds[kind as usize + 1];
            (&self.codes[range.clone()], &self.counts[range])
        };
        let received = u64::from(self.received);
        tally.received += received;
        let (codes, counts) = run(OPEN);
        let mut open = 0;
        for (&code, &loops) in codes.iter().zip(counts) {
            open += u64::from(loops);
            if due_of(value(code)) < today {
                tally.overdue += u64::from(loops);
            }
        }
        tally.closed += received - open;
        add_run(&mut tally.ratings, run(RATING));
        add_run(&mut tally.themes, run(THEME));
        add_run(&mut tally.ack, run(ACKNOWLEDGE));
        add_run(&mut tally.close, run(CLOSE));
    }

    /// How many entries it holds, for the memory figure.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.codes.len()
    }
}

/// Adds a run of entries of one kind, in increasing order of value, to a histogram.
#[inline]
fn add_run<const DENSE: u32>(histogram: &mut Histogram<DENSE>, (codes, counts): (&[u32], &[u16])) {
    if let Some(&last) = codes.last() {
        histogram.reserve_to(value(last));
    }
    for (&code, &loops) in codes.iter().zip(counts) {
        histogram.add(value(code), u64::from(loops));
    }
}

/// The buckets of one key: by day, by block of [`BLOCK_DAYS`] days and by era of
/// [`ERA_DAYS`] days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Series {
    days: BTreeMap<Day, Bucket>,
    blocks: BTreeMap<Day, Bucket>,
    eras: BTreeMap<Day, Bucket>,
}

/// The block a day belongs to.
fn block_of(day: Day) -> Day {
    day.div_euclid(BLOCK_DAYS)
}

/// The era a day belongs to.
fn era_of(day: Day) -> Day {
    day.div_euclid(ERA_DAYS)
}

impl Series {
    /// The buckets whose loops are exactly those received on `days`: whole eras inside them,
    /// then whole blocks inside what is left at either end, then single days.
    pub(crate) fn buckets(&self, days: Days) -> impl Iterator<Item = &Bucket> {
        let mut found = Vec::new();
        self.gather(Level::Era, days.start, days.end, &mut found);
        found.into_iter()
    }

    /// Adds the buckets of `level` and below that cover days `start..end` to `found`.
    fn gather<'a>(
        &'a self,
        level: Level,
        start: Option<Day>,
        end: Option<Day>,
        found: &mut Vec<&'a Bucket>,
    ) {
        if start.zip(end).is_some_and(|(start, end)| start >= end) {
            return;
        }
        let (buckets, size, below) = match level {
            Level::Day => {
                let range = (
                    start.map_or(Bound::Unbounded, Bound::Included),
                    end.map_or(Bound::Unbounded, Bound::Excluded),
                );
                found.extend(self.days.range(range).map(|(_, bucket)| bucket));
                return;
            }
            Level::Block => (&self.blocks, BLOCK_DAYS, Level::Day),
            Level::Era => (&self.eras, ERA_DAYS, Level::Block),
        };
        // The units that lie wholly inside the days: from the first that starts on or after
        // `start`, up to (not including) the one `end` falls in.
        let first =
            start.map(|start| start.div_euclid(size) + Day::from(start.rem_euclid(size) != 0));
        let last = end.map(|end| end.div_euclid(size));
        if first.zip(last).is_some_and(|(first, last)| first >= last) {
            self.gather(below, start, end, found);
            return;
        }
        let range = (
            first.map_or(Bound::Unbounded, Bound::Included),
            last.map_or(Bound::Unbounded, Bound::Excluded),
        );
        found.extend(buckets.range(range).map(|(_, bucket)| bucket));
        if let Some(first) = first {
            self.gather(below, start, Some(first.saturating_mul(size)), found);
        }
        if let Some(last) = last {
            self.gather(below, Some(last.saturating_mul(size)), end, found);
        }
    }

    fn buckets_mut(&mut self, day: Day) -> [&mut Bucket; 3] {
        [
            self.days.entry(day).or_default(),
            self.blocks.entry(block_of(day)).or_default(),
            self.eras.entry(era_of(day)).or_default(),
        ]
    }

    fn add(&mut self, c: &Contribution<'_>) {
        for bucket in self.buckets_mut(c.day) {
            bucket.change(c, true);
        }
    }

    fn remove(&mut self, c: &Contribution<'_>) {
        for (buckets, at) in [
            (&mut self.days, c.day),
            (&mut self.blocks, block_of(c.day)),
            (&mut self.eras, era_of(c.day)),
        ] {
            let bucket = buckets
                .get_mut(&at)
                .expect("a contribution is taken out only after it was added");
            bucket.change(c, false);
            if bucket.received == 0 {
                buckets.remove(&at);
            }
        }
    }

    /// Moves a loop's contribution on its day from the codes `gone` to the codes `new`.
    fn replace(&mut self, day: Day, gone: &[u32], new: &[u32]) {
        for bucket in self.buckets_mut(day) {
            for &code in gone {
                bucket.count(code, false);
            }
            for &code in new {
                bucket.count(code, true);
            }
        }
    }
}

/// The era buckets of a key, each the sum of its era's blocks.
fn eras_of(blocks: &BTreeMap<Day, Bucket>) -> BTreeMap<Day, Bucket> {
    let mut eras = BTreeMap::new();
    let blocks: Vec<(&Day, &Bucket)> = blocks.iter().collect();
    for era in blocks.chunk_by(|a, b| era_of(*a.0 * BLOCK_DAYS) == era_of(*b.0 * BLOCK_DAYS)) {
        let mut gathered = Gathered::default();
        for (_, bucket) in era {
            gathered.received += bucket.received;
            gathered.pairs.extend(bucket.pairs());
        }
        eras.insert(era_of(*era[0].0 * BLOCK_DAYS), gathered.bucket());
    }
    eras
}

/// Loops and their codes gathered for one bucket while building.
#[derive(Default)]
struct Gathered {
    received: u32,
    pairs: Vec<(u32, u64)>,
}

impl Gathered {
    /// The bucket of what was gathered: pairs sorted by code, each code once.
    fn bucket(mut self) -> Bucket {
        self.pairs.sort_unstable_by_key(|&(code, _)| code);
        let pairs = self
            .pairs
            .chunk_by(|a, b| a.0 == b.0)
            .map(|same| (same[0].0, same.iter().map(|&(_, loops)| loops).sum::<u64>()));
        Bucket::from_sorted(self.received, pairs)
    }
}

/// The aggregates of every key (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Aggregates {
    series: BTreeMap<Key, Series>,
}

impl Aggregates {
    /// The aggregates of every loop, from scratch: the loops of one day at a time gathered
    /// per key and sorted into buckets, and the days of a block merged into its buckets, so
    /// that each list is written once, in order.
    pub(crate) fn build(hot: &[Hot], timing: &[SlotTiming], lists: &Lists) -> Self {
        let mut by_day: Vec<(Day, u32)> = hot
            .iter()
            .zip(0_u32..)
            .map(|(hot, slot)| (day_of(hot.received()), slot))
            .collect();
        by_day.sort_unstable();
        let mut aggregates = Self::default();
        let mut block: BTreeMap<Key, Gathered> = BTreeMap::new();
        let mut block_at = None;
        for loops in by_day.chunk_by(|a, b| a.0 == b.0) {
            let day = loops[0].0;
            if let Some(at) = block_at
                && at != block_of(day)
            {
                aggregates.put_blocks(at, std::mem::take(&mut block));
            }
            block_at = Some(block_of(day));
            let mut gathered: BTreeMap<Key, Gathered> = BTreeMap::new();
            for &(_, slot) in loops {
                let i = slot as usize;
                let c = Contribution::of(&hot[i], &timing[i], lists);
                let codes = c.code_list();
                for key in keys_of(&hot[i], lists) {
                    let into = gathered.entry(key).or_default();
                    into.received += 1;
                    into.pairs.extend(codes.iter().map(|&code| (code, 1)));
                }
            }
            for (key, gathered) in gathered {
                let bucket = gathered.bucket();
                let into = block.entry(key).or_default();
                into.received += bucket.received;
                into.pairs.extend(bucket.pairs());
                let series = aggregates.series.entry(key).or_default();
                series.days.insert(day, bucket);
            }
        }
        if let Some(at) = block_at {
            aggregates.put_blocks(at, block);
        }
        for series in aggregates.series.values_mut() {
            series.eras = eras_of(&series.blocks);
        }
        aggregates
    }

    /// Stores the buckets of block `at` from what was gathered for each key.
    fn put_blocks(&mut self, at: Day, gathered: BTreeMap<Key, Gathered>) {
        for (key, gathered) in gathered {
            let series = self.series.entry(key).or_default();
            series.blocks.insert(at, gathered.bucket());
        }
    }

    /// The key in `range` with their buckets, in key order.
    pub(crate) fn range(
        &self,
        range: std::ops::RangeInclusive<Key>,
    ) -> impl Iterator<Item = (&Key, &Series)> {
        self.series.range(range)
    }

    pub(crate) fn add(&mut self, keys: &[Key], c: &Contribution<'_>) {
        for &key in keys {
            self.series.entry(key).or_default().add(c);
        }
    }

    /// Takes out a contribution added with the same keys; buckets and keys that empty go.
    pub(crate) fn remove(&mut self, keys: &[Key], c: &Contribution<'_>) {
        for key in keys {
            let series = self
                .series
                .get_mut(key)
                .expect("a contribution is taken out only after it was added");
            series.remove(c);
            if series.days.is_empty() {
                self.series.remove(key);
            }
        }
    }

    /// Replaces a contribution added with the same keys by the loop's new one, touching
    /// only the codes that differ (usually its due day and a number of working days).
    pub(crate) fn replace(&mut self, keys: &[Key], was: &Contribution<'_>, now: &Contribution<'_>) {
        if was.day != now.day {
            self.remove(keys, was);
            self.add(keys, now);
            return;
        }
        let was_day = was.day;
        let (was, now) = (was.code_list(), now.code_list());
        let gone: Vec<u32> = was
            .iter()
            .copied()
            .filter(|code| !now.contains(code))
            .collect();
        let new: Vec<u32> = now
            .iter()
            .copied()
            .filter(|code| !was.contains(code))
            .collect();
        for key in keys {
            self.series
                .get_mut(key)
                .expect("a contribution is replaced only after it was added")
                .replace(was_day, &gone, &new);
        }
    }

    /// How many keys, buckets (days and blocks) and list entries there are, and about how
    /// many bytes they take, for the memory figure.
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> (usize, usize, usize, usize) {
        let buckets = || {
            self.series.values().flat_map(|series| {
                series
                    .days
                    .values()
                    .chain(series.blocks.values())
                    .chain(series.eras.values())
            })
        };
        let count = buckets().count();
        let entries: usize = buckets().map(Bucket::entries).sum();
        // A B-tree entry costs its key and value and about a third more in node slack; a list
        // entry its 6 bytes, and the spare capacity of the lists updated since they were
        // built.
        let bucket_bytes = (std::mem::size_of::<Day>() + std::mem::size_of::<Bucket>()) * 4 / 3;
        let spare: usize = buckets()
            .map(|bucket| {
                (bucket.codes.capacity() - bucket.codes.len()) * 4
                    + (bucket.counts.capacity() - bucket.counts.len()) * 2
            })
            .sum();
        let bytes = count * bucket_bytes + entries * 6 + spare;
        (self.series.len(), count, entries, bytes)
    }
}

/// [`Aggregates`] as a snapshot keeps them: plain values in key and day order, so that they
/// decode without a look-up per value.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct FlatAggregates {
    /// Each key as [`Key::to_parts`], with how many day buckets and block buckets it has.
    keys: Vec<(u8, u32, u32, u32)>,
    /// Each bucket, a key's days then its blocks, key after key: its day (or block), loops
    /// and number of entries.
    buckets: Vec<(Day, u32, u32)>,
    /// Every entry's code, bucket after bucket.
    codes: Vec<u32>,
    /// Every entry's loops, beside `codes`.
    counts: Vec<u16>,
}

impl Key {
    /// The key as (kind, id).
    fn to_parts(self) -> (u8, u32) {
        match self {
            Key::All => (0, 0),
            Key::Org(org) => (1, org),
            Key::Theme(theme) => (2, theme),
            Key::Channel(channel) => (3, u32::from(channel)),
            Key::Tag(tag) => (4, tag),
        }
    }

    /// Whether the names it counts loops of are in the tables.
    fn is_known(self, sizes: &TableSizes) -> bool {
        match self {
            Key::All => true,
            Key::Org(org) => sizes.is_org(org),
            Key::Theme(theme) => sizes.is_theme(theme, NONE),
            Key::Channel(channel) => TableSizes::is_channel(channel),
            Key::Tag(tag) => sizes.is_tag(tag, NONE),
        }
    }

    /// The key [`to_parts`](Self::to_parts) gave these parts; `None` for parts no key gives.
    fn from_parts((kind, id): (u8, u32)) -> Option<Self> {
        let key = match kind {
            0 => Key::All,
            1 => Key::Org(id),
            2 => Key::Theme(id),
            3 => Key::Channel(u8::try_from(id).ok()?),
            4 => Key::Tag(id),
            _ => return None,
        };
        (key.to_parts() == (kind, id)).then_some(key)
    }
}

impl Bucket {
    /// Whether its counts add up: loops in it, codes of known kinds in order, each entry
    /// counting at least one loop, no more open loops than loops, and rating sets and themes
    /// that the tables have.
    fn is_well_formed(&self, sizes: &TableSizes) -> bool {
        let known = |&code: &u32| match code >> VALUE_BITS {
            RATING => (value(code) as usize) < sizes.rating_sets,
            THEME => (value(code) as usize) < sizes.themes,
            kind => kind < KINDS,
        };
        let open: u64 = self
            .codes
            .iter()
            .zip(&self.counts)
            .take_while(|&(&code, _)| code >> VALUE_BITS == OPEN)
            .map(|(_, &loops)| u64::from(loops))
            .sum();
        self.received > 0
            && self.codes.len() == self.counts.len()
            && self.codes.windows(2).all(|pair| pair[0] <= pair[1])
            && self.codes.iter().all(known)
            && self.counts.iter().all(|&loops| loops > 0)
            && open <= u64::from(self.received)
    }
}

/// Takes one key's buckets (days or blocks) off the front of a flat form's lists.
struct Unflatten<'a> {
    buckets: std::slice::Iter<'a, (Day, u32, u32)>,
    codes: &'a [u32],
    counts: &'a [u16],
    sizes: &'a TableSizes,
}

impl Unflatten<'_> {
    /// The next `len` buckets, checked, with the loops they hold.
    fn take(&mut self, len: u32) -> Result<(BTreeMap<Day, Bucket>, u64), String> {
        let mut buckets = Vec::with_capacity(self.buckets.len().min(len as usize));
        let mut loops = 0;
        for _ in 0..len {
            let Some(&(day, received, entries)) = self.buckets.next() else {
                return Err("the stats aggregates have fewer buckets than their keys say".into());
            };
            let (Some((codes, rest_codes)), Some((counts, rest_counts))) = (
                self.codes.split_at_checked(entries as usize),
                self.counts.split_at_checked(entries as usize),
            ) else {
                return Err(
                    "the stats aggregates have fewer entries than their buckets say".into(),
                );
            };
            (self.codes, self.counts) = (rest_codes, rest_counts);
            let bucket = Bucket {
                received,
                codes: codes.to_vec(),
                counts: counts.to_vec(),
            };
            if !bucket.is_well_formed(self.sizes) {
                return Err("the stats aggregates have a bucket whose counts do not add up".into());
            }
            if buckets.last().is_some_and(|&(last, _)| last >= day) {
                return Err("the stats aggregates have days out of order".into());
            }
            loops += u64::from(received);
            buckets.push((day, bucket));
        }
        Ok((buckets.into_iter().collect(), loops))
    }
}

impl Aggregates {
    /// The aggregates flattened for a snapshot.
    pub(crate) fn to_flat(&self) -> FlatAggregates {
        let mut flat = FlatAggregates::default();
        for (key, series) in &self.series {
            let (kind, id) = key.to_parts();
            flat.keys.push((
                kind,
                id,
                count(series.days.len()),
                count(series.blocks.len()),
            ));
            for (&day, bucket) in series.days.iter().chain(&series.blocks) {
                flat.buckets
                    .push((day, bucket.received, count(bucket.codes.len())));
                flat.codes.extend_from_slice(&bucket.codes);
                flat.counts.extend_from_slice(&bucket.counts);
            }
        }
        flat
    }

    /// The aggregates [`to_flat`](Self::to_flat) flattened, checked to be well formed: keys
    /// of names the tables have, in order, each with buckets; days in order; each bucket well
    /// formed, naming rating sets and themes the tables have; and a key's blocks holding the
    /// loops its days hold.
    pub(crate) fn from_flat(flat: &FlatAggregates, sizes: &TableSizes) -> Result<Self, String> {
        let mut rest = Unflatten {
            buckets: flat.buckets.iter(),
            codes: &flat.codes,
            counts: &flat.counts,
            sizes,
        };
        let mut series = Vec::with_capacity(flat.keys.len());
        for &(kind, id, days, blocks) in &flat.keys {
            let Some(key) = Key::from_parts((kind, id)).filter(|&key| key.is_known(sizes)) else {
                return Err("the stats aggregates name a key that does not exist".into());
            };
            if series.last().is_some_and(|&(last, _)| last >= key) || days == 0 {
                return Err("the stats aggregates have keys out of order or empty".into());
            }
            let (days, in_days) = rest.take(days)?;
            let (blocks, in_blocks) = rest.take(blocks)?;
            if in_days != in_blocks {
                return Err("the stats aggregates' blocks do not hold their days' loops".into());
            }
            // Eras are sums of blocks: made again, not stored.
            let eras = eras_of(&blocks);
            series.push((key, Series { days, blocks, eras }));
        }
        if rest.buckets.next().is_some() || !rest.codes.is_empty() || !rest.counts.is_empty() {
            return Err(
                "the stats aggregates have more buckets or entries than their keys say".into(),
            );
        }
        Ok(Self {
            series: series.into_iter().collect(),
        })
    }

    /// How many loops [`Key::All`] counts: every loop once.
    pub(crate) fn loops(&self) -> u64 {
        self.series.get(&Key::All).map_or(0, |series| {
            series
                .days
                .values()
                .map(|bucket| u64::from(bucket.received))
                .sum()
        })
    }
}

/// A length as the `u32` the flat form keeps.
fn count(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 2^32 buckets and entries")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(day: Day, open: Option<Day>, close: Option<u32>) -> Contribution<'static> {
        Contribution {
            day,
            open,
            ratings: 3,
            themes: &[1, 4],
            ack: Some(125),
            close,
        }
    }

    #[test]
    fn flat_aggregates_come_back_and_damaged_ones_are_refused() {
        let mut aggregates = Aggregates::default();
        aggregates.add(&[Key::All, Key::Theme(1)], &contribution(3, Some(9), None));
        aggregates.add(&[Key::All], &contribution(40, None, Some(250)));
        let sizes = TableSizes {
            orgs: 0,
            themes: 5,
            tags: 0,
            rating_sets: 4,
        };
        let back = Aggregates::from_flat(&aggregates.to_flat(), &sizes).unwrap();
        assert_eq!(back, aggregates);
        assert_eq!(back.loops(), 2);
        let mut empty_entry = aggregates.to_flat();
        empty_entry.counts[0] = 0;
        let err = Aggregates::from_flat(&empty_entry, &sizes).unwrap_err();
        assert!(err.contains("do not add up"), "{err}");
        let mut more_in_a_day = aggregates.to_flat();
        more_in_a_day.buckets[0].1 += 1;
        let err = Aggregates::from_flat(&more_in_a_day, &sizes).unwrap_err();
        assert!(err.contains("blocks do not hold"), "{err}");
        let fewer_sets = TableSizes {
            rating_sets: 3,
            ..sizes
        };
        let err = Aggregates::from_flat(&aggregates.to_flat(), &fewer_sets).unwrap_err();
        assert!(err.contains("do not add up"), "{err}");
    }

    #[test]
    fn a_bucket_takes_back_exactly_what_it_was_given() {
        let a = contribution(40, Some(44), None);
        let b = Contribution {
            ratings: 0,
            themes: &[],
            ack: None,
            ..contribution(40, None, Some(300))
        };
        let mut bucket = Bucket::default();
        bucket.change(&a, true);
        bucket.change(&b, true);
        assert_eq!(bucket.received, 2);
        assert_eq!(
            bucket.pairs().collect::<Vec<_>>(),
            [
                (code(OPEN, due_value(44)), 1),
                (code(RATING, 3), 1),
                (code(THEME, 1), 1),
                (code(THEME, 4), 1),
                (code(ACKNOWLEDGE, 125), 1),
                (code(CLOSE, 300), 1),
            ]
        );
        bucket.change(&a, false);
        let mut only_b = Bucket::default();
        only_b.change(&b, true);
        assert_eq!(bucket, only_b);
        bucket.change(&b, false);
        assert_eq!(bucket.received, 0);
        assert_eq!(bucket.entries(), 0);
    }

    #[test]
    fn replacing_equals_taking_out_and_adding() {
        let was = contribution(40, Some(44), None);
        let now = Contribution {
            ratings: 5,
            ..contribution(40, None, Some(700))
        };
        let keys = [Key::All, Key::Theme(1)];
        let mut replaced = Aggregates::default();
        replaced.add(&keys, &was);
        replaced.replace(&keys, &was, &now);
        let mut added = Aggregates::default();
        added.add(&keys, &now);
        assert_eq!(replaced, added);
    }

    #[test]
    fn counts_past_u16_take_several_entries() {
        let c = contribution(40, Some(44), None);
        let mut bucket = Bucket::default();
        for _ in 0..70_000 {
            bucket.change(&c, true);
        }
        let built = Bucket::from_sorted(70_000, bucket.pairs().collect::<Vec<_>>().into_iter());
        assert_eq!(bucket, built);
        assert_eq!(bucket.entries(), 5 * 2);
        let mut tally = Tally::default();
        bucket.add_to(&mut tally, 45, &mut StatsWork::default());
        assert_eq!(
            (tally.received, tally.overdue, tally.closed),
            (70_000, 70_000, 0)
        );
        assert_eq!(tally.ack.total(), 70_000);
        for _ in 0..70_000 {
            bucket.change(&c, false);
        }
        assert_eq!(bucket.entries(), 0);
    }

    #[test]
    fn due_days_before_1970_and_never_keep_their_order() {
        let days = [Day::MIN, -20_000, -1, 0, 1, 106_751, Day::MAX];
        let values: Vec<u32> = days.iter().map(|&day| due_value(day)).collect();
        assert!(values.is_sorted());
        assert_eq!(due_of(due_value(-20_000)), -20_000);
        assert_eq!(due_of(due_value(106_751)), 106_751);
        assert!(
            due_of(due_value(Day::MAX)) > 106_751,
            "never is after any today"
        );
    }

    #[test]
    fn ranges_read_whole_blocks_and_single_days_at_the_ends() {
        let mut series = Series::default();
        for day in 0..200 {
            series.add(&contribution(day, Some(day + 3), None));
        }
        let count = |start: Option<Day>, end: Option<Day>| {
            let buckets: Vec<&Bucket> = series.buckets(Days { start, end }).collect();
            let received: u32 = buckets.iter().map(|bucket| bucket.received).sum();
            (buckets.len(), received)
        };
        // Everything: the one era.
        assert_eq!(count(None, None), (1, 200));
        // Days 10 to 99: days 10..32, blocks 1 and 2, days 96..100.
        assert_eq!(count(Some(10), Some(100)), (22 + 2 + 4, 90));
        // Within one block, or across one boundary: days only.
        assert_eq!(count(Some(33), Some(40)), (7, 7));
        assert_eq!(count(Some(60), Some(70)), (10, 10));
        // Aligned ends: blocks only.
        assert_eq!(count(Some(32), Some(96)), (2, 64));
        assert_eq!(count(None, Some(64)), (2, 64));
        assert_eq!(count(Some(64), None), (5, 136));
        assert_eq!(count(Some(70), Some(60)), (0, 0));
        // Before 1970: blocks align on multiples of 32 below zero too.
        let mut early = Series::default();
        for day in -40..0 {
            early.add(&contribution(day, None, Some(1)));
        }
        assert_eq!(
            early
                .buckets(Days {
                    start: Some(-33),
                    end: Some(-1)
                })
                .map(|bucket| bucket.received)
                .sum::<u32>(),
            32
        );
    }

    #[test]
    fn any_range_across_eras_counts_each_day_once_in_few_buckets() {
        let mut series = Series::default();
        let data = -1100..2200;
        for day in data.clone() {
            series.add(&contribution(day, None, Some(1)));
        }
        let built = Series {
            eras: eras_of(&series.blocks),
            ..series.clone()
        };
        assert_eq!(
            built, series,
            "eras built in bulk equal those kept event by event"
        );
        let bounds = [
            None,
            Some(-1100),
            Some(-1025),
            Some(-1024),
            Some(-1),
            Some(0),
            Some(31),
            Some(1000),
            Some(1024),
            Some(1030),
            Some(2048),
            Some(2199),
            Some(2200),
        ];
        for start in bounds {
            for end in bounds {
                let buckets: Vec<&Bucket> = series.buckets(Days { start, end }).collect();
                let received: u32 = buckets.iter().map(|bucket| bucket.received).sum();
                let expected = data
                    .clone()
                    .filter(|&day| Days { start, end }.contains(day))
                    .count();
                assert_eq!(received as usize, expected, "{start:?}..{end:?}");
                // At most 31 days and 31 blocks at either end, and the eras between.
                assert!(buckets.len() <= 2 * 31 + 2 * 31 + 4, "{start:?}..{end:?}");
            }
        }
        let all = Days {
            start: None,
            end: None,
        };
        assert_eq!(series.buckets(all).count(), 5, "all days: eras -2 to 2");
    }

    #[test]
    fn buckets_stay_small() {
        assert_eq!(std::mem::size_of::<Bucket>(), 56);
    }
}

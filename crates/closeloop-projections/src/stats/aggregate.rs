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
//! that medians over any days are exact. Each is a small sorted list of (value, loops).
//!
//! Next to the days, each key keeps the same buckets summed over aligned blocks of
//! [`BLOCK_DAYS`] days, so that a year is a dozen blocks and at most two partial blocks of
//! days: a query reads at most `2 × 31 + days / 32` buckets a group, however many loops there
//! are. Without `from` and `to` it reads the blocks alone.
//!
//! # Cost
//! Applying an event moves the loop's contribution in the day and the block of each of its
//! keys (when it changes at all): a binary search in a few short lists per key. Memory is a
//! 104-byte bucket per key and day (and per key and block), and 8 bytes per distinct value in
//! its lists, in B-trees: at a million demo-like loops received over 120 days, about 60
//! keys, 10,000 buckets and 4 million list entries — about 40 MB (the `scale` test in
//! `stats::tests`; 52 MB for the same loops over a year).
//!
//! The aggregates depend on the working-day calendar and the SLA, so they are kept with the
//! other SLA-dependent figures (`timing`) and built from the loop records when those are,
//! never stored in a snapshot.

use std::collections::BTreeMap;

use crate::daily::{Day, day_of};
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

/// Which histogram of a bucket an entry of `days` belongs to: the low bit of its code.
const ACKNOWLEDGE: u32 = 0;
const CLOSE: u32 = 1;

/// The code of a histogram entry. Values past `u32::MAX >> 1` hundredths of a day (some
/// 21 million days) share the last entry.
fn code(measure: u32, centis: u32) -> u32 {
    (centis.min(u32::MAX >> 1) << 1) | measure
}

/// The loops of one key received on one day (or one block of days).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    received: u32,
    /// Open loops per day on which they become overdue.
    open: Vec<(Day, u32)>,
    /// Loops per rating set id, the empty set left out.
    ratings: Vec<(u32, u32)>,
    /// Loops per theme id.
    themes: Vec<(u32, u32)>,
    /// Both histograms as one list of (`centis << 1 | measure`, loops).
    days: Vec<(u32, u32)>,
}

/// Counts one loop more (`add`) or less under `value`; a count that drops to zero goes.
fn count<V: Ord + Copy>(entries: &mut Vec<(V, u32)>, value: V, add: bool) {
    match entries.binary_search_by_key(&value, |&(v, _)| v) {
        Ok(i) if add => entries[i].1 += 1,
        Ok(i) => {
            entries[i].1 -= 1;
            if entries[i].1 == 0 {
                entries.remove(i);
            }
        }
        Err(i) => {
            assert!(add, "a contribution is taken out only after it was added");
            entries.insert(i, (value, 1));
        }
    }
}

impl Bucket {
    /// Adds (`add`) or takes out one loop's contribution.
    fn change(&mut self, c: &Contribution<'_>, add: bool) {
        if add {
            self.received += 1;
        } else {
            self.received -= 1;
        }
        self.change_open(c.open, add);
        self.change_ratings(c.ratings, add);
        self.change_themes(c.themes, add);
        self.change_days(ACKNOWLEDGE, c.ack, add);
        self.change_days(CLOSE, c.close, add);
    }

    /// Replaces a contribution by another of the same loop on the same day, touching only
    /// what differs (usually the due day or a histogram).
    fn replace(&mut self, was: &Contribution<'_>, now: &Contribution<'_>) {
        if was.open != now.open {
            self.change_open(was.open, false);
            self.change_open(now.open, true);
        }
        if was.ratings != now.ratings {
            self.change_ratings(was.ratings, false);
            self.change_ratings(now.ratings, true);
        }
        if was.themes != now.themes {
            self.change_themes(was.themes, false);
            self.change_themes(now.themes, true);
        }
        if was.ack != now.ack {
            self.change_days(ACKNOWLEDGE, was.ack, false);
            self.change_days(ACKNOWLEDGE, now.ack, true);
        }
        if was.close != now.close {
            self.change_days(CLOSE, was.close, false);
            self.change_days(CLOSE, now.close, true);
        }
    }

    fn change_open(&mut self, open: Option<Day>, add: bool) {
        if let Some(due) = open {
            count(&mut self.open, due, add);
        }
    }

    fn change_ratings(&mut self, set: u32, add: bool) {
        if set != 0 {
            count(&mut self.ratings, set, add);
        }
    }

    fn change_themes(&mut self, themes: &[u32], add: bool) {
        for &theme in themes {
            count(&mut self.themes, theme, add);
        }
    }

    fn change_days(&mut self, measure: u32, centis: Option<u32>, add: bool) {
        if let Some(centis) = centis {
            count(&mut self.days, code(measure, centis), add);
        }
    }

    /// Adds this bucket's loops to a group's tally: the open ones due on a day before `today`
    /// are overdue now; those due on `today` are left for the caller to check one by one.
    pub(crate) fn add_to(&self, tally: &mut Tally, today: i64, work: &mut StatsWork) {
        work.buckets += 1;
        work.entries +=
            (self.open.len() + self.ratings.len() + self.themes.len() + self.days.len()) as u64;
        let received = u64::from(self.received);
        tally.received += received;
        let mut open = 0;
        for &(due, loops) in &self.open {
            open += u64::from(loops);
            if i64::from(due) < today {
                tally.overdue += u64::from(loops);
            }
        }
        tally.closed += received - open;
        for &(set, loops) in &self.ratings {
            *tally.ratings.entry(set).or_default() += u64::from(loops);
        }
        for &(theme, loops) in &self.themes {
            *tally.themes.entry(theme).or_default() += u64::from(loops);
        }
        for &(code, loops) in &self.days {
            let histogram = if code & 1 == ACKNOWLEDGE {
                &mut tally.ack
            } else {
                &mut tally.close
            };
            histogram.add(code >> 1, u64::from(loops));
        }
    }

    /// How many list entries it holds, for the memory figure.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.open.len() + self.ratings.len() + self.themes.len() + self.days.len()
    }
}

/// The buckets of one key: by day, and by block of [`BLOCK_DAYS`] days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Series {
    days: BTreeMap<Day, Bucket>,
    blocks: BTreeMap<Day, Bucket>,
}

/// The block a day belongs to.
fn block_of(day: Day) -> Day {
    day.div_euclid(BLOCK_DAYS)
}

/// The first day of a block.
fn first_day(block: Day) -> Day {
    block.saturating_mul(BLOCK_DAYS)
}

impl Series {
    /// The buckets whose loops are exactly those received on `days`: whole blocks inside
    /// them, and single days at either end.
    pub(crate) fn buckets(&self, days: Days) -> impl Iterator<Item = &Bucket> {
        // The blocks that lie wholly inside the days: from the first that starts on or after
        // `start`, up to (not including) the one `end` falls in.
        let first = days.start.map(|start| {
            let block = block_of(start);
            if first_day(block) == start {
                block
            } else {
                block.saturating_add(1)
            }
        });
        let last = days.end.map(block_of);
        let any_block = first.zip(last).is_none_or(|(first, last)| first < last);
        let (blocks, head, tail) = if any_block {
            (
                Some(self.blocks.range((
                    first.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included),
                    last.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                ))),
                days.start
                    .zip(first)
                    .map(|(start, first)| self.days.range(start..first_day(first))),
                days.end
                    .zip(last)
                    .map(|(end, last)| self.days.range(first_day(last)..end)),
            )
        } else {
            (None, Some(self.day_range(days)), None)
        };
        let blocks = blocks.into_iter().flatten();
        let days = head.into_iter().flatten().chain(tail.into_iter().flatten());
        blocks.chain(days).map(|(_, bucket)| bucket)
    }

    /// The day buckets of `days`, which are bounded on both sides here.
    fn day_range(&self, days: Days) -> std::collections::btree_map::Range<'_, Day, Bucket> {
        let start = days.start.unwrap_or(Day::MIN);
        let end = days.end.unwrap_or(Day::MAX).max(start);
        self.days.range(start..end)
    }

    fn buckets_mut(&mut self, day: Day) -> [&mut Bucket; 2] {
        [
            self.days.entry(day).or_default(),
            self.blocks.entry(block_of(day)).or_default(),
        ]
    }

    fn add(&mut self, c: &Contribution<'_>) {
        for bucket in self.buckets_mut(c.day) {
            bucket.change(c, true);
        }
    }

    fn remove(&mut self, c: &Contribution<'_>) {
        for (buckets, at) in [(&mut self.days, c.day), (&mut self.blocks, block_of(c.day))] {
            let bucket = buckets
                .get_mut(&at)
                .expect("a contribution is taken out only after it was added");
            bucket.change(c, false);
            if bucket.received == 0 {
                buckets.remove(&at);
            }
        }
    }

    fn replace(&mut self, was: &Contribution<'_>, now: &Contribution<'_>) {
        for bucket in self.buckets_mut(was.day) {
            bucket.replace(was, now);
        }
    }
}

/// The aggregates of every key (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Aggregates {
    series: BTreeMap<Key, Series>,
}

impl Aggregates {
    /// The aggregates of every loop, from scratch.
    pub(crate) fn build(hot: &[Hot], timing: &[SlotTiming], lists: &Lists) -> Self {
        let mut aggregates = Self::default();
        for (hot, timing) in hot.iter().zip(timing) {
            aggregates.add(&keys_of(hot, lists), &Contribution::of(hot, timing, lists));
        }
        aggregates
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

    /// Replaces a contribution added with the same keys by the loop's new one.
    pub(crate) fn replace(&mut self, keys: &[Key], was: &Contribution<'_>, now: &Contribution<'_>) {
        if was.day != now.day {
            self.remove(keys, was);
            self.add(keys, now);
            return;
        }
        for key in keys {
            self.series
                .get_mut(key)
                .expect("a contribution is replaced only after it was added")
                .replace(was, now);
        }
    }

    /// How many keys, buckets (days and blocks) and list entries there are, and about how
    /// many bytes they take, for the memory figure.
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> (usize, usize, usize, usize) {
        let buckets = || {
            self.series
                .values()
                .flat_map(|series| series.days.values().chain(series.blocks.values()))
        };
        let count = buckets().count();
        let entries: usize = buckets().map(Bucket::entries).sum();
        // A B-tree entry costs its key and value and about a third more in node slack; a list
        // entry its 8 bytes and the lists' spare capacity, about a quarter more.
        let bucket_bytes = (std::mem::size_of::<Day>() + std::mem::size_of::<Bucket>()) * 4 / 3;
        let bytes = count * bucket_bytes + entries * 8 * 5 / 4;
        (self.series.len(), count, entries, bytes)
    }
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
        assert_eq!(bucket.open, [(44, 1)]);
        assert_eq!(bucket.days, [(250, 1), (601, 1)]);
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
        let mut replaced = Series::default();
        replaced.add(&was);
        replaced.replace(&was, &now);
        let mut added = Series::default();
        added.add(&now);
        assert_eq!(replaced, added);
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
        // Everything: the 7 blocks.
        assert_eq!(count(None, None), (7, 200));
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
    fn buckets_stay_small() {
        assert_eq!(std::mem::size_of::<Bucket>(), 104);
    }
}

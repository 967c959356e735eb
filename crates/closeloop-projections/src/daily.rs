//! Per-day aggregates: for every *key* (the whole log, a place, a theme, a channel, a
//! seldom-heard group, and a few crossings of them) and every day on which loops were
//! received, how many loops there are, their Friends and Family Test answers, and exact
//! histograms of the whole working days they took to be heard back and to be closed.
//!
//! A question about a date range sums the days of one key: its cost follows the days and the
//! distinct day counts in range, never the number of loops. Histograms merge exactly, so
//! medians over any range are exact; and since every loop counts once in each key it belongs
//! to, the figures of "everyone but a group" are the key's figures less the group's.
//!
//! # Keys
//! A loop counts in:
//! - [`Key::All`];
//! - [`Key::Org`] of its org unit and of every prefix of it (a ward counts in its hospital and
//!   trust), so a place's subtree is one key;
//! - [`Key::Theme`] of each distinct theme, or of [`NO_THEME`] when it has none;
//! - [`Key::Channel`] of its channel;
//! - [`Key::Tag`] of each distinct seldom-heard tag and of [`ANY_TAG`] when it has one (so
//!   loops with no tag are [`Key::All`] less [`ANY_TAG`]);
//! - [`Key::OrgTheme`] and [`Key::OrgTag`] crossed with the prefixes of its org unit at most
//!   [`CROSS_DEPTH`] segments deep (trust, site, ward, bay), so that a place's themes and
//!   groups are keys too. Deeper places, and the other crossings (a theme's groups, a place's
//!   theme's groups), are small populations: questions about them are answered by scanning
//!   their loops (see `insights`), which gives the same figures.
//!
//! # Memory
//! A bucket (one key on one day) is a 56-byte [`Bucket`] plus 8 bytes per distinct number of
//! days in its histograms, in a B-tree of days (about 70 bytes a bucket with the tree's
//! overhead); buckets that empty are removed. A loop adds to at most
//! `1 + D + T + 1 + (G + 1) + min(D, 4) × (T + G + 1)` buckets, D being its org unit's
//! segments, T its themes (at least 1) and G its tags, all capped by the projection
//! (`limits`): typically 10 to 20. Buckets are shared by every loop of a key and day, so a
//! million loops over a year (15 wards, 11 themes, 6 groups) keep about 200,000 buckets and
//! 3 million histogram entries: 40 to 50 MB.
//!
//! The aggregates depend on the working-day calendar, so they are kept with the other
//! SLA-dependent figures (`timing`) and built from the loop records when those are. A
//! snapshot keeps them with the SLA they were computed for ([`FlatDaily`]), so that a start
//! under the same SLA loads them instead. At a million loops over a year (the `scale` test in
//! `daily_tests`), building them takes 1.5 s when loops were logged in about the order they
//! were received (3.5 s in random order), and keeping them up to date adds 1.5 to 3 µs to
//! each event applied.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::intern::{Lists, Names, RatingSets, RatingValue};
use crate::record::{Hot, Ts};
use crate::timing::{SlotTiming, days_in_units};

/// A day on which loops were received: days since 1970-01-01, in UTC.
pub(crate) type Day = i32;

/// Seconds in a day.
const DAY_SECONDS: i64 = 86_400;

/// The day (UTC) of an instant.
pub(crate) fn day_of(at: Ts) -> Day {
    // Before 1970 the nanoseconds are negative too: -0.5 s is (0 s, -500,000,000 ns), an
    // instant of the second before, on the day before midnight.
    let secs = if at.nanos < 0 { at.secs - 1 } else { at.secs };
    // Timestamps lie within 10,000 years of 1970, well inside an i32 of days.
    let day = secs.div_euclid(DAY_SECONDS);
    i32::try_from(day).unwrap_or(if day < 0 { Day::MIN } else { Day::MAX })
}

/// The theme id standing for "no theme" in [`Key::Theme`] and [`Key::OrgTheme`].
pub(crate) const NO_THEME: u32 = u32::MAX;
/// The tag id standing for "any seldom-heard tag" in [`Key::Tag`] and [`Key::OrgTag`].
pub(crate) const ANY_TAG: u32 = u32::MAX;
/// How deep a place may be (in org unit segments) for its themes and groups to be kept as
/// keys of their own.
pub(crate) const CROSS_DEPTH: usize = 4;

/// What a bucket counts loops of (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// Every loop.
    All,
    /// Loops in this org unit (an id of the org names table) or below it.
    Org(u32),
    /// Loops with this theme, or none ([`NO_THEME`]).
    Theme(u32),
    /// Loops that came through this channel (an index into `Channel::ALL`).
    Channel(u8),
    /// Loops with this seldom-heard tag, or with any ([`ANY_TAG`]).
    Tag(u32),
    /// Loops in this org unit or below it with this theme (or none).
    OrgTheme(u32, u32),
    /// Loops in this org unit or below it with this tag (or any).
    OrgTag(u32, u32),
}

/// What one loop adds to each bucket of its keys: the day it was received, its FFT answer,
/// and the whole working days it took to be heard back and to be closed, when it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contribution {
    pub(crate) day: Day,
    /// The Friends and Family Test answer, 1 to 6; `None` without one.
    pub(crate) fft: Option<u8>,
    /// Whole working days from receipt to the first contact.
    pub(crate) ack: Option<u32>,
    /// Whole working days from receipt to closing; `Some` exactly while the loop is closed.
    pub(crate) close: Option<u32>,
}

/// Whole working days of a [`days_key`](crate::timing::days_key): the fraction of a day is
/// dropped (a loop closed 2.7 working days after receipt took 2 whole days), so that one day
/// of the histogram holds every loop that took that many full working days.
pub(crate) fn whole_days(key: u64) -> Option<u32> {
    days_in_units(key, 1.0, f64::floor)
}

/// Which histogram of a bucket a number of days belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Working days from receipt to the first contact.
    Acknowledge = 0,
    /// Working days from receipt to closing.
    Close = 1,
}

/// The loops of one key received on one day.
///
/// `days` holds both histograms as one sorted list of (`days << 1 | measure`, loops), one
/// entry per distinct number of days, so that an empty bucket owns no heap memory and a
/// typical one a single small allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) received: u32,
    /// Loops per FFT answer 1 to 6.
    pub(crate) fft: [u32; 6],
    days: Vec<(u32, u32)>,
}

/// The key of a histogram entry. Days past `u32::MAX >> 1` (some six million years) share
/// the last entry.
fn code(measure: Measure, days: u32) -> u32 {
    (days.min(u32::MAX >> 1) << 1) | measure as u32
}

impl Bucket {
    fn add(&mut self, c: &Contribution) {
        self.received += 1;
        if let Some(answer) = c.fft {
            self.fft[usize::from(answer - 1)] += 1;
        }
        for (measure, days) in [(Measure::Acknowledge, c.ack), (Measure::Close, c.close)] {
            if let Some(days) = days {
                let code = code(measure, days);
                match self.days.binary_search_by_key(&code, |&(c, _)| c) {
                    Ok(i) => self.days[i].1 += 1,
                    Err(i) => self.days.insert(i, (code, 1)),
                }
            }
        }
    }

    /// Takes out what [`add`](Self::add) put in for the same contribution.
    fn remove(&mut self, c: &Contribution) {
        self.received -= 1;
        if let Some(answer) = c.fft {
            self.fft[usize::from(answer - 1)] -= 1;
        }
        for (measure, days) in [(Measure::Acknowledge, c.ack), (Measure::Close, c.close)] {
            if let Some(days) = days {
                let code = code(measure, days);
                let i = self
                    .days
                    .binary_search_by_key(&code, |&(c, _)| c)
                    .expect("a contribution is removed only after it was added");
                self.days[i].1 -= 1;
                if self.days[i].1 == 0 {
                    self.days.remove(i);
                }
            }
        }
        if self.days.is_empty() {
            self.days = Vec::new();
        }
    }

    /// Whether its counts add up: loops in it, no more answers than loops, histogram codes
    /// in increasing order, each counting at least one loop and no more than the bucket has.
    fn is_well_formed(&self) -> bool {
        let answers: u64 = self.fft.iter().map(|&n| u64::from(n)).sum();
        self.received > 0
            && answers <= u64::from(self.received)
            && self.days.windows(2).all(|pair| pair[0].0 < pair[1].0)
            && self
                .days
                .iter()
                .all(|&(_, loops)| (1..=self.received).contains(&loops))
    }

    /// Each (measure, whole days, loops) of the histograms.
    pub(crate) fn days(&self) -> impl Iterator<Item = (Measure, u32, u32)> + '_ {
        self.days.iter().map(|&(code, loops)| {
            let measure = if code & 1 == 0 {
                Measure::Acknowledge
            } else {
                Measure::Close
            };
            (measure, code >> 1, loops)
        })
    }
}

/// The buckets of one key, by day.
pub(crate) type Series = BTreeMap<Day, Bucket>;

/// Adds a contribution to a series.
pub(crate) fn add_to(series: &mut Series, c: &Contribution) {
    series.entry(c.day).or_default().add(c);
}

/// The per-day aggregates of every key (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Daily {
    series: BTreeMap<Key, Series>,
}

impl Daily {
    /// The buckets of `key`, if any loop ever counted in it.
    pub(crate) fn series(&self, key: Key) -> Option<&Series> {
        self.series.get(&key)
    }

    /// Every key in `range` with its buckets, in key order.
    pub(crate) fn range(
        &self,
        range: std::ops::RangeInclusive<Key>,
    ) -> impl Iterator<Item = (&Key, &Series)> {
        self.series.range(range)
    }

    /// How many loops [`Key::All`] counts: every loop once.
    pub(crate) fn loops(&self) -> u64 {
        self.series.get(&Key::All).map_or(0, |series| {
            series
                .values()
                .map(|bucket| u64::from(bucket.received))
                .sum()
        })
    }

    /// How many buckets there are, for tests and the memory figure.
    #[cfg(test)]
    pub(crate) fn bucket_count(&self) -> usize {
        self.series.values().map(BTreeMap::len).sum()
    }

    pub(crate) fn add(&mut self, keys: &[Key], c: &Contribution) {
        for &key in keys {
            add_to(self.series.entry(key).or_default(), c);
        }
    }

    /// Replaces a contribution added with the same keys by another of the same day: one
    /// look-up per key instead of two.
    pub(crate) fn replace(&mut self, keys: &[Key], was: &Contribution, now: &Contribution) {
        if was.day != now.day {
            self.remove(keys, was);
            self.add(keys, now);
            return;
        }
        for key in keys {
            let bucket = self
                .series
                .get_mut(key)
                .and_then(|series| series.get_mut(&was.day))
                .expect("a contribution is replaced only after it was added");
            bucket.remove(was);
            bucket.add(now);
        }
    }

    /// Takes out a contribution added with the same keys; buckets and keys that empty go.
    pub(crate) fn remove(&mut self, keys: &[Key], c: &Contribution) {
        for key in keys {
            let series = self
                .series
                .get_mut(key)
                .expect("a contribution is removed only after it was added");
            let bucket = series
                .get_mut(&c.day)
                .expect("a contribution is removed only after it was added");
            bucket.remove(c);
            if bucket.received == 0 {
                series.remove(&c.day);
                if series.is_empty() {
                    self.series.remove(key);
                }
            }
        }
    }
}

/// [`Daily`] as a snapshot keeps it: plain values in key and day order, so that it decodes
/// without a look-up per value.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct FlatDaily {
    /// Each key as [`Key::to_parts`], and how many buckets it has.
    keys: Vec<(u8, u32, u32, u32)>,
    /// Each bucket, key after key: its day, loops, FFT answers and number of histogram
    /// entries.
    buckets: Vec<(Day, u32, [u32; 6], u32)>,
    /// Every histogram entry as (code, loops), bucket after bucket.
    entries: Vec<(u32, u32)>,
}

impl Key {
    /// The key as (kind, first id, second id).
    fn to_parts(self) -> (u8, u32, u32) {
        match self {
            Key::All => (0, 0, 0),
            Key::Org(org) => (1, org, 0),
            Key::Theme(theme) => (2, theme, 0),
            Key::Channel(channel) => (3, u32::from(channel), 0),
            Key::Tag(tag) => (4, tag, 0),
            Key::OrgTheme(org, theme) => (5, org, theme),
            Key::OrgTag(org, tag) => (6, org, tag),
        }
    }

    /// The key [`to_parts`](Self::to_parts) gave these parts; `None` for parts no key gives.
    fn from_parts((kind, first, second): (u8, u32, u32)) -> Option<Self> {
        let key = match kind {
            0 => Key::All,
            1 => Key::Org(first),
            2 => Key::Theme(first),
            3 => Key::Channel(u8::try_from(first).ok()?),
            4 => Key::Tag(first),
            5 => Key::OrgTheme(first, second),
            6 => Key::OrgTag(first, second),
            _ => return None,
        };
        (key.to_parts() == (kind, first, second)).then_some(key)
    }
}

impl Daily {
    /// The aggregates flattened for a snapshot.
    pub(crate) fn to_flat(&self) -> FlatDaily {
        let mut flat = FlatDaily::default();
        for (key, series) in &self.series {
            let (kind, first, second) = key.to_parts();
            flat.keys.push((kind, first, second, count(series.len())));
            for (&day, bucket) in series {
                flat.buckets
                    .push((day, bucket.received, bucket.fft, count(bucket.days.len())));
                flat.entries.extend_from_slice(&bucket.days);
            }
        }
        flat
    }

    /// The aggregates [`to_flat`](Self::to_flat) flattened, checked to be well formed: keys
    /// of names the tables have, in order, each with buckets; days in order; each bucket with
    /// loops, no more answers than loops, and its histogram codes in order, each counting
    /// from one loop to all of them.
    pub(crate) fn from_flat(flat: &FlatDaily, sizes: &TableSizes) -> Result<Self, String> {
        let bad = |what: &str| Err(format!("the per-day aggregates {what}"));
        let mut buckets = flat.buckets.iter();
        let mut entries = flat.entries.as_slice();
        let mut series = Vec::with_capacity(flat.keys.len());
        for &(kind, first, second, len) in &flat.keys {
            let Some(key) = Key::from_parts((kind, first, second)).filter(|&key| sizes.knows(key))
            else {
                return bad("name a key that does not exist");
            };
            if series.last().is_some_and(|&(last, _)| last >= key) || len == 0 {
                return bad("have keys out of order or empty");
            }
            let mut days = Vec::with_capacity(buckets.len().min(len as usize));
            for _ in 0..len {
                let Some(&(day, received, fft, len)) = buckets.next() else {
                    return bad("have fewer buckets than their keys say");
                };
                let Some((histogram, rest)) = entries.split_at_checked(len as usize) else {
                    return bad("have fewer histogram entries than their buckets say");
                };
                entries = rest;
                let bucket = Bucket {
                    received,
                    fft,
                    days: histogram.to_vec(),
                };
                if !bucket.is_well_formed() {
                    return bad("have a bucket whose counts do not add up");
                }
                if days.last().is_some_and(|&(last, _)| last >= day) {
                    return bad("have days out of order");
                }
                days.push((day, bucket));
            }
            series.push((key, days.into_iter().collect()));
        }
        if buckets.next().is_some() || !entries.is_empty() {
            return bad("have more buckets or entries than their keys say");
        }
        Ok(Self {
            series: series.into_iter().collect(),
        })
    }
}

/// How many names each table of the read models holds, to check ids read from a snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableSizes {
    pub(crate) orgs: usize,
    pub(crate) themes: usize,
    pub(crate) tags: usize,
    pub(crate) rating_sets: usize,
}

impl TableSizes {
    pub(crate) fn is_org(&self, org: u32) -> bool {
        (org as usize) < self.orgs
    }

    /// Whether `theme` is a theme's id or `none`, the id standing for no theme.
    pub(crate) fn is_theme(&self, theme: u32, none: u32) -> bool {
        theme == none || (theme as usize) < self.themes
    }

    /// Whether `tag` is a tag's id or `other`, the id standing for none or any.
    pub(crate) fn is_tag(&self, tag: u32, other: u32) -> bool {
        tag == other || (tag as usize) < self.tags
    }

    pub(crate) fn is_channel(channel: u8) -> bool {
        usize::from(channel) < closeloop_domain::Channel::ALL.len()
    }

    fn knows(&self, key: Key) -> bool {
        match key {
            Key::All => true,
            Key::Org(org) => self.is_org(org),
            Key::Theme(theme) => self.is_theme(theme, NO_THEME),
            Key::Channel(channel) => Self::is_channel(channel),
            Key::Tag(tag) => self.is_tag(tag, ANY_TAG),
            Key::OrgTheme(org, theme) => self.is_org(org) && self.is_theme(theme, NO_THEME),
            Key::OrgTag(org, tag) => self.is_org(org) && self.is_tag(tag, ANY_TAG),
        }
    }
}

/// A length as the `u32` the flat forms keep.
fn count(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 2^32 buckets and entries")
}

/// What the aggregates read of the read models' tables to find a loop's keys and FFT answer.
#[derive(Clone, Copy)]
pub(crate) struct Tables<'a> {
    orgs: &'a Names,
    lists: &'a Lists,
    ratings: &'a RatingSets,
    /// The id of the rating named `fft`, if any loop has one.
    fft: Option<u32>,
}

impl<'a> Tables<'a> {
    pub(crate) fn new(
        orgs: &'a Names,
        lists: &'a Lists,
        ratings: &'a RatingSets,
        rating_names: &Names,
    ) -> Self {
        Self {
            orgs,
            lists,
            ratings,
            fft: rating_names.get(crate::stats::FFT),
        }
    }

    /// The table of theme and tag lists.
    pub(crate) fn lists(&self) -> &'a Lists {
        self.lists
    }

    /// The ids of an org unit's prefixes, shortest first, ending with the org unit itself.
    /// Every prefix was interned when the loop was indexed.
    pub(crate) fn org_prefixes(&self, org: u32) -> Vec<u32> {
        let path = self.orgs.name(org);
        let mut ids: Vec<u32> = path
            .bytes()
            .enumerate()
            .filter(|&(_, byte)| byte == b'/')
            .filter_map(|(i, _)| self.orgs.get(&path[..i]))
            .collect();
        ids.push(org);
        ids
    }

    /// The FFT answer (1 to 6) of a rating set, as the stats count it.
    pub(crate) fn fft_of(&self, set: u32) -> Option<u8> {
        let fft = self.fft?;
        self.ratings
            .get(set)
            .iter()
            .find(|&&(name, _)| name == fft)
            .and_then(|&(_, value)| match value {
                RatingValue::Unsigned(answer @ 1..=6) => u8::try_from(answer).ok(),
                _ => None,
            })
    }

    /// Every key a loop counts in (see the module docs).
    pub(crate) fn keys_of(&self, hot: &Hot) -> Vec<Key> {
        let prefixes = self.org_prefixes(hot.org);
        let themes = match self.lists.distinct(hot.themes) {
            [] => &[NO_THEME][..],
            themes => themes,
        };
        let tags = self.lists.distinct(hot.tags);
        let crossed = &prefixes[..prefixes.len().min(CROSS_DEPTH)];
        let mut keys = Vec::with_capacity(
            3 + prefixes.len() + themes.len() * (1 + crossed.len()) + tags.len() * 4,
        );
        keys.push(Key::All);
        keys.push(Key::Channel(hot.channel));
        keys.extend(prefixes.iter().map(|&org| Key::Org(org)));
        keys.extend(themes.iter().map(|&theme| Key::Theme(theme)));
        for &org in crossed {
            keys.extend(themes.iter().map(|&theme| Key::OrgTheme(org, theme)));
        }
        if !tags.is_empty() {
            for &tag in tags.iter().chain([&ANY_TAG]) {
                keys.push(Key::Tag(tag));
                keys.extend(crossed.iter().map(|&org| Key::OrgTag(org, tag)));
            }
        }
        keys
    }

    /// What a loop adds to its buckets, from its record and its SLA-dependent figures.
    pub(crate) fn contribution(&self, hot: &Hot, timing: &SlotTiming) -> Contribution {
        Contribution {
            day: day_of(hot.received()),
            fft: self.fft_of(hot.ratings),
            ack: whole_days(timing.ack),
            close: whole_days(timing.close),
        }
    }
}

/// Builds the aggregates of every loop from scratch.
pub(crate) fn build(tables: &Tables<'_>, hot: &[Hot], timing: &[SlotTiming]) -> Daily {
    let mut daily = Daily::default();
    for (hot, timing) in hot.iter().zip(timing) {
        daily.add(&tables.keys_of(hot), &tables.contribution(hot, timing));
    }
    daily
}

/// Exact counts of whole numbers of days, merged from buckets.
pub(crate) type DaysTally = Histogram<DENSE_DAYS>;

/// Numbers of days counted in a flat array: a year of working days and then some.
const DENSE_DAYS: u32 = 512;

/// The figures of a set of loops: a key's buckets summed over a range of days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sum {
    pub(crate) received: u64,
    pub(crate) fft: [u64; 6],
    pub(crate) ack: DaysTally,
    pub(crate) close: DaysTally,
}

impl Sum {
    /// Adds one bucket.
    pub(crate) fn add(&mut self, bucket: &Bucket) {
        self.received += u64::from(bucket.received);
        for (sum, &n) in self.fft.iter_mut().zip(&bucket.fft) {
            *sum += u64::from(n);
        }
        for (measure, days, loops) in bucket.days() {
            let tally = match measure {
                Measure::Acknowledge => &mut self.ack,
                Measure::Close => &mut self.close,
            };
            tally.add(days, u64::from(loops));
        }
    }

    /// The sum of a series' buckets on the days of `days`.
    pub(crate) fn of(series: &Series, days: Range<Day>) -> Self {
        let mut sum = Self::default();
        for bucket in series.range(days).map(|(_, bucket)| bucket) {
            sum.add(bucket);
        }
        sum
    }

    /// These figures less those of a subset of their loops.
    pub(crate) fn without(&self, subset: &Sum) -> Self {
        let mut rest = self.clone();
        rest.received -= subset.received;
        for (n, &m) in rest.fft.iter_mut().zip(&subset.fft) {
            *n -= m;
        }
        rest.ack.subtract(&subset.ack);
        rest.close.subtract(&subset.close);
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_takes_back_exactly_what_it_was_given() {
        let a = Contribution {
            day: 3,
            fft: Some(2),
            ack: Some(1),
            close: Some(1),
        };
        let b = Contribution {
            fft: None,
            close: None,
            ..a
        };
        let mut bucket = Bucket::default();
        bucket.add(&a);
        bucket.add(&b);
        assert_eq!(bucket.received, 2);
        assert_eq!(
            bucket.days().collect::<Vec<_>>(),
            [(Measure::Acknowledge, 1, 2), (Measure::Close, 1, 1)]
        );
        bucket.remove(&a);
        let mut only_b = Bucket::default();
        only_b.add(&b);
        assert_eq!(bucket, only_b);
        bucket.remove(&b);
        assert_eq!(bucket, Bucket::default());
    }

    #[test]
    fn whole_days_drop_the_fraction() {
        use crate::timing::days_key;
        assert_eq!(whole_days(crate::timing::NO_DAYS), None);
        assert_eq!(whole_days(days_key(0.0)), Some(0));
        assert_eq!(whole_days(days_key(0.99)), Some(0));
        assert_eq!(whole_days(days_key(2.0)), Some(2));
        assert_eq!(whole_days(days_key(2.7)), Some(2));
    }

    #[test]
    fn days_are_utc_days_before_and_after_1970() {
        assert_eq!(day_of(Ts { secs: 0, nanos: 0 }), 0);
        assert_eq!(
            day_of(Ts {
                secs: 86_399,
                nanos: 999
            }),
            0
        );
        assert_eq!(day_of(Ts { secs: -1, nanos: 0 }), -1);
        assert_eq!(
            day_of(Ts {
                secs: 0,
                nanos: -500_000_000
            }),
            -1
        );
        assert_eq!(
            day_of(Ts {
                secs: -86_400,
                nanos: -1
            }),
            -2
        );
        assert_eq!(
            day_of(Ts {
                secs: 86_400 * 20_000,
                nanos: 0
            }),
            20_000
        );
    }

    #[test]
    fn flat_aggregates_come_back_and_damaged_ones_are_refused() {
        let on = |day| Contribution {
            day,
            fft: Some(1),
            ack: Some(0),
            close: None,
        };
        let mut daily = Daily::default();
        daily.add(&[Key::All, Key::Theme(0)], &on(3));
        daily.add(&[Key::All], &on(5));
        let sizes = TableSizes {
            orgs: 0,
            themes: 1,
            tags: 0,
            rating_sets: 1,
        };
        assert_eq!(Daily::from_flat(&daily.to_flat(), &sizes).unwrap(), daily);
        let mut swapped = daily.to_flat();
        swapped.buckets.swap(0, 1);
        let err = Daily::from_flat(&swapped, &sizes).unwrap_err();
        assert!(err.contains("out of order"), "{err}");
        let no_themes = TableSizes { themes: 0, ..sizes };
        let err = Daily::from_flat(&daily.to_flat(), &no_themes).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let mut short = daily.to_flat();
        short.entries.pop();
        assert!(Daily::from_flat(&short, &sizes).is_err());
        let mut counted_twice = daily.to_flat();
        counted_twice.entries[0].1 = 2;
        let err = Daily::from_flat(&counted_twice, &sizes).unwrap_err();
        assert!(err.contains("do not add up"), "{err}");
    }

    #[test]
    fn buckets_stay_small() {
        assert_eq!(std::mem::size_of::<Bucket>(), 56);
    }
}

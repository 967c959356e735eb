//! How the sums of a set of loops are found: from a key of the per-day aggregates when one is
//! kept for the set, otherwise by one pass over the set's loops (found through the bitmaps),
//! which gives the very same sums; and which loops of a set are overdue now.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use roaring::{MultiOps, RoaringBitmap};

use super::DAY_SECONDS;
use crate::daily::{self, ANY_TAG, CROSS_DEPTH, Contribution, Day, Key, NO_THEME, Series, Sum};
use crate::index::OrderKey;
use crate::model::ReadModels;
use crate::timing::Timing;

/// The place of a selection: an org unit id and how deep it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place {
    pub(super) id: u32,
    pub(super) depth: usize,
}

/// What a set of loops is: every filter given must hold.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Filter {
    pub(super) place: Option<Place>,
    pub(super) theme: Option<u32>,
    pub(super) tag: Option<u32>,
}

impl ReadModels {
    /// The buckets of a set of loops: a key's when one is kept, otherwise from a scan of the
    /// loops in `days`.
    pub(super) fn series_of<'a>(
        &'a self,
        timing: &'a Timing,
        filter: Filter,
        days: Range<Day>,
    ) -> Cow<'a, Series> {
        let shallow = |place: Place| place.depth <= CROSS_DEPTH;
        let key = match (filter.place, filter.theme, filter.tag) {
            (None, None, None) => Some(Key::All),
            (Some(place), None, None) => Some(Key::Org(place.id)),
            (None, Some(theme), None) => Some(Key::Theme(theme)),
            (None, None, Some(tag)) => Some(Key::Tag(tag)),
            (Some(place), Some(theme), None) if shallow(place) => {
                Some(Key::OrgTheme(place.id, theme))
            }
            (Some(place), None, Some(tag)) if shallow(place) => Some(Key::OrgTag(place.id, tag)),
            _ => None,
        };
        if let Some(key) = key {
            return timing
                .daily
                .series(key)
                .map_or_else(|| Cow::Owned(Series::new()), Cow::Borrowed);
        }
        let mut series = Series::new();
        let tables = self.tables();
        for slot in &self.candidates_of(filter) {
            let i = slot as usize;
            let c = tables.contribution(&self.hot[i], &timing.slots[i]);
            if days.contains(&c.day) {
                daily::add_to(&mut series, &c);
            }
        }
        Cow::Owned(series)
    }
    /// The loops a filter lets through, as a bitmap (every loop without a filter).
    pub(super) fn candidates_of(&self, filter: Filter) -> RoaringBitmap {
        let empty = RoaringBitmap::new();
        let b = &self.bitmaps;
        let mut sets: Vec<&RoaringBitmap> = Vec::new();
        if let Some(place) = filter.place {
            sets.push(b.org.get(place.id as usize).unwrap_or(&empty));
        }
        if let Some(theme) = filter.theme {
            sets.push(b.theme.get(theme as usize).unwrap_or(&empty));
        }
        let any_tag;
        if let Some(tag) = filter.tag {
            if tag == ANY_TAG {
                any_tag = b.tag.iter().union();
                sets.push(&any_tag);
            } else {
                sets.push(b.tag.get(tag as usize).unwrap_or(&empty));
            }
        }
        sets.sort_by_key(|set| set.len());
        let mut sets = sets.into_iter();
        let Some(first) = sets.next() else {
            let mut all = RoaringBitmap::new();
            all.insert_range(0..u32::try_from(self.hot.len()).expect("slots are u32"));
            return all;
        };
        let mut result = first.clone();
        for set in sets {
            result &= set;
        }
        result
    }
    /// The figures of each theme (or each tag) of a selection in `days`, most loops first,
    /// ties by name; themes and tags without loops in range are left out, and so are
    /// [`NO_THEME`] and [`ANY_TAG`].
    pub(super) fn breakdown(
        &self,
        timing: &Timing,
        filter: Filter,
        by: Breakdown,
        days: Range<Day>,
    ) -> Vec<(u32, Sum)> {
        let mut sums: Vec<(u32, Sum)> = match family(filter, by) {
            Some(keys) => timing
                .daily
                .range(keys)
                .map(|(&key, series)| (key_id(key), Sum::of(series, days.clone())))
                .collect(),
            None => self.scan_breakdown(timing, filter, by, days),
        };
        sums.retain(|(_, sum)| sum.received > 0);
        self.rank(by, &mut sums, |sum| sum.received);
        sums
    }
    /// Like [`breakdown`](Self::breakdown), loops received only: what a list of choices
    /// needs, without merging histograms.
    pub(super) fn breakdown_counts(
        &self,
        timing: &Timing,
        filter: Filter,
        by: Breakdown,
        days: Range<Day>,
    ) -> Vec<(u32, u64)> {
        let mut counts: Vec<(u32, u64)> = match family(filter, by) {
            Some(keys) => timing
                .daily
                .range(keys)
                .map(|(&key, series)| {
                    let received = series
                        .range(days.clone())
                        .map(|(_, bucket)| u64::from(bucket.received))
                        .sum();
                    (key_id(key), received)
                })
                .collect(),
            None => self
                .scan_breakdown(timing, filter, by, days)
                .into_iter()
                .map(|(id, sum)| (id, sum.received))
                .collect(),
        };
        counts.retain(|&(_, received)| received > 0);
        self.rank(by, &mut counts, |&received| received);
        counts
    }
    /// Sorts (id, figures) pairs by loops received, most first, ties by name.
    fn rank<T>(&self, by: Breakdown, items: &mut [(u32, T)], received: impl Fn(&T) -> u64) {
        let names = match by {
            Breakdown::Themes => &self.themes,
            Breakdown::Tags => &self.tags,
        };
        items.sort_by(|(a, x), (b, y)| {
            received(y)
                .cmp(&received(x))
                .then_with(|| names.name(*a).cmp(names.name(*b)))
        });
    }
    /// [`breakdown`](Self::breakdown) by one pass over the selection's loops (with a tag
    /// when breaking down by tag).
    fn scan_breakdown(
        &self,
        timing: &Timing,
        filter: Filter,
        by: Breakdown,
        days: Range<Day>,
    ) -> Vec<(u32, Sum)> {
        let candidates = match by {
            Breakdown::Themes => self.candidates_of(filter),
            Breakdown::Tags => self.candidates_of(Filter {
                tag: Some(ANY_TAG),
                ..filter
            }),
        };
        let tables = self.tables();
        let mut sums: HashMap<u32, Sum> = HashMap::new();
        for slot in &candidates {
            let i = slot as usize;
            let hot = &self.hot[i];
            let c = tables.contribution(hot, &timing.slots[i]);
            if !days.contains(&c.day) {
                continue;
            }
            let ids = match by {
                Breakdown::Themes => self.lists.distinct(hot.themes),
                Breakdown::Tags => self.lists.distinct(hot.tags),
            };
            for &id in ids {
                add_one(sums.entry(id).or_default(), &c);
            }
        }
        sums.into_iter().collect()
    }
    /// The overdue loops of a selection received in `days`, in all and for each of `themes`
    /// (in order): the loops overdue now ([`Timing::overdue_at`]) intersected with the
    /// selection, the period and each theme, all as bitmaps.
    pub(super) fn overdue(
        &self,
        filter: Filter,
        days: Range<Day>,
        now: i64,
        timing: &Timing,
        themes: &[u32],
    ) -> Overdue {
        let mut overdue = self.candidates_of(filter);
        overdue &= timing.overdue_at(now);
        if !overdue.is_empty()
            && let Some(received) = self.received_in(days)
        {
            overdue &= received;
        }
        let empty = RoaringBitmap::new();
        Overdue {
            total: overdue.len(),
            by_theme: themes
                .iter()
                .map(|&theme| {
                    let loops = self.bitmaps.theme.get(theme as usize).unwrap_or(&empty);
                    overdue.intersection_len(loops)
                })
                .collect(),
        }
    }
    /// The loops received on the days of `days`, from the `received_at` order: whole buckets
    /// inside the range, loop by loop at its ends. `None` when that is every loop (the period
    /// covers everything received), which spares building it.
    fn received_in(&self, days: Range<Day>) -> Option<RoaringBitmap> {
        let from = crate::record::Ts {
            secs: i64::from(days.start) * DAY_SECONDS,
            nanos: 0,
        };
        let to = crate::record::Ts {
            secs: i64::from(days.end) * DAY_SECONDS,
            nanos: 0,
        };
        let mut all = self.order.entries_from(None);
        let first = all.next().map(|(key, _)| key.at);
        let last = all.last().or_else(|| self.order.entries_from(None).next());
        let latest = last.and_then(|(_, bucket)| {
            bucket
                .iter()
                .map(|slot| self.hot[slot as usize].received())
                .max()
        });
        if first.is_none_or(|first| first >= from) && latest.is_none_or(|latest| latest < to) {
            return None;
        }
        let mut whole: Vec<&RoaringBitmap> = Vec::new();
        let mut ends = RoaringBitmap::new();
        // The empty id sorts before every id.
        let start = OrderKey::new(from, "");
        let mut buckets = self.order.entries_from(Some(&start)).peekable();
        while let Some((key, bucket)) = buckets.next() {
            if key.at >= to {
                break;
            }
            // Every loop of a bucket sorts before the next bucket's key.
            let next = buckets.peek().map(|(next, _)| next.at);
            if key.at >= from && next.is_some_and(|next| next < to) {
                whole.push(bucket);
            } else {
                ends.extend(bucket.iter().filter(|&slot| {
                    let at = self.hot[slot as usize].received();
                    at >= from && at < to
                }));
            }
        }
        whole.push(&ends);
        Some(whole.into_iter().union())
    }
}

/// The keys that break a selection down by theme or tag, when they are kept: for every
/// loop, or a place no deeper than [`CROSS_DEPTH`], without a theme chosen.
fn family(filter: Filter, by: Breakdown) -> Option<std::ops::RangeInclusive<Key>> {
    let shallow = filter.place.is_none_or(|place| place.depth <= CROSS_DEPTH);
    match (by, filter.place, filter.theme) {
        (Breakdown::Themes, None, None) => Some(Key::Theme(0)..=Key::Theme(NO_THEME - 1)),
        (Breakdown::Themes, Some(place), None) if shallow => {
            Some(Key::OrgTheme(place.id, 0)..=Key::OrgTheme(place.id, NO_THEME - 1))
        }
        (Breakdown::Tags, None, None) => Some(Key::Tag(0)..=Key::Tag(ANY_TAG - 1)),
        (Breakdown::Tags, Some(place), None) if shallow => {
            Some(Key::OrgTag(place.id, 0)..=Key::OrgTag(place.id, ANY_TAG - 1))
        }
        _ => None,
    }
}

/// The theme or tag id of a key of a [`family`].
fn key_id(key: Key) -> u32 {
    match key {
        Key::Theme(id) | Key::OrgTheme(_, id) | Key::Tag(id) | Key::OrgTag(_, id) => id,
        Key::All | Key::Org(_) | Key::Channel(_) => {
            unreachable!("a family holds theme and tag keys only")
        }
    }
}

/// What a selection is broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Breakdown {
    Themes,
    Tags,
}

/// Overdue loops of a selection: in all, and for each of some themes.
#[derive(Debug)]
pub(super) struct Overdue {
    pub(super) total: u64,
    pub(super) by_theme: Vec<u64>,
}

/// Adds one loop's contribution to a sum.
fn add_one(sum: &mut Sum, c: &Contribution) {
    sum.received += 1;
    if let Some(answer) = c.fft {
        sum.fft[usize::from(answer - 1)] += 1;
    }
    if let Some(days) = c.ack {
        sum.ack.add(days, 1);
    }
    if let Some(days) = c.close {
        sum.close.add(days, 1);
    }
}

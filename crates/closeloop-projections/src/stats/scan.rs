//! Stats loop by loop: the reference the kept aggregates are checked against, and how the
//! loops no bucket covers are counted — those received on a partial day at either end of a
//! range, and every loop of a scope when grouping by theme, channel or seldom-heard tag (no
//! key is kept per scope and group; a scope's loops are as many as its places hold).
//!
//! One tight pass over the loops' compact records (or over the order buckets that cover the
//! range) adds each loop to its group(s). Per loop it only counts and notes two numbers;
//! themes and ratings are tallied by the id of the loop's whole theme list or rating set (a
//! handful of distinct values), and expanded once per group at the end.
//!
//! The cost is bounded by design: a loop counts in one group, or in one per theme or tag,
//! and the projection keeps at most [`MAX_THEMES`](crate::MAX_THEMES) themes and
//! [`MAX_TAGS`](crate::MAX_TAGS) tags per loop. So a scan adds at most loops ×
//! `MAX_THEMES` entries, and expanding theme lists counts at most loops × `MAX_THEMES` ×
//! `MAX_THEMES` themes (`group_by=theme`, where a theme's group lists the themes its loops
//! share); its memory is linear in the entries added and the number of distinct names.

use std::collections::BTreeMap;

use closeloop_domain::{Channel, OrgUnit};
use roaring::RoaringBitmap;

use super::aggregate::NONE;
use super::tally::{Tally, centi_days};
use super::{GroupBy, StatsWork};
use crate::index::OrderKey;
use crate::model::ReadModels;
use crate::record::{Hot, Ts};
use crate::timing::{SlotTiming, Timing};

/// The loops a scan counts: received in `from..to` (either side open when `None`) and, with
/// a scope, in that org unit or below it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selection<'a> {
    pub(crate) group_by: Option<GroupBy>,
    pub(crate) from: Option<Ts>,
    pub(crate) to: Option<Ts>,
    pub(crate) scope: Option<&'a OrgUnit>,
}

/// Counts per (group value, id): one flat array while that stays small, a hash map otherwise.
///
/// Either way its size is bounded by the number of `add` calls: at most one cell per call.
enum Grid {
    Dense { width: usize, counts: Vec<u32> },
    Sparse(hashbrown::HashMap<(u32, u32), u64>),
}

/// Dense grids are used while groups × ids stays at or below this many cells: a grid that
/// fits in a core's cache keeps each count a cheap increment.
const DENSE_CELLS: usize = 1 << 16;

impl Grid {
    fn new(values: usize, width: usize) -> Self {
        match values.checked_mul(width) {
            Some(cells) if cells <= DENSE_CELLS => Grid::Dense {
                width,
                counts: vec![0; cells],
            },
            _ => Grid::Sparse(hashbrown::HashMap::new()),
        }
    }

    #[inline]
    fn add(&mut self, value: u32, id: u32) {
        match self {
            Grid::Dense { width, counts } => counts[value as usize * *width + id as usize] += 1,
            Grid::Sparse(counts) => *counts.entry((value, id)).or_default() += 1,
        }
    }

    /// The non-zero counts of every group value, by value.
    fn into_rows(self, values: usize) -> Vec<Vec<(u32, u64)>> {
        let mut rows = vec![Vec::new(); values];
        match self {
            Grid::Dense { width, counts } => {
                if width > 0 {
                    for (value, row) in counts.chunks(width).enumerate() {
                        rows[value] = (0_u32..)
                            .zip(row)
                            .filter(|&(_, &n)| n > 0)
                            .map(|(id, &n)| (id, u64::from(n)))
                            .collect();
                    }
                }
            }
            Grid::Sparse(counts) => {
                for ((value, id), n) in counts {
                    rows[value as usize].push((id, n));
                }
            }
        }
        rows
    }
}

/// Running totals of every group, indexed densely: a theme's or tag's id, and the number of
/// names for the group without one.
struct Groups {
    received: Vec<u64>,
    closed: Vec<u64>,
    overdue: Vec<u64>,
    /// Hundredths of working days of each loop, added to the groups' histograms at the end:
    /// a list costs what the loops it holds, where a histogram per group would cost its span.
    ack: Vec<Vec<u32>>,
    close: Vec<Vec<u32>>,
    /// Loops per (group, theme list id). Counting whole lists, one cell per loop and group,
    /// keeps this grid linear in the loops × groups per loop, however the themes are spread;
    /// lists are expanded to themes one group at a time at the end.
    themes: Grid,
    /// Loops per (group, rating set id).
    ratings: Grid,
}

impl Groups {
    fn new(values: usize, lists: usize, rating_sets: usize) -> Self {
        Self {
            received: vec![0; values],
            closed: vec![0; values],
            overdue: vec![0; values],
            ack: vec![Vec::new(); values],
            close: vec![Vec::new(); values],
            themes: Grid::new(values, lists),
            ratings: Grid::new(values, rating_sets),
        }
    }

    /// Adds a loop to the group `value`.
    #[inline]
    fn add(&mut self, value: u32, hot: &Hot, timing: &SlotTiming, now: i64) {
        let v = value as usize;
        self.received[v] += 1;
        if hot.is_closed() {
            self.closed[v] += 1;
        } else if now > timing.due {
            self.overdue[v] += 1;
        }
        if let Some(centis) = centi_days(timing.ack) {
            self.ack[v].push(centis);
        }
        if let Some(centis) = centi_days(timing.close) {
            self.close[v].push(centis);
        }
        if hot.themes != 0 {
            self.themes.add(value, hot.themes);
        }
        if hot.ratings != 0 {
            self.ratings.add(value, hot.ratings);
        }
    }
}

impl ReadModels {
    /// Calls `f` with each group a loop counts in under `group_by`: `0` without one, its org
    /// unit's id, its channel's index, each distinct theme or tag id, or [`NONE`] for a loop
    /// without any.
    #[inline]
    pub(crate) fn groups_of(&self, hot: &Hot, group_by: Option<GroupBy>, mut f: impl FnMut(u32)) {
        let mut each = |ids: &[u32]| {
            if ids.is_empty() {
                f(NONE);
            }
            ids.iter().for_each(|&id| f(id));
        };
        match group_by {
            None => f(0),
            Some(GroupBy::OrgUnit) => f(hot.org),
            Some(GroupBy::Channel) => f(u32::from(hot.channel)),
            Some(GroupBy::Theme) => each(self.lists.distinct(hot.themes)),
            Some(GroupBy::SeldomHeard) => each(self.lists.distinct(hot.tags)),
        }
    }

    /// Adds the loops in `selection`, one by one, to the tally of each group they count in,
    /// by group value (as [`groups_of`](Self::groups_of) names them).
    pub(crate) fn scan(
        &self,
        selection: &Selection<'_>,
        now: i64,
        timing: &Timing,
        work: &mut StatsWork,
        tallies: &mut BTreeMap<u32, Tally>,
    ) {
        let Selection {
            group_by,
            from,
            to,
            scope,
        } = *selection;
        let names = match group_by {
            None => 1,
            Some(GroupBy::OrgUnit) => self.orgs.len(),
            Some(GroupBy::Channel) => Channel::ALL.len(),
            Some(GroupBy::Theme) => self.themes.len(),
            Some(GroupBy::SeldomHeard) => self.tags.len(),
        };
        // The group without a theme or tag comes after the names.
        let values = names + 1;
        let none = u32::try_from(names).unwrap_or(u32::MAX);
        let mut groups = Groups::new(values, self.lists.len(), self.ratings.len());
        let mut add = |slot: u32| {
            let i = slot as usize;
            let hot = &self.hot[i];
            let received = hot.received();
            if from.is_some_and(|from| received < from) || to.is_some_and(|to| received >= to) {
                return;
            }
            let slot_timing = &timing.slots[i];
            self.groups_of(hot, group_by, |value| {
                work.adds += 1;
                let dense = if value == NONE { none } else { value };
                groups.add(dense, hot, slot_timing, now);
            });
        };
        // A scope no loop was ever in leaves nothing to count.
        let empty = RoaringBitmap::new();
        let scope = scope.map(|org| self.org_bitmap(org).unwrap_or(&empty));
        match (scope, from.is_none() && to.is_none()) {
            (None, true) => {
                for slot in 0..u32::try_from(self.hot.len()).unwrap_or(u32::MAX) {
                    add(slot);
                }
            }
            (Some(scope), true) => scope.iter().for_each(&mut add),
            (scope, false) => {
                // Only the buckets that cover [from, to): the empty id sorts before every id.
                let start = from.map(|at| OrderKey::new(at, ""));
                for (key, bucket) in self.order.entries_from(start.as_ref()) {
                    if to.is_some_and(|to| key.at >= to) {
                        break;
                    }
                    match scope {
                        None => bucket.iter().for_each(&mut add),
                        Some(scope) => (bucket & scope).iter().for_each(&mut add),
                    }
                }
            }
        }
        let Groups {
            received,
            closed,
            overdue,
            mut ack,
            mut close,
            themes,
            ratings,
        } = groups;
        let mut list_rows = themes.into_rows(values);
        let mut rating_rows = ratings.into_rows(values);
        for (v, value) in (0..values).zip(0_u32..) {
            if received[v] == 0 {
                continue;
            }
            let tally = tallies
                .entry(if value == none { NONE } else { value })
                .or_default();
            tally.received += received[v];
            tally.closed += closed[v];
            tally.overdue += overdue[v];
            for (histogram, centis) in [
                (&mut tally.ack, &mut ack[v]),
                (&mut tally.close, &mut close[v]),
            ] {
                if let Some(&largest) = centis.iter().max() {
                    histogram.reserve_to(largest);
                }
                for &centis in centis.iter() {
                    histogram.add(centis, 1);
                }
            }
            for (set, n) in std::mem::take(&mut rating_rows[v]) {
                tally.ratings.add(set, n);
            }
            for (list, n) in std::mem::take(&mut list_rows[v]) {
                for &theme in self.lists.distinct(list) {
                    work.theme_counts += 1;
                    tally.themes.add(theme, n);
                }
            }
        }
    }
}

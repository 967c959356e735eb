//! `GET /v1/stats`: counts, closure, overdue, medians, ratings and top themes, per group.
//!
//! # How a query is answered
//! From the per-day aggregates the projector keeps (`aggregate`): a group's figures over the
//! whole days of the range are the sum of its key's buckets for those days (whole 32-day
//! blocks, and single days at the ends), so the work follows the days and the groups asked
//! for, never the number of loops. What no bucket covers is counted loop by loop (`scan`):
//! - the parts of the first and last day in range when `from` or `to` falls within a day
//!   (`range`; dates, which is what callers send, fall on midnight UTC and leave none);
//! - `overdue` of the loops due *today*: a bucket knows on which day each of its open loops
//!   becomes overdue, so those due on an earlier day are overdue now and those due on a later
//!   one are not; the few due today are checked against `now` one by one, from the due-day
//!   index `timing` keeps;
//! - a scope (a credential limited to an org unit) with `group_by` theme, channel or
//!   seldom-heard tag: no key is kept per scope and group, so the scope's loops are scanned,
//!   a cost bounded by the scope's size. Without `group_by`, or by org unit, a scope is the
//!   sum of the keys of the org units inside it.
//!
//! The scan over every loop in range is also the reference the aggregates are checked
//! against: both gather each group's [`Tally`](tally::Tally) and turn it into figures with the
//! same code (`tally`), and a property test checks they agree exactly.
//!
//! # Cost
//! At a million demo-like loops (the `scale` test, in release on one core), a query over
//! whole days takes 0.05 ms (one group) to about 1 ms (by org unit, 20 of them), over
//! everything or a month; partial days at both ends add a pass over their loops, about 1.5
//! ms at 8,000 loops a day. One scan of every loop takes about 30 ms.
//!
//! # Medians
//! A loop's working days are rounded to the nearest hundredth of a day, the precision the
//! medians are given in, so that histograms of them merge exactly; the median is the middle
//! loop's, or for an even count the mean of the two middle ones rounded half up to a
//! hundredth. For an odd count that is the middle loop's exact working days rounded to 2
//! decimals; for an even count it may differ from the mean of the unrounded middle values by
//! a hundredth.

mod aggregate;
#[cfg(test)]
mod properties;
mod range;
#[cfg(test)]
mod scale;
mod scan;
mod tally;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use closeloop_domain::{Channel, OrgUnit, Sla};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::ReadModels;
use crate::record::{Ts, clamped_nanos};
use crate::timing::{NANOS_PER_DAY, Timing};

pub(crate) use aggregate::{Aggregates, Contribution, FlatAggregates, keys_of};
use aggregate::{Key, NONE};
use scan::Selection;
use tally::Tally;

/// How `GET /v1/stats` groups loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// By the loop's full org unit path.
    OrgUnit,
    /// By theme: a loop counts in each of its themes; loops without one in `(none)`.
    Theme,
    /// By channel name.
    Channel,
    /// By seldom-heard tag: a loop counts in each of its tags; loops without one in `(none)`.
    SeldomHeard,
}

impl GroupBy {
    /// Parses `org_unit`, `theme`, `channel` or `seldom_heard`; `None` for anything else.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "org_unit" => Some(Self::OrgUnit),
            "theme" => Some(Self::Theme),
            "channel" => Some(Self::Channel),
            "seldom_heard" => Some(Self::SeldomHeard),
            _ => None,
        }
    }
}

/// The key of the group of loops that have no theme (or no tag).
pub const NONE_KEY: &str = "(none)";
/// The key of the single group when stats are not grouped.
pub const ALL_KEY: &str = "all";
/// The rating name of the Friends and Family Test.
pub const FFT: &str = "fft";
/// How many themes `top_themes` lists.
pub const TOP_THEMES: usize = 5;

/// The query of `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsQuery {
    /// How to group; `None`: one group, `all`.
    pub group_by: Option<GroupBy>,
    /// Only loops received at or after this instant.
    pub from: Option<Timestamp>,
    /// Only loops received before this instant.
    pub to: Option<Timestamp>,
    /// The caller's org-unit scope: only loops in this unit or below it (whole path
    /// segments), so every figure, totals included, counts only what the caller may see.
    pub scope: Option<OrgUnit>,
}

/// The answer of `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The groups, sorted by key.
    pub groups: Vec<StatsGroup>,
}

/// The figures for one group of loops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsGroup {
    /// The group: `all`, an org unit path, a theme, a channel name, a tag, or `(none)`.
    pub key: String,
    /// Loops received (in the `from`/`to` range).
    pub received: u64,
    /// Of those, open now.
    pub open: u64,
    /// Of those, closed now.
    pub closed: u64,
    /// `closed / received`, 0 when nothing was received.
    pub closure_rate: f64,
    /// Of the open ones, overdue now.
    pub overdue: u64,
    /// Median working days from receipt to the first contact, over loops that had one
    /// (2 decimals); `null` when none had.
    pub median_days_to_acknowledge: Option<f64>,
    /// Median working days from receipt to closing, over closed loops (2 decimals); `null`
    /// when none is closed.
    pub median_days_to_close: Option<f64>,
    /// Per rating name that occurs: FFT percentages, or count and mean.
    pub ratings: BTreeMap<String, RatingStats>,
    /// The most frequent themes, most frequent first, ties by name.
    pub top_themes: Vec<ThemeCount>,
}

/// The summary of one rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RatingStats {
    /// The Friends and Family Test, as NHS England reports it.
    Fft {
        /// Answers 1 to 6.
        count: u64,
        /// Percentage (0–100, 1 decimal) of answers 1 (very good) or 2 (good) among all.
        percent_positive: f64,
        /// Percentage (0–100, 1 decimal) of answers 4 (poor) or 5 (very poor) among all.
        percent_negative: f64,
    },
    /// Any other rating.
    Mean {
        /// How many loops carry it.
        count: u64,
        /// Their mean value.
        mean: f64,
    },
}

/// A theme and how many loops of the group have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThemeCount {
    /// The theme.
    pub theme: String,
    /// Loops with it.
    pub count: u64,
}

/// How much work a stats query did, for tests that check it stays bounded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsWork {
    /// Loops added to a group one by one (`scan`): one per loop and group it counts in.
    pub(crate) adds: u64,
    /// Themes counted while expanding theme lists in a scan: one per (group, list) cell and
    /// distinct theme of the list.
    pub(crate) theme_counts: u64,
    /// Buckets of the aggregates summed.
    pub(crate) buckets: u64,
    /// List entries of those buckets read.
    pub(crate) entries: u64,
    /// Open loops due today checked one by one against `now`.
    pub(crate) due_today: u64,
}

impl ReadModels {
    /// Stats per group of loops received in [`from`, `to`), at `now` under `sla` (contract §3
    /// `GET /v1/stats`). Without `group_by` there is always exactly one group, `all`.
    #[must_use]
    pub fn stats(&self, query: &StatsQuery, now: Timestamp, sla: &Sla) -> Stats {
        self.stats_traced(query, now, sla).0
    }

    /// Stats and the work they took (see [`StatsWork`]).
    pub(crate) fn stats_traced(
        &self,
        query: &StatsQuery,
        now: Timestamp,
        sla: &Sla,
    ) -> (Stats, StatsWork) {
        // A scope crossed with a theme, channel or tag grouping has no aggregate of its own.
        let scan = matches!(
            (query.group_by, &query.scope),
            (
                Some(GroupBy::Theme | GroupBy::Channel | GroupBy::SeldomHeard),
                Some(_)
            )
        );
        self.stats_by(query, now, sla, scan)
    }

    /// The same stats by one scan over every loop in range: the reference the aggregates are
    /// checked against.
    #[cfg(test)]
    pub(crate) fn stats_scanned(
        &self,
        query: &StatsQuery,
        now: Timestamp,
        sla: &Sla,
    ) -> (Stats, StatsWork) {
        self.stats_by(query, now, sla, true)
    }

    /// Tallies every group by scanning the loops in range or from the aggregates, then turns
    /// the tallies into figures.
    fn stats_by(
        &self,
        query: &StatsQuery,
        now: Timestamp,
        sla: &Sla,
        scan: bool,
    ) -> (Stats, StatsWork) {
        self.with_timing(sla, |timing| {
            let mut work = StatsWork::default();
            let now = clamped_nanos(now);
            let mut tallies = BTreeMap::new();
            if scan {
                self.scan(&selection(query), now, timing, &mut work, &mut tallies);
            } else {
                self.sum_aggregates(query, now, timing, &mut work, &mut tallies);
            }
            (self.assemble(query.group_by, tallies), work)
        })
    }

    /// Adds up the tally of every group from the aggregates: whole days from their buckets,
    /// the loops due today and the partial days at the ends one by one (see the module docs).
    fn sum_aggregates(
        &self,
        query: &StatsQuery,
        now: i64,
        timing: &Timing,
        work: &mut StatsWork,
        tallies: &mut BTreeMap<u32, Tally>,
    ) {
        let (days, edges) = range::split(query.from.map(Ts::of), query.to.map(Ts::of));
        let today = now.div_euclid(NANOS_PER_DAY);
        // With a scope, the org units inside it (which may hold no loop at all).
        let inside: Option<hashbrown::HashSet<u32>> = query.scope.as_ref().map(|scope| {
            let prefix = format!("{}/", scope.as_str());
            (0..self.orgs.len())
                .filter_map(|id| u32::try_from(id).ok())
                .filter(|&id| {
                    let name = self.orgs.name(id);
                    name == scope.as_str() || name.starts_with(&prefix)
                })
                .collect()
        });
        let keys = match query.group_by {
            None if inside.is_none() => Key::All..=Key::All,
            None | Some(GroupBy::OrgUnit) => Key::Org(0)..=Key::Org(u32::MAX),
            Some(GroupBy::Theme) => Key::Theme(0)..=Key::Theme(NONE),
            Some(GroupBy::Channel) => Key::Channel(0)..=Key::Channel(u8::MAX),
            Some(GroupBy::SeldomHeard) => Key::Tag(0)..=Key::Tag(NONE),
        };
        if !days.is_empty() {
            for (&key, series) in timing.stats.range(keys) {
                if let (Key::Org(org), Some(inside)) = (key, &inside)
                    && !inside.contains(&org)
                {
                    continue;
                }
                let value = match (query.group_by, key) {
                    (None, _) | (_, Key::All) => 0,
                    (_, Key::Org(id) | Key::Theme(id) | Key::Tag(id)) => id,
                    (_, Key::Channel(channel)) => u32::from(channel),
                };
                let tally = tallies.entry(value).or_default();
                for bucket in series.buckets(days) {
                    bucket.add_to(tally, today, work);
                }
            }
            // The open loops due today whose buckets are in range: overdue or not by the
            // instant they become so.
            let due = timing.due_in_order(today, &self.hot);
            work.due_today += due.len() as u64;
            let overdue = due.partition_point(|loop_due| now > loop_due.due);
            // Counted by group value first: one tally lookup a group, not one a loop.
            let mut overdue_by: hashbrown::HashMap<u32, u64> = hashbrown::HashMap::new();
            for loop_due in &due[..overdue] {
                if !days.contains(loop_due.received)
                    || inside
                        .as_ref()
                        .is_some_and(|inside| !inside.contains(&loop_due.org))
                {
                    continue;
                }
                let mut count = |value| *overdue_by.entry(value).or_default() += 1;
                match query.group_by {
                    None => count(0),
                    Some(GroupBy::OrgUnit) => count(loop_due.org),
                    Some(GroupBy::Channel) => count(u32::from(loop_due.channel)),
                    Some(GroupBy::Theme | GroupBy::SeldomHeard) => {
                        let hot = &self.hot[loop_due.slot as usize];
                        self.groups_of(hot, query.group_by, count);
                    }
                }
            }
            for (value, loops) in overdue_by {
                tallies.entry(value).or_default().overdue += loops;
            }
        }
        for (from, to) in edges {
            let edge = Selection {
                from: Some(from),
                to: Some(to),
                ..selection(query)
            };
            self.scan(&edge, now, timing, work, tallies);
        }
    }

    /// The answer from every group's tally: groups with loops, sorted by key; without
    /// `group_by` the one group `all`, even when empty.
    fn assemble(&self, group_by: Option<GroupBy>, mut tallies: BTreeMap<u32, Tally>) -> Stats {
        if group_by.is_none() {
            tallies.entry(0).or_default();
        }
        let mut groups: Vec<StatsGroup> = tallies
            .into_iter()
            .filter(|(_, tally)| tally.received > 0 || group_by.is_none())
            .map(|(value, tally)| {
                let key = match group_by {
                    None => ALL_KEY.to_owned(),
                    Some(GroupBy::Theme | GroupBy::SeldomHeard) if value == NONE => {
                        NONE_KEY.to_owned()
                    }
                    Some(GroupBy::OrgUnit) => self.orgs.name(value).to_owned(),
                    Some(GroupBy::Channel) => Channel::ALL[value as usize].as_str().to_owned(),
                    Some(GroupBy::Theme) => self.themes.name(value).to_owned(),
                    Some(GroupBy::SeldomHeard) => self.tags.name(value).to_owned(),
                };
                self.group_figures(key, &tally)
            })
            .collect();
        groups.sort_by(|a, b| a.key.cmp(&b.key));
        Stats { groups }
    }
}

/// What a scan of the whole query counts.
fn selection(query: &StatsQuery) -> Selection<'_> {
    Selection {
        group_by: query.group_by,
        from: query.from.map(Ts::of),
        to: query.to.map(Ts::of),
        scope: query.scope.as_ref(),
    }
}

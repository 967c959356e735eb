//! `GET /v1/stats`: counts, closure, overdue, medians, ratings and top themes, per group.
//!
//! One tight pass over the loops' compact records (or, with `from`/`to`, over the order
//! buckets that cover the range) adds each loop to its group(s). Per loop it only counts and
//! notes two numbers; themes and ratings are tallied by the id of the loop's whole theme list
//! or rating set (a handful of distinct values), and expanded to names once per group at the
//! end.

use std::collections::BTreeMap;

use closeloop_domain::{Channel, Sla};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::index::OrderKey;
use crate::intern::RatingValue;
use crate::model::ReadModels;
use crate::record::{Hot, Ts, clamped_nanos};
use crate::timing::{NO_DAYS, SlotTiming, Timing};

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

/// Counts per (group value, id): one flat array while that stays small, a hash map otherwise.
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
                        rows[value] = row
                            .iter()
                            .enumerate()
                            .filter(|&(_, &n)| n > 0)
                            .map(|(id, &n)| (u32::try_from(id).expect("ids are u32"), u64::from(n)))
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

/// Running totals of every group, indexed by the group's value id (see `stats_with`).
struct Groups {
    received: Vec<u64>,
    open: Vec<u64>,
    closed: Vec<u64>,
    overdue: Vec<u64>,
    ack_days: Vec<Vec<u64>>,
    close_days: Vec<Vec<u64>>,
    /// Loops per (group, theme list id), or per (group, theme id) when that grid would be
    /// too large (see [`Groups::by_list`]).
    themes: Grid,
    /// Whether `themes` counts whole theme lists (expanded to themes at the end) rather than
    /// single themes: cheaper per loop, as long as groups × lists stays small.
    by_list: bool,
    /// Loops per (group, rating set id).
    ratings: Grid,
}

impl Groups {
    fn new(values: usize, lists: usize, themes: usize, rating_sets: usize) -> Self {
        let by_list = values.saturating_mul(lists) <= DENSE_CELLS;
        Self {
            received: vec![0; values],
            open: vec![0; values],
            closed: vec![0; values],
            overdue: vec![0; values],
            ack_days: vec![Vec::new(); values],
            close_days: vec![Vec::new(); values],
            themes: Grid::new(values, if by_list { lists } else { themes }),
            by_list,
            ratings: Grid::new(values, rating_sets),
        }
    }

    /// Adds a loop to the group `value`: `themes` is its theme list's id and `distinct` the
    /// list's theme ids, each once.
    #[inline]
    fn add(&mut self, value: u32, hot: &Hot, distinct: &[u32], timing: &SlotTiming, now: i64) {
        let v = value as usize;
        self.received[v] += 1;
        if hot.is_closed() {
            self.closed[v] += 1;
        } else {
            self.open[v] += 1;
            if now > timing.due {
                self.overdue[v] += 1;
            }
        }
        if timing.ack != NO_DAYS {
            self.ack_days[v].push(timing.ack);
        }
        if timing.close != NO_DAYS {
            self.close_days[v].push(timing.close);
        }
        if self.by_list {
            if hot.themes != 0 {
                self.themes.add(value, hot.themes);
            }
        } else {
            for &theme in distinct {
                self.themes.add(value, theme);
            }
        }
        if hot.ratings != 0 {
            self.ratings.add(value, hot.ratings);
        }
    }
}

impl ReadModels {
    /// Stats per group of loops received in [`from`, `to`), at `now` under `sla` (contract §3
    /// `GET /v1/stats`). Without `group_by` there is always exactly one group, `all`.
    #[must_use]
    pub fn stats(&self, query: &StatsQuery, now: Timestamp, sla: &Sla) -> Stats {
        self.with_timing(sla, |timing| {
            self.stats_with(query, clamped_nanos(now), timing)
        })
    }

    fn stats_with(&self, query: &StatsQuery, now: i64, timing: &Timing) -> Stats {
        let group_by = query.group_by;
        let from = query.from.map(Ts::of);
        let to = query.to.map(Ts::of);
        let none_value = |names: usize| u32::try_from(names).expect("ids are u32");
        let values = match group_by {
            None => 1,
            Some(GroupBy::OrgUnit) => self.orgs.len(),
            Some(GroupBy::Channel) => Channel::ALL.len(),
            Some(GroupBy::Theme) => self.themes.len() + 1,
            Some(GroupBy::SeldomHeard) => self.tags.len() + 1,
        };
        let mut groups = Groups::new(
            values,
            self.lists.len(),
            self.themes.len(),
            self.ratings.len(),
        );
        if group_by.is_none() && from.is_none() && to.is_none() {
            groups.ack_days[0].reserve(self.hot.len());
            groups.close_days[0].reserve(self.hot.len());
        }
        let (theme_none, tag_none) = (none_value(self.themes.len()), none_value(self.tags.len()));
        // Each loop's distinct themes are needed to group by theme, or to count themes one by
        // one; counting whole lists needs only the list's id.
        let need_distinct = !groups.by_list || group_by == Some(GroupBy::Theme);
        let mut add = |slot: u32| {
            let i = slot as usize;
            let hot = &self.hot[i];
            let received = hot.received();
            if from.is_some_and(|from| received < from) || to.is_some_and(|to| received >= to) {
                return;
            }
            let themes = if need_distinct {
                self.lists.distinct(hot.themes)
            } else {
                &[]
            };
            let slot_timing = &timing.slots[i];
            let mut add_to = |value: u32| groups.add(value, hot, themes, slot_timing, now);
            match group_by {
                None => add_to(0),
                Some(GroupBy::OrgUnit) => add_to(hot.org),
                Some(GroupBy::Channel) => add_to(u32::from(hot.channel)),
                Some(GroupBy::Theme) => {
                    if themes.is_empty() {
                        add_to(theme_none);
                    }
                    for &theme in themes {
                        add_to(theme);
                    }
                }
                Some(GroupBy::SeldomHeard) => {
                    let tags = self.lists.distinct(hot.tags);
                    if tags.is_empty() {
                        add_to(tag_none);
                    }
                    for &tag in tags {
                        add_to(tag);
                    }
                }
            }
        };
        if from.is_none() && to.is_none() {
            for slot in 0..self.hot.len() {
                add(u32::try_from(slot).expect("slots are u32"));
            }
        } else {
            // Only the buckets that cover [from, to): the empty id sorts before every id.
            let start = from.map(|at| OrderKey::new(at, ""));
            for (key, bucket) in self.order.entries_from(start.as_ref()) {
                if to.is_some_and(|to| key.at >= to) {
                    break;
                }
                bucket.iter().for_each(&mut add);
            }
        }
        let Groups {
            received,
            open,
            closed,
            overdue,
            mut ack_days,
            mut close_days,
            themes,
            by_list,
            ratings,
        } = groups;
        let mut theme_rows = themes.into_rows(values);
        if by_list {
            for row in &mut theme_rows {
                *row = self.expand_lists(row);
            }
        }
        let mut rating_rows = ratings.into_rows(values);
        let mut out = Vec::new();
        for v in 0..values {
            if received[v] == 0 && group_by.is_some() {
                continue;
            }
            let value = u32::try_from(v).expect("ids are u32");
            let key = match group_by {
                None => ALL_KEY.to_owned(),
                Some(GroupBy::OrgUnit) => self.orgs.name(value).to_owned(),
                Some(GroupBy::Channel) => Channel::ALL[v].as_str().to_owned(),
                Some(GroupBy::Theme) if value == theme_none => NONE_KEY.to_owned(),
                Some(GroupBy::Theme) => self.themes.name(value).to_owned(),
                Some(GroupBy::SeldomHeard) if value == tag_none => NONE_KEY.to_owned(),
                Some(GroupBy::SeldomHeard) => self.tags.name(value).to_owned(),
            };
            out.push(StatsGroup {
                key,
                received: received[v],
                open: open[v],
                closed: closed[v],
                closure_rate: if received[v] == 0 {
                    0.0
                } else {
                    as_f64(closed[v]) / as_f64(received[v])
                },
                overdue: overdue[v],
                median_days_to_acknowledge: median(&mut ack_days[v]),
                median_days_to_close: median(&mut close_days[v]),
                ratings: self.rating_stats(&std::mem::take(&mut rating_rows[v])),
                top_themes: self.top_themes(std::mem::take(&mut theme_rows[v])),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Stats { groups: out }
    }

    /// Rating figures from (rating set id, loops) counts.
    fn rating_stats(&self, sets: &[(u32, u64)]) -> BTreeMap<String, RatingStats> {
        let mut fft = [0_u64; 7];
        let mut means: BTreeMap<u32, (u64, f64)> = BTreeMap::new();
        let fft_name = self.rating_names.get(FFT);
        for &(set, n) in sets {
            for &(name, value) in self.ratings.get(set) {
                if Some(name) == fft_name {
                    if let RatingValue::Unsigned(answer @ 1..=6) = value {
                        fft[usize::try_from(answer).expect("1 to 6")] += n;
                    }
                } else {
                    let entry = means.entry(name).or_default();
                    entry.0 += n;
                    entry.1 += value.as_f64() * as_f64(n);
                }
            }
        }
        let mut ratings: BTreeMap<String, RatingStats> = means
            .into_iter()
            .map(|(name, (count, sum))| {
                (
                    self.rating_names.name(name).to_owned(),
                    RatingStats::Mean {
                        count,
                        mean: sum / as_f64(count),
                    },
                )
            })
            .collect();
        let fft_count: u64 = fft[1..=6].iter().sum();
        if fft_count > 0 {
            let percent = |n: u64| round_to(100.0 * as_f64(n) / as_f64(fft_count), 1);
            ratings.insert(
                FFT.to_owned(),
                RatingStats::Fft {
                    count: fft_count,
                    percent_positive: percent(fft[1] + fft[2]),
                    percent_negative: percent(fft[4] + fft[5]),
                },
            );
        }
        ratings
    }

    /// (theme id, loops) counts from (theme list id, loops) counts.
    fn expand_lists(&self, lists: &[(u32, u64)]) -> Vec<(u32, u64)> {
        let mut themes: BTreeMap<u32, u64> = BTreeMap::new();
        for &(list, n) in lists {
            for &theme in self.lists.distinct(list) {
                *themes.entry(theme).or_default() += n;
            }
        }
        themes.into_iter().collect()
    }

    /// The [`TOP_THEMES`] most frequent themes from (theme id, loops) counts.
    fn top_themes(&self, counts: Vec<(u32, u64)>) -> Vec<ThemeCount> {
        let mut top: Vec<(u64, &str)> = counts
            .into_iter()
            .map(|(theme, n)| (n, self.themes.name(theme)))
            .collect();
        top.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        top.into_iter()
            .take(TOP_THEMES)
            .map(|(count, theme)| ThemeCount {
                theme: theme.to_owned(),
                count,
            })
            .collect()
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^53, where f64 is exact"
)]
fn as_f64(n: u64) -> f64 {
    n as f64
}

/// The median of working-day [`days_key`]s, rounded to 2 decimals; the mean of the two
/// middle values for an even count; `None` when empty.
fn median(keys: &mut [u64]) -> Option<f64> {
    let len = keys.len();
    if len == 0 {
        return None;
    }
    let (lower, upper, _) = keys.select_nth_unstable(len / 2);
    let upper = f64::from_bits(*upper);
    let median = if len % 2 == 1 {
        upper
    } else {
        let lower = f64::from_bits(
            lower
                .iter()
                .copied()
                .max()
                .expect("even count, so not empty"),
        );
        f64::midpoint(lower, upper)
    };
    Some(round_to(median, 2))
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::days_key;

    #[test]
    fn medians_of_odd_and_even_counts() {
        let median_of = |values: &[f64]| {
            let mut keys: Vec<u64> = values.iter().map(|&v| days_key(v)).collect();
            median(&mut keys)
        };
        assert_eq!(median_of(&[]), None);
        assert_eq!(median_of(&[3.0]), Some(3.0));
        assert_eq!(median_of(&[5.0, 0.0, 3.0]), Some(3.0));
        assert_eq!(median_of(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median_of(&[0.125, 10.5, 0.25, 2.0 / 3.0]), Some(0.46));
    }

    #[test]
    fn rounding() {
        assert_eq!(round_to(66.666_666, 1), 66.7);
        assert_eq!(round_to(1.234_9, 2), 1.23);
    }
}

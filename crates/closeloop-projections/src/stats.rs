//! `GET /v1/stats`: counts, closure, overdue, medians, ratings and top themes, per group.
//!
//! One tight pass over the loops' compact records (or, with `from`/`to`, over the order
//! buckets that cover the range) adds each loop to its group(s). Per loop it only counts and
//! notes two numbers; themes and ratings are tallied by the id of the loop's whole theme list
//! or rating set (a handful of distinct values), and expanded to names once per group at the
//! end.
//!
//! The cost is bounded by design: a loop counts in one group, or in one per theme or tag,
//! and the projection keeps at most [`MAX_THEMES`](crate::MAX_THEMES) themes and
//! [`MAX_TAGS`](crate::MAX_TAGS) tags per loop. So a query adds at most loops ×
//! `MAX_THEMES` entries, and expanding theme lists counts at most loops × `MAX_THEMES` ×
//! `MAX_THEMES` themes (`group_by=theme`, where a theme's group lists the themes its loops
//! share); its memory is linear in the entries added and the number of distinct names.

use std::collections::BTreeMap;

use closeloop_domain::{Channel, OrgUnit, Sla};
use jiff::Timestamp;
use roaring::RoaringBitmap;
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

/// Running totals of every group, indexed by the group's value id (see `stats_with`).
struct Groups {
    received: Vec<u64>,
    open: Vec<u64>,
    closed: Vec<u64>,
    overdue: Vec<u64>,
    ack_days: Vec<Vec<u64>>,
    close_days: Vec<Vec<u64>>,
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
            open: vec![0; values],
            closed: vec![0; values],
            overdue: vec![0; values],
            ack_days: vec![Vec::new(); values],
            close_days: vec![Vec::new(); values],
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
        if hot.themes != 0 {
            self.themes.add(value, hot.themes);
        }
        if hot.ratings != 0 {
            self.ratings.add(value, hot.ratings);
        }
    }
}

/// How much work a stats query did, for tests that check it stays linear.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsWork {
    /// Loops added to a group: one per loop and group it counts in.
    pub(crate) adds: u64,
    /// Themes counted while expanding theme lists: one per (group, list) cell and distinct
    /// theme of the list.
    pub(crate) theme_counts: u64,
}

/// Per-theme counts of one group at a time, reused across groups: touching only the themes
/// the group has keeps the expansion linear in what it counts, not in all themes × groups.
struct ThemeTally {
    counts: Vec<u64>,
    touched: Vec<u32>,
}

impl ThemeTally {
    fn new(themes: usize) -> Self {
        Self {
            counts: vec![0; themes],
            touched: Vec::new(),
        }
    }

    fn add(&mut self, theme: u32, n: u64) {
        let count = &mut self.counts[theme as usize];
        if *count == 0 {
            self.touched.push(theme);
        }
        *count += n;
    }

    /// The (theme, count) pairs counted since the last drain, and a fresh start.
    fn drain(&mut self) -> Vec<(u32, u64)> {
        let counts = &mut self.counts;
        self.touched
            .drain(..)
            .map(|theme| (theme, std::mem::take(&mut counts[theme as usize])))
            .collect()
    }
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
        self.with_timing(sla, |timing| {
            self.stats_with(query, clamped_nanos(now), timing)
        })
    }

    /// One pass over the loops in range adds each loop to its groups: at most one group, or
    /// one per theme or tag, which the projection caps (`limits`). Theme counts are kept per
    /// theme *list* and expanded per group at the end, so the work is at most loops × groups
    /// per loop × themes per loop, all bounded, and the memory linear in what was added.
    fn stats_with(&self, query: &StatsQuery, now: i64, timing: &Timing) -> (Stats, StatsWork) {
        let group_by = query.group_by;
        let from = query.from.map(Ts::of);
        let to = query.to.map(Ts::of);
        let none_value = |names: usize| u32::try_from(names).unwrap_or(u32::MAX);
        let values = match group_by {
            None => 1,
            Some(GroupBy::OrgUnit) => self.orgs.len(),
            Some(GroupBy::Channel) => Channel::ALL.len(),
            Some(GroupBy::Theme) => self.themes.len() + 1,
            Some(GroupBy::SeldomHeard) => self.tags.len() + 1,
        };
        let mut work = StatsWork::default();
        let mut groups = Groups::new(values, self.lists.len(), self.ratings.len());
        if group_by.is_none() && from.is_none() && to.is_none() {
            groups.ack_days[0].reserve(self.hot.len());
            groups.close_days[0].reserve(self.hot.len());
        }
        let (theme_none, tag_none) = (none_value(self.themes.len()), none_value(self.tags.len()));
        let mut add = |slot: u32| {
            let i = slot as usize;
            let hot = &self.hot[i];
            let received = hot.received();
            if from.is_some_and(|from| received < from) || to.is_some_and(|to| received >= to) {
                return;
            }
            let slot_timing = &timing.slots[i];
            let mut add_to = |value: u32| {
                work.adds += 1;
                groups.add(value, hot, slot_timing, now);
            };
            match group_by {
                None => add_to(0),
                Some(GroupBy::OrgUnit) => add_to(hot.org),
                Some(GroupBy::Channel) => add_to(u32::from(hot.channel)),
                Some(GroupBy::Theme) => {
                    let themes = self.lists.distinct(hot.themes);
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
        // A scope no loop was ever in leaves nothing to count.
        let empty = RoaringBitmap::new();
        let scope = query
            .scope
            .as_ref()
            .map(|org| self.org_bitmap(org).unwrap_or(&empty));
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
            open,
            closed,
            overdue,
            mut ack_days,
            mut close_days,
            themes,
            ratings,
        } = groups;
        let mut list_rows = themes.into_rows(values);
        let mut rating_rows = ratings.into_rows(values);
        let mut tally = ThemeTally::new(self.themes.len());
        let mut out = Vec::new();
        for (v, value) in (0..values).zip(0_u32..) {
            if received[v] == 0 && group_by.is_some() {
                continue;
            }
            let key = match group_by {
                None => ALL_KEY.to_owned(),
                Some(GroupBy::OrgUnit) => self.orgs.name(value).to_owned(),
                Some(GroupBy::Channel) => Channel::ALL[v].as_str().to_owned(),
                Some(GroupBy::Theme) if value == theme_none => NONE_KEY.to_owned(),
                Some(GroupBy::Theme) => self.themes.name(value).to_owned(),
                Some(GroupBy::SeldomHeard) if value == tag_none => NONE_KEY.to_owned(),
                Some(GroupBy::SeldomHeard) => self.tags.name(value).to_owned(),
            };
            for &(list, n) in &std::mem::take(&mut list_rows[v]) {
                for &theme in self.lists.distinct(list) {
                    work.theme_counts += 1;
                    tally.add(theme, n);
                }
            }
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
                top_themes: self.top_themes(tally.drain()),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        (Stats { groups: out }, work)
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

    /// The [`TOP_THEMES`] most frequent themes from (theme id, loops) counts.
    fn top_themes(&self, counts: Vec<(u32, u64)>) -> Vec<ThemeCount> {
        let mut top: Vec<(u64, &str)> = counts
            .into_iter()
            .map(|(theme, n)| (n, self.themes.name(theme)))
            .collect();
        let order = |a: &(u64, &str), b: &(u64, &str)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        // Only the first few are wanted: pick them before sorting, so a group with many
        // themes costs a linear pass rather than a full sort.
        if top.len() > TOP_THEMES {
            top.select_nth_unstable_by(TOP_THEMES, order);
            top.truncate(TOP_THEMES);
        }
        top.sort_unstable_by(order);
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
    use crate::limits::{MAX_TAGS, MAX_THEMES};
    use crate::timing::days_key;
    use closeloop_domain::{Event, EventType, LoopEvent, LoopId};
    use closeloop_store::{Hash, StoredEvent, record};

    /// Read models of `loops` loops, loop `n` with the themes `themes(n)` and tags
    /// `tags(n)`, stored as they are (no validation, as a log from before the limits may hold
    /// them).
    fn models_with(
        loops: usize,
        themes: impl Fn(usize) -> Vec<String>,
        tags: impl Fn(usize) -> Vec<String>,
    ) -> ReadModels {
        let mut models = ReadModels::default();
        for n in 0..loops {
            let data = serde_json::json!({
                "org_unit": "rxx", "channel": "web", "ratings": {"fft": 1},
                "themes": themes(n), "seldom_heard": tags(n),
            });
            receive(&mut models, n, "2026-11-23T09:00:00Z", data);
        }
        models
    }

    /// Applies `feedback.received` with `data` as loop `loop-{n}` at position `n + 1`.
    fn receive(models: &mut ReadModels, n: usize, time: &str, data: serde_json::Value) {
        let event = Event {
            event_id: format!("e-{n}"),
            source: "urn:test:stats".to_owned(),
            time: time.parse().unwrap(),
            payload: LoopEvent::from_stored_data(EventType::FeedbackReceived, data).unwrap(),
            actor: None,
        };
        let entry = StoredEvent {
            position: n as u64 + 1,
            loop_id: LoopId::parse(&format!("loop-{n}")).unwrap(),
            version: 1,
            prev_hash: Hash::ZERO,
            hash: Hash::ZERO,
            record: record::encode(&event),
        };
        models.apply(&entry, &event);
    }

    fn work(models: &ReadModels, group_by: Option<GroupBy>) -> (Stats, StatsWork) {
        let query = StatsQuery {
            group_by,
            ..StatsQuery::default()
        };
        models.stats_traced(
            &query,
            "2026-12-01T00:00:00Z".parse().unwrap(),
            &Sla::default(),
        )
    }

    fn names(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}-{i}")).collect()
    }

    #[test]
    fn one_loop_with_sixty_thousand_themes_costs_what_fifty_do() {
        let models = models_with(1, |_| names("theme", 60_000), |_| names("tag", 5_000));
        let (stats, work) = work(&models, Some(GroupBy::Theme));
        assert_eq!(stats.groups.len(), MAX_THEMES);
        let cap = MAX_THEMES as u64;
        assert_eq!(work.adds, cap, "one group per kept theme");
        assert_eq!(
            work.theme_counts,
            cap * cap,
            "each group counts the kept themes"
        );
        let (stats, work) = work_by_tag(&models);
        assert_eq!(stats.groups.len(), MAX_TAGS);
        assert_eq!(work.adds, MAX_TAGS as u64);
        assert_eq!(work.theme_counts, MAX_TAGS as u64 * cap);
    }

    fn work_by_tag(models: &ReadModels) -> (Stats, StatsWork) {
        work(models, Some(GroupBy::SeldomHeard))
    }

    #[test]
    fn work_grows_linearly_with_the_loops() {
        // Every loop has its own 50 themes, none shared: the worst spread for a grid of
        // (group, theme) counts, which used to grow with the square of the themes.
        let themes = |n: usize| names(&format!("loop{n}"), MAX_THEMES);
        let no_tags = |_| Vec::new();
        let small = models_with(40, themes, no_tags);
        let large = models_with(80, themes, no_tags);
        for group_by in [
            None,
            Some(GroupBy::OrgUnit),
            Some(GroupBy::Channel),
            Some(GroupBy::Theme),
            Some(GroupBy::SeldomHeard),
        ] {
            let (_, w40) = work(&small, group_by);
            let (_, w80) = work(&large, group_by);
            assert_eq!(w80.adds, 2 * w40.adds, "{group_by:?}");
            assert_eq!(w80.theme_counts, 2 * w40.theme_counts, "{group_by:?}");
            let per_loop = if group_by == Some(GroupBy::Theme) {
                MAX_THEMES as u64
            } else {
                1
            };
            assert_eq!(w40.adds, 40 * per_loop, "{group_by:?}");
            assert_eq!(
                w40.theme_counts,
                40 * per_loop * MAX_THEMES as u64,
                "{group_by:?}"
            );
        }
    }

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

    /// Read models of one loop per unit of `units`, received in that order a day apart.
    fn models_in_units(units: &[&str]) -> ReadModels {
        let mut models = ReadModels::default();
        for (n, unit) in units.iter().enumerate() {
            let data = serde_json::json!({
                "org_unit": unit, "channel": "web", "ratings": {"fft": 1 + n % 5},
                "received_at": format!("2026-11-{:02}T09:00:00Z", n + 1),
            });
            receive(&mut models, n, "2026-11-30T09:00:00Z", data);
        }
        models
    }

    #[test]
    fn a_scope_counts_only_its_subtree() {
        let models = models_in_units(&[
            "rxx/site-a",
            "rxx/site-ab",
            "rxx/site-a/ward-1",
            "ryy",
            "rxx/site-a/ward-1",
        ]);
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        let stats = |scope: &str, group_by, from: Option<&str>| {
            let query = StatsQuery {
                group_by,
                from: from.map(|from| from.parse().unwrap()),
                to: None,
                scope: Some(OrgUnit::parse(scope).unwrap()),
            };
            models.stats(&query, now, &Sla::default())
        };
        let all = stats("rxx/site-a", None, None);
        assert_eq!(all.groups.len(), 1);
        assert_eq!(all.groups[0].received, 3);
        let by_unit = stats("rxx/site-a", Some(GroupBy::OrgUnit), None);
        let keys: Vec<(&str, u64)> = by_unit
            .groups
            .iter()
            .map(|group| (group.key.as_str(), group.received))
            .collect();
        assert_eq!(keys, [("rxx/site-a", 1), ("rxx/site-a/ward-1", 2)]);
        // With a range, only the buckets in range are walked, still within the scope.
        let recent = stats("rxx/site-a", None, Some("2026-11-02T00:00:00Z"));
        assert_eq!(recent.groups[0].received, 2);
        // A scope no loop was ever in: one empty group, nothing else.
        let nowhere = stats("rzz", None, None);
        assert_eq!(nowhere.groups.len(), 1);
        assert_eq!(nowhere.groups[0].received, 0);
        assert!(
            stats("rzz", Some(GroupBy::Channel), Some("2026-01-01T00:00:00Z"))
                .groups
                .is_empty()
        );
    }
}

//! The patient leaders' insights: for a place (a subtree of org units) and a theme over a
//! period of received days, how much feedback came, how much of it was closed and how fast,
//! how many loops are overdue now, the Friends and Family Test by month, the most frequent
//! themes with example stories, and every seldom-heard group against everyone else.
//!
//! Figures come from the per-day aggregates (`daily`): a question sums the days of the key it
//! is about. Where no key is kept (a group of a theme, a place deeper than
//! [`CROSS_DEPTH`](crate::daily::CROSS_DEPTH), a place's theme's groups) the loops of that
//! small population are scanned instead, through the bitmaps, into the very same sums.
//! `overdue` depends on `now`, so it is counted from the open loops, not from the aggregates.
//!
//! **Small numbers are withheld.** Figures drawn from fewer than [`SUPPRESS_BELOW`] loops are
//! [`Disclosed::Suppressed`], as NHS statistics publish them: a group, its "everyone else",
//! a theme, the whole selection, and each month's FFT score (by its answers).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use closeloop_domain::{LoopId, OrgUnit, Sla};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use roaring::{MultiOps, RoaringBitmap};
use serde::Serialize;

use crate::daily::{
    self, ANY_TAG, CROSS_DEPTH, Contribution, Day, DaysTally, Key, NO_THEME, Series, Sum,
};
use crate::index::OrderKey;
use crate::model::ReadModels;
use crate::published::PublicKey;
use crate::record::clamped_nanos;
use crate::timing::Timing;

/// Figures drawn from fewer loops than this are withheld.
pub const SUPPRESS_BELOW: u64 = 10;
/// How many themes the insights list, most frequent first.
pub const INSIGHT_THEMES: usize = 5;
/// How many seldom-heard groups the insights compare at most, those with most loops first.
pub const MAX_GROUPS: usize = 20;
/// How many months the FFT trend shows at most (the latest ones).
pub const MAX_MONTHS: usize = 24;
/// How many published loops are offered per theme as examples: a few more than a page shows,
/// since some may have no story to show.
pub const EXAMPLE_CANDIDATES: usize = 6;
/// How many entries of the public page are looked through for examples at most, newest first.
const EXAMPLE_BUDGET: usize = 2_000;
/// The time-to-close distribution groups whole working days by this many (a working week).
pub const CLOSE_BIN_DAYS: u32 = 5;
/// How many bins the distribution has; the last holds everything from its start on.
pub const CLOSE_BINS: u32 = 10;

/// What the insights are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightsQuery {
    /// Only loops in this org unit or below it.
    pub place: Option<OrgUnit>,
    /// Only loops with this theme.
    pub theme: Option<String>,
    /// Only loops received on this day (UTC) or later.
    pub from: Date,
    /// Only loops received before this day (UTC).
    pub to: Date,
    /// The caller's org-unit scope: every figure counts only loops in it. A `place` outside
    /// it counts nothing.
    pub scope: Option<OrgUnit>,
}

/// A figure shown, or withheld because it would be drawn from fewer than [`SUPPRESS_BELOW`]
/// loops.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disclosed<T> {
    /// Drawn from enough loops to show.
    Shown(T),
    /// Drawn from fewer than [`SUPPRESS_BELOW`] loops: say "fewer than 10" instead.
    Suppressed,
}

impl<T> Disclosed<T> {
    fn when(loops: u64, figures: impl FnOnce() -> T) -> Self {
        if loops >= SUPPRESS_BELOW {
            Self::Shown(figures())
        } else {
            Self::Suppressed
        }
    }

    /// The figures, when shown.
    pub fn shown(&self) -> Option<&T> {
        match self {
            Self::Shown(figures) => Some(figures),
            Self::Suppressed => None,
        }
    }
}

/// The figures of a set of loops received in the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Loops received.
    pub received: u64,
    /// Of those, heard back (any contact with the person).
    pub acknowledged: u64,
    /// Of those, closed now.
    pub closed: u64,
    /// `closed / received`, 0 to 1.
    pub closure_rate: f64,
    /// Median whole working days from receipt to the first contact; `None` when none had one.
    pub median_days_to_acknowledge: Option<f64>,
    /// Median whole working days from receipt to closing; `None` when none is closed.
    pub median_days_to_close: Option<f64>,
    /// The Friends and Family Test; `None` when no loop has an answer.
    pub fft: Option<Fft>,
}

/// Friends and Family Test answers, as NHS England reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fft {
    /// Answers 1 to 6.
    pub answers: u64,
    /// Percentage (1 decimal) of answers 1 (very good) or 2 (good).
    pub percent_positive: f64,
    /// Percentage (1 decimal) of answers 4 (poor) or 5 (very poor).
    pub percent_negative: f64,
}

/// The whole selection's figures, with what depends on now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Headline {
    /// The figures.
    pub figures: Figures,
    /// Of the loops received, open now.
    pub open: u64,
    /// Of the open ones, overdue now.
    pub overdue: u64,
}

/// One bar of the time-to-close distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseBin {
    /// The fewest whole working days in the bin.
    pub from_days: u32,
    /// The most, inclusive; `None` for the last bin, which holds everything from `from_days`.
    pub to_days: Option<u32>,
    /// Closed loops that took that long.
    pub loops: u64,
}

/// The Friends and Family Test in one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthFft {
    /// The month's first day.
    pub month: Date,
    /// FFT answers of the loops received that month (in the period).
    pub answers: u64,
    /// Percentage of answers 1 or 2 (1 decimal), when there are enough answers.
    pub percent_positive: Disclosed<f64>,
}

/// A frequent theme of the selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThemeInsight {
    /// The theme, as given in feedback.
    pub theme: String,
    /// Its figures and overdue loops.
    pub figures: Disclosed<Headline>,
    /// Published loops of the theme (closed, consented, with a change), newest first, to show
    /// their redacted stories as examples.
    pub examples: Vec<Example>,
}

/// A published loop to show as an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// How the public page names it.
    pub key: PublicKey,
    /// The loop, to read its story from the store. Never to be shown.
    #[serde(skip)]
    pub loop_id: LoopId,
}

/// A seldom-heard group against everyone else in the selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupInsight {
    /// The group's tag, as given in feedback (e.g. `homeless`).
    pub tag: String,
    /// The comparison, when both sides have enough loops.
    pub comparison: Disclosed<Comparison>,
}

/// A group's figures, everyone else's, and the gaps between them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The group's loops.
    pub group: Figures,
    /// Every other loop of the selection (loops without the tag).
    pub everyone_else: Figures,
    /// The group's closure rate less everyone else's, in whole percentage points of the
    /// rounded rates (negative: the group's loops are closed less often).
    pub closure_gap_points: i64,
    /// The group's median working days to close less everyone else's (positive: the group
    /// waits longer); `None` when either has no closed loop.
    pub close_gap_days: Option<f64>,
}

/// Everything the insights page shows (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Insights {
    /// The place the figures are for, the caller's scope applied; `None`: everywhere.
    pub place: Option<OrgUnit>,
    /// The theme they are for; `None`: every theme.
    pub theme: Option<String>,
    /// The first day of the period.
    pub from: Date,
    /// The day after its last.
    pub to: Date,
    /// The whole selection.
    pub headline: Disclosed<Headline>,
    /// How long closed loops took, in bins of [`CLOSE_BIN_DAYS`]; empty when the headline
    /// is suppressed.
    pub close_days: Vec<CloseBin>,
    /// The FFT month by month, oldest first.
    pub fft_by_month: Vec<MonthFft>,
    /// The most frequent themes (just the selected one when a theme is chosen).
    pub themes: Vec<ThemeInsight>,
    /// The seldom-heard groups, those with most loops first.
    pub groups: Vec<GroupInsight>,
    /// Groups beyond [`MAX_GROUPS`], not compared.
    pub more_groups: usize,
}

/// The most places [`ReadModels::insight_choices`] offers.
pub const MAX_PLACE_CHOICES: usize = 100;
/// The most themes [`ReadModels::insight_choices`] offers.
pub const MAX_THEME_CHOICES: usize = 50;

/// What the insights page's filters may offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InsightChoices {
    /// Org units within the scope (not the scope itself) that loops were ever in, or are
    /// prefixes of such: at most [`MAX_PLACE_CHOICES`], the shallowest first, listed in path
    /// order.
    pub places: Vec<OrgUnit>,
    /// Themes of the loops of the query's place and period (whatever its theme), most loops
    /// first, ties by name: at most [`MAX_THEME_CHOICES`].
    pub themes: Vec<String>,
}

/// The place of a selection: an org unit id and how deep it is.
#[derive(Debug, Clone, Copy)]
struct Place {
    id: u32,
    depth: usize,
}

/// What a set of loops is: every filter given must hold.
#[derive(Debug, Clone, Copy, Default)]
struct Filter {
    place: Option<Place>,
    theme: Option<u32>,
    tag: Option<u32>,
}

/// Seconds in a day.
const DAY_SECONDS: i64 = 86_400;

/// The first day (UTC) of `date` as a [`Day`].
fn day_of_date(date: Date) -> Day {
    let secs = date
        .to_zoned(TimeZone::UTC)
        .map_or(0, |zoned| zoned.timestamp().as_second());
    daily::day_of(crate::record::Ts { secs, nanos: 0 })
}

impl ReadModels {
    /// The insights for `query` at `now`, with working days and due dates of `sla`.
    #[must_use]
    pub fn insights(&self, query: &InsightsQuery, now: Timestamp, sla: &Sla) -> Insights {
        self.with_timing(sla, |timing| self.insights_with(query, now, timing))
    }

    /// The places and themes the insights page may offer for `query`: places within its
    /// scope, and the themes of its place and period.
    #[must_use]
    pub fn insight_choices(&self, query: &InsightsQuery, sla: &Sla) -> InsightChoices {
        let mut places: Vec<(usize, &str)> = (0..self.orgs.len())
            .filter_map(|id| u32::try_from(id).ok())
            .map(|id| self.orgs.name(id))
            .filter(|name| {
                query.scope.as_ref().is_none_or(|scope| {
                    name.strip_prefix(scope.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                })
            })
            .map(|name| (name.split('/').count(), name))
            .collect();
        if places.len() > MAX_PLACE_CHOICES {
            places.select_nth_unstable(MAX_PLACE_CHOICES);
            places.truncate(MAX_PLACE_CHOICES);
        }
        let mut places: Vec<OrgUnit> = places
            .into_iter()
            .filter_map(|(_, name)| OrgUnit::parse(name).ok())
            .collect();
        places.sort();
        let place = effective_place(query.place.as_ref(), query.scope.as_ref());
        let days = day_of_date(query.from)..day_of_date(query.to).max(day_of_date(query.from));
        let themes = match self.filter(place, None) {
            None => Vec::new(),
            Some(filter) => self.with_timing(sla, |timing| {
                self.breakdown_counts(timing, filter, Breakdown::Themes, days)
                    .into_iter()
                    .take(MAX_THEME_CHOICES)
                    .map(|(theme, _)| self.themes.name(theme).to_owned())
                    .collect()
            }),
        };
        InsightChoices { places, themes }
    }

    fn insights_with(&self, query: &InsightsQuery, now: Timestamp, timing: &Timing) -> Insights {
        let place = effective_place(query.place.as_ref(), query.scope.as_ref());
        let days = day_of_date(query.from)..day_of_date(query.to).max(day_of_date(query.from));
        let mut insights = Insights {
            place: place.clone().flatten().or_else(|| query.place.clone()),
            theme: query.theme.clone(),
            from: query.from,
            to: query.to,
            headline: Disclosed::Suppressed,
            close_days: Vec::new(),
            fft_by_month: months(query.from, query.to)
                .into_iter()
                .map(|month| MonthFft {
                    month,
                    answers: 0,
                    percent_positive: Disclosed::Suppressed,
                })
                .collect(),
            themes: Vec::new(),
            groups: Vec::new(),
            more_groups: 0,
        };
        let Some(filter) = self.filter(place, query.theme.as_deref()) else {
            return insights;
        };
        let base = self.series_of(timing, filter, days.clone());
        let total = Sum::of(&base, days.clone());
        let months: Vec<Date> = insights.fft_by_month.iter().map(|m| m.month).collect();
        for (month, answers) in insights
            .fft_by_month
            .iter_mut()
            .zip(monthly_fft(&base, &months, &days))
        {
            month.answers = answers.iter().sum();
            month.percent_positive = Disclosed::when(month.answers, || {
                percent(answers[0] + answers[1], month.answers)
            });
        }
        let top = self.frequent_themes(timing, filter, days.clone(), &total);
        let top_ids: Vec<u32> = top.iter().map(|&(theme, _)| theme).collect();
        let overdue = self.overdue(filter, days.clone(), clamped_nanos(now), timing, &top_ids);
        insights.headline = Disclosed::when(total.received, || Headline {
            figures: figures(&total),
            open: total.received - total.close.total(),
            overdue: overdue.total,
        });
        if insights.headline.shown().is_some() {
            insights.close_days = close_bins(&total.close);
        }
        let mut examples = self.examples(filter.place, &top_ids, days.clone());
        insights.themes = top
            .into_iter()
            .zip(examples.iter_mut())
            .zip(overdue.by_theme)
            .map(|(((theme, sum), examples), overdue)| ThemeInsight {
                theme: self.themes.name(theme).to_owned(),
                figures: Disclosed::when(sum.received, || Headline {
                    figures: figures(&sum),
                    open: sum.received - sum.close.total(),
                    overdue,
                }),
                examples: std::mem::take(examples),
            })
            .collect();
        let groups = self.breakdown(timing, filter, Breakdown::Tags, days);
        insights.more_groups = groups.len().saturating_sub(MAX_GROUPS);
        insights.groups = groups
            .into_iter()
            .take(MAX_GROUPS)
            .map(|(tag, group)| {
                let rest = total.without(&group);
                GroupInsight {
                    tag: self.tags.name(tag).to_owned(),
                    comparison: Disclosed::when(group.received.min(rest.received), || {
                        compare(figures(&group), figures(&rest))
                    }),
                }
            })
            .collect();
        insights
    }

    /// The filter of a selection; `None` when it names a place or theme no loop ever had, or
    /// a place outside the scope.
    fn filter(&self, place: Option<Option<OrgUnit>>, theme: Option<&str>) -> Option<Filter> {
        let place = match place? {
            None => None,
            Some(org) => Some(Place {
                id: self.orgs.get(org.as_str())?,
                depth: org.as_str().split('/').count(),
            }),
        };
        let theme = match theme {
            None => None,
            Some(theme) => Some(self.themes.get(theme)?),
        };
        Some(Filter {
            place,
            theme,
            tag: None,
        })
    }

    /// The buckets of a set of loops: a key's when one is kept, otherwise from a scan of the
    /// loops in `days`.
    fn series_of<'a>(
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
    fn candidates_of(&self, filter: Filter) -> RoaringBitmap {
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
    fn breakdown(
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
    fn breakdown_counts(
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
    fn overdue(
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

    /// The most frequent themes of the selection with their figures, most loops first; just
    /// the selected theme when one is (and has loops).
    fn frequent_themes<'a>(
        &self,
        timing: &Timing,
        filter: Filter,
        days: Range<Day>,
        total: &'a Sum,
    ) -> Vec<(u32, Cow<'a, Sum>)> {
        match filter.theme {
            Some(_) if total.received == 0 => Vec::new(),
            Some(theme) => vec![(theme, Cow::Borrowed(total))],
            // Counts pick the themes; only theirs are summed whole.
            None => self
                .breakdown_counts(timing, filter, Breakdown::Themes, days.clone())
                .into_iter()
                .take(INSIGHT_THEMES)
                .map(|(theme, _)| {
                    let filter = Filter {
                        theme: Some(theme),
                        ..filter
                    };
                    let sum = Sum::of(&self.series_of(timing, filter, days.clone()), days.clone());
                    (theme, Cow::Owned(sum))
                })
                .collect(),
        }
    }

    /// Up to [`EXAMPLE_CANDIDATES`] published loops for each of `themes`, in `place` and
    /// received in `days`, newest first: the first [`EXAMPLE_BUDGET`] entries of the public
    /// page are looked through, so a theme that has none among them has none.
    fn examples(
        &self,
        place: Option<Place>,
        themes: &[u32],
        days: Range<Day>,
    ) -> Vec<Vec<Example>> {
        let mut found: Vec<Vec<Example>> = vec![Vec::new(); themes.len()];
        let in_place = place.map(|place| self.bitmaps.org.get(place.id as usize));
        for (entry, &slot) in self.published.iter().take(EXAMPLE_BUDGET) {
            if found
                .iter()
                .all(|examples| examples.len() >= EXAMPLE_CANDIDATES)
            {
                break;
            }
            let hot = &self.hot[slot as usize];
            let placed = match in_place {
                None => true,
                Some(bitmap) => bitmap.is_some_and(|bitmap| bitmap.contains(slot)),
            };
            if !placed || !days.contains(&daily::day_of(hot.received())) {
                continue;
            }
            let Ok(loop_id) = LoopId::parse(self.ids.get(slot)) else {
                continue;
            };
            let loop_themes = self.lists.distinct(hot.themes);
            for (examples, theme) in found.iter_mut().zip(themes) {
                if examples.len() < EXAMPLE_CANDIDATES && loop_themes.contains(theme) {
                    examples.push(Example {
                        key: entry.key.clone(),
                        loop_id: loop_id.clone(),
                    });
                }
            }
        }
        found
    }
}

/// FFT answers 1 to 6 in each month of `months` (first days, in order), counting the buckets
/// of `series` on the days of `days` only.
fn monthly_fft(series: &Series, months: &[Date], days: &Range<Day>) -> Vec<[u64; 6]> {
    months
        .iter()
        .map(|&month| {
            let start = day_of_date(month).max(days.start);
            let end = month
                .checked_add(1.month())
                .map_or(days.end, day_of_date)
                .min(days.end);
            let mut answers = [0_u64; 6];
            if start < end {
                for bucket in series.range(start..end).map(|(_, bucket)| bucket) {
                    for (sum, &n) in answers.iter_mut().zip(&bucket.fft) {
                        *sum += u64::from(n);
                    }
                }
            }
            answers
        })
        .collect()
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
enum Breakdown {
    Themes,
    Tags,
}

/// Overdue loops of a selection: in all, and for each of some themes.
#[derive(Debug)]
struct Overdue {
    total: u64,
    by_theme: Vec<u64>,
}

/// The org unit the figures count: the place within the scope. `None`: nothing may be
/// counted (the place is outside the scope); `Some(None)`: everywhere.
fn effective_place(place: Option<&OrgUnit>, scope: Option<&OrgUnit>) -> Option<Option<OrgUnit>> {
    match (place, scope) {
        (None, None) => Some(None),
        (Some(only), None) | (None, Some(only)) => Some(Some(only.clone())),
        (Some(place), Some(scope)) if place.is_within(scope) => Some(Some(place.clone())),
        (Some(place), Some(scope)) if scope.is_within(place) => Some(Some(scope.clone())),
        (Some(_), Some(_)) => None,
    }
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

#[allow(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^53, where f64 is exact"
)]
fn as_f64(n: u64) -> f64 {
    n as f64
}

/// `part` of `whole` as a percentage with 1 decimal.
fn percent(part: u64, whole: u64) -> f64 {
    (1000.0 * as_f64(part) / as_f64(whole)).round() / 10.0
}

/// The figures of a sum.
fn figures(sum: &Sum) -> Figures {
    let answers: u64 = sum.fft.iter().sum();
    Figures {
        received: sum.received,
        acknowledged: sum.ack.total(),
        closed: sum.close.total(),
        closure_rate: if sum.received == 0 {
            0.0
        } else {
            as_f64(sum.close.total()) / as_f64(sum.received)
        },
        median_days_to_acknowledge: sum.ack.median(),
        median_days_to_close: sum.close.median(),
        fft: (answers > 0).then(|| Fft {
            answers,
            percent_positive: percent(sum.fft[0] + sum.fft[1], answers),
            percent_negative: percent(sum.fft[3] + sum.fft[4], answers),
        }),
    }
}

/// A closure rate as a whole percentage, as the page says it.
#[must_use]
pub fn whole_percent(rate: f64) -> i64 {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a rate is 0 to 1, so its percentage fits"
    )]
    let percent = (rate * 100.0).round() as i64;
    percent
}

/// A group against everyone else.
fn compare(group: Figures, everyone_else: Figures) -> Comparison {
    Comparison {
        closure_gap_points: whole_percent(group.closure_rate)
            - whole_percent(everyone_else.closure_rate),
        close_gap_days: group
            .median_days_to_close
            .zip(everyone_else.median_days_to_close)
            .map(|(group, rest)| group - rest),
        group,
        everyone_else,
    }
}

/// The time-to-close distribution: whole working days in bins of [`CLOSE_BIN_DAYS`], the
/// last bin open-ended.
fn close_bins(tally: &DaysTally) -> Vec<CloseBin> {
    let mut bins: Vec<CloseBin> = (0..CLOSE_BINS)
        .map(|bin| CloseBin {
            from_days: bin * CLOSE_BIN_DAYS,
            to_days: (bin + 1 < CLOSE_BINS).then(|| (bin + 1) * CLOSE_BIN_DAYS - 1),
            loops: 0,
        })
        .collect();
    for (days, loops) in tally.counts() {
        let bin = (days / CLOSE_BIN_DAYS).min(CLOSE_BINS - 1);
        bins[bin as usize].loops += loops;
    }
    bins
}

/// The first days of the months of the period [`from`, `to`), at most the last
/// [`MAX_MONTHS`].
fn months(from: Date, to: Date) -> Vec<Date> {
    let mut months = Vec::new();
    let mut month = from.first_of_month();
    while month < to {
        months.push(month);
        match month.checked_add(1.month()) {
            Ok(next) => month = next,
            Err(_) => break,
        }
    }
    let excess = months.len().saturating_sub(MAX_MONTHS);
    months.drain(..excess);
    months
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{GroupBy, StatsQuery};
    use closeloop_domain::{Event, EventType, LoopEvent};
    use closeloop_store::{Hash, StoredEvent, record};

    /// Applies `event_type` with `data` to loop `loop_id` at `time`, as the next entry.
    fn apply(
        models: &mut ReadModels,
        loop_id: &str,
        time: &str,
        event_type: EventType,
        data: serde_json::Value,
    ) {
        let event = Event {
            event_id: format!("e-{}", models.checkpoint()),
            source: "urn:test:insights".to_owned(),
            time: time.parse().expect("a time"),
            payload: LoopEvent::from_stored_data(event_type, data).expect("data"),
            actor: None,
        };
        let entry = StoredEvent {
            position: models.checkpoint() + 1,
            loop_id: LoopId::parse(loop_id).expect("an id"),
            version: 1,
            prev_hash: Hash::ZERO,
            hash: Hash::ZERO,
            record: record::encode(&event),
        };
        models.apply(&entry, &event);
    }

    /// Each org unit's own loops from the aggregates, as `group_by=org_unit` keys them: its
    /// subtree less the subtrees of its children. This is how `/v1/stats` can be served from
    /// the aggregates.
    fn by_org_unit(models: &ReadModels, days: Range<Day>) -> Vec<(String, Sum)> {
        models.with_timing(&Sla::default(), |timing| {
            let subtree = |id: u32| {
                timing
                    .daily
                    .series(Key::Org(id))
                    .map(|series| Sum::of(series, days.clone()))
                    .unwrap_or_default()
            };
            let mut units = Vec::new();
            for id in 0..u32::try_from(models.orgs.len()).expect("few") {
                let name = models.orgs.name(id);
                let mut own = subtree(id);
                for child in 0..u32::try_from(models.orgs.len()).expect("few") {
                    let child_name = models.orgs.name(child);
                    let is_child = child_name
                        .strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .is_some_and(|rest| !rest.contains('/'));
                    if is_child {
                        own = own.without(&subtree(child));
                    }
                }
                if own.received > 0 {
                    units.push((name.to_owned(), own));
                }
            }
            units.sort_by(|a, b| a.0.cmp(&b.0));
            units
        })
    }

    #[test]
    fn the_aggregates_give_what_stats_give_overall_and_by_org_unit() {
        let mut models = ReadModels::default();
        models.prepare(&Sla::default());
        // Monday 2 November 2026; loops closed whole working days later, at the same time.
        let units = [
            "rxx", "rxx/a", "rxx/a/w1", "rxx/a/w1", "rxx/b/w2", "ryy", "rxx/a",
        ];
        let closes = [
            Some("2026-11-05"),
            None,
            Some("2026-11-03"),
            Some("2026-11-12"),
            None,
            Some("2026-11-02"),
            Some("2026-11-09"),
        ];
        for (n, (unit, close)) in units.iter().zip(closes).enumerate() {
            let id = format!("l{n}");
            let data =
                serde_json::json!({"org_unit": unit, "channel": "web", "ratings": {"fft": 2}});
            apply(
                &mut models,
                &id,
                "2026-11-02T09:00:00Z",
                EventType::FeedbackReceived,
                data,
            );
            if let Some(day) = close {
                let at = format!("{day}T09:00:00Z");
                apply(
                    &mut models,
                    &id,
                    &at,
                    EventType::ChangeMade,
                    serde_json::json!({"by": "w", "description": "d"}),
                );
                apply(
                    &mut models,
                    &id,
                    &at,
                    EventType::ReportedBack,
                    serde_json::json!({"by": "w", "message": "m"}),
                );
            }
        }
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().expect("a time");
        let days = day_of_date(date("2026-11-01"))..day_of_date(date("2026-12-01"));
        let query = |group_by| StatsQuery {
            group_by,
            from: Some("2026-11-01T00:00:00Z".parse().expect("a time")),
            to: Some("2026-12-01T00:00:00Z".parse().expect("a time")),
            scope: None,
        };
        let figures_of = |sum: &Sum| {
            let figures = figures(sum);
            (
                figures.received,
                figures.closed,
                figures.median_days_to_acknowledge,
                figures.median_days_to_close,
            )
        };
        let stats = models.stats(&query(Some(GroupBy::OrgUnit)), now, &Sla::default());
        let from_stats: Vec<_> = stats
            .groups
            .iter()
            .map(|g| {
                (
                    g.key.clone(),
                    (
                        g.received,
                        g.closed,
                        g.median_days_to_acknowledge,
                        g.median_days_to_close,
                    ),
                )
            })
            .collect();
        let from_aggregates: Vec<_> = by_org_unit(&models, days.clone())
            .iter()
            .map(|(unit, sum)| (unit.clone(), figures_of(sum)))
            .collect();
        assert_eq!(from_aggregates, from_stats);
        assert_eq!(from_stats.len(), 5, "{from_stats:?}");

        let overall = &models.stats(&query(None), now, &Sla::default()).groups[0];
        let all = models.with_timing(&Sla::default(), |timing| {
            Sum::of(timing.daily.series(Key::All).expect("loops"), days)
        });
        assert_eq!(
            figures_of(&all),
            (
                overall.received,
                overall.closed,
                overall.median_days_to_acknowledge,
                overall.median_days_to_close
            )
        );
    }

    fn date(raw: &str) -> Date {
        raw.parse().expect("a date")
    }

    #[test]
    fn a_place_outside_the_scope_counts_nothing_and_an_ancestor_counts_the_scope() {
        let org = |raw: &str| OrgUnit::parse(raw).expect("an org unit");
        let scope = org("rxx/a");
        assert_eq!(effective_place(None, None), Some(None));
        assert_eq!(
            effective_place(None, Some(&scope)),
            Some(Some(scope.clone()))
        );
        assert_eq!(
            effective_place(Some(&org("rxx/a/w1")), Some(&scope)),
            Some(Some(org("rxx/a/w1")))
        );
        assert_eq!(
            effective_place(Some(&org("rxx")), Some(&scope)),
            Some(Some(scope.clone()))
        );
        assert_eq!(effective_place(Some(&org("rxx/ab")), Some(&scope)), None);
    }

    #[test]
    fn the_places_offered_are_within_the_scope_and_the_shallowest_first() {
        let mut models = ReadModels::default();
        let mut units = vec!["rxx/a/w1".to_owned(), "rxx/ab".to_owned(), "ryy".to_owned()];
        units.extend((0..150).map(|n| format!("rxx/a/w{n:03}/bay")));
        for (n, unit) in units.iter().enumerate() {
            let data = serde_json::json!({"org_unit": unit, "channel": "web", "themes": [format!("t{}", n % 3)]});
            apply(
                &mut models,
                &format!("l{n}"),
                "2026-11-02T09:00:00Z",
                EventType::FeedbackReceived,
                data,
            );
        }
        let query = InsightsQuery {
            place: None,
            theme: None,
            from: date("2026-11-01"),
            to: date("2026-12-01"),
            scope: Some(OrgUnit::parse("rxx/a").expect("an org unit")),
        };
        let choices = models.insight_choices(&query, &Sla::default());
        assert_eq!(choices.places.len(), MAX_PLACE_CHOICES);
        assert!(
            choices
                .places
                .iter()
                .all(|p| p.as_str().starts_with("rxx/a/w")),
            "{choices:?}"
        );
        // Of 151 wards (depth 3) and 150 bays (depth 4), the first 100 places are wards.
        assert!(
            choices
                .places
                .iter()
                .all(|p| p.as_str().split('/').count() == 3)
        );
        assert_eq!(choices.themes, ["t0", "t1", "t2"]);
    }

    #[test]
    fn months_are_whole_calendar_months_at_most_the_last_twenty_four() {
        assert_eq!(
            months(date("2026-01-15"), date("2026-03-01")),
            [date("2026-01-01"), date("2026-02-01")]
        );
        let long = months(date("2020-01-01"), date("2026-01-01"));
        assert_eq!(long.len(), MAX_MONTHS);
        assert_eq!(long[0], date("2024-01-01"));
    }

    #[test]
    fn close_times_fall_in_working_week_bins_the_last_open_ended() {
        let mut tally = DaysTally::default();
        for (days, loops) in [(0, 2), (4, 1), (5, 3), (44, 1), (45, 1), (300, 2)] {
            tally.add(days, loops);
        }
        let bins = close_bins(&tally);
        assert_eq!(bins.len(), CLOSE_BINS as usize);
        assert_eq!(
            (bins[0].from_days, bins[0].to_days, bins[0].loops),
            (0, Some(4), 3)
        );
        assert_eq!(
            (bins[1].from_days, bins[1].to_days, bins[1].loops),
            (5, Some(9), 3)
        );
        assert_eq!(
            (bins[8].from_days, bins[8].to_days, bins[8].loops),
            (40, Some(44), 1)
        );
        assert_eq!(
            (bins[9].from_days, bins[9].to_days, bins[9].loops),
            (45, None, 3)
        );
    }
}

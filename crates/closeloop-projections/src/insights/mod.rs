//! The patient leaders' insights: for a place (a subtree of org units) and a theme over a
//! period of received days, how much feedback came, how much of it was closed and how fast,
//! how many loops are overdue now, the Friends and Family Test by month, the most frequent
//! themes with example stories, and every seldom-heard group against everyone else.
//!
//! Figures come from the per-day aggregates (`daily`): a question sums the days of the key it
//! is about. Where no key is kept (a group of a theme, a place deeper than
//! [`CROSS_DEPTH`](crate::daily::CROSS_DEPTH), a place's theme's groups) the loops of that
//! small population are scanned instead, through the bitmaps, into the very same sums.
//! `overdue` depends on `now`, so it is counted from the open loops instead: those due before
//! now (an index by due day, kept with the SLA figures) intersected with the set, as bitmaps.
//!
//! **Small numbers are withheld.** Figures drawn from fewer than [`SUPPRESS_BELOW`] loops are
//! [`Disclosed::Suppressed`], as NHS statistics publish them: a group, its "everyone else",
//! a theme, the whole selection, and each month's FFT score (by its answers).
//!
//! # Layout
//! - this module: the query ([`InsightsQuery`]), what the filters may offer
//!   ([`InsightChoices`]), and how the answer is put together;
//! - `answer`: what the answer holds ([`Insights`] and its parts, [`Disclosed`]) and the
//!   pure functions that turn sums into figures;
//! - `select`: how the sums of a set of loops are found — a key of the aggregates when one is
//!   kept, a scan of the set's loops otherwise — and the overdue loops of a set.

mod answer;
mod select;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::ops::Range;

use closeloop_domain::{LoopId, OrgUnit, Sla};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::daily::{self, Day, Sum};
use crate::model::ReadModels;
use crate::record::clamped_nanos;
use crate::timing::Timing;

pub use answer::{
    CLOSE_BIN_DAYS, CLOSE_BINS, CloseBin, Comparison, Disclosed, Example, Fft, Figures,
    GroupInsight, Headline, Insights, MAX_MONTHS, MonthFft, SUPPRESS_BELOW, ThemeInsight,
    whole_percent,
};
use answer::{close_bins, compare, figures, monthly_fft, months, percent};
use select::{Breakdown, Filter, Place};

/// How many themes the insights list, most frequent first.
pub const INSIGHT_THEMES: usize = 5;
/// How many seldom-heard groups the insights compare at most, those with most loops first.
pub const MAX_GROUPS: usize = 20;
/// How many published loops are offered per theme as examples: a few more than a page shows,
/// since some may have no story to show.
pub const EXAMPLE_CANDIDATES: usize = 6;
/// How many entries of the public page are looked through for examples at most, newest first.
const EXAMPLE_BUDGET: usize = 2_000;

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
                        key: entry.key(),
                        loop_id: loop_id.clone(),
                    });
                }
            }
        }
        found
    }
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

//! What the insights answer holds, and the pure functions that turn sums of loops into it.

use std::ops::Range;

use closeloop_domain::{LoopId, OrgUnit};
use jiff::ToSpan;
use jiff::civil::Date;
use serde::Serialize;

use super::day_of_date;
use crate::daily::{Day, DaysTally, Series, Sum};
use crate::published::PublicKey;

/// Figures drawn from fewer loops than this are withheld.
pub const SUPPRESS_BELOW: u64 = 10;
/// How many months the FFT trend shows at most (the latest ones).
pub const MAX_MONTHS: usize = 24;
/// The time-to-close distribution groups whole working days by this many (a working week).
pub const CLOSE_BIN_DAYS: u32 = 5;
/// How many bins the distribution has; the last holds everything from its start on.
pub const CLOSE_BINS: u32 = 10;

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
    pub(super) fn when(loops: u64, figures: impl FnOnce() -> T) -> Self {
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
    /// Groups beyond [`MAX_GROUPS`](super::MAX_GROUPS), not compared.
    pub more_groups: usize,
}

/// FFT answers 1 to 6 in each month of `months` (first days, in order), counting the buckets
/// of `series` on the days of `days` only.
pub(super) fn monthly_fft(series: &Series, months: &[Date], days: &Range<Day>) -> Vec<[u64; 6]> {
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

#[allow(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^53, where f64 is exact"
)]
fn as_f64(n: u64) -> f64 {
    n as f64
}

/// `part` of `whole` as a percentage with 1 decimal.
pub(super) fn percent(part: u64, whole: u64) -> f64 {
    (1000.0 * as_f64(part) / as_f64(whole)).round() / 10.0
}

/// The figures of a sum.
pub(super) fn figures(sum: &Sum) -> Figures {
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
pub(super) fn compare(group: Figures, everyone_else: Figures) -> Comparison {
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
pub(super) fn close_bins(tally: &DaysTally) -> Vec<CloseBin> {
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
pub(super) fn months(from: Date, to: Date) -> Vec<Date> {
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

//! One group's raw figures ([`Tally`]), however they were gathered — summed from the kept
//! per-day aggregates or counted loop by loop — and how they become the figures
//! `GET /v1/stats` shows. Both ways end here, so they answer alike by construction: the
//! property tests compare them.

use std::collections::BTreeMap;

use super::{FFT, RatingStats, StatsGroup, TOP_THEMES, ThemeCount};
use crate::histogram::Histogram;
use crate::intern::RatingValue;
use crate::model::ReadModels;
use crate::timing::days_in_units;

/// Numbers of hundredths of a working day counted in a flat array: 100 working days.
const DENSE_CENTIS: u32 = 10_000;

/// Loops per number of hundredths of a working day.
pub(crate) type Centis = Histogram<DENSE_CENTIS>;

/// Ids of rating sets and themes counted in a flat array: far more than loops use.
const DENSE_IDS: u32 = 1024;

/// Loops per id (of a rating set, or of a theme).
pub(crate) type IdCounts = Histogram<DENSE_IDS>;

/// A loop's working days (a [`days_key`](crate::timing::days_key)) in hundredths of a day,
/// rounded to the nearest: the precision the medians are given in. `None` for
/// [`NO_DAYS`](crate::timing::NO_DAYS).
pub(crate) fn centi_days(key: u64) -> Option<u32> {
    days_in_units(key, 100.0, f64::round)
}

/// What one group's figures are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) received: u64,
    pub(crate) closed: u64,
    /// Of the open loops, those overdue now.
    pub(crate) overdue: u64,
    /// Hundredths of working days to the first contact, of loops that had one.
    pub(crate) ack: Centis,
    /// Hundredths of working days to closing, of closed loops.
    pub(crate) close: Centis,
    /// Loops per rating set id (the empty set left out).
    pub(crate) ratings: IdCounts,
    /// Loops per theme id.
    pub(crate) themes: IdCounts,
}

/// The median of hundredths of working days, in days with 2 decimals: the middle value, or
/// the mean of the two middle ones for an even count rounded half up to a hundredth; `None`
/// when nothing was counted. Computed on whole hundredths, so it never depends on the order
/// in which the counts were gathered.
pub(crate) fn median(centis: &Centis) -> Option<f64> {
    let (lower, upper) = centis.middle()?;
    let middle = (u64::from(lower) + u64::from(upper)).div_ceil(2);
    Some(as_f64(middle) / 100.0)
}

impl ReadModels {
    /// The figures of the group `key` from its tally.
    pub(super) fn group_figures(&self, key: String, tally: &Tally) -> StatsGroup {
        StatsGroup {
            key,
            received: tally.received,
            open: tally.received - tally.closed,
            closed: tally.closed,
            closure_rate: if tally.received == 0 {
                0.0
            } else {
                as_f64(tally.closed) / as_f64(tally.received)
            },
            overdue: tally.overdue,
            median_days_to_acknowledge: median(&tally.ack),
            median_days_to_close: median(&tally.close),
            ratings: self.rating_stats(&tally.ratings),
            top_themes: self.top_themes(&tally.themes),
        }
    }

    /// Rating figures from loops per rating set. Sets are taken in id order, so that a mean
    /// of non-integer ratings adds its terms in one order, however they were counted.
    fn rating_stats(&self, sets: &IdCounts) -> BTreeMap<String, RatingStats> {
        let mut fft = [0_u64; 7];
        let mut means: BTreeMap<u32, (u64, f64)> = BTreeMap::new();
        let fft_name = self.rating_names.get(FFT);
        for (set, n) in sets.counts() {
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

    /// The [`TOP_THEMES`] most frequent themes from loops per theme.
    fn top_themes(&self, themes: &IdCounts) -> Vec<ThemeCount> {
        let mut top: Vec<(u64, &str)> = themes
            .counts()
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
            let mut centis = Centis::default();
            for &days in values {
                centis.add(centi_days(days_key(days)).expect("a number"), 1);
            }
            median(&centis)
        };
        assert_eq!(median_of(&[]), None);
        assert_eq!(median_of(&[3.0]), Some(3.0));
        assert_eq!(median_of(&[5.0, 0.0, 3.0]), Some(3.0));
        assert_eq!(median_of(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median_of(&[0.125, 10.5, 0.25, 2.0 / 3.0]), Some(0.46));
        // Each loop is rounded to a hundredth first: 0.004 and 0.016 are 0 and 2 hundredths,
        // whose mean is 0.01 (the unrounded mean, 0.01, agrees here).
        assert_eq!(median_of(&[0.004, 0.016]), Some(0.01));
        // An odd count gives the middle loop's days rounded to 2 decimals, as before.
        assert_eq!(median_of(&[1.234_9, 0.5, 7.0]), Some(1.23));
        // A mean that ends in half a hundredth is rounded up: 0.01 and 0.02 give 0.02.
        assert_eq!(median_of(&[0.01, 0.02]), Some(0.02));
    }

    #[test]
    fn hundredths_of_days() {
        assert_eq!(centi_days(crate::timing::NO_DAYS), None);
        assert_eq!(centi_days(days_key(0.0)), Some(0));
        assert_eq!(centi_days(days_key(0.004_999)), Some(0));
        assert_eq!(centi_days(days_key(0.005)), Some(1));
        assert_eq!(centi_days(days_key(2.75)), Some(275));
        assert_eq!(centi_days(days_key(1e12)), Some(u32::MAX));
    }

    #[test]
    fn rounding() {
        assert_eq!(round_to(66.666_666, 1), 66.7);
        assert_eq!(round_to(1.234_9, 2), 1.23);
    }
}

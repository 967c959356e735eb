//! [`Histogram`]: exact counts of whole numbers (of days, or of hundredths of a day), merged
//! from the buckets of the per-day aggregates or counted loop by loop, with the median of what
//! was counted.
//!
//! Small numbers, where nearly every count falls, are kept in a flat array that grows to the
//! largest one seen, so that adding is an index and a median one walk; the rare large ones are
//! kept sparse. The memory is the array (8 bytes a number up to the largest seen below
//! `DENSE`) and a map entry per distinct larger number.

use std::collections::BTreeMap;

/// Loops per whole number, exact; numbers below `DENSE` are counted in a flat array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram<const DENSE: u32> {
    /// Loops per number below `DENSE`.
    low: Vec<u64>,
    /// Loops per number from `DENSE` on: rare, so kept sparse.
    high: BTreeMap<u32, u64>,
    total: u64,
}

impl<const DENSE: u32> Histogram<DENSE> {
    #[inline]
    pub(crate) fn add(&mut self, value: u32, loops: u64) {
        self.total += loops;
        if value < DENSE {
            let i = value as usize;
            if self.low.len() <= i {
                self.low.resize(i + 1, 0);
            }
            self.low[i] += loops;
        } else {
            *self.high.entry(value).or_default() += loops;
        }
    }

    /// Makes room for numbers up to `value` at once, before adding many that are no larger
    /// (a larger one is sparse, and makes no room).
    #[inline]
    pub(crate) fn reserve_to(&mut self, value: u32) {
        if value < DENSE && self.low.len() <= value as usize {
            self.low.resize(value as usize + 1, 0);
        }
    }

    /// Takes out counts that were added (for "everyone else": a key less a group of it).
    pub(crate) fn subtract(&mut self, other: &Self) {
        self.total -= other.total;
        for (value, &loops) in (0_u32..).zip(&other.low) {
            self.low[value as usize] -= loops;
        }
        for (&value, &loops) in &other.high {
            let count = self
                .high
                .get_mut(&value)
                .expect("subtracted counts were added");
            *count -= loops;
            if *count == 0 {
                self.high.remove(&value);
            }
        }
    }

    /// How many loops were counted.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Each number with its loops, smallest first, zeros left out.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        (0_u32..)
            .zip(self.low.iter().copied())
            .filter(|&(_, loops)| loops > 0)
            .chain(self.high.iter().map(|(&value, &loops)| (value, loops)))
    }

    /// The two middle numbers: the middle one twice for an odd count, the two middle ones for
    /// an even count; `None` when nothing was counted.
    pub(crate) fn middle(&self) -> Option<(u32, u32)> {
        if self.total == 0 {
            return None;
        }
        // The 1-based ranks of the middle values.
        let (lower_rank, upper_rank) = if self.total % 2 == 1 {
            (self.total.div_ceil(2), self.total.div_ceil(2))
        } else {
            (self.total / 2, self.total / 2 + 1)
        };
        let (mut lower, mut upper) = (None, None);
        let mut seen = 0;
        for (value, loops) in self.counts() {
            seen += loops;
            if lower.is_none() && seen >= lower_rank {
                lower = Some(value);
            }
            if seen >= upper_rank {
                upper = Some(value);
                break;
            }
        }
        lower.zip(upper)
    }

    /// The median: the middle number, or the mean of the two middle ones for an even count;
    /// `None` when nothing was counted.
    pub(crate) fn median(&self) -> Option<f64> {
        let (lower, upper) = self.middle()?;
        Some(f64::midpoint(f64::from(lower), f64::from(upper)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tally = Histogram<512>;

    fn tally(values: &[u32]) -> Tally {
        let mut tally = Tally::default();
        for &value in values {
            tally.add(value, 1);
        }
        tally
    }

    #[test]
    fn medians_are_exact_for_odd_and_even_counts() {
        assert_eq!(tally(&[]).median(), None);
        assert_eq!(tally(&[3]).median(), Some(3.0));
        assert_eq!(tally(&[5, 0, 3]).median(), Some(3.0));
        assert_eq!(tally(&[4, 1, 3, 2]).median(), Some(2.5));
        assert_eq!(tally(&[2, 2, 2, 9]).median(), Some(2.0));
        // Far and near values: the sparse and the dense part together.
        assert_eq!(tally(&[1, 100_000, 700, 2]).median(), Some(351.0));
        assert_eq!(tally(&[600, 700, 800]).median(), Some(700.0));
        assert_eq!(tally(&[1, 100_000, 700, 2]).middle(), Some((2, 700)));
    }

    #[test]
    fn a_subset_subtracts_exactly() {
        let mut all = tally(&[1, 1, 2, 5, 900]);
        all.subtract(&tally(&[1, 900]));
        assert_eq!(all, {
            let mut expected = tally(&[1, 2, 5]);
            // Emptied slots of the dense part stay as zeros, which count for nothing.
            expected.low.resize(all.low.len(), 0);
            expected
        });
        assert_eq!(all.median(), Some(2.0));
        assert_eq!(all.counts().collect::<Vec<_>>(), [(1, 1), (2, 1), (5, 1)]);
    }
}

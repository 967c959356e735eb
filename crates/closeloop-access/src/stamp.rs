//! [`Stamper`]: keeps the times of a log strictly increasing.

use jiff::{SignedDuration, Timestamp};

/// Stamps each entry of a log with a time later than the one before it: an entry whose time
/// is not later (two reads in the same nanosecond, a clock that stepped back) gets the
/// previous time plus one nanosecond. That makes "entries after time T" an exact cursor, with
/// no entry lost between two pages that share a time.
#[derive(Debug, Default)]
pub(crate) struct Stamper {
    last: Option<Timestamp>,
}

impl Stamper {
    /// A stamper that continues after `last`, the latest time already in the log.
    pub(crate) fn after(last: Option<Timestamp>) -> Self {
        Self { last }
    }

    /// The time to record for an entry read at `at`.
    pub(crate) fn stamp(&mut self, at: Timestamp) -> Timestamp {
        let stamped = match self.last {
            Some(last) if at <= last => last
                .checked_add(SignedDuration::from_nanos(1))
                .unwrap_or(last),
            _ => at,
        };
        self.last = Some(stamped);
        stamped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_strictly_increase() {
        let t: Timestamp = "2026-11-27T09:30:00Z".parse().unwrap();
        let mut stamper = Stamper::after(Some(t));
        let first = stamper.stamp(t);
        assert_eq!(first, t + SignedDuration::from_nanos(1));
        let second = stamper.stamp(t - SignedDuration::from_hours(1));
        assert_eq!(second, t + SignedDuration::from_nanos(2));
        let later = t + SignedDuration::from_secs(5);
        assert_eq!(stamper.stamp(later), later);
    }
}

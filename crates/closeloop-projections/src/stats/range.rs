//! How a `from`/`to` range of instants splits into whole days (UTC), which the kept
//! aggregates answer, and at most two *edges* — the parts of the first and the last day that
//! lie in range when the range starts or ends within a day — whose loops are counted one by
//! one. A range given as dates (what the API's callers send) has no edges.

use crate::daily::{Day, day_of};
use crate::record::Ts;

/// Seconds in a day.
const DAY_SECONDS: i64 = 86_400;

/// Whole days `start..end`; `None` leaves a side open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Days {
    pub(crate) start: Option<Day>,
    pub(crate) end: Option<Day>,
}

impl Days {
    /// Whether `day` is one of them.
    pub(crate) fn contains(&self, day: Day) -> bool {
        self.start.is_none_or(|start| day >= start) && self.end.is_none_or(|end| day < end)
    }

    /// Whether there is no day at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.start
            .zip(self.end)
            .is_some_and(|(start, end)| start >= end)
    }
}

/// A range of instants `from..to`, both given.
pub(crate) type Edge = (Ts, Ts);

/// The start of a day.
fn midnight(day: Day) -> Ts {
    Ts {
        secs: i64::from(day) * DAY_SECONDS,
        nanos: 0,
    }
}

/// Splits `from..to` (either side open when `None`) into the whole days inside it and the
/// edges around them: every instant of the range is in exactly one of them.
pub(crate) fn split(from: Option<Ts>, to: Option<Ts>) -> (Days, Vec<Edge>) {
    let mut edges = Vec::new();
    let start = from.map(|from| {
        let day = day_of(from);
        if from == midnight(day) {
            day
        } else {
            let next = day.saturating_add(1);
            edges.push((from, midnight(next)));
            next
        }
    });
    let end = to.map(|to| {
        let day = day_of(to);
        if to != midnight(day) {
            edges.push((midnight(day), to));
        }
        day
    });
    // Both edges may fall on one day, and `from` may lie past `to`: keep each edge within the
    // range, once.
    let mut clipped: Vec<Edge> = Vec::with_capacity(edges.len());
    for (a, b) in edges {
        let a = from.map_or(a, |from| a.max(from));
        let b = to.map_or(b, |to| b.min(to));
        if a < b && !clipped.contains(&(a, b)) {
            clipped.push((a, b));
        }
    }
    (Days { start, end }, clipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(raw: &str) -> Ts {
        Ts::of(raw.parse().expect("a time"))
    }

    fn day(raw: &str) -> Day {
        day_of(ts(raw))
    }

    fn check(
        from: Option<&str>,
        to: Option<&str>,
        days: (Option<&str>, Option<&str>),
        edges: &[(&str, &str)],
    ) {
        let (got_days, got_edges) = split(from.map(ts), to.map(ts));
        assert_eq!(
            got_days,
            Days {
                start: days.0.map(day),
                end: days.1.map(day),
            },
            "{from:?}..{to:?}"
        );
        let edges: Vec<Edge> = edges.iter().map(|&(a, b)| (ts(a), ts(b))).collect();
        assert_eq!(got_edges, edges, "{from:?}..{to:?}");
    }

    #[test]
    fn dates_split_into_whole_days_only() {
        check(None, None, (None, None), &[]);
        check(
            Some("2026-11-01T00:00:00Z"),
            Some("2026-12-01T00:00:00Z"),
            (Some("2026-11-01T00:00:00Z"), Some("2026-12-01T00:00:00Z")),
            &[],
        );
        check(
            None,
            Some("2026-12-01T00:00:00Z"),
            (None, Some("2026-12-01T00:00:00Z")),
            &[],
        );
    }

    #[test]
    fn instants_within_days_leave_edges() {
        check(
            Some("2026-11-01T09:30:00Z"),
            Some("2026-11-20T12:00:00.5Z"),
            (Some("2026-11-02T00:00:00Z"), Some("2026-11-20T00:00:00Z")),
            &[
                ("2026-11-01T09:30:00Z", "2026-11-02T00:00:00Z"),
                ("2026-11-20T00:00:00Z", "2026-11-20T12:00:00.5Z"),
            ],
        );
        check(
            Some("2026-11-01T09:30:00Z"),
            None,
            (Some("2026-11-02T00:00:00Z"), None),
            &[("2026-11-01T09:30:00Z", "2026-11-02T00:00:00Z")],
        );
        // Both ends on one day: one edge, and no whole day.
        let (days, edges) = split(
            Some(ts("2026-11-01T09:30:00Z")),
            Some(ts("2026-11-01T10:00:00Z")),
        );
        assert!(days.is_empty());
        assert_eq!(
            edges,
            [(ts("2026-11-01T09:30:00Z"), ts("2026-11-01T10:00:00Z"))]
        );
        // On neighbouring days: two edges that meet at midnight.
        let (days, edges) = split(
            Some(ts("2026-11-01T09:30:00Z")),
            Some(ts("2026-11-02T10:00:00Z")),
        );
        assert!(days.is_empty());
        assert_eq!(edges.len(), 2);
        // From past to: nothing.
        let (days, edges) = split(
            Some(ts("2026-11-03T09:30:00Z")),
            Some(ts("2026-11-01T10:00:00Z")),
        );
        assert!(days.is_empty());
        assert!(edges.is_empty());
    }

    #[test]
    fn days_contain_what_they_say() {
        let days = Days {
            start: Some(3),
            end: Some(5),
        };
        assert!(!days.contains(2) && days.contains(3) && days.contains(4) && !days.contains(5));
        assert!(
            Days {
                start: None,
                end: None
            }
            .contains(Day::MIN)
        );
    }
}

//! Working-day arithmetic and the due dates of contract §1.
//!
//! Working days are Monday to Friday, in UTC, less any holidays the [`Calendar`] is given.
//! A due date keeps the time of day it counts from: feedback received on Monday at 10:00 is due
//! an acknowledgement by Thursday 10:00 (3 working days). Feedback received on a non-working
//! day starts its clock at 00:00 of the next working day.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::{LoopState, Status};

/// Which days count as working days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
}

impl Calendar {
    /// Monday to Friday, no holidays.
    #[must_use]
    pub fn weekdays() -> Self {
        Self::default()
    }

    /// Monday to Friday less the given holidays (e.g. bank holidays).
    #[must_use]
    pub fn with_holidays(holidays: impl IntoIterator<Item = Date>) -> Self {
        Self {
            holidays: holidays.into_iter().collect(),
        }
    }

    /// The holidays, in date order (what [`with_holidays`](Self::with_holidays) was given,
    /// each once).
    pub fn holidays(&self) -> impl Iterator<Item = Date> + '_ {
        self.holidays.iter().copied()
    }

    /// Whether `date` is a working day.
    #[must_use]
    pub fn is_working_day(&self, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
            && !self.holidays.contains(&date)
    }

    /// The instant `days` working days after `start`.
    #[must_use]
    pub fn add_working_days(&self, start: Timestamp, days: u32) -> Timestamp {
        let start = to_utc(start);
        let (mut date, time) = if self.is_working_day(start.date()) {
            (start.date(), start.time())
        } else {
            (self.next_working_day(start.date()), Time::midnight())
        };
        for _ in 0..days {
            date = self.next_working_day(date);
        }
        from_utc(date.to_datetime(time))
    }

    /// Working days elapsed from `from` to `to`, as a fraction: only time on working days
    /// counts. Zero when `to` is not after `from`.
    #[must_use]
    pub fn working_days_between(&self, from: Timestamp, to: Timestamp) -> f64 {
        if to <= from {
            return 0.0;
        }
        let (from_dt, to_dt) = (to_utc(from), to_utc(to));
        let mut date = from_dt.date();
        let mut total = SignedDuration::ZERO;
        while date <= to_dt.date() {
            if self.is_working_day(date) {
                let day_start = from_utc(date.to_datetime(Time::midnight()));
                let day_end = from_utc(next_day(date).to_datetime(Time::midnight()));
                let start = day_start.max(from);
                let end = day_end.min(to);
                if end > start {
                    total += end.duration_since(start);
                }
            }
            date = next_day(date);
        }
        total.as_secs_f64() / 86_400.0
    }

    fn next_working_day(&self, date: Date) -> Date {
        let mut next = next_day(date);
        while !self.is_working_day(next) {
            next = next_day(next);
        }
        next
    }
}

fn next_day(date: Date) -> Date {
    // Dates here come from timestamps, which end in the year 9999; the day after is in range
    // for every realistic timestamp, and saturating at the maximum keeps loops finite.
    date.tomorrow().unwrap_or(Date::MAX)
}

fn to_utc(ts: Timestamp) -> DateTime {
    ts.to_zoned(TimeZone::UTC).datetime()
}

fn from_utc(dt: DateTime) -> Timestamp {
    dt.to_zoned(TimeZone::UTC)
        .map_or(Timestamp::MAX, |zoned| zoned.timestamp())
}

/// The service-level agreement: how many working days to acknowledge and to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sla {
    /// Working days to acknowledge (England's complaint standard: 3).
    pub acknowledge_days: u32,
    /// Working days to close (a common local target: 25).
    pub close_days: u32,
    /// Which days count.
    pub calendar: Calendar,
}

impl Default for Sla {
    fn default() -> Self {
        Self {
            acknowledge_days: 3,
            close_days: 25,
            calendar: Calendar::weekdays(),
        }
    }
}

impl Sla {
    /// When the person must have heard back: `acknowledge_days` after receipt.
    #[must_use]
    pub fn acknowledge_by(&self, state: &LoopState) -> Timestamp {
        self.calendar
            .add_working_days(state.received_at, self.acknowledge_days)
    }

    /// When the loop must be closed: `close_days` after receipt, or after the last reopening.
    #[must_use]
    pub fn close_by(&self, state: &LoopState) -> Timestamp {
        self.calendar
            .add_working_days(state.close_clock_from, self.close_days)
    }

    /// Whether the loop is open and past a due date whose step has not happened: not yet
    /// heard back after `acknowledge_by`, or not yet closed after `close_by`.
    #[must_use]
    pub fn is_overdue(&self, state: &LoopState, now: Timestamp) -> bool {
        state.status() == Status::Open
            && ((state.first_contact_at.is_none() && now > self.acknowledge_by(state))
                || now > self.close_by(state))
    }
}

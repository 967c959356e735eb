//! Working days, due dates and `overdue` (contract §1, "Due dates").

use closeloop_domain::{Calendar, LoopState, Sla};
use jiff::civil::{Weekday, date};
use serde_json::json;

use crate::{
    Step, acknowledged, change_made, given, received, reopened, reported_back, responded, ts,
};

/// UK bank holidays at the turn of 2026/27: Christmas Day (Friday), Boxing Day (substitute,
/// Monday 28th) and New Year's Day (Friday).
fn christmas() -> Calendar {
    Calendar::with_holidays([date(2026, 12, 25), date(2026, 12, 28), date(2027, 1, 1)])
}

/// `Calendar::add_working_days` on the plain Monday-to-Friday calendar.
fn add(start: &str, days: u32) -> jiff::Timestamp {
    Calendar::weekdays().add_working_days(ts(start), days)
}

/// `Calendar::working_days_between` on the plain Monday-to-Friday calendar.
fn between(from: &str, to: &str) -> f64 {
    Calendar::weekdays().working_days_between(ts(from), ts(to))
}

/// The loop after this history; the first step should be `received()`.
fn loop_after(history: &[Step]) -> LoopState {
    given(history)
        .into_state()
        .expect("the history receives the loop")
}

/// A loop received on Monday 23 November 2026 at 10:00, then these steps.
fn received_monday_then(steps: &[Step]) -> LoopState {
    let history = [vec![received().at("2026-11-23T10:00:00Z")], steps.to_vec()].concat();
    loop_after(&history)
}

#[test]
fn the_fixed_dates_fall_on_the_days_the_tests_assume() {
    assert_eq!(date(2026, 11, 23).weekday(), Weekday::Monday);
    assert_eq!(date(2026, 11, 28).weekday(), Weekday::Saturday);
    assert_eq!(date(2026, 12, 25).weekday(), Weekday::Friday);
    assert_eq!(date(2026, 12, 28).weekday(), Weekday::Monday);
    assert_eq!(date(2027, 1, 1).weekday(), Weekday::Friday);
}

// --- working days ------------------------------------------------------------------------------

#[test]
fn weekdays_are_working_days_and_weekends_are_not() {
    let calendar = Calendar::weekdays();
    let week: Vec<bool> = (23..=29)
        .map(|day| calendar.is_working_day(date(2026, 11, day)))
        .collect();
    assert_eq!(week, [true, true, true, true, true, false, false]);
}

#[test]
fn holidays_are_not_working_days() {
    assert!(!christmas().is_working_day(date(2026, 12, 25)));
    assert!(christmas().is_working_day(date(2026, 12, 24)));
    assert!(Calendar::weekdays().is_working_day(date(2026, 12, 25)));
}

#[test]
fn monday_10_00_plus_3_working_days_is_thursday_10_00() {
    assert_eq!(add("2026-11-23T10:00:00Z", 3), ts("2026-11-26T10:00:00Z"));
}

#[test]
fn thursday_plus_3_working_days_is_the_next_tuesday() {
    assert_eq!(add("2026-11-26T10:00:00Z", 3), ts("2026-12-01T10:00:00Z"));
}

#[test]
fn friday_plus_1_working_day_is_monday() {
    assert_eq!(add("2026-11-27T16:45:00Z", 1), ts("2026-11-30T16:45:00Z"));
}

#[test]
fn zero_working_days_is_the_start_itself() {
    assert_eq!(add("2026-11-24T08:00:00Z", 0), ts("2026-11-24T08:00:00Z"));
}

#[test]
fn a_weekend_start_starts_the_clock_monday_at_midnight() {
    assert_eq!(add("2026-11-28T15:00:00Z", 0), ts("2026-11-30T00:00:00Z"));
    assert_eq!(add("2026-11-28T15:00:00Z", 3), ts("2026-12-03T00:00:00Z"));
    assert_eq!(add("2026-11-29T23:59:59Z", 3), ts("2026-12-03T00:00:00Z"));
}

#[test]
fn twenty_five_working_days_are_five_weeks() {
    assert_eq!(add("2026-11-23T10:00:00Z", 25), ts("2026-12-28T10:00:00Z"));
}

#[test]
fn holidays_are_skipped() {
    let calendar = christmas();
    // Thu 24th + 3: Tue 29th, Wed 30th, Thu 31st.
    assert_eq!(
        calendar.add_working_days(ts("2026-12-24T10:00:00Z"), 3),
        ts("2026-12-31T10:00:00Z")
    );
    // Thu 31st + 1: not Fri 1st (New Year), not the weekend: Mon 4th.
    assert_eq!(
        calendar.add_working_days(ts("2026-12-31T10:00:00Z"), 1),
        ts("2027-01-04T10:00:00Z")
    );
}

#[test]
fn a_holiday_start_starts_the_clock_on_the_next_working_day_at_midnight() {
    // Fri 25th is a holiday, so is Mon 28th: the clock starts Tue 29th 00:00.
    assert_eq!(
        christmas().add_working_days(ts("2026-12-25T09:00:00Z"), 0),
        ts("2026-12-29T00:00:00Z")
    );
    assert_eq!(
        christmas().add_working_days(ts("2026-12-25T09:00:00Z"), 3),
        ts("2027-01-04T00:00:00Z")
    );
}

#[test]
fn a_full_weekend_counts_zero_working_days() {
    assert_eq!(between("2026-11-28T00:00:00Z", "2026-11-30T00:00:00Z"), 0.0);
    assert_eq!(between("2026-11-28T09:00:00Z", "2026-11-29T17:00:00Z"), 0.0);
}

#[test]
fn monday_midnight_to_tuesday_midnight_is_one_working_day() {
    assert_eq!(between("2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z"), 1.0);
}

#[test]
fn friday_noon_to_monday_noon_is_one_working_day() {
    assert_eq!(between("2026-11-27T12:00:00Z", "2026-11-30T12:00:00Z"), 1.0);
}

#[test]
fn parts_of_days_count_as_fractions() {
    assert_eq!(
        between("2026-11-23T10:00:00Z", "2026-11-23T16:00:00Z"),
        0.25
    );
    assert_eq!(between("2026-11-27T18:00:00Z", "2026-11-30T06:00:00Z"), 0.5);
}

#[test]
fn a_week_is_five_working_days() {
    assert_eq!(between("2026-11-23T10:00:00Z", "2026-11-30T10:00:00Z"), 5.0);
}

#[test]
fn no_working_days_pass_backwards_or_standing_still() {
    assert_eq!(between("2026-11-24T10:00:00Z", "2026-11-23T10:00:00Z"), 0.0);
    assert_eq!(between("2026-11-24T10:00:00Z", "2026-11-24T10:00:00Z"), 0.0);
}

#[test]
fn holidays_count_zero_working_days() {
    let elapsed =
        christmas().working_days_between(ts("2026-12-24T00:00:00Z"), ts("2026-12-29T00:00:00Z"));
    assert_eq!(elapsed, 1.0);
}

// --- due dates ---------------------------------------------------------------------------------

#[test]
fn the_default_sla_is_3_and_25_working_days() {
    let sla = Sla::default();
    assert_eq!((sla.acknowledge_days, sla.close_days), (3, 25));
    assert_eq!(sla.calendar, Calendar::weekdays());
}

#[test]
fn acknowledge_by_is_3_working_days_after_receipt() {
    let state = received_monday_then(&[]);
    assert_eq!(
        Sla::default().acknowledge_by(&state),
        ts("2026-11-26T10:00:00Z")
    );
}

#[test]
fn acknowledge_by_counts_from_received_at_not_from_when_it_was_logged() {
    let state = loop_after(&[received()
        .with("received_at", json!("2026-11-26T10:00:00Z"))
        .at("2026-11-30T09:00:00Z")]);
    assert_eq!(
        Sla::default().acknowledge_by(&state),
        ts("2026-12-01T10:00:00Z")
    );
}

#[test]
fn close_by_is_25_working_days_after_receipt() {
    let state = received_monday_then(&[]);
    assert_eq!(Sla::default().close_by(&state), ts("2026-12-28T10:00:00Z"));
}

#[test]
fn close_by_skips_the_calendars_holidays() {
    let sla = Sla {
        calendar: christmas(),
        ..Sla::default()
    };
    let state = received_monday_then(&[]);
    assert_eq!(sla.close_by(&state), ts("2026-12-30T10:00:00Z"));
}

#[test]
fn after_a_reopening_close_by_counts_from_the_reopening() {
    let state = received_monday_then(&[
        acknowledged(),
        change_made(),
        reported_back(),
        reopened().at("2027-01-11T09:00:00Z"),
    ]);
    let sla = Sla::default();
    assert_eq!(sla.close_by(&state), ts("2027-02-15T09:00:00Z"));
    assert_eq!(sla.acknowledge_by(&state), ts("2026-11-26T10:00:00Z"));
}

#[test]
fn a_custom_sla_uses_its_own_numbers() {
    let sla = Sla {
        acknowledge_days: 1,
        close_days: 5,
        calendar: Calendar::weekdays(),
    };
    let state = received_monday_then(&[]);
    assert_eq!(sla.acknowledge_by(&state), ts("2026-11-24T10:00:00Z"));
    assert_eq!(sla.close_by(&state), ts("2026-11-30T10:00:00Z"));
    assert!(!sla.is_overdue(&state, ts("2026-11-24T10:00:00Z")));
    assert!(sla.is_overdue(&state, ts("2026-11-24T10:00:01Z")));
}

// --- overdue -----------------------------------------------------------------------------------

#[test]
fn a_new_loop_is_not_overdue_before_its_acknowledge_by() {
    let state = received_monday_then(&[]);
    let sla = Sla::default();
    assert!(!sla.is_overdue(&state, ts("2026-11-23T10:00:00Z")));
    assert!(!sla.is_overdue(&state, ts("2026-11-26T09:59:59Z")));
    assert!(!sla.is_overdue(&state, ts("2026-11-26T10:00:00Z")));
}

#[test]
fn a_loop_with_no_contact_is_overdue_after_its_acknowledge_by() {
    let state = received_monday_then(&[]);
    assert!(Sla::default().is_overdue(&state, ts("2026-11-26T10:00:01Z")));
}

#[test]
fn an_acknowledged_loop_is_not_overdue_after_its_acknowledge_by() {
    let state = received_monday_then(&[acknowledged().at("2026-11-24T09:00:00Z")]);
    assert!(!Sla::default().is_overdue(&state, ts("2026-11-27T10:00:00Z")));
}

#[test]
fn a_late_acknowledgement_ends_the_overdue_state() {
    let state = received_monday_then(&[acknowledged().at("2026-11-27T09:00:00Z")]);
    assert!(!Sla::default().is_overdue(&state, ts("2026-11-27T10:00:00Z")));
}

#[test]
fn a_response_without_acknowledgement_meets_the_acknowledge_by() {
    let state = received_monday_then(&[responded().at("2026-11-25T14:00:00Z")]);
    assert_eq!(state.acknowledged_at, None);
    assert!(!Sla::default().is_overdue(&state, ts("2026-11-27T10:00:00Z")));
}

#[test]
fn an_open_loop_is_overdue_after_its_close_by() {
    let state = received_monday_then(&[acknowledged(), responded()]);
    let sla = Sla::default();
    assert!(!sla.is_overdue(&state, ts("2026-12-28T10:00:00Z")));
    assert!(sla.is_overdue(&state, ts("2026-12-28T10:00:01Z")));
}

#[test]
fn a_closed_loop_is_never_overdue() {
    let never_acknowledged = received_monday_then(&[change_made(), reported_back()]);
    let sla = Sla::default();
    assert!(!sla.is_overdue(&never_acknowledged, ts("2026-11-27T10:00:00Z")));
    assert!(!sla.is_overdue(&never_acknowledged, ts("2030-01-01T00:00:00Z")));
}

#[test]
fn a_reopened_loop_is_overdue_only_after_its_new_close_by() {
    let state = received_monday_then(&[
        acknowledged(),
        change_made(),
        reported_back().at("2026-12-21T10:00:00Z"),
        reopened().at("2027-01-11T09:00:00Z"),
    ]);
    let sla = Sla::default();
    // Past the first close_by (28 December) but within the new one (15 February).
    assert!(!sla.is_overdue(&state, ts("2027-01-12T09:00:00Z")));
    assert!(!sla.is_overdue(&state, ts("2027-02-15T09:00:00Z")));
    assert!(sla.is_overdue(&state, ts("2027-02-15T09:00:01Z")));
}

#[test]
fn overdue_uses_the_slas_calendar() {
    // Received Thu 24 Dec at 10:00; with Christmas holidays, acknowledge by Thu 31 Dec 10:00,
    // not by Tue 29 Dec 10:00 as on the plain calendar.
    let state = loop_after(&[received().at("2026-12-24T10:00:00Z")]);
    let with_holidays = Sla {
        calendar: christmas(),
        ..Sla::default()
    };
    assert!(Sla::default().is_overdue(&state, ts("2026-12-30T10:00:00Z")));
    assert!(!with_holidays.is_overdue(&state, ts("2026-12-30T10:00:00Z")));
    assert!(with_holidays.is_overdue(&state, ts("2026-12-31T10:00:01Z")));
}

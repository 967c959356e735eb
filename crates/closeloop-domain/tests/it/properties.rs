//! Properties of the state machine over random command sequences and random data.

use closeloop_domain::{
    Command, Event, EventType, LoopEvent, LoopState, Rejection, Sla, Stage, Status, apply, decide,
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use crate::{START, Step, closed_loop, given, loop_id, received, step, ts};

/// The codes `decide` may answer a command with valid data.
const RULE_CODES: [&str; 6] = [
    "unknown_loop",
    "loop_exists",
    "loop_closed",
    "already_acknowledged",
    "no_outcome",
    "not_closed",
];

fn event_type() -> impl Strategy<Value = EventType> {
    select(EventType::ALL.to_vec())
}

/// A random sequence of commands with valid data, each some minutes after the one before;
/// most sequences start by receiving the loop, so that the rest is not all `unknown_loop`.
fn commands() -> impl Strategy<Value = Vec<(EventType, i64)>> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec((event_type(), 1..=5_000_i64), 0..60),
    )
        .prop_map(|(starts_with_feedback, mut commands)| {
            if starts_with_feedback {
                commands.insert(0, (EventType::FeedbackReceived, 1));
            }
            commands
        })
}

/// One command of a run: the state before, what `decide` said, and the state after.
#[derive(Debug)]
struct Transition {
    command: EventType,
    before: Option<LoopState>,
    result: Result<(), Rejection>,
    after: Option<LoopState>,
}

/// Decides each command against the loop and applies what was accepted, as the service does.
fn run(commands: &[(EventType, i64)]) -> Vec<Transition> {
    let mut state: Option<LoopState> = None;
    let mut at = ts(START);
    let mut transitions = Vec::with_capacity(commands.len());
    for (index, &(command, gap_minutes)) in commands.iter().enumerate() {
        at += SignedDuration::from_mins(gap_minutes);
        let before = state.clone();
        let payload = step(command)
            .into_payload()
            .expect("generated data is valid");
        let decided = decide(
            state.as_ref(),
            Command {
                loop_id: loop_id(),
                at,
                payload,
            },
        );
        let result = decided.map(|events| {
            for (n, payload) in events.into_iter().enumerate() {
                let event = Event {
                    event_id: format!("cmd-{index}-{n}"),
                    source: "urn:test:proptest".to_owned(),
                    time: at,
                    payload,
                    actor: None,
                };
                state = apply(state.take(), &event);
            }
        });
        transitions.push(Transition {
            command,
            before,
            result,
            after: state.clone(),
        });
    }
    transitions
}

proptest! {
    #[test]
    fn valid_commands_are_accepted_or_refused_by_a_rule(commands in commands()) {
        for t in run(&commands) {
            if let Err(rejection) = &t.result {
                prop_assert!(RULE_CODES.contains(&rejection.code()), "{rejection:?}");
                prop_assert_eq!(&t.before, &t.after, "a refused {} changed the loop", t.command);
            }
        }
    }

    #[test]
    fn stage_never_moves_backwards_except_by_a_reopening(commands in commands()) {
        for t in run(&commands) {
            let (Some(before), Some(after)) = (&t.before, &t.after) else { continue };
            if t.command == EventType::Reopened && t.result.is_ok() {
                prop_assert_eq!(before.stage, Stage::Closed);
                prop_assert_eq!(after.stage, Stage::Responded);
            } else {
                prop_assert!(
                    after.stage >= before.stage,
                    "{} moved the stage from {:?} back to {:?}", t.command, before.stage, after.stage
                );
            }
        }
    }

    #[test]
    fn a_loop_is_closed_only_after_an_outcome_then_a_report_back(commands in commands()) {
        // Since the loop was received or last reopened: was an outcome accepted, and after it
        // a report-back?
        let (mut outcome, mut reported_after_outcome) = (false, false);
        for t in run(&commands) {
            if t.result.is_ok() {
                match t.command {
                    EventType::FeedbackReceived | EventType::Reopened => {
                        (outcome, reported_after_outcome) = (false, false);
                    }
                    EventType::ChangeMade | EventType::NoChange => outcome = true,
                    EventType::ReportedBack => reported_after_outcome = outcome,
                    _ => {}
                }
            }
            let closed = t.after.as_ref().is_some_and(|s| s.status() == Status::Closed);
            prop_assert_eq!(
                closed,
                reported_after_outcome,
                "after {} ({:?}): closed = {}, outcome then report-back = {}",
                t.command, t.result, closed, reported_after_outcome
            );
            if let Some(after) = &t.after {
                prop_assert_eq!(after.status() == Status::Closed, after.stage == Stage::Closed);
                prop_assert_eq!(after.closed_at.is_some(), closed);
            }
        }
    }

    #[test]
    fn version_counts_the_accepted_events(commands in commands()) {
        let mut accepted = 0_u64;
        for t in run(&commands) {
            if t.result.is_ok() {
                accepted += 1;
            }
            prop_assert_eq!(t.after.as_ref().map(|s| s.version), (accepted > 0).then_some(accepted));
        }
    }

    #[test]
    fn decide_never_panics_on_arbitrary_data(event_type in event_type(), data in any_data()) {
        let payload = match LoopEvent::from_data(event_type, data.clone()) {
            Ok(payload) => payload,
            Err(rejection) => {
                prop_assert_eq!(rejection.code(), "invalid_data", "{:?}", rejection);
                return Ok(());
            }
        };
        prop_assert_eq!(payload.event_type(), event_type);
        // What is accepted is stored as `to_data` and read back with `from_data`: unchanged.
        prop_assert_eq!(
            LoopEvent::from_data(event_type, Value::Object(payload.to_data())),
            Ok(payload.clone()),
            "{} did not round-trip", data
        );
        let at = ts("2026-11-30T12:00:00Z");
        for state in [None, given(&[received()]).into_state(), given(&closed_loop()).into_state()] {
            let command = Command { loop_id: loop_id(), at, payload: payload.clone() };
            match decide(state.as_ref(), command) {
                Ok(events) => {
                    let mut after = state;
                    for payload in events {
                        let event = Event {
                            event_id: "arbitrary".to_owned(),
                            source: "urn:test:proptest".to_owned(),
                            time: at,
                            payload,
                            actor: None,
                        };
                        after = apply(after, &event);
                    }
                    let after = after.expect("an accepted event leaves a loop");
                    // Neither do the due dates panic or hang on whatever instants came in.
                    let sla = Sla::default();
                    let _ = sla.is_overdue(&after, at);
                    let _ = sla.calendar.working_days_between(after.received_at, at);
                }
                // `invalid_data` too: the data may name times outside the window.
                Err(rejection) => prop_assert!(
                    RULE_CODES.contains(&rejection.code()) || rejection.code() == "invalid_data",
                    "{rejection:?}"
                ),
            }
        }
    }
}

/// Field names the event types know, so that random data often hits real fields.
const FIELDS: [&str; 28] = [
    "org_unit",
    "channel",
    "received_at",
    "story",
    "ratings",
    "fft",
    "themes",
    "seldom_heard",
    "author",
    "anonymous",
    "name",
    "contact",
    "consent_to_publish",
    "language",
    "by",
    "message",
    "text",
    "description",
    "owner",
    "due",
    "change_id",
    "evidence",
    "reason",
    "x_extra",
    "",
    "by ",
    "BY",
    "org_unit/",
];

/// Strings that are valid, nearly valid or awkward values of some field.
const STRINGS: [&str; 22] = [
    "",
    " ",
    "pals",
    "rxx/site-a/ward-7",
    "rxx//ward",
    "/rxx",
    "web",
    "in_person",
    "fax",
    "2026-11-27T09:30:00Z",
    "2026-11-27T09:30:00+01:00",
    "2026-11-27",
    "2027-02-30",
    "9999-12-30T21:00:00Z",
    "9999-12-31T23:59:59Z",
    "-009999-01-02T01:59:59Z",
    "0001-01-01T00:00:00Z",
    "2026-11-27T09:30:00.123456789Z",
    "é\u{0}\u{1F600}",
    "1",
    "null",
    "true",
];

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ]
}

/// Any JSON value, small, biased towards the field names and values the types know.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2_i64..=8).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(STRINGS.to_vec()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Data for a command: valid data of some type with random fields changed or removed, an object
/// of random fields, or any JSON value at all.
fn any_data() -> impl Strategy<Value = Value> {
    let edited = (
        event_type(),
        prop::collection::vec((field_name(), prop::option::of(any_json())), 0..4),
    )
        .prop_map(|(base, edits)| {
            edits
                .into_iter()
                .fold(step(base), |data: Step, (field, value)| match value {
                    Some(value) => data.with(&field, value),
                    None => data.without(&field),
                })
                .data
        });
    prop_oneof![
        3 => edited,
        2 => prop::collection::vec((field_name(), any_json()), 0..8)
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        1 => any_json(),
    ]
}

/// Any instant between 2000 and 2100, for the calendar's property.
fn any_instant() -> impl Strategy<Value = Timestamp> {
    (946_684_800_i64..4_102_444_800)
        .prop_map(|secs| Timestamp::from_second(secs).expect("in range"))
}

proptest! {
    #[test]
    fn working_days_between_measures_what_add_working_days_adds(
        start in any_instant(),
        days in 0_u32..60,
    ) {
        let calendar = Sla::default().calendar;
        let due = calendar.add_working_days(start, days);
        prop_assert!(due >= start);
        let elapsed = calendar.working_days_between(start, due);
        prop_assert!((elapsed - f64::from(days)).abs() < 1e-9, "{start} + {days} = {due}, measured {elapsed}");
    }
}

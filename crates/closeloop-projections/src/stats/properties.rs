//! Property: stats answered from the kept aggregates are exactly the stats of one scan over
//! every loop in range (the reference), for any loops, range, grouping, scope and `now`.

use closeloop_domain::{Command, Event, EventType, LoopEvent, LoopId, LoopState, OrgUnit, Sla};
use closeloop_store::StoredEvent;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::{GroupBy, StatsQuery};
use crate::model::ReadModels;
use crate::test_log::store_events;

const ORGS: [&str; 6] = [
    "rxx",
    "rxx/a",
    "rxx/a/w1",
    "rxx/ab",
    "rxx/a/w1/bay-2/bed-4",
    "ryy/b/w9",
];
const CHANNELS: [&str; 4] = ["web", "sms", "paper", "phone"];
const SCOPES: [Option<&str>; 6] = [
    None,
    Some("rxx"),
    Some("rxx/a"),
    Some("ryy"),
    Some("rxx/a/w1/bay-2/bed-4"),
    Some("rzz"),
];

/// One generated loop: what it says and when things happen to it.
#[derive(Debug, Clone)]
struct Plan {
    /// An index into each table of choices: org unit, channel, themes, tags, ratings.
    choices: [usize; 5],
    /// Minutes after the start when it was received (whole days for some: midnight).
    received: i64,
    /// Hours after receipt of the first contact, by acknowledging (or responding when odd).
    contact: Option<i64>,
    /// Hours after that of closing (with no change), and of reopening after the close.
    close: Option<i64>,
    reopen: Option<i64>,
    /// Whether it is erased at some point, which changes no figure.
    erased: bool,
}

fn plan() -> impl Strategy<Value = Plan> {
    let minute = prop_oneof![Just(0_i64), 0..1440_i64];
    (
        [0..6_usize, 0..4, 0..5, 0..3, 0..7],
        (0..60_i64, minute),
        prop::option::of(1..200_i64),
        prop::option::of(1..400_i64),
        prop::option::of(1..300_i64),
        any::<bool>(),
    )
        .prop_map(
            |(choices, (day, minute), contact, close, reopen, erased)| Plan {
                choices,
                received: day * 1440 + minute,
                contact,
                close,
                reopen,
                erased,
            },
        )
}

fn start() -> Timestamp {
    // A Monday.
    "2026-09-07T00:00:00Z".parse().expect("a time")
}

fn received_data(plan: &Plan, at: Timestamp) -> serde_json::Value {
    let [org, channel, themes_choice, tags_choice, ratings_choice] = plan.choices;
    let themes = [
        json!([]),
        json!(["food"]),
        json!(["food", "noise", "food"]),
        json!(["parking", "noise"]),
        json!(["noise"]),
    ];
    let tags = [
        json!([]),
        json!(["homeless"]),
        json!(["carers", "homeless"]),
    ];
    let ratings = [
        json!({}),
        json!({"fft": 1}),
        json!({"fft": 5, "stars": 2}),
        json!({"fft": 6, "score": 2.5}),
        json!({"fft": 7, "stars": 4}),
        json!({"score": 0.1, "delta": -3}),
        json!({"fft": 2, "score": 0.2}),
    ];
    json!({
        "org_unit": ORGS[org],
        "channel": CHANNELS[channel],
        "themes": themes[themes_choice],
        "seldom_heard": tags[tags_choice],
        "ratings": ratings[ratings_choice],
        "received_at": at.to_string(),
    })
}

/// Every loop's events, in time order, as the domain accepts them.
fn log(plans: &[Plan]) -> Vec<(StoredEvent, Event)> {
    let hours = SignedDuration::from_hours;
    let mut steps: Vec<(Timestamp, usize, EventType, serde_json::Value)> = Vec::new();
    for (n, plan) in plans.iter().enumerate() {
        let received = start() + SignedDuration::from_mins(plan.received);
        steps.push((
            received,
            n,
            EventType::FeedbackReceived,
            received_data(plan, received),
        ));
        let mut at = received;
        if let Some(contact) = plan.contact {
            at += hours(contact);
            let (event_type, data) = if contact % 2 == 0 {
                (EventType::Acknowledged, json!({"by": "pals"}))
            } else {
                (
                    EventType::Responded,
                    json!({"by": "pals", "text": "Thanks"}),
                )
            };
            steps.push((at, n, event_type, data));
        }
        if let Some(close) = plan.close {
            at += hours(close);
            let reason = json!({"by": "ward", "reason": "Cannot"});
            steps.push((at, n, EventType::NoChange, reason));
            let message = json!({"by": "pals", "message": "Done"});
            steps.push((at + hours(1), n, EventType::ReportedBack, message));
            if let Some(reopen) = plan.reopen {
                at += hours(1 + reopen);
                let reason = json!({"by": "pals", "reason": "Again"});
                steps.push((at, n, EventType::Reopened, reason));
            }
        }
        if plan.erased {
            let erased = json!({"by": "admin", "matched_by": "loop_id"});
            steps.push((received + hours(2), n, EventType::Erased, erased));
        }
    }
    steps.sort_by_key(|&(at, n, _, _)| (at, n));
    let mut states: std::collections::HashMap<usize, LoopState> = Default::default();
    let mut entries = Vec::new();
    for (at, n, event_type, data) in steps {
        let loop_id = LoopId::parse(&format!("loop-{n}")).expect("an id");
        // As stored: a log from before today's checks may hold an FFT answer of 7.
        let payload = LoopEvent::from_stored_data(event_type, data).expect("data");
        let command = Command {
            loop_id: loop_id.clone(),
            at,
            payload,
        };
        let state = states.get(&n).cloned();
        let events = match closeloop_domain::decide(state.as_ref(), command) {
            Ok(events) => events,
            Err(rejection) => {
                assert_ne!(event_type, EventType::FeedbackReceived, "{rejection:?}");
                continue;
            }
        };
        let state = store_events(&mut entries, state, &loop_id, "urn:test:stats", at, events);
        if let Some(state) = state {
            states.insert(n, state);
        }
    }
    entries
}

/// One generated query: grouping, scope, `from`, `to` and `now`, as indexes and minutes.
#[derive(Debug, Clone)]
struct Asked {
    group_by: usize,
    scope: usize,
    from: Bound,
    to: Bound,
    /// Minutes after the start.
    now: i64,
}

/// One end of a range: open, a midnight, any minute, or the instant a loop was received.
#[derive(Debug, Clone)]
enum Bound {
    Open,
    Midnight(i64),
    Minute(i64),
    Loop(usize),
}

fn bound() -> impl Strategy<Value = Bound> {
    prop_oneof![
        Just(Bound::Open),
        (-2..65_i64).prop_map(Bound::Midnight),
        (-2880..65 * 1440_i64).prop_map(Bound::Minute),
        (0..60_usize).prop_map(Bound::Loop),
    ]
}

fn asked() -> impl Strategy<Value = Asked> {
    (
        0..5_usize,
        0..6_usize,
        bound(),
        bound(),
        -1440..120 * 1440_i64,
    )
        .prop_map(|(group_by, scope, from, to, now)| Asked {
            group_by,
            scope,
            from,
            to,
            now,
        })
}

fn instant(bound: &Bound, plans: &[Plan]) -> Option<Timestamp> {
    let minutes = match *bound {
        Bound::Open => return None,
        Bound::Midnight(day) => day * 1440,
        Bound::Minute(minute) => minute,
        Bound::Loop(n) => plans.get(n).map_or(0, |plan| plan.received),
    };
    Some(start() + SignedDuration::from_mins(minutes))
}

fn query(asked: &Asked, plans: &[Plan]) -> (StatsQuery, Timestamp) {
    let group_by = [
        None,
        Some(GroupBy::OrgUnit),
        Some(GroupBy::Theme),
        Some(GroupBy::Channel),
        Some(GroupBy::SeldomHeard),
    ][asked.group_by];
    let query = StatsQuery {
        group_by,
        from: instant(&asked.from, plans),
        to: instant(&asked.to, plans),
        scope: SCOPES[asked.scope].map(|scope| OrgUnit::parse(scope).expect("a unit")),
    };
    (query, start() + SignedDuration::from_mins(asked.now))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn aggregates_answer_what_a_scan_answers(
        plans in prop::collection::vec(plan(), 0..60),
        split in 0..200_usize,
        queries in prop::collection::vec(asked(), 1..10),
    ) {
        let entries = log(&plans);
        let sla = Sla::default();
        // Kept up to date event by event, through a snapshot and reload halfway, which
        // builds them again from the records.
        let mut models = ReadModels::default();
        models.prepare(&sla);
        let split = split.min(entries.len());
        for (entry, event) in &entries[..split] {
            models.apply(entry, event);
        }
        let mut models = ReadModels::from_snapshot(&models.to_snapshot()).expect("own snapshot");
        models.prepare(&sla);
        for (entry, event) in &entries[split..] {
            models.apply(entry, event);
        }
        for asked in &queries {
            let (query, now) = query(asked, &plans);
            let scanned = models.stats_scanned(&query, now, &sla).0;
            prop_assert_eq!(models.stats(&query, now, &sla), scanned, "{:?} at {}", query, now);
        }
    }
}

//! `closeloop demo`: a realistic, reproducible data set, recorded through the real write path.
//!
//! Several thousand loops across three trusts (sites, wards and community services), every
//! channel, Friends and Family Test ratings, themes, seldom-heard community tags, stories (some
//! naming staff or giving contact details, for the redaction rule), and loops at every stage:
//! fresh ones, acknowledged ones, some closed with a change or an honest no-change, some
//! reopened, and some overdue. Event ids are derived from the seed, so loading the same set
//! twice stores nothing new.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use closeloop_domain::{Command, EventType, LoopEvent, LoopId};
use closeloop_store::EventStore;
use closeloop_store::write::{self, Origin, WriteError};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::config::{DemoArgs, MasterKeyArgs};

/// The `source` of every demo event.
const DEMO_SOURCE: &str = "urn:closeloop:demo";
/// How many loops are recorded at once.
const CONCURRENCY: usize = 64;

const WARDS: &[&str] = &[
    "rxx/royal-infirmary/ward-7",
    "rxx/royal-infirmary/ward-9",
    "rxx/royal-infirmary/maternity",
    "rxx/royal-infirmary/emergency",
    "rxx/general-hospital/ward-2",
    "rxx/general-hospital/outpatients",
    "rxx/general-hospital/day-surgery",
    "ryy/city-hospital/ward-12",
    "ryy/city-hospital/children",
    "ryy/city-hospital/emergency",
    "ryy/north-clinic/physiotherapy",
    "ryy/north-clinic/diabetes",
    "rzz/community/district-nursing",
    "rzz/community/mental-health",
    "rzz/community/health-visiting",
];
const THEMES: &[&str] = &[
    "waiting times",
    "communication",
    "noise at night",
    "food",
    "parking",
    "staff attitude",
    "cleanliness",
    "discharge",
    "pain management",
    "accessibility",
    "appointments",
];
const SELDOM_HEARD: &[&str] = &[
    "homeless",
    "gypsy_roma_traveller",
    "asylum_seeker",
    "learning_disability",
    "deaf_bsl",
    "young_carer",
];
const CHANNELS: &[&str] = &[
    "web",
    "sms",
    "email",
    "phone",
    "paper",
    "in_person",
    "survey",
    "social",
    "community_partner",
    "other",
];
const STORIES: &[&str] = &[
    "I waited four hours in the emergency department with nobody telling me what was happening.",
    "The night staff were kind but the ward was so noisy I could not sleep.",
    "Nurse Priya explained everything about my medication and made me feel safe.",
    "The food was cold every evening and the menu never changed.",
    "I could not find a disabled parking space and missed my appointment.",
    "My letter was not in easy read, so I did not know what the appointment was for.",
    "There was no BSL interpreter at my appointment even though I asked for one.",
    "I was discharged late at night with no way of getting home. Call me on 07700 900123.",
    "Dr Okafor listened to me and my mum, and we felt part of the decisions.",
    "The toilets on the ward were not cleaned for two days.",
    "Reception staff were rude when I said I had no fixed address.",
    "My pain relief was late again and again. Please write to jo.bloggs@example.org.",
    "The health visitor came on time and really helped with feeding.",
    "Nobody called me back about my complaint.",
];
const AUTHORS: &[(&str, &str)] = &[
    ("Jo Bloggs", "jo.bloggs@example.org"),
    ("Sam Patel", "07700 900123"),
    ("Alex Evans", "alex.evans@example.net"),
];
const REPLIES: &[&str] = &[
    "Thank you for telling us. We are sorry and we are looking into it with the ward team.",
    "Thank you for your kind words; we have shared them with the team.",
    "We have discussed this at the ward meeting and agreed what to change.",
];
const CHANGES: &[&str] = &[
    "Soft-close bins and quieter trolleys fitted; lights dimmed at 22:00.",
    "Hot food trolleys replaced; evening menu now changes weekly.",
    "Two more blue-badge bays by the main entrance.",
    "Easy-read appointment letters for everyone who asks.",
    "BSL interpreters are now booked when the appointment is made.",
    "Discharge after 20:00 only with transport arranged.",
    "Cleaning checks every four hours, signed on the door.",
];
const NO_CHANGES: &[&str] = &[
    "The car park belongs to the council; we have passed your feedback on to them.",
    "National rules set the waiting time target; we have explained how triage works.",
];

/// Loads the demo data set into the store; returns how many loops it holds afterwards.
pub async fn load(
    store: &impl EventStore,
    loops: usize,
    seed: u64,
    now: Timestamp,
) -> anyhow::Result<usize> {
    let plans: Vec<Vec<(Command, Origin)>> = (0..loops).map(|n| plan_loop(seed, n, now)).collect();
    let mut results = futures::stream::iter(plans)
        .map(|steps| async move {
            for (command, origin) in steps {
                match write::record(store, command, origin, None).await {
                    // A refused step is part of the story (e.g. a second acknowledgement).
                    Ok(_) | Err(WriteError::Rejected { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(())
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(result) = results.next().await {
        result.context("recording the demo data failed")?;
    }
    Ok(loops)
}

/// `closeloop demo`: loads the data set into the data directory.
pub async fn run(
    data_dir: &Path,
    master: &MasterKeyArgs,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    let master = super::master_key_or_demo(master, true)?;
    let keys = super::open_keys(data_dir, master.as_ref())?;
    let store = super::open_store(data_dir, Some(keys))?;
    let started = std::time::Instant::now();
    let result = load(&store, args.loops, args.seed, Timestamp::now()).await;
    let head = store.head();
    store.close().await;
    let loops = result?;
    eprintln!(
        "demo data: {loops} loops, the log now holds {head} events ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The steps of demo loop `n`, with times between 120 days ago and now.
fn plan_loop(seed: u64, n: usize, now: Timestamp) -> Vec<(Command, Origin)> {
    let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let loop_id = LoopId::parse(&format!("demo-{n:06}")).expect("valid demo loop id");
    let age_hours = rng.random_range(1..120 * 24);
    let received_at = now - SignedDuration::from_hours(age_hours);
    let mut at = received_at;
    let mut steps = Vec::new();
    let mut step = |event_type: EventType, data: Value, at: Timestamp| {
        let payload = LoopEvent::from_data(event_type, data).expect("demo data is valid");
        let origin = Origin {
            source: DEMO_SOURCE.to_owned(),
            event_id: format!("{seed}-{n}-{}", steps.len()),
            request: None,
            actor: Some(DEMO_SOURCE.to_owned()),
        };
        steps.push((
            Command {
                loop_id: loop_id.clone(),
                at,
                payload,
            },
            origin,
        ));
    };

    let ward = *WARDS.choose(&mut rng).expect("wards");
    let community = ward.starts_with("rzz");
    let seldom: Vec<&str> = if rng.random_bool(if community { 0.35 } else { 0.1 }) {
        vec![*SELDOM_HEARD.choose(&mut rng).expect("tags")]
    } else {
        vec![]
    };
    let channel = if !seldom.is_empty() && rng.random_bool(0.6) {
        "community_partner"
    } else {
        *CHANNELS.choose(&mut rng).expect("channels")
    };
    let theme_count = rng.random_range(1..=2);
    let themes: Vec<&str> = THEMES
        .choose_multiple(&mut rng, theme_count)
        .copied()
        .collect();
    let fft = [1, 1, 1, 2, 2, 2, 3, 4, 5, 6][rng.random_range(0..10)];
    let mut feedback = json!({
        "org_unit": ward, "channel": channel, "received_at": received_at.to_string(),
        "ratings": {"fft": fft}, "themes": themes, "seldom_heard": seldom,
        "consent_to_publish": rng.random_bool(0.6), "language": "en",
    });
    if rng.random_bool(0.85) {
        feedback["story"] = json!(*STORIES.choose(&mut rng).expect("stories"));
        feedback["author"] = if rng.random_bool(0.5) {
            json!({"anonymous": true})
        } else {
            let (name, contact) = *AUTHORS.choose(&mut rng).expect("authors");
            json!({"name": name, "contact": contact})
        };
    }
    if rng.random_bool(0.3) {
        feedback["ratings"]["cleanliness"] = json!(rng.random_range(1..=5));
    }
    step(EventType::FeedbackReceived, feedback, at);

    // How far the loop has come grows with its age, so old loops are mostly closed and a few
    // are left overdue.
    let progress = (age_hours as f64 / (40.0 * 24.0)).min(1.0) * rng.random_range(0.3..1.6);
    let mut later = |rng: &mut StdRng, max_hours: i64| {
        at += SignedDuration::from_hours(rng.random_range(1..max_hours));
        at.min(now)
    };
    if progress < 0.15 {
        return steps;
    }
    let by = ["pals", "ward manager", "matron", "patient experience team"];
    if rng.random_bool(0.85) {
        let time = later(&mut rng, 96);
        step(
            EventType::Acknowledged,
            json!({"by": by[0], "message": "Thank you, we have logged your feedback."}),
            time,
        );
    }
    if progress < 0.35 {
        return steps;
    }
    let time = later(&mut rng, 200);
    step(
        EventType::Responded,
        json!({"by": by[1], "text": *REPLIES.choose(&mut rng).expect("replies")}),
        time,
    );
    if progress < 0.55 {
        return steps;
    }
    let change = *CHANGES.choose(&mut rng).expect("changes");
    if rng.random_bool(0.7) {
        let time = later(&mut rng, 200);
        step(
            EventType::ActionPlanned,
            json!({"by": by[2], "description": change, "owner": "estates"}),
            time,
        );
    }
    if progress < 0.75 {
        return steps;
    }
    let time = later(&mut rng, 300);
    if rng.random_bool(0.8) {
        step(
            EventType::ChangeMade,
            json!({"by": by[2], "description": change}),
            time,
        );
    } else {
        step(
            EventType::NoChange,
            json!({"by": by[2], "reason": *NO_CHANGES.choose(&mut rng).expect("reasons")}),
            time,
        );
    }
    if progress < 0.9 {
        return steps;
    }
    let time = later(&mut rng, 100);
    step(
        EventType::ReportedBack,
        json!({"by": by[3], "message": "We wrote to tell you what changed.", "channel": "email"}),
        time,
    );
    if rng.random_bool(0.05) {
        let time = later(&mut rng, 100);
        step(
            EventType::Reopened,
            json!({"by": by[0], "reason": "The problem came back."}),
            time,
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_reproducible_and_never_in_the_future() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        for n in 0..500 {
            let plan = plan_loop(7, n, now);
            assert_eq!(plan, plan_loop(7, n, now));
            assert!(plan.iter().all(|(command, _)| command.at <= now));
            assert_eq!(plan[0].0.payload.event_type(), EventType::FeedbackReceived);
        }
    }
}

//! How the stats' aggregates scale: a million demo-like loops (as `closeloop demo` makes
//! them: 120 days, and the same loops spread over a year), their memory, and the time of
//! every grouping over the whole range, a month and a range with partial days at both ends.
//! Run with
//! `cargo test --release -p closeloop-projections stats::scale -- --ignored --nocapture`.

use std::time::Instant;

use closeloop_domain::{EventType, LoopEvent, LoopId, Sla};
use closeloop_store::{Hash, StoredEvent};
use jiff::{SignedDuration, Timestamp};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::{GroupBy, StatsQuery};
use crate::model::ReadModels;

const LOOPS: usize = 1_000_000;

/// A million loops received over `days` days before `now`, in about the order they were
/// received, with the demo's places, themes, groups, channels and ratings; with `sla`, its
/// figures and aggregates are kept from the first event on.
fn models(days: i64, now: Timestamp, sla: Option<&Sla>) -> ReadModels {
    let wards: Vec<String> = (0..20)
        .map(|w| format!("r{}/site-{}/ward-{w}", ["xx", "yy", "zz"][w % 3], w % 5))
        .collect();
    let themes = [
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
    let tags = [
        "homeless",
        "gypsy_roma_traveller",
        "asylum_seeker",
        "learning_disability",
        "deaf_bsl",
        "young_carer",
    ];
    let channels = [
        "web",
        "sms",
        "paper",
        "survey",
        "phone",
        "email",
        "in_person",
        "community_partner",
    ];
    let mut rng = StdRng::seed_from_u64(12);
    let mut models = ReadModels::default();
    if let Some(sla) = sla {
        models.prepare(sla);
    }
    let mut position = 0;
    let mut apply = |models: &mut ReadModels, loop_id: &LoopId, version, time, event_type, data| {
        position += 1;
        let entry = StoredEvent {
            position,
            loop_id: loop_id.clone(),
            version,
            prev_hash: Hash::ZERO,
            hash: Hash::ZERO,
            record: Vec::new(),
        };
        let event = closeloop_domain::Event {
            event_id: String::new(),
            source: String::new(),
            time,
            payload: LoopEvent::from_stored_data(event_type, data).expect("data"),
            actor: None,
        };
        models.apply(&entry, &event);
    };
    let start = now - SignedDuration::from_hours(24 * days);
    for n in 0..LOOPS {
        let loop_id = LoopId::parse(&format!("l{n}")).expect("an id");
        let minute =
            i64::try_from(n).expect("few") * days * 24 * 60 / i64::try_from(LOOPS).expect("few");
        let received = start + SignedDuration::from_mins(minute + rng.random_range(0..600));
        let tagged = rng.random_bool(0.1);
        let count = rng.random_range(1..=3);
        let mut ratings = json!({"fft": rng.random_range(1..=6)});
        if rng.random_bool(0.3) {
            ratings["cleanliness"] = json!(rng.random_range(1..=5));
        }
        let data = json!({
            "org_unit": wards.choose(&mut rng).expect("wards"),
            "channel": channels.choose(&mut rng).expect("channels"),
            "themes": themes.choose_multiple(&mut rng, count).collect::<Vec<_>>(),
            "seldom_heard": if tagged { vec![*tags.choose(&mut rng).expect("tags")] } else { vec![] },
            "ratings": ratings, "received_at": received.to_string(),
        });
        apply(
            &mut models,
            &loop_id,
            1,
            received,
            EventType::FeedbackReceived,
            data,
        );
        let acknowledged = rng.random_bool(0.85);
        let closed = acknowledged && rng.random_bool(0.65);
        let mut waits = [96, 500, 100].map(|hours| rng.random_range(1..hours * 60));
        waits[2] += waits[1];
        waits[1] += waits[0];
        let steps = [
            (EventType::Acknowledged, json!({"by": "pals"})),
            (EventType::NoChange, json!({"by": "ward", "reason": "r"})),
            (
                EventType::ReportedBack,
                json!({"by": "pals", "message": "m"}),
            ),
        ];
        let taken = if closed { 3 } else { usize::from(acknowledged) };
        for (version, (minutes, (event_type, data))) in
            (2..).zip(waits.into_iter().zip(steps).take(taken))
        {
            let at = received + SignedDuration::from_mins(minutes);
            if at < now {
                apply(&mut models, &loop_id, version, at, event_type, data);
            }
        }
    }
    models
}

/// Nanoseconds this thread has spent on a core: unlike the wall clock, it leaves out the
/// time other processes on a shared machine took (counted in scheduler ticks, so only a sum
/// over many runs is meaningful).
fn on_cpu() -> u64 {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux");
    schedstat
        .split_whitespace()
        .next()
        .and_then(|nanos| nanos.parse().ok())
        .expect("a number")
}

/// The p50 and p99 of `runs` timings of `f` on the wall clock, and the mean time on a core,
/// in milliseconds.
fn timed(runs: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    let cpu_started = on_cpu();
    let mut wall: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    #[allow(clippy::cast_precision_loss, reason = "nanoseconds of a few seconds")]
    let cpu = (on_cpu() - cpu_started) as f64 / 1e6 / runs as f64;
    wall.sort_by(f64::total_cmp);
    (wall[runs / 2], wall[runs * 99 / 100], cpu)
}

/// Resident memory, in bytes.
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .expect("a number");
    pages * 4096
}

#[test]
#[ignore = "a million loops: run in release, by hand"]
fn scale() {
    let sla = Sla::default();
    let now: Timestamp = "2026-12-02T10:00:00Z".parse().expect("a time");
    for days in [120, 365] {
        let started = Instant::now();
        let models = models(days, now, None);
        println!(
            "{days} days: events applied in {:.2} s, SLA figures not kept",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        drop(self::models(days, now, Some(&sla)));
        println!(
            "{days} days: events applied in {:.2} s, SLA figures and both aggregates kept",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        models.prepare(&sla);
        println!(
            "{days} days: SLA figures and both aggregates built in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let (keys, buckets, entries, bytes) =
            models.with_timing(&sla, |timing| timing.stats.footprint());
        let before = resident();
        let started = Instant::now();
        let copy = models.with_timing(&sla, |timing| {
            super::Aggregates::build(&models.hot, &timing.slots, &models.lists)
        });
        let build = started.elapsed().as_secs_f64();
        let grown = resident().saturating_sub(before);
        println!(
            "{days} days: {keys} keys, {buckets} buckets, {entries} list entries: about {} MB \
             (resident memory grew {} MB building a copy, in {build:.2} s)",
            bytes / 1_000_000,
            grown / 1_000_000
        );
        drop(copy);
        assert!(bytes <= 64_000_000, "{bytes} bytes");
        let month_from: Timestamp = "2026-10-01T00:00:00Z".parse().expect("a time");
        let month_to: Timestamp = "2026-11-01T00:00:00Z".parse().expect("a time");
        let ranges = [
            ("everything", None, None),
            ("a month", Some(month_from), Some(month_to)),
            (
                "a month, 09:30 to 17:00",
                Some(month_from + SignedDuration::from_mins(570)),
                Some(month_to + SignedDuration::from_hours(17)),
            ),
            (
                "a day from 09:30",
                Some(month_from + SignedDuration::from_mins(570)),
                Some(month_from + SignedDuration::from_hours(24)),
            ),
        ];
        for group_by in [
            None,
            Some(GroupBy::OrgUnit),
            Some(GroupBy::Theme),
            Some(GroupBy::Channel),
            Some(GroupBy::SeldomHeard),
        ] {
            for (name, from, to) in ranges {
                let query = StatsQuery {
                    group_by,
                    from,
                    to,
                    scope: None,
                };
                let (p50, p99, cpu) = timed(300, || {
                    std::hint::black_box(models.stats(&query, now, &sla));
                });
                println!(
                    "{days} days, {group_by:?}, {name}: p50 {p50:.2} ms, p99 {p99:.2} ms, \
                     mean on a core {cpu:.2} ms"
                );
                assert!(cpu < 5.0, "{group_by:?} {name}: {cpu} ms");
            }
        }
        let query = StatsQuery::default();
        let (p50, _, cpu) = timed(10, || {
            std::hint::black_box(models.stats_scanned(&query, now, &sla));
        });
        println!(
            "{days} days: one scan of every loop (the reference), p50 {p50:.1} ms, \
             mean on a core {cpu:.1} ms"
        );
        let scoped = StatsQuery {
            group_by: Some(GroupBy::Theme),
            scope: Some(closeloop_domain::OrgUnit::parse("rxx/site-0").expect("a unit")),
            ..StatsQuery::default()
        };
        let (p50, p99, cpu) = timed(20, || {
            std::hint::black_box(models.stats(&scoped, now, &sla));
        });
        println!(
            "{days} days: a site's themes (a scan of its loops), p50 {p50:.1} ms, p99 {p99:.1} \
             ms, mean on a core {cpu:.1} ms"
        );
    }
}

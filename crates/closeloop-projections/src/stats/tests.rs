use super::*;
use crate::limits::{MAX_TAGS, MAX_THEMES};
use closeloop_domain::{Event, EventType, LoopEvent, LoopId};
use closeloop_store::{Hash, StoredEvent, record};

/// Read models of `loops` loops, loop `n` with the themes `themes(n)` and tags
/// `tags(n)`, stored as they are (no validation, as a log from before the limits may hold
/// them).
fn models_with(
    loops: usize,
    themes: impl Fn(usize) -> Vec<String>,
    tags: impl Fn(usize) -> Vec<String>,
) -> ReadModels {
    let mut models = ReadModels::default();
    for n in 0..loops {
        let data = serde_json::json!({
            "org_unit": "rxx", "channel": "web", "ratings": {"fft": 1},
            "themes": themes(n), "seldom_heard": tags(n),
        });
        receive(&mut models, n, "2026-11-23T09:00:00Z", data);
    }
    models
}

/// Applies `feedback.received` with `data` as loop `loop-{n}` at position `n + 1`.
fn receive(models: &mut ReadModels, n: usize, time: &str, data: serde_json::Value) {
    let event = Event {
        event_id: format!("e-{n}"),
        source: "urn:test:stats".to_owned(),
        time: time.parse().unwrap(),
        payload: LoopEvent::from_stored_data(EventType::FeedbackReceived, data).unwrap(),
        actor: None,
    };
    let entry = StoredEvent {
        position: n as u64 + 1,
        loop_id: LoopId::parse(&format!("loop-{n}")).unwrap(),
        version: 1,
        prev_hash: Hash::ZERO,
        hash: Hash::ZERO,
        record: record::encode(&event),
    };
    models.apply(&entry, &event);
}

/// The stats of every loop by one scan, and the scan's work: what the reference does, and
/// what a scoped query by theme, channel or tag does within its scope.
fn work(models: &ReadModels, group_by: Option<GroupBy>) -> (Stats, StatsWork) {
    let query = StatsQuery {
        group_by,
        ..StatsQuery::default()
    };
    models.stats_scanned(
        &query,
        "2026-12-01T00:00:00Z".parse().unwrap(),
        &Sla::default(),
    )
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn one_loop_with_sixty_thousand_themes_costs_what_fifty_do() {
    let models = models_with(1, |_| names("theme", 60_000), |_| names("tag", 5_000));
    let (stats, work) = work(&models, Some(GroupBy::Theme));
    assert_eq!(stats.groups.len(), MAX_THEMES);
    let cap = MAX_THEMES as u64;
    assert_eq!(work.adds, cap, "one group per kept theme");
    assert_eq!(
        work.theme_counts,
        cap * cap,
        "each group counts the kept themes"
    );
    let (stats, work) = work_by_tag(&models);
    assert_eq!(stats.groups.len(), MAX_TAGS);
    assert_eq!(work.adds, MAX_TAGS as u64);
    assert_eq!(work.theme_counts, MAX_TAGS as u64 * cap);
}

fn work_by_tag(models: &ReadModels) -> (Stats, StatsWork) {
    work(models, Some(GroupBy::SeldomHeard))
}

#[test]
fn work_grows_linearly_with_the_loops() {
    // Every loop has its own 50 themes, none shared: the worst spread for a grid of
    // (group, theme) counts, which used to grow with the square of the themes.
    let themes = |n: usize| names(&format!("loop{n}"), MAX_THEMES);
    let no_tags = |_| Vec::new();
    let small = models_with(40, themes, no_tags);
    let large = models_with(80, themes, no_tags);
    for group_by in [
        None,
        Some(GroupBy::OrgUnit),
        Some(GroupBy::Channel),
        Some(GroupBy::Theme),
        Some(GroupBy::SeldomHeard),
    ] {
        let (_, w40) = work(&small, group_by);
        let (_, w80) = work(&large, group_by);
        assert_eq!(w80.adds, 2 * w40.adds, "{group_by:?}");
        assert_eq!(w80.theme_counts, 2 * w40.theme_counts, "{group_by:?}");
        let per_loop = if group_by == Some(GroupBy::Theme) {
            MAX_THEMES as u64
        } else {
            1
        };
        assert_eq!(w40.adds, 40 * per_loop, "{group_by:?}");
        assert_eq!(
            w40.theme_counts,
            40 * per_loop * MAX_THEMES as u64,
            "{group_by:?}"
        );
    }
}

/// Read models of one loop per unit of `units`, received in that order a day apart.
fn models_in_units(units: &[&str]) -> ReadModels {
    let mut models = ReadModels::default();
    for (n, unit) in units.iter().enumerate() {
        let data = serde_json::json!({
            "org_unit": unit, "channel": "web", "ratings": {"fft": 1 + n % 5},
            "received_at": format!("2026-11-{:02}T09:00:00Z", n + 1),
        });
        receive(&mut models, n, "2026-11-30T09:00:00Z", data);
    }
    models
}

#[test]
fn a_scope_counts_only_its_subtree() {
    let models = models_in_units(&[
        "rxx/site-a",
        "rxx/site-ab",
        "rxx/site-a/ward-1",
        "ryy",
        "rxx/site-a/ward-1",
    ]);
    let now = "2026-12-01T00:00:00Z".parse().unwrap();
    let stats = |scope: &str, group_by, from: Option<&str>| {
        let query = StatsQuery {
            group_by,
            from: from.map(|from| from.parse().unwrap()),
            to: None,
            scope: Some(OrgUnit::parse(scope).unwrap()),
        };
        models.stats(&query, now, &Sla::default())
    };
    let all = stats("rxx/site-a", None, None);
    assert_eq!(all.groups.len(), 1);
    assert_eq!(all.groups[0].received, 3);
    let by_unit = stats("rxx/site-a", Some(GroupBy::OrgUnit), None);
    let keys: Vec<(&str, u64)> = by_unit
        .groups
        .iter()
        .map(|group| (group.key.as_str(), group.received))
        .collect();
    assert_eq!(keys, [("rxx/site-a", 1), ("rxx/site-a/ward-1", 2)]);
    // With a range, only the buckets in range are walked, still within the scope.
    let recent = stats("rxx/site-a", None, Some("2026-11-02T00:00:00Z"));
    assert_eq!(recent.groups[0].received, 2);
    // A scope no loop was ever in: one empty group, nothing else.
    let nowhere = stats("rzz", None, None);
    assert_eq!(nowhere.groups.len(), 1);
    assert_eq!(nowhere.groups[0].received, 0);
    assert!(
        stats("rzz", Some(GroupBy::Channel), Some("2026-01-01T00:00:00Z"))
            .groups
            .is_empty()
    );
}

/// Applies an event of `loop-{n}` at the next position.
fn append(models: &mut ReadModels, n: usize, version: u64, time: &str, payload: LoopEvent) {
    let event = Event {
        event_id: format!("e-{}", models.checkpoint() + 1),
        source: "urn:test:stats".to_owned(),
        time: time.parse().unwrap(),
        payload,
        actor: None,
    };
    let entry = StoredEvent {
        position: models.checkpoint() + 1,
        loop_id: LoopId::parse(&format!("loop-{n}")).unwrap(),
        version,
        prev_hash: Hash::ZERO,
        hash: Hash::ZERO,
        record: record::encode(&event),
    };
    models.apply(&entry, &event);
}

/// Read models of `per_day` alike loops received on each of 40 days from Monday 5 October
/// 2026, each acknowledged a day later, every other one on each day also closed.
fn alike(per_day: usize) -> ReadModels {
    let mut models = ReadModels::default();
    models.prepare(&Sla::default());
    let mut n = 0;
    for day in 0..40 {
        let at = |hours: i64| {
            let start: Timestamp = "2026-10-05T09:00:00Z".parse().unwrap();
            (start + jiff::SignedDuration::from_hours(24 * day + hours)).to_string()
        };
        for i in 0..per_day {
            let org = if i % 2 == 0 { "rxx/a" } else { "rxx/b" };
            let data = serde_json::json!({
                "org_unit": org, "channel": "web",
                "themes": ["food", "noise"], "ratings": {"fft": 1 + i % 2, "stars": 3},
                "received_at": at(0),
            });
            let received = EventType::FeedbackReceived;
            append(
                &mut models,
                n,
                1,
                &at(0),
                LoopEvent::from_stored_data(received, data).unwrap(),
            );
            let ack = serde_json::json!({"by": "pals"});
            let ack = LoopEvent::from_stored_data(EventType::Acknowledged, ack).unwrap();
            append(&mut models, n, 2, &at(24), ack);
            if i % 2 == 0 {
                let no_change = serde_json::json!({"by": "ward", "reason": "Cannot"});
                let no_change =
                    LoopEvent::from_stored_data(EventType::NoChange, no_change).unwrap();
                append(&mut models, n, 3, &at(48), no_change);
                let back = serde_json::json!({"by": "pals", "message": "Done"});
                let back = LoopEvent::from_stored_data(EventType::ReportedBack, back).unwrap();
                append(&mut models, n, 4, &at(49), back);
            }
            n += 1;
        }
    }
    models
}

const GROUPINGS: [Option<GroupBy>; 5] = [
    None,
    Some(GroupBy::OrgUnit),
    Some(GroupBy::Theme),
    Some(GroupBy::Channel),
    Some(GroupBy::SeldomHeard),
];

/// Stats of `models` from the aggregates, and their work, at a `now` when no loop is due.
fn answered(
    models: &ReadModels,
    group_by: Option<GroupBy>,
    from: Option<&str>,
    to: Option<&str>,
) -> (Stats, StatsWork) {
    let query = StatsQuery {
        group_by,
        from: from.map(|from| from.parse().unwrap()),
        to: to.map(|to| to.parse().unwrap()),
        scope: None,
    };
    let now = "2027-06-01T12:00:00Z".parse().unwrap();
    let answer = models.stats_traced(&query, now, &Sla::default());
    assert_eq!(
        answer.0,
        models.stats_scanned(&query, now, &Sla::default()).0
    );
    answer
}

#[test]
fn answers_from_the_aggregates_cost_days_and_groups_not_loops() {
    let (few, many) = (alike(4), alike(40));
    // Whole days, as dates give them. The 40 days from the 5th of October (day 20,731) to
    // the 13th of November are the last 5 days of block 647, block 648 (from the 10th of
    // October) and the first 3 days of block 649 (from the 11th of November). All the days
    // are in era 20 (from the 28th of January 2026), one bucket.
    let ranges = [
        (None, None, 1),
        (Some("2026-10-05T00:00:00Z"), None, 5 + 2),
        (
            Some("2026-10-07T00:00:00Z"),
            Some("2026-11-12T00:00:00Z"),
            3 + 1 + 1,
        ),
        (
            Some("2026-10-10T00:00:00Z"),
            Some("2026-10-31T00:00:00Z"),
            21,
        ),
    ];
    for group_by in GROUPINGS {
        for &(from, to, buckets) in &ranges {
            let (small, work) = answered(&few, group_by, from, to);
            let (large, large_work) = answered(&many, group_by, from, to);
            let what = format!("{group_by:?} {from:?}..{to:?}");
            assert_eq!(
                large_work, work,
                "{what}: ten times the loops, the same work"
            );
            assert_eq!(work.adds, 0, "{what}: no loop counted one by one");
            let groups = small.groups.len() as u64;
            assert_eq!(work.buckets, groups * buckets, "{what}");
            assert_eq!(large.groups.len(), small.groups.len(), "{what}");
            for (large, small) in large.groups.iter().zip(&small.groups) {
                assert_eq!(large.received, 10 * small.received, "{what}");
                assert_eq!(large.median_days_to_close, small.median_days_to_close);
            }
        }
    }
}

#[test]
fn only_the_loops_of_partial_days_and_due_today_are_counted_one_by_one() {
    let models = alike(6);
    // From noon on the 10th of October to noon on the 30th: the loops of those two days
    // received in range (at 09:00, so only the 30th's) are scanned, the rest summed.
    let (stats, work) = answered(
        &models,
        None,
        Some("2026-10-10T12:00:00Z"),
        Some("2026-10-30T12:00:00Z"),
    );
    assert_eq!(stats.groups[0].received, 20 * 6);
    assert_eq!(work.adds, 6);
    // The open loops of the first day are due 25 working days after receipt, at 09:00 on
    // Monday the 9th of November: that day they are checked against `now` one by one.
    let query = StatsQuery::default();
    for (now, overdue) in [("2026-11-09T08:00:00Z", 0), ("2026-11-09T10:00:00Z", 3)] {
        let now = now.parse().unwrap();
        let (stats, work) = models.stats_traced(&query, now, &Sla::default());
        assert_eq!(stats, models.stats_scanned(&query, now, &Sla::default()).0);
        assert_eq!(stats.groups[0].overdue, overdue);
        assert_eq!((work.due_today, work.adds), (3, 0));
    }
}

#[test]
fn a_loop_due_today_that_changes_is_counted_as_it_is_now() {
    let mut models = alike(6);
    let now = "2026-11-09T10:00:00Z".parse().unwrap();
    let by_org = StatsQuery {
        group_by: Some(GroupBy::OrgUnit),
        ..StatsQuery::default()
    };
    let overdue = |models: &ReadModels, query: &StatsQuery| {
        let (stats, _) = models.stats_traced(query, now, &Sla::default());
        assert_eq!(stats, models.stats_scanned(query, now, &Sla::default()).0);
        stats.groups.iter().map(|g| g.overdue).collect::<Vec<_>>()
    };
    // Loops 1, 3 and 5 (org unit rxx/b) became overdue at 09:00 today; rxx/a's loops were
    // closed, and many more of both are overdue since earlier days.
    let all = overdue(&models, &StatsQuery::default());
    let orgs = overdue(&models, &by_org);
    // Loop 1 is closed: it is overdue no more, in every grouping, at once.
    let no_change = serde_json::json!({"by": "ward", "reason": "Cannot"});
    let no_change = LoopEvent::from_stored_data(EventType::NoChange, no_change).unwrap();
    append(&mut models, 1, 3, "2026-11-09T09:30:00Z", no_change);
    let back = serde_json::json!({"by": "pals", "message": "Done"});
    let back = LoopEvent::from_stored_data(EventType::ReportedBack, back).unwrap();
    append(&mut models, 1, 4, "2026-11-09T09:31:00Z", back);
    assert_eq!(overdue(&models, &StatsQuery::default()), vec![all[0] - 1]);
    assert_eq!(overdue(&models, &by_org), vec![orgs[0], orgs[1] - 1]);
}

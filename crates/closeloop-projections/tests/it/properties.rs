//! Property: applying the log incrementally, in random batches, with snapshot restarts in
//! between, gives exactly the read models a single rebuild from position 0 gives; and every
//! loop's state is the domain's own fold of its events.

use closeloop_domain::{EventType, LoopEvent};
use closeloop_projections::{
    GroupBy, LoopQuery, LoopSummary, PublishedFilter, ReadModels, StatsQuery,
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

use crate::{Log, all, id, sla, ts};

/// Everything the read models answer, as one JSON document: every list page by page, stats
/// for every grouping with and without a range, every published page (unfiltered and by each
/// place and theme it offers), the checkpoint.
pub fn dump(models: &ReadModels, now: Timestamp) -> Value {
    let mut lists = Vec::new();
    for query in [all(), LoopQuery::default()] {
        let mut pages = Vec::new();
        let mut query = LoopQuery { limit: 2, ..query };
        loop {
            let page = models.list(&query, now, &sla()).unwrap();
            let next = page.next_cursor.clone();
            pages.push(serde_json::to_value(page).unwrap());
            match next {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        lists.push(pages);
    }
    let overdue = models
        .list(
            &LoopQuery {
                overdue: Some(true),
                ..all()
            },
            now,
            &sla(),
        )
        .unwrap();
    let mut stats = Vec::new();
    for group_by in [
        None,
        Some(GroupBy::OrgUnit),
        Some(GroupBy::Theme),
        Some(GroupBy::Channel),
        Some(GroupBy::SeldomHeard),
    ] {
        for (from, to) in [
            (None, None),
            (Some(now - SignedDuration::from_hours(30)), Some(now)),
        ] {
            let query = StatsQuery {
                group_by,
                from,
                to,
                ..StatsQuery::default()
            };
            stats.push(serde_json::to_value(models.stats(&query, now, &sla())).unwrap());
        }
    }
    let places = models.published_places(100);
    let themes = models.published_themes(100);
    let mut filters = vec![PublishedFilter::default()];
    filters.extend(places.iter().map(|(place, _)| PublishedFilter {
        place: Some(place.clone()),
        theme: None,
    }));
    filters.extend(themes.iter().map(|(theme, _)| PublishedFilter {
        place: None,
        theme: Some(theme.clone()),
    }));
    let mut published = Vec::new();
    for filter in &filters {
        let mut cursor = None;
        loop {
            let page = models
                .published_matching(filter, 2, cursor.as_deref())
                .unwrap();
            cursor.clone_from(&page.next_cursor);
            published.push(serde_json::to_value(page).unwrap());
            if cursor.is_none() {
                break;
            }
        }
    }
    json!({
        "published_places": places.iter().map(|(place, n)| (place.as_str(), n)).collect::<Vec<_>>(),
        "published_themes": themes,
        "checkpoint": models.checkpoint(),
        "published_version": models.published_version(),
        "loops": models.loop_count(),
        "lists": lists,
        "overdue": serde_json::to_value(overdue).unwrap(),
        "stats": stats,
        "published": published,
    })
}

/// The "you said, we did" page as its rule says, folded from the log independently of the
/// read models: a loop is shown while it is closed, consented, and its latest outcome since
/// receipt or the last reopening is a change; it shows the changes recorded since then;
/// newest `closed_at` first, ties by loop id.
fn expected_published(log: &Log) -> Vec<(String, Vec<String>, Timestamp)> {
    #[derive(Default)]
    struct Fold {
        consent: bool,
        closed_at: Option<Timestamp>,
        latest_is_change: bool,
        changes: Vec<String>,
    }
    let mut loops: std::collections::BTreeMap<String, Fold> = std::collections::BTreeMap::new();
    for (entry, event) in &log.entries {
        let fold = loops.entry(entry.loop_id.as_str().to_owned()).or_default();
        match &event.payload {
            LoopEvent::FeedbackReceived(data) => {
                *fold = Fold {
                    consent: data.consent_to_publish,
                    ..Fold::default()
                };
            }
            LoopEvent::ChangeMade(data) => {
                fold.latest_is_change = true;
                if fold.consent {
                    fold.changes.push(data.description.clone());
                }
            }
            LoopEvent::NoChange(_) => fold.latest_is_change = false,
            LoopEvent::ReportedBack(_) => fold.closed_at = Some(event.time),
            LoopEvent::Reopened(_) => {
                fold.closed_at = None;
                fold.latest_is_change = false;
                fold.changes.clear();
            }
            _ => {}
        }
    }
    let mut shown: Vec<_> = loops
        .into_iter()
        .filter(|(_, f)| f.consent && f.latest_is_change)
        .filter_map(|(id, f)| f.closed_at.map(|at| (id, f.changes, at)))
        .collect();
    shown.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    shown
}

/// One generated command: which loop, which event, minutes after the previous command, and
/// choices for the feedback's data.
type Step = (usize, EventType, i64, (usize, usize, usize, usize, bool));

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let data = (
        0..4_usize,
        0..4_usize,
        0..4_usize,
        0..8_usize,
        any::<bool>(),
    );
    prop::collection::vec(
        (
            0..5_usize,
            select(EventType::ALL.to_vec()),
            0..3_000_i64,
            data,
        ),
        1..80,
    )
}

fn payload(
    event_type: EventType,
    (org, channel, themes, ratings, consent): (usize, usize, usize, usize, bool),
) -> LoopEvent {
    const ORGS: [&str; 4] = ["rxx", "rxx/site-a", "rxx/site-a/ward-7", "ryy/site-b"];
    const CHANNELS: [&str; 4] = ["web", "sms", "survey", "community_partner"];
    let theme_lists = [
        json!([]),
        json!(["food"]),
        json!(["food", "noise"]),
        json!(["noise", "noise"]),
    ];
    let tag_lists = [
        json!([]),
        json!(["homeless"]),
        json!(["carers", "homeless"]),
        json!([]),
    ];
    let rating_sets = [
        json!({"fft": 1}),
        json!({"fft": 2}),
        json!({"fft": 3}),
        json!({"fft": 4}),
        json!({"fft": 5}),
        json!({"fft": 6, "stars": 3}),
        json!({"stars": 4.5}),
        json!({"fft": 1, "wait": -2}),
    ];
    let data = match event_type {
        EventType::FeedbackReceived => json!({
            "org_unit": ORGS[org],
            "channel": CHANNELS[channel],
            "themes": theme_lists[themes],
            "seldom_heard": tag_lists[themes],
            "ratings": rating_sets[ratings],
            "consent_to_publish": consent,
        }),
        EventType::Acknowledged => json!({"by": "pals"}),
        EventType::Responded => json!({"by": "pals", "text": "Thanks"}),
        EventType::ActionPlanned => {
            json!({"by": "ward", "description": "Plan", "due": "2027-01-31"})
        }
        EventType::ChangeMade => json!({"by": "ward", "description": format!("Change {ratings}")}),
        EventType::NoChange => json!({"by": "ward", "reason": "Cannot"}),
        EventType::ReportedBack => json!({"by": "pals", "message": "Done"}),
        EventType::Reopened => json!({"by": "pals", "reason": "Again"}),
        EventType::Erased => json!({"by": "admin", "matched_by": "loop_id"}),
        EventType::StoryApproved => json!({"by": "ward"}),
    };
    LoopEvent::from_data(event_type, data).expect("valid generated data")
}

/// Builds a log from the steps, keeping what `decide` accepts. Most steps receive a loop
/// first, so that the rest are not all refused as unknown.
fn build(steps: &[Step]) -> (Log, Timestamp) {
    let mut log = Log::default();
    let mut at = ts("2026-11-20T08:00:00Z");
    for &(n, event_type, gap, data) in steps {
        at += SignedDuration::from_mins(gap);
        let loop_id = format!("loop-{n}");
        let accepted = log.try_command(&loop_id, at, payload(event_type, data));
        if accepted.is_err() && event_type != EventType::FeedbackReceived {
            let _ = log.try_command(&loop_id, at, payload(EventType::FeedbackReceived, data));
        }
    }
    (log, at)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn incremental_with_restarts_equals_one_rebuild(
        steps in steps(),
        batches in prop::collection::vec((1..12_usize, any::<bool>(), any::<bool>()), 1..40),
    ) {
        let (log, end) = build(&steps);
        // A `now` inside the log's time span, so that some loops are overdue and some not.
        let now = end - SignedDuration::from_hours(48);
        let rebuilt = log.models();

        let mut models = ReadModels::default();
        let mut done = 0;
        let mut batches = batches.into_iter().cycle();
        while done < log.entries.len() {
            let (size, restart, query) = batches.next().expect("cycle never ends");
            let upto = (done + size).min(log.entries.len());
            for (entry, event) in &log.entries[done..upto] {
                models.apply(entry, event);
            }
            done = upto;
            if query {
                // Queries build the SLA-dependent figures, which `apply` must then keep.
                let _ = models.stats(&StatsQuery::default(), now, &sla());
            }
            if restart {
                models = ReadModels::from_snapshot(&models.to_snapshot()).expect("own snapshot");
            }
        }
        prop_assert_eq!(models.checkpoint(), log.entries.len() as u64);
        prop_assert_eq!(dump(&models, now), dump(&rebuilt, now));

        // The overdue filter and the stats agree with each loop's own `Sla::is_overdue`.
        let overdue_query = LoopQuery { overdue: Some(true), ..all() };
        let listed: Vec<String> = models
            .list(&overdue_query, now, &sla())
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.loop_id.to_string())
            .collect();
        let expected: Vec<String> = log
            .loop_ids()
            .into_iter()
            .filter(|l| sla().is_overdue(log.state(l), now))
            .collect();
        let mut sorted = listed.clone();
        sorted.sort();
        prop_assert_eq!(&sorted, &expected);
        // The public page follows its latest-outcome rule.
        let published: Vec<_> = models
            .published(1_000, None)
            .unwrap()
            .items
            .into_iter()
            .map(|p| (p.loop_id.to_string(), p.we_did, p.closed_at))
            .collect();
        prop_assert_eq!(published, expected_published(&log));
        // Filtered pages hold exactly the entries of the whole page that match, in its order.
        let whole = models.published(1_000, None).unwrap().items;
        for (theme, count) in models.published_themes(1_000) {
            let filter = PublishedFilter { place: None, theme: Some(theme.clone()) };
            let filtered = models.published_matching(&filter, 1_000, None).unwrap().items;
            let expected: Vec<_> = whole.iter().filter(|p| p.themes.contains(&theme)).cloned().collect();
            prop_assert_eq!(filtered.len() as u64, count);
            prop_assert_eq!(filtered, expected);
        }
        for (place, count) in models.published_places(1_000) {
            let filter = PublishedFilter { place: Some(place.clone()), theme: None };
            let filtered = models.published_matching(&filter, 1_000, None).unwrap().items;
            let expected: Vec<_> = whole.iter().filter(|p| p.org_unit.is_within(&place)).cloned().collect();
            prop_assert_eq!(filtered.len() as u64, count);
            prop_assert_eq!(filtered, expected);
        }

        let stats = models.stats(&StatsQuery::default(), now, &sla());
        prop_assert_eq!(stats.groups[0].overdue, expected.len() as u64);

        for loop_id in log.loop_ids() {
            let state = log.state(&loop_id);
            prop_assert_eq!(models.state(&id(&loop_id)), Some(state.clone()));
            let expected = LoopSummary::of(id(&loop_id), state.clone(), now, &sla());
            prop_assert_eq!(models.summary(&id(&loop_id), now, &sla()), Some(expected));
        }
    }
}

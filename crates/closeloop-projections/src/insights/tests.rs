//! The insights' own parts: the aggregates against `stats`, the scope, months, bins and
//! the choices offered.

use super::answer::close_bins;
use super::*;
use crate::daily::{DaysTally, Key};
use crate::stats::{GroupBy, StatsQuery};
use closeloop_domain::{Event, EventType, LoopEvent};
use closeloop_store::{Hash, StoredEvent, record};

/// Applies `event_type` with `data` to loop `loop_id` at `time`, as the next entry.
fn apply(
    models: &mut ReadModels,
    loop_id: &str,
    time: &str,
    event_type: EventType,
    data: serde_json::Value,
) {
    let event = Event {
        event_id: format!("e-{}", models.checkpoint()),
        source: "urn:test:insights".to_owned(),
        time: time.parse().expect("a time"),
        payload: LoopEvent::from_stored_data(event_type, data).expect("data"),
        actor: None,
    };
    let entry = StoredEvent {
        position: models.checkpoint() + 1,
        loop_id: LoopId::parse(loop_id).expect("an id"),
        version: 1,
        prev_hash: Hash::ZERO,
        hash: Hash::ZERO,
        record: record::encode(&event),
    };
    models.apply(&entry, &event);
}

/// Each org unit's own loops from the aggregates, as `group_by=org_unit` keys them: its
/// subtree less the subtrees of its children. This is how `/v1/stats` can be served from
/// the aggregates.
fn by_org_unit(models: &ReadModels, days: Range<Day>) -> Vec<(String, Sum)> {
    models.with_timing(&Sla::default(), |timing| {
        let subtree = |id: u32| {
            timing
                .daily
                .series(Key::Org(id))
                .map(|series| Sum::of(series, days.clone()))
                .unwrap_or_default()
        };
        let mut units = Vec::new();
        for id in 0..u32::try_from(models.orgs.len()).expect("few") {
            let name = models.orgs.name(id);
            let mut own = subtree(id);
            for child in 0..u32::try_from(models.orgs.len()).expect("few") {
                let child_name = models.orgs.name(child);
                let is_child = child_name
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| !rest.contains('/'));
                if is_child {
                    own = own.without(&subtree(child));
                }
            }
            if own.received > 0 {
                units.push((name.to_owned(), own));
            }
        }
        units.sort_by(|a, b| a.0.cmp(&b.0));
        units
    })
}

#[test]
fn the_aggregates_give_what_stats_give_overall_and_by_org_unit() {
    let mut models = ReadModels::default();
    models.prepare(&Sla::default());
    // Monday 2 November 2026; loops closed whole working days later, at the same time.
    let units = [
        "rxx", "rxx/a", "rxx/a/w1", "rxx/a/w1", "rxx/b/w2", "ryy", "rxx/a",
    ];
    let closes = [
        Some("2026-11-05"),
        None,
        Some("2026-11-03"),
        Some("2026-11-12"),
        None,
        Some("2026-11-02"),
        Some("2026-11-09"),
    ];
    for (n, (unit, close)) in units.iter().zip(closes).enumerate() {
        let id = format!("l{n}");
        let data = serde_json::json!({"org_unit": unit, "channel": "web", "ratings": {"fft": 2}});
        apply(
            &mut models,
            &id,
            "2026-11-02T09:00:00Z",
            EventType::FeedbackReceived,
            data,
        );
        if let Some(day) = close {
            let at = format!("{day}T09:00:00Z");
            apply(
                &mut models,
                &id,
                &at,
                EventType::ChangeMade,
                serde_json::json!({"by": "w", "description": "d"}),
            );
            apply(
                &mut models,
                &id,
                &at,
                EventType::ReportedBack,
                serde_json::json!({"by": "w", "message": "m"}),
            );
        }
    }
    let now: Timestamp = "2026-12-01T00:00:00Z".parse().expect("a time");
    let days = day_of_date(date("2026-11-01"))..day_of_date(date("2026-12-01"));
    let query = |group_by| StatsQuery {
        group_by,
        from: Some("2026-11-01T00:00:00Z".parse().expect("a time")),
        to: Some("2026-12-01T00:00:00Z".parse().expect("a time")),
        scope: None,
    };
    let figures_of = |sum: &Sum| {
        let figures = figures(sum);
        (
            figures.received,
            figures.closed,
            figures.median_days_to_acknowledge,
            figures.median_days_to_close,
        )
    };
    let stats = models.stats(&query(Some(GroupBy::OrgUnit)), now, &Sla::default());
    let from_stats: Vec<_> = stats
        .groups
        .iter()
        .map(|g| {
            (
                g.key.clone(),
                (
                    g.received,
                    g.closed,
                    g.median_days_to_acknowledge,
                    g.median_days_to_close,
                ),
            )
        })
        .collect();
    let from_aggregates: Vec<_> = by_org_unit(&models, days.clone())
        .iter()
        .map(|(unit, sum)| (unit.clone(), figures_of(sum)))
        .collect();
    assert_eq!(from_aggregates, from_stats);
    assert_eq!(from_stats.len(), 5, "{from_stats:?}");

    let overall = &models.stats(&query(None), now, &Sla::default()).groups[0];
    let all = models.with_timing(&Sla::default(), |timing| {
        Sum::of(timing.daily.series(Key::All).expect("loops"), days)
    });
    assert_eq!(
        figures_of(&all),
        (
            overall.received,
            overall.closed,
            overall.median_days_to_acknowledge,
            overall.median_days_to_close
        )
    );
}

fn date(raw: &str) -> Date {
    raw.parse().expect("a date")
}

#[test]
fn a_place_outside_the_scope_counts_nothing_and_an_ancestor_counts_the_scope() {
    let org = |raw: &str| OrgUnit::parse(raw).expect("an org unit");
    let scope = org("rxx/a");
    assert_eq!(effective_place(None, None), Some(None));
    assert_eq!(
        effective_place(None, Some(&scope)),
        Some(Some(scope.clone()))
    );
    assert_eq!(
        effective_place(Some(&org("rxx/a/w1")), Some(&scope)),
        Some(Some(org("rxx/a/w1")))
    );
    assert_eq!(
        effective_place(Some(&org("rxx")), Some(&scope)),
        Some(Some(scope.clone()))
    );
    assert_eq!(effective_place(Some(&org("rxx/ab")), Some(&scope)), None);
}

#[test]
fn the_places_offered_are_within_the_scope_and_the_shallowest_first() {
    let mut models = ReadModels::default();
    let mut units = vec!["rxx/a/w1".to_owned(), "rxx/ab".to_owned(), "ryy".to_owned()];
    units.extend((0..150).map(|n| format!("rxx/a/w{n:03}/bay")));
    for (n, unit) in units.iter().enumerate() {
        let data = serde_json::json!({"org_unit": unit, "channel": "web", "themes": [format!("t{}", n % 3)]});
        apply(
            &mut models,
            &format!("l{n}"),
            "2026-11-02T09:00:00Z",
            EventType::FeedbackReceived,
            data,
        );
    }
    let query = InsightsQuery {
        place: None,
        theme: None,
        from: date("2026-11-01"),
        to: date("2026-12-01"),
        scope: Some(OrgUnit::parse("rxx/a").expect("an org unit")),
    };
    let choices = models.insight_choices(&query, &Sla::default());
    assert_eq!(choices.places.len(), MAX_PLACE_CHOICES);
    assert!(
        choices
            .places
            .iter()
            .all(|p| p.as_str().starts_with("rxx/a/w")),
        "{choices:?}"
    );
    // Of 151 wards (depth 3) and 150 bays (depth 4), the first 100 places are wards.
    assert!(
        choices
            .places
            .iter()
            .all(|p| p.as_str().split('/').count() == 3)
    );
    assert_eq!(choices.themes, ["t0", "t1", "t2"]);
}

#[test]
fn months_are_whole_calendar_months_at_most_the_last_twenty_four() {
    assert_eq!(
        months(date("2026-01-15"), date("2026-03-01")),
        [date("2026-01-01"), date("2026-02-01")]
    );
    let long = months(date("2020-01-01"), date("2026-01-01"));
    assert_eq!(long.len(), MAX_MONTHS);
    assert_eq!(long[0], date("2024-01-01"));
}

#[test]
fn close_times_fall_in_working_week_bins_the_last_open_ended() {
    let mut tally = DaysTally::default();
    for (days, loops) in [(0, 2), (4, 1), (5, 3), (44, 1), (45, 1), (300, 2)] {
        tally.add(days, loops);
    }
    let bins = close_bins(&tally);
    assert_eq!(bins.len(), CLOSE_BINS as usize);
    assert_eq!(
        (bins[0].from_days, bins[0].to_days, bins[0].loops),
        (0, Some(4), 3)
    );
    assert_eq!(
        (bins[1].from_days, bins[1].to_days, bins[1].loops),
        (5, Some(9), 3)
    );
    assert_eq!(
        (bins[8].from_days, bins[8].to_days, bins[8].loops),
        (40, Some(44), 1)
    );
    assert_eq!(
        (bins[9].from_days, bins[9].to_days, bins[9].loops),
        (45, None, 3)
    );
}

//! Events stored before today's input limits: the read models take a capped part of them, so
//! no read becomes expensive and nothing crashes.

use closeloop_domain::{EventType, LoopEvent};
use closeloop_projections::{
    GroupBy, MAX_CHANGES_PER_LOOP, MAX_DESCRIPTION_BYTES, MAX_NAME_BYTES, MAX_RATINGS, MAX_TAGS,
    MAX_THEMES, ReadModels, StatsQuery,
};
use serde_json::{Map, Value, json};

use crate::{Log, id, sla, ts};

/// Builds a stored event's payload without today's validation.
fn stored(event_type: EventType, data: Value) -> LoopEvent {
    LoopEvent::from_stored_data(event_type, data).expect("a well-formed stored event")
}

/// A loop with 60,000 themes (each 150 bytes, multi-byte characters across the cut), 5,000
/// tags, 500 ratings with long names, and changes of 1 MB each, 30 of them: what a log may hold
/// from before the limits.
fn oversized() -> Log {
    let long = "é".repeat(75); // 150 bytes: the cut at 100 bytes falls on a boundary or not
    let themes: Vec<String> = (0..60_000).map(|i| format!("{i:05}{long}")).collect();
    let tags: Vec<String> = (0..5_000).map(|i| format!("tag-{i}")).collect();
    // Half short names, half long ones that differ only after their first 100 bytes.
    let ratings: Map<String, Value> = (0..500)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("r{i:03}")
            } else {
                format!("{long}{i:03}")
            };
            (name, json!(i))
        })
        .collect();
    let mut log = Log::default();
    log.stored(
        "big",
        "2026-11-23T09:00:00Z",
        stored(
            EventType::FeedbackReceived,
            json!({"org_unit": "rxx", "channel": "web", "themes": themes, "seldom_heard": tags,
                   "ratings": ratings, "consent_to_publish": true}),
        ),
    );
    for n in 0..30 {
        log.stored(
            "big",
            "2026-11-24T09:00:00Z",
            stored(
                EventType::ChangeMade,
                json!({"by": "ward", "description": format!("{n:02}{}", "x".repeat(1 << 20))}),
            ),
        );
    }
    log.stored(
        "big",
        "2026-11-25T09:00:00Z",
        stored(
            EventType::ReportedBack,
            json!({"by": "pals", "message": "Done"}),
        ),
    );
    log
}

#[test]
fn an_oversized_stored_event_is_projected_capped() {
    let models: ReadModels = oversized().models();
    let now = ts("2026-12-01T00:00:00Z");
    let summary = models.summary(&id("big"), now, &sla()).unwrap();
    assert_eq!(summary.themes.len(), MAX_THEMES);
    assert!(summary.themes.iter().all(|t| t.len() <= MAX_NAME_BYTES));
    // The first themes, cut on a character boundary ("é" is two bytes; 5 digits + 47 of
    // them make 99 bytes).
    assert_eq!(summary.themes[0], format!("00000{}", "é".repeat(47)));
    assert_eq!(summary.seldom_heard.len(), MAX_TAGS);
    assert_eq!(summary.seldom_heard[0], "tag-0");
    assert_eq!(summary.ratings.len(), MAX_RATINGS);
    assert_eq!(
        summary.ratings.keys().next().map(String::as_str),
        Some("r000")
    );

    let page = models.published(10, None).unwrap();
    assert_eq!(page.items.len(), 1);
    let we_did = &page.items[0].we_did;
    assert_eq!(we_did.len(), MAX_CHANGES_PER_LOOP);
    assert!(we_did.iter().all(|d| d.len() == MAX_DESCRIPTION_BYTES));
    assert!(we_did[0].starts_with("00x") && we_did[19].starts_with("19x"));

    // The query that once took 23 GB: one group per kept theme, five top themes each.
    let stats = models.stats(
        &StatsQuery {
            group_by: Some(GroupBy::Theme),
            ..StatsQuery::default()
        },
        now,
        &sla(),
    );
    assert_eq!(stats.groups.len(), MAX_THEMES);
    assert!(stats.groups.iter().all(|g| g.top_themes.len() == 5));
    let by_tag = models.stats(
        &StatsQuery {
            group_by: Some(GroupBy::SeldomHeard),
            ..StatsQuery::default()
        },
        now,
        &sla(),
    );
    assert_eq!(by_tag.groups.len(), MAX_TAGS);

    // And the capped models survive a snapshot round trip.
    let back = ReadModels::from_snapshot(&models.to_snapshot()).unwrap();
    assert_eq!(back.summary(&id("big"), now, &sla()), Some(summary));
}

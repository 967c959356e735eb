//! `published`: closed, consented loops with a change; reopening takes a loop off the page.

use closeloop_domain::EventType;
use closeloop_projections::{PublishedPage, QueryError, ReadModels};
use serde_json::json;

use crate::{Log, ts};

fn receive(log: &mut Log, loop_id: &str, at: &str, consent: bool) {
    log.receive(
        loop_id,
        at,
        json!({"org_unit": "rxx/site-a", "channel": "web", "story": "Too noisy at night",
               "themes": ["noise"], "consent_to_publish": consent}),
    );
}

fn change(log: &mut Log, loop_id: &str, at: &str, description: &str) {
    log.cmd(
        loop_id,
        at,
        EventType::ChangeMade,
        json!({"by": "ward", "description": description}),
    );
}

fn report_back(log: &mut Log, loop_id: &str, at: &str) {
    log.cmd(
        loop_id,
        at,
        EventType::ReportedBack,
        json!({"by": "pals", "message": "Here is what we did"}),
    );
}

fn ids(page: &PublishedPage) -> Vec<&str> {
    page.items.iter().map(|p| p.loop_id.as_str()).collect()
}

fn all(models: &ReadModels) -> Vec<String> {
    models
        .published(100, None)
        .unwrap()
        .items
        .iter()
        .map(|p| p.loop_id.to_string())
        .collect()
}

#[test]
fn only_closed_consented_loops_with_a_change_are_published() {
    let mut log = Log::default();
    // p1: consent, change, closed: published.
    receive(&mut log, "p1", "2026-11-23T09:00:00Z", true);
    change(
        &mut log,
        "p1",
        "2026-11-24T09:00:00Z",
        "Quiet hours after 10pm",
    );
    change(&mut log, "p1", "2026-11-24T10:00:00Z", "Soft-close bins");
    report_back(&mut log, "p1", "2026-11-25T09:00:00Z");
    // p2: no consent.
    receive(&mut log, "p2", "2026-11-23T09:00:00Z", false);
    change(&mut log, "p2", "2026-11-24T09:00:00Z", "Something");
    report_back(&mut log, "p2", "2026-11-25T09:00:00Z");
    // p3: closed with no change.
    receive(&mut log, "p3", "2026-11-23T09:00:00Z", true);
    log.cmd(
        "p3",
        "2026-11-24T09:00:00Z",
        EventType::NoChange,
        json!({"by": "ward", "reason": "No budget"}),
    );
    report_back(&mut log, "p3", "2026-11-25T09:00:00Z");
    // p4: a change, not yet reported back.
    receive(&mut log, "p4", "2026-11-23T09:00:00Z", true);
    change(
        &mut log,
        "p4",
        "2026-11-24T09:00:00Z",
        "Earplugs on request",
    );

    let models = log.models();
    let page = models.published(10, None).unwrap();
    assert_eq!(ids(&page), ["p1"]);
    let p1 = &page.items[0];
    assert_eq!(p1.themes, ["noise"]);
    assert_eq!(p1.we_did, ["Quiet hours after 10pm", "Soft-close bins"]);
    assert_eq!(p1.closed_at, ts("2026-11-25T09:00:00Z"));
    assert_eq!(page.next_cursor, None);
}

#[test]
fn reopening_removes_a_loop_and_closing_again_brings_it_back() {
    let mut log = Log::default();
    receive(&mut log, "r1", "2026-11-23T09:00:00Z", true);
    change(&mut log, "r1", "2026-11-24T09:00:00Z", "New signage");
    report_back(&mut log, "r1", "2026-11-25T09:00:00Z");
    assert_eq!(all(&log.models()), ["r1"]);

    log.cmd(
        "r1",
        "2026-11-26T09:00:00Z",
        EventType::Reopened,
        json!({"by": "pals", "reason": "Signs fell down"}),
    );
    assert!(all(&log.models()).is_empty());

    // Closed again after a no-change: the earlier change still counts.
    log.cmd(
        "r1",
        "2026-11-27T09:00:00Z",
        EventType::NoChange,
        json!({"by": "ward", "reason": "Signs are back up"}),
    );
    report_back(&mut log, "r1", "2026-11-28T09:00:00Z");
    let models = log.models();
    let page = models.published(10, None).unwrap();
    assert_eq!(ids(&page), ["r1"]);
    assert_eq!(page.items[0].we_did, ["New signage"]);
    assert_eq!(page.items[0].closed_at, ts("2026-11-28T09:00:00Z"));
}

#[test]
fn pages_by_closed_at_then_loop_id() {
    let mut log = Log::default();
    for (loop_id, closed) in [
        ("c", "2026-11-26T09:00:00Z"),
        ("b", "2026-11-25T09:00:00Z"),
        ("a", "2026-11-26T09:00:00Z"),
        ("d", "2026-11-24T09:00:00Z"),
    ] {
        receive(&mut log, loop_id, "2026-11-23T09:00:00Z", true);
        change(&mut log, loop_id, "2026-11-23T10:00:00Z", "A change");
        report_back(&mut log, loop_id, closed);
    }
    let models = log.models();
    assert_eq!(all(&models), ["d", "b", "a", "c"]);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = models.published(3, cursor.as_deref()).unwrap();
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["d", "b", "a", "c"]);
    assert!(matches!(
        models.published(3, Some("garbage")),
        Err(QueryError::BadCursor(_))
    ));
}

//! `published`: closed, consented loops whose latest outcome is a change, newest first;
//! reopening takes a loop off the page, and only the latest closing's changes are shown.

use closeloop_domain::EventType;
use closeloop_domain::OrgUnit;
use closeloop_projections::{PublicKey, PublishedFilter, PublishedPage, QueryError, ReadModels};
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

fn reopen(log: &mut Log, loop_id: &str, at: &str) {
    log.cmd(
        loop_id,
        at,
        EventType::Reopened,
        json!({"by": "pals", "reason": "It happened again"}),
    );
}

fn no_change(log: &mut Log, loop_id: &str, at: &str) {
    log.cmd(
        loop_id,
        at,
        EventType::NoChange,
        json!({"by": "ward", "reason": "Nothing more we can do"}),
    );
}

#[test]
fn reopening_removes_a_loop_and_a_closing_without_a_change_keeps_it_off() {
    let mut log = Log::default();
    receive(&mut log, "r1", "2026-11-23T09:00:00Z", true);
    change(&mut log, "r1", "2026-11-24T09:00:00Z", "New signage");
    report_back(&mut log, "r1", "2026-11-25T09:00:00Z");
    assert_eq!(all(&log.models()), ["r1"]);

    reopen(&mut log, "r1", "2026-11-26T09:00:00Z");
    assert!(all(&log.models()).is_empty());

    // Closed again with no change: its latest outcome is not a change, so it stays off.
    no_change(&mut log, "r1", "2026-11-27T09:00:00Z");
    report_back(&mut log, "r1", "2026-11-28T09:00:00Z");
    assert!(all(&log.models()).is_empty());
}

#[test]
fn closing_again_after_a_new_change_shows_only_the_new_changes() {
    let mut log = Log::default();
    receive(&mut log, "r1", "2026-11-23T09:00:00Z", true);
    change(&mut log, "r1", "2026-11-24T09:00:00Z", "New signage");
    report_back(&mut log, "r1", "2026-11-25T09:00:00Z");
    reopen(&mut log, "r1", "2026-11-26T09:00:00Z");
    no_change(&mut log, "r1", "2026-11-26T10:00:00Z");
    change(
        &mut log,
        "r1",
        "2026-11-27T09:00:00Z",
        "Signs screwed to the wall",
    );
    change(
        &mut log,
        "r1",
        "2026-11-27T10:00:00Z",
        "Weekly check of the signs",
    );
    report_back(&mut log, "r1", "2026-11-28T09:00:00Z");
    let models = log.models();
    let page = models.published(10, None).unwrap();
    assert_eq!(ids(&page), ["r1"]);
    assert_eq!(
        page.items[0].we_did,
        ["Signs screwed to the wall", "Weekly check of the signs"]
    );
    assert_eq!(page.items[0].closed_at, ts("2026-11-28T09:00:00Z"));
}

#[test]
fn a_no_change_after_a_change_makes_the_latest_outcome_no_change() {
    let mut log = Log::default();
    receive(&mut log, "n1", "2026-11-23T09:00:00Z", true);
    change(&mut log, "n1", "2026-11-24T09:00:00Z", "Tried a rota");
    no_change(&mut log, "n1", "2026-11-24T10:00:00Z");
    report_back(&mut log, "n1", "2026-11-25T09:00:00Z");
    assert!(all(&log.models()).is_empty());
}

#[test]
fn the_version_moves_only_when_the_page_changes() {
    let mut log = Log::default();
    receive(&mut log, "v1", "2026-11-23T09:00:00Z", true);
    change(&mut log, "v1", "2026-11-24T09:00:00Z", "Quiet hours");
    let before = log.models().published_version();
    // Unrelated loops and steps leave the page, and its version, alone.
    log.feedback("other", "2026-11-24T09:30:00Z", "rxx/site-b");
    assert_eq!(log.models().published_version(), before);

    report_back(&mut log, "v1", "2026-11-25T09:00:00Z");
    let shown = log.models().published_version();
    assert_ne!(shown, before);
    assert_eq!(log.models().published(10, None).unwrap().version, shown);

    log.close("other", "2026-11-26T09:00:00Z");
    assert_eq!(
        log.models().published_version(),
        shown,
        "no consent: not shown"
    );

    reopen(&mut log, "v1", "2026-11-27T09:00:00Z");
    let hidden = log.models().published_version();
    assert!(hidden > shown);
    // The version is the same however the models were built: a snapshot keeps it.
    let models = log.models();
    let back = ReadModels::from_snapshot(&models.to_snapshot()).unwrap();
    assert_eq!(back.published_version(), hidden);
}

#[test]
fn entries_are_keyed_by_a_public_key() {
    let mut log = Log::default();
    receive(&mut log, "case-123", "2026-11-23T09:00:00Z", true);
    change(&mut log, "case-123", "2026-11-24T09:00:00Z", "A change");
    report_back(&mut log, "case-123", "2026-11-25T09:00:00Z");
    let page = log.models().published(10, None).unwrap();
    let item = &page.items[0];
    // A loop stored without a public id (as before they existed) gets a derived one: never
    // its loop id, which may be a case number.
    assert_eq!(item.key, PublicKey::of_loop("case-123"));
    assert_eq!(item.loop_id.as_str(), "case-123");
    assert_eq!(item.key.as_str().len(), 32);
    assert!(!item.key.as_str().contains("case"));
    assert_eq!(PublicKey::parse(item.key.as_str()), Some(item.key.clone()));
    assert_eq!(PublicKey::parse("case-123"), None);
    assert_eq!(PublicKey::parse("not a key"), None);
    assert_eq!(
        PublicKey::parse(&"A".repeat(32)),
        None,
        "lowercase hex only"
    );
}

#[test]
fn pages_newest_closed_first_then_by_key() {
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
    // Equal closing times are ordered by public key, which says nothing of the loop ids.
    let order = all(&models);
    let mut tied = order[..2].to_vec();
    tied.sort_unstable();
    assert_eq!(tied, ["a", "c"], "{order:?}");
    assert_eq!(order[2..], ["b".to_owned(), "d".to_owned()]);
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
    assert_eq!(seen, order, "pages of 3 walk the same order");
    assert!(matches!(
        models.published(3, Some("garbage")),
        Err(QueryError::BadCursor(_))
    ));
}

/// Publishes `loop_id` in `org_unit` with `themes`, closed at `closed`.
fn publish_in(log: &mut Log, loop_id: &str, org_unit: &str, themes: &[&str], closed: &str) {
    log.receive(
        loop_id,
        "2026-11-23T09:00:00Z",
        json!({"org_unit": org_unit, "channel": "web", "themes": themes,
               "ratings": {"fft": 1}, "consent_to_publish": true}),
    );
    change(log, loop_id, "2026-11-23T10:00:00Z", "A change");
    report_back(log, loop_id, closed);
}

/// Every entry `filter` lets through, paged `limit` at a time.
fn walk(models: &ReadModels, filter: &PublishedFilter, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = models
            .published_matching(filter, limit, cursor.as_deref())
            .unwrap();
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
}

fn place(org_unit: &str) -> PublishedFilter {
    PublishedFilter {
        place: Some(OrgUnit::parse(org_unit).unwrap()),
        theme: None,
    }
}

fn theme(theme: &str) -> PublishedFilter {
    PublishedFilter {
        place: None,
        theme: Some(theme.to_owned()),
    }
}

#[test]
fn filters_by_place_take_in_sub_units_and_by_theme_across_pages() {
    let mut log = Log::default();
    let units = [
        "rxx/royal-infirmary/ward-7",
        "rxx/royal-infirmary",
        "rxx/royal-infirmary-annexe",
        "rxx/city/ward-1",
    ];
    for i in 0..12 {
        let themes: &[&str] = if i % 4 == 0 {
            &["food", "noise"]
        } else {
            &["noise"]
        };
        publish_in(
            &mut log,
            &format!("f{i:02}"),
            units[i % 4],
            themes,
            &format!("2026-11-25T09:{i:02}:00Z"),
        );
    }
    // Unpublished loops in the same places are never shown.
    receive(&mut log, "open", "2026-11-23T09:00:00Z", true);
    let models = log.models();
    let newest_first = |pick: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..12)
            .rev()
            .filter(|&i| pick(i))
            .map(|i| format!("f{i:02}"))
            .collect()
    };
    for limit in [1, 2, 5, 100] {
        assert_eq!(
            walk(&models, &place("rxx/royal-infirmary"), limit),
            newest_first(&|i| i % 4 < 2),
            "a hospital holds its wards, not a unit whose name starts like it"
        );
        assert_eq!(
            walk(&models, &place("rxx/royal-infirmary/ward-7"), limit),
            newest_first(&|i| i % 4 == 0)
        );
        assert_eq!(
            walk(&models, &theme("food"), limit),
            newest_first(&|i| i % 4 == 0)
        );
        let both = PublishedFilter {
            place: Some(OrgUnit::parse("rxx/city").unwrap()),
            theme: Some("noise".to_owned()),
        };
        assert_eq!(walk(&models, &both, limit), newest_first(&|i| i % 4 == 3));
        assert_eq!(
            walk(&models, &PublishedFilter::default(), limit),
            newest_first(&|_| true)
        );
    }
    for nothing in [place("ryy"), theme("parking"), theme("Noise")] {
        assert!(walk(&models, &nothing, 5).is_empty(), "{nothing:?}");
    }
    // What the filter lists offer: places and themes with entries, the most used first.
    let places = models.published_places(10);
    assert_eq!(places[0], (OrgUnit::parse("rxx").unwrap(), 12));
    assert!(
        places.contains(&(OrgUnit::parse("rxx/royal-infirmary").unwrap(), 6)),
        "{places:?}"
    );
    assert!(
        places.contains(&(OrgUnit::parse("rxx/city/ward-1").unwrap(), 3)),
        "{places:?}"
    );
    assert!(
        !places.iter().any(|(org, _)| org.as_str() == "rxx/site-a"),
        "{places:?}"
    );
    assert_eq!(models.published_places(2).len(), 2);
    assert_eq!(
        models.published_themes(10),
        [("noise".to_owned(), 12), ("food".to_owned(), 3)]
    );
}

#[test]
fn a_loop_leaving_the_page_leaves_its_filters_and_counts() {
    let mut log = Log::default();
    publish_in(
        &mut log,
        "a",
        "rxx/ward-1",
        &["food"],
        "2026-11-25T09:00:00Z",
    );
    publish_in(
        &mut log,
        "b",
        "rxx/ward-2",
        &["noise"],
        "2026-11-25T10:00:00Z",
    );
    reopen(&mut log, "a", "2026-11-26T09:00:00Z");
    let models = log.models();
    assert!(walk(&models, &theme("food"), 10).is_empty());
    assert!(walk(&models, &place("rxx/ward-1"), 10).is_empty());
    assert_eq!(walk(&models, &place("rxx"), 10), ["b"]);
    assert_eq!(models.published_themes(10), [("noise".to_owned(), 1)]);
    assert!(
        !models
            .published_places(10)
            .iter()
            .any(|(org, _)| org.as_str() == "rxx/ward-1")
    );
    // Rebuilt from a snapshot, the indexes say the same.
    let back = ReadModels::from_snapshot(&models.to_snapshot()).unwrap();
    assert_eq!(walk(&back, &place("rxx"), 10), ["b"]);
    assert_eq!(back.published_themes(10), models.published_themes(10));
    assert_eq!(back.published_places(10), models.published_places(10));
}

#[test]
fn published_entries_carry_their_org_unit() {
    let mut log = Log::default();
    publish_in(
        &mut log,
        "a",
        "rxx/ward-1",
        &["food"],
        "2026-11-25T09:00:00Z",
    );
    let page = log.models().published(10, None).unwrap();
    assert_eq!(page.items[0].org_unit.as_str(), "rxx/ward-1");
}

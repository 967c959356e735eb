//! `summary`: the contract's LoopSummary, due dates, `overdue` and null times.

use closeloop_domain::EventType;
use closeloop_projections::{LoopSummary, PublicKey};
use serde_json::{Value, json};

use crate::{Log, id, sla, ts};

fn fixture() -> Log {
    let mut log = Log::default();
    // Monday 10:00: acknowledge by Thursday 10:00, close by five weeks later.
    log.receive(
        "fft-rxx-000123",
        "2026-11-23T10:00:00Z",
        json!({"org_unit": "rxx/site-a/ward-7", "channel": "survey", "ratings": {"fft": 2, "stars": 4.5},
               "themes": ["food", "noise"], "seldom_heard": ["homeless"], "story": "Cold tea",
               "author": {"name": "Jo Bloggs"}, "consent_to_publish": true}),
    );
    log
}

#[test]
fn a_new_loop_has_its_due_dates_and_null_times() {
    let models = fixture().models();
    let summary = models
        .summary(&id("fft-rxx-000123"), ts("2026-11-24T00:00:00Z"), &sla())
        .unwrap();
    let value = serde_json::to_value(&summary).unwrap();
    assert_eq!(
        value,
        json!({
            "loop_id": "fft-rxx-000123",
            "status": "open",
            "stage": "received",
            "org_unit": "rxx/site-a/ward-7",
            "channel": "survey",
            "themes": ["food", "noise"],
            "seldom_heard": ["homeless"],
            "ratings": {"fft": 2, "stars": 4.5},
            "received_at": "2026-11-23T10:00:00Z",
            "acknowledged_at": null,
            "closed_at": null,
            "acknowledge_by": "2026-11-26T10:00:00Z",
            "close_by": "2026-12-28T10:00:00Z",
            "overdue": false,
            "version": 1,
            "public_id": PublicKey::of_loop("fft-rxx-000123").as_str(),
        })
    );
    // The contract's field order, with nulls present rather than skipped.
    let Value::Object(fields) = value else {
        panic!("an object")
    };
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "loop_id",
            "status",
            "stage",
            "org_unit",
            "channel",
            "themes",
            "seldom_heard",
            "ratings",
            "received_at",
            "acknowledged_at",
            "closed_at",
            "acknowledge_by",
            "close_by",
            "overdue",
            "version",
            "public_id"
        ]
    );
}

#[test]
fn overdue_follows_the_unmet_due_dates() {
    let mut log = fixture();
    let loop_id = id("fft-rxx-000123");
    let overdue = |log: &Log, now: &str| {
        log.models()
            .summary(&loop_id, ts(now), &sla())
            .unwrap()
            .overdue
    };
    assert!(!overdue(&log, "2026-11-26T10:00:00Z"));
    assert!(overdue(&log, "2026-11-26T10:00:01Z"));
    // A late acknowledgement still meets the first due date; the close-by date remains.
    log.cmd(
        "fft-rxx-000123",
        "2026-11-27T09:00:00Z",
        EventType::Acknowledged,
        json!({"by": "pals"}),
    );
    assert!(!overdue(&log, "2026-11-27T10:00:00Z"));
    assert!(!overdue(&log, "2026-12-28T10:00:00Z"));
    assert!(overdue(&log, "2026-12-28T10:00:01Z"));
    let summary = log
        .models()
        .summary(&loop_id, ts("2026-11-27T10:00:00Z"), &sla())
        .unwrap();
    assert_eq!(summary.acknowledged_at, Some(ts("2026-11-27T09:00:00Z")));
    assert_eq!(summary.stage.as_str(), "acknowledged");
    assert_eq!(summary.version, 2);
}

#[test]
fn a_closed_loop_is_never_overdue_and_a_reopened_one_restarts_its_close_clock() {
    let mut log = fixture();
    log.close("fft-rxx-000123", "2026-11-25T12:00:00Z");
    let loop_id = id("fft-rxx-000123");
    let summary = log
        .models()
        .summary(&loop_id, ts("2030-01-01T00:00:00Z"), &sla())
        .unwrap();
    assert_eq!(summary.status, closeloop_domain::Status::Closed);
    assert_eq!(summary.closed_at, Some(ts("2026-11-25T12:00:00Z")));
    assert!(!summary.overdue);
    assert_eq!(summary.version, 4);

    // Reopened on Tuesday 1 December: 25 working days from then.
    log.cmd(
        "fft-rxx-000123",
        "2026-12-01T08:00:00Z",
        EventType::Reopened,
        json!({"by": "pals", "reason": "It happened again"}),
    );
    let summary = log
        .models()
        .summary(&loop_id, ts("2026-12-02T00:00:00Z"), &sla())
        .unwrap();
    assert_eq!(summary.stage.as_str(), "responded");
    assert_eq!(summary.closed_at, None);
    assert_eq!(summary.close_by, ts("2027-01-05T08:00:00Z"));
    assert_eq!(summary.acknowledge_by, ts("2026-11-26T10:00:00Z"));
    assert!(
        !summary.overdue,
        "acknowledged before, and the new close clock runs"
    );
}

#[test]
fn summaries_agree_with_the_domain_state_and_unknown_loops_are_none() {
    let mut log = fixture();
    log.feedback("other", "2026-11-28T10:00:00Z", "ryy").cmd(
        "other",
        "2026-11-30T10:00:00Z",
        EventType::NoChange,
        json!({"by": "pals", "reason": "Out of our hands"}),
    );
    let models = log.models();
    let now = ts("2026-12-03T11:00:00Z");
    for loop_id in log.loop_ids() {
        let expected = LoopSummary::of(id(&loop_id), log.state(&loop_id).clone(), now, &sla());
        assert_eq!(models.summary(&id(&loop_id), now, &sla()), Some(expected));
        assert_eq!(
            models.state(&id(&loop_id)).as_ref(),
            Some(log.state(&loop_id))
        );
    }
    assert_eq!(models.summary(&id("nope"), now, &sla()), None);
    assert_eq!(models.loop_count(), 2);
    assert_eq!(models.checkpoint(), log.entries.len() as u64);
}

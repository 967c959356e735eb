//! The write path shared by HTTP and NATS: idempotency, expected versions, rules, atomicity.

use closeloop_domain::{Command, EventType, LoopEvent, LoopId};
use closeloop_store::write::{self, Origin};
use closeloop_store::{EventStore, RequestDigest, SledStore, SledStoreOptions, WriteError};
use serde_json::{Value, json};
use tempfile::TempDir;

fn open() -> (SledStore, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("open");
    (store, dir)
}

fn command(loop_id: &str, event_type: EventType, data: Value) -> Command {
    Command {
        loop_id: LoopId::parse(loop_id).expect("loop id"),
        at: "2026-11-23T10:00:00Z".parse().expect("time"),
        payload: LoopEvent::from_data(event_type, data).expect("valid data"),
    }
}

fn feedback(loop_id: &str) -> Command {
    command(
        loop_id,
        EventType::FeedbackReceived,
        json!({"org_unit": "rxx/a", "channel": "web", "story": "ok"}),
    )
}

fn respond(loop_id: &str) -> Command {
    command(
        loop_id,
        EventType::Responded,
        json!({"by": "pals", "text": "Thank you"}),
    )
}

fn change(loop_id: &str) -> Command {
    command(
        loop_id,
        EventType::ChangeMade,
        json!({"by": "ward manager", "description": "New signs", "change_id": "c1"}),
    )
}

fn origin(id: &str) -> Origin {
    Origin {
        source: "urn:test".to_owned(),
        event_id: id.to_owned(),
        request: None,
        actor: None,
    }
}

#[tokio::test]
async fn a_repeated_key_returns_the_original_even_when_the_rules_would_now_refuse() {
    let (store, _dir) = open();
    let first = write::record(&store, feedback("a"), origin("1"), None)
        .await
        .expect("record");
    assert_eq!(
        (first.version, first.position, first.duplicate),
        (1, 1, false)
    );
    // Deciding again would say loop_exists; the key says it is the same event.
    let again = write::record(&store, feedback("a"), origin("1"), None)
        .await
        .expect("repeat");
    assert!(again.duplicate);
    assert_eq!((again.version, again.position), (1, 1));
    assert_eq!(store.head(), 1);
}

#[tokio::test]
async fn rules_and_expected_versions_refuse_with_their_codes() {
    let (store, _dir) = open();
    let err = write::record(&store, respond("ghost"), origin("r0"), None)
        .await
        .expect_err("no loop");
    assert!(
        matches!(&err, WriteError::Rejected { rejection, .. } if rejection.code() == "unknown_loop"),
        "{err}"
    );
    write::record(&store, feedback("b"), origin("b1"), None)
        .await
        .expect("record");
    let err = write::record(&store, respond("b"), origin("b2"), Some(7))
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            WriteError::VersionConflict {
                expected: 7,
                actual: 1,
                ..
            }
        ),
        "{err}"
    );
    let ok = write::record(&store, respond("b"), origin("b2"), Some(1))
        .await
        .expect("fresh");
    assert_eq!(ok.version, 2);
    let report = command(
        "b",
        EventType::ReportedBack,
        json!({"by": "pals", "message": "done"}),
    );
    let err = write::record(&store, report, origin("b3"), None)
        .await
        .expect_err("no outcome");
    assert!(
        matches!(&err, WriteError::Rejected { rejection, .. } if rejection.code() == "no_outcome"),
        "{err}"
    );
    assert_eq!(store.head(), 2, "refused commands store nothing");
}

#[tokio::test]
async fn concurrent_writers_without_expectations_are_all_recorded() {
    let (store, _dir) = open();
    write::record(&store, feedback("c"), origin("c0"), None)
        .await
        .expect("record");
    let store = &store;
    let writers = (0..16).map(|n| async move {
        write::record(store, respond("c"), origin(&format!("c{}", n + 1)), None).await
    });
    let results = futures::future::join_all(writers).await;
    let mut versions: Vec<u64> = results
        .into_iter()
        .map(|r| r.expect("recorded").version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=17).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_change_across_loops_is_recorded_on_all_or_none() {
    let (store, _dir) = open();
    for id in ["x", "y"] {
        write::record(&store, feedback(id), origin(&format!("{id}0")), None)
            .await
            .expect("record");
    }
    let err = write::record_many(
        &store,
        vec![(change("x"), None), (change("nowhere"), None)],
        &[origin("k/x"), origin("k/nowhere")],
    )
    .await
    .expect_err("one loop does not exist");
    assert!(
        matches!(&err, WriteError::Rejected { loop_id, .. } if loop_id.as_str() == "nowhere"),
        "{err}"
    );
    assert_eq!(
        store.head(),
        2,
        "x must not change when another loop is refused"
    );

    let done = write::record_many(
        &store,
        vec![(change("x"), None), (change("y"), None)],
        &[origin("k/x"), origin("k/y")],
    )
    .await
    .expect("both exist");
    assert_eq!(done.iter().map(|r| r.position).collect::<Vec<_>>(), [3, 4]);
    let again = write::record_many(
        &store,
        vec![(change("x"), None), (change("y"), None)],
        &[origin("k/x"), origin("k/y")],
    )
    .await
    .expect("repeat");
    assert!(again.iter().all(|r| r.duplicate));
    assert_eq!(store.head(), 4);
}

fn acknowledge(loop_id: &str) -> Command {
    command(loop_id, EventType::Acknowledged, json!({"by": "pals"}))
}

fn code(result: &Result<write::Recorded, WriteError>) -> &'static str {
    match result {
        Ok(recorded) if recorded.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(WriteError::Rejected { rejection, .. }) => rejection.code(),
        Err(_) => "failed",
    }
}

#[tokio::test]
async fn a_run_of_one_loops_commands_is_decided_in_order_and_stored_in_one_append() {
    let (store, _dir) = open();
    let loop_id = LoopId::parse("run").expect("loop id");
    let results = write::record_in_order(
        &store,
        &loop_id,
        vec![
            (acknowledge("run"), origin("early-ack")),
            (feedback("run"), origin("fb")),
            (acknowledge("run"), origin("ack")),
            (acknowledge("run"), origin("second-ack")),
            (respond("run"), origin("reply")),
            (respond("run"), origin("reply")),
        ],
    )
    .await
    .expect("the store works");
    let codes: Vec<&str> = results.iter().map(code).collect();
    assert_eq!(
        codes,
        [
            "unknown_loop",
            "stored",
            "stored",
            "already_acknowledged",
            "stored",
            "duplicate"
        ]
    );
    let versions: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|r| r.version))
        .collect();
    assert_eq!(versions, [1, 2, 3, 3]);
    let positions: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|r| r.position))
        .collect();
    assert_eq!(positions, [1, 2, 3, 3], "consecutive: one append");
    assert_eq!(store.head(), 3);
    let state = write::current_state(&store, &loop_id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(state.version, 3);
}

#[tokio::test]
async fn keys_stored_before_are_answered_with_their_originals() {
    let (store, _dir) = open();
    let loop_id = LoopId::parse("again").expect("loop id");
    write::record(&store, feedback("again"), origin("fb"), None)
        .await
        .expect("record");
    let results = write::record_in_order(
        &store,
        &loop_id,
        vec![
            (feedback("again"), origin("fb")),
            (feedback("again"), origin("fb-other")),
            (change("again"), origin("chg")),
        ],
    )
    .await
    .expect("the store works");
    let codes: Vec<&str> = results.iter().map(code).collect();
    assert_eq!(codes, ["duplicate", "loop_exists", "stored"]);
    assert_eq!(results[0].as_ref().map(|r| r.position).ok(), Some(1));
    assert_eq!(results[2].as_ref().map(|r| r.version).ok(), Some(2));
    assert_eq!(store.head(), 2);
}

/// A command whose data would make a record larger than the store takes.
fn oversized_response(loop_id: &str) -> Command {
    let note = "x".repeat(closeloop_store::record::MAX_RECORD_BYTES);
    Command {
        loop_id: LoopId::parse(loop_id).expect("loop id"),
        at: "2026-11-23T10:00:00Z".parse().expect("time"),
        // Built as stored data: today's field limits would refuse it before the store does.
        payload: LoopEvent::from_stored_data(
            EventType::Responded,
            json!({"by": "pals", "text": "Thank you", "note": note}),
        )
        .expect("shape"),
    }
}

#[tokio::test]
async fn an_event_too_large_to_store_is_refused_as_invalid_data_and_the_rest_are_stored() {
    let (store, _dir) = open();
    let results = write::record_in_order(
        &store,
        &LoopId::parse("big").expect("loop id"),
        vec![
            (feedback("big"), origin("1")),
            (oversized_response("big"), origin("2")),
            (acknowledge("big"), origin("3")),
        ],
    )
    .await
    .expect("the store works");
    assert_eq!(
        results.iter().map(code).collect::<Vec<_>>(),
        ["stored", "invalid_data", "stored"]
    );
    let Err(WriteError::Rejected { rejection, .. }) = &results[1] else {
        unreachable!("checked above")
    };
    assert!(rejection.to_string().contains("limit"), "{rejection}");
    assert_eq!(store.head(), 2);

    let single = write::record(&store, oversized_response("big"), origin("4"), None).await;
    assert_eq!(code(&single), "invalid_data");
    assert_eq!(store.head(), 2);
}

/// An origin whose key is bound to `request`.
fn bound(id: &str, request: &str) -> Origin {
    Origin {
        request: Some(RequestDigest::of(&["test"], &json!({"request": request}))),
        ..origin(id)
    }
}

#[tokio::test]
async fn a_key_sent_again_with_another_request_is_refused_and_with_the_same_is_a_repeat() {
    let (store, _dir) = open();
    let first = write::record(&store, feedback("k"), bound("fb", "one"), None)
        .await
        .expect("record");
    let repeat = write::record(&store, feedback("k"), bound("fb", "one"), None)
        .await
        .expect("repeat");
    assert!(repeat.duplicate && repeat.position == first.position);

    // The same key for another step of the same loop (an acknowledgement key reused for a
    // response) is refused, not answered with the acknowledgement.
    write::record(&store, acknowledge("k"), bound("step", "ack"), None)
        .await
        .expect("acknowledge");
    let reused = write::record(&store, respond("k"), bound("step", "response"), None).await;
    assert!(
        matches!(reused, Err(WriteError::KeyReused(_))),
        "{reused:?}"
    );
    let reused = write::record_in_order(
        &store,
        &LoopId::parse("k").expect("id"),
        vec![
            (change("k"), bound("step", "change")),
            (respond("k"), bound("new", "response")),
            (change("k"), bound("new", "another")),
        ],
    )
    .await
    .expect("store works");
    assert_eq!(
        reused.iter().map(code).collect::<Vec<_>>(),
        ["failed", "stored", "failed"]
    );
    assert!(
        matches!(reused[0], Err(WriteError::KeyReused(_))),
        "{reused:?}"
    );
    assert!(
        matches!(reused[2], Err(WriteError::KeyReused(_))),
        "{reused:?}"
    );
    assert_eq!(store.head(), 3);
}

#[tokio::test]
async fn a_redelivery_after_a_reuse_of_its_key_in_the_same_run_is_still_a_repeat() {
    // Stored first, in an earlier batch; then one run holds a reuse of the key and, after it,
    // the original sent again (a publisher's redelivery): the reuse is refused, and the
    // redelivery answers with the original instead of being taken for a second reuse.
    let (store, _dir) = open();
    let first = write::record(&store, feedback("r"), bound("fb", "one"), None)
        .await
        .expect("record");
    let results = write::record_in_order(
        &store,
        &LoopId::parse("r").expect("id"),
        vec![
            (feedback("r"), bound("fb", "another")),
            (feedback("r"), bound("fb", "one")),
            (feedback("r"), bound("fb", "another")),
        ],
    )
    .await
    .expect("store works");
    assert!(
        matches!(results[0], Err(WriteError::KeyReused(_))),
        "{results:?}"
    );
    match &results[1] {
        Ok(repeat) => assert!(repeat.duplicate && repeat.position == first.position),
        other => panic!("the redelivery should be a repeat: {other:?}"),
    }
    assert!(
        matches!(results[2], Err(WriteError::KeyReused(_))),
        "{results:?}"
    );
    assert_eq!(store.head(), 1);
}

//! A migration cut short after any of its steps is finished by the next attempt, and every
//! message Closeloop had not acknowledged is then ingested exactly once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::pull;
use closeloop_store::{EventStore, SledStore, SledStoreOptions};
use closeloop_testkit::NatsServer;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::watch;

use super::*;
use crate::IngestOptions;

const SOURCE: &str = "urn:trust:rxx:fft-kiosk";
/// Messages in the old `FEEDBACK`.
const TOTAL: usize = 40;
/// How many of them the old ingest consumer had acknowledged, in order.
const ACKED: usize = 15;
/// The old consumer's ack wait: an operator's tuning the recreated consumer keeps.
const TUNED_ACK_WAIT: Duration = Duration::from_secs(7);
const WAIT: Duration = Duration::from_secs(30);

/// Where a migration stops short, as if the process died right after that step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InterruptedAfter {
    Plan,
    Copy,
    Delete,
    Recreate,
    Republish,
}

#[tokio::test]
async fn a_migration_interrupted_after_its_plan_is_finished() {
    check(InterruptedAfter::Plan).await;
}

#[tokio::test]
async fn a_migration_interrupted_after_the_copy_is_finished() {
    check(InterruptedAfter::Copy).await;
}

#[tokio::test]
async fn a_migration_interrupted_after_deleting_the_old_stream_is_finished() {
    check(InterruptedAfter::Delete).await;
}

#[tokio::test]
async fn a_migration_interrupted_after_recreating_the_stream_is_finished() {
    check(InterruptedAfter::Recreate).await;
}

#[tokio::test]
async fn a_migration_interrupted_after_republishing_is_finished() {
    check(InterruptedAfter::Republish).await;
}

async fn check(interruption: InterruptedAfter) {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    old_feedback(&js).await;
    interrupt(&js, interruption).await;
    if interruption == InterruptedAfter::Copy {
        // The old stream is sealed: a publisher is refused and must retry.
        let refused = async {
            js.publish("feedback.late", "{}".into()).await?.await?;
            Ok::<_, async_nats::Error>(())
        };
        assert!(refused.await.is_err(), "a sealed FEEDBACK refuses messages");
    }

    run_if_needed(&js, 1).await.unwrap();

    assert!(
        streams::existing(&js, MIGRATION_STREAM)
            .await
            .unwrap()
            .is_none(),
        "the migration stream is deleted"
    );
    let mut feedback = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    let info = feedback.info().await.unwrap().clone();
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(info.config.subjects, [streams::FEEDBACK_SUBJECTS]);
    assert!(!info.config.sealed);
    assert_eq!(
        info.state.messages,
        (TOTAL - ACKED) as u64,
        "each unacknowledged message once: repeated copies and republishes are dropped as duplicates"
    );
    let consumer = feedback.consumer_info(INGEST_CONSUMER).await.unwrap();
    assert_eq!(consumer.config.ack_wait, TUNED_ACK_WAIT);

    let stored = ingest(&server, TOTAL - ACKED).await;
    let expected: Vec<String> = (ACKED..TOTAL).map(|n| format!("fb-{n}")).collect();
    assert_eq!(stored, expected, "each unacknowledged message stored once");
    let left = feedback.info().await.unwrap().state.messages;
    assert_eq!(left, 0, "work-queue retention removed every stored message");
}

/// A `FEEDBACK` as Closeloop used to create it (limits retention) holding [`TOTAL`] feedback
/// messages, the first [`ACKED`] of them acknowledged by the ingest consumer.
async fn old_feedback(js: &jetstream::Context) {
    let stream = js
        .create_stream(stream::Config {
            name: FEEDBACK_STREAM.to_owned(),
            subjects: vec![streams::FEEDBACK_SUBJECTS.to_owned()],
            ..stream::Config::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(INGEST_CONSUMER.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: TUNED_ACK_WAIT,
            ..pull::Config::default()
        })
        .await
        .unwrap();
    for n in 0..TOTAL {
        let event = json!({
            "specversion": "1.0", "id": format!("fb-{n}"), "source": SOURCE,
            "type": "org.closeloop.feedback.received", "subject": format!("loop-{n}"),
            "time": "2026-11-27T09:30:00Z",
            "data": {"org_unit": "rxx/site-a/ward-7", "channel": "survey", "ratings": {"fft": 2}},
        });
        js.publish("feedback.test", event.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut messages = consumer
        .fetch()
        .max_messages(ACKED)
        .messages()
        .await
        .unwrap();
    while let Some(message) = messages.next().await {
        message.unwrap().double_ack().await.unwrap();
    }
    let info = stream.consumer_info(INGEST_CONSUMER).await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, ACKED as u64);
}

/// Runs the migration's steps up to `interruption`.
async fn interrupt(js: &jetstream::Context, interruption: InterruptedAfter) {
    let migration = create_migration_stream(js, 1).await.unwrap();
    let mut old = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    let plan = plan(js, &migration, &mut old).await.unwrap();
    if interruption == InterruptedAfter::Plan {
        return;
    }
    copy(js, &mut old, plan.first_sequence).await.unwrap();
    if interruption == InterruptedAfter::Copy {
        return;
    }
    js.delete_stream(FEEDBACK_STREAM).await.unwrap();
    if interruption == InterruptedAfter::Delete {
        return;
    }
    recreate(js, Some(&plan), 1).await.unwrap();
    if interruption == InterruptedAfter::Recreate {
        return;
    }
    republish(js, migration).await.unwrap();
}

/// Ingests `FEEDBACK` into a fresh store until `expected` events are stored and the consumer
/// is drained; the stored event ids in position order.
async fn ingest(server: &NatsServer, expected: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SledStore::open(&dir.path().join("store"), &SledStoreOptions::default()).unwrap());
    let (stop, stopping) = watch::channel(false);
    let options = IngestOptions {
        url: server.url(),
        feed_checkpoint: dir.path().join("feed.checkpoint"),
        ..IngestOptions::default()
    };
    let running = crate::start(Arc::clone(&store), options, stopping)
        .await
        .unwrap();
    let mut head = store.subscribe();
    tokio::time::timeout(WAIT, head.wait_for(|&head| head >= expected as u64))
        .await
        .expect("every message is stored in time")
        .unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let feedback = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = feedback.consumer_info(INGEST_CONSUMER).await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    running.task.await.unwrap();
    store
        .read_all(0, 10 * TOTAL)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.event().unwrap().event_id)
        .collect()
}

#[test]
fn the_recreated_consumer_is_a_pull_consumer_of_every_message_with_the_old_tuning() {
    let old = consumer::Config {
        durable_name: Some(INGEST_CONSUMER.to_owned()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::All,
        ack_wait: Duration::from_secs(2),
        max_ack_pending: 500,
        deliver_subject: Some("somewhere".to_owned()),
        ..consumer::Config::default()
    };
    let new = work_queue_consumer(old);
    assert_eq!(new.deliver_policy, DeliverPolicy::All);
    assert_eq!(new.ack_policy, AckPolicy::Explicit);
    assert_eq!(new.deliver_subject, None);
    assert_eq!(new.ack_wait, Duration::from_secs(2));
    assert_eq!(new.max_ack_pending, 500);
}

#[test]
fn publish_times_are_written_as_rfc3339() {
    assert_eq!(
        rfc3339(1_764_235_800_123_456_789),
        "2025-11-27T09:30:00.123456789Z"
    );
}

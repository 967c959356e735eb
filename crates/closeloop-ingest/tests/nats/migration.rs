//! An older `FEEDBACK` with limits retention is migrated to work-queue retention when the
//! service starts, and every message the old consumer had not acknowledged is ingested once.

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy};
use closeloop_ingest::streams::{FEEDBACK_STREAM, INGEST_CONSUMER, MIGRATION_STREAM};
use futures::StreamExt;

use super::*;

/// The messages of the old stream, in the order published, and whether the old consumer had
/// acknowledged them.
fn old_messages() -> Vec<(PublishMessage, bool)> {
    let structured = |id: &str, subject: &str| {
        PublishMessage::build().payload(feedback(id, Some(subject)).to_string().into())
    };
    let mut untimed = feedback("fb-untimed", Some("loop-untimed"));
    untimed.as_object_mut().unwrap().remove("time");
    let mut binary = HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "fb-binary"),
        ("ce-source", SOURCE),
        ("ce-type", EventType::FeedbackReceived.as_str()),
        ("ce-subject", "loop-binary"),
        ("Content-Type", "application/json"),
        ("Nats-Msg-Id", "fb-binary"),
    ] {
        binary.insert(name, value);
    }
    let acknowledgement = step(
        "ack-2",
        EventType::Acknowledged,
        "loop-2",
        &json!({"by": "pals"}),
    );
    vec![
        (structured("fb-0", "loop-0"), true),
        (structured("fb-1", "loop-1"), true),
        (structured("fb-2", "loop-2"), true),
        (structured("fb-3", "loop-3"), false),
        (
            PublishMessage::build().payload(untimed.to_string().into()),
            false,
        ),
        (
            PublishMessage::build()
                .payload(
                    json!({"org_unit": "rxx/site-a/ward-7", "channel": "survey", "ratings": {"fft": 1}})
                        .to_string()
                        .into(),
                )
                .headers(binary),
            false,
        ),
        (
            PublishMessage::build().payload(acknowledgement.to_string().into()),
            false,
        ),
        (structured("fb-4", "loop-4"), false),
    ]
}

#[tokio::test]
async fn an_old_feedback_stream_is_migrated_and_every_unacknowledged_message_is_ingested_once() {
    let server = NatsServer::start();
    let js = client(&server).await;
    let old = js
        .create_stream(stream::Config {
            name: FEEDBACK_STREAM.to_owned(),
            subjects: vec!["feedback.>".to_owned()],
            ..stream::Config::default()
        })
        .await
        .unwrap();
    let consumer = old
        .create_consumer(pull::Config {
            durable_name: Some(INGEST_CONSUMER.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ..pull::Config::default()
        })
        .await
        .unwrap();
    let messages = old_messages();
    let acked = messages.iter().filter(|(_, acked)| *acked).count();
    for (message, _) in messages {
        js.send_publish("feedback.old", message)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut delivered = consumer
        .fetch()
        .max_messages(acked)
        .messages()
        .await
        .unwrap();
    while let Some(message) = delivered.next().await {
        message.unwrap().double_ack().await.unwrap();
    }
    let untimed_published_at = old.get_raw_message(5).await.unwrap().time;

    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    // The three unacknowledged feedback messages and the binary one are stored; the
    // acknowledgement of loop-2, whose feedback was stored before the migration in another
    // store, is unknown here and dead-lettered, which shows it was carried over too.
    service.wait_for_head(4).await;
    let letters = wait_for_messages(&js, DLQ_STREAM, 1).await;
    assert_eq!(
        header(&letters[0].headers, "Closeloop-Error"),
        "unknown_loop"
    );
    assert_eq!(service.store.head(), 4);
    let ids: Vec<String> = service
        .store
        .read_all(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.event().unwrap().event_id)
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["fb-3", "fb-4", "fb-binary", "fb-untimed"],
        "each unacknowledged message once, none of the acknowledged ones"
    );

    // An event without `time` keeps the time it was first published as its receive time.
    let untimed = write::current_state(
        service.store.as_ref(),
        &LoopId::parse("loop-untimed").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        untimed.received_at.as_nanosecond(),
        untimed_published_at.unix_timestamp_nanos()
    );

    let mut stream = js.get_stream(FEEDBACK_STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.retention, RetentionPolicy::WorkQueue);
    assert!(js.get_stream(MIGRATION_STREAM).await.is_err());
    assert_eq!(consumer_backlog(&js).await, (0, 0));
    wait_until("FEEDBACK to be empty", async || {
        stream.info().await.unwrap().state.messages == 0
    })
    .await;

    // Publishers carry on as before.
    publish_event(&js, &feedback("fb-after", None)).await;
    service.wait_for_head(5).await;
    assert!(
        service
            .store
            .lookup(SOURCE, "fb-after")
            .await
            .unwrap()
            .is_some()
    );
    service.stop().await;
}

/// A publisher cannot use the migration's header to move the receive time forward, and so
/// widen the window a `time` is checked against.
#[tokio::test]
async fn a_published_at_header_later_than_the_message_is_ignored() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;
    let mut future = feedback("fb-future", Some("loop-future"));
    future["time"] = json!("2030-01-01T00:00:00Z");
    let mut headers = HeaderMap::new();
    headers.insert(
        closeloop_ingest::PUBLISHED_AT_HEADER,
        "2030-01-01T00:00:00Z",
    );
    js.send_publish(
        "feedback.test",
        PublishMessage::build()
            .payload(future.to_string().into())
            .headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let letters = wait_for_messages(&js, DLQ_STREAM, 1).await;
    assert_eq!(
        header(&letters[0].headers, "Closeloop-Error"),
        "invalid_cloudevent",
        "a time in 2030 is refused"
    );
    assert_eq!(service.store.head(), 0);
    service.stop().await;
}

//! Ingestion, dead letters and the outbound feed against a private `nats-server` each.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use closeloop_domain::{EventType, LoopId};
use closeloop_ingest::streams::{DLQ_STREAM, FEED_STREAM};
use closeloop_ingest::{
    Connection, IngestOptions, NatsHandle, Running, Worker, cloudevent::derived_loop_id, start,
};
use closeloop_store::{EventStore, SledStore, SledStoreOptions, write};
use closeloop_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::sync::watch;

const SOURCE: &str = "urn:trust:rxx:fft-kiosk";
const WAIT: Duration = Duration::from_secs(20);

/// The service's NATS side over a fresh store, stoppable.
struct Service {
    store: Arc<SledStore>,
    handle: NatsHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(url: &str, dir: &std::path::Path, store: Option<Arc<SledStore>>) -> Self {
        Self::start_batching(url, dir, store, IngestOptions::default().batch).await
    }

    async fn start_batching(
        url: &str,
        dir: &std::path::Path,
        store: Option<Arc<SledStore>>,
        batch: usize,
    ) -> Self {
        let store = store.unwrap_or_else(|| {
            Arc::new(SledStore::open(&dir.join("store"), &SledStoreOptions::default()).unwrap())
        });
        let (stop, stopping) = watch::channel(false);
        let options = IngestOptions {
            url: url.to_owned(),
            feed_checkpoint: dir.join("feed.checkpoint"),
            unknown_loop_attempts: 3,
            unknown_loop_backoff: Duration::from_millis(100),
            batch,
            ..IngestOptions::default()
        };
        let Running { handle, task } = start(Arc::clone(&store), options, stopping).await.unwrap();
        Self {
            store,
            handle,
            stop,
            task,
        }
    }

    /// Starts and waits until both workers run (their streams exist).
    async fn start_running(
        url: &str,
        dir: &std::path::Path,
        store: Option<Arc<SledStore>>,
    ) -> Self {
        let service = Self::start(url, dir, store).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !service.handle.status(0).is_healthy() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not running: {:?}",
                service.handle.status(0)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        service
    }

    /// Stops the workers and hands back the store.
    async fn stop(self) -> Arc<SledStore> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the NATS side stops in time")
            .unwrap();
        self.store
    }

    async fn wait_for_head(&self, head: u64) {
        let mut watched = self.store.subscribe();
        tokio::time::timeout(WAIT, watched.wait_for(|&h| h >= head))
            .await
            .unwrap_or_else(|_| panic!("head stayed at {} instead of {head}", self.store.head()))
            .unwrap();
    }
}

async fn client(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

fn cloud_event(id: &str, event_type: EventType, subject: Option<&str>, data: &Value) -> Value {
    let mut event = json!({
        "specversion": "1.0", "id": id, "source": SOURCE, "type": event_type.as_str(),
        "time": "2026-11-27T09:30:00Z", "datacontenttype": "application/json", "data": data,
    });
    if let Some(subject) = subject {
        event["subject"] = json!(subject);
    }
    event
}

fn feedback(id: &str, subject: Option<&str>) -> Value {
    cloud_event(
        id,
        EventType::FeedbackReceived,
        subject,
        &json!({"org_unit": "rxx/site-a/ward-7", "channel": "survey", "ratings": {"fft": 2}, "story": "Kind staff, long wait."}),
    )
}

fn step(id: &str, event_type: EventType, subject: &str, data: &Value) -> Value {
    cloud_event(id, event_type, Some(subject), data)
}

async fn publish(js: &jetstream::Context, subject: &str, payload: Vec<u8>) {
    js.send_publish(
        subject.to_owned(),
        PublishMessage::build().payload(payload.into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

async fn publish_event(js: &jetstream::Context, event: &Value) {
    publish(js, "feedback.test", event.to_string().into_bytes()).await;
}

/// Every message in `stream`, in sequence order.
async fn stream_messages(
    js: &jetstream::Context,
    stream: &str,
) -> Vec<jetstream::message::StreamMessage> {
    let mut stream = js.get_stream(stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut messages = Vec::new();
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            messages.push(message);
        }
    }
    messages
}

/// Waits until `stream` holds at least `count` messages and returns them.
async fn wait_for_messages(
    js: &jetstream::Context,
    stream: &str,
    count: usize,
) -> Vec<jetstream::message::StreamMessage> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if js.get_stream(stream).await.is_ok() {
            let messages = stream_messages(js, stream).await;
            if messages.len() >= count {
                return messages;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stream} did not reach {count} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn feedback_and_follow_ups_are_stored_and_fed_out_in_order() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;

    publish_event(&js, &feedback("fb-1", None)).await;
    let loop_id = derived_loop_id(SOURCE, "fb-1");
    publish_event(
        &js,
        &step(
            "ack-1",
            EventType::Acknowledged,
            loop_id.as_str(),
            &json!({"by": "pals"}),
        ),
    )
    .await;
    publish_event(
        &js,
        &step(
            "chg-1",
            EventType::ChangeMade,
            loop_id.as_str(),
            &json!({"by": "ward manager", "description": "A bed board"}),
        ),
    )
    .await;
    service.wait_for_head(3).await;

    let state = write::current_state(service.store.as_ref(), &loop_id)
        .await
        .unwrap()
        .expect("the loop exists");
    assert_eq!(state.version, 3);
    let lookup = service.store.lookup(SOURCE, "ack-1").await.unwrap();
    assert_eq!(lookup.map(|c| c.position), Some(2));

    let fed = wait_for_messages(&js, FEED_STREAM, 3).await;
    let subjects: Vec<&str> = fed.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "closeloop.events.feedback.received",
            "closeloop.events.loop.acknowledged",
            "closeloop.events.loop.change_made"
        ]
    );
    for (position, message) in (1..).zip(&fed) {
        assert_eq!(
            header(&message.headers, "Nats-Msg-Id"),
            position.to_string()
        );
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body["position"], position);
        assert_eq!(body["subject"], loop_id.as_str());
        assert_eq!(body["specversion"], "1.0");
    }
    let body: Value = serde_json::from_slice(&fed[2].payload).unwrap();
    assert_eq!(body["data"]["description"], "A bed board");
    assert_eq!(body["id"], "chg-1");

    let status = service.handle.status(service.store.head());
    assert_eq!(status.connection, Connection::Connected);
    assert_eq!(
        (status.ingest, status.feed),
        (Worker::Running, Worker::Running)
    );
    assert_eq!(status.feed_lag, 0);
    service.stop().await;
}

#[tokio::test]
async fn duplicates_are_acked_and_not_stored_again() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;

    let event = feedback("fb-dup", Some("loop-dup"));
    for _ in 0..3 {
        publish_event(&js, &event).await;
    }
    // A marker published last: once it is stored, the duplicates before it were handled.
    publish_event(&js, &feedback("fb-marker", Some("loop-marker"))).await;
    service.wait_for_head(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.store.head(), 2);
    assert!(stream_messages(&js, DLQ_STREAM).await.is_empty());

    // Nothing is left unacked: the consumer has no pending or redelivered messages.
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream("FEEDBACK")
        .await
        .unwrap()
        .get_consumer("closeloop-ingest")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    service.stop().await;
}

#[tokio::test]
async fn every_kind_of_bad_message_is_dead_lettered_with_its_code() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;

    publish_event(&js, &feedback("fb-ok", Some("loop-ok"))).await;
    publish_event(
        &js,
        &step(
            "ack-ok",
            EventType::Acknowledged,
            "loop-ok",
            &json!({"by": "pals"}),
        ),
    )
    .await;
    // A loop acknowledged, changed and reported back: closed.
    publish_event(&js, &feedback("fb-done", Some("loop-done"))).await;
    for (id, event_type, data) in [
        ("ack-done", EventType::Acknowledged, json!({"by": "pals"})),
        (
            "chg-done",
            EventType::ChangeMade,
            json!({"by": "ward manager", "description": "Signs"}),
        ),
        (
            "rb-done",
            EventType::ReportedBack,
            json!({"by": "pals", "message": "Done"}),
        ),
    ] {
        publish_event(&js, &step(id, event_type, "loop-done", &data)).await;
    }
    service.wait_for_head(6).await;

    let mut bad_type = feedback("bad-type", Some("loop-x"));
    bad_type["type"] = json!("org.closeloop.loop.teleported");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{not json".to_vec()),
        (
            "invalid_cloudevent",
            json!({"hello": "world"}).to_string().into_bytes(),
        ),
        ("unknown_type", bad_type.to_string().into_bytes()),
        (
            "invalid_data",
            step(
                "bad-data",
                EventType::Acknowledged,
                "loop-ok",
                &json!({"message": "no by"}),
            )
            .to_string()
            .into_bytes(),
        ),
        (
            "loop_exists",
            feedback("fb-again", Some("loop-ok"))
                .to_string()
                .into_bytes(),
        ),
        (
            "no_outcome",
            step(
                "rb-1",
                EventType::ReportedBack,
                "loop-ok",
                &json!({"by": "pals", "message": "done"}),
            )
            .to_string()
            .into_bytes(),
        ),
        (
            "already_acknowledged",
            step(
                "ack-twice",
                EventType::Acknowledged,
                "loop-ok",
                &json!({"by": "pals"}),
            )
            .to_string()
            .into_bytes(),
        ),
        (
            "loop_closed",
            step(
                "reply-closed",
                EventType::Responded,
                "loop-done",
                &json!({"by": "pals", "text": "More"}),
            )
            .to_string()
            .into_bytes(),
        ),
        (
            "not_closed",
            step(
                "reopen-open",
                EventType::Reopened,
                "loop-ok",
                &json!({"by": "pals", "reason": "again"}),
            )
            .to_string()
            .into_bytes(),
        ),
        (
            "unknown_loop",
            step(
                "ack-ghost",
                EventType::Acknowledged,
                "loop-ghost",
                &json!({"by": "pals"}),
            )
            .to_string()
            .into_bytes(),
        ),
    ];
    for (_, payload) in &cases {
        publish(&js, "feedback.bad", payload.clone()).await;
    }
    let letters = wait_for_messages(&js, DLQ_STREAM, cases.len()).await;
    let mut codes: Vec<String> = letters
        .iter()
        .map(|m| header(&m.headers, "Closeloop-Error"))
        .collect();
    codes.sort();
    let mut expected: Vec<&str> = cases.iter().map(|(code, _)| *code).collect();
    expected.sort_unstable();
    assert_eq!(codes, expected);
    for letter in &letters {
        let code = header(&letter.headers, "Closeloop-Error");
        let (_, payload) = cases.iter().find(|(c, _)| *c == code).unwrap();
        assert_eq!(
            letter.payload.as_ref(),
            payload.as_slice(),
            "{code}: original bytes kept"
        );
        assert!(
            !header(&letter.headers, "Closeloop-Error-Detail").is_empty(),
            "{code}"
        );
        assert_eq!(
            header(&letter.headers, "Closeloop-Original-Subject"),
            "feedback.bad"
        );
    }
    let unknown = letters
        .iter()
        .find(|m| header(&m.headers, "Closeloop-Error") == "unknown_loop")
        .unwrap();
    assert_eq!(
        header(&unknown.headers, "Closeloop-Delivered"),
        "3",
        "unknown_loop is retried before it is dead-lettered"
    );
    assert_eq!(service.store.head(), 6, "nothing bad was stored");

    // The admin view lists them, and a re-drive after fixing the cause stores the message.
    let listed = service.handle.dead_letters().list(0, 100).await.unwrap();
    assert_eq!(listed.len(), cases.len());
    let ghost = listed.iter().find(|l| l.error == "unknown_loop").unwrap();
    publish_event(&js, &feedback("fb-ghost", Some("loop-ghost"))).await;
    service.wait_for_head(7).await;
    let redriven = service
        .handle
        .dead_letters()
        .redrive(ghost.seq)
        .await
        .unwrap();
    assert_eq!(redriven.subject, "feedback.bad");
    service.wait_for_head(8).await;
    assert!(
        service
            .store
            .lookup(SOURCE, "ack-ghost")
            .await
            .unwrap()
            .is_some()
    );
    let listed = service.handle.dead_letters().list(0, 100).await.unwrap();
    assert_eq!(
        listed.len(),
        cases.len() - 1,
        "the re-driven letter is gone"
    );
    assert!(matches!(
        service.handle.dead_letters().redrive(ghost.seq).await,
        Err(closeloop_ingest::DeadLetterError::NotFound(_))
    ));
    service.stop().await;
}

#[tokio::test]
async fn a_follow_up_that_overtakes_its_feedback_is_stored_once_the_feedback_arrives() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;

    publish_event(
        &js,
        &step(
            "ack-early",
            EventType::Acknowledged,
            "loop-late",
            &json!({"by": "pals"}),
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish_event(&js, &feedback("fb-late", Some("loop-late"))).await;
    service.wait_for_head(2).await;
    let state = write::current_state(service.store.as_ref(), &LoopId::parse("loop-late").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(state.acknowledged_at.is_some());
    assert!(stream_messages(&js, DLQ_STREAM).await.is_empty());
    service.stop().await;
}

#[tokio::test]
async fn the_feed_resumes_from_its_checkpoint_after_a_restart() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = client(&server).await;

    let service = Service::start_running(&server.url(), dir.path(), None).await;
    for n in 0..5 {
        publish_event(&js, &feedback(&format!("fb-{n}"), None)).await;
    }
    service.wait_for_head(5).await;
    wait_for_messages(&js, FEED_STREAM, 5).await;
    let store = service.stop().await;
    let checkpoint = std::fs::read_to_string(dir.path().join("feed.checkpoint")).unwrap();
    assert_eq!(checkpoint.trim(), "5");

    // Written while the NATS side is down (e.g. through the HTTP API).
    for n in 5..8 {
        let event =
            closeloop_store::conformance::feedback("urn:closeloop:api", &format!("api-{n}"));
        let command = closeloop_domain::Command {
            loop_id: LoopId::parse(&format!("loop-api-{n}")).unwrap(),
            at: event.time,
            payload: event.payload,
        };
        write::record(
            store.as_ref(),
            command,
            write::Origin {
                source: event.source,
                event_id: event.event_id,
            },
            None,
        )
        .await
        .unwrap();
    }
    let service = Service::start(&server.url(), dir.path(), Some(store)).await;
    let fed = wait_for_messages(&js, FEED_STREAM, 8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fed_again = stream_messages(&js, FEED_STREAM).await;
    assert_eq!(fed_again.len(), 8, "nothing is published twice");
    let ids: Vec<String> = fed
        .iter()
        .map(|m| header(&m.headers, "Nats-Msg-Id"))
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6", "7", "8"]);
    service.stop().await;
}

#[tokio::test]
async fn nats_down_at_start_then_up_is_caught_up() {
    let mut server = NatsServer::start();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&server.url(), dir.path(), None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = service.handle.status(0);
    assert_ne!(status.connection, Connection::Connected);
    assert!(!status.is_healthy());

    server.restart();
    let js = client(&server).await;
    // The service creates FEEDBACK once it connects; publish when it exists.
    let deadline = tokio::time::Instant::now() + WAIT;
    while js.get_stream("FEEDBACK").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "FEEDBACK was never created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_event(&js, &feedback("fb-after-outage", None)).await;
    service.wait_for_head(1).await;
    wait_for_messages(&js, FEED_STREAM, 1).await;
    service.stop().await;
}

#[tokio::test]
async fn a_loops_messages_keep_their_order_across_overlapping_batches() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let js = client(&server).await;
    // Everything is published before the service starts, so it meets a backlog: full batches
    // of 3, two in flight at once, one loop's 40 messages spread over many of them.
    closeloop_ingest::streams::feedback_stream(&js, 1)
        .await
        .unwrap();
    let mut acks = Vec::new();
    let mut publish_in_order = |event: Value| {
        let js = js.clone();
        acks.push(async move { publish_event(&js, &event).await });
    };
    publish_in_order(feedback("fb-order", Some("loop-order")));
    publish_in_order(step(
        "ack-order",
        EventType::Acknowledged,
        "loop-order",
        &json!({"by": "pals"}),
    ));
    for n in 0..36 {
        publish_in_order(step(
            &format!("reply-{n}"),
            EventType::Responded,
            "loop-order",
            &json!({"by": "pals", "text": format!("reply {n}")}),
        ));
        // Another loop in between, so batches mix loops.
        publish_in_order(feedback(
            &format!("fb-other-{n}"),
            Some(&format!("loop-other-{n}")),
        ));
    }
    publish_in_order(step(
        "chg-order",
        EventType::ChangeMade,
        "loop-order",
        &json!({"by": "ward manager", "description": "Quiet hours"}),
    ));
    publish_in_order(step(
        "rb-order",
        EventType::ReportedBack,
        "loop-order",
        &json!({"by": "pals", "message": "We did it"}),
    ));
    for ack in acks {
        ack.await;
    }
    let service = Service::start_batching(&server.url(), dir.path(), None, 3).await;
    service.wait_for_head(76).await;
    let entries = service
        .store
        .read_loop(&LoopId::parse("loop-order").unwrap())
        .await
        .unwrap();
    let ids: Vec<String> = entries
        .iter()
        .map(|entry| entry.event().unwrap().event_id)
        .collect();
    let mut expected = vec!["fb-order".to_owned(), "ack-order".to_owned()];
    expected.extend((0..36).map(|n| format!("reply-{n}")));
    expected.extend(["chg-order".to_owned(), "rb-order".to_owned()]);
    assert_eq!(ids, expected, "stored in the order published");
    assert!(stream_messages(&js, DLQ_STREAM).await.is_empty());
    service.stop().await;
}

//! Ingestion, dead letters and the outbound feed against a private `nats-server` each.
//!
//! [`migration`] covers the move of an older `FEEDBACK` to work-queue retention, [`privacy`]
//! what is left of personal data in NATS: the feed, dead letters, and the raw bytes of the
//! server's files; [`feed_lease`] the feed shared by replicas through a lease.

mod feed_lease;
mod migration;
mod privacy;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use closeloop_domain::{Event, EventType, LoopEvent, LoopId};
use closeloop_ingest::streams::{DLQ_STREAM, FEED_STREAM};
use closeloop_ingest::{
    Connection, DeadLetterError, IngestOptions, NatsHandle, Running, Worker,
    cloudevent::derived_loop_id, start,
};
use closeloop_store::{
    AppendError, AppendOutcome, AppendRequest, Committed, EventStore, ExpectedVersion, Hash,
    SledStore, SledStoreOptions, StoreError, StoredEvent, merkle, write,
};
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
        let options = IngestOptions {
            batch,
            ..Self::options(url, dir)
        };
        Self::start_with(options, dir, store).await
    }

    /// The tests' options: quick retries of follow-ups for unknown loops.
    fn options(url: &str, dir: &std::path::Path) -> IngestOptions {
        IngestOptions {
            url: url.to_owned(),
            feed_checkpoint: dir.join("feed.checkpoint"),
            unknown_loop_attempts: 3,
            unknown_loop_backoff: Duration::from_millis(100),
            ..IngestOptions::default()
        }
    }

    async fn start_with(
        options: IngestOptions,
        dir: &std::path::Path,
        store: Option<Arc<SledStore>>,
    ) -> Self {
        let store = store.unwrap_or_else(|| {
            Arc::new(SledStore::open(&dir.join("store"), &SledStoreOptions::default()).unwrap())
        });
        let (stop, stopping) = watch::channel(false);
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
        Self::start_running_with(Self::options(url, dir), dir, store).await
    }

    /// [`start_running`](Self::start_running) with other options.
    async fn start_running_with(
        options: IngestOptions,
        dir: &std::path::Path,
        store: Option<Arc<SledStore>>,
    ) -> Self {
        let service = Self::start_with(options, dir, store).await;
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
    // The same (source, id) with other content is not a duplicate: it is dead-lettered as
    // `id_reused` (contract §2 v1.1), so a publisher reusing ids loses nothing silently.
    let mut reused = event.clone();
    reused["data"]["story"] = json!("Someone else's feedback under the same id.");
    publish_event(&js, &reused).await;
    // A redelivery without `time` gets a new receive time: still a duplicate.
    let mut untimed = event.clone();
    untimed.as_object_mut().unwrap().remove("time");
    publish_event(&js, &untimed).await;
    // A marker published last: once it is stored and the dead letter is out, every message
    // before it was handled.
    publish_event(&js, &feedback("fb-marker", Some("loop-marker"))).await;
    service.wait_for_head(2).await;
    let letters = wait_for_messages(&js, DLQ_STREAM, 1).await;
    assert_eq!(service.store.head(), 2);
    let codes: Vec<String> = letters
        .iter()
        .map(|letter| header(&letter.headers, "Closeloop-Error"))
        .collect();
    assert_eq!(codes, ["id_reused"]);

    // Nothing is left unacked: the consumer has no pending or redelivered messages.
    assert_eq!(consumer_backlog(&js).await, (0, 0));
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
                request: None,
                actor: None,
            },
            None,
        )
        .await
        .unwrap();
    }
    let service = Service::start(&server.url(), dir.path(), Some(store)).await;
    wait_for_messages(&js, FEED_STREAM, 8).await;
    // A marker stored last: the feed publishes in position order, so once the marker is out,
    // anything it published again from before its checkpoint would be out too.
    publish_event(&js, &feedback("fb-marker", None)).await;
    let fed = wait_for_messages(&js, FEED_STREAM, 9).await;
    let ids: Vec<String> = fed
        .iter()
        .map(|m| header(&m.headers, "Nats-Msg-Id"))
        .collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "4", "5", "6", "7", "8", "9"],
        "nothing is published twice"
    );
    service.stop().await;
}

#[tokio::test]
async fn nats_down_at_start_then_up_is_caught_up() {
    let mut server = NatsServer::start();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&server.url(), dir.path(), None).await;
    // A definite signal that it tried and failed, rather than a pause that hopes it did.
    wait_until("a failed connection attempt is reported", async || {
        service.handle.status(0).last_error.is_some()
    })
    .await;
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

/// A server that carries at most 64 KiB a message, headers included.
const SMALL_MAX_PAYLOAD: usize = 65_536;

fn small_server() -> NatsServer {
    NatsServer::start_with_config(&format!("max_payload: {SMALL_MAX_PAYLOAD}\n"))
}

/// Polls `done` until it holds, failing after [`WAIT`] with `what`.
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ingest consumer's (pending, ack pending): (0, 0) once every message is settled.
async fn consumer_backlog(js: &jetstream::Context) -> (u64, usize) {
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream("FEEDBACK")
        .await
        .unwrap()
        .get_consumer("closeloop-ingest")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

#[tokio::test]
async fn an_event_too_big_for_the_server_goes_out_as_a_reference_and_the_feed_moves_on() {
    let server = small_server();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SledStore::open(&dir.path().join("store"), &SledStoreOptions::default()).unwrap());
    // An acknowledgement with a 100 KB message, stored as an event from before the size limits
    // was: straight through the store, without today's checks.
    let big = Event {
        event_id: "ack-big".to_owned(),
        source: SOURCE.to_owned(),
        time: "2026-11-27T09:35:00Z".parse().unwrap(),
        payload: LoopEvent::from_stored_data(
            EventType::Acknowledged,
            // `message` is personal and never on the feed: the bulk is in a field that is not.
            json!({"by": "pals", "message": "Dear Jo", "note": "m".repeat(100_000)}),
        )
        .unwrap(),
        actor: None,
    };
    let append = async |loop_id: &str, expected, event| {
        store
            .append(AppendRequest::single(
                LoopId::parse(loop_id).unwrap(),
                expected,
                vec![event],
            ))
            .await
            .unwrap();
    };
    let conformance = |id: &str| closeloop_store::conformance::feedback(SOURCE, id);
    append("loop-big", ExpectedVersion::NoLoop, conformance("fb-big")).await;
    append("loop-big", ExpectedVersion::Exactly(1), big).await;
    append(
        "loop-after",
        ExpectedVersion::NoLoop,
        conformance("fb-after"),
    )
    .await;
    append(
        "loop-after",
        ExpectedVersion::Exactly(1),
        closeloop_store::conformance::acknowledgement(SOURCE, "ack-after"),
    )
    .await;
    assert_eq!(store.head(), 4);

    let service = Service::start(&server.url(), dir.path(), Some(store)).await;
    let js = client(&server).await;
    let fed = wait_for_messages(&js, FEED_STREAM, 4).await;
    let ids: Vec<String> = fed
        .iter()
        .map(|m| header(&m.headers, "Nats-Msg-Id"))
        .collect();
    assert_eq!(
        ids,
        ["1", "2", "3", "4"],
        "the events after the big one are published"
    );

    let reference = &fed[1];
    assert_eq!(
        reference.subject.as_str(),
        "closeloop.events.loop.acknowledged"
    );
    assert_eq!(header(&reference.headers, "Closeloop-Reference"), "true");
    let body: Value = serde_json::from_slice(&reference.payload).unwrap();
    assert_eq!(body["reference"], true);
    assert_eq!(body["position"], 2);
    assert_eq!(body["type"], "org.closeloop.loop.acknowledged");
    assert_eq!(body["id"], "ack-big");
    assert_eq!(body["subject"], "loop-big");
    assert_eq!(body["dataref"], "/v1/events?after=1&limit=1");
    assert!(body.get("data").is_none(), "{body}");
    assert!(body["size"].as_u64().unwrap() > 100_000, "{body}");
    let digest = body["sha256"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));

    for whole in [&fed[0], &fed[2], &fed[3]] {
        assert_eq!(header(&whole.headers, "Closeloop-Reference"), "");
        let body: Value = serde_json::from_slice(&whole.payload).unwrap();
        assert!(body.get("data").is_some(), "{body}");
    }
    let status = service.handle.status(4);
    assert_eq!((status.feed_published_upto, status.feed_lag), (4, 0));
    assert_eq!(status.last_error, None);
    service.stop().await;
}

#[tokio::test]
async fn a_message_near_the_size_limit_is_dead_lettered_truncated_and_not_redelivered() {
    let server = small_server();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start_running(&server.url(), dir.path(), None).await;
    let js = client(&server).await;

    // Invalid JSON that just fits: the dead letter's headers would push it over the limit.
    let mut payload = b"{not json ".to_vec();
    payload.resize(SMALL_MAX_PAYLOAD - 16, b'x');
    publish(&js, "feedback.big", payload.clone()).await;
    publish_event(&js, &feedback("fb-after-big", Some("loop-after-big"))).await;
    service.wait_for_head(1).await;

    let letters = wait_for_messages(&js, DLQ_STREAM, 1).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(header(&letter.headers, "Closeloop-Error"), "invalid_json");
    assert_eq!(header(&letter.headers, "Closeloop-Truncated"), "true");
    assert_eq!(
        header(&letter.headers, "Closeloop-Original-Size"),
        payload.len().to_string()
    );
    assert_eq!(
        header(&letter.headers, "Closeloop-Original-Sha256"),
        Hash::of(&payload).to_hex()
    );
    assert_eq!(
        header(&letter.headers, "Closeloop-Original-Subject"),
        "feedback.big"
    );
    assert!(letter.payload.len() < payload.len());
    assert!(payload.starts_with(&letter.payload));

    // Acknowledged: nothing waits for a redelivery.
    wait_until("every message is settled", async || {
        consumer_backlog(&js).await == (0, 0)
    })
    .await;

    let listed = service.handle.dead_letters().list(0, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].truncated);
    assert_eq!(listed[0].original_size, Some(payload.len() as u64));
    assert_eq!(
        listed[0].original_sha256.as_deref(),
        Some(Hash::of(&payload).to_hex().as_str())
    );
    assert!(
        listed[0]
            .payload
            .as_deref()
            .unwrap()
            .starts_with("{not json")
    );
    let refused = service.handle.dead_letters().redrive(listed[0].seq).await;
    match refused {
        Err(err @ DeadLetterError::Truncated(_)) => {
            assert!(err.to_string().contains("cannot be re-driven"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        service
            .handle
            .dead_letters()
            .list(0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    service.stop().await;
}

/// A store that fails on demand: `failing` makes appends fail while the store still says it
/// is ready (a fault it has not noticed); `down` makes it say it is not ready as well.
struct FlakyStore {
    inner: SledStore,
    failing: AtomicBool,
    down: AtomicBool,
    failed_appends: AtomicUsize,
    ready_checks: AtomicUsize,
}

impl EventStore for FlakyStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, AppendError> {
        if self.failing.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst) {
            self.failed_appends.fetch_add(1, Ordering::SeqCst);
            return Err(AppendError::Store(StoreError::Backend(
                "injected failure: no space left on device".to_owned(),
            )));
        }
        self.inner.append(request).await
    }

    async fn read_loop(&self, loop_id: &LoopId) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_loop(loop_id).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    fn head(&self) -> u64 {
        self.inner.head()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }

    fn ready(&self) -> Result<(), StoreError> {
        self.ready_checks.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Stopped(
                "injected failure: no space left on device".to_owned(),
            ));
        }
        self.inner.ready()
    }

    fn with_merkle<R>(&self, f: impl FnOnce(&merkle::MerkleIndex) -> R) -> R {
        self.inner.with_merkle(f)
    }

    async fn lookup(&self, source: &str, event_id: &str) -> Result<Option<Committed>, StoreError> {
        self.inner.lookup(source, event_id).await
    }
}

#[tokio::test]
async fn our_own_store_failure_never_dead_letters_a_message_and_pauses_ingestion() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyStore {
        inner: SledStore::open(&dir.path().join("store"), &SledStoreOptions::default()).unwrap(),
        failing: AtomicBool::new(false),
        down: AtomicBool::new(false),
        failed_appends: AtomicUsize::new(0),
        ready_checks: AtomicUsize::new(0),
    });
    let (stop, stopping) = watch::channel(false);
    let options = IngestOptions {
        url: server.url(),
        feed_checkpoint: dir.path().join("feed.checkpoint"),
        ..IngestOptions::default()
    };
    let Running { handle, task } = start(Arc::clone(&store), options, stopping).await.unwrap();
    wait_until("both workers run", async || handle.status(0).is_healthy()).await;
    let js = client(&server).await;

    // Appends fail while the store still says it is ready: the message is retried.
    store.failing.store(true, Ordering::SeqCst);
    publish_event(&js, &feedback("fb-retried", Some("loop-retried"))).await;
    wait_until("the append is tried twice", async || {
        store.failed_appends.load(Ordering::SeqCst) >= 2
    })
    .await;
    store.failing.store(false, Ordering::SeqCst);
    let mut head = store.subscribe();
    tokio::time::timeout(WAIT, head.wait_for(|&h| h >= 1))
        .await
        .expect("stored once the store works")
        .unwrap();

    // The store says it cannot take writes: ingestion pauses and fetches nothing.
    store.down.store(true, Ordering::SeqCst);
    wait_until("ingestion pauses", async || {
        handle.status(1).ingest == Worker::Paused
    })
    .await;
    let status = handle.status(1);
    assert_eq!(
        status.ingest_paused.as_deref(),
        Some("ingest paused: event store unavailable")
    );
    assert!(!status.is_healthy());
    publish_event(&js, &feedback("fb-waiting", Some("loop-waiting"))).await;
    // Two readiness checks after the publish: ingestion had every chance to fetch it.
    let checks = store.ready_checks.load(Ordering::SeqCst);
    wait_until("two more readiness checks", async || {
        store.ready_checks.load(Ordering::SeqCst) >= checks + 2
    })
    .await;
    let failed = store.failed_appends.load(Ordering::SeqCst);
    assert_eq!(consumer_backlog(&js).await, (1, 0), "it waits in FEEDBACK");
    assert_eq!(
        store.failed_appends.load(Ordering::SeqCst),
        failed,
        "nothing was tried"
    );

    store.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(WAIT, head.wait_for(|&h| h >= 2))
        .await
        .expect("stored once the store is back")
        .unwrap();
    wait_until("ingestion runs again", async || {
        handle.status(2).ingest == Worker::Running
    })
    .await;
    assert_eq!(handle.status(2).ingest_paused, None);
    assert!(
        stream_messages(&js, DLQ_STREAM).await.is_empty(),
        "our own failure is never the publisher's fault"
    );
    assert!(store.lookup(SOURCE, "fb-retried").await.unwrap().is_some());
    assert!(store.lookup(SOURCE, "fb-waiting").await.unwrap().is_some());
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

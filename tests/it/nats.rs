//! `closeloop serve` with NATS: ingestion, `/readyz`, the dead-letter endpoints, and a crash
//! (SIGKILL) in the middle of ingesting thousands of messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use closeloop_testkit::NatsServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{ADMIN, Api, STAFF, check_problem};
use crate::{Service, run_cli};

const SOURCE: &str = "urn:test:e2e-kiosk";

fn feedback(id: &str, loop_id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": SOURCE,
        "type": "org.closeloop.feedback.received", "subject": loop_id,
        "data": {"org_unit": "rxx/site-a/ward-7", "channel": "survey", "ratings": {"fft": 1}},
    })
}

fn acknowledgement(id: &str, loop_id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": SOURCE,
        "type": "org.closeloop.loop.acknowledged", "subject": loop_id,
        "data": {"by": "pals"},
    })
}

async fn jetstream(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.expect("connect"))
}

async fn publish(js: &jetstream::Context, payload: Vec<u8>) -> u64 {
    js.send_publish(
        "feedback.e2e",
        PublishMessage::build().payload(payload.into()),
    )
    .await
    .expect("publish")
    .await
    .expect("publish ack")
    .sequence
}

/// Polls `check` every 50 ms until it returns `Some`, at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(api: &Api) -> Value {
    api.call(Method::GET, "/readyz", None, &[], None).await.body
}

#[tokio::test]
async fn feedback_over_nats_is_served_and_bad_messages_are_managed_over_http() {
    let server = NatsServer::start();
    let api = Api::start_with_nats(tempfile::tempdir().unwrap(), &server.url());
    let ready = eventually(Duration::from_secs(20), "NATS reported healthy", || async {
        let body = readyz(&api).await;
        (body["checks"]["nats"]["status"] == "ok").then_some(body)
    })
    .await;
    assert_eq!(ready["checks"]["nats"]["connection"], "connected");

    let js = jetstream(&server).await;
    publish(
        &js,
        feedback("e2e-1", "loop-e2e-1").to_string().into_bytes(),
    )
    .await;
    publish(
        &js,
        acknowledgement("e2e-2", "loop-e2e-1")
            .to_string()
            .into_bytes(),
    )
    .await;
    let detail = eventually(
        Duration::from_secs(20),
        "the loop to be acknowledged",
        || async {
            let answer = api.get("/v1/loops/loop-e2e-1", STAFF).await;
            (answer.status == 200 && answer.body["version"] == 2).then_some(answer.body)
        },
    )
    .await;
    assert_eq!(detail["timeline"][1]["source"], SOURCE);
    assert_eq!(detail["timeline"][1]["event_id"], "e2e-2");

    publish(&js, b"this is not json".to_vec()).await;
    let letters = eventually(Duration::from_secs(20), "a dead letter", || async {
        let answer = api.get("/v1/dead-letters", ADMIN).await;
        (answer.status == 200
            && answer.body["items"]
                .as_array()
                .is_some_and(|i| !i.is_empty()))
        .then_some(answer.body)
    })
    .await;
    let letter = &letters["items"][0];
    assert_eq!(letter["error"], "invalid_json");
    assert_eq!(letter["payload"], "this is not json");
    assert_eq!(letter["original_subject"], "feedback.e2e");
    assert!(letter["detail"].as_str().is_some_and(|d| !d.is_empty()));

    check_problem(&api.get("/v1/dead-letters", STAFF).await, 403, "forbidden");
    check_problem(
        &api.get("/v1/dead-letters?limit=0", ADMIN).await,
        400,
        "invalid_request",
    );
    let api = &api;
    let retry =
        |path: String| async move { api.call(Method::POST, &path, Some(ADMIN), &[], None).await };
    check_problem(
        &retry("/v1/dead-letters/x/retry".to_owned()).await,
        400,
        "invalid_request",
    );
    check_problem(
        &retry("/v1/dead-letters/999/retry".to_owned()).await,
        404,
        "not_found",
    );

    // Re-driving a message whose cause was not fixed brings it back as a new dead letter.
    let seq = letter["seq"].as_u64().unwrap();
    let answer = retry(format!("/v1/dead-letters/{seq}/retry")).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    assert_eq!(answer.body["subject"], "feedback.e2e");
    let again = eventually(
        Duration::from_secs(20),
        "the re-driven message back",
        || async {
            let answer = api.get("/v1/dead-letters", ADMIN).await;
            let items = answer.body["items"].as_array().cloned().unwrap_or_default();
            (items.len() == 1 && items[0]["seq"].as_u64() != Some(seq)).then_some(items)
        },
    )
    .await;
    assert_eq!(again[0]["error"], "invalid_json");
}

#[tokio::test]
async fn with_nats_off_readyz_says_so_and_there_are_no_dead_letters() {
    let api = Api::start();
    let body = readyz(&api).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["nats"]["status"], "off");
    let letters = api.get("/v1/dead-letters", ADMIN).await;
    assert_eq!(letters.status, 200, "{}", letters.text);
    assert_eq!(letters.body["items"], serde_json::json!([]));
}

#[tokio::test]
async fn serve_answers_http_while_nats_is_down_and_ingests_once_it_is_up() {
    let mut server = NatsServer::start();
    server.stop();
    let api = Api::start_with_nats(tempfile::tempdir().unwrap(), &server.url());
    let body = readyz(&api).await;
    assert_eq!(
        body["status"], "ready",
        "the HTTP side does not wait for NATS"
    );
    assert_eq!(body["checks"]["nats"]["status"], "degraded");
    assert_ne!(body["checks"]["nats"]["connection"], "connected");
    let answer = api.get("/v1/loops", STAFF).await;
    assert_eq!(answer.status, 200);

    server.restart();
    eventually(Duration::from_secs(30), "NATS reported healthy", || async {
        (readyz(&api).await["checks"]["nats"]["status"] == "ok").then_some(())
    })
    .await;
    let js = jetstream(&server).await;
    publish(
        &js,
        feedback("late-1", "loop-late-1").to_string().into_bytes(),
    )
    .await;
    eventually(Duration::from_secs(20), "the loop", || async {
        (api.get("/v1/loops/loop-late-1", STAFF).await.status == 200).then_some(())
    })
    .await;
}

/// How `serve` is stopped in the middle of ingesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interruption {
    /// SIGKILL, as a crash.
    Kill,
    /// SIGTERM, a graceful shutdown: it must exit 0.
    Terminate,
}

/// Every published message is stored exactly once across a SIGKILL of `serve` in the middle
/// of ingesting, and the chain verifies.
#[tokio::test]
async fn a_crash_in_the_middle_of_ingesting_loses_and_repeats_nothing() {
    interrupted_ingest(Interruption::Kill).await;
}

/// The same across a SIGTERM: in-flight messages finish, the rest are redelivered.
#[tokio::test]
async fn a_graceful_stop_in_the_middle_of_ingesting_loses_and_repeats_nothing() {
    interrupted_ingest(Interruption::Terminate).await;
}

async fn interrupted_ingest(interruption: Interruption) {
    const LOOPS: usize = 5_000;
    let server = NatsServer::start();
    let js = jetstream(&server).await;
    let feedback_stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "FEEDBACK".to_owned(),
            subjects: vec!["feedback.>".to_owned()],
            ..Default::default()
        })
        .await
        .expect("create FEEDBACK");
    // A FEEDBACK as older releases created it (limits retention): the first start migrates it
    // to work-queue retention, keeping the consumer's settings. The service keeps a consumer
    // it finds; a short ack wait makes the messages the killed process held come back in
    // seconds instead of the default 30.
    feedback_stream
        .get_or_create_consumer(
            "closeloop-ingest",
            jetstream::consumer::pull::Config {
                durable_name: Some("closeloop-ingest".to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(2),
                ..Default::default()
            },
        )
        .await
        .expect("create the consumer");
    // Each loop's feedback and acknowledgement, published before the service starts, with
    // at most 1,000 acks awaited at a time (the client holds back beyond its in-flight limit).
    let mut acks = Vec::with_capacity(1000);
    for n in 0..LOOPS {
        let loop_id = format!("loop-crash-{n}");
        for event in [
            feedback(&format!("fb-{n}"), &loop_id),
            acknowledgement(&format!("ack-{n}"), &loop_id),
        ] {
            acks.push(
                js.send_publish(
                    "feedback.e2e",
                    PublishMessage::build().payload(event.to_string().into()),
                )
                .await
                .expect("publish"),
            );
        }
        if acks.len() >= 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("publish ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("publish ack");
    }
    let total = (LOOPS * 2) as u64;

    let dir = tempfile::tempdir().unwrap();
    let head_of = |service: &Service| {
        let url = service.url("/readyz");
        async move {
            let body: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            body["checks"]["store"]["head"].as_u64()
        }
    };
    let service = Service::start_with_nats(dir.path(), &server.url());
    let before_crash = eventually(Duration::from_secs(60), "ingestion to get going", || {
        let head = head_of(&service);
        async move { head.await.filter(|&head| head >= 200) }
    })
    .await;
    match interruption {
        Interruption::Kill => service.kill(),
        Interruption::Terminate => {
            let status = service.terminate();
            assert!(status.success(), "a graceful stop exits 0, not {status}");
        }
    }
    assert!(
        before_crash < total,
        "the stop must come mid-ingest ({before_crash} of {total} stored)"
    );

    let service = Service::start_with_nats(dir.path(), &server.url());
    eventually(
        Duration::from_secs(120),
        "every message to be stored",
        || {
            let head = head_of(&service);
            async move { head.await.filter(|&head| head >= total) }
        },
    )
    .await;
    // Let redeliveries of anything in flight at the crash arrive and be recognised.
    let stream = js.get_stream("FEEDBACK").await.unwrap();
    eventually(Duration::from_secs(60), "the consumer to drain", || {
        let info = stream.consumer_info("closeloop-ingest");
        async move {
            let info = info.await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;
    let status = service.terminate();
    assert!(status.success(), "{status}");

    let replay = run_cli(dir.path(), &["replay"]);
    assert!(replay.status.success());
    let mut seen: HashMap<String, u32> = HashMap::new();
    for line in String::from_utf8(replay.stdout).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["source"], SOURCE);
        *seen
            .entry(event["event_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        seen.len() as u64,
        total,
        "every published message is stored"
    );
    assert!(
        seen.values().all(|&count| count == 1),
        "none is stored twice"
    );
    let verify = run_cli(dir.path(), &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

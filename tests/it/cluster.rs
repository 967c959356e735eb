//! Two stateless replicas on one JetStream store in a three-node NATS cluster (R3), under a
//! steady write load through HTTP and NATS, while one NATS node is killed (SIGKILL) and later
//! restarted and one replica is killed. Afterwards every write that got a 201 or a publish
//! acknowledgement is in the log exactly once, the chain verifies, and both replicas agree on
//! the tree head.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use closeloop_testkit::NatsCluster;
use serde_json::{Value, json};

use crate::Service;
use crate::api::{AUDITOR, STAFF};

const SOURCE: &str = "urn:test:cluster-kiosk";
/// How long the load runs; the faults happen at fixed points within it.
const LOAD: Duration = Duration::from_secs(12);
/// How long one write is retried (same idempotency key) before it counts as not acknowledged.
const RETRY_FOR: Duration = Duration::from_secs(20);

fn start_replica(dir: &std::path::Path, urls: &str) -> Service {
    Service::start_with_env(
        dir,
        urls,
        &[
            ("CLOSELOOP_STORE", "jetstream"),
            ("CLOSELOOP_NATS_REPLICAS", "3"),
        ],
    )
}

/// The base URLs of the replicas that are up.
type Replicas = Arc<Mutex<Vec<Option<String>>>>;

fn pick(replicas: &Replicas, n: usize) -> Option<String> {
    let up: Vec<String> = replicas
        .lock()
        .expect("replicas")
        .iter()
        .flatten()
        .cloned()
        .collect();
    (!up.is_empty()).then(|| up[n % up.len()].clone())
}

/// Posts feedback until a replica answers 201 (same idempotency key every time) or
/// [`RETRY_FOR`] passes; returns the loop id it was stored under.
async fn post_feedback(http: &reqwest::Client, replicas: &Replicas, key: &str) -> Option<String> {
    let body = json!({"org_unit": "rxx/site-a/ward-7", "channel": "web", "ratings": {"fft": 1}});
    let deadline = Instant::now() + RETRY_FOR;
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        if let Some(base) = pick(replicas, attempt) {
            let answer = http
                .post(format!("{base}/v1/feedback"))
                .bearer_auth(STAFF)
                .header("Idempotency-Key", key)
                .json(&body)
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            if let Ok(answer) = answer
                && (answer.status() == 201 || answer.status() == 200)
                && let Ok(stored) = answer.json::<Value>().await
            {
                return stored["loop_id"].as_str().map(str::to_owned);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Publishes one feedback CloudEvent until JetStream acknowledges it or [`RETRY_FOR`] passes.
async fn publish_feedback(js: &jetstream::Context, id: &str) -> bool {
    let event = json!({
        "specversion": "1.0", "id": id, "source": SOURCE,
        "type": "org.closeloop.feedback.received", "subject": format!("cl-{id}"),
        "data": {"org_unit": "rxx/site-a/ward-8", "channel": "survey", "ratings": {"fft": 2}},
    });
    let payload = serde_json::to_vec(&event).expect("json");
    let deadline = Instant::now() + RETRY_FOR;
    while Instant::now() < deadline {
        let sent = js
            .send_publish(
                "feedback.cluster",
                PublishMessage::build()
                    .payload(payload.clone().into())
                    .message_id(id),
            )
            .await;
        if let Ok(ack) = sent
            && tokio::time::timeout(Duration::from_secs(5), ack)
                .await
                .is_ok_and(|ack| ack.is_ok())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Every event of the log, read from `base` page by page.
async fn whole_log(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let after = events.last().map_or(0, |event: &Value| {
            event["position"].as_u64().expect("position")
        });
        let page = http
            .get(format!("{base}/v1/events?after={after}&limit=1000"))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .expect("events")
            .text()
            .await
            .expect("events body");
        let before = events.len();
        events.extend(
            page.lines()
                .map(|line| serde_json::from_str::<Value>(line).expect("JSON line")),
        );
        if events.len() == before {
            return events;
        }
    }
}

async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> Value {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_lose_and_repeat_nothing_when_a_nats_node_and_a_replica_die() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_replica(dir_a.path(), &urls);
    let b = start_replica(dir_b.path(), &urls);
    let replicas: Replicas = Arc::new(Mutex::new(vec![Some(a.url("")), Some(b.url(""))]));
    let http = reqwest::Client::new();
    let js = jetstream::new(
        async_nats::connect(cluster.url_list())
            .await
            .expect("connect to the cluster"),
    );

    let running = Arc::new(AtomicBool::new(true));
    let http_acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let nats_acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = Vec::new();
    for writer in 0..4 {
        let (http, replicas, running, acked) = (
            http.clone(),
            Arc::clone(&replicas),
            Arc::clone(&running),
            Arc::clone(&http_acked),
        );
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                n += 1;
                if let Some(loop_id) =
                    post_feedback(&http, &replicas, &format!("cluster-{writer}-{n}")).await
                {
                    acked.lock().expect("acked").push(loop_id);
                }
            }
        }));
    }
    {
        let (js, running, acked) = (js.clone(), Arc::clone(&running), Arc::clone(&nats_acked));
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("nats-{n}");
                if publish_feedback(&js, &id).await {
                    acked.lock().expect("acked").push(id);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    let started = Instant::now();
    let at = |seconds: u64| started + Duration::from_secs(seconds);
    tokio::time::sleep_until(at(3).into()).await;
    // The harshest node to lose: the one leading the log stream.
    let leader = js
        .get_stream("CLOSELOOP_LOG")
        .await
        .expect("the log stream")
        .info()
        .await
        .expect("stream info")
        .cluster
        .clone()
        .and_then(|cluster| cluster.leader)
        .expect("an R3 stream has a leader");
    let victim = (0..3)
        .find(|&i| NatsCluster::server_name(i) == leader)
        .expect("the leader is one of the nodes");
    cluster.kill(victim);
    tokio::time::sleep_until(at(6).into()).await;
    replicas.lock().expect("replicas")[1] = None;
    b.kill();
    tokio::time::sleep_until(at(9).into()).await;
    cluster.restart(victim);
    tokio::time::sleep_until((started + LOAD).into()).await;
    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let load_stopped = Instant::now();
    let b = start_replica(dir_b.path(), &urls);

    let http_acked = http_acked.lock().expect("acked").clone();
    let nats_acked = nats_acked.lock().expect("acked").clone();
    assert!(
        http_acked.len() > 20 && nats_acked.len() > 20,
        "the load was too light to mean anything: {} HTTP and {} NATS writes acknowledged",
        http_acked.len(),
        nats_acked.len()
    );

    eprintln!(
        "acknowledged: {} over HTTP, {} over NATS; killed the log's leader {leader}",
        http_acked.len(),
        nats_acked.len()
    );
    // Every acknowledged write, in the log exactly once, as both replicas see it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (log, missing) = loop {
        let log = whole_log(&http, &a.url("")).await;
        let mut per_loop: HashMap<&str, usize> = HashMap::new();
        let mut per_nats_id: HashMap<&str, usize> = HashMap::new();
        for event in &log {
            if event["type"] == "org.closeloop.feedback.received" {
                *per_loop
                    .entry(event["loop_id"].as_str().unwrap())
                    .or_default() += 1;
                if event["source"] == SOURCE {
                    *per_nats_id
                        .entry(event["event_id"].as_str().unwrap())
                        .or_default() += 1;
                }
            }
        }
        for (what, count) in per_loop.iter().chain(&per_nats_id) {
            assert_eq!(*count, 1, "{what} is in the log {count} times");
        }
        let missing = http_acked
            .iter()
            .filter(|loop_id| !per_loop.contains_key(loop_id.as_str()))
            .chain(
                nats_acked
                    .iter()
                    .filter(|id| !per_nats_id.contains_key(id.as_str())),
            )
            .count();
        if missing == 0 || Instant::now() > deadline {
            break (log, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        missing,
        0,
        "acknowledged writes missing from the log of {} events",
        log.len()
    );
    // A message the killed replica had taken but not acknowledged comes again after the
    // consumer's ack wait (30 s), so this can take that long.
    eprintln!(
        "every acknowledged write in the log {:?} after the load stopped",
        load_stopped.elapsed()
    );

    // Both replicas verify the same chain and tree head.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let on_a = get_json(&http, &a.url("/v1/audit/verify"), Some(AUDITOR)).await;
        let on_b = get_json(&http, &b.url("/v1/audit/verify"), Some(AUDITOR)).await;
        assert_eq!(on_a["ok"], true, "{on_a}");
        if on_b["ok"] == true && on_a["events"] == on_b["events"] {
            assert_eq!(on_a["head_hash"], on_b["head_hash"]);
            assert!(on_a["events"].as_u64().unwrap() >= log.len() as u64);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas do not agree: {on_a} and {on_b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = get_json(&http, &b.url("/readyz"), None).await;
    assert_eq!(ready["checks"]["store"]["status"], "ok", "{ready}");
    assert!(ready["checks"]["store"]["replica_lag"].is_u64(), "{ready}");

    // Exactly one replica publishes the outbound feed, and both know which.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = [
            get_json(&http, &a.url("/readyz"), None).await["checks"]["nats"]["feed_lease"].clone(),
            get_json(&http, &b.url("/readyz"), None).await["checks"]["nats"]["feed_lease"].clone(),
        ];
        let leaders = leases
            .iter()
            .filter(|lease| lease["leader"] == true)
            .count();
        if leaders == 1 && leases[0]["holder"] == leases[1]["holder"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not exactly one feed leader: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Personal data at rest (issue 9): sealed in the log, gone for good after an erasure.
//!
//! The proof is a raw-byte scan of every file in the data directory — the sled log, the key
//! store, the read models' snapshot, the feed checkpoint — for the person's name, contact and
//! story, before and after an erasure and a restart.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{ADMIN, AUDITOR, LEADER, STAFF};
use crate::{Service, run_cli};

const NAME: &str = "Zebedee Quartermaine-Oyelaran";
const CONTACT: &str = "zebedee.q.7781@example.org";
const STORY: &str = "Ward 9 lost my hearing aid and nobody rang me back, signed Zebedee";
const REPLY: &str = "Dear Zebedee, we found your hearing aid";

/// Every byte of every file under `dir`.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                found.push((path, bytes));
            }
        }
    }
    found
}

/// The files under `dir` that hold `needle`, case-insensitively, in UTF-8.
fn holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let needle = needle.to_lowercase().into_bytes();
    files_under(dir)
        .into_iter()
        .filter(|(_, bytes)| {
            bytes
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(&needle))
        })
        .map(|(path, _)| path)
        .collect()
}

fn assert_nowhere(dir: &Path, when: &str) {
    // The scan sees the log's bytes: a field stored in plain next to the sealed ones is found.
    assert!(
        !holding(dir, "lost property").is_empty(),
        "{when}: the scan found not even the plain themes; is it reading the data directory?"
    );
    for secret in [NAME, CONTACT, STORY, REPLY, "Zebedee"] {
        let found = holding(dir, secret);
        assert!(found.is_empty(), "{when}: {secret:?} is in {found:?}");
    }
}

async fn send(
    http: &reqwest::Client,
    service: &Service,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, service.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.trim_start().starts_with('{') || text.trim_start().starts_with('[') {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    } else {
        Value::String(text)
    };
    (status, body)
}

#[tokio::test]
async fn personal_data_is_sealed_at_rest_and_an_erasure_leaves_no_readable_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();
    let service = Service::start(dir.path());
    let (status, created) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/feedback",
        STAFF,
        Some(
            json!({"loop_id": "case-2026-0042", "org_unit": "rxx/site-a/ward-9",
                    "channel": "email", "story": STORY, "themes": ["lost property"],
                    "ratings": {"fft": 4}, "consent_to_publish": true,
                    "author": {"name": NAME, "contact": CONTACT}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // A second loop of the same person, found by contact, and one of someone else.
    for (id, contact) in [
        ("case-2026-0043", " Zebedee.Q.7781@EXAMPLE.org "),
        ("case-2026-0044", "other@example.org"),
    ] {
        let (status, body) = send(
            &http,
            &service,
            reqwest::Method::POST,
            "/v1/feedback",
            STAFF,
            Some(json!({"loop_id": id, "org_unit": "rxx/site-a/ward-9", "channel": "web",
                        "story": "The car park was full", "author": {"name": "Ann Other", "contact": contact}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/loops/case-2026-0042/responses",
        STAFF,
        Some(json!({"by": "ward 9 manager", "text": REPLY})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Staff and auditors read it; a leader sees neither the author nor the plain story.
    let (_, loop_view) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0042",
        STAFF,
        None,
    )
    .await;
    assert_eq!(
        loop_view["timeline"][0]["data"]["author"]["name"], NAME,
        "{loop_view}"
    );
    assert_eq!(loop_view["timeline"][1]["data"]["text"], REPLY);
    assert!(
        loop_view["timeline"][0]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("staff:")),
        "the authenticated actor is recorded: {loop_view}"
    );
    let public_id = loop_view["public_id"]
        .as_str()
        .expect("a public id")
        .to_owned();
    assert_eq!(public_id.len(), 32, "{loop_view}");
    let (_, leader_view) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0042",
        LEADER,
        None,
    )
    .await;
    assert_eq!(leader_view["public_id"], public_id.as_str());

    // Sealed at rest while the service runs and after it stops.
    assert_eq!(service.terminate().code(), Some(0));
    assert_nowhere(dir.path(), "before the erasure");

    let service = Service::start(dir.path());
    let (status, erased) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/erasures",
        ADMIN,
        Some(json!({"contact": "zebedee.q.7781@example.org"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    assert_eq!(
        erased["erased_loops"], 2,
        "both loops of the contact, not the other"
    );
    let (status, problem) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/erasures",
        STAFF,
        Some(json!({"loop_id": "case-2026-0044"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    let (_, after) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0042",
        AUDITOR,
        None,
    )
    .await;
    let timeline = after["timeline"].as_array().expect("a timeline");
    assert_eq!(timeline[0]["data"]["author"], "[erased]", "{after}");
    assert_eq!(timeline[0]["data"]["story"], "[erased]");
    assert_eq!(
        timeline[0]["data"]["themes"],
        json!(["lost property"]),
        "the rest stays"
    );
    assert_eq!(timeline[1]["data"]["text"], "[erased]");
    let erasure = timeline.last().expect("the erasure");
    assert_eq!(erasure["type"], "org.closeloop.loop.erased");
    assert!(
        erasure["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("admin:")),
        "{erasure}"
    );
    assert_eq!(
        after["stage"], "responded",
        "an erasure changes neither stage nor status"
    );
    let (_, other) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0044",
        AUDITOR,
        None,
    )
    .await;
    assert_eq!(
        other["timeline"][0]["data"]["author"]["name"], "Ann Other",
        "{other}"
    );

    let (_, events) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/events",
        AUDITOR,
        None,
    )
    .await;
    let events = events.as_str().expect("ndjson").to_owned();
    assert!(!events.contains("Zebedee"), "{events}");
    let (_, verified) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/audit/verify",
        AUDITOR,
        None,
    )
    .await;
    assert_eq!(verified["ok"], true, "{verified}");
    let (status, again) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/erasures",
        ADMIN,
        Some(json!({"contact": CONTACT})),
    )
    .await;
    assert_eq!(
        (status, again["erased_loops"].clone()),
        (StatusCode::OK, json!(0)),
        "the contact index forgot them"
    );
    assert_eq!(service.terminate().code(), Some(0));

    // After a restart: still erased, still verifying, and no readable copy on disk.
    let service = Service::start(dir.path());
    let (_, after) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0043",
        STAFF,
        None,
    )
    .await;
    assert_eq!(
        after["timeline"][0]["data"]["author"], "[erased]",
        "{after}"
    );
    assert_eq!(service.terminate().code(), Some(0));
    assert_nowhere(dir.path(), "after the erasure and a restart");

    // `replay` with the master key shows what is left, and `verify` passes.
    let replay = run_cli(dir.path(), &["replay"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let lines = String::from_utf8_lossy(&replay.stdout).into_owned();
    assert!(
        lines.contains("[erased]") && !lines.contains("Zebedee"),
        "{lines}"
    );
    assert!(
        lines.contains("Ann Other"),
        "the other person's data stays readable"
    );
    let verify = run_cli(dir.path(), &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn serve_without_a_master_key_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(crate::closeloop_bin())
        .arg("serve")
        .env("CLOSELOOP_DATA_DIR", dir.path())
        .env("CLOSELOOP_HTTP_ADDR", "127.0.0.1:0")
        .env("CLOSELOOP_NATS_URL", "off")
        .env_remove("CLOSELOOP_MASTER_KEY")
        .env_remove("CLOSELOOP_MASTER_KEY_FILE")
        .output()
        .expect("run closeloop serve");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CLOSELOOP_MASTER_KEY_FILE"), "{stderr}");
}

/// With the JetStream store, the NATS server's files — the log, the key store, the access log
/// and the ingest streams — hold no readable copy of the person's name, contact, story or
/// reply, before or after an erasure; and after it, the loop reads as erased.
#[tokio::test]
async fn on_jetstream_the_servers_files_hold_no_readable_copy() {
    let mut nats = closeloop_testkit::NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();
    let start = |dir: &Path, url: &str| {
        Service::start_with_env(dir, url, &[("CLOSELOOP_STORE", "jetstream")])
    };
    let service = start(dir.path(), &nats.url());
    let (status, created) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/feedback",
        STAFF,
        Some(
            json!({"loop_id": "case-2026-0042", "org_unit": "rxx/site-a/ward-9",
                    "channel": "email", "story": STORY, "themes": ["lost property"],
                    "ratings": {"fft": 4}, "author": {"name": NAME, "contact": CONTACT}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, body) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/loops/case-2026-0042/responses",
        STAFF,
        Some(json!({"by": "ward 9 manager", "text": REPLY})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Read it as staff, so the access log has an entry too.
    let (status, _) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0042",
        STAFF,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // SIGTERM to both, so that every file is written out before it is scanned.
    assert!(service.terminate().success());
    nats.shut_down();
    assert_nowhere(nats.store_dir(), "on JetStream");
    nats.restart();

    let service = start(dir.path(), &nats.url());
    let (status, erased) = send(
        &http,
        &service,
        reqwest::Method::POST,
        "/v1/erasures",
        ADMIN,
        Some(json!({"contact": CONTACT})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    let (status, view) = send(
        &http,
        &service,
        reqwest::Method::GET,
        "/v1/loops/case-2026-0042",
        AUDITOR,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert!(view.to_string().contains("[erased]"), "{view}");
    assert!(service.terminate().success());
    nats.shut_down();
    assert_nowhere(nats.store_dir(), "on JetStream after the erasure");
}

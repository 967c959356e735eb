//! Fuzzing every JSON body of the HTTP API (issue 8, item 12): `POST /v1/feedback`, the seven
//! step endpoints and `POST /v1/changes`, sent to the real router in process over a temporary
//! `SledStore`. Bodies are structure-aware: plausible data of each event type, then mutated
//! (fields removed, retyped, overlong, deeply nested, unknown fields, control and bidi
//! characters, odd number literals), plus a few raw non-JSON bodies, odd loop ids, `If-Match`
//! and `Idempotency-Key` values. For every request:
//!
//! - the service answers, without a 5xx (a panic in a handler would be a 500);
//! - a refusal (4xx) stores nothing: the store's head does not move;
//! - every event that is stored can go out on the outbound feed: its record is at most
//!   `MAX_RECORD_BYTES`, decodes, and the CloudEvent the feed builds from it (see
//!   `closeloop-ingest`'s `feed` module), with its headers, fits in NATS's default
//!   `max_payload` of 1 MiB, so it is published whole.
//!
//! The requests share one store, so later cases meet loops in every stage that earlier ones
//! left behind. CI runs a fixed number of cases (well under a minute); for a longer hunt:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo nextest run -p closeloop-api --test fuzz --success-output immediate
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use closeloop_api::{AppState, Limits, router, system_clock};
use closeloop_domain::Sla;
use closeloop_projections::{Projections, ReadModels};
use closeloop_store::record::{self, MAX_RECORD_BYTES};
use closeloop_store::{EventStore, SledStore, SledStoreOptions, StoredEvent};
use closeloop_testkit::fuzz::{
    self, EVENT_KINDS, event_data, json_value, mutations, nasty_string, with_odd_numbers,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use tower::ServiceExt;

const STAFF: &str = "staff-token-fuzz";

/// NATS's default `max_payload`: what one message, headers included, may hold.
const NATS_MAX_PAYLOAD: usize = 1024 * 1024;

/// Loops the fuzzer opens before it starts, so that step endpoints meet real loops.
const SEEDED_LOOPS: [&str; 3] = ["fz-a", "fz-b", "fz-c"];

/// The seven step endpoints, with the event type each records.
const STEPS: [(&str, &str); 7] = [
    ("acknowledgements", "loop.acknowledged"),
    ("responses", "loop.responded"),
    ("actions", "loop.action_planned"),
    ("changes", "loop.change_made"),
    ("no-change", "loop.no_change"),
    ("report-backs", "loop.reported_back"),
    ("reopenings", "loop.reopened"),
];

/// Which endpoint a request goes to.
#[derive(Debug, Clone)]
enum Endpoint {
    /// `POST /v1/feedback`.
    Feedback,
    /// `POST /v1/loops/{loop_id}/<STEPS[n].0>`.
    Step(usize, String),
    /// `POST /v1/changes`.
    Changes,
}

/// One fuzzed request.
#[derive(Debug, Clone)]
struct Case {
    endpoint: Endpoint,
    /// The body before odd numbers are put in; `None`: `raw` is sent instead.
    body: Option<Value>,
    raw: Vec<u8>,
    odd_number: usize,
    idempotency_key: Option<String>,
    if_match: Option<String>,
}

/// A loop id for a path: mostly one of the seeded loops, sometimes anything.
fn loop_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(SEEDED_LOOPS.to_vec()).prop_map(str::to_owned),
        1 => Just("fz-never-received".to_owned()),
        // Past the 128-character limit of a loop id, but short enough for a URI (the HTTP
        // layer refuses a path over 64 KiB before it reaches the service).
        2 => nasty_string().prop_filter("a path segment of 1 to 300 bytes", |id| {
            (1..=300).contains(&id.len())
        }),
    ]
}

/// A header value as a client may send it (visible ASCII; the HTTP layer refuses the rest).
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{1,40}",
        1 => Just("1".to_owned()),
        1 => Just("\"2\"".to_owned()),
        1 => "[a-z]{256,300}",
    ]
}

fn body_for(kind: &'static str, endpoint: Endpoint) -> BoxedStrategy<(Endpoint, Value)> {
    let data = event_data(kind);
    match endpoint {
        Endpoint::Feedback => (data, prop::option::of(loop_id()))
            .prop_map(move |(mut data, loop_id)| {
                if let (Some(loop_id), Some(fields)) = (loop_id, data.as_object_mut()) {
                    fields.insert("loop_id".to_owned(), Value::String(loop_id));
                }
                (Endpoint::Feedback, data)
            })
            .boxed(),
        Endpoint::Changes => (data, prop::collection::vec(loop_id(), 0..4))
            .prop_map(|(mut data, loop_ids)| {
                if let Some(fields) = data.as_object_mut() {
                    fields.insert("loop_ids".to_owned(), json!(loop_ids));
                }
                (Endpoint::Changes, data)
            })
            .boxed(),
        step @ Endpoint::Step(..) => data.prop_map(move |data| (step.clone(), data)).boxed(),
    }
}

fn case() -> impl Strategy<Value = Case> {
    let endpoint = prop_oneof![
        2 => Just((Endpoint::Feedback, "feedback.received")),
        6 => (0..STEPS.len(), loop_id()).prop_map(|(n, id)| (Endpoint::Step(n, id), STEPS[n].1)),
        1 => Just((Endpoint::Changes, "loop.change_made")),
    ];
    // Now and then the body's shape belongs to another event type.
    let kind = prop_oneof![9 => Just(None), 1 => prop::sample::select(EVENT_KINDS.to_vec()).prop_map(Some)];
    (endpoint, kind)
        .prop_flat_map(|((endpoint, own_kind), other_kind)| {
            body_for(other_kind.unwrap_or(own_kind), endpoint)
        })
        .prop_flat_map(|(endpoint, body)| {
            (
                Just(endpoint),
                Just(body),
                mutations(),
                prop_oneof![
                    12 => Just(None),
                    1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
                    1 => json_value().prop_map(|value| Some(value.to_string().into_bytes())),
                ],
                any::<usize>(),
                prop::option::weighted(0.15, header_value()),
                prop::option::weighted(0.1, header_value()),
            )
        })
        .prop_map(
            |(endpoint, mut body, mutations, raw, odd_number, idempotency_key, if_match)| {
                for change in mutations {
                    change.apply(&mut body);
                }
                let (body, raw) = match raw {
                    Some(raw) => (None, raw),
                    None => (Some(body), Vec::new()),
                };
                Case {
                    endpoint,
                    body,
                    raw,
                    odd_number,
                    idempotency_key,
                    if_match,
                }
            },
        )
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so any loop id makes a
/// valid path.
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn request(case: &Case) -> Request<Body> {
    let path = match &case.endpoint {
        Endpoint::Feedback => "/v1/feedback".to_owned(),
        Endpoint::Changes => "/v1/changes".to_owned(),
        Endpoint::Step(n, loop_id) => {
            format!("/v1/loops/{}/{}", path_segment(loop_id), STEPS[*n].0)
        }
    };
    let body = match &case.body {
        Some(body) => with_odd_numbers(body, case.odd_number),
        None => case.raw.clone(),
    };
    let mut builder = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {STAFF}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = &case.idempotency_key {
        builder = builder.header("Idempotency-Key", key);
    }
    if let Some(version) = &case.if_match {
        builder = builder.header(header::IF_MATCH, version);
    }
    builder.body(Body::from(body)).expect("a valid request")
}

/// The outbound feed's message for a stored event, as `closeloop-ingest`'s `feed_message`
/// builds it (the API crate cannot depend on the NATS adapter): the CloudEvent in structured
/// JSON, and the size NATS counts against `max_payload` with the three headers.
fn feed_wire_size(entry: &StoredEvent) -> Result<usize, TestCaseError> {
    let view = record::decode_public_view(&entry.record)
        .map_err(|err| TestCaseError::fail(format!("position {}: {err}", entry.position)))?;
    let body = json!({
        "specversion": "1.0",
        "id": view.event_id,
        "source": view.source,
        "type": view.event_type,
        "subject": entry.loop_id.as_str(),
        "time": view.time.to_string(),
        "datacontenttype": "application/json",
        "position": entry.position,
        "loopversion": entry.version,
        "hash": entry.hash.to_hex(),
        "data": view.data,
    });
    let payload = serde_json::to_vec(&body).map_err(|err| TestCaseError::fail(err.to_string()))?;
    let position = entry.position.to_string();
    let headers = [
        ("Content-Type", "application/cloudevents+json"),
        ("Closeloop-Position", position.as_str()),
        ("Nats-Msg-Id", position.as_str()),
    ];
    let block = headers
        .iter()
        .map(|(name, value)| name.len() + 2 + value.len() + 2)
        .sum::<usize>()
        + "NATS/1.0\r\n\r\n".len();
    Ok(block + payload.len())
}

struct App {
    router: Router,
    store: Arc<SledStore>,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SledStore::open(dir.path(), &SledStoreOptions::default()).expect("store"));
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        projections: Arc::new(Projections::new(ReadModels::default())),
        sla: Sla::default(),
        tokens: format!("staff:{STAFF}").parse().expect("tokens"),
        clock: system_clock(),
        metrics: None,
        ingest: None,
        limits: Limits::default(),
        stories: closeloop_api::story_cache(),
        input_limits: closeloop_domain::Limits::DEFAULT,
        keys: None,
        publish_requires_approval: false,
        access: Arc::new(closeloop_access::MemoryAccessLog::default()),
        site: Default::default(),
    });
    App {
        router: router(state),
        store,
        _dir: dir,
    }
}

async fn send(app: &App, request: Request<Body>) -> (StatusCode, String) {
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn check(
    app: &App,
    case: &Case,
    seen: &Mutex<BTreeMap<u16, usize>>,
) -> Result<(), TestCaseError> {
    let head = app.store.head();
    let (status, body) = send(app, request(case)).await;
    if let Ok(mut seen) = seen.lock() {
        *seen.entry(status.as_u16()).or_default() += 1;
    }
    prop_assert!(
        !status.is_server_error(),
        "answered {status}: {}",
        body.chars().take(500).collect::<String>()
    );
    if status.is_client_error() {
        prop_assert_eq!(
            app.store.head(),
            head,
            "a refused request ({}) stored events: {}",
            status,
            body.chars().take(500).collect::<String>()
        );
        return Ok(());
    }
    prop_assert!(status.is_success(), "answered {status}");
    let stored = app
        .store
        .read_all(head, 2000)
        .await
        .map_err(|err| TestCaseError::fail(err.to_string()))?;
    for entry in &stored {
        prop_assert!(
            entry.record.len() <= MAX_RECORD_BYTES,
            "position {} holds a record of {} bytes",
            entry.position,
            entry.record.len()
        );
        let size = feed_wire_size(entry)?;
        prop_assert!(
            size <= NATS_MAX_PAYLOAD,
            "position {}: the feed message is {size} bytes",
            entry.position
        );
    }
    Ok(())
}

#[test]
fn every_json_body_is_stored_publishably_or_refused_without_a_trace() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = app();
    runtime.block_on(async {
        for loop_id in SEEDED_LOOPS {
            let body = json!({
                "loop_id": loop_id, "org_unit": "rxx/site-a/ward-7", "channel": "web",
                "story": "Fuzzing starts here.",
            });
            let request = Request::post("/v1/feedback")
                .header(header::AUTHORIZATION, format!("Bearer {STAFF}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("request");
            let (status, text) = send(&app, request).await;
            assert_eq!(status, StatusCode::CREATED, "{text}");
        }
    });
    // How often each status was answered, shrinking included: a run that only ever sees 422
    // would test little, so the tally is printed.
    let seen = Mutex::new(BTreeMap::new());
    fuzz::run("HTTP JSON bodies", 4000, &case(), |case| {
        runtime.block_on(check(&app, &case, &seen))
    });
    eprintln!(
        "fuzz HTTP JSON bodies: answers by status {:?}, {} events stored",
        seen.lock().map(|seen| seen.clone()).unwrap_or_default(),
        app.store.head()
    );
}

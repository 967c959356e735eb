//! The router in process: the guard against the contract's table of roles, shedding, the
//! shape of every error, and what the public page reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use closeloop_domain::{LoopId, Sla};
use closeloop_projections::{Projections, ProjectorOptions, ReadModels, run_projector};
use closeloop_store::merkle::MerkleIndex;
use closeloop_store::{
    AppendError, AppendOutcome, AppendRequest, Committed, EventStore, SledStore, SledStoreOptions,
    StoreError, StoredEvent,
};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::limits::{Class, ClassLimit, EXPORT_LIMIT, PROOF_LIMIT};
use crate::{AppState, Clock, Limits, ROUTES, router, system_clock};

mod access;
mod assets;
mod insights;
mod public_pages;
mod staff_pages;

const STAFF: &str = "staff-token-unit";
const LEADER: &str = "leader-token-unit";
const AUDITOR: &str = "auditor-token-unit";
const ADMIN: &str = "admin-token-unit";

pub(crate) struct App<S = SledStore> {
    pub(crate) router: Router,
    pub(crate) state: Arc<AppState<S>>,
    pub(crate) _dir: tempfile::TempDir,
}

fn app(limits: Limits) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = test_keys();
    let store = keyed_store(dir.path(), &keys);
    build(dir, store, Some(keys), limits, system_clock())
}

/// A key store for one test: personal data is sealed as in production.
pub(crate) fn test_keys() -> Arc<dyn closeloop_keys::KeyStore> {
    Arc::new(closeloop_keys::MemoryKeyStore::new(
        &closeloop_keys::MasterKey::generate(),
    ))
}

/// A store that seals personal data with `keys`.
pub(crate) fn keyed_store(
    path: &std::path::Path,
    keys: &Arc<dyn closeloop_keys::KeyStore>,
) -> SledStore {
    let options = SledStoreOptions {
        keys: Some(closeloop_store::KeyHandle(Arc::clone(keys))),
        ..SledStoreOptions::default()
    };
    SledStore::open(path, &options).expect("store")
}

fn build<S: EventStore>(
    dir: tempfile::TempDir,
    store: S,
    keys: Option<Arc<dyn closeloop_keys::KeyStore>>,
    limits: Limits,
    clock: Clock,
) -> App<S> {
    build_with(dir, store, keys, limits, clock, false)
}

fn build_with<S: EventStore>(
    dir: tempfile::TempDir,
    store: S,
    keys: Option<Arc<dyn closeloop_keys::KeyStore>>,
    limits: Limits,
    clock: Clock,
    publish_requires_approval: bool,
) -> App<S> {
    let access = Arc::new(closeloop_access::MemoryAccessLog::default());
    build_full(
        dir,
        store,
        keys,
        limits,
        clock,
        publish_requires_approval,
        access,
    )
}

/// An app whose reads of personal data are recorded in `access`.
fn build_with_access<S: EventStore>(
    dir: tempfile::TempDir,
    store: S,
    limits: Limits,
    clock: Clock,
    access: Arc<dyn closeloop_access::AccessLog>,
) -> App<S> {
    build_full(dir, store, None, limits, clock, false, access)
}

fn build_full<S: EventStore>(
    dir: tempfile::TempDir,
    store: S,
    keys: Option<Arc<dyn closeloop_keys::KeyStore>>,
    limits: Limits,
    clock: Clock,
    publish_requires_approval: bool,
    access: Arc<dyn closeloop_access::AccessLog>,
) -> App<S> {
    let state = Arc::new(AppState {
        store: Arc::new(store),
        projections: Arc::new(Projections::new(ReadModels::default())),
        sla: Sla::default(),
        tokens: format!("staff:{STAFF},leader:{LEADER},auditor:{AUDITOR},admin:{ADMIN}")
            .parse()
            .expect("tokens"),
        clock,
        metrics: None,
        ingest: None,
        limits,
        stories: crate::story_cache(),
        input_limits: closeloop_domain::Limits::DEFAULT,
        keys,
        publish_requires_approval,
        access,
        site: Default::default(),
    });
    App {
        router: router(Arc::clone(&state)),
        state,
        _dir: dir,
    }
}

pub(crate) async fn call<S>(app: &App<S>, request: Request<Body>) -> (Response<()>, Value, String) {
    let response = app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (Response::from_parts(parts, ()), json, text)
}

pub(crate) fn request(method: &str, path: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("request")
}

/// The roles of each route as contract §3 states them (admin may do everything); `None`:
/// public. Written out here, not taken from `ROUTES`, so that the test checks the table.
fn contract_roles(method: &str, path: &str) -> Option<&'static [&'static str]> {
    const WRITE: &[&str] = &["staff", "admin"];
    const READ: &[&str] = &["staff", "leader", "auditor", "admin"];
    const AUDIT: &[&str] = &["auditor", "admin"];
    const ADMIN_ONLY: &[&str] = &["admin"];
    const LEAD: &[&str] = &["leader", "admin"];
    match (method, path) {
        (
            "GET",
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/you-said-we-did"
            | "/you-said-we-did/print"
            | "/you-said-we-did/feed.atom"
            | "/you-said-we-did/snippet"
            | "/v1/you-said-we-did"
            | "/v1/openapi.json"
            | "/assets/{file}"
            | "/assets/images/{file}"
            | "/sign-in",
        )
        | ("POST", "/sign-in") => None,
        // The staff work queue (HTML pages) too.
        (
            "POST",
            "/v1/feedback" | "/v1/changes" | "/staff/changes" | "/staff/loops/{loop_id}/{step}",
        )
        | ("GET", "/staff" | "/staff/loops/{loop_id}") => Some(WRITE),
        ("GET", "/insights") => Some(LEAD),
        ("POST", path) if path.starts_with("/v1/loops/{loop_id}/") => Some(WRITE),
        ("GET", "/v1/loops" | "/v1/loops/{loop_id}" | "/v1/stats") | ("POST", "/sign-out") => {
            Some(READ)
        }
        (
            "GET",
            "/v1/events"
            | "/v1/audit/verify"
            | "/v1/audit/proof/inclusion"
            | "/v1/audit/proof/consistency"
            | "/v1/audit/access",
        ) => Some(AUDIT),
        ("GET", "/v1/dead-letters") | ("POST", "/v1/dead-letters/{seq}/retry" | "/v1/erasures") => {
            Some(ADMIN_ONLY)
        }
        _ => panic!("{method} {path} is not in the contract's table: add it here"),
    }
}

fn concrete(path: &str) -> String {
    path.replace("{loop_id}", "some-loop")
        .replace("{seq}", "1")
        .replace("{step}", "acknowledge")
}

#[tokio::test]
async fn every_route_admits_exactly_the_roles_of_the_contract() {
    let app = app(Limits::default());
    let callers: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("wrong token", Some("not-one-of-ours")),
        ("staff", Some(STAFF)),
        ("leader", Some(LEADER)),
        ("auditor", Some(AUDITOR)),
        ("admin", Some(ADMIN)),
    ];
    for route in ROUTES {
        let roles = contract_roles(route.method, route.path);
        let granted = route
            .access
            .roles()
            .map(|roles| roles.iter().map(|role| role.as_str()).collect::<Vec<_>>());
        assert_eq!(
            granted.as_deref(),
            roles,
            "ROUTES grants {} {} to other roles than the contract",
            route.method,
            route.path
        );
        for (caller, token) in callers {
            let body = if route.method == "POST" {
                Body::from("{}")
            } else {
                Body::empty()
            };
            let (response, problem, text) = call(
                &app,
                request(route.method, &concrete(route.path), token, body),
            )
            .await;
            let status = response.status();
            let expected = match (roles, token) {
                (None, _) => None,
                // A page asked for without a token and without a session goes to sign in.
                (Some(_), None) if route.html && route.method == "GET" => {
                    Some(StatusCode::SEE_OTHER)
                }
                (Some(_), None | Some("not-one-of-ours")) => Some(StatusCode::UNAUTHORIZED),
                (Some(roles), Some(_)) if roles.contains(&caller) => None,
                (Some(_), Some(_)) => Some(StatusCode::FORBIDDEN),
            };
            let cell = format!(
                "{} {} as {caller}: {status} {text}",
                route.method, route.path
            );
            match expected {
                Some(StatusCode::SEE_OTHER) => {
                    assert_eq!(status, StatusCode::SEE_OTHER, "{cell}");
                    let location = response.headers()[header::LOCATION]
                        .to_str()
                        .expect("ascii");
                    assert!(location.starts_with("/sign-in?next="), "{cell}: {location}");
                }
                Some(expected) if route.html => {
                    assert_eq!(status, expected, "{cell}");
                    let content_type = response.headers()[header::CONTENT_TYPE]
                        .to_str()
                        .expect("ascii");
                    assert!(content_type.starts_with("text/html"), "{cell}");
                }
                Some(expected) => {
                    assert_eq!(status, expected, "{cell}");
                    assert_eq!(
                        response.headers()[header::CONTENT_TYPE],
                        "application/problem+json",
                        "{cell}"
                    );
                    let code = if expected == StatusCode::UNAUTHORIZED {
                        "unauthorized"
                    } else {
                        "forbidden"
                    };
                    assert_eq!(problem["code"], code, "{cell}");
                }
                // The sign-in form refuses, from anyone, a post without its own form token
                // (403: it may come from another site); it asks for no token.
                None if (route.method, route.path) == ("POST", "/sign-in") => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{cell}");
                    assert!(text.contains("sign-in form had expired"), "{cell}");
                }
                None => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{cell}"
                ),
            }
        }
    }
}

#[tokio::test]
async fn a_refused_request_is_answered_without_reading_its_body() {
    let app = app(Limits::default());
    for route in ROUTES.iter().filter(|route| route.method == "POST") {
        let Some(roles) = contract_roles(route.method, route.path) else {
            continue;
        };
        let outsider = [("leader", LEADER), ("auditor", AUDITOR), ("staff", STAFF)]
            .into_iter()
            .find(|(role, _)| !roles.contains(role))
            .map(|(_, token)| token);
        let mut tokens = vec![None, Some("not-one-of-ours")];
        // A role the route does not admit, when there is one (admin is admitted everywhere).
        tokens.extend(outsider.map(Some));
        for token in tokens {
            let read = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&read);
            let body = Body::from_stream(futures::stream::once(async move {
                flag.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
            }));
            let (response, _, text) =
                call(&app, request("POST", &concrete(route.path), token, body)).await;
            assert!(
                matches!(
                    response.status(),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                ),
                "{} with {token:?}: {text}",
                route.path
            );
            assert!(
                !read.load(Ordering::SeqCst),
                "{} read the body of a refused request",
                route.path
            );
        }
    }
}

#[tokio::test]
async fn expensive_reads_beyond_their_limit_are_shed_with_retry_after() {
    let held = ClassLimit {
        concurrent: 1,
        queue: 0,
        retry_after: 7,
    };
    let app = app(Limits::new(held, PROOF_LIMIT, EXPORT_LIMIT));
    let turn = app
        .state
        .limits
        .of(Class::Verify)
        .try_acquire()
        .expect("the only turn");
    let (response, problem, text) = call(
        &app,
        request("GET", "/v1/audit/verify", Some(AUDITOR), Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    assert_eq!(problem["code"], "unavailable");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("audit verification")),
        "{text}"
    );
    // Other classes are not affected, and the turn given back admits the next one.
    let (response, _, text) = call(
        &app,
        request("GET", "/v1/events", Some(AUDITOR), Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    drop(turn);
    let (response, _, text) = call(
        &app,
        request("GET", "/v1/audit/verify", Some(AUDITOR), Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
}

#[tokio::test]
async fn a_streamed_export_holds_its_turn_until_its_body_ends() {
    let one = ClassLimit {
        concurrent: 1,
        queue: 0,
        retry_after: 3,
    };
    let app = app(Limits::new(one, PROOF_LIMIT, one));
    let response = app
        .router
        .clone()
        .oneshot(request("GET", "/v1/events", Some(AUDITOR), Body::empty()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let limiter = app.state.limits.of(Class::Export);
    assert!(limiter.try_acquire().is_none(), "the body is not read yet");
    let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
    assert!(limiter.try_acquire().is_some(), "the body ended");
}

#[tokio::test]
async fn every_error_of_the_api_is_a_problem_with_a_request_id() {
    let app = app(Limits::default());
    let too_big = Body::from(vec![b' '; crate::BODY_LIMIT_BYTES + 1]);
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            request("GET", "/v1/nowhere", None, Body::empty()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            request("DELETE", "/v1/feedback", Some(STAFF), Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            request("POST", "/v1/feedback", Some(STAFF), too_big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            request(
                "GET",
                &format!("/v1/loops?theme={}", "x".repeat(crate::URI_LIMIT_BYTES)),
                Some(STAFF),
                Body::empty(),
            ),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
        (
            request("GET", "/v1/loops/%FF", Some(STAFF), Body::empty()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            request("GET", "/v1/stats?colour=blue", Some(STAFF), Body::empty()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            request(
                "GET",
                "/v1/you-said-we-did?utm_source=x",
                None,
                Body::empty(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            request(
                "GET",
                "/v1/events?after=first",
                Some(AUDITOR),
                Body::empty(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            request(
                "POST",
                "/v1/dead-letters/0/retry",
                Some(ADMIN),
                Body::empty(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            request(
                "POST",
                "/v1/dead-letters/7/retry",
                Some(ADMIN),
                Body::empty(),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (response, problem, text) = call(&app, request).await;
        assert_eq!(response.status(), status, "{what}: {text}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json",
            "{what}: {text}"
        );
        assert_eq!(problem["code"], code, "{what}: {text}");
        assert_eq!(problem["status"], status.as_u16(), "{what}: {text}");
        let request_id = response.headers()["x-request-id"].to_str().expect("ascii");
        assert_eq!(problem["request_id"], request_id, "{what}: {text}");
        assert!(
            !text.contains("axum") && !text.contains("Failed to") && !text.contains("u64"),
            "{what} names library internals: {text}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(response.headers().contains_key(header::ALLOW), "{what}");
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                response.headers().contains_key(header::RETRY_AFTER),
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn the_html_page_answers_errors_as_html_and_ignores_unknown_parameters() {
    let app = app(Limits::default());
    let (response, _, text) = call(
        &app,
        request(
            "GET",
            "/you-said-we-did?utm_source=newsletter",
            None,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    let (response, _, text) = call(
        &app,
        request("GET", "/you-said-we-did?limit=lots", None, Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{text}");
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"),
        "{text}"
    );
    assert!(text.contains("<html") && text.contains("limit"), "{text}");
}

#[tokio::test]
async fn a_sane_request_id_is_kept_and_anything_else_replaced() {
    let app = app(Limits::default());
    let mut sent = request("GET", "/healthz", None, Body::empty());
    sent.headers_mut()
        .insert("x-request-id", "lb-1234-abcd".parse().expect("header"));
    let (response, _, _) = call(&app, sent).await;
    assert_eq!(response.headers()["x-request-id"], "lb-1234-abcd");
    let mut sent = request("GET", "/healthz", None, Body::empty());
    sent.headers_mut()
        .insert("x-request-id", "<script>".parse().expect("header"));
    let (response, _, _) = call(&app, sent).await;
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

#[tokio::test]
async fn a_wrong_method_is_refused_before_the_token_is_asked_for() {
    let app = app(Limits::default());
    let (response, problem, text) = call(
        &app,
        request(Method::PUT.as_str(), "/v1/loops", None, Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{text}");
    assert_eq!(problem["code"], "method_not_allowed");
}

/// Appends `count` new loops in one append, starting at loop number `from`.
async fn append_loops(store: &SledStore, from: usize, count: usize) {
    use closeloop_domain::{Event, EventType, LoopEvent, LoopId};
    use closeloop_store::{AppendRequest, EventStore, ExpectedVersion, LoopAppend};
    let payload = LoopEvent::from_data(
        EventType::FeedbackReceived,
        serde_json::json!({"org_unit": "rxx/a", "channel": "web", "ratings": {"fft": 1}}),
    )
    .expect("valid data");
    let loops = (from..from + count)
        .map(|n| LoopAppend {
            loop_id: LoopId::parse(&format!("grow-{n}")).expect("loop id"),
            expected: ExpectedVersion::NoLoop,
            events: vec![Event {
                event_id: format!("grow-{n}"),
                source: "urn:test".to_owned(),
                time: jiff::Timestamp::now(),
                payload: payload.clone(),
                actor: None,
            }],
            requests: Vec::new(),
        })
        .collect();
    store.append(AppendRequest { loops }).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_hold_while_the_log_grows_under_them() {
    use closeloop_store::merkle::{verify_consistency, verify_inclusion};
    use closeloop_store::{EventStore, Hash};
    let app = app(Limits::default());
    append_loops(&app.state.store, 0, 300).await;
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing) = (Arc::clone(&app.state.store), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut next = 300;
            while writing.load(Ordering::SeqCst) {
                append_loops(&store, next, 37).await;
                next += 37;
            }
        })
    };
    let hash = |value: &Value| -> Hash { serde_json::from_value(value.clone()).expect("hash") };
    for round in 0..300 {
        let head = app.state.store.head();
        let (response, proof, text) = call(
            &app,
            request(
                "GET",
                &format!("/v1/audit/proof/inclusion?position={head}"),
                Some(AUDITOR),
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "round {round}: {text}");
        let path: Vec<Hash> = proof["path"]
            .as_array()
            .expect("path")
            .iter()
            .map(hash)
            .collect();
        let upto = proof["upto"].as_u64().expect("upto");
        assert!(
            verify_inclusion(
                &hash(&proof["hash"]),
                head - 1,
                upto,
                &path,
                &hash(&proof["head_hash"])
            ),
            "round {round}: the inclusion proof does not verify"
        );
        let (response, proof, text) = call(
            &app,
            request(
                "GET",
                &format!("/v1/audit/proof/consistency?from={}", head / 2),
                Some(AUDITOR),
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "round {round}: {text}");
        let path: Vec<Hash> = proof["path"]
            .as_array()
            .expect("path")
            .iter()
            .map(hash)
            .collect();
        assert!(
            verify_consistency(
                head / 2,
                proof["upto"].as_u64().expect("upto"),
                &hash(&proof["from_head_hash"]),
                &hash(&proof["head_hash"]),
                &path
            ),
            "round {round}: the consistency proof does not verify"
        );
    }
    writing.store(false, Ordering::SeqCst);
    writer.await.expect("writer");
}

#[tokio::test]
async fn a_read_waits_only_for_the_position_it_names_and_a_halted_projector_is_reported() {
    let app = app(Limits::default());
    // A write answers with its position.
    let (response, body, text) = call(
        &app,
        request(
            "POST",
            "/v1/feedback",
            Some(STAFF),
            Body::from(r#"{"org_unit": "rxx/a", "channel": "web", "ratings": {"fft": 1}}"#),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED, "{text}");
    assert_eq!(
        response.headers()["closeloop-position"]
            .to_str()
            .expect("ascii"),
        body["position"].to_string()
    );
    // No projector runs here, so the read models stay behind the log: a read that names an
    // earlier position of its own is answered at once instead of waiting for the head.
    append_loops(&app.state.store, 0, 3).await;
    let mut read = request("GET", "/v1/loops", Some(STAFF), Body::empty());
    read.headers_mut()
        .insert("closeloop-position", header::HeaderValue::from_static("0"));
    let (response, _, text) = call(&app, read).await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    let mut garbled = request("GET", "/v1/loops", Some(STAFF), Body::empty());
    garbled.headers_mut().insert(
        "closeloop-position",
        header::HeaderValue::from_static("soon"),
    );
    assert_eq!(
        call(&app, garbled).await.0.status(),
        StatusCode::BAD_REQUEST
    );

    // A projector that stopped on a failure: not ready, and reads that need what it never
    // applied are refused at once with Retry-After.
    app.state.projections.halt();
    let (response, body, _) = call(&app, request("GET", "/readyz", None, Body::empty())).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["projector"]["status"], "failed", "{body}");
    assert_eq!(body["checks"]["projector"]["lag"], 4, "{body}");
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    let (response, body, _) = call(
        &app,
        request("GET", "/v1/loops", Some(STAFF), Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable");
    assert!(response.headers().contains_key(header::RETRY_AFTER));
}

/// A store that counts how often a loop is read, to show what a request did not read.
struct Counting {
    inner: SledStore,
    loop_reads: AtomicUsize,
}

impl EventStore for Counting {
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendOutcome, AppendError>> + Send {
        self.inner.append(request)
    }

    fn read_loop(
        &self,
        loop_id: &LoopId,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send {
        self.loop_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_loop(loop_id)
    }

    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send {
        self.inner.read_all(after, limit)
    }

    fn head(&self) -> u64 {
        self.inner.head()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.subscribe()
    }

    fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready()
    }

    fn with_merkle<R>(&self, f: impl FnOnce(&MerkleIndex) -> R) -> R {
        self.inner.with_merkle(f)
    }

    fn lookup(
        &self,
        source: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<Committed>, StoreError>> + Send {
        self.inner.lookup(source, event_id)
    }
}

/// A clock that moves on a minute each time it is read, so that loops closed one after the
/// other have distinct, ordered `closed_at` times.
fn stepping_clock() -> Clock {
    let start = "2026-11-23T10:00:00Z"
        .parse::<Timestamp>()
        .expect("a time")
        .as_second();
    let minutes = Arc::new(AtomicI64::new(0));
    Arc::new(move || {
        let step = minutes.fetch_add(1, Ordering::SeqCst);
        Timestamp::from_second(start + 60 * step).expect("a time in range")
    })
}

/// An app over a [`Counting`] store with its projector running, for the public page.
fn public_app(limits: Limits) -> App<Counting> {
    public_app_with(limits, false)
}

/// [`public_app`], showing stories only once staff approved them when `approval` is on.
fn public_app_with(limits: Limits, approval: bool) -> App<Counting> {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = test_keys();
    let inner = keyed_store(dir.path(), &keys);
    let store = Counting {
        inner,
        loop_reads: AtomicUsize::new(0),
    };
    let app = build_with(dir, store, Some(keys), limits, stepping_clock(), approval);
    tokio::spawn(run_projector(
        Arc::clone(&app.state.store),
        Arc::clone(&app.state.projections),
        ProjectorOptions::default(),
        std::future::pending::<()>(),
    ));
    app
}

impl App<Counting> {
    fn loop_reads(&self) -> usize {
        self.state.store.loop_reads.load(Ordering::SeqCst)
    }

    /// Records a loop with a story (or only a rating) and closes it with a change.
    async fn publish(&self, id: &str, story: Option<&str>, themes: &[&str]) {
        let mut feedback = json!({"loop_id": id, "org_unit": "rxx/a", "channel": "paper",
                                  "ratings": {"fft": 2}, "themes": themes,
                                  "consent_to_publish": true});
        if let Some(story) = story {
            feedback["story"] = json!(story);
        }
        for (path, body) in [
            ("/v1/feedback".to_owned(), feedback),
            (
                format!("/v1/loops/{id}/changes"),
                json!({"by": "estates", "description": format!("Fixed {id}")}),
            ),
            (
                format!("/v1/loops/{id}/report-backs"),
                json!({"by": "pals", "message": "We told you."}),
            ),
        ] {
            let (response, _, text) = call(
                self,
                request("POST", &path, Some(STAFF), Body::from(body.to_string())),
            )
            .await;
            assert_eq!(response.status(), StatusCode::CREATED, "{path}: {text}");
        }
    }

    /// GETs a public path, with `If-None-Match` when given; also returns the loop reads it
    /// made.
    async fn public(
        &self,
        path: &str,
        if_none_match: Option<&str>,
    ) -> (Response<()>, Value, String, usize) {
        let mut sent = request("GET", path, None, Body::empty());
        if let Some(etag) = if_none_match {
            sent.headers_mut()
                .insert(header::IF_NONE_MATCH, etag.parse().expect("header"));
        }
        let before = self.loop_reads();
        let (response, json, text) = call(self, sent).await;
        (response, json, text, self.loop_reads() - before)
    }
}

fn etag_of(response: &Response<()>) -> String {
    response.headers()[header::ETAG]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// The public id of `loop_id`, as its LoopSummary says.
fn public_id<S>(app: &App<S>, loop_id: &str) -> String {
    let models = app.state.projections.try_read().expect("read models");
    let id = LoopId::parse(loop_id).expect("a loop id");
    models
        .summary(&id, Timestamp::now(), &Sla::default())
        .expect("a known loop")
        .public_id
}

/// The loops a public page lists, in order: each entry names its loop by public id only, so
/// the loop ids are found back through the read models (as staff would, from LoopSummary).
fn keys<S>(app: &App<S>, page: &Value) -> Vec<String> {
    let models = app.state.projections.try_read().expect("read models");
    page.as_array()
        .expect("an array")
        .iter()
        .map(|entry| {
            assert!(
                entry.get("loop_id").is_none(),
                "a loop id is public: {entry}"
            );
            let public_id = entry["public_id"].as_str().expect("a public id");
            ["a", "b", "c", "d", "e"]
                .into_iter()
                .find(|loop_id| {
                    LoopId::parse(loop_id)
                        .ok()
                        .and_then(|id| models.summary(&id, Timestamp::now(), &Sla::default()))
                        .is_some_and(|summary| summary.public_id == public_id)
                })
                .unwrap_or(public_id)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_public_page_is_newest_first_and_paged() {
    let app = public_app(Limits::default());
    // Closed in this order, so newest first is the reverse (and not the order of the ids).
    for id in ["a", "b", "c"] {
        app.publish(id, Some("Story"), &["noise"]).await;
    }
    let (response, page, text, _) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    assert_eq!(keys(&app, &page), ["c", "b", "a"]);
    assert_eq!(page[0]["we_did"], "Fixed c");

    let (response, page, _, _) = app.public("/v1/you-said-we-did?limit=2", None).await;
    assert_eq!(keys(&app, &page), ["c", "b"]);
    let link = response.headers()[header::LINK].to_str().expect("ascii");
    let next = link
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map(|(target, _)| target)
        .expect("a Link target");
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let (_, page, text, _) = app.public(next, None).await;
    assert_eq!(keys(&app, &page), ["a"], "{text}");

    for limit in ["0", "101", "lots"] {
        let (response, problem, text, _) = app
            .public(&format!("/v1/you-said-we-did?limit={limit}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(problem["code"], "invalid_request");
    }
    let (response, _, _, _) = app.public("/v1/you-said-we-did?limit=100", None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_public_page_shows_twenty_entries_unless_asked_for_more() {
    let app = public_app(Limits::default());
    for n in 0..21 {
        app.publish(&format!("loop-{n:02}"), None, &[]).await;
    }
    let (response, page, _, _) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(keys(&app, &page).len(), 20);
    assert!(response.headers().contains_key(header::LINK));
    let (response, page, _, _) = app.public("/v1/you-said-we-did?limit=21", None).await;
    assert_eq!(keys(&app, &page).len(), 21);
    assert!(!response.headers().contains_key(header::LINK));
}

#[tokio::test]
async fn a_matching_if_none_match_is_answered_304_without_reading_the_store() {
    let app = public_app(Limits::default());
    app.publish("a", Some("The ward was noisy"), &["noise"])
        .await;
    app.publish("b", Some("Cold food"), &["food"]).await;
    for path in [
        "/v1/you-said-we-did",
        "/you-said-we-did",
        "/v1/you-said-we-did?limit=1",
    ] {
        let (response, _, text, _) = app.public(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}: {text}");
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=30",
            "{path}"
        );
        let etag = etag_of(&response);

        let (response, _, text, reads) = app.public(path, Some(&etag)).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(text.is_empty(), "{path}: a 304 has no body: {text}");
        assert_eq!(reads, 0, "{path}: a 304 reads nothing from the store");
        assert_eq!(etag_of(&response), etag, "{path}");
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=30",
            "{path}"
        );
        // One of a list matches too; another tag does not.
        let (response, _, _, _) = app.public(path, Some(&format!("\"other\", {etag}"))).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
        let (response, _, _, _) = app.public(path, Some("W/\"other\"")).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // Each form and each page has its own tag.
    let (json_page, _, _, _) = app.public("/v1/you-said-we-did", None).await;
    let (html_page, _, _, _) = app.public("/you-said-we-did", None).await;
    let (small_page, _, _, _) = app.public("/v1/you-said-we-did?limit=1", None).await;
    let tags = [
        etag_of(&json_page),
        etag_of(&html_page),
        etag_of(&small_page),
    ];
    assert!(
        tags[0] != tags[1] && tags[0] != tags[2] && tags[1] != tags[2],
        "{tags:?}"
    );
    let (response, _, _, _) = app.public("/you-said-we-did", Some(&tags[0])).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the JSON tag does not stand for the HTML page"
    );
}

#[tokio::test]
async fn a_change_of_the_published_entries_changes_the_etag() {
    let app = public_app(Limits::default());
    app.publish("a", Some("Story"), &["noise"]).await;
    let (response, _, _, _) = app.public("/v1/you-said-we-did", None).await;
    let before = etag_of(&response);
    app.publish("b", Some("Another"), &["food"]).await;
    let (response, page, text, _) = app.public("/v1/you-said-we-did", Some(&before)).await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    assert_eq!(keys(&app, &page), ["b", "a"]);
    assert_ne!(etag_of(&response), before);
}

#[tokio::test]
async fn stories_are_read_from_the_store_once_then_from_the_cache() {
    let app = public_app(Limits::default());
    app.publish("a", Some("Call 07700 900123"), &["noise"])
        .await;
    app.publish("b", Some("Cold food"), &["food"]).await;
    let (response, first, _, reads) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(reads, 2, "one read per entry of a cold page");
    assert_eq!(app.state.stories.len(), 2);
    // Without If-None-Match, in either form: the stories come from the cache.
    let (_, second, _, reads) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(reads, 0, "the second request read the store");
    assert_eq!(first, second);
    assert!(
        second[1]["you_said"]
            .as_str()
            .is_some_and(|story| story.contains("[redacted]") && !story.contains("07700")),
        "{second}"
    );
    let (_, _, html, reads) = app.public("/you-said-we-did", None).await;
    assert_eq!(reads, 0, "the HTML page read the store");
    assert!(html.contains("Cold food"), "{html}");
    // A story dropped from the cache (as an erasure does) is read again.
    app.state.stories.invalidate(
        &closeloop_projections::PublicKey::parse(&public_id(&app, "a")).expect("a key"),
    );
    let (_, _, _, reads) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(reads, 1);
}

#[tokio::test]
async fn an_entry_without_a_story_is_shown_by_its_themes() {
    let app = public_app(Limits::default());
    app.publish("quiet", None, &["noise", "night"]).await;
    let (response, page, _, _) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(page[0]["you_said"], "");
    let (_, _, html, _) = app.public("/you-said-we-did", None).await;
    assert!(
        html.contains("You told us about noise, night") && !html.contains("<h2>You said</h2>"),
        "{html}"
    );
}

#[tokio::test]
async fn the_public_page_is_shed_beyond_its_limit_but_a_304_is_not() {
    let one = ClassLimit {
        concurrent: 1,
        queue: 0,
        retry_after: 2,
    };
    let app = public_app(Limits::default().with(Class::Public, one));
    app.publish("a", Some("Story"), &["noise"]).await;
    let (response, _, _, _) = app.public("/v1/you-said-we-did", None).await;
    let etag = etag_of(&response);
    let (response, _, _, _) = app.public("/you-said-we-did", None).await;
    let html_etag = etag_of(&response);

    let turn = app
        .state
        .limits
        .of(Class::Public)
        .try_acquire()
        .expect("the only turn");
    let (response, problem, text, reads) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    assert_eq!(problem["code"], "unavailable");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("public page")),
        "{text}"
    );
    assert_eq!(reads, 0);
    let (response, _, text, _) = app.public("/you-said-we-did", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert!(text.contains("<html"), "the page sheds as HTML: {text}");

    // A request that costs nothing needs no turn.
    let (response, _, _, _) = app.public("/v1/you-said-we-did", Some(&etag)).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    let (response, _, _, _) = app.public("/you-said-we-did", Some(&html_etag)).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    // Other classes are not affected, and the turn given back admits the next one.
    let (response, _, text) = call(
        &app,
        request("GET", "/v1/audit/verify", Some(AUDITOR), Body::empty()),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    drop(turn);
    let (response, _, text, _) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
}

/// On a runtime with one worker thread, `/healthz` is answered while `GET /v1/audit/verify`
/// walks 200,000 events: the walk gives the thread back between its pages (and hashes them on
/// the blocking pool), so it never holds the only worker.
#[tokio::test(flavor = "current_thread")]
async fn health_is_answered_while_a_long_verify_runs_on_the_only_worker() {
    let app = app(Limits::default());
    for batch in 0..200 {
        append_loops(&app.state.store, batch * 1000, 1000).await;
    }
    let verify = tokio::spawn({
        let router = app.router.clone();
        async move {
            let response = router
                .oneshot(request(
                    "GET",
                    "/v1/audit/verify",
                    Some(AUDITOR),
                    Body::empty(),
                ))
                .await
                .expect("infallible");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            serde_json::from_slice::<Value>(&bytes).expect("json")
        }
    });
    // Let the verification start before asking for health.
    tokio::task::yield_now().await;
    let (response, body, _) = call(&app, request("GET", "/healthz", None, Body::empty())).await;
    assert_eq!(
        (response.status(), &body["status"]),
        (StatusCode::OK, &Value::from("ok"))
    );
    assert!(
        !verify.is_finished(),
        "the verification was expected to be still walking when /healthz answered"
    );
    let report = verify.await.expect("verify task");
    assert_eq!(
        (report["ok"].as_bool(), report["events"].as_u64()),
        (Some(true), Some(200_000))
    );
}

/// Adapters never depend on each other (ARCHITECTURE.md): the API knows the NATS side only
/// through its own `IngestAdmin` trait, which the binary implements.
#[test]
fn neither_adapter_crate_depends_on_the_other() {
    let depends_on = |manifest: &str, krate: &str| {
        manifest.lines().map(str::trim_start).any(|line| {
            line.starts_with(&format!("{krate}.")) || line.starts_with(&format!("{krate} "))
        })
    };
    let api = include_str!("../Cargo.toml");
    let ingest = include_str!("../../closeloop-ingest/Cargo.toml");
    assert!(
        !depends_on(api, "closeloop-ingest"),
        "closeloop-api depends on closeloop-ingest"
    );
    assert!(
        !depends_on(ingest, "closeloop-api"),
        "closeloop-ingest depends on closeloop-api"
    );
    assert!(
        depends_on(api, "closeloop-store"),
        "the check reads the manifests it means to"
    );
}

/// POSTs `body` as `token` and returns status and JSON.
async fn post_json<S>(app: &App<S>, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let (response, json, _) = call(
        app,
        request("POST", path, Some(token), Body::from(body.to_string())),
    )
    .await;
    (response.status(), json)
}

/// Approves the story of `loop_id` as staff with `body`, and waits until the read models have
/// the approval.
async fn approve(app: &App<Counting>, loop_id: &str, body: Value) {
    let path = format!("/v1/loops/{loop_id}/story-approvals");
    let (status, answer) = post_json(app, &path, STAFF, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let position = answer["position"].as_u64().expect("a position");
    let applied = app
        .state
        .projections
        .wait_for(position, Duration::from_secs(5));
    assert!(applied.await, "the approval at {position} was not applied");
}

#[tokio::test]
async fn with_approval_required_a_story_is_public_only_once_approved_and_as_edited() {
    let app = public_app_with(Limits::default(), true);
    app.publish(
        "a",
        Some("Nurse Priya on ward 7 was rude to my mum"),
        &["attitude"],
    )
    .await;
    let (_, page, text, _) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(
        page[0]["you_said"], "",
        "an unapproved story is not shown: {text}"
    );
    let before = page.clone();

    approve(
        &app,
        "a",
        json!({"by": "pals", "story": "A nurse on the ward was rude to my mum"}),
    )
    .await;
    let (_, page, text, _) = app.public("/v1/you-said-we-did", None).await;
    assert_ne!(page, before);
    assert_eq!(
        page[0]["you_said"], "A nurse on the ward was rude to my mum",
        "{text}"
    );
    assert!(!text.contains("Priya"), "{text}");

    let (status, body) = post_json(
        &app,
        "/v1/loops/a/story-approvals",
        LEADER,
        json!({"by": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn without_approval_required_an_approval_with_an_edit_still_replaces_the_story() {
    let app = public_app(Limits::default());
    app.publish("a", Some("The porter Dave was great"), &["staff"])
        .await;
    approve(
        &app,
        "a",
        json!({"by": "pals", "story": "The porter was great"}),
    )
    .await;
    let (_, page, text, _) = app.public("/v1/you-said-we-did", None).await;
    assert_eq!(page[0]["you_said"], "The porter was great", "{text}");
}

#[tokio::test]
async fn an_erasure_names_exactly_one_loop_or_one_contact_and_says_what_is_wrong() {
    let app = app(Limits::default());
    for (body, status, code) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_data"),
        (
            json!({"loop_id": "a", "contact": "x@example.org"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_data",
        ),
        (
            json!({"contact": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_data",
        ),
        (
            json!({"contact": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_data",
        ),
        (
            json!({"contact": "x".repeat(2000)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_data",
        ),
        (
            json!({"loop_id": "no-such-loop"}),
            StatusCode::NOT_FOUND,
            "unknown_loop",
        ),
        (
            json!({"name": "Jo"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_data",
        ),
    ] {
        let (got, problem) = post_json(&app, "/v1/erasures", ADMIN, body.clone()).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
    }
    let (got, answer) = post_json(
        &app,
        "/v1/erasures",
        ADMIN,
        json!({"contact": "nobody@example.org"}),
    )
    .await;
    assert_eq!((got, answer), (StatusCode::OK, json!({"erased_loops": 0})));
}

//! "Who looked": reads of personal data land in the access log before they are answered, and
//! auditors read the log at `GET /v1/audit/access`.

use closeloop_access::{AccessEntry, AccessLog, AccessLogError, AccessQuery};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::*;

/// An app over a sled store with its projector running, so loops can be read back.
fn reading_app(access: Arc<dyn AccessLog>) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &SledStoreOptions::default()).expect("store");
    let app = build_with_access(dir, store, Limits::default(), system_clock(), access);
    tokio::spawn(run_projector(
        Arc::clone(&app.state.store),
        Arc::clone(&app.state.projections),
        ProjectorOptions::default(),
        std::future::pending::<()>(),
    ));
    app
}

fn logged_app() -> App {
    reading_app(Arc::new(closeloop_access::MemoryAccessLog::default()))
}

/// The credential id (`role:8 hex digits`) the log names a token's holder by.
fn id_of(app: &App, token: &str) -> String {
    app.state
        .tokens
        .credential_of(token)
        .expect("a configured token")
        .id
}

async fn feedback(app: &App, loop_id: &str) {
    let body = json!({"loop_id": loop_id, "org_unit": "rxx/a", "channel": "web",
                      "story": "The nurse on ward 7 was kind", "author": {"name": "Zoë O'Brien", "contact": "zoe@example.org"}});
    let (response, _, text) = call(
        app,
        request(
            "POST",
            "/v1/feedback",
            Some(STAFF),
            Body::from(body.to_string()),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED, "{text}");
}

async fn get(app: &App, path: &str, token: &str) -> (StatusCode, Value, String) {
    let (response, json, text) = call(app, request("GET", path, Some(token), Body::empty())).await;
    (response.status(), json, text)
}

/// The access log as the auditor reads it at `path` (`/v1/audit/access?…`).
async fn access_lines(app: &App, path: &str) -> Vec<Value> {
    let (response, _, text) = call(app, request("GET", path, Some(AUDITOR), Body::empty())).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}: {text}");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn an_auditor_sees_who_read_a_loop_and_nothing_personal() {
    let app = logged_app();
    feedback(&app, "loop-1").await;
    let (status, body, text) = get(&app, "/v1/loops/loop-1", STAFF).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(body["loop_id"], "loop-1");

    let lines = access_lines(&app, "/v1/audit/access").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let keys: Vec<&str> = line
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["at", "actor", "role", "loop_id", "what"]);
    assert_eq!(line["actor"], id_of(&app, STAFF));
    assert_eq!(line["role"], "staff");
    assert_eq!(line["loop_id"], "loop-1");
    assert_eq!(line["what"], "loop");
    assert!(
        line["at"]
            .as_str()
            .expect("a time")
            .parse::<Timestamp>()
            .is_ok()
    );
    let raw = line.to_string();
    for secret in [STAFF, "Zoë", "zoe@example.org", "nurse"] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
}

#[tokio::test]
async fn auditors_and_admins_reads_are_recorded_and_leaders_are_not() {
    let app = logged_app();
    feedback(&app, "loop-1").await;
    for token in [LEADER, AUDITOR, ADMIN] {
        let (status, _, text) = get(&app, "/v1/loops/loop-1", token).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let lines = access_lines(&app, "/v1/audit/access").await;
    let roles: Vec<&str> = lines
        .iter()
        .map(|line| line["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["auditor", "admin"]);
}

#[tokio::test]
async fn only_auditors_and_admins_read_the_access_log() {
    let app = logged_app();
    for (token, expected) in [
        (STAFF, StatusCode::FORBIDDEN),
        (LEADER, StatusCode::FORBIDDEN),
        (AUDITOR, StatusCode::OK),
        (ADMIN, StatusCode::OK),
    ] {
        let (status, body, text) = get(&app, "/v1/audit/access", token).await;
        assert_eq!(status, expected, "{text}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(body["code"], "forbidden");
        }
    }
}

#[tokio::test]
async fn a_loop_that_is_not_there_is_not_a_read() {
    let app = logged_app();
    let (status, _, _) = get(&app, "/v1/loops/no-such-loop", STAFF).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(access_lines(&app, "/v1/audit/access").await.is_empty());
}

#[tokio::test]
async fn an_event_export_is_one_entry_across_loops() {
    let app = logged_app();
    feedback(&app, "loop-1").await;
    feedback(&app, "loop-2").await;
    let (status, _, text) = get(&app, "/v1/events?after=0", AUDITOR).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text.lines().count(), 2);
    let lines = access_lines(&app, "/v1/audit/access").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["what"], "events");
    assert_eq!(lines[0]["loop_id"], Value::Null);
    assert_eq!(lines[0]["actor"], id_of(&app, AUDITOR));
}

#[tokio::test]
async fn filters_and_pages_find_each_read_once() {
    let app = logged_app();
    feedback(&app, "loop-a").await;
    feedback(&app, "loop-b").await;
    for (loop_id, token) in [
        ("loop-a", STAFF),
        ("loop-b", STAFF),
        ("loop-a", AUDITOR),
        ("loop-a", STAFF),
    ] {
        let (status, _, text) = get(&app, &format!("/v1/loops/{loop_id}"), token).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    let staff = id_of(&app, STAFF);
    let of_a = access_lines(&app, "/v1/audit/access?loop_id=loop-a").await;
    assert_eq!(of_a.len(), 3);
    assert!(of_a.iter().all(|line| line["loop_id"] == "loop-a"));
    let by_staff = access_lines(&app, &format!("/v1/audit/access?actor={staff}")).await;
    let loops: Vec<&str> = by_staff
        .iter()
        .map(|line| line["loop_id"].as_str().expect("loop id"))
        .collect();
    assert_eq!(loops, ["loop-a", "loop-b", "loop-a"]);
    let both = access_lines(
        &app,
        &format!("/v1/audit/access?actor={staff}&loop_id=loop-b"),
    )
    .await;
    assert_eq!(both.len(), 1);

    // A page at a time, each starting after the last `at` of the one before.
    let mut paged = Vec::new();
    let mut path = "/v1/audit/access?limit=1".to_owned();
    loop {
        let page = access_lines(&app, &path).await;
        assert!(page.len() <= 1);
        let Some(last) = page.last() else { break };
        let at = last["at"].as_str().expect("a time").to_owned();
        path = format!("/v1/audit/access?limit=1&after={}", at.replace('+', "%2B"));
        paged.extend(page);
    }
    assert_eq!(paged, access_lines(&app, "/v1/audit/access").await);
    assert_eq!(paged.len(), 4);
}

#[tokio::test]
async fn bad_parameters_are_problems_that_say_how_to_write_them() {
    let app = logged_app();
    assert_eq!(
        access_lines(&app, "/v1/audit/access?limit=1000")
            .await
            .len(),
        0
    );
    for (query, expected) in [
        ("limit=0", "1 to 1000"),
        ("limit=1001", "1 to 1000"),
        ("limit=-1", "whole number"),
        ("after=last-tuesday", "RFC 3339"),
        ("loop_id=no%20spaces", "loop_id"),
        ("who=me", "unknown query parameter"),
    ] {
        let (response, problem, text) = call(
            &app,
            request(
                "GET",
                &format!("/v1/audit/access?{query}"),
                Some(AUDITOR),
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{query}: {text}"
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(problem["code"], "invalid_request");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(expected), "{query}: {detail}");
    }
}

/// An access log that cannot take entries, as when its queue stays full or its disk failed.
#[derive(Debug)]
struct Refusing(fn() -> AccessLogError);

impl AccessLog for Refusing {
    fn record(&self, _entries: Vec<AccessEntry>) -> BoxFuture<'_, Result<(), AccessLogError>> {
        futures::future::ready(Err((self.0)())).boxed()
    }

    fn query(
        &self,
        _query: AccessQuery,
    ) -> BoxFuture<'_, Result<Vec<AccessEntry>, AccessLogError>> {
        futures::future::ready(Ok(Vec::new())).boxed()
    }

    fn prune(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

#[tokio::test]
async fn a_read_that_cannot_be_recorded_shows_nothing() {
    for refusal in [(|| AccessLogError::Busy) as fn() -> AccessLogError, || {
        AccessLogError::Failed("No space left on device (os error 28)".to_owned())
    }] {
        let app = reading_app(Arc::new(Refusing(refusal)));
        feedback(&app, "loop-1").await;
        for (path, token) in [("/v1/loops/loop-1", STAFF), ("/v1/events", AUDITOR)] {
            let (response, problem, text) =
                call(&app, request("GET", path, Some(token), Body::empty())).await;
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{path}: {text}"
            );
            assert!(response.headers().contains_key(header::RETRY_AFTER));
            assert_eq!(problem["code"], "unavailable");
            for leak in ["nurse", "Zoë", "os error"] {
                assert!(!text.contains(leak), "{path}: {leak} in {text}");
            }
        }
        // A leader's read shows no personal data, so it needs no record.
        let (status, _, text) = get(&app, "/v1/loops/loop-1", LEADER).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
}

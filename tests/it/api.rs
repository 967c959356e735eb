//! The HTTP API, endpoint by endpoint, role by role, error code by error code.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::Service;

pub const STAFF: &str = "staff-token-e2e";
pub const AUDITOR: &str = "auditor-token-e2e";
pub const LEADER: &str = "leader-token-e2e";
pub const ADMIN: &str = "admin-token-e2e";

/// A client of one running service.
pub struct Api {
    service: Service,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// What came back: status, headers we look at, and the body as JSON (or text).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub etag: Option<String>,
    pub replayed: bool,
    pub body: Value,
    pub text: String,
}

impl Api {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"))
    }

    /// Starts the service on a data directory prepared by the test.
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with_nats(dir, "off")
    }

    /// Starts the service on `dir` with NATS at `nats_url`.
    pub fn start_with_nats(dir: tempfile::TempDir, nats_url: &str) -> Self {
        let service = Service::start_with_nats(dir.path(), nats_url);
        Self {
            service,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut request = self.http.request(method, self.service.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("ascii").to_owned())
        };
        let content_type = header("content-type").unwrap_or_default();
        let etag = header("etag");
        let replayed = header("idempotent-replayed").is_some();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            etag,
            replayed,
            body,
            text,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(
            Method::POST,
            path,
            Some(STAFF),
            &[],
            Some(&body.to_string()),
        )
        .await
    }

    /// The address the service listens on, for raw HTTP.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.service.addr
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), &[], None).await
    }
}

fn feedback(loop_id: &str) -> Value {
    json!({"loop_id": loop_id, "org_unit": "rxx/site-a/ward-7", "channel": "paper",
           "story": "The night staff were kind but the ward was noisy.", "ratings": {"fft": 2},
           "themes": ["noise"], "consent_to_publish": true})
}

/// Asserts a problem+json answer with this status and code.
pub fn check_problem(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text);
    assert_eq!(
        answer.content_type, "application/problem+json",
        "{}",
        answer.text
    );
    assert_eq!(answer.body["code"], code, "{}", answer.text);
    assert_eq!(answer.body["status"], status);
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_loop_goes_from_feedback_to_report_back() {
    let api = Api::start();
    let created = api.post("/v1/feedback", &feedback("ward7-001")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["loop_id"], "ward7-001");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.etag.as_deref(), Some("\"1\""));

    let steps = [
        (
            "acknowledgements",
            json!({"by": "pals", "message": "Thank you, we have logged this."}),
        ),
        (
            "responses",
            json!({"by": "ward manager", "text": "We are looking at night-time noise."}),
        ),
        (
            "actions",
            json!({"by": "ward manager", "description": "Soft-close bins", "owner": "estates", "due": "2026-12-18"}),
        ),
        (
            "changes",
            json!({"by": "estates", "description": "Soft-close bins fitted on ward 7"}),
        ),
        (
            "report-backs",
            json!({"by": "pals", "message": "We fitted soft-close bins.", "channel": "email"}),
        ),
    ];
    for (version, (step, body)) in (2..).zip(steps) {
        let answer = api
            .post(&format!("/v1/loops/ward7-001/{step}"), &body)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{step}: {}",
            answer.text
        );
        assert_eq!(answer.body["version"], version, "{step}");
        assert_eq!(answer.etag, Some(format!("\"{version}\"")));
    }
    let closed = api
        .post(
            "/v1/loops/ward7-001/responses",
            &json!({"by": "x", "text": "y"}),
        )
        .await;
    check_problem(&closed, 422, "loop_closed");
    let reopened = api
        .post(
            "/v1/loops/ward7-001/reopenings",
            &json!({"by": "pals", "reason": "Bins are loud again"}),
        )
        .await;
    assert_eq!(reopened.status, StatusCode::CREATED, "{}", reopened.text);
    let no_outcome = api
        .post(
            "/v1/loops/ward7-001/report-backs",
            &json!({"by": "pals", "message": "done"}),
        )
        .await;
    check_problem(&no_outcome, 422, "no_outcome");
}

#[tokio::test]
async fn every_rule_and_malformed_request_has_its_problem() {
    let api = Api::start();
    api.post("/v1/feedback", &feedback("r-1")).await;
    check_problem(
        &api.post("/v1/feedback", &feedback("r-1")).await,
        422,
        "loop_exists",
    );
    check_problem(
        &api.post(
            "/v1/loops/nobody/responses",
            &json!({"by": "a", "text": "b"}),
        )
        .await,
        404,
        "unknown_loop",
    );
    api.post("/v1/loops/r-1/acknowledgements", &json!({"by": "pals"}))
        .await;
    check_problem(
        &api.post("/v1/loops/r-1/acknowledgements", &json!({"by": "pals"}))
            .await,
        422,
        "already_acknowledged",
    );
    check_problem(
        &api.post("/v1/loops/r-1/responses", &json!({"by": "pals"}))
            .await,
        422,
        "invalid_data",
    );
    check_problem(
        &api.post(
            "/v1/feedback",
            &json!({"org_unit": "rxx", "channel": "fax", "story": "x"}),
        )
        .await,
        422,
        "invalid_data",
    );
    check_problem(
        &api.post(
            "/v1/feedback",
            &json!({"loop_id": "bad id!", "org_unit": "rxx", "channel": "web", "story": "x"}),
        )
        .await,
        422,
        "invalid_data",
    );
    check_problem(
        &api.post("/v1/feedback", &json!([1, 2])).await,
        422,
        "invalid_data",
    );
    let broken = api
        .call(
            Method::POST,
            "/v1/feedback",
            Some(STAFF),
            &[],
            Some("{\"story\": "),
        )
        .await;
    check_problem(&broken, 400, "invalid_request");
    check_problem(
        &api.post("/v1/loops/r-1/high-fives", &json!({})).await,
        404,
        "not_found",
    );
    // Nothing refused was stored: the loop is still at version 2.
    let next = api
        .post("/v1/loops/r-1/responses", &json!({"by": "a", "text": "b"}))
        .await;
    assert_eq!(next.body["version"], 3, "{}", next.text);
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let api = Api::start();
    let none = api
        .call(
            Method::POST,
            "/v1/feedback",
            None,
            &[],
            Some(&feedback("t-1").to_string()),
        )
        .await;
    check_problem(&none, 401, "unauthorized");
    let wrong = api
        .call(
            Method::POST,
            "/v1/feedback",
            Some("not-a-token"),
            &[],
            Some(&feedback("t-1").to_string()),
        )
        .await;
    check_problem(&wrong, 401, "unauthorized");
    let auditor = api
        .call(
            Method::POST,
            "/v1/feedback",
            Some(AUDITOR),
            &[],
            Some(&feedback("t-1").to_string()),
        )
        .await;
    check_problem(&auditor, 403, "forbidden");
    check_problem(&api.get("/v1/events", STAFF).await, 403, "forbidden");
    check_problem(
        &api.call(Method::GET, "/v1/audit/verify", None, &[], None)
            .await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn if_match_and_idempotency_keys_protect_against_races_and_retries() {
    let api = Api::start();
    let key = [("idempotency-key", "5f0c3a52-retry-me")];
    let body =
        json!({"org_unit": "rxx/site-b", "channel": "phone", "story": "Nobody called back."})
            .to_string();
    let first = api
        .call(Method::POST, "/v1/feedback", Some(STAFF), &key, Some(&body))
        .await;
    let retry = api
        .call(Method::POST, "/v1/feedback", Some(STAFF), &key, Some(&body))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text);
    assert_eq!(
        retry.body, first.body,
        "a retried request gets the original answer"
    );
    assert!(retry.replayed && !first.replayed);
    let loop_id = first.body["loop_id"]
        .as_str()
        .expect("generated loop id")
        .to_owned();

    let path = format!("/v1/loops/{loop_id}/responses");
    let reply = json!({"by": "pals", "text": "Sorry, we will call today."}).to_string();
    let reply_with = |if_match: &'static str| {
        let (api, path, reply) = (&api, &path, &reply);
        async move {
            api.call(
                Method::POST,
                path,
                Some(STAFF),
                &[("if-match", if_match)],
                Some(reply),
            )
            .await
        }
    };
    let stale = reply_with("\"7\"").await;
    check_problem(&stale, 409, "version_conflict");
    let fresh = reply_with("1").await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.text);
    let garbled = reply_with("soon").await;
    check_problem(&garbled, 400, "invalid_request");
}

#[tokio::test]
async fn one_change_lands_on_every_loop_or_none() {
    let api = Api::start();
    for id in ["c-1", "c-2"] {
        api.post("/v1/feedback", &feedback(id)).await;
    }
    let change = |ids: Value| json!({"by": "estates", "description": "Quieter bins on every ward", "loop_ids": ids});
    let refused = api
        .post("/v1/changes", &change(json!(["c-1", "c-404"])))
        .await;
    check_problem(&refused, 404, "unknown_loop");
    check_problem(
        &api.post("/v1/changes", &change(json!([]))).await,
        422,
        "invalid_data",
    );
    let done = api
        .post("/v1/changes", &change(json!(["c-1", "c-2"])))
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{}", done.text);
    let change_id = done.body["change_id"].as_str().expect("change_id");
    assert_eq!(
        done.body["loops"][0]["version"], 2,
        "c-1 was not touched by the refused request"
    );

    let log = api.get("/v1/events", AUDITOR).await;
    assert_eq!(log.content_type, "application/x-ndjson");
    let lines: Vec<Value> = log
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4);
    for line in &lines[2..] {
        assert_eq!(line["type"], "org.closeloop.loop.change_made");
        assert_eq!(line["data"]["change_id"], change_id);
    }
    let tail = api.get("/v1/events?after=1&limit=2", AUDITOR).await;
    let positions: Vec<u64> = tail
        .text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, [2, 3]);

    let verified = api.get("/v1/audit/verify", AUDITOR).await;
    assert_eq!(verified.body["ok"], true, "{}", verified.text);
    assert_eq!(verified.body["events"], 4);
    check_problem(
        &api.get("/v1/audit/verify?upto=99", AUDITOR).await,
        400,
        "invalid_request",
    );
}

/// The name `/assets/{file}` serves the committed stylesheet under: `nhsuk-` and the first 8
/// hex digits of its SHA-256.
fn stylesheet_file() -> String {
    use sha2::Digest;
    let css = include_bytes!("../../crates/closeloop-api/assets/nhsuk.css");
    let digest = sha2::Sha256::digest(css);
    let hash: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("nhsuk-{hash}.css")
}

#[tokio::test]
async fn the_openapi_document_matches_the_served_routes() {
    let api = Api::start();
    let document = api
        .call(Method::GET, "/v1/openapi.json", None, &[], None)
        .await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{}", document.text);
    for (path, item) in paths {
        let concrete = if path == "/assets/images/{file}" {
            path.replace("{file}", "favicon.svg")
        } else {
            path.replace("{loop_id}", "some-loop")
                .replace("{file}", &stylesheet_file())
        };
        for method in item.as_object().expect("path item").keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let answer = api.call(method.clone(), &concrete, None, &[], None).await;
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_ne!(
                answer.body["code"], "not_found",
                "{method} {path} is documented but not served"
            );
        }
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let api = Api::start();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let answer = api
            .call(
                Method::GET,
                "/v1/loops",
                None,
                &[("authorization", &format!("{scheme} {LEADER}"))],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{scheme}: {}", answer.text);
    }
}

/// The first line a raw HTTP/1.1 request gets back.
async fn first_status_line(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the head");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .expect("read the answer");
    line
}

/// The status line and headers a raw HTTP/1.1 request gets back.
async fn answer_head(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the head");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).await.expect("read the answer");
        if read == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

#[tokio::test]
async fn a_refused_request_is_answered_before_its_body_is_asked_for() {
    let api = Api::start();
    // With `Expect: 100-continue` the server says "100 Continue" only once something reads
    // the body; a refusal must come first, without it. The body is never sent.
    let head = |authorization: &str| {
        format!(
            "POST /v1/feedback HTTP/1.1\r\nHost: test\r\n{authorization}Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    let anonymous = first_status_line(api.addr(), &head("")).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let leader = first_status_line(
        api.addr(),
        &head(&format!("Authorization: Bearer {LEADER}\r\n")),
    )
    .await;
    assert!(leader.starts_with("HTTP/1.1 403"), "{leader}");
    let staff = first_status_line(
        api.addr(),
        &head(&format!("Authorization: Bearer {STAFF}\r\n")),
    )
    .await;
    assert!(staff.starts_with("HTTP/1.1 100"), "{staff}");
}

#[tokio::test]
async fn errors_carry_a_request_id_and_503s_say_when_to_try_again() {
    let api = Api::start();
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", api.addr());
    let wrong_method = client
        .delete(url("/v1/loops"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.headers().contains_key("allow"));
    let id = wrong_method.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = wrong_method.json().await.expect("json");
    assert_eq!(problem["request_id"], id.as_str());

    // A body over the limit is refused from its Content-Length, before it is read. The body
    // is not sent: a client still writing 2 MiB when the refusal comes would see a broken
    // pipe instead of the answer.
    let too_big = answer_head(
        api.addr(),
        &format!(
            "POST /v1/feedback HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {STAFF}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2 * 1024 * 1024
        ),
    )
    .await
    .to_ascii_lowercase();
    assert!(too_big.starts_with("http/1.1 413"), "{too_big}");
    assert!(
        too_big.contains("content-type: application/problem+json"),
        "{too_big}"
    );

    let unknown = api.get("/v1/loops?utm_source=mail", STAFF).await;
    check_problem(&unknown, 400, "invalid_request");
    assert!(
        unknown.body["detail"]
            .as_str()
            .unwrap()
            .contains("utm_source")
    );

    // With NATS off nothing is dead-lettered: an empty list, and no dead letter to re-drive.
    // (A 503 here would invite retries that cannot help; 503s and their Retry-After are
    // checked where the service really is unavailable: shedding, a full disk.)
    let off = api.get("/v1/dead-letters", ADMIN).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text);
    assert_eq!(off.body, json!({"items": [], "next_after": null}));
    check_problem(
        &api.call(
            Method::POST,
            "/v1/dead-letters/7/retry",
            Some(ADMIN),
            &[],
            None,
        )
        .await,
        404,
        "not_found",
    );
    check_problem(
        &api.call(
            Method::POST,
            "/v1/dead-letters/0/retry",
            Some(ADMIN),
            &[],
            None,
        )
        .await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn an_idempotency_key_names_one_request_of_one_caller() {
    let api = Api::start();
    let send = |path: &'static str, token: &'static str, body: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                path,
                Some(token),
                &[("idempotency-key", "key-1")],
                Some(body),
            )
            .await
        }
    };
    let first = send(
        "/v1/feedback",
        STAFF,
        r#"{"org_unit": "rxx/a", "channel": "web", "story": "Lovely staff.", "themes": ["care"]}"#,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    // The same body, its members in another order and spaced otherwise: the same request.
    let repeat = send(
        "/v1/feedback",
        STAFF,
        r#"{"themes":["care"],"story":"Lovely staff.","channel":"web","org_unit":"rxx/a"}"#,
    )
    .await;
    assert_eq!(repeat.status, StatusCode::CREATED, "{}", repeat.text);
    assert!(repeat.replayed);
    assert_eq!(repeat.body, first.body);
    // Another person's feedback under the same key is refused, not answered with the first.
    let other = send(
        "/v1/feedback",
        STAFF,
        r#"{"org_unit": "rxx/a", "channel": "web", "story": "Nobody answered the phone."}"#,
    )
    .await;
    check_problem(&other, 422, "idempotency_key_reused");
    // Another caller's equal key is another key: its own loop.
    let admin = send(
        "/v1/feedback",
        ADMIN,
        r#"{"org_unit": "rxx/a", "channel": "web", "story": "Lovely staff.", "themes": ["care"]}"#,
    )
    .await;
    assert_eq!(admin.status, StatusCode::CREATED, "{}", admin.text);
    assert!(!admin.replayed);
    assert_ne!(admin.body["loop_id"], first.body["loop_id"]);

    // One key on an acknowledgement, then on a response, then on a change: only the first is
    // the key's request; the others are refused and nothing of them is stored.
    let loop_id = first.body["loop_id"].as_str().expect("loop id").to_owned();
    let step = |name: &str, body: Value| {
        let (api, path) = (&api, format!("/v1/loops/{loop_id}/{name}"));
        async move {
            api.call(
                Method::POST,
                &path,
                Some(STAFF),
                &[("idempotency-key", "step-key")],
                Some(&body.to_string()),
            )
            .await
        }
    };
    let ack = step("acknowledgements", json!({"by": "pals"})).await;
    assert_eq!(ack.status, StatusCode::CREATED, "{}", ack.text);
    let response = step("responses", json!({"by": "pals", "text": "Thank you"})).await;
    check_problem(&response, 422, "idempotency_key_reused");
    let change = step("changes", json!({"by": "pals", "description": "Signs"})).await;
    check_problem(&change, 422, "idempotency_key_reused");
    let detail = api.get(&format!("/v1/loops/{loop_id}"), STAFF).await;
    assert_eq!(detail.body["version"], 2, "{}", detail.text);
    assert_eq!(detail.body["stage"], "acknowledged");
}

#[tokio::test]
async fn an_operator_may_lower_the_field_limits_but_not_raise_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let service =
        crate::Service::start_with_env(dir.path(), "off", &[("CLOSELOOP_MAX_THEMES", "2")]);
    let post = |themes: Value| {
        let body =
            json!({"org_unit": "rxx/a", "channel": "web", "story": "Fine.", "themes": themes});
        let url = service.url("/v1/feedback");
        async move {
            reqwest::Client::new()
                .post(url)
                .bearer_auth(STAFF)
                .json(&body)
                .send()
                .await
                .expect("request")
        }
    };
    assert_eq!(post(json!(["a", "b"])).await.status(), StatusCode::CREATED);
    let refused = post(json!(["a", "b", "c"])).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["code"], "invalid_data");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("themes"),
        "{problem}"
    );
    drop(service);

    // Above the documented default: refused at start, with exit status 2 and the reason.
    let output = std::process::Command::new(crate::closeloop_bin())
        .arg("serve")
        .env("CLOSELOOP_DATA_DIR", dir.path())
        .env("CLOSELOOP_HTTP_ADDR", "127.0.0.1:0")
        .env("CLOSELOOP_NATS_URL", "off")
        .env("CLOSELOOP_MAX_THEMES", "500")
        .output()
        .expect("run closeloop serve");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_themes"), "{stderr}");
}

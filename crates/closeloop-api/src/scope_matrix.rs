//! Least privilege, as one table: every role, unscoped and scoped to a subtree, against a loop
//! inside and a loop outside that subtree, on every class of route; and what leaders read.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use closeloop_domain::Sla;
use closeloop_projections::{Projections, ProjectorOptions, ReadModels, run_projector};
use closeloop_store::EventStore;
use serde_json::{Value, json};

use crate::tests::{App, call, request};
use crate::{AppState, Limits, Role, router, system_clock};

/// The subtree scoped credentials are limited to.
const SCOPE: &str = "rxx/site-a";
/// A unit inside it and one outside it (a sibling whose name starts the same).
const INSIDE: &str = "rxx/site-a/ward-1";
const OUTSIDE: &str = "rxx/site-ab/ward-2";

/// What the personal data of every test loop holds, none of which a leader may read.
const AUTHOR: &str = "Zoe Brown";
const CONTACT: &str = "zoe@example.org";
const PHONE: &str = "07700 900123";
const STORY: &str = "Zoe Brown here: the ward was noisy at night. Ring me on 07700 900123.";
const REPLY: &str = "Dear Zoe Brown, we are fitting soft-close bins.";

/// The token of a role, unscoped or scoped to [`SCOPE`].
fn token(role: Role, scoped: bool) -> String {
    let scope = if scoped { "scoped" } else { "all" };
    format!("{role}-{scope}-token")
}

/// An app whose tokens are every role unscoped (`role:…:role-all`) and scoped to [`SCOPE`]
/// (`role@rxx/site-a:…:role-site-a`), with its projector running.
fn scoped_app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = crate::tests::test_keys();
    let store = crate::tests::keyed_store(dir.path(), &keys);
    let tokens: Vec<String> = Role::ALL
        .iter()
        .flat_map(|&role| {
            [
                format!("{role}:{}:{role}-all", token(role, false)),
                format!("{role}@{SCOPE}:{}:{role}-site-a", token(role, true)),
            ]
        })
        .collect();
    let state = Arc::new(AppState {
        store: Arc::new(store),
        projections: Arc::new(Projections::new(ReadModels::default())),
        sla: Sla::default(),
        tokens: tokens.join(",").parse().expect("tokens"),
        clock: system_clock(),
        metrics: None,
        ingest: None,
        limits: Limits::default(),
        stories: crate::story_cache(),
        input_limits: closeloop_domain::Limits::DEFAULT,
        keys: Some(keys),
        publish_requires_approval: false,
        access: Arc::new(closeloop_access::MemoryAccessLog::default()),
        site: Default::default(),
    });
    tokio::spawn(run_projector(
        Arc::clone(&state.store),
        Arc::clone(&state.projections),
        ProjectorOptions::default(),
        std::future::pending::<()>(),
    ));
    App {
        router: router(Arc::clone(&state)),
        state,
        _dir: dir,
    }
}

impl App {
    /// Sends `body` (JSON, or nothing) as `token`.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        let (response, json, _) = call(self, request(method, path, Some(token), body)).await;
        (response.status(), json)
    }

    /// Records, as unscoped staff, a loop in `org_unit` with an author, a story and a reply.
    async fn loop_in(&self, loop_id: &str, org_unit: &str) {
        let staff = token(Role::Staff, false);
        let feedback = json!({"loop_id": loop_id, "org_unit": org_unit, "channel": "web",
                              "story": STORY, "ratings": {"fft": 4},
                              "author": {"name": AUTHOR, "contact": CONTACT}});
        let reply = json!({"by": "ward manager", "text": REPLY});
        for (path, body) in [
            ("/v1/feedback".to_owned(), feedback),
            (format!("/v1/loops/{loop_id}/responses"), reply),
        ] {
            let (status, answer) = self.send("POST", &path, &staff, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
        }
    }
}

/// A class of routes, as the matrix tries it.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// `GET /v1/loops?status=all`: is the loop listed?
    List,
    /// `GET /v1/loops/{loop_id}`.
    GetLoop,
    /// `GET /v1/stats?group_by=org_unit`: is the loop's unit counted?
    Stats,
    /// `POST /v1/loops/{loop_id}/acknowledgements`.
    Command,
    /// `POST /v1/feedback` for the loop's unit.
    FeedbackCreate,
    /// `POST /v1/changes` naming the loop.
    Changes,
    /// `GET /v1/events` and `GET /v1/audit/verify`: the whole log.
    GlobalLog,
}

/// What a cell expects: a status, and for lists and stats whether the loop shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 200, and the loop (or its unit) is in the answer.
    Shown,
    /// 200, and it is not.
    Hidden,
    /// This status, with the contract's code for it.
    Status(u16),
}

use Expect::{Hidden, Shown, Status};

const READERS: &[Role] = &[Role::Staff, Role::Leader, Role::Auditor, Role::Admin];
const WRITERS: &[Role] = &[Role::Staff, Role::Admin];
const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];

/// The matrix: per class of route, the roles that may use it (any other answers 403), and
/// what they get: [unscoped + loop inside, unscoped + loop outside, scoped + loop inside,
/// scoped + loop outside].
const MATRIX: &[(Class, &[Role], [Expect; 4])] = &[
    (Class::List, READERS, [Shown, Shown, Shown, Hidden]),
    (
        Class::GetLoop,
        READERS,
        [Status(200), Status(200), Status(200), Status(404)],
    ),
    (Class::Stats, READERS, [Shown, Shown, Shown, Hidden]),
    (
        Class::Command,
        WRITERS,
        [Status(201), Status(201), Status(201), Status(404)],
    ),
    (
        Class::FeedbackCreate,
        WRITERS,
        [Status(201), Status(201), Status(201), Status(403)],
    ),
    (
        Class::Changes,
        WRITERS,
        [Status(201), Status(201), Status(201), Status(404)],
    ),
    (
        Class::GlobalLog,
        AUDITORS,
        [Status(200), Status(200), Status(403), Status(403)],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_scoped_and_unscoped_on_every_class_of_route() {
    let app = scoped_app();
    let mut cells = 0;
    for &role in &Role::ALL {
        for scoped in [false, true] {
            for inside in [true, false] {
                // A loop of its own for every cell, so that one cell's write is not the next
                // cell's `already_acknowledged`.
                let loop_id = format!("{role}-{scoped}-{inside}");
                let org_unit = if inside { INSIDE } else { OUTSIDE };
                app.loop_in(&loop_id, org_unit).await;
                for &(class, allowed, outcomes) in MATRIX {
                    let column = usize::from(scoped) * 2 + usize::from(!inside);
                    let expected = if allowed.contains(&role) {
                        outcomes[column]
                    } else {
                        Status(403)
                    };
                    let cell =
                        format!("{class:?} as {role} (scoped: {scoped}) on a loop in {org_unit}");
                    check(
                        &app,
                        class,
                        &token(role, scoped),
                        &loop_id,
                        org_unit,
                        expected,
                        &cell,
                    )
                    .await;
                    if matches!(class, Class::GetLoop) && expected == Status(200) {
                        check_personal_data(&app, role, &token(role, scoped), &loop_id).await;
                    }
                    cells += 1;
                }
            }
        }
    }
    assert_eq!(cells, 4 * 2 * 2 * MATRIX.len());
}

/// Runs one cell of the matrix.
async fn check(
    app: &App,
    class: Class,
    token: &str,
    loop_id: &str,
    org_unit: &str,
    expected: Expect,
    cell: &str,
) {
    let answers: Vec<(StatusCode, Value)> = match class {
        Class::List => vec![
            app.send("GET", "/v1/loops?status=all&limit=500", token, None)
                .await,
        ],
        Class::GetLoop => vec![
            app.send("GET", &format!("/v1/loops/{loop_id}"), token, None)
                .await,
        ],
        Class::Stats => vec![
            app.send("GET", "/v1/stats?group_by=org_unit", token, None)
                .await,
        ],
        Class::Command => {
            let body = json!({"by": "pals", "message": "Thank you"});
            let path = format!("/v1/loops/{loop_id}/acknowledgements");
            vec![app.send("POST", &path, token, Some(body)).await]
        }
        Class::FeedbackCreate => {
            let body = json!({"org_unit": org_unit, "channel": "web", "ratings": {"fft": 1}});
            vec![app.send("POST", "/v1/feedback", token, Some(body)).await]
        }
        Class::Changes => {
            let body =
                json!({"by": "estates", "description": "Quieter bins", "loop_ids": [loop_id]});
            vec![app.send("POST", "/v1/changes", token, Some(body)).await]
        }
        Class::GlobalLog => vec![
            app.send("GET", "/v1/events?limit=1", token, None).await,
            app.send("GET", "/v1/audit/verify", token, None).await,
        ],
    };
    for (status, body) in answers {
        match expected {
            Shown | Hidden => {
                assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                let shown = match class {
                    Class::List => listed(&body, loop_id),
                    _ => counted(&body, org_unit),
                };
                assert_eq!(shown, expected == Shown, "{cell}: {body}");
            }
            Status(code) => {
                assert_eq!(status.as_u16(), code, "{cell}: {body}");
                let problem = match code {
                    403 => Some("forbidden"),
                    404 => Some("unknown_loop"),
                    _ => None,
                };
                if let Some(problem) = problem {
                    assert_eq!(body["code"], problem, "{cell}: {body}");
                }
            }
        }
    }
}

/// Whether a page of `GET /v1/loops` lists the loop.
fn listed(page: &Value, loop_id: &str) -> bool {
    let items = page["items"].as_array().expect("items");
    assert_eq!(
        page["total"].as_u64(),
        Some(items.len() as u64),
        "one page holds all: {page}"
    );
    items.iter().any(|item| item["loop_id"] == loop_id)
}

/// Whether `GET /v1/stats?group_by=org_unit` has a group for the unit.
fn counted(stats: &Value, org_unit: &str) -> bool {
    stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .any(|group| group["key"] == org_unit && group["received"].as_u64() > Some(0))
}

/// A leader reads the loop without its author, with the story and the reply redacted; every
/// other role reads them as recorded.
async fn check_personal_data(app: &App, role: Role, token: &str, loop_id: &str) {
    let (status, mut body) = app
        .send("GET", &format!("/v1/loops/{loop_id}"), token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The record is the stored bytes the hashes cover; its personal part is ciphertext (not
    // this module's to change), so only what the service decodes for the reader is checked.
    for line in body["timeline"].as_array_mut().expect("timeline") {
        line.as_object_mut().expect("line").remove("record");
    }
    let received = &body["timeline"][0]["data"];
    let shown = body.to_string();
    if role == Role::Leader {
        assert!(received.get("author").is_none(), "{received}");
        for personal in [AUTHOR, "Zoe", "Brown", CONTACT, PHONE] {
            assert!(
                !shown.contains(personal),
                "a leader reads {personal:?}: {shown}"
            );
        }
        assert_eq!(
            received["story"],
            "[redacted] here: the ward was noisy at night. Ring me on [redacted]."
        );
        assert_eq!(
            body["timeline"][1]["data"]["text"],
            "Dear [redacted], we are fitting soft-close bins."
        );
    } else {
        assert_eq!(received["author"]["name"], AUTHOR, "{role}");
        assert_eq!(received["story"], STORY, "{role}");
        assert_eq!(body["timeline"][1]["data"]["text"], REPLY, "{role}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_outside_the_scope_answers_as_one_that_does_not_exist() {
    let app = scoped_app();
    app.loop_in("elsewhere", OUTSIDE).await;
    let staff = token(Role::Staff, true);
    for (method, path, body) in [
        ("GET", "/v1/loops/{id}", None),
        (
            "POST",
            "/v1/loops/{id}/acknowledgements",
            Some(json!({"by": "pals"})),
        ),
        (
            "POST",
            "/v1/loops/{id}/reopenings",
            Some(json!({"by": "pals", "reason": "again"})),
        ),
    ] {
        let (outside, outside_body) = app
            .send(
                method,
                &path.replace("{id}", "elsewhere"),
                &staff,
                body.clone(),
            )
            .await;
        let (missing, missing_body) = app
            .send(method, &path.replace("{id}", "nowhere"), &staff, body)
            .await;
        assert_eq!(
            (outside, missing),
            (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
            "{path}"
        );
        let detail =
            |body: &Value, id: &str| body["detail"].as_str().expect("detail").replace(id, "X");
        assert_eq!(
            (
                outside_body["code"].clone(),
                detail(&outside_body, "elsewhere")
            ),
            (
                missing_body["code"].clone(),
                detail(&missing_body, "nowhere")
            ),
            "{method} {path}"
        );
    }
    // A change across loops is all or none: one loop outside refuses it, and nothing is stored.
    app.loop_in("here", INSIDE).await;
    let head = app.state.store.head();
    let body = json!({"by": "estates", "description": "Bins", "loop_ids": ["here", "elsewhere"]});
    let (status, problem) = app.send("POST", "/v1/changes", &staff, Some(body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("elsewhere"),
        "{problem}"
    );
    assert_eq!(app.state.store.head(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_list_pages_through_its_subtree_and_counts_only_it() {
    let app = scoped_app();
    let mut inside = Vec::new();
    for n in 0..9 {
        let (id, org_unit) = if n % 3 == 0 {
            (format!("out-{n}"), OUTSIDE)
        } else {
            (format!("in-{n}"), if n % 2 == 0 { SCOPE } else { INSIDE })
        };
        app.loop_in(&id, org_unit).await;
        if org_unit != OUTSIDE {
            inside.push(id);
        }
    }
    let auditor = token(Role::Auditor, true);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/loops?limit=2&cursor={cursor}"),
            None => "/v1/loops?limit=2".to_owned(),
        };
        let (status, page) = app.send("GET", &path, &auditor, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            page["total"],
            inside.len(),
            "every page counts the subtree only: {page}"
        );
        for item in page["items"].as_array().expect("items") {
            seen.push(item["loop_id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, inside, "each loop of the subtree once, in order");
    // Asking for a unit outside the scope finds nothing, rather than an error that would say
    // the unit exists.
    let (status, page) = app
        .send("GET", "/v1/loops?org_unit=rxx/site-ab", &auditor, None)
        .await;
    assert_eq!(
        (status, page["total"].as_u64()),
        (StatusCode::OK, Some(0)),
        "{page}"
    );
    // Stats count the subtree only, in the single group as in groups.
    let (_, stats) = app.send("GET", "/v1/stats", &auditor, None).await;
    assert_eq!(stats["groups"][0]["received"], inside.len(), "{stats}");
    let (_, stats) = app
        .send(
            "GET",
            "/v1/stats?group_by=org_unit&from=2000-01-01",
            &auditor,
            None,
        )
        .await;
    let keys: Vec<&str> = stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| group["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, [SCOPE, INSIDE], "{stats}");
}

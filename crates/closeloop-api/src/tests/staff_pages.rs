//! The staff pages as a browser uses them: signing in with a token, a session cookie, CSRF
//! fields, working a loop through its forms, the queue and its bulk change, scopes, timeouts.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use axum::http::HeaderMap;
use closeloop_access::{AccessEntry, AccessLog, AccessLogError, AccessQuery, MemoryAccessLog};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::*;
use crate::pages::session::{MAX_FAILED_SIGN_INS_PER_MINUTE, SESSION_COOKIE, SIGN_IN_COOKIE};

const STAFF_TOKEN: &str = "staff-pages-token-1";
const ADMIN_TOKEN: &str = "admin-pages-token-1";
const LEADER_TOKEN: &str = "leader-pages-token-1";
const SCOPED_TOKEN: &str = "scoped-pages-token-1";
/// The name of the staff token: the actor of everything it records.
const STAFF_NAME: &str = "Ward 7 manager";
const INSIDE: &str = "rxx/site-a/ward-7";
const OUTSIDE: &str = "rxx/site-b/ward-1";

/// An access log that records, or refuses everything while `refusing` is set.
#[derive(Debug, Default)]
struct Switchable {
    inner: MemoryAccessLog,
    refusing: AtomicBool,
}

impl AccessLog for Switchable {
    fn record(&self, entries: Vec<AccessEntry>) -> BoxFuture<'_, Result<(), AccessLogError>> {
        if self.refusing.load(Ordering::SeqCst) {
            return futures::future::ready(Err(AccessLogError::Busy)).boxed();
        }
        self.inner.record(entries)
    }

    fn query(&self, query: AccessQuery) -> BoxFuture<'_, Result<Vec<AccessEntry>, AccessLogError>> {
        self.inner.query(query)
    }

    fn prune(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.inner.prune()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), AccessLogError>> {
        self.inner.flush()
    }
}

/// The service with the pages' tokens, a clock the test moves, and its projector running.
struct Pages {
    app: App,
    /// Seconds since the epoch the clock shows.
    now: Arc<AtomicI64>,
    access: Arc<Switchable>,
}

/// The start of every test's clock.
const START: &str = "2026-11-23T10:00:00Z";

impl Pages {
    fn new(approval: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = test_keys();
        let store = keyed_store(dir.path(), &keys);
        let now = Arc::new(AtomicI64::new(
            START.parse::<Timestamp>().expect("a time").as_second(),
        ));
        let seconds = Arc::clone(&now);
        let clock: Clock = Arc::new(move || {
            Timestamp::from_second(seconds.load(Ordering::SeqCst)).expect("a time in range")
        });
        let access = Arc::new(Switchable::default());
        let state = Arc::new(AppState {
            store: Arc::new(store),
            projections: Arc::new(Projections::new(ReadModels::default())),
            sla: Sla::default(),
            tokens: format!(
                "staff:{STAFF_TOKEN}:{STAFF_NAME},admin:{ADMIN_TOKEN},leader:{LEADER_TOKEN},staff@rxx/site-a:{SCOPED_TOKEN}:PALS site A"
            )
            .parse()
            .expect("tokens"),
            clock,
            metrics: None,
            ingest: None,
            limits: Limits::default(),
            stories: crate::story_cache(),
            input_limits: closeloop_domain::Limits::DEFAULT,
            keys: Some(keys),
            publish_requires_approval: approval,
            access: Arc::clone(&access) as Arc<dyn AccessLog>,
            site: Arc::default(),
        });
        tokio::spawn(run_projector(
            Arc::clone(&state.store),
            Arc::clone(&state.projections),
            ProjectorOptions::default(),
            std::future::pending::<()>(),
        ));
        Self {
            app: App {
                router: router(Arc::clone(&state)),
                state,
                _dir: dir,
            },
            now,
            access,
        }
    }

    fn advance_minutes(&self, minutes: i64) {
        self.now.fetch_add(60 * minutes, Ordering::SeqCst);
    }

    /// Records feedback over the API with the staff token.
    async fn feedback(&self, loop_id: &str, org_unit: &str, story: &str) {
        let body = json!({"loop_id": loop_id, "org_unit": org_unit, "channel": "web",
                          "story": story, "themes": ["noise"], "ratings": {"fft": 4},
                          "author": {"name": "Zoë O'Brien", "contact": "zoe@example.org"}});
        self.api_post("/v1/feedback", body).await;
    }

    async fn api_post(&self, path: &str, body: Value) {
        let (response, _, text) = call(
            &self.app,
            request(
                "POST",
                path,
                Some(STAFF_TOKEN),
                Body::from(body.to_string()),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{path}: {text}");
    }

    /// The loop as the API shows it to the admin.
    async fn api_loop(&self, loop_id: &str) -> Value {
        let (response, body, text) = call(
            &self.app,
            request(
                "GET",
                &format!("/v1/loops/{loop_id}"),
                Some(ADMIN_TOKEN),
                Body::empty(),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{text}");
        body
    }

    /// Sends a request as `browser` (its cookies), keeping the cookies the answer sets.
    async fn send(
        &self,
        browser: &mut Browser,
        method: &str,
        path: &str,
        form: Option<&str>,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if !browser.cookies.is_empty() {
            let cookies: Vec<String> = browser
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            builder = builder.header(header::COOKIE, cookies.join("; "));
        }
        let body = match form {
            Some(form) => {
                builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(form.to_owned())
            }
            None => Body::empty(),
        };
        let (response, _, text) = call(&self.app, builder.body(body).expect("request")).await;
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().expect("ascii");
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            if attributes.contains("Max-Age=0") {
                browser.cookies.remove(name);
            } else {
                browser.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text,
        }
    }

    async fn get(&self, browser: &mut Browser, path: &str) -> Answer {
        self.send(browser, "GET", path, None).await
    }

    /// Posts a form of `fields` as `browser`, its session's CSRF token added.
    async fn post(&self, browser: &mut Browser, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("csrf", &browser.csrf);
        for (name, value) in fields {
            form.append_pair(name, value);
        }
        let form = form.finish();
        self.send(browser, "POST", path, Some(&form)).await
    }

    /// Signs in with `token` as a browser does: the form, then its post.
    async fn sign_in(&self, token: &str) -> (Browser, Answer) {
        let mut browser = Browser::default();
        let form = self.get(&mut browser, "/sign-in").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.text);
        let csrf = field_value(&form.text, "csrf").expect("the sign-in form's csrf field");
        let body = format!("csrf={csrf}&token={token}");
        let answer = self
            .send(&mut browser, "POST", "/sign-in", Some(&body))
            .await;
        if answer.status == StatusCode::SEE_OTHER {
            // The session's CSRF token, from the sign-out form in the header of its pages
            // (the work queue, or the page refusing a role that may not use it).
            let staff = self.get(&mut browser, "/staff").await;
            browser.csrf = field_value(&staff.text, "csrf").expect("a csrf field");
        }
        (browser, answer)
    }

    async fn signed_in(&self, token: &str) -> Browser {
        let (browser, answer) = self.sign_in(token).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        browser
    }

    /// The version the loop's page fills its forms in with.
    async fn version(&self, browser: &mut Browser, loop_id: &str) -> String {
        let page = self.get(browser, &format!("/staff/loops/{loop_id}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        field_value(&page.text, "version").expect("a version field")
    }

    /// Records `step` on the loop through its form, from a freshly read page.
    async fn step(
        &self,
        browser: &mut Browser,
        loop_id: &str,
        step: &str,
        fields: &[(&str, &str)],
    ) -> Answer {
        let version = self.version(browser, loop_id).await;
        let mut all = vec![("version", version.as_str())];
        all.extend_from_slice(fields);
        self.post(browser, &format!("/staff/loops/{loop_id}/{step}"), &all)
            .await
    }
}

/// A browser: its cookies, and the CSRF token of its session's pages.
#[derive(Debug, Default)]
struct Browser {
    cookies: HashMap<String, String>,
    csrf: String,
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |value| value.to_str().expect("ascii"))
    }

    fn is_html(&self) -> bool {
        self.headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.to_str().expect("ascii").starts_with("text/html"))
    }
}

/// The value of the first input named `name` on a page.
fn field_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &page[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

#[tokio::test]
async fn a_good_token_signs_in_with_a_secure_session_cookie_that_is_not_the_token() {
    let pages = Pages::new(false);
    let mut browser = Browser::default();
    let form = pages.get(&mut browser, "/sign-in").await;
    assert!(form.is_html(), "{:?}", form.headers);
    assert!(form.text.contains("type=\"password\""), "{}", form.text);
    assert!(
        form.text
            .contains("<label class=\"nhsuk-label\" for=\"token\">Access token</label>")
    );
    assert_eq!(form.headers[header::CACHE_CONTROL], "no-store");
    assert!(browser.cookies.contains_key(SIGN_IN_COOKIE));

    let (mut browser, answer) = pages.sign_in(STAFF_TOKEN).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    assert_eq!(answer.location(), "/staff");
    let cookies: Vec<&str> = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().expect("ascii"))
        .collect();
    let session = cookies
        .iter()
        .find(|cookie| cookie.starts_with(&format!("{SESSION_COOKIE}=")))
        .expect("a session cookie");
    for attribute in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        !session.contains("Max-Age"),
        "a browser-session cookie: {session}"
    );
    assert!(
        cookies.iter().all(|cookie| !cookie.contains(STAFF_TOKEN)),
        "{cookies:?}"
    );
    assert!(
        !browser.cookies.contains_key(SIGN_IN_COOKIE),
        "the sign-in cookie has served"
    );

    let queue = pages.get(&mut browser, "/staff").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.text);
    assert!(
        queue.text.contains(&format!("Signed in as {STAFF_NAME}")),
        "{}",
        queue.text
    );
    assert!(!queue.text.contains(STAFF_TOKEN));
    assert_eq!(queue.headers[header::CACHE_CONTROL], "no-store");

    // With `next`, the sign-in returns there, and only to a path of this site.
    let mut other = Browser::default();
    let form = pages
        .get(&mut other, "/sign-in?next=%2Fstaff%3Fstage%3Dreceived")
        .await;
    let csrf = field_value(&form.text, "csrf").expect("csrf");
    let body = format!("csrf={csrf}&token={STAFF_TOKEN}&next=%2Fstaff%3Fstage%3Dreceived");
    let answer = pages
        .send(&mut other, "POST", "/sign-in", Some(&body))
        .await;
    assert_eq!(answer.location(), "/staff?stage=received");
    let evil = pages
        .get(
            &mut Browser::default(),
            "/sign-in?next=%2F%2Fevil.example%2F",
        )
        .await;
    assert_eq!(evil.status, StatusCode::BAD_REQUEST, "{}", evil.text);
    assert!(evil.is_html());
}

#[tokio::test]
async fn a_bad_token_is_refused_in_words_and_guessing_is_bounded() {
    let pages = Pages::new(false);
    let (browser, answer) = pages.sign_in("not-a-token-of-ours").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    assert!(
        answer.text.contains("nhsuk-error-summary"),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("href=\"#token\""), "{}", answer.text);
    assert!(
        answer.text.contains("id=\"token-error\""),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("not one we know"), "{}", answer.text);
    assert!(
        !answer.text.contains("not-a-token-of-ours"),
        "the guess is not echoed"
    );
    assert!(!browser.cookies.contains_key(SESSION_COOKIE));

    let (_, empty) = pages.sign_in("").await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        empty.text.contains("Enter your access token"),
        "{}",
        empty.text
    );

    for _ in 1..MAX_FAILED_SIGN_INS_PER_MINUTE {
        let (_, answer) = pages.sign_in("another-wrong-token").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    // The limit is spent: even the right token waits for the minute to end.
    let (_, paused) = pages.sign_in(STAFF_TOKEN).await;
    assert_eq!(
        paused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        paused.text
    );
    assert!(paused.headers.contains_key(header::RETRY_AFTER));
    pages.advance_minutes(1);
    pages.signed_in(STAFF_TOKEN).await;
}

#[tokio::test]
async fn a_sign_in_posted_from_elsewhere_is_refused() {
    let pages = Pages::new(false);
    let mut browser = Browser::default();
    // No sign-in cookie (another site's form), and a field that matches none.
    let body = format!("csrf={}&token={STAFF_TOKEN}", "a".repeat(64));
    let answer = pages
        .send(&mut browser, "POST", "/sign-in", Some(&body))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert!(!browser.cookies.contains_key(SESSION_COOKIE));
    assert!(
        answer.text.contains("sign-in form had expired"),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_page_without_a_session_sends_to_sign_in_and_a_post_is_refused() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let mut browser = Browser::default();
    let answer = pages
        .get(&mut browser, "/staff/loops/loop-1?done=respond")
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(
        answer.location(),
        "/sign-in?next=%2Fstaff%2Floops%2Floop-1%3Fdone%3Drespond"
    );
    let answer = pages
        .post(
            &mut browser,
            "/staff/loops/loop-1/respond",
            &[("version", "1"), ("by", "x"), ("text", "y")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    assert!(answer.is_html());
    assert_eq!(
        pages.api_loop("loop-1").await["version"],
        1,
        "nothing recorded"
    );

    // A made-up session id is no session.
    browser
        .cookies
        .insert(SESSION_COOKIE.to_owned(), "0".repeat(64));
    let answer = pages.get(&mut browser, "/staff").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/sign-in?next=%2Fstaff&notice=expired");
}

#[tokio::test]
async fn a_leader_signs_in_but_may_not_use_the_work_queue() {
    let pages = Pages::new(false);
    let mut leader = pages.signed_in(LEADER_TOKEN).await;
    let answer = pages.get(&mut leader, "/staff").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert!(answer.is_html());
    assert!(answer.text.contains("leader"), "{}", answer.text);
    assert!(
        answer.text.contains("nhsuk-header"),
        "in the NHS frame: {}",
        answer.text
    );
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_records_nothing() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let good = browser.csrf.clone();
    for csrf in [None, Some("0".repeat(64)), Some(format!("{good}x"))] {
        let mut form = form_urlencoded::Serializer::new(String::new());
        if let Some(csrf) = &csrf {
            form.append_pair("csrf", csrf);
        }
        form.append_pair("version", "1");
        form.append_pair("by", "pals");
        let form = form.finish();
        let answer = pages
            .send(
                &mut browser,
                "POST",
                "/staff/loops/loop-1/acknowledge",
                Some(&form),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{csrf:?}: {}",
            answer.text
        );
        assert!(answer.is_html());
    }
    // Another session's token is no good either.
    let other = pages.signed_in(STAFF_TOKEN).await;
    browser.csrf = other.csrf;
    let answer = pages
        .post(
            &mut browser,
            "/staff/loops/loop-1/acknowledge",
            &[("version", "1"), ("by", "pals")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        pages.api_loop("loop-1").await["version"],
        1,
        "nothing recorded"
    );
}

#[tokio::test]
async fn a_loop_is_worked_from_received_to_closed_through_the_forms() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let steps: [(&str, Fields<'_>, &str); 4] = [
        (
            "acknowledge",
            &[("by", "PALS"), ("message", "Thank you for telling us")],
            "Acknowledgement recorded.",
        ),
        (
            "respond",
            &[("by", "PALS"), ("text", "We are looking into the noise")],
            "Response recorded.",
        ),
        (
            "change",
            &[
                ("by", "Estates"),
                ("description", "Soft-close bins fitted"),
                ("evidence", ""),
            ],
            "Change recorded.",
        ),
        (
            "report-back",
            &[
                ("by", "PALS"),
                ("message", "We fitted soft-close bins"),
                ("channel", "phone"),
            ],
            "The loop is closed.",
        ),
    ];
    for (step, fields, banner) in steps {
        pages.advance_minutes(5);
        let answer = pages.step(&mut browser, "loop-1", step, fields).await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "{step}: {}",
            answer.text
        );
        assert_eq!(
            answer.location(),
            format!("/staff/loops/loop-1?done={step}")
        );
        let page = pages.get(&mut browser, answer.location()).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.text.contains("nhsuk-notification-banner--success"),
            "{step}"
        );
        assert!(page.text.contains(banner), "{step}: {}", page.text);
    }
    let body = pages.api_loop("loop-1").await;
    assert_eq!(body["status"], "closed");
    let timeline = body["timeline"].as_array().expect("timeline");
    let types: Vec<&str> = timeline
        .iter()
        .map(|line| line["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "org.closeloop.feedback.received",
            "org.closeloop.loop.acknowledged",
            "org.closeloop.loop.responded",
            "org.closeloop.loop.change_made",
            "org.closeloop.loop.reported_back",
        ]
    );
    for line in &timeline[1..] {
        assert_eq!(line["actor"], STAFF_NAME, "the token's actor: {line}");
    }
    assert!(
        timeline[3]["data"].get("evidence").is_none(),
        "an empty optional field is left out"
    );
    assert_eq!(timeline[4]["data"]["channel"], "phone");

    // The closed loop's page offers only a reopening.
    let page = pages.get(&mut browser, "/staff/loops/loop-1").await;
    assert!(page.text.contains("action=\"/staff/loops/loop-1/reopen\""));
    assert!(!page.text.contains("action=\"/staff/loops/loop-1/respond\""));
    assert!(
        page.text.contains("Soft-close bins fitted"),
        "the timeline shows the change"
    );
}

#[tokio::test]
async fn a_rule_of_the_contract_is_shown_in_words_next_to_its_field() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let answer = pages
        .step(
            &mut browser,
            "loop-1",
            "report-back",
            &[("by", "PALS"), ("message", "All done")],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    let text = &answer.text;
    assert!(text.contains("nhsuk-error-summary"), "{text}");
    assert!(text.contains("href=\"#report-back-message\""), "{text}");
    let sentence =
        "You cannot report back yet. First record what changed, or that nothing could change.";
    let next_to_field = format!(
        "<span class=\"nhsuk-error-message\" id=\"report-back-message-error\"><span class=\"nhsuk-u-visually-hidden\">Error: </span>{sentence}</span>"
    );
    assert!(text.contains(&next_to_field), "{text}");
    assert!(
        text.contains(">All done</textarea>"),
        "what was typed is kept: {text}"
    );
    assert_eq!(
        pages.api_loop("loop-1").await["version"],
        1,
        "nothing recorded"
    );

    // An empty required field says what to enter.
    let answer = pages
        .step(
            &mut browser,
            "loop-1",
            "respond",
            &[("by", "PALS"), ("text", "  ")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.text.contains("Enter the reply"), "{}", answer.text);
    assert!(
        answer.text.contains("href=\"#respond-text\""),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn a_stale_form_shows_the_loops_new_state_instead_of_overwriting_it() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let stale = pages.version(&mut browser, "loop-1").await;
    // Someone else records a step meanwhile.
    pages
        .api_post(
            "/v1/loops/loop-1/responses",
            json!({"by": "Matron", "text": "We are on it"}),
        )
        .await;
    let answer = pages
        .post(
            &mut browser,
            "/staff/loops/loop-1/respond",
            &[("version", &stale), ("by", "PALS"), ("text", "My reply")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text);
    assert!(
        answer.text.contains("Someone else changed this loop"),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("We are on it"),
        "the new state: {}",
        answer.text
    );
    assert!(
        answer.text.contains(">My reply</textarea>"),
        "the form as filled in"
    );
    assert_eq!(field_value(&answer.text, "version").as_deref(), Some("2"));
    assert_eq!(
        pages.api_loop("loop-1").await["version"],
        2,
        "nothing overwritten"
    );
}

#[tokio::test]
async fn a_form_sent_twice_records_once() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let page = pages.get(&mut browser, "/staff/loops/loop-1").await;
    let key = field_value(&page.text, "form_key").expect("a form key");
    let fields = [
        ("version", "1"),
        ("form_key", key.as_str()),
        ("by", "PALS"),
        ("text", "Our reply"),
    ];
    for _ in 0..2 {
        let answer = pages
            .post(&mut browser, "/staff/loops/loop-1/respond", &fields)
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    }
    assert_eq!(pages.api_loop("loop-1").await["version"], 2);
}

#[tokio::test]
async fn one_change_is_recorded_on_the_ticked_loops_only() {
    let pages = Pages::new(false);
    for id in ["loop-1", "loop-2", "loop-3"] {
        pages.feedback(id, INSIDE, "Noisy at night").await;
    }
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let queue = pages.get(&mut browser, "/staff?theme=noise").await;
    for id in ["loop-1", "loop-2", "loop-3"] {
        assert!(
            queue.text.contains(&format!(
                "name=\"loop_id\" type=\"checkbox\" value=\"{id}\""
            )),
            "{}",
            queue.text
        );
    }
    let query = field_value(&queue.text, "query").expect("the queue's query");
    let answer = pages
        .post(
            &mut browser,
            "/staff/changes",
            &[
                ("query", &query),
                ("loop_id", "loop-1"),
                ("loop_id", "loop-3"),
                ("description", "Quieter night rounds"),
                ("by", "Ward sister"),
                ("evidence", ""),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    assert_eq!(answer.location(), "/staff?theme=noise&done=changed&loops=2");
    let page = pages.get(&mut browser, answer.location()).await;
    assert!(
        page.text.contains("One change recorded on 2 loops."),
        "{}",
        page.text
    );

    let change = |body: &Value| {
        body["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .find(|line| line["type"] == "org.closeloop.loop.change_made")
            .map(|line| (line["data"]["change_id"].clone(), line["actor"].clone()))
    };
    let one = change(&pages.api_loop("loop-1").await).expect("changed");
    let three = change(&pages.api_loop("loop-3").await).expect("changed");
    assert_eq!(one, three, "one change_id, one actor");
    assert_eq!(one.1, STAFF_NAME);
    assert!(
        change(&pages.api_loop("loop-2").await).is_none(),
        "not ticked"
    );

    // Nothing ticked: the error is next to the tick boxes and nothing is recorded.
    let answer = pages
        .post(
            &mut browser,
            "/staff/changes",
            &[("query", &query), ("description", "More"), ("by", "x")],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("href=\"#select-1\""),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("id=\"selection-error\""),
        "{}",
        answer.text
    );
    // No description: the error is next to it, and the ticks are kept.
    let answer = pages
        .post(
            &mut browser,
            "/staff/changes",
            &[
                ("query", &query),
                ("loop_id", "loop-2"),
                ("description", ""),
                ("by", "x"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.text.contains("href=\"#bulk-description\""),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("Enter what changed"),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("value=\"loop-2\" checked"),
        "{}",
        answer.text
    );
    assert!(change(&pages.api_loop("loop-2").await).is_none());
}

#[tokio::test]
async fn the_queue_puts_overdue_loops_first_and_counts_them() {
    let pages = Pages::new(false);
    let day = |days_ago: i64| {
        let now = Timestamp::from_second(pages.now.load(Ordering::SeqCst)).expect("now");
        (now - jiff::SignedDuration::from_hours(24 * days_ago)).to_string()
    };
    // The oldest loop was acknowledged in time: not overdue. The newer one was not.
    for (id, days_ago) in [("older-on-time", 10), ("newer-overdue", 6), ("new", 0)] {
        let body = json!({"loop_id": id, "org_unit": INSIDE, "channel": "web", "ratings": {"fft": 2},
                          "received_at": day(days_ago)});
        pages.api_post("/v1/feedback", body).await;
    }
    pages
        .api_post(
            "/v1/loops/older-on-time/acknowledgements",
            json!({"by": "PALS"}),
        )
        .await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let queue = pages.get(&mut browser, "/staff").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.text);
    let order: Vec<usize> = ["newer-overdue", "older-on-time", "new"]
        .iter()
        .map(|id| queue.text.find(&format!("value=\"{id}\"")).expect("listed"))
        .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "overdue first: {order:?}"
    );
    assert!(
        queue
            .text
            .contains("3 open loops. 3 loops match these filters, 1 of them overdue."),
        "{}",
        queue.text
    );
    assert!(
        queue
            .text
            .contains("<strong class=\"nhsuk-tag nhsuk-tag--red\">Overdue</strong>")
    );

    // A page at a time, through the page's own cursors.
    let mut seen = Vec::new();
    let mut path = "/staff?limit=1".to_owned();
    loop {
        let page = pages.get(&mut browser, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text);
        seen.push(
            field_value(
                &page
                    .text
                    .replace("name=\"loop_id\" type=\"checkbox\"", "name=\"row\""),
                "row",
            )
            .expect("a row"),
        );
        let Some(at) = page.text.find("rel=\"next\"") else {
            break;
        };
        let link = &page.text[..at];
        let href = &link[link.rfind("href=\"").expect("a link") + 6..];
        path = href[..href.find('"').expect("end")].replace("&amp;", "&");
        assert!(seen.len() < 5, "the pages end");
    }
    assert_eq!(seen, ["newer-overdue", "older-on-time", "new"]);

    // Filters: only the overdue ones; unknown parameters are ignored, bad values are a 400 page.
    let overdue = pages
        .get(&mut browser, "/staff?overdue=true&utm_source=mail")
        .await;
    assert_eq!(overdue.status, StatusCode::OK);
    assert!(
        overdue.text.contains("value=\"newer-overdue\"") && !overdue.text.contains("value=\"new\"")
    );
    let bad = pages.get(&mut browser, "/staff?stage=nearly-done").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert!(bad.is_html() && bad.text.contains("stage"), "{}", bad.text);
    let bad = pages.get(&mut browser, "/staff?cursor=zz").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scoped_staff_see_and_work_only_their_subtree() {
    let pages = Pages::new(false);
    pages.feedback("inside", INSIDE, "Noisy at night").await;
    pages.feedback("outside", OUTSIDE, "Cold food").await;
    let mut scoped = pages.signed_in(SCOPED_TOKEN).await;
    let queue = pages.get(&mut scoped, "/staff").await;
    assert!(queue.text.contains("value=\"inside\"") && !queue.text.contains("value=\"outside\""));
    assert!(queue.text.contains("1 open loop in"), "{}", queue.text);
    let page = pages.get(&mut scoped, "/staff/loops/outside").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text);
    assert!(!page.text.contains("Cold food"));
    let answer = pages
        .post(
            &mut scoped,
            "/staff/loops/outside/acknowledge",
            &[("version", "1"), ("by", "PALS")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    let query = field_value(&queue.text, "query").unwrap_or_default();
    let answer = pages
        .post(
            &mut scoped,
            "/staff/changes",
            &[
                ("query", &query),
                ("loop_id", "inside"),
                ("loop_id", "outside"),
                ("description", "x"),
                ("by", "y"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    assert_eq!(pages.api_loop("outside").await["version"], 1);
    assert_eq!(pages.api_loop("inside").await["version"], 1, "all or none");
    let inside = pages
        .step(&mut scoped, "inside", "acknowledge", &[("by", "PALS")])
        .await;
    assert_eq!(inside.status, StatusCode::SEE_OTHER, "{}", inside.text);
    assert_eq!(
        pages.api_loop("inside").await["timeline"][1]["actor"],
        "PALS site A"
    );
}

#[tokio::test]
async fn a_story_is_shown_as_text_and_its_read_is_recorded_first() {
    let pages = Pages::new(false);
    pages
        .feedback("loop-1", INSIDE, "<script>alert('x')</script> at night")
        .await;
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let page = pages.get(&mut browser, "/staff/loops/loop-1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text
            .contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("<script>"));
    assert!(
        page.text.contains("Zoë O'Brien") || page.text.contains("Zoë O&#39;Brien"),
        "staff see the author"
    );
    let entries = pages
        .access
        .query(AccessQuery::default())
        .await
        .expect("access log");
    let last = entries.last().expect("the read was recorded");
    assert_eq!(last.actor.as_str(), STAFF_NAME);
    assert_eq!(last.what.as_str(), "timeline");
    assert_eq!(last.loop_id.as_ref().map(LoopId::as_str), Some("loop-1"));

    pages.access.refusing.store(true, Ordering::SeqCst);
    let refused = pages.get(&mut browser, "/staff/loops/loop-1").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    assert!(
        !refused.text.contains("alert") && !refused.text.contains("Zoë"),
        "nothing shown"
    );
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let pages = Pages::new(false);
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let old = browser
        .cookies
        .get(SESSION_COOKIE)
        .cloned()
        .expect("a session");
    let answer = pages.post(&mut browser, "/sign-out", &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    assert_eq!(answer.location(), "/sign-in?notice=signed-out");
    assert!(
        !browser.cookies.contains_key(SESSION_COOKIE),
        "the cookie is expired"
    );
    let page = pages.get(&mut browser, answer.location()).await;
    assert!(page.text.contains("You have signed out."));
    // The old id is worth nothing now.
    browser.cookies.insert(SESSION_COOKIE.to_owned(), old);
    let answer = pages.get(&mut browser, "/staff").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn an_idle_session_ends_after_thirty_minutes() {
    let pages = Pages::new(false);
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    pages.advance_minutes(29);
    assert_eq!(
        pages.get(&mut browser, "/staff").await.status,
        StatusCode::OK
    );
    pages.advance_minutes(29);
    assert_eq!(
        pages.get(&mut browser, "/staff").await.status,
        StatusCode::OK,
        "used 29 minutes ago"
    );
    pages.advance_minutes(30);
    let answer = pages.get(&mut browser, "/staff").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/sign-in?next=%2Fstaff&notice=expired");
    let page = pages.get(&mut browser, answer.location()).await;
    assert!(
        page.text.contains("Your session has ended"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn a_bearer_token_opens_the_pages_without_a_session_or_csrf_field() {
    let pages = Pages::new(true);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    let (response, _, text) = call(
        &pages.app,
        request(
            "GET",
            "/staff/loops/loop-1",
            Some(ADMIN_TOKEN),
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    assert!(
        text.contains("action=\"/staff/loops/loop-1/approve\""),
        "approval is on: {text}"
    );
    assert!(!text.contains("name=\"csrf\""), "no session, no CSRF field");
    let form = "version=1&by=Editor&story=Approved+text";
    let sent = Request::builder()
        .method("POST")
        .uri("/staff/loops/loop-1/approve")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .expect("request");
    let (response, _, text) = call(&pages.app, sent).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{text}");
    let body = pages.api_loop("loop-1").await;
    assert_eq!(
        body["timeline"][1]["type"],
        "org.closeloop.loop.story_approved"
    );
}

#[tokio::test]
async fn an_erased_loop_shows_that_it_was_erased_and_nothing_of_the_person() {
    let pages = Pages::new(false);
    pages.feedback("loop-1", INSIDE, "Noisy at night").await;
    // The erasure finds the loop in the read models, which a read makes catch up first.
    pages.api_loop("loop-1").await;
    let (response, _, text) = call(
        &pages.app,
        request(
            "POST",
            "/v1/erasures",
            Some(ADMIN_TOKEN),
            Body::from(json!({"loop_id": "loop-1"}).to_string()),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{text}");
    let mut browser = pages.signed_in(STAFF_TOKEN).await;
    let page = pages.get(&mut browser, "/staff/loops/loop-1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    for gone in ["Noisy at night", "Zoë", "zoe@example.org"] {
        assert!(!page.text.contains(gone), "{gone} is still shown");
    }
    assert!(page.text.contains("[erased]"), "{}", page.text);
    assert!(page.text.contains(">Erased<"), "{}", page.text);
    assert!(
        page.text.contains("Personal data erased"),
        "the timeline says so"
    );
}

//! A member of staff works a loop from received to closed through the staff pages, and the
//! change appears on the public page without the author's personal data.
//!
//! What it relies on of the pages:
//! - `GET /sign-in` has a form whose first password field takes an API token; submitting it
//!   signs the browser in (a session cookie) and leaves it on `/staff`.
//! - `GET /staff` lists open loops, this one among them (its author's name shows: staff may
//!   see personal data).
//! - `GET /staff/loops/{loop_id}` shows the loop, with one form per step the loop may take
//!   next, each inside a `<details>` (opened as a person would, by its summary) and posting to
//!   `/staff/loops/{loop_id}/<step>` (`acknowledge`, `respond`, `plan`, `change`,
//!   `report-back`), with fields named as the event's data: `by` first, then `message`;
//!   `text`; `description`, `owner`, `due` (`YYYY-MM-DD`); `description`; `message` and
//!   `channel` (a select with the value `email`). Each post ends back on the loop's page
//!   (post, redirect, get), which then says the loop is closed.
//!
//! Should a page name things differently, change the step table below, not the flow.

use serde_json::json;

use super::Browser;
use super::personal::found;
use crate::Service;

/// The steps, in order: the form's path segment and its fields.
const STEPS: &[(&str, &[(&str, &str)])] = &[
    (
        "acknowledge",
        &[("by", BY), ("message", "Thank you, we have your feedback.")],
    ),
    (
        "respond",
        &[
            ("by", BY),
            (
                "text",
                "We are sorry; we are looking into the noise at night.",
            ),
        ],
    ),
    (
        "plan",
        &[
            ("by", BY),
            ("description", "Fit soft-close bins on the ward."),
            ("owner", "estates"),
            ("due", "2030-01-31"),
        ],
    ),
    ("change", &[("by", BY), ("description", CHANGE)]),
    (
        "report-back",
        &[
            ("by", BY),
            ("message", "We wrote to tell you what changed."),
            ("channel", "email"),
        ],
    ),
];
/// Who records the steps, as the forms ask.
const BY: &str = "Ward 7 manager";
/// The change made, which the public page shows afterwards.
const CHANGE: &str = "Soft-close bins are fitted on Ward 7, and the lights dim at 22:00.";
const AUTHOR: &str = "Margaret Whitfield";
const CONTACT: &str = "07700 900318";

#[tokio::test(flavor = "current_thread")]
async fn staff_work_a_loop_to_closed_through_the_pages_and_the_public_page_shows_the_change() {
    let Some(browser) = Browser::start("staff-flow").await else {
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start(data.path());
    let loop_id = received_loop(&service).await;

    browser.sign_in(&service, "staff-token-e2e").await;
    browser.open(&service, "/staff").await;
    let queue = browser.text().await;
    assert!(
        queue.contains("Noise at night") || queue.contains("noise at night"),
        "/staff lists the new loop:\n{queue}"
    );
    browser.check_page("staff-flow-queue").await;

    let page = format!("/staff/loops/{loop_id}");
    browser.open(&service, &page).await;
    browser.check_page("staff-flow-loop").await;
    for (step, fields) in STEPS {
        browser.submit_form(&format!("{page}/{step}"), fields).await;
        let text = browser.text().await;
        assert!(
            !text.contains("There is a problem"),
            "the {step} form was refused:\n{text}"
        );
    }
    assert!(
        browser.text().await.to_lowercase().contains("closed"),
        "the loop's page says it is closed"
    );
    browser.check_page("staff-flow-closed").await;

    browser.open(&service, "/you-said-we-did").await;
    let text = browser.text().await;
    assert!(
        text.contains(CHANGE),
        "the public page shows the change:\n{text}"
    );
    let leaks = found(&text, &[AUTHOR], &[CONTACT], &[&loop_id]);
    assert!(
        leaks.is_empty(),
        "the public page shows personal data: {leaks:#?}"
    );
    browser.finish().await;
}

/// Records a loop through the API, as a publisher would: consented, with a story signed with
/// the author's name and phone number. Returns its id.
async fn received_loop(service: &Service) -> String {
    let response = reqwest::Client::new()
        .post(service.url("/v1/feedback"))
        .bearer_auth("staff-token-e2e")
        .json(&json!({
            "org_unit": "rxx/royal-infirmary/ward-7",
            "channel": "web",
            "story": format!("The ward was too noisy to sleep. {AUTHOR}, {CONTACT}"),
            "themes": ["noise at night"],
            "author": {"name": AUTHOR, "contact": CONTACT},
            "consent_to_publish": true,
        }))
        .send()
        .await
        .expect("POST /v1/feedback");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let body: serde_json::Value = response.json().await.expect("JSON");
    body["loop_id"].as_str().expect("loop_id").to_owned()
}

//! The public page, "You said, we did", over the demo data set.

use super::Browser;
use super::personal::{demo_authors, found, without_drawings};
use crate::Service;

/// How many pages of the public list are read (each checked for personal data).
const PAGES: usize = 3;

#[tokio::test(flavor = "current_thread")]
async fn the_public_page_is_accessible_fits_a_phone_and_shows_no_personal_data() {
    let Some(browser) = Browser::start("you-said-we-did").await else {
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_demo(data.path(), &[]);

    browser.open(&service, "/you-said-we-did").await;
    browser.check_page("you-said-we-did").await;

    // The demo's authors sign some stories with their name and contact details; the public
    // page must show none of it, nor the loops' ids (demo-000000 to demo-004999).
    let authors = demo_authors();
    let names: Vec<&str> = authors.iter().map(|(name, _)| *name).collect();
    let contacts: Vec<&str> = authors.iter().map(|(_, contact)| *contact).collect();
    let loop_ids: Vec<String> = (0..5000).map(|n| format!("demo-{n:06}")).collect();
    let loop_ids: Vec<&str> = loop_ids.iter().map(String::as_str).collect();
    let mut redacted = 0;
    for page in 1..=PAGES {
        let text = browser.text().await;
        let html = browser.html().await;
        assert!(
            text.contains("You said"),
            "page {page} of the public list shows no story:\n{text}"
        );
        redacted += text.matches("[redacted]").count();
        let leaks: Vec<String> = found(&text, &names, &contacts, &loop_ids)
            .into_iter()
            .chain(found(
                &without_drawings(&html),
                &names,
                &contacts,
                &loop_ids,
            ))
            .collect();
        assert!(
            leaks.is_empty(),
            "page {page} of the public list shows personal data: {leaks:#?}"
        );
        let Some(next) = browser.next_page_link().await else {
            break;
        };
        browser.open(&service, &next).await;
    }
    assert!(
        redacted > 0,
        "the stories read were to include redacted contact details, so that the scan has \
         something to miss; none did"
    );
    browser.finish().await;
}

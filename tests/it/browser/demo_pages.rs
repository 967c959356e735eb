//! The staff and patient-leader pages over the demo data set, as the people who use them sign
//! in: a member of staff opens the work queue and a loop; a patient leader opens the insights.
//! First the pages around them: sign-in, the printable public list, an empty filter, an error.

use super::Browser;
use super::personal::{demo_authors, found, without_drawings};
use crate::Service;

#[tokio::test(flavor = "current_thread")]
async fn the_staff_and_insights_pages_over_the_demo_are_accessible_and_fit_a_phone() {
    let Some(browser) = Browser::start("demo-pages").await else {
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let service = Service::start_demo(data.path(), &[]);

    // The pages around the three: signing in, the printable public list, a filter that
    // matches nothing, and an error page.
    browser.open(&service, "/sign-in").await;
    browser.check_page("sign-in").await;
    browser.open(&service, "/you-said-we-did/print").await;
    browser.check_page("you-said-we-did-print").await;
    browser
        .open(&service, "/you-said-we-did?theme=no+such+theme")
        .await;
    assert!(
        browser.text().await.contains("No changes match"),
        "a filter that matches nothing says so"
    );
    browser.check_page("you-said-we-did-no-match").await;
    browser.open(&service, "/you-said-we-did?limit=zero").await;
    browser.check_page("error-page").await;

    // Staff: the queue, then the first loop in it.
    browser.sign_in(&service, "staff-token-e2e").await;
    browser.open(&service, "/staff").await;
    let queue = browser.text().await;
    assert!(
        queue.contains("Overdue"),
        "the demo's queue shows overdue loops first:\n{queue}"
    );
    browser.check_page("staff").await;
    let first_loop = browser
        .first_link_starting("/staff/loops/")
        .await
        .expect("the queue links its loops");
    browser.open(&service, &first_loop).await;
    assert!(
        browser.text().await.contains("Timeline"),
        "a loop's page shows its timeline"
    );
    browser.check_page("staff-loop").await;

    // A patient leader: the insights, which must name nobody.
    browser.sign_in(&service, "leader-token-e2e").await;
    browser.open(&service, "/insights").await;
    let text = browser.text().await;
    for expected in ["Feedback from people", "fewer than 10"] {
        assert!(
            text.contains(expected),
            "the insights say {expected:?}:\n{text}"
        );
    }
    let authors = demo_authors();
    let names: Vec<&str> = authors.iter().map(|(name, _)| *name).collect();
    let contacts: Vec<&str> = authors.iter().map(|(_, contact)| *contact).collect();
    let loop_ids: Vec<String> = (0..5000).map(|n| format!("demo-{n:06}")).collect();
    let loop_ids: Vec<&str> = loop_ids.iter().map(String::as_str).collect();
    let html = without_drawings(&browser.html().await);
    let leaks: Vec<String> = found(&text, &names, &contacts, &loop_ids)
        .into_iter()
        .chain(found(&html, &names, &contacts, &loop_ids))
        .collect();
    assert!(
        leaks.is_empty(),
        "the insights show personal data: {leaks:#?}"
    );
    browser.check_page("insights").await;
    browser.finish().await;
}

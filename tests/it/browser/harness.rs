//! The harness's own checks find what they look for, so a page that passes them has passed
//! something: axe-core runs and reports violations, and the phone-width measure sees a page
//! that scrolls sideways.

use super::{Browser, PHONE, axe};

/// A page that breaks the rules: an image without a text alternative, a field without a
/// label, and a block wider than a phone.
const BROKEN_PAGE: &str = "data:text/html;charset=utf-8,<!doctype html><html lang=en><title>Broken</title>\
<main><h1>Broken</h1><img src=x.png><input><div style='width:600px'>wide</div></main></html>";

#[tokio::test(flavor = "current_thread")]
async fn the_checks_catch_a_page_that_breaks_them() {
    let Some(browser) = Browser::start("harness").await else {
        return;
    };
    browser
        .client
        .goto(BROKEN_PAGE)
        .await
        .expect("open the page");
    let violations = axe::violations(&browser.client).await;
    let failing: Vec<&str> = violations
        .iter()
        .filter(|violation| violation.fails())
        .map(|violation| violation.id.as_str())
        .collect();
    assert!(
        failing.contains(&"image-alt") && failing.contains(&"label"),
        "axe-core misses the missing alt text and label: {violations:#?}"
    );
    let width = browser.width_on_a_phone().await;
    assert!(
        width > u64::from(PHONE.0),
        "a 600 px block measured {width} px wide"
    );
    browser.finish().await;
}

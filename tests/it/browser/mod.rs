//! Browser tests: the real pages of a real `closeloop serve`, driven in a headless Chromium
//! through chromedriver (WebDriver, with `fantoccini`).
//!
//! Each test starts one [`Browser`] and uses it for every page it visits. [`Browser::check_page`]
//! is what every page gets: axe-core's WCAG 2.2 AA rules (serious and critical violations fail,
//! the rest are printed), no horizontal scrolling at a phone's width (390 CSS pixels), and
//! screenshots at desktop and phone widths in `target/browser/`, to look at after a run. With
//! `CLOSELOOP_UPDATE_SCREENSHOTS=1` the first screen of each is also written to
//! `docs/screenshots/`, for the README.
//!
//! They need Debian's `chromium` and `chromium-driver` (`scripts/test` installs them); without
//! them they fail, saying how to install them, unless `CLOSELOOP_SKIP_BROWSER_TESTS=1`.

mod axe;
mod demo_pages;
mod driver;
mod harness;
mod personal;
mod public_page;
mod staff_flow;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fantoccini::{Client, Locator};

use self::driver::{Driver, Tools};
use crate::Service;

/// The desktop window the pages are first looked at in.
const DESKTOP: (u32, u32) = (1280, 900);
/// A phone's width and height in CSS pixels (an iPhone 12 to 15).
const PHONE: (u32, u32) = (390, 844);
/// The tallest a full-page screenshot is made, in CSS pixels.
const MAX_SCREENSHOT_HEIGHT: u32 = 4000;
/// The pages whose screenshots the README shows (over the demo data set).
const README_SCREENSHOTS: &[&str] = &["you-said-we-did", "staff", "staff-loop", "insights"];

/// Set to `1` to refresh the README's screenshots in `docs/screenshots/`.
const UPDATE_SCREENSHOTS_VAR: &str = "CLOSELOOP_UPDATE_SCREENSHOTS";

/// A headless Chromium of this test's own; [`Browser::finish`] closes it.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Driver,
    started: Instant,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at desktop size, for the test `name` (which
    /// names chromedriver's log in `target/browser/`). `None` when the browser tests are
    /// skipped (`CLOSELOOP_SKIP_BROWSER_TESTS`).
    ///
    /// # Panics
    /// When Chromium or chromedriver is missing, saying how to install them.
    pub async fn start(name: &str) -> Option<Self> {
        let started = Instant::now();
        let tools = Tools::find()?;
        let log = artefacts_dir().join(format!("{name}-chromedriver.log"));
        let driver = Driver::start(&tools, &log).await;
        let client = driver.session(&tools, DESKTOP.0, DESKTOP.1).await;
        eprintln!(
            "browser: Chromium ready in {:.1} s (axe-core {})",
            started.elapsed().as_secs_f64(),
            axe::AXE_VERSION.trim()
        );
        Some(Self {
            client,
            driver,
            started,
        })
    }

    /// Opens `path` of `service` and waits for it to load.
    pub async fn open(&self, service: &Service, path: &str) {
        self.client
            .goto(&service.url(path))
            .await
            .unwrap_or_else(|err| panic!("open {path}: {err}"));
    }

    /// The text of the page as a reader sees it (`innerText` of the body).
    pub async fn text(&self) -> String {
        let text = self
            .client
            .execute("return document.body.innerText;", vec![])
            .await
            .expect("read the page's text");
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as it stands (attributes and links included).
    pub async fn html(&self) -> String {
        self.client.source().await.expect("read the page's source")
    }

    /// Signs in at `/sign-in` with `token`: types it into the first password field and
    /// submits that field's form.
    pub async fn sign_in(&self, service: &Service, token: &str) {
        self.open(service, "/sign-in").await;
        let field = self
            .client
            .find(Locator::Css("input[type=password]"))
            .await
            .expect("/sign-in has a password field");
        field.send_keys(token).await.expect("type the token");
        let submit = field
            .find(Locator::XPath(
                "./ancestor::form//*[self::button or @type='submit'][1]",
            ))
            .await
            .expect("the sign-in form has a submit button");
        self.client
            .execute("window.__closeloopSubmitted = true;", vec![])
            .await
            .expect("mark the page");
        submit.click().await.expect("submit the sign-in form");
        self.wait_for_next_page().await;
        let url = self
            .client
            .current_url()
            .await
            .expect("the current address");
        assert!(
            url.path() != "/sign-in",
            "signing in with the token was refused:\n{}",
            self.text().await
        );
    }

    /// What every page must pass, on the page open now, named `name` in the artefacts:
    /// axe-core's WCAG 2.2 AA rules with no serious or critical violation, then screenshots at
    /// desktop width, then at a phone's width no horizontal scrolling and screenshots. Leaves
    /// the window at desktop size. Moderate and minor violations are printed.
    ///
    /// # Panics
    /// On a serious or critical violation, or a page wider than the phone.
    pub async fn check_page(&self, name: &str) {
        let violations = axe::violations(&self.client).await;
        let (failing, minor): (Vec<_>, Vec<_>) =
            violations.into_iter().partition(axe::Violation::fails);
        for violation in &minor {
            eprintln!("axe on {name} (not failing): {violation}");
        }
        assert!(
            failing.is_empty(),
            "axe-core finds serious or critical WCAG 2.2 AA violations on {name}:\n{}",
            failing
                .iter()
                .map(|violation| format!("  {violation}"))
                .collect::<Vec<_>>()
                .join("\n")
        );

        self.screenshots(name, "desktop", DESKTOP).await;
        let scroll_width = self.width_on_a_phone().await;
        assert!(
            scroll_width <= u64::from(PHONE.0),
            "{name} is {scroll_width} px wide at a phone's {} px: it scrolls sideways (see {})",
            PHONE.0,
            artefacts_dir().join(format!("{name}-phone.png")).display()
        );
        self.screenshots(name, "phone", PHONE).await;
        self.resize(DESKTOP).await;
    }

    /// How wide the page is (`scrollWidth`) in a phone-sized window; the window stays so.
    async fn width_on_a_phone(&self) -> u64 {
        self.resize(PHONE).await;
        let widths = self
            .client
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .expect("measure the page");
        assert_eq!(
            widths[1].as_u64(),
            Some(u64::from(PHONE.0)),
            "the window could not be made a phone's width"
        );
        widths[0].as_u64().expect("scrollWidth")
    }

    /// Saves `<name>-<size>.png` (the first screen) and `<name>-<size>-full.png` (the whole
    /// page, up to a height) in `target/browser/`; with `CLOSELOOP_UPDATE_SCREENSHOTS=1` the
    /// first screen also in `docs/screenshots/`.
    async fn screenshots(&self, name: &str, size: &str, (width, height): (u32, u32)) {
        self.resize((width, height)).await;
        let first_screen = self.client.screenshot().await.expect("screenshot");
        save(
            &artefacts_dir().join(format!("{name}-{size}.png")),
            &first_screen,
        );
        if README_SCREENSHOTS.contains(&name)
            && std::env::var(UPDATE_SCREENSHOTS_VAR).is_ok_and(|value| value == "1")
        {
            save(
                &docs_screenshots_dir().join(format!("{name}-{size}.png")),
                &first_screen,
            );
        }
        let full_height = self
            .client
            .execute("return document.documentElement.scrollHeight;", vec![])
            .await
            .expect("measure the page")
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .unwrap_or(height)
            .clamp(height, MAX_SCREENSHOT_HEIGHT);
        if full_height > height {
            self.resize((width, full_height)).await;
            let full = self.client.screenshot().await.expect("screenshot");
            save(
                &artefacts_dir().join(format!("{name}-{size}-full.png")),
                &full,
            );
            self.resize((width, height)).await;
        }
    }

    /// Makes the page's viewport `width` × `height` CSS pixels: the window is sized, then
    /// grown by whatever its frame takes.
    async fn resize(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("measure the window");
        let frame = |index: usize, wanted: u32| {
            wanted.saturating_sub(inner[index].as_u64().map_or(wanted, |v| v as u32))
        };
        let (extra_width, extra_height) = (frame(0, width), frame(1, height));
        if extra_width > 0 || extra_height > 0 {
            self.client
                .set_window_size(width + extra_width, height + extra_height)
                .await
                .expect("resize the window");
        }
    }

    /// Closes the browser and says how long the test had it.
    pub async fn finish(self) {
        let Self {
            client,
            driver,
            started,
        } = self;
        let _ = client.close().await;
        drop(driver);
        eprintln!(
            "browser: closed after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Where the browser tests leave screenshots and logs: `target/browser/`.
pub fn artefacts_dir() -> PathBuf {
    // Test binaries live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .ancestors()
        .nth(3)
        .expect("the target directory")
        .join("browser");
    std::fs::create_dir_all(&dir).expect("create target/browser");
    dir
}

/// The README's screenshots: `docs/screenshots/`.
fn docs_screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .join("docs/screenshots");
    std::fs::create_dir_all(&dir).expect("create docs/screenshots");
    dir
}

fn save(path: &Path, png: &[u8]) {
    std::fs::write(path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

impl Browser {
    /// Fills the form on the page whose `action` ends with `action_suffix` and submits it
    /// with its submit button. Each field is found by its `name`: text fields and text areas
    /// are typed into, selects have the option of that value chosen, radios and checkboxes
    /// the one of that value clicked.
    ///
    /// # Panics
    /// When there is no such form, field or option, or no submit button.
    pub async fn submit_form(&self, action_suffix: &str, fields: &[(&str, &str)]) {
        let form = self
            .client
            .find(Locator::Css(&format!("form[action$='{action_suffix}']")))
            .await
            .unwrap_or_else(|err| panic!("no form posting to …{action_suffix}: {err}"));
        // A form folded in a <details> is opened first, as a person would by its summary.
        self.client
            .execute(
                "const folded = arguments[0].closest('details'); if (folded && !folded.open) { folded.querySelector('summary').click(); }",
                vec![serde_json::to_value(&form).expect("an element reference")],
            )
            .await
            .expect("open the form's details");
        for &(name, value) in fields {
            let field = form
                .find(Locator::Css(&format!("[name='{name}']")))
                .await
                .unwrap_or_else(|err| {
                    panic!("no field {name} in the form …{action_suffix}: {err}")
                });
            let tag = field.tag_name().await.expect("tag name");
            let kind = field.attr("type").await.expect("type").unwrap_or_default();
            if tag == "select" {
                field
                    .select_by_value(value)
                    .await
                    .unwrap_or_else(|err| panic!("no option {value} of {name}: {err}"));
            } else if kind == "radio" || kind == "checkbox" {
                form.find(Locator::Css(&format!("[name='{name}'][value='{value}']")))
                    .await
                    .unwrap_or_else(|err| panic!("no {kind} {name}={value}: {err}"))
                    .click()
                    .await
                    .expect("choose");
            } else {
                field.clear().await.expect("clear the field");
                field.send_keys(value).await.expect("type");
            }
        }
        // Marks this document, so that waiting for the answer can tell the two apart.
        self.client
            .execute("window.__closeloopSubmitted = true;", vec![])
            .await
            .expect("mark the page");
        form.find(Locator::Css(
            "button:not([type]),button[type=submit],input[type=submit]",
        ))
        .await
        .unwrap_or_else(|err| panic!("no submit button in the form …{action_suffix}: {err}"))
        .click()
        .await
        .expect("submit");
        self.wait_for_next_page().await;
    }

    /// Waits until the page open before a submission has been replaced by its answer and that
    /// answer has loaded, so the next look at the page sees the answer, not the form.
    async fn wait_for_next_page(&self) {
        for _ in 0..200 {
            let state = self
                .client
                .execute(
                    "return window.__closeloopSubmitted === true ? 'old' : document.readyState;",
                    vec![],
                )
                .await;
            match state {
                Ok(state) if state.as_str() == Some("complete") => return,
                // Between documents the script can fail: the old one is gone, the new not ready.
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        panic!("the answer to a form did not load within 10 s");
    }
}

impl Browser {
    /// The path of the page's first link whose path starts with `prefix`, if it has one.
    pub async fn first_link_starting(&self, prefix: &str) -> Option<String> {
        let href = self
            .client
            .execute(
                "const link = Array.from(document.querySelectorAll('a[href]')).find(a => a.getAttribute('href').startsWith(arguments[0])); return link ? link.getAttribute('href') : null;",
                vec![serde_json::Value::from(prefix)],
            )
            .await
            .expect("look for a link");
        href.as_str().map(str::to_owned)
    }

    /// The path of the page's link to the next page of a list (`rel="next"`, or a link whose
    /// query carries a `cursor`), if it has one.
    pub async fn next_page_link(&self) -> Option<String> {
        let href = self
            .client
            .execute(
                r#"const link = document.querySelector("a[rel~=next], a[href*='cursor=']");
                   return link ? link.getAttribute("href") : null;"#,
                vec![],
            )
            .await
            .expect("look for the next page");
        href.as_str().map(str::to_owned)
    }
}

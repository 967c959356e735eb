//! The HTML pages: what the public, staff and patient leaders read, rendered on the server
//! with [maud] (templates checked at compile time, every interpolation escaped) in the NHS
//! design system's markup, and working without JavaScript.
//!
//! This module holds what every page shares:
//! - [`Site`]: the organisation the pages speak for and the display names of its places
//!   (configured by the operator; the binary reads them from `CLOSELOOP_ORGANISATION` and
//!   `CLOSELOOP_PLACES_FILE`).
//! - [`layout`]: the page frame — skip link, NHS header with the organisation's name and the
//!   section's navigation, the main landmark, footer — around a page's body.
//! - [`shown`]: text from the log made safe to show beyond escaping: control characters and
//!   bidirectional overrides, which could make a story display as something else, are
//!   neutralised.
//! - [`html`]: the response with the headers every page carries (a strict
//!   `Content-Security-Policy` among them: pages load nothing from elsewhere and run no
//!   script).
//!
//! The pages themselves live in one module each: `public` ("You said, we did", its printable
//! view, Atom feed and embeddable snippet).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html as markup};

use crate::assets;

pub mod charts;
mod form;
pub(crate) mod insights;
pub(crate) mod public;
pub(crate) mod refusal;
pub mod session;
pub(crate) mod sign_in;
pub(crate) mod staff;

/// The organisation the pages speak for, and how its places are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The organisation's name as people know it, e.g. "Northshire Hospitals NHS Foundation
    /// Trust"; shown in the header and the page titles.
    pub organisation: String,
    /// Display names of org units (`rxx/royal-infirmary/ward-7` → "Ward 7, Royal
    /// Infirmary"). An org unit without one is named after its nearest named ancestor, or
    /// by its last path segment ([`Site::place_name`]).
    pub places: BTreeMap<String, String>,
    /// Where people give feedback (a web address), shown on the public page; `None` to say
    /// "ask a member of staff" only.
    pub feedback_url: Option<String>,
}

impl Default for Site {
    fn default() -> Self {
        Self {
            organisation: "Closeloop".to_owned(),
            places: BTreeMap::new(),
            feedback_url: None,
        }
    }
}

/// A line of a places file that is not `org_unit = Display name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct PlacesError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it, and how to write it.
    pub problem: String,
}

/// Longest display name of a place, in bytes.
pub const MAX_PLACE_NAME_BYTES: usize = 200;
/// Most places a places file may name.
pub const MAX_PLACES: usize = 10_000;

impl Site {
    /// The display names in a places file: one `org_unit = Display name` a line; blank lines
    /// and lines starting with `#` are skipped.
    ///
    /// # Errors
    /// [`PlacesError`] naming the first faulty line.
    pub fn parse_places(text: &str) -> Result<BTreeMap<String, String>, PlacesError> {
        let mut places = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |problem: &str| PlacesError {
                line: index + 1,
                problem: problem.to_owned(),
            };
            let (org_unit, name) = line.split_once('=').ok_or_else(|| {
                fail("write each place as `org_unit = Display name`, e.g. `rxx/royal-infirmary/ward-7 = Ward 7, Royal Infirmary`")
            })?;
            let (org_unit, name) = (org_unit.trim(), name.trim());
            closeloop_domain::OrgUnit::parse(org_unit).map_err(|err| fail(&err.to_string()))?;
            if name.is_empty() || name.len() > MAX_PLACE_NAME_BYTES {
                return Err(fail(&format!(
                    "the display name must be 1 to {MAX_PLACE_NAME_BYTES} bytes"
                )));
            }
            if name.chars().any(char::is_control) {
                return Err(fail("the display name must not hold control characters"));
            }
            if places
                .insert(org_unit.to_owned(), name.to_owned())
                .is_some()
            {
                return Err(fail(&format!("{org_unit} is named twice")));
            }
            if places.len() > MAX_PLACES {
                return Err(fail(&format!(
                    "a places file names at most {MAX_PLACES} places"
                )));
            }
        }
        Ok(places)
    }

    /// The place an org unit is shown as: its display name; else its nearest named
    /// ancestor's, after its own last segment ("Ward 12, City Hospital"); else its last
    /// segment made readable ("ward-12" → "Ward 12").
    #[must_use]
    pub fn place_name(&self, org_unit: &str) -> String {
        if let Some(name) = self.places.get(org_unit) {
            return name.clone();
        }
        let own = readable(org_unit.rsplit('/').next().unwrap_or(org_unit));
        let mut ancestor = org_unit;
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if let Some(name) = self.places.get(parent) {
                return format!("{own}, {name}");
            }
            ancestor = parent;
        }
        own
    }
}

/// A path segment made readable: dashes and underscores as spaces, the first letter
/// capitalised.
fn readable(segment: &str) -> String {
    let spaced = segment.replace(['-', '_'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Text from the log, made safe to show: control characters (but line breaks and tabs) and
/// the bidirectional formatting characters (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F,
/// U+061C) become U+FFFD, so a story cannot hide or reorder what the page shows around it.
/// Escaping (`<script>` as text) is maud's, on every interpolation.
#[must_use]
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && !matches!(c, '\n' | '\t'))
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    };
    if text.chars().any(unsafe_char) {
        text.chars()
            .map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Which part of the service a page belongs to: it picks the header's navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The public pages: no navigation but the page itself.
    Public,
    /// The staff work queue.
    Staff,
    /// The patient leaders' insights.
    Insights,
}

/// What the frame of one page needs besides its body.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The page's own title, first in `<title>` ("Open loops – Ward 7 – Closeloop").
    pub title: &'a str,
    /// Its section.
    pub section: Section,
    /// Who is signed in (their actor name), for the sign-out link; `None` on public pages.
    pub signed_in: Option<&'a str>,
    /// The sign-out form's CSRF token, when someone is signed in.
    pub csrf: Option<&'a str>,
    /// Extra `<link>`s for `<head>`, e.g. the Atom feed's.
    pub head: Option<Markup>,
}

impl<'a> Frame<'a> {
    /// A public page's frame.
    #[must_use]
    pub fn public(title: &'a str) -> Self {
        Self {
            title,
            section: Section::Public,
            signed_in: None,
            csrf: None,
            head: None,
        }
    }
}

/// The NHS logo's path (from `nhsuk-frontend`'s header).
const NHS_LOGO: &str = "M200 0v80H0V0h200Zm-27.5 5.5c-14.5 0-29 5-29 22 0 10.2 7.7 13.5 14.7 16.3l.7.3c5.4 2 10.1 3.9 10.1 8.4 0 6.5-8.5 7.5-14 7.5s-12.5-1.5-16-3.5L135 70c5.5 2 13.5 3.5 20 3.5 15.5 0 32-4.5 32-22.5 0-19.5-25.5-16.5-25.5-25.5 0-5.5 5.5-6.5 12.5-6.5a35 35 0 0 1 14.5 3l4-13.5c-4.5-2-12-3-20-3Zm-131 2h-22l-14 65H22l9-45h.5l13.5 45h21.5l14-65H64l-9 45h-.5l-13-45Zm63 0h-18l-13 65h17l6-28H117l-5.5 28H129l13.5-65H125L119.5 32h-20l5-24.5Z";

/// A whole page: the frame around `body`, which goes inside `<main>`.
#[must_use]
pub fn layout(site: &Site, frame: &Frame<'_>, body: &Markup) -> Markup {
    let home = match frame.section {
        Section::Public => "/you-said-we-did",
        Section::Staff => "/staff",
        Section::Insights => "/insights",
    };
    let nav: &[(&str, &str)] = match frame.section {
        Section::Public => &[],
        Section::Staff => &[
            ("/staff", "Open loops"),
            ("/you-said-we-did", "You said, we did"),
        ],
        Section::Insights => &[
            ("/insights", "Insights"),
            ("/you-said-we-did", "You said, we did"),
        ],
    };
    markup! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " – " (site.organisation) }
                link rel="stylesheet" href=(assets::stylesheet_path());
                link rel="stylesheet" href=(assets::site_stylesheet_path());
                link rel="icon" type="image/svg+xml" href=(assets::FAVICON_PATH);
                @if let Some(head) = &frame.head { (head) }
            }
            body {
                a class="nhsuk-skip-link" href="#maincontent" { "Skip to main content" }
                header class="nhsuk-header nhsuk-header--organisation" role="banner" {
                    div class="nhsuk-header__container nhsuk-width-container" {
                        div class="nhsuk-header__service" {
                            a class="nhsuk-header__service-logo" href=(home) aria-label={ (site.organisation) " homepage" } {
                                svg class="nhsuk-header__logo" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 80" height="40" width="100" focusable="false" role="img" aria-label="NHS" {
                                    title { "NHS" }
                                    path fill="currentcolor" d=(PreEscaped(NHS_LOGO)) {}
                                }
                                span class="nhsuk-header__organisation-name" { (site.organisation) }
                            }
                        }
                        @if let Some(actor) = frame.signed_in {
                            div class="nhsuk-header__account" {
                                ul class="nhsuk-header__account-list" {
                                    li class="nhsuk-header__account-item" { "Signed in as " (actor) }
                                    li class="nhsuk-header__account-item" {
                                        form class="nhsuk-header__account-form" method="post" action="/sign-out" {
                                            @if let Some(csrf) = frame.csrf {
                                                input type="hidden" name="csrf" value=(csrf);
                                            }
                                            button class="nhsuk-header__account-button" type="submit" { "Sign out" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if !nav.is_empty() {
                        nav class="nhsuk-header__navigation" aria-label="Menu" {
                            div class="nhsuk-header__navigation-container nhsuk-width-container" {
                                ul class="nhsuk-header__navigation-list" {
                                    @for (href, label) in nav {
                                        li class="nhsuk-header__navigation-item" {
                                            a class="nhsuk-header__navigation-link" href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                div class="nhsuk-width-container" {
                    main class="nhsuk-main-wrapper" id="maincontent" role="main" {
                        (body)
                    }
                }
                footer class="nhsuk-footer" role="contentinfo" {
                    div class="nhsuk-width-container" {
                        div class="nhsuk-footer__meta" {
                            h2 class="nhsuk-u-visually-hidden" { "Support links" }
                            ul class="nhsuk-footer__list" {
                                li class="nhsuk-footer__list-item" {
                                    a class="nhsuk-footer__list-item-link" href="/you-said-we-did" { "You said, we did" }
                                }
                                li class="nhsuk-footer__list-item" {
                                    a class="nhsuk-footer__list-item-link" href="/staff" { "Staff sign in" }
                                }
                            }
                            p class="nhsuk-body-s" { "© " (site.organisation) ". Published with Closeloop." }
                        }
                    }
                }
            }
        }
    }
}

/// The `Content-Security-Policy` of every page: nothing from elsewhere, no script, forms
/// post only here, and no other site may frame a page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page as a response: `text/html`, with the headers every page carries.
#[must_use]
pub fn html(page: Markup) -> Response {
    let mut response = page.into_response();
    page_headers(response.headers_mut());
    response
}

/// Sets the headers every page carries (see [`html`]) on a response made otherwise.
pub(crate) fn page_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_named_by_their_own_or_their_nearest_named_ancestors_name() {
        let site = Site {
            places: Site::parse_places(
                "# demo\nrxx/royal-infirmary = Royal Infirmary\n\nrxx/royal-infirmary/ward-7 = Ward 7 (older people)\n",
            )
            .expect("places"),
            ..Site::default()
        };
        assert_eq!(
            site.place_name("rxx/royal-infirmary/ward-7"),
            "Ward 7 (older people)"
        );
        assert_eq!(
            site.place_name("rxx/royal-infirmary/ward-9"),
            "Ward 9, Royal Infirmary"
        );
        assert_eq!(site.place_name("ryy/city-hospital/children"), "Children");
    }

    #[test]
    fn a_faulty_places_file_is_refused_by_line() {
        let err = Site::parse_places("rxx = Trust\nno equals sign\n").expect_err("faulty");
        assert_eq!(err.line, 2);
        let err = Site::parse_places("rxx = A\nrxx = B\n").expect_err("twice");
        assert!(err.problem.contains("twice"), "{err}");
        let err = Site::parse_places("rxx = \n").expect_err("empty");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn control_and_bidi_characters_are_neutralised_and_markup_escaped() {
        assert_eq!(shown("plain\ntext"), "plain\ntext");
        assert_eq!(
            shown("a\u{202E}b\u{0007}c\u{2066}"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}"
        );
        let page = markup! { p { (shown("<script>alert(1)</script>")) } }.into_string();
        assert_eq!(page, "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
    }

    #[test]
    fn the_frame_has_the_landmarks_a_page_needs() {
        let site = Site::default();
        let page = layout(
            &site,
            &Frame::public("You said, we did"),
            &markup! { h1 { "Hello" } },
        )
        .into_string();
        for part in [
            "<html lang=\"en\">",
            "name=\"viewport\"",
            "class=\"nhsuk-skip-link\" href=\"#maincontent\"",
            "role=\"banner\"",
            "id=\"maincontent\"",
            "role=\"contentinfo\"",
            assets::stylesheet_path(),
            assets::site_stylesheet_path(),
        ] {
            assert!(page.contains(part), "the frame lacks {part}: {page}");
        }
    }
}

//! "You said, we did" for the public, in four forms, all from the same entries
//! (`reads::published_page`: the published read model, stories redacted, `ETag`s answered 304
//! before anything is read):
//!
//! - `GET /you-said-we-did`: the page, in the NHS frame. What it is and how to give feedback,
//!   filters by place and topic (only those with entries), a card per entry — what people
//!   said, the topics, what changed, when and where — newest first, 20 a page.
//! - `GET /you-said-we-did/print`: the newest 50 entries as a compact list for a ward
//!   noticeboard, without navigation or filter form.
//! - `GET /you-said-we-did/feed.atom`: the newest 50 entries as an Atom feed (RFC 4287).
//! - `GET /you-said-we-did/snippet`: the newest 1 to 10 entries as an HTML fragment that a
//!   trust's own website includes (server-side, or fetched: it allows every origin).
//!
//! Each takes the filters `place` (an org unit, with everything below it) and `theme`.
//!
//! What keeps them small and safe: every text from the log goes through [`shown`] (control
//! and bidirectional characters neutralised) and maud's escaping, and is cut to a bounded
//! size *as escaped*, so a page of the largest size holding 100,000-byte stories, long names
//! and every character that escapes long still stays under 100 KB (see the budgets below). An
//! entry never shows its loop id, only its opaque public id (in the feed), and never an
//! author's name or contact: stories are redacted before they get here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use closeloop_domain::OrgUnit;
use closeloop_projections::{PublicKey, PublishedFilter};
use closeloop_store::EventStore;
use jiff::Timestamp;
use maud::{Markup, PreEscaped, html as markup};

use super::{Frame, Site, html, layout, shown};
use crate::AppState;
use crate::error::ApiError;
use crate::guard::Admission;
use crate::reads::{
    PublicAnswer, PublicEntry, PublicKind, PublicRequest, cache_headers, filter_query, models,
    not_modified, published_page,
};

/// Where the page is.
const PAGE: &str = "/you-said-we-did";
/// Where its printable view is.
const PRINT: &str = "/you-said-we-did/print";
/// Where its Atom feed is.
const FEED: &str = "/you-said-we-did/feed.atom";

// Budgets, in bytes of escaped text. A card of the page holds at most a story, a change, a
// heading, five topics and a place, each cut to its budget, about 3.3 KB with its markup;
// twenty of them, the frame (about 4 KB) and two filter lists (at most `OPTIONS_BYTES` each,
// plus their markup) stay under 100 KB. The noticeboard's entries are smaller, fifty a page.
/// A story or a change on a card of the page or the snippet.
const CARD_TEXT_BYTES: usize = 600;
/// A story or a change on the noticeboard.
const PRINT_TEXT_BYTES: usize = 300;
/// A story or a change in the feed (which has no page budget, but no reason to be large).
const FEED_TEXT_BYTES: usize = 1_000;
/// One topic, as a tag or in a heading.
const TOPIC_BYTES: usize = 60;
/// A place's name.
const PLACE_BYTES: usize = 200;
/// Topics shown as tags on a card; the rest are counted ("and 3 more").
const TAGS_SHOWN: usize = 5;
/// Topics named in a card's heading.
const HEADING_TOPICS: usize = 3;
/// Choices a filter list offers at most (the places or topics with the most entries).
const MAX_OPTIONS: usize = 100;
/// Bytes of escaped values and labels a filter list holds at most.
const OPTIONS_BYTES: usize = 6_000;

/// `GET /you-said-we-did`: the page.
pub(crate) async fn page<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(admission): Extension<Admission>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let request = PublicRequest::parse(&params, PublicKind::Page)?;
    let (entries, next, etag) = match published_page(&state, &admission, &headers, &request).await?
    {
        PublicAnswer::NotModified { etag } => return Ok(not_modified(&etag)),
        PublicAnswer::Page {
            entries,
            next,
            etag,
        } => (entries, next, etag),
    };
    let choices = Choices::of(&state, &request.filter)?;
    let body = page_body(&state.site, &request, &entries, next.as_deref(), &choices);
    let feed = with_query(FEED, &filter_query(&request.filter));
    let frame = Frame {
        head: Some(markup! {
            link rel="alternate" type="application/atom+xml" title="You said, we did (Atom feed)" href=(feed);
        }),
        ..Frame::public("You said, we did")
    };
    let mut response = html(layout(&state.site, &frame, &body));
    cache_headers(&mut response, &etag);
    Ok(response)
}

/// `GET /you-said-we-did/print`: the noticeboard.
pub(crate) async fn print<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(admission): Extension<Admission>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let request = PublicRequest::parse(&params, PublicKind::Print)?;
    let (entries, etag) = match published_page(&state, &admission, &headers, &request).await? {
        PublicAnswer::NotModified { etag } => return Ok(not_modified(&etag)),
        PublicAnswer::Page { entries, etag, .. } => (entries, etag),
    };
    let body = print_body(&state.site, &request.filter, &entries);
    let frame = Frame::public("You said, we did (printable)");
    let mut response = html(layout(&state.site, &frame, &body));
    cache_headers(&mut response, &etag);
    Ok(response)
}

/// `GET /you-said-we-did/feed.atom`: the Atom feed.
pub(crate) async fn feed<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(admission): Extension<Admission>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let request = PublicRequest::parse(&params, PublicKind::Feed)?;
    let (entries, etag) = match published_page(&state, &admission, &headers, &request).await? {
        PublicAnswer::NotModified { etag } => return Ok(not_modified(&etag)),
        PublicAnswer::Page { entries, etag, .. } => (entries, etag),
    };
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/atom+xml; charset=utf-8"),
        )],
        atom(&state.site, &request.filter, &entries),
    )
        .into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    cache_headers(&mut response, &etag);
    Ok(response)
}

/// `GET /you-said-we-did/snippet`: the fragment for other sites, readable from any origin.
pub(crate) async fn snippet<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(admission): Extension<Admission>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut request = PublicRequest::parse(&params, PublicKind::Snippet)?;
    request.origin = origin(&headers);
    let mut response = match published_page(&state, &admission, &headers, &request).await? {
        PublicAnswer::NotModified { etag } => not_modified(&etag),
        PublicAnswer::Page { entries, etag, .. } => {
            let mut response = html(snippet_body(&state.site, &request, &entries));
            cache_headers(&mut response, &etag);
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // The link to the full page is made from the request's host and scheme.
    headers.insert(header::VARY, HeaderValue::from_static("x-forwarded-proto"));
    Ok(response)
}

/// The scheme and host the snippet's link to the full page uses (it is shown on another
/// site, so it links absolutely): the `Host` of the request, when it is a plain host name or
/// address with an optional port, and `https` when a proxy says so in `X-Forwarded-Proto`.
/// `None` (a link relative to where the snippet is shown) without a usable `Host`.
fn origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain {
        return None;
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let scheme = if https { "https" } else { "http" };
    Some(format!("{scheme}://{host}"))
}

/// `path` with `query` when there is one.
fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// How many bytes `c` takes once escaped in HTML or XML text or attributes.
fn escaped_len(c: char) -> usize {
    match c {
        '&' => "&amp;".len(),
        '<' | '>' => "&lt;".len(),
        '"' => "&quot;".len(),
        '\'' => "&#39;".len(),
        c => c.len_utf8(),
    }
}

/// How many bytes `text` takes once escaped.
fn escaped_size(text: &str) -> usize {
    text.chars().map(escaped_len).sum()
}

/// Text from the log made safe to show ([`shown`]) and cut so that, escaped, it takes at most
/// `max` bytes: a cut text ends after its last whole word that fits (or mid-word, when a word
/// is longer than half of it) with "…".
pub(crate) fn clipped(text: &str, max: usize) -> Cow<'_, str> {
    let text = shown(text);
    if escaped_size(&text) <= max {
        return text;
    }
    let room = max.saturating_sub('…'.len_utf8());
    let mut used = 0;
    let mut end = 0;
    for (at, c) in text.char_indices() {
        used += escaped_len(c);
        if used > room {
            break;
        }
        end = at + c.len_utf8();
    }
    let kept = &text[..end];
    let kept = match kept.rfind(char::is_whitespace) {
        Some(space) if space >= end / 2 => &kept[..space],
        _ => kept,
    };
    format!("{}…", kept.trim_end()).into()
}

/// A date as people read it, in the UK's time zone: "25 November 2026".
fn readable_date(at: Timestamp) -> String {
    let zone = jiff::tz::TimeZone::get("Europe/London").unwrap_or(jiff::tz::TimeZone::UTC);
    at.to_zoned(zone).strftime("%-d %B %Y").to_string()
}

/// `text` with its first letter in capitals.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An entry as the pages show it: its texts made safe and cut to the budget of the form.
struct ShownEntry<'a> {
    entry: &'a PublicEntry,
    heading: String,
    place: String,
    you_said: Cow<'a, str>,
    we_did: Cow<'a, str>,
    date: String,
}

impl<'a> ShownEntry<'a> {
    /// The entries, each with a heading no other entry of the list has (a screen reader's
    /// list of headings tells them apart): its topics and place, then its date if another
    /// has the same, then its number in the list if even that is the same.
    fn all(site: &Site, entries: &'a [PublicEntry], text_bytes: usize) -> Vec<Self> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let place =
                    clipped(&site.place_name(entry.org_unit.as_str()), PLACE_BYTES).into_owned();
                let date = readable_date(entry.closed_at);
                let mut heading = format!("{} – {place}", about(&entry.themes));
                if seen.contains_key(&heading) {
                    heading = format!("{heading}, {date}");
                }
                if seen.contains_key(&heading) {
                    heading = format!("{heading} (entry {})", index + 1);
                }
                seen.insert(heading.clone(), index);
                let you_said = if entry.you_said.trim().is_empty() {
                    // No story to show: the entry says what it was about instead.
                    Cow::Owned(match topics(&entry.themes, HEADING_TOPICS) {
                        Some(topics) => format!("You told us about {topics}."),
                        None => format!("You gave us feedback about {place}."),
                    })
                } else {
                    clipped(&entry.you_said, text_bytes)
                };
                Self {
                    entry,
                    heading,
                    place,
                    you_said,
                    we_did: clipped(&entry.we_did, text_bytes),
                    date,
                }
            })
            .collect()
    }

    /// The `datetime` of its date: the closing time, RFC 3339, in whole seconds (what a reader
    /// or feed needs; nanoseconds would only be noise).
    fn datetime(&self) -> String {
        let seconds = self.entry.closed_at.as_second();
        jiff::Timestamp::from_second(seconds)
            .unwrap_or(self.entry.closed_at)
            .to_string()
    }
}

/// What an entry is about, for its heading: its first topics, or "Feedback".
fn about(themes: &[String]) -> String {
    topics(themes, HEADING_TOPICS).map_or_else(|| "Feedback".to_owned(), |t| capitalised(&t))
}

/// The first `max` topics joined ("noise, food and 2 more"); `None` without any.
fn topics(themes: &[String], max: usize) -> Option<String> {
    let given: Vec<&String> = themes
        .iter()
        .filter(|theme| !theme.trim().is_empty())
        .collect();
    let named: Vec<Cow<'_, str>> = given
        .iter()
        .take(max)
        .map(|theme| clipped(theme, TOPIC_BYTES))
        .collect();
    if named.is_empty() {
        return None;
    }
    let mut text = named.join(", ");
    let rest = given.len() - named.len();
    if rest > 0 {
        text.push_str(&format!(" and {rest} more"));
    }
    Some(text)
}

/// The choices of the page's filter lists: places and topics that have entries.
struct Choices {
    /// `(value, label)`: org unit and display name, in org unit order (a hospital before
    /// its wards).
    places: Vec<(String, String)>,
    /// `(value, label)`: topic and its shown text, alphabetically.
    topics: Vec<(String, String)>,
}

impl Choices {
    /// The places and topics with the most entries, within [`MAX_OPTIONS`] and
    /// [`OPTIONS_BYTES`] each, and whatever `filter` chose. A place that holds every entry
    /// (the whole trust) is left out: it would filter nothing.
    fn of<S>(state: &AppState<S>, filter: &PublishedFilter) -> Result<Self, ApiError> {
        let models = models(state)?;
        let total = u64::try_from(models.published_count()).unwrap_or(u64::MAX);
        let chosen_place = filter.place.as_ref().map(OrgUnit::as_str);
        let mut places: Vec<(String, String)> = within_budget(
            models
                .published_places(MAX_OPTIONS)
                .into_iter()
                .filter(|(org, count)| *count < total && Some(org.as_str()) != chosen_place)
                .map(|(org, _)| {
                    let label =
                        clipped(&state.site.place_name(org.as_str()), PLACE_BYTES).into_owned();
                    (org.as_str().to_owned(), label)
                }),
        );
        if let Some(place) = chosen_place {
            let label = clipped(&state.site.place_name(place), PLACE_BYTES).into_owned();
            places.push((place.to_owned(), label));
        }
        places.sort();
        // Two places shown alike (wards of the same name in two hospitals without display
        // names) are told apart by their org units.
        let mut labels: HashMap<String, usize> = HashMap::new();
        for (_, label) in &places {
            *labels.entry(label.clone()).or_default() += 1;
        }
        for (value, label) in &mut places {
            if labels[label.as_str()] > 1 {
                *label = format!("{label} ({})", shown(value));
            }
        }
        let chosen_topic = filter.theme.as_deref();
        let mut topics: Vec<(String, String)> = within_budget(
            models
                .published_themes(MAX_OPTIONS)
                .into_iter()
                // A topic stored with control or bidirectional characters (before input
                // checks refused them) is not offered: its value would carry them as they are.
                .filter(|(theme, _)| {
                    Some(theme.as_str()) != chosen_topic && matches!(shown(theme), Cow::Borrowed(_))
                })
                .map(|(theme, _)| {
                    let label = capitalised(&clipped(&theme, TOPIC_BYTES));
                    (theme, label)
                }),
        );
        if let Some(theme) = chosen_topic.filter(|theme| matches!(shown(theme), Cow::Borrowed(_))) {
            topics.push((theme.to_owned(), capitalised(&clipped(theme, TOPIC_BYTES))));
        }
        topics.sort_by_cached_key(|(_, label)| label.to_lowercase());
        Ok(Self { places, topics })
    }
}

/// The first choices whose values and labels, escaped, fit in [`OPTIONS_BYTES`].
fn within_budget(choices: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut used = 0;
    choices
        .take_while(|(value, label)| {
            used += escaped_size(value) + escaped_size(label);
            used <= OPTIONS_BYTES
        })
        .collect()
}

/// The body of the page.
fn page_body(
    site: &Site,
    request: &PublicRequest,
    entries: &[PublicEntry],
    next: Option<&str>,
    choices: &Choices,
) -> Markup {
    let filter = &request.filter;
    let filters = filter_query(filter);
    let shown = ShownEntry::all(site, entries, CARD_TEXT_BYTES);
    markup! {
        h1 { "You said, we did" }
        p class="nhsuk-lede-text" {
            "People who use our services tell us what they think of them. These are changes we made because of what they said, newest first."
        }
        p {
            "We share what someone told us only if they agreed to it, and we take out names, phone numbers and email addresses first."
        }
        (how_to_give_feedback(site))
        @if !choices.places.is_empty() || !choices.topics.is_empty() {
            (filter_form(filter, choices))
        }
        p class="nhsuk-body-s closeloop-no-print" {
            a href=(with_query(PRINT, &filters)) { "Printable version" }
            " · "
            a href=(with_query(FEED, &filters)) { "Follow these changes in a feed reader (Atom feed)" }
        }
        @if shown.is_empty() {
            @if request.cursor.is_some() {
                h2 { "No older changes" }
                p { a href=(with_query(PAGE, &filters)) { "Back to the newest changes" } }
            } @else if !filter.is_empty() {
                h2 { "No changes match these filters" }
                p { "Try another place or topic." }
                p { a href=(PAGE) { "Show all changes" } }
            } @else {
                h2 { "Nothing to show yet" }
                p { "When we make a change because of what someone told us, it will be shown here." }
            }
        } @else {
            ul class="closeloop-entries" {
                @for entry in &shown {
                    li { (card(entry)) }
                }
            }
        }
        (pagination(request, next))
    }
}

/// "To tell us about your care, …": the feedback address when there is a web one.
fn how_to_give_feedback(site: &Site) -> Markup {
    let web = site
        .feedback_url
        .as_deref()
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"));
    markup! {
        p {
            "To tell us about your care, "
            @if let Some(url) = web {
                a href=(url) { "give feedback online" } " or ask any member of staff."
            } @else {
                "ask any member of staff."
            }
        }
    }
}

/// The filter form: a list of places and one of topics, each only when it has choices.
fn filter_form(filter: &PublishedFilter, choices: &Choices) -> Markup {
    let chosen_place = filter.place.as_ref().map(OrgUnit::as_str);
    let chosen_topic = filter.theme.as_deref();
    markup! {
        form class="closeloop-filters closeloop-no-print" method="get" action=(PAGE) {
            fieldset class="nhsuk-fieldset" {
                legend class="nhsuk-fieldset__legend nhsuk-fieldset__legend--s" { "Show changes for" }
                div class="nhsuk-grid-row" {
                    @if !choices.places.is_empty() {
                        div class="nhsuk-grid-column-one-half nhsuk-form-group" {
                            label class="nhsuk-label" for="place" { "Place" }
                            select class="nhsuk-select" id="place" name="place" {
                                option value="" { "All places" }
                                @for (value, label) in &choices.places {
                                    option value=(value) selected[Some(value.as_str()) == chosen_place] { (label) }
                                }
                            }
                        }
                    }
                    @if !choices.topics.is_empty() {
                        div class="nhsuk-grid-column-one-half nhsuk-form-group" {
                            label class="nhsuk-label" for="theme" { "Topic" }
                            select class="nhsuk-select" id="theme" name="theme" {
                                option value="" { "All topics" }
                                @for (value, label) in &choices.topics {
                                    option value=(value) selected[Some(value.as_str()) == chosen_topic] { (label) }
                                }
                            }
                        }
                    }
                }
            }
            button class="nhsuk-button nhsuk-button--secondary" type="submit" { "Show changes" }
        }
    }
}

/// One entry as an NHS card: its heading, then what people said, the topics, what changed,
/// when and where.
fn card(entry: &ShownEntry<'_>) -> Markup {
    let themes = &entry.entry.themes;
    markup! {
        div class="nhsuk-card" {
            div class="nhsuk-card__content" {
                h2 class="nhsuk-card__heading nhsuk-heading-s" { (entry.heading) }
                dl class="nhsuk-summary-list nhsuk-summary-list--no-border" {
                    div class="nhsuk-summary-list__row" {
                        dt class="nhsuk-summary-list__key" { "You said" }
                        dd class="nhsuk-summary-list__value closeloop-text" { (entry.you_said) }
                    }
                    @if !themes.is_empty() {
                        div class="nhsuk-summary-list__row" {
                            dt class="nhsuk-summary-list__key" { "Topics" }
                            dd class="nhsuk-summary-list__value" {
                                ul class="closeloop-tags" {
                                    @for theme in themes.iter().take(TAGS_SHOWN) {
                                        li { strong class="nhsuk-tag nhsuk-tag--white" { (clipped(theme, TOPIC_BYTES)) } }
                                    }
                                    @if themes.len() > TAGS_SHOWN {
                                        li { "and " (themes.len() - TAGS_SHOWN) " more" }
                                    }
                                }
                            }
                        }
                    }
                    div class="nhsuk-summary-list__row" {
                        dt class="nhsuk-summary-list__key" { "We did" }
                        dd class="nhsuk-summary-list__value closeloop-text" { (entry.we_did) }
                    }
                    div class="nhsuk-summary-list__row" {
                        dt class="nhsuk-summary-list__key" { "When" }
                        dd class="nhsuk-summary-list__value" { time datetime=(entry.datetime()) { (entry.date) } }
                    }
                    div class="nhsuk-summary-list__row" {
                        dt class="nhsuk-summary-list__key" { "Where" }
                        dd class="nhsuk-summary-list__value" { (entry.place) }
                    }
                }
            }
        }
    }
}

/// The arrows of the design system's pagination.
const ARROW_LEFT: &str = "M10.7 6.3c.4.4.4 1 0 1.4L7.4 11H19a1 1 0 0 1 0 2H7.4l3.3 3.3c.4.4.4 1 0 1.4a1 1 0 0 1-1.4 0l-5-5A1 1 0 0 1 4 12c0-.3.1-.5.3-.7l5-5a1 1 0 0 1 1.4 0Z";
const ARROW_RIGHT: &str = "m14.7 6.3 5 5c.2.2.3.4.3.7 0 .3-.1.5-.3.7l-5 5a1 1 0 0 1-1.4-1.4l3.3-3.3H5a1 1 0 0 1 0-2h11.6l-3.3-3.3a1 1 0 1 1 1.4-1.4Z";

/// "Newest changes" back to the first page (on a later page) and "Older changes" on to the
/// next, keeping the filters; nothing on a page that is both the first and the last.
fn pagination(request: &PublicRequest, next: Option<&str>) -> Markup {
    let first = request
        .cursor
        .is_some()
        .then(|| with_query(PAGE, &request.query(None)));
    let older = next.map(|cursor| with_query(PAGE, &request.query(Some(cursor))));
    markup! {
        @if first.is_some() || older.is_some() {
            nav class="nhsuk-pagination closeloop-no-print" role="navigation" aria-label="Pagination" {
                ul class="nhsuk-list nhsuk-pagination__list" {
                    @if let Some(href) = &first {
                        li class="nhsuk-pagination-item--previous" {
                            a class="nhsuk-pagination__link nhsuk-pagination__link--prev" href=(href) {
                                span class="nhsuk-pagination__title" { "Newest" span class="nhsuk-u-visually-hidden" { " changes" } }
                                span class="nhsuk-u-visually-hidden" { ":" }
                                span class="nhsuk-pagination__page" { "Back to the start" }
                                svg class="nhsuk-icon nhsuk-icon--arrow-left" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16" focusable="false" aria-hidden="true" {
                                    path d=(PreEscaped(ARROW_LEFT)) {}
                                }
                            }
                        }
                    }
                    @if let Some(href) = &older {
                        li class="nhsuk-pagination-item--next" {
                            a class="nhsuk-pagination__link nhsuk-pagination__link--next" href=(href) rel="next" {
                                span class="nhsuk-pagination__title" { "Older" span class="nhsuk-u-visually-hidden" { " changes" } }
                                span class="nhsuk-u-visually-hidden" { ":" }
                                span class="nhsuk-pagination__page" { "Next page" }
                                svg class="nhsuk-icon nhsuk-icon--arrow-right" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16" focusable="false" aria-hidden="true" {
                                    path d=(PreEscaped(ARROW_RIGHT)) {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What the filters chose, in words: " at Ward 7 about noise", or nothing.
fn filters_in_words(site: &Site, filter: &PublishedFilter) -> String {
    let mut words = String::new();
    if let Some(place) = &filter.place {
        words.push_str(" at ");
        words.push_str(&clipped(&site.place_name(place.as_str()), PLACE_BYTES));
    }
    if let Some(theme) = &filter.theme {
        words.push_str(" about ");
        words.push_str(&clipped(theme, TOPIC_BYTES));
    }
    words
}

/// The body of the noticeboard: a heading, what it is, how to give feedback, and the entries
/// in short.
fn print_body(site: &Site, filter: &PublishedFilter, entries: &[PublicEntry]) -> Markup {
    let shown = ShownEntry::all(site, entries, PRINT_TEXT_BYTES);
    let web = site
        .feedback_url
        .as_deref()
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"));
    markup! {
        h1 { "You said, we did" }
        p class="nhsuk-body-l" {
            "Changes " (site.organisation) " made" (filters_in_words(site, filter))
            " because of what patients, carers and visitors told us. Newest first."
        }
        p {
            "To tell us about your care, ask any member of staff"
            @if let Some(url) = web { ", or go to " (url) }
            "."
        }
        p class="closeloop-no-print" {
            a href=(with_query(PAGE, &filter_query(filter))) { "Back to the full page" }
        }
        @if shown.is_empty() {
            p { "There are no changes to show yet." }
        } @else {
            ol class="closeloop-print" {
                @for entry in &shown {
                    li class="closeloop-print-entry" {
                        h2 class="nhsuk-heading-xs nhsuk-u-margin-bottom-1" { (entry.heading) }
                        p class="closeloop-text" { strong { "You said: " } (entry.you_said) }
                        p class="closeloop-text" { strong { "We did: " } (entry.we_did) }
                        p class="nhsuk-body-s" { time datetime=(entry.datetime()) { (entry.date) } }
                    }
                }
            }
        }
    }
}

/// The snippet: a card holding the newest entries and a link to the page, to be included in
/// another site's page (no `html`, `head` or `body`, no ids that could clash with its own).
fn snippet_body(site: &Site, request: &PublicRequest, entries: &[PublicEntry]) -> Markup {
    let shown = ShownEntry::all(site, entries, CARD_TEXT_BYTES);
    let page = format!(
        "{}{}",
        request.origin.as_deref().unwrap_or_default(),
        with_query(PAGE, &filter_query(&request.filter))
    );
    markup! {
        div class="nhsuk-card closeloop-snippet" {
            div class="nhsuk-card__content" {
                h2 class="nhsuk-card__heading nhsuk-heading-m" { "You said, we did" }
                @if shown.is_empty() {
                    p class="nhsuk-body-s" { "No changes to show yet." }
                } @else {
                    ul class="nhsuk-list" {
                        @for entry in &shown {
                            li {
                                h3 class="nhsuk-heading-xs nhsuk-u-margin-bottom-1" { (entry.heading) }
                                p class="nhsuk-body-s nhsuk-u-margin-bottom-1" { strong { "You said: " } (entry.you_said) }
                                p class="nhsuk-body-s nhsuk-u-margin-bottom-1" { strong { "We did: " } (entry.we_did) }
                                p class="nhsuk-body-s" { time datetime=(entry.datetime()) { (entry.date) } }
                            }
                        }
                    }
                }
                p class="nhsuk-body-s nhsuk-u-margin-bottom-0" {
                    a href=(page) { "See all the changes " (site.organisation) " made" }
                }
            }
        }
    }
}

/// Text for XML: made safe to show, without the two characters XML forbids that [`shown`]
/// keeps (U+FFFE, U+FFFF), escaped.
fn xml_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in shown(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The `urn:uuid:` of 16 bytes.
fn urn(bytes: [u8; 16]) -> String {
    format!("urn:uuid:{}", uuid::Uuid::from_bytes(bytes).hyphenated())
}

/// The Atom feed (RFC 4287) of `entries`: each entry's id is the URN of its public id (never
/// its loop id), `updated` its closing time; the feed links the page it follows.
fn atom(site: &Site, filter: &PublishedFilter, entries: &[PublicEntry]) -> String {
    use std::fmt::Write as _;
    let filters = filter_query(filter);
    let shown = ShownEntry::all(site, entries, FEED_TEXT_BYTES);
    // One id per organisation and filter, the same on every request.
    let feed_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("closeloop:you-said-we-did:{}?{filters}", site.organisation).as_bytes(),
    );
    let updated = entries
        .first()
        .map_or(Timestamp::UNIX_EPOCH, |entry| entry.closed_at);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en-GB\">\n",
    );
    let _ = writeln!(
        xml,
        "<title>{}</title>\n<subtitle>Changes made{} because of what patients, carers and visitors told us</subtitle>\n<id>{}</id>\n<updated>{updated}</updated>\n<author><name>{}</name></author>",
        xml_text(&format!("You said, we did – {}", site.organisation)),
        xml_text(&filters_in_words(site, filter)),
        urn(*feed_id.as_bytes()),
        xml_text(&site.organisation),
    );
    let _ = writeln!(
        xml,
        "<link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>\n<link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
        xml_text(&with_query(FEED, &filters)),
        xml_text(&with_query(PAGE, &filters)),
    );
    for entry in &shown {
        let id = PublicKey::bytes_of(entry.entry.key.as_str()).map_or_else(
            || format!("urn:closeloop:{}", entry.entry.key.as_str()),
            urn,
        );
        let _ = writeln!(
            xml,
            "<entry>\n<id>{id}</id>\n<title>{}</title>\n<updated>{}</updated>\n<link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
            xml_text(&entry.heading),
            entry.datetime(),
            xml_text(&with_query(PAGE, &filters)),
        );
        for theme in entry.entry.themes.iter().take(TAGS_SHOWN) {
            let _ = writeln!(
                xml,
                "<category term=\"{}\"/>",
                xml_text(&clipped(theme, TOPIC_BYTES))
            );
        }
        let _ = writeln!(
            xml,
            "<content type=\"text\">{}</content>\n</entry>",
            xml_text(&format!(
                "You said: {}\n\nWe did: {}\n\nWhere: {}",
                entry.you_said, entry.we_did, entry.place
            )),
        );
    }
    xml.push_str("</feed>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_the_escaped_size_and_keeps_whole_words() {
        let story = "The night staff were kind but the ward was noisy";
        assert_eq!(clipped(story, 1_000), story);
        let cut = clipped(story, 30);
        assert!(escaped_size(&cut) <= 30, "{cut}");
        assert_eq!(cut, "The night staff were kind…");
        // Characters that escape long count as escaped.
        let quotes = "\"".repeat(100);
        let cut = clipped(&quotes, 60);
        assert!(escaped_size(&cut) <= 60, "{cut}");
        assert!(cut.ends_with('…'));
        // A single long word is cut inside, on a character boundary.
        let word = "é".repeat(100);
        assert_eq!(clipped(&word, 11), "éééé…");
        // Control and bidi characters are neutralised before the size is counted.
        assert_eq!(clipped("a\u{202E}b", 100), "a\u{FFFD}b");
    }

    #[test]
    fn xml_text_escapes_and_drops_what_xml_forbids() {
        assert_eq!(
            xml_text("<b>&\"'\u{0007}\u{FFFE}"),
            "&lt;b&gt;&amp;&quot;&#39;\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn the_snippet_links_to_the_host_it_was_asked_of() {
        let mut headers = HeaderMap::new();
        assert_eq!(origin(&headers), None);
        headers.insert(
            header::HOST,
            HeaderValue::from_static("feedback.example.nhs.uk"),
        );
        assert_eq!(
            origin(&headers).as_deref(),
            Some("http://feedback.example.nhs.uk")
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            origin(&headers).as_deref(),
            Some("https://feedback.example.nhs.uk")
        );
        headers.insert(header::HOST, HeaderValue::from_static("evil\"host"));
        assert_eq!(origin(&headers), None);
    }

    #[test]
    fn dates_read_as_people_write_them() {
        let at: Timestamp = "2026-11-25T09:00:00Z".parse().expect("a time");
        assert_eq!(readable_date(at), "25 November 2026");
    }
}

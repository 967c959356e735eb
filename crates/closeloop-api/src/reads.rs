//! The read endpoints: loop lists and details, stats, and "you said, we did".
//!
//! Every read first waits (bounded) until the projections have applied what the caller can
//! have seen: the position of its own write when it sends one back in `Closeloop-Position`,
//! otherwise the log's head as it stood when the request arrived (contract §3 v1.1) — never
//! writes that came after it.
//!
//! A credential limited to an org unit sees only its subtree: lists and stats leave other
//! loops out (their totals included), and a loop outside answers 404 `unknown_loop`, as one
//! that does not exist. Leaders read loops without personal data ([`personal`]).
//!
//! The entries of the public "you said, we did" page — its JSON here, and the page, printable
//! view, Atom feed and snippet that `pages::public` renders from the same entries, filtered by
//! place and theme — come from the published read model and the
//! [`StoryCache`](closeloop_projections::StoryCache) of redacted stories: a request
//! whose `If-None-Match` names the current `ETag` is answered 304 before anything is read from
//! the store and without a turn of the public concurrency class; any other reads the store only
//! for the stories of its page that the cache does not hold.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use closeloop_access::What;
use closeloop_domain::{Channel, LoopEvent, LoopId, OrgUnit, Rejection, Stage};
use closeloop_projections::{
    GroupBy, LoopQuery, MAX_NAME_BYTES, PublicKey, PublishedFilter, PublishedLoop, QueryError,
    StatsQuery, StatusFilter, redact,
};
use closeloop_store::{EventStore, record};
use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::access;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::guard::Admission;
use crate::personal;

/// How long a read waits for the projections to catch up before answering 503.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Page size of the public page when none is asked for.
const PUBLISHED_DEFAULT_LIMIT: usize = 20;
/// Largest page of the public page: a page whose stories are not cached reads the store once
/// per entry, so this bounds the store reads of one unauthenticated request.
const PUBLISHED_MAX_LIMIT: usize = 100;
/// How long browsers and proxies may reuse a public page without asking again. Short, so that
/// a new entry shows within half a minute; asking again is cheap (`If-None-Match`).
const PUBLISHED_CACHE_CONTROL: &str = "public, max-age=30";

type Params = Query<HashMap<String, String>>;

/// The request header in which a caller sends back the position of its own last write (as a
/// command answered it in `Closeloop-Position`), so that a read waits for that write only.
pub const POSITION_HEADER: &str = "closeloop-position";

/// What a read must reflect: `Closeloop-Position`, when the request carries one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadAfter(Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for ReadAfter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(POSITION_HEADER) else {
            return Ok(Self(None));
        };
        value
            .to_str()
            .ok()
            .and_then(|raw| raw.trim().parse().ok())
            .map(|position| Self(Some(position)))
            .ok_or_else(|| {
                ApiError::InvalidRequest(
                    "Closeloop-Position must be a log position (a whole number), as a command's answer gave it".to_owned(),
                )
            })
    }
}

/// Waits until the projections reflect every write acknowledged before this request arrived
/// (the head as it stood then), or only the caller's own write when it named its position.
pub(crate) async fn caught_up<S: EventStore>(state: &AppState<S>) -> Result<(), ApiError> {
    caught_up_to(state, ReadAfter(None)).await
}

async fn caught_up_to<S: EventStore>(
    state: &AppState<S>,
    ReadAfter(position): ReadAfter,
) -> Result<(), ApiError> {
    let head = state.store.head();
    // A position past the head was never acknowledged to anyone: wait for the head at most.
    let target = position.map_or(head, |position| position.min(head));
    if state.projections.is_halted() && state.projections.applied() < target {
        return Err(ApiError::Unavailable(
            "the read models stopped after a failure and no longer follow the log; the service needs a restart".to_owned(),
        ));
    }
    if state.projections.wait_for(target, CATCH_UP_WAIT).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable(format!(
            "the read models are catching up with the log ({} of {target} events applied); try again shortly",
            state.projections.applied()
        )))
    }
}

/// The read models, or 503 when an update failed part-way and left them inconsistent.
pub(crate) fn models<S>(
    state: &AppState<S>,
) -> Result<std::sync::RwLockReadGuard<'_, closeloop_projections::ReadModels>, ApiError> {
    state.projections.try_read().map_err(|err| {
        tracing::error!(%err, "the read models cannot be read");
        ApiError::Unavailable(
            "the read models stopped after a failure; the service needs a restart".to_owned(),
        )
    })
}

/// `GET /v1/loops`.
pub(crate) async fn list_loops<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    after: ReadAfter,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut query = loop_query(&params)?;
    query.scope = credential.org_unit;
    caught_up_to(&state, after).await?;
    let now = (state.clock)();
    let page = models(&state)?.list(&query, now, &state.sla).map_err(
        |QueryError::BadCursor(detail)| {
            ApiError::InvalidRequest(format!(
                "cursor {detail:?} is not valid; start again without a cursor"
            ))
        },
    )?;
    Ok(Json(page).into_response())
}

/// The filters of `GET /v1/loops` (and of the staff work queue) from its query parameters.
pub(crate) fn loop_query(params: &HashMap<String, String>) -> Result<LoopQuery, ApiError> {
    let bad = |name: &str, hint: &str| {
        ApiError::InvalidRequest(format!("query parameter {name}: {hint}"))
    };
    let mut query = LoopQuery::default();
    for (name, value) in params {
        match name.as_str() {
            "status" => {
                query.status = StatusFilter::parse(value)
                    .ok_or_else(|| bad("status", "use open, closed or all"))?;
            }
            "stage" => {
                query.stage = Some(Stage::parse(value).ok_or_else(|| {
                    bad("stage", "use received, acknowledged, responded, action_planned, outcome_recorded or closed")
                })?);
            }
            "org_unit" => {
                query.org_unit =
                    Some(OrgUnit::parse(value).map_err(|err| bad("org_unit", &err.to_string()))?);
            }
            "theme" => query.theme = Some(value.clone()),
            "channel" => {
                query.channel =
                    Some(Channel::parse(value).map_err(|err| bad("channel", &err.to_string()))?);
            }
            "seldom_heard" => query.seldom_heard = Some(value.clone()),
            "overdue" => {
                query.overdue = Some(
                    value
                        .parse()
                        .map_err(|_| bad("overdue", "use true or false"))?,
                );
            }
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=500).contains(limit))
                    .ok_or_else(|| bad("limit", "use a whole number from 1 to 500"))?;
            }
            "cursor" => query.cursor = Some(value.clone()),
            // The route guard has refused every parameter the route does not list.
            _ => {}
        }
    }
    Ok(query)
}

/// `GET /v1/loops/{loop_id}`: the summary and the timeline; for a leader, the timeline
/// without personal data ([`personal::withhold`]). A loop outside the caller's org-unit scope
/// is answered exactly as one that does not exist.
/// A read that shows personal data (any role but leader) is recorded in the access log before
/// it is answered.
pub(crate) async fn get_loop<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    after: ReadAfter,
    Path(loop_id): Path<String>,
) -> Result<Response, ApiError> {
    let loop_id = LoopId::parse(&loop_id).map_err(|_| Rejection::UnknownLoop(loop_id.clone()))?;
    caught_up_to(&state, after).await?;
    let now = (state.clock)();
    let summary = models(&state)?
        .summary(&loop_id, now, &state.sla)
        .filter(|summary| credential.covers(&summary.org_unit))
        .ok_or_else(|| Rejection::UnknownLoop(loop_id.as_str().to_owned()))?;
    let entries = state.store.read_loop(&loop_id).await?;
    let mut timeline = Vec::with_capacity(entries.len());
    for entry in &entries {
        let line = entry
            .to_line(state.reveal())
            .map_err(|err| ApiError::Internal(format!("position {}: {err}", entry.position)))?;
        timeline
            .push(serde_json::to_value(line).map_err(|err| ApiError::Internal(err.to_string()))?);
    }
    if !credential.reads_personal_data() {
        personal::withhold(&mut timeline);
    }
    let version = summary.version;
    let mut body =
        serde_json::to_value(summary).map_err(|err| ApiError::Internal(err.to_string()))?;
    body["timeline"] = Value::Array(timeline);
    // Leaders read without personal data (see above), so their reads are not recorded.
    if credential.reads_personal_data() {
        access::record_read(&state, &credential, Some(&loop_id), What::Loop).await?;
    }
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// `GET /v1/stats`.
pub(crate) async fn stats<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    after: ReadAfter,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut query = StatsQuery {
        scope: credential.org_unit,
        ..StatsQuery::default()
    };
    for (name, value) in &params {
        match name.as_str() {
            "group_by" => {
                query.group_by = Some(GroupBy::parse(value).ok_or_else(|| {
                    ApiError::InvalidRequest(
                        "group_by: use org_unit, theme, channel or seldom_heard".to_owned(),
                    )
                })?);
            }
            "from" => query.from = Some(instant("from", value, false)?),
            "to" => query.to = Some(instant("to", value, true)?),
            // The route guard has refused every parameter the route does not list.
            _ => {}
        }
    }
    caught_up_to(&state, after).await?;
    let now = (state.clock)();
    // Stats sum aggregates, but scan the loops of partial days at a range's ends: off the async
    // workers, so other requests go on.
    let worker = Arc::clone(&state);
    let stats = tokio::task::spawn_blocking(move || {
        models(&worker).map(|models| models.stats(&query, now, &worker.sla))
    })
    .await
    .map_err(|err| ApiError::Internal(format!("stats did not finish: {err}")))??;
    Ok(Json(stats).into_response())
}

/// An RFC 3339 instant, or a date: `from=2026-11-01` starts that day; `to=2026-11-30`
/// includes that whole day.
fn instant(name: &str, raw: &str, end_of_day: bool) -> Result<Timestamp, ApiError> {
    if let Ok(ts) = raw.parse::<Timestamp>() {
        return Ok(ts);
    }
    let date: Date = raw.parse().map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{name}: use a date (2026-11-01) or an RFC 3339 time (2026-11-01T09:00:00Z)"
        ))
    })?;
    let date = if end_of_day {
        date.tomorrow().unwrap_or(date)
    } else {
        date
    };
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|zoned| zoned.timestamp())
        .map_err(|_| {
            ApiError::InvalidRequest(format!(
                "{name}: {raw} is too far from today to be a date of feedback; use a date such as 2026-11-01"
            ))
        })
}

/// Which form of the public page a request asks for; each has its own `ETag`, page sizes and
/// query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublicKind {
    /// `GET /v1/you-said-we-did`.
    Json,
    /// `GET /you-said-we-did`.
    Page,
    /// `GET /you-said-we-did/print`.
    Print,
    /// `GET /you-said-we-did/feed.atom`.
    Feed,
    /// `GET /you-said-we-did/snippet`.
    Snippet,
}

impl PublicKind {
    fn tag(self) -> &'static str {
        match self {
            PublicKind::Json => "json",
            PublicKind::Page => "html",
            PublicKind::Print => "print",
            PublicKind::Feed => "atom",
            PublicKind::Snippet => "snippet",
        }
    }

    /// Entries when `limit` is not given, and the most `limit` may ask for; the same number
    /// twice where `limit` is not taken. The rendered forms are bounded so that each stays
    /// small (a page under 100 KB however long its stories, see `pages::public`).
    pub(crate) fn sizes(self) -> (usize, usize) {
        match self {
            PublicKind::Json => (PUBLISHED_DEFAULT_LIMIT, PUBLISHED_MAX_LIMIT),
            PublicKind::Page => (PUBLISHED_DEFAULT_LIMIT, PUBLISHED_DEFAULT_LIMIT),
            PublicKind::Print | PublicKind::Feed => (50, 50),
            PublicKind::Snippet => (3, 10),
        }
    }

    /// Whether a request may choose the number of entries with `limit`.
    fn sized(self) -> bool {
        !matches!(self, PublicKind::Print | PublicKind::Feed)
    }

    /// Whether the form is paged with `cursor` (the others show the newest entries only).
    fn paged(self) -> bool {
        matches!(self, PublicKind::Json | PublicKind::Page)
    }

    /// Whether the form is rendered here (its text depends on this build and on the
    /// organisation's configured names, not only on the published entries).
    fn rendered(self) -> bool {
        !matches!(self, PublicKind::Json)
    }
}

/// A value drawn once per process, in the `ETag` of every rendered form: a restart may bring
/// new markup or new place names for the same entries, so no cache may keep a page rendered
/// by an earlier process.
static RENDERING: std::sync::LazyLock<[u8; 16]> =
    std::sync::LazyLock::new(|| *uuid::Uuid::new_v4().as_bytes());

/// What one request of the public page asks for: which entries, how many, from where, in which
/// form.
#[derive(Debug, Clone)]
pub(crate) struct PublicRequest {
    pub(crate) limit: usize,
    pub(crate) cursor: Option<String>,
    pub(crate) filter: PublishedFilter,
    pub(crate) kind: PublicKind,
    /// The absolute address the answer links to, when it must link absolutely (the snippet,
    /// shown on another site); part of the `ETag`.
    pub(crate) origin: Option<String>,
}

impl PublicRequest {
    /// The request in `params`: `limit` (within [`PublicKind::sizes`]), `cursor` where the
    /// form is paged, and the filters `place` and `theme` (empty ones, as an empty choice of
    /// a form sends them, filter nothing).
    ///
    /// # Errors
    /// [`ApiError::InvalidRequest`] naming the parameter that is malformed.
    pub(crate) fn parse(
        params: &HashMap<String, String>,
        kind: PublicKind,
    ) -> Result<Self, ApiError> {
        let (default, max) = kind.sizes();
        let limit = match params.get("limit") {
            Some(raw) if kind.sized() => raw
                .parse()
                .ok()
                .filter(|limit| (1..=max).contains(limit))
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!("limit: use a whole number from 1 to {max}"))
                })?,
            _ => default,
        };
        let cursor = params
            .get("cursor")
            .filter(|cursor| kind.paged() && !cursor.is_empty())
            .cloned();
        Ok(Self {
            limit,
            cursor,
            filter: public_filter(params)?,
            kind,
            origin: None,
        })
    }

    /// The weak `ETag` of this request's answer when the published model is at `version`.
    ///
    /// What an answer shows is fixed by the model's version, the entries asked for and the
    /// form (the stories are read from the log, which only grows), so those name it, with
    /// [`RENDERING`] for the rendered forms. The client's text (cursor, filters) is digested:
    /// an `ETag` may hold only some characters.
    pub(crate) fn etag(&self, version: u64) -> String {
        let mut digest = Sha256::new();
        digest.update(self.limit.to_be_bytes());
        let parts = [
            self.cursor.as_deref(),
            self.filter.place.as_ref().map(OrgUnit::as_str),
            self.filter.theme.as_deref(),
            self.origin.as_deref(),
        ];
        for part in parts {
            match part {
                Some(text) => {
                    digest.update([1]);
                    digest.update(text.len().to_be_bytes());
                    digest.update(text.as_bytes());
                }
                None => digest.update([0]),
            }
        }
        if self.kind.rendered() {
            digest.update(*RENDERING);
        }
        let digest = digest.finalize();
        format!(
            "W/\"ysd-{}-{version}-{}\"",
            self.kind.tag(),
            hex::encode(&digest[..8])
        )
    }

    /// The query string of this request's filters and page size (when not the default),
    /// followed by `cursor` when given: how links to other pages of the same answer keep
    /// what was asked for.
    pub(crate) fn query(&self, cursor: Option<&str>) -> String {
        let mut query = filter_query(&self.filter);
        let mut add = |name: &str, value: &str| {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(name);
            query.push('=');
            query.push_str(&query_value(value));
        };
        if self.limit != self.kind.sizes().0 {
            add("limit", &self.limit.to_string());
        }
        if let Some(cursor) = cursor {
            add("cursor", cursor);
        }
        query
    }
}

/// The filters `place` and `theme` of the public page.
fn public_filter(params: &HashMap<String, String>) -> Result<PublishedFilter, ApiError> {
    let given = |name: &str| params.get(name).filter(|value| !value.is_empty());
    let place = given("place")
        .map(|raw| {
            OrgUnit::parse(raw).map_err(|err| {
                ApiError::InvalidRequest(format!(
                    "place: {err}; name an org unit such as rxx/site-a, or leave place out for every place"
                ))
            })
        })
        .transpose()?;
    let theme = given("theme")
        .map(|raw| {
            if raw.len() > MAX_NAME_BYTES {
                Err(ApiError::InvalidRequest(format!(
                    "theme: a theme is at most {MAX_NAME_BYTES} bytes; leave theme out for every theme"
                )))
            } else {
                Ok(raw.clone())
            }
        })
        .transpose()?;
    Ok(PublishedFilter { place, theme })
}

/// `filter` as a query string (`place=…&theme=…`, empty without filters).
pub(crate) fn filter_query(filter: &PublishedFilter) -> String {
    let mut parts = Vec::new();
    if let Some(place) = &filter.place {
        parts.push(format!("place={}", query_value(place.as_str())));
    }
    if let Some(theme) = &filter.theme {
        parts.push(format!("theme={}", query_value(theme)));
    }
    parts.join("&")
}

/// A value percent-encoded for a query string: every byte but letters, digits and `-._~/`.
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2), or is `*`.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

/// The caching headers of every answer of the public page, 304 included.
pub(crate) fn cache_headers(response: &mut Response, etag: &str) {
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(PUBLISHED_CACHE_CONTROL),
    );
}

/// One entry of the public page, its story redacted (empty when it has none to show).
#[derive(Debug, Clone)]
pub(crate) struct PublicEntry {
    pub(crate) key: PublicKey,
    pub(crate) org_unit: OrgUnit,
    pub(crate) themes: Vec<String>,
    pub(crate) you_said: Arc<str>,
    pub(crate) we_did: String,
    pub(crate) closed_at: Timestamp,
}

impl PublicEntry {
    fn to_json(&self) -> Value {
        json!({
            // Never the loop id: publishers may use case numbers (contract §3 v1.1).
            "public_id": self.key.as_str(),
            "themes": self.themes,
            "you_said": &*self.you_said,
            "we_did": self.we_did,
            "closed_at": self.closed_at.to_string(),
        })
    }
}

/// The story of `item`, redacted: from the cache, or read from the store and cached.
async fn published_story<S: EventStore>(
    state: &AppState<S>,
    item: &PublishedLoop,
) -> Result<Arc<str>, ApiError> {
    public_story(state, &item.key, &item.loop_id).await
}

/// The story the public page shows for the published loop `loop_id` (named `key` there),
/// redacted; empty when it has none to show. From the cache, or read from the store and
/// cached.
pub(crate) async fn public_story<S: EventStore>(
    state: &AppState<S>,
    key: &PublicKey,
    loop_id: &LoopId,
) -> Result<Arc<str>, ApiError> {
    if let Some(story) = state.stories.get(key) {
        return Ok(story);
    }
    // Taken before the read, so that a story erased while it is read is not cached after.
    let epoch = state.stories.epoch();
    let entries = state.store.read_loop(loop_id).await?;
    let you_said = publishable_story(&entries, state.reveal(), state.publish_requires_approval)?;
    // A loop without a story is cached too (as an empty one), so it is not read again.
    let story: Arc<str> = Arc::from(you_said);
    state.stories.insert(key.clone(), Arc::clone(&story), epoch);
    Ok(story)
}

/// The story a loop may show in public, redacted; empty when it has none to show: no story,
/// erased, unreadable without keys, or (when approval is required) not approved since it was
/// received. An approval with an edited text publishes that text instead.
fn publishable_story(
    entries: &[closeloop_store::StoredEvent],
    reveal: closeloop_store::record::Reveal<'_>,
    requires_approval: bool,
) -> Result<String, ApiError> {
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        events.push(
            entry
                .event_as(reveal)
                .map_err(|err| ApiError::Internal(format!("position {}: {err}", entry.position)))?,
        );
    }
    let Some(LoopEvent::FeedbackReceived(received)) = events.first().map(|e| &e.payload) else {
        return Ok(String::new());
    };
    let approved = events.iter().rev().find_map(|event| match &event.payload {
        LoopEvent::StoryApproved(approval) => Some(approval.story.as_deref()),
        _ => None,
    });
    let story = match (requires_approval, approved) {
        (_, Some(Some(edited))) => Some(edited),
        (true, None) => None,
        _ => received.story.as_deref(),
    };
    let hidden = |text: &str| text == record::ERASED || text == record::ENCRYPTED;
    let name = received
        .author
        .as_ref()
        .and_then(|author| author.name.as_deref());
    Ok(story
        .filter(|story| !hidden(story))
        .map(|story| redact(story, name))
        .unwrap_or_default())
}

/// The answer to one request of the public page.
pub(crate) enum PublicAnswer {
    /// `If-None-Match` named the current `ETag`: 304, nothing read from the store.
    NotModified { etag: String },
    /// The entries of the page, the cursor of the next and the `ETag`.
    Page {
        entries: Vec<PublicEntry>,
        next: Option<String>,
        etag: String,
    },
}

/// Answers one request of the public page from the published read model and the story
/// cache.
///
/// In order: parameters, read-your-writes, then `If-None-Match` against the model's version,
/// which reads nothing from the store and needs no turn of the public class; only then a turn,
/// the page from the model, and the stories the cache does not hold, at most one store read
/// per entry of the page.
pub(crate) async fn published_page<S: EventStore>(
    state: &AppState<S>,
    admission: &Admission,
    headers: &HeaderMap,
    request: &PublicRequest,
) -> Result<PublicAnswer, ApiError> {
    caught_up(state).await?;
    let etag = request.etag(state.projections.read().published_version());
    if none_match(headers, &etag) {
        return Ok(PublicAnswer::NotModified { etag });
    }
    let _turn = admission.admit().await?;
    let page = models(state)?
        .published_matching(&request.filter, request.limit, request.cursor.as_deref())
        .map_err(|QueryError::BadCursor(detail)| {
            ApiError::InvalidRequest(format!(
                "cursor {detail:?} is not valid; start again without a cursor"
            ))
        })?;
    let mut entries = Vec::with_capacity(page.items.len());
    for item in page.items {
        let you_said = published_story(state, &item).await?;
        entries.push(PublicEntry {
            key: item.key,
            org_unit: item.org_unit,
            themes: item.themes,
            you_said,
            we_did: item.we_did.join(" "),
            closed_at: item.closed_at,
        });
    }
    Ok(PublicAnswer::Page {
        entries,
        next: page.next_cursor,
        // The version the page was read at, which may be newer than the one compared above.
        etag: request.etag(page.version),
    })
}

/// `GET /v1/you-said-we-did` (public): a JSON array; the next page, if any, is in a
/// `Link: <…>; rel="next"` header.
pub(crate) async fn you_said_we_did<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Extension(admission): Extension<Admission>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let request = PublicRequest::parse(&params, PublicKind::Json)?;
    let (entries, next, etag) = match published_page(&state, &admission, &headers, &request).await?
    {
        PublicAnswer::NotModified { etag } => return Ok(not_modified(&etag)),
        PublicAnswer::Page {
            entries,
            next,
            etag,
        } => (entries, next, etag),
    };
    let items: Vec<Value> = entries.iter().map(PublicEntry::to_json).collect();
    let mut response = Json(items).into_response();
    cache_headers(&mut response, &etag);
    if let Some(next) = next
        && let Ok(link) = HeaderValue::from_str(&format!(
            "</v1/you-said-we-did?{}>; rel=\"next\"",
            request.query(Some(&next))
        ))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// 304 Not Modified: no body, the same `ETag` and caching headers as the 200 it stands for.
pub(crate) fn not_modified(etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    cache_headers(&mut response, etag);
    response
}

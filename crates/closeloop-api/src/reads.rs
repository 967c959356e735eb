//! The read endpoints: loop lists and details, stats, and "you said, we did".
//!
//! Every read first waits (bounded) until the projections have applied what the caller can
//! have seen: the position of its own write when it sends one back in `Closeloop-Position`,
//! otherwise the log's head as it stood when the request arrived (contract §3 v1.1) — never
//! writes that came after it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use closeloop_domain::{Channel, LoopEvent, LoopId, OrgUnit, Rejection, Stage};
use closeloop_projections::{
    GroupBy, LoopQuery, PublishedLoop, QueryError, StatsQuery, StatusFilter, redact,
};
use closeloop_store::EventStore;
use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

/// How long a read waits for the projections to catch up before answering 503.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Page size of the public page when none is asked for.
const PUBLISHED_DEFAULT_LIMIT: usize = 100;

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
async fn caught_up<S: EventStore>(state: &AppState<S>) -> Result<(), ApiError> {
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
fn models<S>(
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
    after: ReadAfter,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let query = loop_query(&params)?;
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

fn loop_query(params: &HashMap<String, String>) -> Result<LoopQuery, ApiError> {
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

/// `GET /v1/loops/{loop_id}`: the summary and the timeline.
pub(crate) async fn get_loop<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    after: ReadAfter,
    Path(loop_id): Path<String>,
) -> Result<Response, ApiError> {
    let loop_id = LoopId::parse(&loop_id).map_err(|_| Rejection::UnknownLoop(loop_id.clone()))?;
    caught_up_to(&state, after).await?;
    let now = (state.clock)();
    let summary = models(&state)?
        .summary(&loop_id, now, &state.sla)
        .ok_or_else(|| Rejection::UnknownLoop(loop_id.as_str().to_owned()))?;
    let entries = state.store.read_loop(&loop_id).await?;
    let mut timeline = Vec::with_capacity(entries.len());
    for entry in &entries {
        let line = entry
            .to_line()
            .map_err(|err| ApiError::Internal(format!("position {}: {err}", entry.position)))?;
        timeline
            .push(serde_json::to_value(line).map_err(|err| ApiError::Internal(err.to_string()))?);
    }
    let version = summary.version;
    let mut body =
        serde_json::to_value(summary).map_err(|err| ApiError::Internal(err.to_string()))?;
    body["timeline"] = Value::Array(timeline);
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// `GET /v1/stats`.
pub(crate) async fn stats<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    after: ReadAfter,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut query = StatsQuery::default();
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
    // Stats walk every loop in range: off the async workers, so other requests go on.
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

/// One public entry, personal data redacted.
async fn you_said_we_did_entry<S: EventStore>(
    state: &AppState<S>,
    item: PublishedLoop,
) -> Result<Value, ApiError> {
    let entries = state.store.read_loop(&item.loop_id).await?;
    let received = entries
        .first()
        .map(closeloop_store::StoredEvent::event)
        .transpose()
        .map_err(|err| ApiError::Internal(err.to_string()))?;
    let you_said = match received.map(|event| event.payload) {
        Some(LoopEvent::FeedbackReceived(data)) => {
            let name = data
                .author
                .as_ref()
                .and_then(|author| author.name.as_deref());
            data.story
                .as_deref()
                .map(|story| redact(story, name))
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    Ok(json!({
        "loop_id": item.loop_id,
        "themes": item.themes,
        "you_said": you_said,
        "we_did": item.we_did.join(" "),
        "closed_at": item.closed_at.to_string(),
    }))
}

/// The entries of one public page and the cursor of the next.
async fn published_page<S: EventStore>(
    state: &AppState<S>,
    params: &HashMap<String, String>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let limit = match params.get("limit") {
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|limit| (1..=500).contains(limit))
            .ok_or_else(|| {
                ApiError::InvalidRequest("limit: use a whole number from 1 to 500".to_owned())
            })?,
        None => PUBLISHED_DEFAULT_LIMIT,
    };
    caught_up(state).await?;
    let page = state
        .projections
        .read()
        .published(limit, params.get("cursor").map(String::as_str))
        .map_err(|QueryError::BadCursor(detail)| {
            ApiError::InvalidRequest(format!("cursor {detail:?} is not valid"))
        })?;
    let mut items = Vec::with_capacity(page.items.len());
    for item in page.items {
        items.push(you_said_we_did_entry(state, item).await?);
    }
    Ok((items, page.next_cursor))
}

/// `GET /v1/you-said-we-did` (public): a JSON array; the next page, if any, is in a
/// `Link: <…>; rel="next"` header.
pub(crate) async fn you_said_we_did<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let (items, next) = published_page(&state, &params).await?;
    let mut response = Json(items).into_response();
    if let Some(next) = next
        && let Ok(link) = HeaderValue::from_str(&format!(
            "</v1/you-said-we-did?cursor={next}>; rel=\"next\""
        ))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// `GET /you-said-we-did` (public): the same, as a plain HTML page.
pub(crate) async fn you_said_we_did_page<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Params,
) -> Result<Html<String>, ApiError> {
    let (items, next) = published_page(&state, &params).await?;
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>You said, we did</title></head><body><main><h1>You said, we did</h1>\n",
    );
    for item in &items {
        let _ = writeln!(
            html,
            "<article><h2>You said</h2><p>{}</p><h2>We did</h2><p>{}</p><p><small>{}</small></p></article>",
            escape(item["you_said"].as_str().unwrap_or_default()),
            escape(item["we_did"].as_str().unwrap_or_default()),
            escape(
                &item["themes"]
                    .as_array()
                    .map(|themes| themes
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
        );
    }
    if items.is_empty() {
        html.push_str("<p>Nothing to show yet.</p>\n");
    }
    if let Some(next) = next {
        let _ = writeln!(
            html,
            "<p><a href=\"/you-said-we-did?cursor={}\">More</a></p>",
            escape(&next)
        );
    }
    html.push_str("</main></body></html>\n");
    Ok(Html(html))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

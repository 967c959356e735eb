//! The command endpoints: record feedback and every later step of a loop.
//!
//! A credential limited to an org unit records feedback only for units within its scope
//! (403 `forbidden` otherwise) and steps only on loops within it (404 `unknown_loop`
//! otherwise, as for a loop that does not exist: see [`scope`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use closeloop_domain::{Command, EventType, LoopEvent, LoopId, Rejection};
use closeloop_store::write::{self, Origin};
use closeloop_store::{EventStore, Recorded, RequestDigest};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::reads::POSITION_HEADER;
use crate::scope;

/// The `source` of every event recorded over HTTP.
pub const HTTP_SOURCE: &str = "urn:closeloop:api";
/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Most loops one `POST /v1/changes` may name.
pub(crate) const MAX_CHANGE_LOOPS: usize = 1000;

/// `POST /v1/feedback`: opens a loop.
pub(crate) async fn post_feedback<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_object(&body)?;
    let key = Idempotency::from_request(&credential, &headers, uri.path(), &body)?;
    let mut data = body;
    let loop_id = match data.remove("loop_id") {
        Some(Value::String(raw)) => LoopId::parse(&raw)?,
        Some(_) => return Err(Rejection::invalid("loop_id must be a string").into()),
        // A retried request with the same key must land on the same loop.
        None => generated_loop_id(key.as_ref()),
    };
    let payload = LoopEvent::from_data_with(
        EventType::FeedbackReceived,
        Value::Object(data),
        &state.input_limits,
    )?;
    if let (Some(scope), LoopEvent::FeedbackReceived(feedback)) = (&credential.org_unit, &payload)
        && !credential.covers(&feedback.org_unit)
    {
        return Err(ApiError::OutsideScope {
            scope: scope.as_str().to_owned(),
            org_unit: feedback.org_unit.as_str().to_owned(),
        });
    }
    let recorded = record(&state, &credential, loop_id, payload, key, None).await?;
    Ok(created(&recorded))
}

/// `POST /v1/loops/{loop_id}/<step>`: records one step of a loop, as `event_type`.
pub(crate) async fn post_step<S: EventStore>(
    state: Arc<AppState<S>>,
    credential: Credential,
    path: &str,
    loop_id: String,
    headers: HeaderMap,
    body: Bytes,
    event_type: EventType,
) -> Result<Response, ApiError> {
    let loop_id = LoopId::parse(&loop_id)?;
    let expected = if_match(&headers)?;
    let body = json_object(&body)?;
    let key = Idempotency::from_request(&credential, &headers, path, &body)?;
    let recorded = record_step(
        &state,
        &credential,
        loop_id,
        event_type,
        body,
        key,
        expected,
    )
    .await?;
    Ok(created(&recorded))
}

/// Records one step of a loop, as `event_type` with `data`: what `POST
/// /v1/loops/{loop_id}/<step>` and the staff pages' step forms both do. The data is checked
/// against the contract's limits, the loop against the credential's scope, then the command
/// goes through the one write path, which checks `expected` (`If-Match`) and the rules.
///
/// # Errors
/// As the step endpoints answer: 422 for invalid data and the §1 rules, 404 `unknown_loop`
/// (also for a loop outside the credential's scope), 409 `version_conflict`, 503.
pub(crate) async fn record_step<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loop_id: LoopId,
    event_type: EventType,
    data: Map<String, Value>,
    key: Option<Idempotency>,
    expected: Option<u64>,
) -> Result<Recorded, ApiError> {
    let payload = LoopEvent::from_data_with(event_type, Value::Object(data), &state.input_limits)?;
    scope::ensure_covered(state, credential, std::slice::from_ref(&loop_id)).await?;
    let recorded = record(state, credential, loop_id.clone(), payload, key, expected).await?;
    if event_type == EventType::StoryApproved {
        forget_story(state, &loop_id);
    }
    Ok(recorded)
}

/// The path segment of each step endpoint and the event it records.
pub(crate) const STEPS: [(&str, EventType); 8] = [
    ("acknowledgements", EventType::Acknowledged),
    ("responses", EventType::Responded),
    ("actions", EventType::ActionPlanned),
    ("changes", EventType::ChangeMade),
    ("no-change", EventType::NoChange),
    ("report-backs", EventType::ReportedBack),
    ("reopenings", EventType::Reopened),
    ("story-approvals", EventType::StoryApproved),
];

/// `POST /v1/changes`: one change (one `change_id`) recorded on many loops, all or none.
pub(crate) async fn post_changes<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_object(&body)?;
    let key = Idempotency::from_request(&credential, &headers, uri.path(), &body)?;
    let mut data = body;
    let loop_ids = match data.remove("loop_ids") {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.len() <= MAX_CHANGE_LOOPS => ids,
        _ => {
            return Err(Rejection::invalid(format!(
                "loop_ids must be a list of 1 to {MAX_CHANGE_LOOPS} loop ids"
            ))
            .into());
        }
    };
    let mut parsed: Vec<LoopId> = Vec::with_capacity(loop_ids.len());
    for id in loop_ids {
        let Value::String(raw) = id else {
            return Err(Rejection::invalid("every entry of loop_ids must be a string").into());
        };
        parsed.push(LoopId::parse(&raw)?);
    }
    let (change_id, recorded) =
        record_change_across(&state, &credential, parsed, data, key).await?;
    let loops: Vec<Value> = recorded
        .iter()
        .map(|r| json!({"loop_id": r.loop_id, "version": r.version, "position": r.position}))
        .collect();
    let mut response = (
        StatusCode::CREATED,
        Json(json!({"change_id": change_id, "loops": loops})),
    )
        .into_response();
    if let Some(last) = recorded.iter().map(|r| r.position).max() {
        response
            .headers_mut()
            .insert(POSITION_HEADER, HeaderValue::from(last));
    }
    if recorded.iter().all(|r| r.duplicate) {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Records one change (one new `change_id`) with `data` on every loop of `loop_ids`, all or
/// none: what `POST /v1/changes` and the staff pages' "record one change for these loops"
/// both do. Returns the `change_id` and what was recorded on each loop.
///
/// # Errors
/// 422 `invalid_data` for no loops, more than [`MAX_CHANGE_LOOPS`], a loop named twice or
/// invalid data; then as [`record_step`], for the first loop that refuses.
pub(crate) async fn record_change_across<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loop_ids: Vec<LoopId>,
    mut data: Map<String, Value>,
    key: Option<Idempotency>,
) -> Result<(String, Vec<Recorded>), ApiError> {
    if loop_ids.is_empty() || loop_ids.len() > MAX_CHANGE_LOOPS {
        return Err(Rejection::invalid(format!(
            "loop_ids must be a list of 1 to {MAX_CHANGE_LOOPS} loop ids"
        ))
        .into());
    }
    let mut seen = std::collections::HashSet::with_capacity(loop_ids.len());
    if let Some(twice) = loop_ids.iter().find(|loop_id| !seen.insert(*loop_id)) {
        return Err(Rejection::invalid(format!("loop {twice} is listed twice in loop_ids")).into());
    }
    // A retried request with the same key records the same change.
    let change_id = match &key {
        Some(key) => format!("chg-{}", key.derived_uuid("changes").simple()),
        None => format!("chg-{}", Uuid::new_v4().simple()),
    };
    data.insert("change_id".to_owned(), Value::String(change_id.clone()));
    let payload = LoopEvent::from_data_with(
        EventType::ChangeMade,
        Value::Object(data),
        &state.input_limits,
    )?;
    scope::ensure_covered(state, credential, &loop_ids).await?;
    let recorded = record_on_each(
        state,
        credential,
        &loop_ids,
        &payload,
        |loop_id| format!("{change_id}/{loop_id}"),
        key.as_ref().map(|key| key.request),
    )
    .await?;
    Ok((change_id, recorded))
}

async fn record<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loop_id: LoopId,
    payload: LoopEvent,
    key: Option<Idempotency>,
    expected: Option<u64>,
) -> Result<Recorded, ApiError> {
    let (event_id, request) = match key {
        Some(key) => (key.event_id, Some(key.request)),
        None => (Uuid::new_v4().to_string(), None),
    };
    let command = Command {
        loop_id,
        at: (state.clock)(),
        payload,
    };
    let origin = Origin {
        source: HTTP_SOURCE.to_owned(),
        event_id,
        request,
        actor: Some(credential.actor().to_owned()),
    };
    Ok(write::record(state.store.as_ref(), command, origin, expected).await?)
}

/// Records `payload` on every loop of `loops` at once, all or none, each under the event id
/// `event_id` gives it.
pub(crate) async fn record_on_each<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loops: &[LoopId],
    payload: &LoopEvent,
    event_id: impl Fn(&LoopId) -> String,
    request: Option<RequestDigest>,
) -> Result<Vec<Recorded>, ApiError> {
    let at = (state.clock)();
    let commands = loops
        .iter()
        .map(|loop_id| {
            let command = Command {
                loop_id: loop_id.clone(),
                at,
                payload: payload.clone(),
            };
            (command, None)
        })
        .collect();
    let origins: Vec<Origin> = loops
        .iter()
        .map(|loop_id| Origin {
            source: HTTP_SOURCE.to_owned(),
            event_id: event_id(loop_id),
            request,
            actor: Some(credential.actor().to_owned()),
        })
        .collect();
    Ok(write::record_many(state.store.as_ref(), commands, &origins).await?)
}

/// Drops the public page's cached story of `loop_id` after an approval changed what it shows
/// (all of them when the read models do not know the loop yet). The approval is already
/// durable, so the next read of the story from the store sees it.
fn forget_story<S>(state: &AppState<S>, loop_id: &LoopId) {
    let key = crate::reads::models(state).ok().and_then(|models| {
        let summary = models.summary(loop_id, (state.clock)(), &state.sla)?;
        closeloop_projections::PublicKey::parse(&summary.public_id)
    });
    match key {
        Some(key) => state.stories.invalidate(&key),
        None => state.stories.clear(),
    }
}

/// 201 `{"loop_id","version","position"}` with `ETag`, `Location` and `Closeloop-Position` (to
/// send back on a read that must see this write); a replayed idempotent request says so in a
/// header.
fn created(recorded: &Recorded) -> Response {
    let body = json!({"loop_id": recorded.loop_id, "version": recorded.version, "position": recorded.position});
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", recorded.version)) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/loops/{}", recorded.loop_id)) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(POSITION_HEADER, HeaderValue::from(recorded.position));
    if recorded.duplicate {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The request body as a JSON object: 400 for broken JSON, 422 for JSON of the wrong shape.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Rejection::invalid("the request body must be a JSON object").into()),
        Err(err) => Err(ApiError::InvalidRequest(format!(
            "the request body is not valid JSON: {err}"
        ))),
    }
}

/// `If-Match: <version>` or `If-Match: "<version>"`.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|raw| raw.trim().trim_matches('"'))
        .and_then(|raw| raw.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "If-Match must be the loop's version number, bare or in double quotes, e.g. If-Match: \"3\"".to_owned(),
            )
        })
}

/// An `Idempotency-Key` as the store sees it (contract §3 v1.1): it belongs to the credential
/// that sent it, and it is bound to the request — method, path and body compared as JSON — so
/// that the same key with another body, or on another path, is refused rather than answered
/// with the first request's result.
#[derive(Debug, Clone)]
pub(crate) struct Idempotency {
    /// The event id the key becomes: the credential's id and the key, so another caller's
    /// equal key is another key.
    event_id: String,
    /// The request the key is bound to.
    request: RequestDigest,
}

impl Idempotency {
    /// The request's key, if it sent one: 1 to 255 visible ASCII characters.
    fn from_request(
        credential: &Credential,
        headers: &HeaderMap,
        path: &str,
        body: &Map<String, Value>,
    ) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(None);
        };
        value
            .to_str()
            .ok()
            .and_then(|key| Self::new(credential, key, path, body))
            .map(Some)
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, e.g. a UUID"
                ))
            })
    }

    /// The key `key` of `credential`, bound to a POST of `body` to `path`; `None` unless the
    /// key is 1 to 255 visible ASCII characters. The staff pages send one from a hidden field
    /// of each form, so that a form sent twice records once.
    pub(crate) fn new(
        credential: &Credential,
        key: &str,
        path: &str,
        body: &Map<String, Value>,
    ) -> Option<Self> {
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return None;
        }
        // Every HTTP command is a POST; the method is in the digest so that a later method
        // taking keys cannot share one with it.
        let request = RequestDigest::of_object(&[credential.id.as_str(), "POST", path], body);
        Some(Self {
            event_id: format!("{}/{key}", credential.id),
            request,
        })
    }

    /// A UUID derived from the credential and the key, for ids a retried request must find
    /// again (the loop of new feedback, the `change_id` of a change across loops).
    fn derived_uuid(&self, purpose: &str) -> Uuid {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("{HTTP_SOURCE}/{purpose}/{}", self.event_id).as_bytes(),
        )
    }
}

fn generated_loop_id(key: Option<&Idempotency>) -> LoopId {
    let id = match key {
        Some(key) => key.derived_uuid("feedback"),
        None => Uuid::new_v4(),
    };
    LoopId::parse(&format!("fb-{}", id.simple())).expect("a UUID makes a valid loop id")
}

//! The auditor's endpoints: the raw log as NDJSON and the chain check.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use closeloop_store::{EventStore, VerifyReport, verify};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{AUDITORS, Caller};
use crate::error::ApiError;

/// How many events the NDJSON stream reads at a time.
const PAGE: usize = 1024;

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// Start after this position.
    #[serde(default)]
    after: u64,
    /// At most this many events (default: all up to the head when the request began).
    limit: Option<u64>,
}

/// `GET /v1/events`: the log as NDJSON, streamed page by page, never buffered whole.
pub(crate) async fn events<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    Caller::from_headers(&state.tokens, &headers)?.require(AUDITORS, "read the event log")?;
    let Query(query) = query.map_err(|err| {
        ApiError::InvalidRequest(format!("{err}; use after=<position>&limit=<n>"))
    })?;
    // The head when the request began bounds the stream, so it ends even under constant writes.
    let head = state.store.head();
    let end = query
        .limit
        .map_or(head, |limit| head.min(query.after.saturating_add(limit)));
    let store = Arc::clone(&state.store);
    let stream = futures::stream::try_unfold(query.after, move |after| {
        let store = Arc::clone(&store);
        async move {
            if after >= end {
                return Ok(None);
            }
            let want = usize::try_from(end - after).unwrap_or(PAGE).min(PAGE);
            let page = store
                .read_all(after, want)
                .await
                .map_err(std::io::Error::other)?;
            let Some(last) = page.last().map(|e| e.position) else {
                return Ok(None);
            };
            let mut chunk = Vec::with_capacity(page.len() * 512);
            for entry in &page {
                let line = entry.to_line().map_err(std::io::Error::other)?;
                serde_json::to_writer(&mut chunk, &line).map_err(std::io::Error::other)?;
                chunk.push(b'\n');
            }
            Ok::<_, std::io::Error>(Some((Bytes::from(chunk), last)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Deserialize)]
pub(crate) struct VerifyQuery {
    /// Verify up to this position (default: the head).
    upto: Option<u64>,
}

/// `GET /v1/audit/verify`: re-walks the log and returns the Merkle tree head.
pub(crate) async fn audit_verify<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<VerifyReport>, ApiError> {
    Caller::from_headers(&state.tokens, &headers)?.require(AUDITORS, "verify the log")?;
    let Query(query) =
        query.map_err(|err| ApiError::InvalidRequest(format!("{err}; use upto=<position>")))?;
    let head = state.store.head();
    if let Some(upto) = query.upto
        && upto > head
    {
        return Err(ApiError::InvalidRequest(format!(
            "upto={upto} is beyond the head of the log ({head})"
        )));
    }
    Ok(Json(verify(state.store.as_ref(), query.upto).await?))
}

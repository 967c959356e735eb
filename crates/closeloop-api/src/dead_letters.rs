//! The admin's dead-letter endpoints: list the messages NATS ingestion could not store, and
//! send one through again after fixing its cause.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use closeloop_ingest::{DeadLetterError, NatsHandle};
use closeloop_store::EventStore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{ADMINS, Caller};
use crate::error::ApiError;

/// Most dead letters one page lists.
const MAX_LIMIT: usize = 500;

/// Query of `GET /v1/dead-letters`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    /// Start after this `FEEDBACK_DLQ` sequence.
    #[serde(default)]
    after: u64,
    /// At most this many (1–500, default 50).
    limit: Option<usize>,
}

/// `GET /v1/dead-letters`: `{"items": [DeadLetter], "next_after": seq or null}`, oldest first.
pub(crate) async fn list<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    Caller::from_headers(&state.tokens, &headers)?.require(ADMINS, "read dead letters")?;
    let Query(query) = query.map_err(|err| {
        ApiError::InvalidRequest(format!("{err}; use after=<seq>&limit=<1-{MAX_LIMIT}>"))
    })?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let items = nats(&state)?
        .dead_letters()
        .list(query.after, limit)
        .await
        .map_err(from_dead_letter_error)?;
    let next_after = (items.len() == limit)
        .then(|| items.last().map(|letter| letter.seq))
        .flatten();
    Ok(Json(json!({"items": items, "next_after": next_after})))
}

/// `POST /v1/dead-letters/{seq}/retry`: publishes the original again on its subject and
/// removes the dead letter. 202: ingestion picks it up like any new message.
pub(crate) async fn retry<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Caller::from_headers(&state.tokens, &headers)?.require(ADMINS, "re-drive dead letters")?;
    let seq: u64 = seq.parse().map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{seq:?} is not a dead-letter sequence; use the seq from GET /v1/dead-letters"
        ))
    })?;
    let redriven = nats(&state)?
        .dead_letters()
        .redrive(seq)
        .await
        .map_err(from_dead_letter_error)?;
    Ok((StatusCode::ACCEPTED, Json(json!(redriven))))
}

fn nats<S>(state: &AppState<S>) -> Result<&NatsHandle, ApiError> {
    state.nats.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "NATS is turned off (CLOSELOOP_NATS_URL=off), so there are no dead letters to manage"
                .to_owned(),
        )
    })
}

fn from_dead_letter_error(err: DeadLetterError) -> ApiError {
    match err {
        DeadLetterError::NotFound(_) => ApiError::NotFound(err.to_string()),
        DeadLetterError::NoSubject(_) | DeadLetterError::Truncated(_) => {
            ApiError::InvalidRequest(err.to_string())
        }
        DeadLetterError::Unavailable(_) => ApiError::Unavailable(err.to_string()),
    }
}

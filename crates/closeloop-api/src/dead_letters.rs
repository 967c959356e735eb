//! The admin's dead-letter endpoints: list the messages ingestion could not store, and send
//! one through again after fixing its cause. They work through [`IngestAdmin`], which the
//! binary wires to the NATS side.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use closeloop_store::EventStore;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Credential;
use crate::error::ApiError;
use crate::ingest::DeadLetterError;
use crate::params::whole_number;

/// Most dead letters one page lists.
const MAX_LIMIT: u64 = 500;
/// Dead letters one page lists when no `limit` is given.
const DEFAULT_LIMIT: u64 = 50;

/// `GET /v1/dead-letters`: `{"items": [DeadLetter], "next_after": seq or null}`, oldest first.
pub(crate) async fn list<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let after = whole_number(&params, "after")?.unwrap_or(0);
    let limit = whole_number(&params, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "query parameter limit: use a whole number from 1 to {MAX_LIMIT}"
        )));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // With NATS off nothing is ingested, so nothing is dead-lettered: an empty list is the
    // truth (and `/readyz` says NATS is off), where a 503 would invite retries that cannot help.
    let Some(ingest) = state.ingest.as_deref() else {
        return Ok(Json(json!({"items": [], "next_after": null})));
    };
    let items = ingest
        .dead_letters(after, limit)
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
    credential: Credential,
    Path(seq): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // Sequences start at 1; anything else cannot name a dead letter, whatever the server
    // would make of it.
    let seq: u64 = seq.parse().ok().filter(|seq| *seq >= 1).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "{seq:?} is not a dead-letter sequence (a whole number from 1); use the seq from GET /v1/dead-letters"
        ))
    })?;
    let Some(ingest) = state.ingest.as_deref() else {
        return Err(ApiError::NotFound(format!(
            "there is no dead letter {seq}: NATS is off (CLOSELOOP_NATS_URL=off), so nothing is dead-lettered"
        )));
    };
    let redriven = ingest.redrive(seq).await.map_err(from_dead_letter_error)?;
    // Who sent a message through again belongs in the log; the id is not the token.
    tracing::info!(seq, credential = %credential.id, "dead letter re-driven on request");
    Ok((StatusCode::ACCEPTED, Json(json!(redriven))))
}

fn from_dead_letter_error(err: DeadLetterError) -> ApiError {
    match err {
        DeadLetterError::NotFound(_) => ApiError::NotFound(err.to_string()),
        DeadLetterError::NoSubject(_) | DeadLetterError::Truncated(_) => {
            ApiError::InvalidRequest(err.to_string())
        }
        DeadLetterError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "the message server failed a dead-letter request");
            ApiError::Unavailable(
                "the message server (NATS) is not answering; try again shortly".to_owned(),
            )
        }
    }
}

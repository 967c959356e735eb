//! `POST /v1/erasures` (contract §3, admin): erases a person's personal data by destroying the
//! keys it was sealed with (crypto-shredding).
//!
//! The order makes a failure safe to retry: first `loop.erased` is recorded on the matched
//! loops, all or none in appends of at most 1,000 loops (so the audit trail says who erased
//! what and when), then those loops' keys are destroyed; once all are done, the public page's
//! story cache is emptied. If destroying fails half-way,
//! the answer is 503 and the same request again finishes the job: the contact index still
//! names the loops whose keys live, and a loop already erased is simply erased again.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use closeloop_domain::event::Erased;
use closeloop_domain::{LoopEvent, LoopId, Rejection};
use closeloop_keys::KeyStore;
use closeloop_store::EventStore;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Credential;
use crate::commands::record_on_each;
use crate::error::ApiError;

/// Longest contact an erasure request may name, in bytes: what the key store digests.
const MAX_CONTACT_BYTES: usize = closeloop_keys::MAX_CONTACT_LEN;

/// Most loops one append of `loop.erased` events names: as many as one `POST /v1/changes`.
const MAX_LOOPS_PER_APPEND: usize = crate::commands::MAX_CHANGE_LOOPS;

/// What an erasure request names.
enum Target {
    /// One loop.
    Loop(LoopId),
    /// Every loop of this contact.
    Contact(String),
}

impl Target {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let body: Value = serde_json::from_slice(body).map_err(|err| {
            ApiError::InvalidRequest(format!("the request body is not valid JSON: {err}"))
        })?;
        let Value::Object(body) = body else {
            return Err(Rejection::invalid("the request body must be a JSON object").into());
        };
        let one_of = || {
            Rejection::invalid(
                "name exactly one of loop_id (one loop) or contact (every loop of that contact)",
            )
        };
        if body.len() != 1 {
            return Err(one_of().into());
        }
        match body.into_iter().next() {
            Some((name, Value::String(raw))) if name == "loop_id" => {
                Ok(Target::Loop(LoopId::parse(&raw)?))
            }
            Some((name, Value::String(raw))) if name == "contact" => {
                if raw.trim().is_empty() || raw.len() > MAX_CONTACT_BYTES {
                    return Err(Rejection::invalid(format!(
                        "contact must be 1 to {MAX_CONTACT_BYTES} bytes, e.g. an e-mail address or phone number"
                    ))
                    .into());
                }
                Ok(Target::Contact(raw))
            }
            Some((name, _)) if name == "loop_id" || name == "contact" => {
                Err(Rejection::invalid(format!("{name} must be a string")).into())
            }
            _ => Err(one_of().into()),
        }
    }
}

/// `POST /v1/erasures`: `{"loop_id"}` or `{"contact"}` → 200 `{"erased_loops": n}`.
pub(crate) async fn post_erasure<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    credential: Credential,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let target = Target::parse(&body)?;
    let keys = state.keys.clone().ok_or_else(|| {
        ApiError::Internal("erasure needs a key store, and this service has none".to_owned())
    })?;
    let (loops, matched_by) = match target {
        Target::Loop(loop_id) => {
            // A loop recorded just before must be known: the read models first catch up with
            // the log as it stands now.
            crate::reads::caught_up(&state).await?;
            let known = crate::reads::models(&state)?
                .summary(&loop_id, (state.clock)(), &state.sla)
                .is_some();
            if !known {
                return Err(Rejection::UnknownLoop(loop_id.as_str().to_owned()).into());
            }
            (vec![loop_id], "loop_id")
        }
        Target::Contact(contact) => (loops_of_contact(&keys, contact).await?, "contact"),
    };
    if loops.is_empty() {
        return Ok(Json(json!({"erased_loops": 0})));
    }
    // One contact may have given feedback many times: the erasure events go into the log in
    // appends of a bounded size, each all or none and followed by its keys' destruction, so
    // a failure half-way leaves every recorded erasure carried out, and a retry finishes.
    for chunk in loops.chunks(MAX_LOOPS_PER_APPEND) {
        record_erasures(&state, &credential, chunk, matched_by).await?;
        destroy_keys(&keys, chunk).await?;
    }
    // Every story the public page cached may be one of these: forget them all (the page reads
    // them again, from records whose keys are gone).
    state.stories.clear();
    tracing::info!(
        actor = credential.actor(),
        loops = loops.len(),
        matched_by,
        "personal data erased"
    );
    Ok(Json(json!({"erased_loops": loops.len()})))
}

/// The loops whose contact index names `contact` (normalised, as a keyed digest).
async fn loops_of_contact(
    keys: &Arc<dyn KeyStore>,
    contact: String,
) -> Result<Vec<LoopId>, ApiError> {
    let keys = Arc::clone(keys);
    let found = tokio::task::spawn_blocking(move || {
        let digest = keys.contact_digest(&contact)?;
        keys.loops_with_contact(&digest)
    })
    .await
    .map_err(|err| ApiError::Internal(format!("contact lookup task failed: {err}")))?
    .map_err(key_store_failed)?;
    let mut loops = Vec::with_capacity(found.len());
    for raw in found {
        // Ids come from the store's own writes; one that no longer parses is skipped, loudly.
        match LoopId::parse(&raw) {
            Ok(loop_id) if !loops.contains(&loop_id) => loops.push(loop_id),
            Ok(_) => {}
            Err(_) => tracing::error!("the contact index names a loop id that does not parse"),
        }
    }
    Ok(loops)
}

/// Records `loop.erased` on every loop, all or none.
async fn record_erasures<S: EventStore>(
    state: &AppState<S>,
    credential: &Credential,
    loops: &[LoopId],
    matched_by: &str,
) -> Result<(), ApiError> {
    let erasure = Uuid::new_v4().simple().to_string();
    let payload = LoopEvent::Erased(Erased {
        by: credential.actor().to_owned(),
        matched_by: Some(matched_by.to_owned()),
        extra: serde_json::Map::new(),
    });
    let event_id = |loop_id: &LoopId| format!("erasure/{erasure}/{loop_id}");
    record_on_each(state, credential, loops, &payload, event_id, None).await?;
    Ok(())
}

/// Destroys every key of every loop, durably.
async fn destroy_keys(keys: &Arc<dyn KeyStore>, loops: &[LoopId]) -> Result<(), ApiError> {
    let keys = Arc::clone(keys);
    let loops: Vec<String> = loops.iter().map(|l| l.as_str().to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        for loop_id in &loops {
            keys.destroy_loop(loop_id)?;
        }
        Ok(())
    })
    .await
    .map_err(|err| ApiError::Internal(format!("key destruction task failed: {err}")))?
    .map_err(key_store_failed)
}

fn key_store_failed(err: closeloop_keys::KeyError) -> ApiError {
    tracing::error!(error = %err, "the key store failed during an erasure");
    ApiError::Unavailable(
        "the key store could not complete the erasure; send the same request again".to_owned(),
    )
}

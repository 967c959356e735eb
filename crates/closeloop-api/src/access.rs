//! "Who looked": every read that returns a loop's personal data is recorded in the access log
//! ([`AppState::access`]) before the data is sent, and auditors read that log at
//! `GET /v1/audit/access`.
//!
//! Recording fails closed: when the access log cannot take the entry (its queue stayed full,
//! or its disk failed) the read is answered 503 with `Retry-After` and shows nothing, because
//! an unrecorded read of personal data is the very thing the log exists to rule out.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use closeloop_access::{
    AccessEntry, AccessLogError, AccessQuery, Actor, QueryLimit, RoleName, What,
};
use closeloop_domain::LoopId;
use closeloop_store::EventStore;
use jiff::Timestamp;

use crate::AppState;
use crate::auth::{Credential, Role};
use crate::error::ApiError;
use crate::params::whole_number;

/// Records that `credential` read `what` (of `loop_id`, or across loops when `None`) now.
/// Call it before sending the data, and send none when it fails.
///
/// # Errors
/// [`ApiError::Unavailable`] (503 with `Retry-After`) when the access log cannot take the
/// entry.
pub(crate) async fn record_read<S>(
    state: &AppState<S>,
    credential: &Credential,
    loop_id: Option<&LoopId>,
    what: What,
) -> Result<(), ApiError> {
    let entry = AccessEntry {
        at: (state.clock)(),
        actor: actor_of(credential)?,
        role: role_of(credential.role)?,
        loop_id: loop_id.cloned(),
        what,
    };
    state.access.record(vec![entry]).await.map_err(|err| {
        // The cause (an operating-system error, perhaps) stays in the log.
        tracing::error!(%err, what = what.as_str(), "a read of personal data was refused: the access log cannot record it");
        match err {
            AccessLogError::Busy => ApiError::Unavailable(
                "the access log is behind, and reads of personal data are recorded before they are answered; try again in a moment".to_owned(),
            ),
            AccessLogError::Closed => {
                ApiError::Unavailable("the service is shutting down".to_owned())
            }
            _ => ApiError::Unavailable(
                "the access log cannot be written, and reads of personal data are recorded before they are answered".to_owned(),
            ),
        }
    })
}

/// The actor an entry names: the credential's name, or its id (`staff:1a2b3c4d`) when it has
/// none or one the log cannot hold (over 128 bytes, control characters). Never the token.
fn actor_of(credential: &Credential) -> Result<Actor, ApiError> {
    credential
        .name
        .as_deref()
        .and_then(|name| Actor::parse(name).ok())
        .map_or_else(|| Actor::parse(&credential.id), Ok)
        .map_err(|err| ApiError::Internal(format!("credential id as access log actor: {err}")))
}

fn role_of(role: Role) -> Result<RoleName, ApiError> {
    RoleName::parse(role.as_str())
        .map_err(|err| ApiError::Internal(format!("role as access log role: {err}")))
}

/// `GET /v1/audit/access`: entries of the access log as NDJSON, one
/// `{"at", "actor", "role", "loop_id", "what"}` a line, oldest first. Query: `loop_id`,
/// `actor`, `after` (an RFC 3339 time, exclusive: the `at` of the last line of the previous
/// page), `limit` (1–1000, default 100).
pub(crate) async fn access_log<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = access_query(&params)?;
    let entries = state.access.query(query).await.map_err(|err| {
        tracing::error!(%err, "the access log cannot be read");
        ApiError::Unavailable("the access log cannot be read now".to_owned())
    })?;
    let mut body = Vec::with_capacity(entries.len() * 160);
    for entry in &entries {
        serde_json::to_writer(&mut body, entry)
            .map_err(|err| ApiError::Internal(format!("access entry: {err}")))?;
        body.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The query of `GET /v1/audit/access`, each parameter checked with a message that says how
/// to write it.
fn access_query(params: &HashMap<String, String>) -> Result<AccessQuery, ApiError> {
    let invalid = |name: &str, why: &dyn std::fmt::Display| {
        ApiError::InvalidRequest(format!("query parameter {name}: {why}"))
    };
    let loop_id = params
        .get("loop_id")
        .map(|raw| LoopId::parse(raw).map_err(|err| invalid("loop_id", &err)))
        .transpose()?;
    let actor = params
        .get("actor")
        .map(|raw| Actor::parse(raw).map_err(|err| invalid("actor", &err)))
        .transpose()?;
    let after = params
        .get("after")
        .map(|raw| {
            Timestamp::from_str(raw).map_err(|_| {
                invalid(
                    "after",
                    &"use an RFC 3339 time with an offset, e.g. after=2026-11-27T09:30:00Z (the `at` of the last line of the previous page)",
                )
            })
        })
        .transpose()?;
    let limit = whole_number(params, "limit")?
        .map(|limit| QueryLimit::new(limit).map_err(|err| invalid("limit", &err)))
        .transpose()?
        .unwrap_or_default();
    Ok(AccessQuery {
        loop_id,
        actor,
        after,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn every_bad_parameter_is_named_with_how_to_write_it() {
        for (pairs, expected) in [
            (&[("limit", "0")][..], "limit must be 1 to 1000"),
            (&[("limit", "1001")][..], "limit must be 1 to 1000"),
            (&[("limit", "ten")][..], "whole number"),
            (&[("after", "yesterday")][..], "RFC 3339"),
            (&[("after", "2026-11-27")][..], "RFC 3339"),
            (&[("loop_id", "a b")][..], "loop_id may only contain"),
            (&[("actor", "a\nb")][..], "control characters"),
        ] {
            let err = access_query(&params(pairs)).unwrap_err().to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn good_parameters_make_the_query() {
        let query = access_query(&params(&[
            ("loop_id", "fft-rxx-000123"),
            ("actor", "staff:1a2b3c4d"),
            ("after", "2026-11-27T09:30:00+01:00"),
            ("limit", "1000"),
        ]))
        .unwrap();
        assert_eq!(query.loop_id.unwrap().as_str(), "fft-rxx-000123");
        assert_eq!(query.actor.unwrap().as_str(), "staff:1a2b3c4d");
        assert_eq!(
            query.after.unwrap(),
            "2026-11-27T08:30:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(query.limit.get(), 1000);
        assert_eq!(
            access_query(&HashMap::new()).unwrap().limit.get(),
            closeloop_access::DEFAULT_LIMIT
        );
    }
}

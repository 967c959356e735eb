//! [`ApiError`]: every way a request can fail, and the problem+json each becomes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use closeloop_domain::Rejection;
use closeloop_store::{StoreError, WriteError};

use crate::Problem;
use crate::auth::Role;

/// `Retry-After` of a 503 when nothing better is known: the condition (read models catching
/// up, a message server reconnecting) usually clears within a second.
pub const RETRY_AFTER_SECS: u64 = 1;
/// `Retry-After` of a 503 because the event store failed: it does not come back by itself
/// (an operator restarts the service), so clients need not retry often.
pub const STORE_RETRY_AFTER_SECS: u64 = 5;

/// Why a request failed. Each variant maps to one HTTP status and contract `code`.
///
/// A message never carries the text of a backend, operating-system or library error: the
/// variants that stand for such failures log it (with the request id of the request span) and
/// tell the caller in plain words which part failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: no bearer token, or not one of ours.
    #[error("send a valid token as `Authorization: Bearer <token>`")]
    Unauthorized,
    /// 403 `forbidden`: the token's role may not use this route.
    #[error(
        "the {role} role cannot use {method} {path}; use a token with one of these roles: {allowed}"
    )]
    Forbidden {
        /// The caller's role.
        role: Role,
        /// The method of the route.
        method: &'static str,
        /// The route's path template.
        path: &'static str,
        /// The roles that may.
        allowed: String,
    },
    /// 403 `forbidden`: the route covers the whole log (events, verification, proofs, dead
    /// letters, erasures), which cannot be cut to an org unit without breaking what the hash
    /// chain proves, and the credential is limited to one.
    #[error(
        "this credential is limited to org unit {scope}, and {method} {path} covers the whole log, which cannot be limited to one unit; use a credential without an org-unit scope"
    )]
    NeedsUnscoped {
        /// The credential's scope.
        scope: String,
        /// The method of the route.
        method: &'static str,
        /// The route's path template.
        path: &'static str,
    },
    /// 403 `forbidden`: new feedback names an org unit outside the credential's scope.
    #[error(
        "this credential is limited to org unit {scope}, and {org_unit} is outside it; record feedback for a unit within {scope}, or use a credential whose scope covers {org_unit}"
    )]
    OutsideScope {
        /// The credential's scope.
        scope: String,
        /// The org unit the request named.
        org_unit: String,
    },
    /// 400 `invalid_request`: the request is malformed (JSON syntax, query parameters, headers).
    #[error("{0}")]
    InvalidRequest(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// A rule of the contract refused the command: 404 for `unknown_loop`, 422 otherwise.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// 409 `version_conflict`.
    #[error("{0}")]
    VersionConflict(String),
    /// 422 `idempotency_key_reused`: the `Idempotency-Key` was sent before with another body
    /// or on another path (contract §3 v1.1).
    #[error(
        "this Idempotency-Key was already used for a different request (another body or another path); send a new key with a new request"
    )]
    IdempotencyKeyReused,
    /// 503 `unavailable` with `Retry-After: 1`: a part of the service cannot serve this now.
    /// The message names the part in plain words; it never holds backend error text.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `unavailable`: the event store failed (the cause is logged where it is converted).
    #[error(
        "the event store is not accepting requests after a failure; nothing was stored. Try again later"
    )]
    StoreUnavailable,
    /// 503 `unavailable`: too many expensive requests of one kind are running and waiting.
    #[error("too many {class} requests are in progress; try again in {retry_after} s")]
    Busy {
        /// The kind of request, in words (e.g. `audit verification`).
        class: &'static str,
        /// Seconds to wait before trying again.
        retry_after: u64,
    },
    /// 500 `internal`: a bug or damaged data; details go to the log only.
    #[error("internal error; the service log has the details under this request's id")]
    Internal(String),
}

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Rejected { rejection, .. } => ApiError::Rejected(rejection),
            WriteError::VersionConflict { .. } | WriteError::Contended(_) => {
                ApiError::VersionConflict(err.to_string())
            }
            WriteError::KeyReused(_) => ApiError::IdempotencyKeyReused,
            WriteError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Corrupt { .. } | StoreError::UnsupportedFormat { .. } => {
                ApiError::Internal(err.to_string())
            }
            // Every other failure is the store's own (a failed write or flush, a backend
            // error): the caller may try again once it is back. Its text, which can be the
            // operating system's ("No space left on device"), stays in the log.
            err => {
                tracing::error!(error = %err, "the event store failed");
                ApiError::StoreUnavailable
            }
        }
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. }
            | ApiError::NeedsUnscoped { .. }
            | ApiError::OutsideScope { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Rejected(rejection @ Rejection::UnknownLoop(_)) => {
                (StatusCode::NOT_FOUND, rejection.code())
            }
            ApiError::Rejected(rejection) => (StatusCode::UNPROCESSABLE_ENTITY, rejection.code()),
            ApiError::VersionConflict(_) => (StatusCode::CONFLICT, "version_conflict"),
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::Unavailable(_) | ApiError::StoreUnavailable | ApiError::Busy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Seconds a client should wait before trying again, for the answers that have one.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable(_) => Some(RETRY_AFTER_SECS),
            ApiError::StoreUnavailable => Some(STORE_RETRY_AFTER_SECS),
            ApiError::Busy { retry_after, .. } => Some((*retry_after).max(1)),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            // The detail stays in the log: it may describe stored data.
            tracing::error!(%detail, "request failed");
        }
        let mut response = Problem::new(status, code, self.to_string()).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_store_is_named_without_its_error_text() {
        let err = ApiError::from(StoreError::Stopped(
            "IO error: No space left on device (os error 28)".to_owned(),
        ));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let backend = ApiError::from(StoreError::Backend("sled: corrupted page".to_owned()));
        let shown = backend.to_string();
        assert!(shown.contains("event store"), "{shown}");
        assert!(
            !shown.contains("sled") && !shown.contains("os error"),
            "{shown}"
        );
    }

    #[test]
    fn every_503_says_when_to_try_again() {
        for err in [
            ApiError::Unavailable("the read models are catching up".to_owned()),
            ApiError::StoreUnavailable,
            ApiError::Busy {
                class: "audit verification",
                retry_after: 0,
            },
        ] {
            let response = err.into_response();
            let seconds: u64 = response.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(seconds >= 1);
        }
    }
}

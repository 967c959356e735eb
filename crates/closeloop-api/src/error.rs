//! [`ApiError`]: every way a request can fail, and the problem+json each becomes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use closeloop_domain::Rejection;
use closeloop_store::{StoreError, WriteError};

use crate::Problem;

/// Why a request failed. Each variant maps to one HTTP status and contract `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: no bearer token, or not one of ours.
    #[error("send a valid token as `Authorization: Bearer <token>`")]
    Unauthorized,
    /// 403 `forbidden`: the token's role may not do this.
    #[error("the {role} role cannot {action}; use a token with one of these roles: {allowed}")]
    Forbidden {
        /// The caller's role.
        role: &'static str,
        /// What they tried.
        action: &'static str,
        /// The roles that may.
        allowed: String,
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
    /// 503 `unavailable`: the store cannot take or serve requests now.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal`: a bug or damaged data; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Rejected { rejection, .. } => ApiError::Rejected(rejection),
            WriteError::VersionConflict { .. } | WriteError::Contended(_) => {
                ApiError::VersionConflict(err.to_string())
            }
            WriteError::KeyReused(detail) => {
                ApiError::Rejected(Rejection::InvalidData(format!("Idempotency-Key: {detail}")))
            }
            WriteError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Stopped(_) | StoreError::Backend(_) => ApiError::Unavailable(format!(
                "the event store is unavailable ({err}); nothing was stored, try again later"
            )),
            StoreError::Corrupt { .. } | StoreError::UnsupportedFormat { .. } => {
                ApiError::Internal(err.to_string())
            }
        }
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Rejected(rejection @ Rejection::UnknownLoop(_)) => {
                (StatusCode::NOT_FOUND, rejection.code())
            }
            ApiError::Rejected(rejection) => (StatusCode::UNPROCESSABLE_ENTITY, rejection.code()),
            ApiError::VersionConflict(_) => (StatusCode::CONFLICT, "version_conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
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
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

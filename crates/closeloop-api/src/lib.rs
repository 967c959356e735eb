//! Closeloop's HTTP API.
//!
//! - [`router`] builds the axum [`Router`] over an [`AppState`]; [`serve`] runs it on a bound
//!   listener until a shutdown future resolves, then drains requests in flight.
//! - [`problem`] turns every error into RFC 9457 `application/problem+json` with a `code`.
//! - [`auth`] parses `CLOSELOOP_API_TOKENS` into roles.
//! - `health` answers `/healthz` (the process is up) and `/readyz` (it can take writes).
//!
//! - `commands`: every write endpoint, through the one write path of `closeloop-store`.
//! - `audit`: the NDJSON log and the chain check.

mod audit;
pub mod auth;
mod commands;
pub mod error;
mod health;
pub mod metrics;
pub mod problem;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use closeloop_store::EventStore;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use auth::{ApiTokens, Caller, Role};
pub use error::ApiError;
pub use problem::Problem;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// How long a request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
pub struct AppState<S> {
    /// The event store.
    pub store: Arc<S>,
    /// Bearer tokens and their roles.
    pub tokens: ApiTokens,
    /// The time commands are recorded at; tests pass a controlled clock.
    pub clock: Clock,
    /// Renders `GET /metrics`; `None` when no recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl<S> std::fmt::Debug for AppState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// Where handlers get the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// The HTTP routes of the service, with body limit, timeout and request tracing.
pub fn router<S: EventStore>(state: Arc<AppState<S>>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz::<S>))
        .route("/metrics", get(metrics::render::<S>))
        .route("/v1/feedback", post(commands::post_feedback::<S>))
        .route("/v1/loops/{loop_id}/{step}", post(commands::post_step::<S>))
        .route("/v1/changes", post(commands::post_changes::<S>))
        .route("/v1/events", get(audit::events::<S>))
        .route("/v1/audit/verify", get(audit::audit_verify::<S>))
        .fallback(problem::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

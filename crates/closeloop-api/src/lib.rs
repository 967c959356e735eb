//! Closeloop's HTTP API.
//!
//! - [`router`] builds the axum [`Router`] over an [`AppState`]; [`serve`] runs it on a bound
//!   listener until a shutdown future resolves, then drains requests in flight.
//! - [`problem`] turns every error into RFC 9457 `application/problem+json` with a `code`.
//! - [`auth`] parses `CLOSELOOP_API_TOKENS` into roles.
//! - `health` answers `/healthz` (the process is up) and `/readyz` (it can take writes).
//! - `commands`: every write endpoint, through the one write path of `closeloop-store`.
//! - `reads`: loop lists and details, stats, and "you said, we did" (JSON and HTML).
//! - `audit`: the NDJSON log, the chain check and RFC 6962 proofs.
//! - [`metrics`]: Prometheus metrics; `openapi`: the OpenAPI document built from [`ROUTES`].

mod audit;
pub mod auth;
mod commands;
mod dead_letters;
pub mod error;
mod health;
pub mod metrics;
mod openapi;
pub mod problem;
mod reads;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get, post};
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
    /// The read models, kept up to date from the store's log.
    pub projections: Arc<closeloop_projections::Projections>,
    /// Due dates.
    pub sla: closeloop_domain::Sla,
    /// Bearer tokens and their roles.
    pub tokens: ApiTokens,
    /// The time commands are recorded at; tests pass a controlled clock.
    pub clock: Clock,
    /// Renders `GET /metrics`; `None` when no recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The NATS side (status for `/readyz`, dead letters); `None` when NATS is off.
    pub nats: Option<closeloop_ingest::NatsHandle>,
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

/// Every route the service serves, as (method, path template). The router and the OpenAPI
/// document are both built from this list, so they cannot drift apart.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/you-said-we-did"),
    ("GET", "/v1/you-said-we-did"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/loops"),
    ("GET", "/v1/loops/{loop_id}"),
    ("POST", "/v1/loops/{loop_id}/acknowledgements"),
    ("POST", "/v1/loops/{loop_id}/responses"),
    ("POST", "/v1/loops/{loop_id}/actions"),
    ("POST", "/v1/loops/{loop_id}/changes"),
    ("POST", "/v1/loops/{loop_id}/no-change"),
    ("POST", "/v1/loops/{loop_id}/report-backs"),
    ("POST", "/v1/loops/{loop_id}/reopenings"),
    ("POST", "/v1/changes"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/events"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/audit/proof/inclusion"),
    ("GET", "/v1/audit/proof/consistency"),
    ("GET", "/v1/dead-letters"),
    ("POST", "/v1/dead-letters/{seq}/retry"),
];

/// The handler of one entry of [`ROUTES`].
fn handler<S: EventStore>(method: &str, path: &str) -> MethodRouter<Arc<AppState<S>>> {
    if let Some(step) = path.strip_prefix("/v1/loops/{loop_id}/") {
        let (_, event_type) = commands::STEPS
            .into_iter()
            .find(|(name, _)| *name == step)
            .unwrap_or_else(|| panic!("no step endpoint called {step}"));
        return post(
            move |State(state): State<Arc<AppState<S>>>,
                  Path(loop_id): Path<String>,
                  headers: HeaderMap,
                  body: Bytes| {
                commands::post_step(state, loop_id, headers, body, event_type)
            },
        );
    }
    match (method, path) {
        ("GET", "/healthz") => get(health::healthz),
        ("GET", "/readyz") => get(health::readyz::<S>),
        ("GET", "/metrics") => get(metrics::render::<S>),
        ("GET", "/v1/openapi.json") => get(openapi::serve_document),
        ("GET", "/you-said-we-did") => get(reads::you_said_we_did_page::<S>),
        ("GET", "/v1/you-said-we-did") => get(reads::you_said_we_did::<S>),
        ("POST", "/v1/feedback") => post(commands::post_feedback::<S>),
        ("GET", "/v1/loops") => get(reads::list_loops::<S>),
        ("GET", "/v1/loops/{loop_id}") => get(reads::get_loop::<S>),
        ("GET", "/v1/stats") => get(reads::stats::<S>),
        ("POST", "/v1/changes") => post(commands::post_changes::<S>),
        ("GET", "/v1/events") => get(audit::events::<S>),
        ("GET", "/v1/audit/verify") => get(audit::audit_verify::<S>),
        ("GET", "/v1/audit/proof/inclusion") => get(audit::inclusion_proof::<S>),
        ("GET", "/v1/audit/proof/consistency") => get(audit::consistency_proof::<S>),
        ("GET", "/v1/dead-letters") => get(dead_letters::list::<S>),
        ("POST", "/v1/dead-letters/{seq}/retry") => post(dead_letters::retry::<S>),
        _ => panic!("no handler for {method} {path}"),
    }
}

/// The HTTP routes of the service, with body limit, timeout, metrics and request tracing.
pub fn router<S: EventStore>(state: Arc<AppState<S>>) -> Router {
    let mut router = Router::new();
    for (method, path) in ROUTES {
        router = router.route(path, handler::<S>(method, path));
    }
    router
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

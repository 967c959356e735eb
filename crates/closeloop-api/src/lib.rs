//! Closeloop's HTTP API.
//!
//! - [`router`] builds the axum [`Router`] over an [`AppState`] from the [`ROUTES`] table;
//!   [`serve`] runs it on a bound listener until a shutdown future resolves, then drains
//!   requests in flight.
//! - [`routes`]: every route with who may use it, its query parameters and its concurrency
//!   class; one guard layer enforces them all before a handler runs and hands the handler a
//!   [`Credential`].
//! - [`problem`] turns every error into RFC 9457 `application/problem+json` with a `code` and
//!   the request id ([`request_id`]).
//! - [`auth`] parses `CLOSELOOP_API_TOKENS` into credentials: a role, an optional name (the
//!   actor events record) and an optional org-unit scope.
//! - `scope`: a scoped credential writes only inside its subtree; `personal`: leaders read
//!   loops without personal data.
//! - [`limits`]: concurrency limits for the expensive reads, shedding with 503 and
//!   `Retry-After`.
//! - [`ingest`]: what the API needs of the ingestion side (status, dead letters), as a trait
//!   the binary wires to NATS.
//! - [`assets`]: the NHS design system stylesheet the pages link, under a name that changes
//!   with its content.
//! - `health` answers `/healthz` (the process is up) and `/readyz` (it can take writes).
//! - `commands`: every write endpoint, through the one write path of `closeloop-store`.
//! - `reads`: loop lists and details, stats, and the entries of "you said, we did" (its JSON,
//!   and what its pages show).
//! - `audit`: the NDJSON log, the chain check and RFC 6962 proofs.
//! - `access`: "who looked" — recording reads of personal data in the access log, and the
//!   auditors' `GET /v1/audit/access`.
//! - [`pages`]: what every HTML page shares — the organisation and its place names
//!   ([`pages::Site`]), the NHS design system frame, text made safe to show — and the pages:
//!   `pages::public` is "you said, we did" as a page, a printable view, an Atom feed and a
//!   snippet for other sites; signing in to the pages with a cookie session
//!   ([`pages::session`]); the staff work queue.
//! - [`metrics`]: Prometheus metrics; `openapi`: the OpenAPI document built from [`ROUTES`].
#![recursion_limit = "256"]

mod access;
pub mod assets;
mod audit;
pub mod auth;
mod commands;
mod dead_letters;
mod erasures;
pub mod error;
mod guard;
mod health;
pub mod ingest;
pub mod limits;
pub mod metrics;
mod openapi;
pub mod pages;
mod params;
mod personal;
pub mod problem;
mod reads;
pub mod request_id;
pub mod routes;
mod scope;
#[cfg(test)]
mod scope_matrix;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, OriginalUri, Path, Request, State};
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get, post};
use closeloop_store::EventStore;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use auth::{ApiTokens, Credential, Role, Source};
pub use error::ApiError;
pub use ingest::IngestAdmin;
pub use limits::Limits;
pub use problem::Problem;
pub use request_id::RequestId;
pub use routes::{Access, ROUTES, Route};

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// How long a request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Stories the public page keeps redacted in memory: a hundred pages of the largest size,
/// so that readers paging through the recent entries hit the cache.
pub const STORY_CACHE_ENTRIES: usize = 10_000;
/// Bytes of story text the public page keeps in memory at most. Typical stories are well
/// under a kilobyte, so this rarely binds; it stops a log of long stories (up to 100,000
/// bytes each) from making the cache large.
pub const STORY_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// An empty cache of redacted stories for [`AppState::stories`], of [`STORY_CACHE_ENTRIES`]
/// stories and [`STORY_CACHE_BYTES`] bytes at most.
#[must_use]
pub fn story_cache() -> Arc<closeloop_projections::StoryCache> {
    Arc::new(closeloop_projections::StoryCache::new(
        STORY_CACHE_ENTRIES,
        STORY_CACHE_BYTES,
    ))
}

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
    /// The ingestion side (status for `/readyz`, dead letters); `None` when NATS is off.
    pub ingest: Option<Arc<dyn IngestAdmin>>,
    /// Concurrency limits of the expensive reads.
    pub limits: Limits,
    /// Redacted stories of the public page, so that a page is read from the store once, not
    /// on every request; build it with [`story_cache`]. Whatever erases a story must
    /// invalidate it here too.
    pub stories: Arc<closeloop_projections::StoryCache>,
    /// The bounds on every field and time of the events requests record (contract defaults,
    /// which an operator may lower).
    pub input_limits: closeloop_domain::Limits,
    /// The key store personal data is sealed with: opens it for staff and auditors, destroys
    /// it on erasure. `None` only where the store keeps personal data in plain (tests).
    pub keys: Option<Arc<dyn closeloop_keys::KeyStore>>,
    /// Whether a story appears on the public page only once staff approved it
    /// (`CLOSELOOP_PUBLISH_REQUIRES_APPROVAL`).
    pub publish_requires_approval: bool,
    /// Who read personal data: every read that returns it is recorded here first, and is
    /// refused when it cannot be.
    pub access: Arc<dyn closeloop_access::AccessLog>,
    /// The organisation the HTML pages speak for and the display names of its places.
    pub site: Arc<pages::Site>,
}

impl<S> AppState<S> {
    /// How this service reads personal data: with its key store when it has one.
    #[must_use]
    pub fn reveal(&self) -> closeloop_store::record::Reveal<'_> {
        closeloop_store::record::Reveal::with_keys(self.keys.as_deref())
    }
}

impl<S> std::fmt::Debug for AppState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tokens", &self.tokens)
            .field("ingest", &self.ingest)
            .field("limits", &self.limits)
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

/// The handler of one entry of [`ROUTES`].
fn handler<S: EventStore>(method: &str, path: &str) -> MethodRouter<Arc<AppState<S>>> {
    if let Some(step) = path.strip_prefix("/v1/loops/{loop_id}/") {
        let (_, event_type) = commands::STEPS
            .into_iter()
            .find(|(name, _)| *name == step)
            .unwrap_or_else(|| panic!("no step endpoint called {step}"));
        return post(
            move |State(state): State<Arc<AppState<S>>>,
                  credential: Credential,
                  OriginalUri(uri): OriginalUri,
                  Path(loop_id): Path<String>,
                  headers: HeaderMap,
                  body: Bytes| async move {
                commands::post_step(
                    state,
                    credential,
                    uri.path(),
                    loop_id,
                    headers,
                    body,
                    event_type,
                )
                .await
            },
        );
    }
    match (method, path) {
        ("GET", "/healthz") => get(health::healthz),
        ("GET", "/assets/{file}") => get(assets::serve),
        ("GET", "/assets/images/{file}") => get(assets::serve_image),
        ("GET", "/readyz") => get(health::readyz::<S>),
        ("GET", "/metrics") => get(metrics::render::<S>),
        ("GET", "/v1/openapi.json") => get(openapi::serve_document),
        ("GET", "/you-said-we-did") => get(pages::public::page::<S>),
        ("GET", "/you-said-we-did/print") => get(pages::public::print::<S>),
        ("GET", "/you-said-we-did/feed.atom") => get(pages::public::feed::<S>),
        ("GET", "/you-said-we-did/snippet") => get(pages::public::snippet::<S>),
        ("GET", "/v1/you-said-we-did") => get(reads::you_said_we_did::<S>),
        ("GET", "/insights") => get(pages::insights::page::<S>),
        ("POST", "/v1/feedback") => post(commands::post_feedback::<S>),
        ("GET", "/v1/loops") => get(reads::list_loops::<S>),
        ("GET", "/v1/loops/{loop_id}") => get(reads::get_loop::<S>),
        ("GET", "/v1/stats") => get(reads::stats::<S>),
        ("POST", "/v1/changes") => post(commands::post_changes::<S>),
        ("GET", "/v1/events") => get(audit::events::<S>),
        ("GET", "/v1/audit/verify") => get(audit::audit_verify::<S>),
        ("GET", "/v1/audit/proof/inclusion") => get(audit::inclusion_proof::<S>),
        ("GET", "/v1/audit/proof/consistency") => get(audit::consistency_proof::<S>),
        ("GET", "/v1/audit/access") => get(access::access_log::<S>),
        ("GET", "/v1/dead-letters") => get(dead_letters::list::<S>),
        ("POST", "/v1/dead-letters/{seq}/retry") => post(dead_letters::retry::<S>),
        ("POST", "/v1/erasures") => post(erasures::post_erasure::<S>),
        ("GET", "/sign-in") => get(pages::sign_in::page::<S>),
        ("POST", "/sign-in") => post(pages::sign_in::sign_in::<S>),
        ("POST", "/sign-out") => post(pages::sign_in::sign_out),
        ("GET", "/staff") => get(pages::staff::queue::show::<S>),
        ("POST", "/staff/changes") => post(pages::staff::queue::record_change::<S>),
        ("GET", "/staff/loops/{loop_id}") => get(pages::staff::loop_page::show::<S>),
        ("POST", "/staff/loops/{loop_id}/{step}") => post(pages::staff::loop_page::record::<S>),
        _ => panic!("no handler for {method} {path}"),
    }
}

/// The HTTP routes of the service, each behind its guard, with body limit, timeout, metrics,
/// request ids, request tracing and problem+json for every error.
///
/// Layers, outermost first: request id, error shaping ([`problem`]), the URI length limit, trace
/// span, metrics, timeout; then, per route, the guard (access, query parameters, concurrency limit) and the
/// body limit. The guard runs before the body limit, so a request that is refused is
/// answered without reading its body.
pub fn router<S: EventStore>(state: Arc<AppState<S>>) -> Router {
    assets::prepare();
    let site = Arc::clone(&state.site);
    // The pages' sessions live as long as the router: a restart signs everyone out.
    let sessions = Arc::new(pages::session::Sessions::default());
    let mut router = Router::new();
    for route in ROUTES {
        let guard = guard::Guard::new(Arc::clone(&state), route, Arc::clone(&sessions));
        let endpoint = handler::<S>(route.method, route.path)
            .route_layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
            .route_layer(axum::middleware::from_fn_with_state(
                guard,
                guard::guard::<S>,
            ));
        router = router.route(route.path, endpoint);
    }
    router
        .fallback(problem::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::from_fn_with_state(site, problem::finish))
        .layer(axum::middleware::from_fn(request_id::assign))
}

/// Longest request target (path and query) the service reads, in bytes. Longer ones are
/// answered 414 as problem+json here; the HTTP server itself refuses request lines past its
/// own much larger buffer, before Closeloop sees them.
pub const URI_LIMIT_BYTES: usize = 8 * 1024;

/// Answers 414 to a request whose path and query are longer than [`URI_LIMIT_BYTES`], before
/// anything parses them (the outer layer shapes the answer as problem+json).
async fn limit_uri(request: Request, next: axum::middleware::Next) -> axum::response::Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if length > URI_LIMIT_BYTES {
        return axum::response::IntoResponse::into_response(axum::http::StatusCode::URI_TOO_LONG);
    }
    next.run(request).await
}

/// The trace span of a request: method, route template and request id. Never the raw path or
/// query, which hold loop ids (and could hold anything a client sends). At info level, so
/// that the errors logged while serving the request carry its id.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", RequestId::as_str);
    tracing::info_span!("request", method = %request.method(), route, request_id)
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

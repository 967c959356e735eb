//! Prometheus metrics: requests and latencies by route, appends, the log head and how far the
//! read models lag behind it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use closeloop_store::EventStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Latency buckets in seconds: from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder; call once, in the binary.
///
/// # Errors
/// When a recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".to_owned()),
            LATENCY_BUCKETS,
        )
        .map_err(|err| err.to_string())?
        .install_recorder()
        .map_err(|err| format!("cannot install the metrics recorder: {err}"))
}

/// Counts every request and times it, labelled by method, route template and status.
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    // The route template (`/v1/loops/{loop_id}`), never the raw path: ids stay out of labels.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("closeloop_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("closeloop_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn render<S: EventStore>(State(state): State<Arc<AppState<S>>>) -> Response {
    let head = state.store.head();
    #[allow(
        clippy::cast_precision_loss,
        reason = "gauges are f64; positions stay far below 2^53"
    )]
    metrics::gauge!("closeloop_log_head_position").set(head as f64);
    // How far the read models are behind the log, and whether the projector still runs.
    #[allow(
        clippy::cast_precision_loss,
        reason = "gauges are f64; positions stay far below 2^53"
    )]
    metrics::gauge!("closeloop_projector_lag_events")
        .set(head.saturating_sub(state.projections.applied()) as f64);
    metrics::gauge!("closeloop_projector_up").set(if state.projections.is_halted() {
        0.0
    } else {
        1.0
    });
    metrics::gauge!("closeloop_store_up").set(if state.store.ready().is_ok() {
        1.0
    } else {
        0.0
    });
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            "# metrics are not enabled in this process\n",
        )
            .into_response(),
    }
}

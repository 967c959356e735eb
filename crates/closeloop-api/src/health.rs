//! `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use closeloop_store::EventStore;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::STORE_RETRY_AFTER_SECS;

/// The process is up and answering.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The service can take writes: 200 when ready, 503 with the failing part when not. The
/// ingestion side is reported under `checks.nats` but does not make the service unready: the
/// HTTP API works without it, and ingestion catches up once NATS is back.
///
/// The answer is public, so it names failing parts in plain words; the errors behind them
/// (which can be the operating system's) are in the log.
pub(crate) async fn readyz<S: EventStore>(State(state): State<Arc<AppState<S>>>) -> Response {
    let head = state.store.head();
    let nats = match &state.ingest {
        Some(ingest) => {
            let status = ingest.status(head);
            let mut report = json!(status);
            report["status"] = json!(if status.is_healthy() {
                "ok"
            } else {
                "degraded"
            });
            report
        }
        None => json!({"status": "off"}),
    };
    match state.store.ready() {
        Ok(()) => Json(json!({"status": "ready", "checks": {
            "store": {"status": "ok", "head": head},
            "nats": nats,
        }}))
        .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: the event store is not accepting writes");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "checks": {
                    "store": {
                        "status": "failed",
                        "head": head,
                        "detail": "the event store is not accepting writes after a failure; the service log has the cause",
                    },
                    "nats": nats,
                }})),
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STORE_RETRY_AFTER_SECS),
            );
            response
        }
    }
}

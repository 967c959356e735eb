//! `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use closeloop_store::EventStore;
use serde_json::{Value, json};

use crate::AppState;

/// The process is up and answering.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The service can take writes: 200 when ready, 503 with the reason when not. The NATS side
/// is reported under `checks.nats` but does not make the service unready: the HTTP API works
/// without it, and ingestion catches up once NATS is back.
pub(crate) async fn readyz<S: EventStore>(
    State(state): State<Arc<AppState<S>>>,
) -> (StatusCode, Json<Value>) {
    let head = state.store.head();
    let nats = match &state.nats {
        Some(nats) => {
            let status = nats.status(head);
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
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": {
                "store": {"status": "ok", "head": head},
                "nats": nats,
            }})),
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "checks": {
                "store": {"status": "failed", "detail": err.to_string()},
                "nats": nats,
            }})),
        ),
    }
}

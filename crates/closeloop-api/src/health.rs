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

/// The service can take writes and serve reads: 200 when ready, 503 with the failing part
/// when not. Three parts are checked: the store (takes writes), the projector (alive, and how
/// many events the read models lag behind the log) and the NATS side. NATS does not make the
/// service unready: the HTTP API works without it, and ingestion catches up once it is back.
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
    let applied = state.projections.applied();
    let lag = head.saturating_sub(applied);
    let projector_ok = !state.projections.is_halted();
    let projector = if projector_ok {
        json!({"status": "ok", "applied": applied, "lag": lag})
    } else {
        // Logged at debug: `/readyz` is public and polled; the failure itself was logged as
        // an error when it happened.
        tracing::debug!("not ready: the projector has stopped");
        json!({
            "status": "failed",
            "applied": applied,
            "lag": lag,
            "detail": "the projector stopped after a failure, so reads no longer follow the log; the service log has the cause",
        })
    };
    let mut store = match state.store.ready() {
        Ok(()) => json!({"status": "ok", "head": head}),
        Err(err) => {
            tracing::debug!(error = %err, "not ready: the event store is not accepting writes");
            json!({
                "status": "failed",
                "head": head,
                "detail": "the event store is not accepting writes after a failure; the service log has the cause",
            })
        }
    };
    if let Some(lag) = state.store.replica_lag() {
        // A replica of a shared log: how many of the log's messages it has still to apply.
        store["replica_lag"] = json!(lag);
    }
    let ready = store["status"] == "ok" && projector_ok;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {"store": store, "projector": projector, "nats": nats},
    });
    if ready {
        return Json(body).into_response();
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(STORE_RETRY_AFTER_SECS),
    );
    response
}

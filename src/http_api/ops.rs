//! `/health`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::state::AppState;

/// 200 while the process runs.
pub async fn health() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"})))
}

/// 200 when accepting connections and the broker is reachable; 503 while starting or
/// draining.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (status, reason) = if !state.is_accepting() {
        (StatusCode::SERVICE_UNAVAILABLE, if state.is_draining() { "draining" } else { "starting" })
    } else if !state.hub.broker_ready().await {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable")
    } else {
        (StatusCode::OK, "ready")
    };
    (status, axum::Json(serde_json::json!({"status": reason})))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

//! `/health`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::sinks::Health;
use crate::state::AppState;

/// 200 while the process runs.
pub async fn health() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"})))
}

/// 200 when accepting connections, the broker is reachable and routed messages can be
/// accepted; 503 while starting or draining.
///
/// Sinks: without an outbox a sink that is down (or not checked yet) makes the node not
/// ready, since messages routed to it would be refused. With an outbox the node stays
/// ready (messages are accepted onto disk and delivered later) and the body says
/// `degraded`. The body lists every sink's status and the outbox's depth.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let dispatcher = &state.dispatcher;
    let outbox = dispatcher.outbox().map(|o| o.pending());
    let mut sinks = serde_json::Map::new();
    let mut not_up = Vec::new();
    for sink in dispatcher.sinks() {
        let health = sink.health();
        let status = match health {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        };
        if health != Health::Up {
            not_up.push(sink.name.as_str());
        }
        let mut entry = serde_json::json!({"kind": sink.kind, "status": status});
        if let (Health::Down, Some(error)) = (health, sink.last_error()) {
            entry["error"] = error.into();
        }
        sinks.insert(sink.name.clone(), entry);
    }
    let (status, reason) = if !state.is_accepting() {
        (StatusCode::SERVICE_UNAVAILABLE, if state.is_draining() { "draining".into() } else { "starting".into() })
    } else if !state.hub.broker_ready().await {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable".into())
    } else if !not_up.is_empty() && outbox.is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, format!("sinks unavailable: {}", not_up.join(", ")))
    } else if !not_up.is_empty() {
        (StatusCode::OK, "degraded".into())
    } else {
        (StatusCode::OK, "ready".to_owned())
    };
    let mut body = serde_json::json!({"status": reason, "broker": state.hub.broker_status()});
    if !sinks.is_empty() {
        body["sinks"] = sinks.into();
    }
    if let Some(pending) = outbox {
        body["outbox"] = serde_json::json!({"pending": pending});
    }
    (status, axum::Json(body))
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.record_broker(&state.hub.broker_status());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

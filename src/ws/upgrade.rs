//! `GET /ws`: authenticate, check origin and capacity, then upgrade.
//!
//! Refusals happen before the upgrade with an HTTP status and a JSON body, so a client
//! never sees a WebSocket open and then shut for a reason known up front.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connection::{Companion, Connection, ConnectionTask};
use super::handshake::UpgradeRequest;
use super::protocol::{frames, resolve_topic};
use super::session::Session;
use crate::auth::{AuthError, Identity};
use crate::domain::{ConnectionId, ErrorCode, Topic};
use crate::hub::{AdmissionError, CloseReason, ConnectionHandle, QueueLimits};
use crate::state::AppState;

fn refuse(state: &AppState, status: StatusCode, code: ErrorCode, reason: &'static str, message: &str) -> Response {
    state.metrics.refused(reason);
    state.metrics.error(code);
    let body = json!({"type": "error", "code": code.as_str(), "message": message, "error": {"code": code.as_str(), "message": message}});
    (status, axum::Json(body)).into_response()
}

/// What the upgrade's query string asks for.
struct ConnectQuery {
    token: Option<String>,
    topics: Vec<Result<Topic, String>>,
}

fn parse_query(raw: Option<&str>) -> ConnectQuery {
    let mut token = None;
    let mut topics = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "token" => token = Some(value.into_owned()),
            "topic" | "project_id" | "job_id" | "agent_id" => {
                let value = Value::String(value.into_owned());
                topics.push(resolve_topic(|name| (name == key.as_ref()).then_some(&value)));
            }
            _ => {}
        }
    }
    ConnectQuery { token, topics }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The upgrade handler.
pub async fn ws_handler(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: UpgradeRequest,
) -> Response {
    if !state.is_accepting() {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            "draining",
            "server is shutting down",
        );
    }
    if !state.config.allowed_origins.is_empty() {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if origin.is_some_and(|o| !state.config.allowed_origins.iter().any(|a| a == o)) {
            return refuse(&state, StatusCode::FORBIDDEN, ErrorCode::Authorization, "origin", "origin not allowed");
        }
    }
    let query = parse_query(query.as_deref());
    let token = query.token.as_deref().or_else(|| bearer(&headers));
    let identity = match token {
        Some(token) => state.authenticator.authenticate(token),
        None if state.config.dev => Ok(Identity::anonymous()),
        None => Err(AuthError::Missing),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => {
            return refuse(
                &state,
                StatusCode::UNAUTHORIZED,
                ErrorCode::Authentication,
                "unauthenticated",
                &e.to_string(),
            );
        }
    };
    let admission = match state.hub.connections.admit(remote.ip()) {
        Ok(admission) => admission,
        Err(AdmissionError::ServerFull) => {
            return refuse(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServiceUnavailable,
                "capacity",
                "server is at its connection limit",
            );
        }
        Err(AdmissionError::TooManyFromIp) => {
            return refuse(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimitExceeded,
                "per_ip",
                "too many connections from your address",
            );
        }
    };
    let ws = &state.config.websocket;
    // tungstenite panics unless its write buffer limit (unbounded here) exceeds the
    // write buffer size.
    let write_buffer_size = ws.write_buffer_size.min(usize::MAX - 1);
    let hard_limit = state.config.limits.max_message_size.saturating_mul(2);
    // Keeps shutdown waiting for this connection from now on, not only once the upgrade
    // completes.
    let tracked = state.tasks.token();
    let task_state = state.clone();
    let config = WebSocketConfig::default()
        .read_buffer_size(ws.read_buffer_size)
        .write_buffer_size(write_buffer_size)
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit));
    let (response, socket) = upgrade.accept(config);
    // Boxed inside the task (see `ConnectionTask`): everything captured here is needed
    // only until the connection is open.
    let start = async move {
        // `None`: the client went away before the upgrade completed; dropping the
        // admission and the task token is all the cleanup there is.
        let socket = socket.await?;
        let state = task_state;
        let id = ConnectionId::generate();
        let limits =
            QueueLimits { frames: state.config.limits.send_queue_events, bytes: state.config.limits.send_queue_bytes };
        let conn = Arc::new(ConnectionHandle::new(id, identity.user.clone(), remote, limits, state.metrics.clone()));
        state.hub.connections.insert(conn.clone());
        // Shutdown closes every registered connection; one registered just after
        // that sweep closes itself here.
        if state.shutdown.is_cancelled() {
            conn.close(CloseReason::Shutdown);
        }
        state.metrics.connections.increment(1.0);
        tracing::info!(connectionId = %conn.id, userId = %conn.user, remote = %remote, "connected");
        conn.send(frames::connected(conn.id.as_str(), conn.user.as_str()).into());
        let session = Session::new(state.clone(), conn.clone(), identity);
        let mut companion = Box::new(Companion { session, admission, tracked });
        companion.session.subscribe_automatic().await;
        companion.session.subscribe_requested(query.topics).await;
        Some(Connection::new(socket, conn, state, companion))
    };
    tokio::spawn(ConnectionTask::new(start));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_topics_and_aliases() {
        let q = parse_query(Some("token=abc&topic=job:1&topic=global&project_id=p%201&job_id=j&agent_id=a&x=1"));
        assert_eq!(q.token.as_deref(), Some("abc"));
        let topics: Vec<_> = q.topics.iter().map(|t| t.as_ref().map(|t| t.to_string())).collect();
        assert_eq!(topics[0].as_deref(), Ok("job:1"));
        assert_eq!(topics[1].as_deref(), Ok("global"));
        assert!(topics[2].is_err(), "space is not a topic character");
        assert_eq!(topics[3].as_deref(), Ok("job:j"));
        assert_eq!(topics[4].as_deref(), Ok("agent:a"));
    }
}

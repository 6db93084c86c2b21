//! `GET /api/connections`, `POST /api/connections/{id}/send`, `DELETE /api/connections/{id}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use super::error::{ApiJson, ApiPath, ApiQuery};
use crate::domain::{ConnectionId, Event, Topic};
use crate::hub::CloseReason;
use crate::state::AppState;

/// Filters of the connection list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    user: Option<String>,
    topic: Option<String>,
}

/// Lists open connections, optionally of one user and/or holding one topic.
pub async fn list(State(state): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Json<Value>, ApiError> {
    let topic = match &q.topic {
        Some(t) => Some(Topic::parse(t).map_err(|e| ApiError::Validation(format!("invalid topic: {e}")))?),
        None => None,
    };
    let connections: Vec<Value> = state
        .hub
        .connections
        .list(q.user.as_deref(), topic.as_ref())
        .iter()
        .map(|c| {
            let connected_at = OffsetDateTime::from(c.connected_at).format(&Rfc3339).unwrap_or_default();
            json!({
                "connectionId": c.id.as_str(),
                "userId": c.user.as_str(),
                "topics": c.topics(),
                "connectedAt": connected_at,
                "remoteAddr": c.remote.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({"connections": connections})))
}

/// Sends one event frame to one connection.
pub async fn send(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let event = body.get("event").cloned().ok_or_else(|| ApiError::Validation("missing field `event`".into()))?;
    let event = Event::from_value(event).map_err(|e| ApiError::Validation(e.to_string()))?;
    let conn = state
        .hub
        .connections
        .get(&ConnectionId::from_external(&id))
        .filter(|c| !c.is_closing())
        .ok_or_else(|| ApiError::NotFound(format!("no open connection {id}")))?;
    let text = serde_json::to_string(event.fields()).map_err(|e| ApiError::Validation(e.to_string()))?;
    let delivered = conn.send(text.into());
    Ok(Json(json!({"delivered": delivered})))
}

/// Closes one connection (close code 1000).
pub async fn close(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    let conn = state
        .hub
        .connections
        .get(&ConnectionId::from_external(&id))
        .filter(|c| !c.is_closing())
        .ok_or_else(|| ApiError::NotFound(format!("no open connection {id}")))?;
    conn.close(CloseReason::ClosedByBackend);
    Ok(StatusCode::NO_CONTENT)
}

//! `GET /api/connections`, `POST /api/connections/{id}/send`, `DELETE /api/connections/{id}`.
//!
//! Reaches connections only through the [`ConnectionDirectory`] in the state, never through
//! the hub's registries, so the same handlers answer for any node's connections once the
//! directory spans a cluster.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use super::error::{ApiJson, ApiPath, ApiQuery};
use crate::broker::BrokerError;
use crate::domain::{ConnectionId, Event, Topic};
use crate::hub::{CloseReason, ConnectionFilter, ConnectionInfo, DirectoryError};
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
    let filter = ConnectionFilter { user: q.user, topic };
    let connections: Vec<Value> =
        state.directory.list(&filter).await.map_err(|e| directory_error(e, ""))?.iter().map(describe).collect();
    Ok(Json(json!({"connections": connections})))
}

/// One connection as the API lists it.
pub(crate) fn describe(c: &ConnectionInfo) -> Value {
    let connected_at = OffsetDateTime::from(c.connected_at).format(&Rfc3339).unwrap_or_default();
    json!({
        "connectionId": c.id.as_str(),
        "userId": c.user.as_str(),
        "topics": c.topics,
        "connectedAt": connected_at,
        "remoteAddr": c.remote.to_string(),
        "protocol": c.protocol,
    })
}

/// Sends one event frame to one connection.
pub async fn send(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let event = body.get("event").cloned().ok_or_else(|| ApiError::Validation("missing field `event`".into()))?;
    let event = Event::from_value(event).map_err(|e| ApiError::Validation(e.to_string()))?;
    let text = serde_json::to_string(event.fields()).map_err(|e| ApiError::Validation(e.to_string()))?;
    let delivered = state
        .directory
        .send(&ConnectionId::from_external(&id), text.into())
        .await
        .map_err(|e| directory_error(e, &id))?;
    Ok(Json(json!({"delivered": delivered})))
}

/// Closes one connection (close code 1000).
pub async fn close(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<StatusCode, ApiError> {
    state
        .directory
        .close(&ConnectionId::from_external(&id), CloseReason::ClosedByBackend)
        .await
        .map_err(|e| directory_error(e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The API's answer to a directory error about connection `id` (as the client wrote it).
pub(crate) fn directory_error(error: DirectoryError, id: &str) -> ApiError {
    match error {
        DirectoryError::NotFound(_) => ApiError::NotFound(format!("no open connection {id}")),
        // The directory's store is the cluster's broker (Redis): the same 503 as a publish.
        DirectoryError::Unavailable(why) => ApiError::Broker(BrokerError::Unavailable(why)),
        DirectoryError::Unsupported(why) => ApiError::Validation(why),
    }
}

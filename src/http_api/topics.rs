//! `GET /api/topics/{topic}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::ApiError;
use crate::domain::Topic;
use crate::state::AppState;

/// A topic's local subscriber count, position and retained state (null until retained
/// state lands).
pub async fn info(State(state): State<AppState>, Path(topic): Path<String>) -> Result<Json<Value>, ApiError> {
    let topic = Topic::parse(&topic).map_err(|e| ApiError::Validation(format!("invalid topic: {e}")))?;
    let position = state.hub.position(&topic).await?;
    Ok(Json(json!({
        "topic": topic,
        "subscribers": state.hub.topics.subscriber_count(&topic),
        "offset": position.offset,
        "epoch": position.epoch.as_str(),
        "state": Value::Null,
    })))
}

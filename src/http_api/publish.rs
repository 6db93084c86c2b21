//! `POST /api/publish` and `POST /api/broadcast`: an event, to one topic or several, optionally
//! retained as each topic's state.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::ApiError;
use super::error::ApiJson;
use crate::domain::{Event, Topic};
use crate::state::AppState;

/// Most topics one publish call may name.
pub(super) const MAX_TOPICS_PER_CALL: usize = 1000;

pub(super) fn event_from(body: &Map<String, Value>) -> Result<Event, ApiError> {
    let event = body.get("event").ok_or_else(|| ApiError::Validation("missing field `event`".into()))?;
    Event::from_value(event.clone()).map_err(|e| ApiError::Validation(e.to_string()))
}

pub(super) fn topics_from(body: &Map<String, Value>) -> Result<(Vec<Topic>, bool), ApiError> {
    let parse = |v: &Value| -> Result<Topic, ApiError> {
        let s = v.as_str().ok_or_else(|| ApiError::Validation("topics must be strings".into()))?;
        Topic::parse(s).map_err(|e| ApiError::Validation(format!("invalid topic {s:?}: {e}")))
    };
    match (body.get("topic"), body.get("topics")) {
        (Some(t), None) => Ok((vec![parse(t)?], true)),
        (None, Some(Value::Array(list))) if !list.is_empty() && list.len() <= MAX_TOPICS_PER_CALL => {
            Ok((list.iter().map(parse).collect::<Result<_, _>>()?, false))
        }
        (None, Some(Value::Array(_))) => {
            Err(ApiError::Validation(format!("`topics` must list 1 to {MAX_TOPICS_PER_CALL} topics")))
        }
        (None, Some(_)) => Err(ApiError::Validation("`topics` must be an array of strings".into())),
        (Some(_), Some(_)) => Err(ApiError::Validation("give either `topic` or `topics`, not both".into())),
        (None, None) => Err(ApiError::Validation("missing field `topic` (or `topics`)".into())),
    }
}

pub(super) fn retain_from(body: &Map<String, Value>) -> Result<bool, ApiError> {
    match body.get("retain") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(retain)) => Ok(*retain),
        Some(_) => Err(ApiError::Validation("`retain` must be a boolean".into())),
    }
}

async fn publish_to(
    state: &AppState,
    topics: Vec<Topic>,
    event: Event,
    retain: bool,
    single: bool,
) -> Result<Json<Value>, ApiError> {
    let Some((last, others)) = topics.split_last() else {
        return Err(ApiError::Validation("give `topic` or a non-empty `topics`".into()));
    };
    let mut results = Vec::with_capacity(topics.len());
    for topic in others {
        let position = state.hub.publish(topic, event.clone(), retain).await?;
        results.push(json!({"topic": topic, "offset": position.offset, "epoch": position.epoch.as_str()}));
    }
    // The event is moved into its last publish: a single-topic publish never copies it.
    let position = state.hub.publish(last, event, retain).await?;
    results.push(json!({"topic": last, "offset": position.offset, "epoch": position.epoch.as_str()}));
    let mut body = json!({"results": results});
    if single && let (Some(first), Value::Object(map)) = (results_first(&body), &mut body) {
        map.extend(first);
    }
    Ok(Json(body))
}

fn results_first(body: &Value) -> Option<Map<String, Value>> {
    body["results"].get(0)?.as_object().cloned()
}

/// Publishes one event to one topic (`topic`) or several (`topics`).
pub async fn publish(State(state): State<AppState>, ApiJson(body): ApiJson<Value>) -> Result<Json<Value>, ApiError> {
    let body = body.as_object().ok_or_else(|| ApiError::Validation("body must be a JSON object".into()))?;
    let (topics, single) = topics_from(body)?;
    let retain = retain_from(body)?;
    let event = event_from(body)?;
    publish_to(&state, topics, event, retain, single).await
}

/// Publishes one event to `global`.
pub async fn broadcast(State(state): State<AppState>, ApiJson(body): ApiJson<Value>) -> Result<Json<Value>, ApiError> {
    let body = body.as_object().ok_or_else(|| ApiError::Validation("body must be a JSON object".into()))?;
    let retain = retain_from(body)?;
    let event = event_from(body)?;
    let global = Topic::parse("global").map_err(|e| ApiError::Validation(e.to_string()))?;
    publish_to(&state, vec![global], event, retain, true).await
}

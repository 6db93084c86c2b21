//! `POST /api/publish/batch` (SPEC §9.4): many publishes in one request, in order, with a
//! result or an error per item.
//!
//! Owns the batch's shape and its bounds. Each item is validated and published on its
//! own: a bad item gets its error in its slot and never fails the others. It must never
//! reorder items: an item's events are published before the next item's.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiError;
use super::error::ApiJson;
use super::publish::{MAX_TOPICS_PER_CALL, event_from, retain_from, topics_from};
use crate::domain::{Event, Topic};
use crate::state::AppState;

/// Most items one batch may hold (SPEC §9.4).
pub const MAX_BATCH_ITEMS: usize = 1000;

/// Most single-topic publishes one batch may cause in all (items × their topics), so one
/// request cannot ask for a million publishes through `topics` lists.
pub const MAX_BATCH_PUBLISHES: usize = MAX_TOPICS_PER_CALL;

/// One valid item: its topics (and whether it named a single `topic`), event and retain flag.
struct Item {
    topics: Vec<Topic>,
    single: bool,
    event: Event,
    retain: bool,
}

fn parse_item(item: &Value) -> Result<Item, ApiError> {
    let item = item.as_object().ok_or_else(|| ApiError::Validation("each item must be a JSON object".into()))?;
    let (topics, single) = topics_from(item)?;
    let retain = retain_from(item)?;
    let event = event_from(item)?;
    Ok(Item { topics, single, event, retain })
}

fn error_slot(error: &ApiError) -> Value {
    json!({"error": {"code": error.code().as_str(), "message": error.to_string()}})
}

/// Publishes the items of `{"events":[…]}` in order; answers `{"results":[…]}` with one
/// entry per item: `{"topic","offset","epoch"}` for a `topic` item, `{"results":[…]}` for a
/// `topics` item (as `/api/publish` answers it), or `{"error":{"code","message"}}`.
pub async fn publish_batch(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let body = body.as_object().ok_or_else(|| ApiError::Validation("body must be a JSON object".into()))?;
    let items = match body.get("events") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH_ITEMS => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::Validation(format!("`events` must list 1 to {MAX_BATCH_ITEMS} items")));
        }
        Some(_) => return Err(ApiError::Validation("`events` must be an array".into())),
        None => return Err(ApiError::Validation("missing field `events`".into())),
    };
    let parsed: Vec<Result<Item, ApiError>> = items.iter().map(parse_item).collect();
    let publishes: usize = parsed.iter().filter_map(|item| item.as_ref().ok()).map(|item| item.topics.len()).sum();
    if publishes > MAX_BATCH_PUBLISHES {
        return Err(ApiError::Validation(format!(
            "a batch may publish to at most {MAX_BATCH_PUBLISHES} topics in all, this one names {publishes}"
        )));
    }
    // Every publish of the batch goes to the broker at once, in order (one round trip to
    // Redis); the answers are then put back into the items' shape.
    let mut publishes = Vec::with_capacity(publishes);
    for item in parsed.iter().flatten() {
        for topic in &item.topics {
            publishes.push((topic.clone(), item.event.clone(), item.retain));
        }
    }
    let mut answers = state.hub.publish_many(publishes).await.into_iter();
    let mut results = Vec::with_capacity(parsed.len());
    for item in parsed {
        let result = match item {
            Ok(item) => answer_item(&item, &mut answers),
            Err(error) => Err(error),
        };
        results.push(result.unwrap_or_else(|error| {
            state.metrics.error(error.code());
            error_slot(&error)
        }));
    }
    Ok(Json(json!({"results": results})))
}

/// One item's answer from its publishes' results, in its topics' order: the position of
/// a `topic` item, `{"results":[…]}` for a `topics` item (as `/api/publish` answers it), or
/// the first error (the publishes before it stand, as with `/api/publish`).
fn answer_item(
    item: &Item,
    answers: &mut impl Iterator<Item = Result<crate::domain::StreamPosition, crate::broker::BrokerError>>,
) -> Result<Value, ApiError> {
    let mut results = Vec::with_capacity(item.topics.len());
    let mut first_error = None;
    for topic in &item.topics {
        match answers.next() {
            Some(Ok(p)) => results.push(json!({"topic": topic, "offset": p.offset, "epoch": p.epoch.as_str()})),
            Some(Err(e)) => {
                first_error.get_or_insert(ApiError::from(e));
            }
            None => {
                first_error.get_or_insert(ApiError::Validation("no answer for this item".into()));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if item.single {
        return results.pop().ok_or_else(|| ApiError::Validation("give `topic` or a non-empty `topics`".into()));
    }
    Ok(json!({"results": results}))
}

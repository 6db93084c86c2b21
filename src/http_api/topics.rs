//! `GET /api/topics/{topic}` (position, subscribers, retained state) and
//! `GET /api/topics/{topic}/history` (stored events after an offset).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiError;
use super::error::ApiPath;
use crate::broker::{ReadFrom, ReadRequest};
use crate::domain::{Epoch, Topic};
use crate::state::AppState;

/// Events one history call returns when `limit` is not given.
const DEFAULT_HISTORY_LIMIT: usize = 100;
/// Most events one history call returns.
const MAX_HISTORY_LIMIT: usize = 1000;

fn parse_topic(raw: &str) -> Result<Topic, ApiError> {
    Topic::parse(raw).map_err(|e| ApiError::Validation(format!("invalid topic: {e}")))
}

/// `GET /api/topics/{topic}` or, for a path ending in `/history`, that topic's history.
/// Topics may contain `/`, so one wildcard route serves both.
pub async fn get(
    state: State<AppState>,
    ApiPath(path): ApiPath<String>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    if let Some(topic) = path.strip_suffix("/history") {
        return history(state, topic, query).await;
    }
    match path.strip_suffix("/presence") {
        Some(topic) => Ok(presence(state, topic).await?.into_response()),
        None => Ok(info(state, &path).await?.into_response()),
    }
}

/// A topic's local subscriber count, position and retained state.
async fn info(State(state): State<AppState>, topic: &str) -> Result<Json<Value>, ApiError> {
    let topic = parse_topic(topic)?;
    let read = state.hub.read(&topic, ReadRequest { retained: true, ..ReadRequest::default() }).await?;
    Ok(Json(json!({
        "topic": topic,
        "subscribers": state.hub.topics.subscriber_count(&topic),
        "offset": read.position.offset,
        "epoch": read.position.epoch.as_str(),
        "state": read.retained_json(),
    })))
}

/// `GET /api/topics/{topic}/presence`: the same body as the `presence` frame.
async fn presence(State(state): State<AppState>, topic: &str) -> Result<Json<Value>, ApiError> {
    let topic = parse_topic(topic)?;
    let presence = state.hub.presence(&topic).await?;
    Ok(Json(json!({
        "type": "presence",
        "topic": topic,
        "users": presence.users,
        "connections": presence.connections,
    })))
}

/// The query of a history call.
#[derive(Debug, PartialEq)]
struct HistoryQuery {
    since: u64,
    epoch: Option<Epoch>,
    limit: usize,
}

fn parse_history_query(raw: Option<&str>) -> Result<HistoryQuery, ApiError> {
    let mut query = HistoryQuery { since: 0, epoch: None, limit: DEFAULT_HISTORY_LIMIT };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "since" => {
                query.since = value.parse().map_err(|_| {
                    ApiError::Validation(format!("`since` must be a non-negative integer offset, not {value:?}"))
                })?;
            }
            "limit" => {
                query.limit = value.parse().ok().filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n)).ok_or_else(|| {
                    ApiError::Validation(format!(
                        "`limit` must be an integer from 1 to {MAX_HISTORY_LIMIT}, not {value:?}"
                    ))
                })?;
            }
            "epoch" if !value.is_empty() => query.epoch = Some(Epoch::new(&value)),
            _ => {}
        }
    }
    Ok(query)
}

/// Events after `since` still in the topic's history, oldest first, at most `limit`.
///
/// `recovered` says whether every event after `since` is still there (with `epoch`: and
/// the offset belongs to the topic's current epoch). When it is false the events that are
/// left are returned anyway, from the oldest. To page forward, call again with `since` set
/// to the last returned offset until `events` is empty or the last one is at `offset`.
async fn history(State(state): State<AppState>, topic: &str, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let topic = parse_topic(topic)?;
    let query = parse_history_query(query.as_deref())?;
    let request = ReadRequest {
        from: ReadFrom::After { offset: query.since, epoch: query.epoch },
        limit: query.limit,
        partial: true,
        retained: false,
    };
    let read = state.hub.read(&topic, request).await?;
    // Stored frames are JSON objects already: splice them in instead of parsing each.
    let frames_len: usize = read.events.iter().map(|e| e.frame.len() + 1).sum();
    let mut body = String::with_capacity(frames_len + 160);
    let head = json!({
        "topic": topic,
        "epoch": read.position.epoch.as_str(),
        "offset": read.position.offset,
        "recovered": read.recovered,
    })
    .to_string();
    body.push_str(head.strip_suffix('}').unwrap_or(&head));
    body.push_str(",\"events\":[");
    for (i, event) in read.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event.frame.as_str());
    }
    body.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_query_defaults_and_bounds() {
        assert_eq!(parse_history_query(None).ok(), Some(HistoryQuery { since: 0, epoch: None, limit: 100 }));
        let q = parse_history_query(Some("since=7&limit=1000&epoch=abc")).ok();
        assert_eq!(q, Some(HistoryQuery { since: 7, epoch: Some(Epoch::new("abc")), limit: 1000 }));
        for bad in
            ["since=-1", "since=x", "since=1.5", "since=99999999999999999999", "limit=0", "limit=1001", "limit=a"]
        {
            assert!(parse_history_query(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! `/admin/api/*` handlers that are the dashboard's own (the connection and publish calls
//! reuse the backend API's handlers, mounted by `super::router`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Value, json};

use super::AdminState;
use super::stats::totals;
use crate::broker::{ReadFrom, ReadRequest};
use crate::domain::Topic;
use crate::http_api::{ApiError, ApiPath};
use crate::hub::ConnectionFilter;

/// Events of a topic's history shown on its page.
const HISTORY_TAIL: u64 = 20;
/// Topics one search returns at most.
const MAX_TOPICS: usize = 500;

/// `GET /admin/api/overview`.
pub async fn overview(State(admin): State<AdminState>) -> Json<Value> {
    let nodes = admin.admin.stats.all(&admin.app, admin.admin.cluster.as_ref()).await;
    Json(json!({
        "node": admin.admin.stats.node(),
        "cluster": admin.admin.cluster.is_some(),
        "totals": totals(&nodes),
        "nodes": nodes,
    }))
}

/// `GET /admin/api/nodes`.
pub async fn nodes(State(admin): State<AdminState>) -> Json<Value> {
    let nodes = admin.admin.stats.all(&admin.app, admin.admin.cluster.as_ref()).await;
    Json(json!({ "nodes": nodes }))
}

/// `GET /admin/api/topics?search=&limit=`: topics held by connections anywhere in the
/// cluster (from the connection directory), most subscribed first.
pub async fn topics(State(admin): State<AdminState>, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    let (mut search, mut limit) = (String::new(), 100usize);
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "search" => search = value.into_owned(),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_TOPICS).contains(n))
                    .ok_or_else(|| ApiError::Validation(format!("`limit` must be 1 to {MAX_TOPICS}")))?;
            }
            _ => {}
        }
    }
    let connections = admin
        .app
        .directory
        .list(&ConnectionFilter::default())
        .await
        .map_err(|e| crate::http_api::connections::directory_error(e, ""))?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for connection in &connections {
        for topic in &connection.topics {
            if topic.as_str().contains(search.as_str()) {
                *counts.entry(topic.as_str()).or_insert(0) += 1;
            }
        }
    }
    let mut topics: Vec<(&str, u64)> = counts.into_iter().collect();
    topics.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let topics: Vec<Value> =
        topics.into_iter().take(limit).map(|(topic, n)| json!({"topic": topic, "subscribers": n})).collect();
    Ok(Json(json!({ "topics": topics })))
}

/// `GET /admin/api/topics/{topic}`: position, retained state, presence, subscribers in
/// the cluster and the last events of its history.
pub async fn topic(State(admin): State<AdminState>, ApiPath(raw): ApiPath<String>) -> Result<Json<Value>, ApiError> {
    let topic = Topic::parse(&raw).map_err(|e| ApiError::Validation(format!("invalid topic: {e}")))?;
    let hub = &admin.app.hub;
    let head = hub.read(&topic, ReadRequest { retained: true, ..ReadRequest::default() }).await?;
    let from = head.position.offset.saturating_sub(HISTORY_TAIL);
    let request = ReadRequest {
        from: ReadFrom::After { offset: from, epoch: Some(head.position.epoch.clone()) },
        limit: HISTORY_TAIL as usize,
        partial: true,
        retained: false,
    };
    let history = hub.read(&topic, request).await?;
    let events: Vec<Value> =
        history.events.iter().filter_map(|e| serde_json::from_str::<Value>(e.frame.as_str()).ok()).collect();
    let presence = hub.presence(&topic).await?;
    let filter = ConnectionFilter { user: None, topic: Some(topic.clone()) };
    let subscribers = match admin.app.directory.list(&filter).await {
        Ok(list) => json!(list.len()),
        Err(_) => Value::Null,
    };
    Ok(Json(json!({
        "topic": topic,
        "subscribers": subscribers,
        "offset": head.position.offset,
        "epoch": head.position.epoch.as_str(),
        "state": head.retained_json(),
        "presence": {"users": presence.users, "connections": presence.connections},
        "history": events,
    })))
}

/// `GET /admin/api/sinks`: this node's sinks and outbox.
pub async fn sinks(State(admin): State<AdminState>) -> Json<Value> {
    let stats = admin.admin.stats.latest(&admin.app);
    Json(json!({ "sinks": stats.sinks, "outbox": stats.outbox }))
}

/// `GET /admin/api/connections?user=&topic=`: as the backend API's list, cluster-wide, with
/// the node holding each connection.
pub async fn connections(
    State(admin): State<AdminState>,
    crate::http_api::ApiQuery(query): crate::http_api::ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let topic = match query.topic.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(Topic::parse(t).map_err(|e| ApiError::Validation(format!("invalid topic: {e}")))?),
        None => None,
    };
    let filter = ConnectionFilter { user: query.user.filter(|u| !u.is_empty()), topic };
    let limit = query.limit.unwrap_or(DEFAULT_CONNECTIONS);
    if !(1..=MAX_CONNECTIONS).contains(&limit) {
        return Err(ApiError::Validation(format!("`limit` must be 1 to {MAX_CONNECTIONS}")));
    }
    let list =
        admin.app.directory.list(&filter).await.map_err(|e| crate::http_api::connections::directory_error(e, ""))?;
    let connections: Vec<Value> = list.iter().take(limit).map(|c| describe(&admin, c)).collect();
    Ok(Json(json!({ "connections": connections, "total": list.len() })))
}

/// Filters and bound of the connection list.
#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    user: Option<String>,
    topic: Option<String>,
    limit: Option<usize>,
}

/// Connections one search shows unless it asks for a `limit`.
const DEFAULT_CONNECTIONS: usize = 200;
/// Most connections one search shows.
const MAX_CONNECTIONS: usize = 5_000;

/// A connection as the dashboard shows it: the API's fields and its node.
fn describe(admin: &AdminState, info: &crate::hub::ConnectionInfo) -> Value {
    let mut body = crate::http_api::connections::describe(info);
    body["node"] = json!(info.node.as_deref().unwrap_or(admin.admin.stats.node()));
    body
}

/// `GET /admin/api/connections/{id}`: one connection, on any node.
pub async fn connection(
    State(admin): State<AdminState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let info = admin
        .app
        .directory
        .get(&crate::domain::ConnectionId::from_external(&id))
        .await
        .map_err(|e| crate::http_api::connections::directory_error(e, &id))?;
    let mut body = describe(&admin, &info);
    body["userAgent"] = json!(info.user_agent);
    let last_active = time::OffsetDateTime::from(info.last_active_at);
    body["lastActiveAt"] =
        json!(last_active.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    Ok(Json(body))
}

//! `GET /admin/api/stream[?tail=<topic>]`: the one live stream of a dashboard page
//! (Server-Sent Events): every node's stats each second, and with `tail` the topic's new
//! events, followed from its history (so it works for a topic published on any node).
//!
//! It costs nothing while no page is open: it reads the samples the node keeps and the
//! topic's history once a second; it never subscribes to fan-out.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};

use super::AdminState;
use super::stats::{SAMPLE_INTERVAL, totals};
use crate::broker::{ReadFrom, ReadRequest};
use crate::domain::{Epoch, Topic};
use crate::http_api::ApiError;

/// Events of the tailed topic sent per tick at most (a busier topic is sampled, the page
/// says so by the offsets it shows).
const TAIL_BATCH: usize = 200;

/// Where the tail stands.
struct Tail {
    topic: Topic,
    after: u64,
    epoch: Option<Epoch>,
}

/// The stream.
pub async fn stream(
    State(admin): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut tail = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "tail" && !value.is_empty() {
            let topic = Topic::parse(&value).map_err(|e| ApiError::Validation(format!("invalid topic: {e}")))?;
            let position = admin.app.hub.position(&topic).await?;
            tail = Some(Tail { topic, after: position.offset, epoch: Some(position.epoch) });
        }
    }
    let ticks = tokio::time::interval(SAMPLE_INTERVAL);
    let events = stream::unfold((admin, tail, ticks), |(admin, mut tail, mut ticks)| async move {
        ticks.tick().await;
        let mut out = Vec::new();
        let nodes = admin.admin.stats.all(&admin.app, admin.admin.cluster.as_ref()).await;
        let stats = serde_json::json!({"totals": totals(&nodes), "nodes": nodes});
        out.push(Event::default().event("stats").data(stats.to_string()));
        if let Some(tail) = tail.as_mut() {
            read_tail(&admin, tail, &mut out).await;
        }
        Some((stream::iter(out.into_iter().map(Ok)), (admin, tail, ticks)))
    })
    .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive")))
}

/// Appends the topic's events after the tail's position; a new epoch restarts it at the
/// topic's current position.
async fn read_tail(admin: &AdminState, tail: &mut Tail, out: &mut Vec<Event>) {
    let request = ReadRequest {
        from: ReadFrom::After { offset: tail.after, epoch: tail.epoch.clone() },
        limit: TAIL_BATCH,
        partial: true,
        retained: false,
    };
    let Ok(read) = admin.app.hub.read(&tail.topic, request).await else {
        return; // the broker is down: the next tick tries again
    };
    if tail.epoch.as_ref().is_some_and(|e| *e != read.position.epoch) {
        tail.after = 0;
        tail.epoch = Some(read.position.epoch.clone());
        return;
    }
    for event in &read.events {
        tail.after = event.offset;
        out.push(Event::default().event("event").data(event.frame.as_str()));
    }
    if read.events.is_empty() && read.position.offset < tail.after {
        tail.after = read.position.offset;
    }
}

//! `GET /ws`: authenticate, check origin, connect-time topics and capacity, ask the
//! `$connect` webhook when one is configured, then upgrade.
//!
//! Refusals happen before the upgrade with an HTTP status and a JSON body, so a client
//! never sees a WebSocket open and then shut for a reason known up front. Once upgraded,
//! the connection's task starts here: it registers the connection and runs the
//! connect-time subscriptions, writing their replies out as it goes (see [`StartWriter`]),
//! before the open stage (`connection`) takes over.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connection::{Companion, Connection, ConnectionTask};
use super::handshake::UpgradeRequest;
use super::protocol::{frames, resolve_topic};
use super::session::Session;
use super::socket::{Socket, Written};
use crate::apigw::ConnectRequest;
use crate::auth::{AuthError, Identity};
use crate::domain::{ConnectionId, ErrorCode, LogId, Topic};
use crate::hub::{AdmissionError, CloseReason, ConnectionHandle, QueueLimits, SharedFrame};
use crate::metrics::Metrics;
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
    /// The topic parameters (`topic` and the aliases), in order: a topic, or why the
    /// parameter names none. At most `max_topics` of them are kept.
    topics: Vec<Result<Topic, String>>,
    /// More than `max_topics` topic parameters were given.
    too_many_topics: bool,
}

/// Parses the query string, keeping at most `max_topics` topic parameters (any more only
/// set `too_many_topics`), so a long query string costs no more than the limit allows.
fn parse_query(raw: Option<&str>, max_topics: usize) -> ConnectQuery {
    let mut query = ConnectQuery { token: None, topics: Vec::new(), too_many_topics: false };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "token" => query.token = Some(value.into_owned()),
            "topic" | "project_id" | "job_id" | "agent_id" if query.topics.len() >= max_topics => {
                query.too_many_topics = true;
            }
            "topic" | "project_id" | "job_id" | "agent_id" => {
                let value = Value::String(value.into_owned());
                query.topics.push(resolve_topic(|name| (name == key.as_ref()).then_some(&value)));
            }
            _ => {}
        }
    }
    query
}

/// Whether the request's `Origin` may open a WebSocket, given the configured origins
/// (not empty). `Err` holds the refusal's message.
///
/// A request without `Origin` is allowed: browsers always send one, so its absence means
/// a non-browser client, which could send any value anyway. A present `Origin` must be the
/// only one and equal an allowed origin byte for byte: no decoding, no case folding, so a
/// value that is not ASCII (`https://app.example.com\xff`) or a second header behind an
/// allowed one cannot pass as the allowed origin.
pub(crate) fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), &'static str> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(());
    };
    if origins.next().is_some() {
        return Err("more than one Origin header");
    }
    if allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()) { Ok(()) } else { Err("origin not allowed") }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive,
/// token trimmed); `None` without one. Shared by every route that takes a bearer: the
/// upgrade, `/api/*` and `/@connections`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
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
    if !state.config.allowed_origins.is_empty()
        && let Err(message) = check_origin(&headers, &state.config.allowed_origins)
    {
        return refuse(&state, StatusCode::FORBIDDEN, ErrorCode::Authorization, "origin", message);
    }
    let max_topics = state.config.limits.max_subscriptions;
    let query_text = query;
    let query = parse_query(query_text.as_deref(), max_topics);
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
    if query.too_many_topics {
        // Refused whole rather than cut short: the client would otherwise have to count
        // the replies to learn which of its topics were never subscribed.
        let message = format!(
            "the query string names more than {max_topics} topics; a connection may hold at most {max_topics} \
             (limits.max_subscriptions)"
        );
        return refuse(&state, StatusCode::BAD_REQUEST, ErrorCode::Validation, "too_many_topics", &message);
    }
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
    let id = ConnectionId::generate();
    // One start time for the `$connect` event, the API and the `$disconnect` event.
    let connected_at = std::time::SystemTime::now();
    if let Some(lifecycle) = state.lifecycle.as_ref().filter(|l| l.has_connect()) {
        let request = ConnectRequest {
            connection_id: id.as_str(),
            headers: &headers,
            query: query_text.as_deref(),
            remote,
            identity: &identity,
            connected_at,
        };
        if let Err(refusal) = lifecycle.on_connect(&request).await {
            let status = refusal.status();
            let code = match status {
                StatusCode::UNAUTHORIZED => ErrorCode::Authentication,
                s if s.is_client_error() => ErrorCode::Authorization,
                _ => ErrorCode::ServiceUnavailable,
            };
            return refuse(&state, status, code, "connect_hook", &refusal.to_string());
        }
    }
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    // Keeps shutdown waiting for this connection from now on, not only once the upgrade
    // completes.
    let tracked = state.tasks.token();
    let task_state = state.clone();
    let config = websocket_config(&state);
    let (response, socket) = upgrade.accept(config);
    // Boxed inside the task (see `ConnectionTask`): everything captured here is needed
    // only until the connection is open.
    let start = async move {
        // `None`: the client went away before the upgrade completed; dropping the
        // admission and the task token is all the cleanup there is.
        let mut socket = socket.await?;
        let state = task_state;
        let limits =
            QueueLimits { frames: state.config.limits.send_queue_events, bytes: state.config.limits.send_queue_bytes };
        let mut conn = ConnectionHandle::new(id, identity.user.clone(), remote, limits, state.metrics.clone());
        conn.connected_at = connected_at;
        let conn = Arc::new(conn.with_user_agent(&user_agent));
        state.hub.connections.insert(conn.clone());
        // Shutdown closes every registered connection; one registered just after
        // that sweep closes itself here.
        if state.shutdown.is_cancelled() {
            conn.close(CloseReason::Shutdown);
        }
        state.metrics.connections.increment(1.0);
        tracing::info!(connectionId = %conn.id, userId = %LogId(conn.user.as_str()), remote = %remote, "connected");
        conn.send(frames::connected(conn.id.as_str(), conn.user.as_str()).into());
        let session = Session::new(state.clone(), conn.clone(), identity);
        let mut companion = Box::new(Companion { session, admission, tracked });
        companion.session.subscribe_automatic().await;
        if !query.topics.is_empty() {
            let mut writer =
                StartWriter { conn: &conn, socket: &mut socket, metrics: &state.metrics, batch: VecDeque::new() };
            for topic in query.topics {
                companion.session.subscribe_at_connect(topic).await;
                if !writer.write_queued().await {
                    break;
                }
            }
            writer.flush().await;
        }
        Some(Connection::new(socket, conn, state, companion))
    };
    tokio::spawn(ConnectionTask::new(start));
    response
}

/// The WebSocket settings of every connection: buffers from `[websocket]`, frame and
/// message bounds at twice `limits.max_message_size` (beyond it: 1009).
pub(crate) fn websocket_config(state: &AppState) -> WebSocketConfig {
    let ws = &state.config.websocket;
    // tungstenite panics unless its write buffer limit (unbounded here) exceeds the
    // write buffer size.
    let write_buffer_size = ws.write_buffer_size.min(usize::MAX - 1);
    let hard_limit = state.config.limits.max_message_size.saturating_mul(2);
    WebSocketConfig::default()
        .read_buffer_size(ws.read_buffer_size)
        .write_buffer_size(write_buffer_size)
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit))
}

/// The connection's writer while its task starts, before the open stage exists.
///
/// Connect-time subscriptions queue a reply per topic (and a retained state, and the live
/// events of topics already held), up to `limits.max_subscriptions` topics, which may well
/// be more than the send queue holds (`limits.send_queue_events`). The client has had no
/// chance to read any of it, so none of it may count as slow consumption: after each
/// subscription the task writes what is queued to the socket, waiting for the client to
/// take it when the socket is full, so the queue holds one subscription's frames at a
/// time. It writes as the open stage's writer does (frames in queue order, heartbeat pings
/// as asked), and stops at once when the connection starts closing: the frames it took
/// are then handed to the socket unflushed, and the closing stage flushes them before
/// the close frame.
struct StartWriter<'a> {
    conn: &'a Arc<ConnectionHandle>,
    socket: &'a mut Socket,
    metrics: &'a Metrics,
    batch: VecDeque<SharedFrame>,
}

impl StartWriter<'_> {
    /// Writes out what is queued. `false` once the connection is closing (a failed write
    /// closes it): the open stage's close takes over.
    async fn write_queued(&mut self) -> bool {
        let Self { conn, socket, metrics, batch } = self;
        // Takes the whole queue if anything is in it, without waiting.
        let work = poll_fn(|cx| Poll::Ready(conn.poll_outbound(cx, batch))).await;
        let Poll::Ready(work) = work else {
            return !conn.is_closing();
        };
        let mut flushing = !work.closing;
        let ping = work.ping.then(|| super::connection::heartbeat_ping(conn));
        let now = std::time::Instant::now();
        let messages = ping.into_iter().chain(batch.iter().map(|f| conn.wire_message(f)));
        for message in messages {
            let mut message = Some(message);
            let written = poll_fn(|cx| match message.take() {
                Some(message) => Poll::Ready(socket.write(cx, message)),
                None => Poll::Ready(Ok(Written::Done)),
            })
            .await;
            match written {
                Ok(Written::Done) => {}
                // The socket is full: wait for the client to read, unless closing.
                Ok(Written::Blocked) => flushing = flushing && flush(conn, socket).await,
                Err(e) => {
                    tracing::debug!(connectionId = %conn.id, error = %e, "write failed");
                    conn.close(CloseReason::ClientGone);
                    flushing = false;
                    break;
                }
            }
        }
        let mut events = 0;
        for at in batch.drain(..).filter_map(|f| f.published_at) {
            events += 1;
            metrics.delivery_latency.record(now.saturating_duration_since(at).as_secs_f64());
        }
        if events > 0 {
            metrics.deliveries.increment(events);
        }
        flushing && !conn.is_closing()
    }

    /// Flushes what the socket holds, unless the connection starts closing first.
    async fn flush(&mut self) {
        if !self.conn.is_closing() {
            flush(self.conn, self.socket).await;
        }
    }
}

/// Flushes `socket`; `false` if the connection started closing meanwhile or the socket
/// failed (which closes it).
async fn flush(conn: &ConnectionHandle, socket: &mut Socket) -> bool {
    poll_fn(|cx| {
        // A close wakes the task through the socket waker slot.
        conn.watch_socket(cx);
        if conn.is_closing() {
            return Poll::Ready(false);
        }
        match socket.poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Ready(Err(e)) => {
                tracing::debug!(connectionId = %conn.id, error = %e, "write failed");
                conn.close(CloseReason::ClientGone);
                Poll::Ready(false)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_topics_and_aliases() {
        let q = parse_query(Some("token=abc&topic=job:1&topic=global&project_id=p%201&job_id=j&agent_id=a&x=1"), 5);
        assert_eq!(q.token.as_deref(), Some("abc"));
        assert!(!q.too_many_topics);
        let topics: Vec<_> = q.topics.iter().map(|t| t.as_ref().map(|t| t.to_string())).collect();
        assert_eq!(topics[0].as_deref(), Ok("job:1"));
        assert_eq!(topics[1].as_deref(), Ok("global"));
        assert!(topics[2].is_err(), "space is not a topic character");
        assert_eq!(topics[3].as_deref(), Ok("job:j"));
        assert_eq!(topics[4].as_deref(), Ok("agent:a"));
    }

    #[test]
    fn topics_beyond_the_limit_are_counted_not_kept() {
        let q = parse_query(Some("job_id=a&topic=bad topic&job_id=c&token=t"), 2);
        assert_eq!((q.topics.len(), q.too_many_topics, q.token.as_deref()), (2, true, Some("t")));
        let q = parse_query(Some("job_id=a&topic=b"), 2);
        assert_eq!((q.topics.len(), q.too_many_topics), (2, false));
    }

    #[test]
    fn origin_must_be_single_and_equal_byte_for_byte() {
        let allowed = ["https://app.example.com".to_owned()];
        let headers = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::ORIGIN, axum::http::HeaderValue::from_bytes(v).unwrap());
            }
            h
        };
        assert!(check_origin(&headers(&[]), &allowed).is_ok(), "no Origin: a non-browser client");
        assert!(check_origin(&headers(&[b"https://app.example.com"]), &allowed).is_ok());
        for refused in [
            &[&b"https://evil.example.com"[..]][..],
            &[b"https://app.example.com\xff"],
            &[b"https://evil.example.com\xff"],
            &[b"HTTPS://APP.EXAMPLE.COM"],
            &[b"https://app.example.com/"],
            &[b"null"],
            &[b""],
            &[b"https://app.example.com", b"https://app.example.com"],
            &[b"https://app.example.com", b"https://evil.example.com"],
        ] {
            assert!(check_origin(&headers(refused), &allowed).is_err(), "{refused:?}");
        }
    }
}

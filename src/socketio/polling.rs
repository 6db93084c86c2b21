//! Engine.IO HTTP long-polling, and the upgrade from it to a WebSocket.
//!
//! A polling session is the connection's [`ConnectionHandle`] (the same bounded queue a
//! WebSocket drains) plus the request-handling [`Companion`], held between requests:
//! `GET` takes what is queued (or waits for it, up to the ping interval), `POST` hands the
//! client's packets to the session, one `POST` at a time. When the client upgrades
//! (`2probe`/`3probe`, then `5`), the companion moves to an ordinary connection task on the
//! new WebSocket, and the session stops existing here: from then on the connection is
//! served exactly like a WebSocket-first one. One small task per polling session watches
//! its life (CONNECT deadline, close, upgrade) and tears it down when it ends; the
//! liveness sweep drives its heartbeat as for any connection.
//!
//! Sessions live in this node's memory: with several nodes, long-polling needs sticky
//! sessions (docs/socketio.md). This module must never block a request on another
//! session, and never hold a session's lock across an await other than the request
//! handling it serializes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use super::endpoint::{EngineError, EngineQuery, max_payload, open_session, ping_ms, pong_ms, write_now};
use crate::codec::socketio::{self, EnginePacket, RECORD_SEPARATOR, SocketPacket};
use crate::domain::{ConnectionId, LogId};
use crate::hub::{CloseReason, ConnectionHandle, SharedFrame};
use crate::state::AppState;
use crate::ws::connection::{Companion, Connection, ConnectionTask};
use crate::ws::handshake::UpgradeRequest;
use crate::ws::socket::Socket;

/// Where a session is in its life.
const OPEN: u8 = 0;
const UPGRADING: u8 = 1;
const UPGRADED: u8 = 2;
const CLOSED: u8 = 3;

/// This node's polling sessions, by Engine.IO session id.
#[derive(Default)]
pub struct PollingSessions {
    by_sid: DashMap<String, Arc<PollingSession>>,
}

impl PollingSessions {
    /// How many are open (for tests and metrics).
    pub fn len(&self) -> usize {
        self.by_sid.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_sid.is_empty()
    }

    /// Whether session `sid` has a poll waiting (`None`: no such session).
    pub fn is_polling(&self, sid: &str) -> Option<bool> {
        self.by_sid.get(sid).map(|s| s.polling.load(Ordering::Acquire))
    }
}

/// One long-polling Engine.IO session.
pub struct PollingSession {
    sid: String,
    remote: SocketAddr,
    query_token: Option<String>,
    /// Set by the CONNECT.
    conn: OnceLock<Arc<ConnectionHandle>>,
    /// Request handling; `None` before the CONNECT, while a `POST` runs, and after the
    /// upgrade took it.
    companion: tokio::sync::Mutex<Option<Box<Companion>>>,
    /// Packets for the next `GET` before there is a connection (a CONNECT_ERROR).
    early: Mutex<Vec<String>>,
    stage: AtomicU8,
    /// A `GET` is waiting: a second one is a protocol error.
    polling: AtomicBool,
    /// Wakes the waiting `GET` and the watcher on CONNECT, upgrade and close.
    changed: Notify,
}

impl PollingSession {
    fn stage(&self) -> u8 {
        self.stage.load(Ordering::Acquire)
    }

    fn set_stage(&self, stage: u8) {
        self.stage.store(stage, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Handles a polling request: the handshake (`GET` without `sid`), a poll, a send, or a
/// CORS preflight.
pub async fn handle(
    state: AppState,
    remote: SocketAddr,
    query: EngineQuery,
    method: Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let mut response = match (&method, query.sid.as_deref()) {
        (&Method::OPTIONS, _) => StatusCode::NO_CONTENT.into_response(),
        (&Method::GET, None) => handshake(&state, remote, query.token),
        (&Method::GET, Some(sid)) => match find(&state, sid, remote) {
            Some(session) => poll(&state, &session).await,
            None => EngineError::UnknownSid.response(&state, "unknown session id"),
        },
        (&Method::POST, Some(sid)) => match find(&state, sid, remote) {
            Some(session) => send(&state, &session, body).await,
            None => EngineError::UnknownSid.response(&state, "unknown session id"),
        },
        (&Method::POST, None) => EngineError::UnknownSid.response(&state, "a POST needs the session id (sid)"),
        _ => EngineError::BadHandshakeMethod.response(&state, "polling takes GET and POST"),
    };
    cors(headers, &mut response);
    response
}

/// Cross-origin polling: the origin was checked against `allowed_origins` already, so an
/// `Origin` here may read the answer (with credentials, as socket.io-client's
/// `withCredentials` needs).
fn cors(headers: &HeaderMap, response: &mut Response) {
    let Some(origin) = headers.get(header::ORIGIN) else { return };
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, authorization"));
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// The session `sid`, if it exists and was opened from `remote`'s address: a session id
/// is a bearer credential for its connection, so it is bound to that address.
fn find(state: &AppState, sid: &str, remote: SocketAddr) -> Option<Arc<PollingSession>> {
    let session = state.socketio.polling.by_sid.get(sid).map(|s| s.clone())?;
    (session.remote.ip() == remote.ip()).then_some(session)
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

fn handshake(state: &AppState, remote: SocketAddr, query_token: Option<String>) -> Response {
    if !state.is_accepting() {
        state.metrics.refused("draining");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"code": 3, "message": "server is shutting down"})),
        )
            .into_response();
    }
    let sid = ConnectionId::generate().as_str().replacen("conn_", "eio_", 1);
    let session = Arc::new(PollingSession {
        sid: sid.clone(),
        remote,
        query_token,
        conn: OnceLock::new(),
        companion: tokio::sync::Mutex::new(None),
        early: Mutex::new(Vec::new()),
        stage: AtomicU8::new(OPEN),
        polling: AtomicBool::new(false),
        changed: Notify::new(),
    });
    state.socketio.polling.by_sid.insert(sid.clone(), session.clone());
    let tracked = state.tasks.token();
    let watcher_state = state.clone();
    tokio::spawn(async move {
        watch(&watcher_state, &session).await;
        drop(tracked);
    });
    text(socketio::open(&sid, &["websocket"], ping_ms(state), pong_ms(state), max_payload(state)))
}

/// A `GET`: what is queued, joined with the record separator; waits for something up to
/// the ping interval, then answers a noop so proxies never see an idle request.
async fn poll(state: &AppState, session: &Arc<PollingSession>) -> Response {
    if session.polling.swap(true, Ordering::AcqRel) {
        // Two polls at once: the client is broken; Engine.IO closes the session.
        close(session, CloseReason::ProtocolError);
        return EngineError::BadRequest.response(state, "overlapping polls");
    }
    // Lowered however the poll ends: hyper drops this future when the client goes away
    // mid-poll, and the next poll must not look like an overlapping one.
    struct Polling<'a>(&'a AtomicBool);
    impl Drop for Polling<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _polling = Polling(&session.polling);
    text(take_or_wait(state, session).await)
}

async fn take_or_wait(state: &AppState, session: &Arc<PollingSession>) -> String {
    let wait = state.config.websocket.ping_interval;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let early = std::mem::take(&mut *session.early.lock());
        if !early.is_empty() {
            return early.join(&RECORD_SEPARATOR.to_string());
        }
        match session.stage() {
            UPGRADING | UPGRADED => return "6".to_owned(),
            CLOSED => return "1".to_owned(),
            _ => {}
        }
        let changed = session.changed.notified();
        if let Some(conn) = session.conn.get() {
            let mut batch = VecDeque::new();
            let work = tokio::select! {
                work = conn.next_outbound(&mut batch) => Some(work),
                () = changed => None,
                () = tokio::time::sleep_until(deadline) => return "6".to_owned(),
            };
            let Some(work) = work else { continue };
            let body = encode_batch(state, conn, &batch, work.ping, work.closing);
            if work.closing {
                // The watcher waits for this last poll before it tears the session down.
                session.changed.notify_waiters();
            }
            return body;
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(deadline) => return "6".to_owned(),
        }
    }
}

fn encode_batch(
    state: &AppState,
    conn: &ConnectionHandle,
    batch: &VecDeque<SharedFrame>,
    ping: bool,
    closing: bool,
) -> String {
    let mut out = String::new();
    let mut push = |packet: &str| {
        if !out.is_empty() {
            out.push(RECORD_SEPARATOR);
        }
        out.push_str(packet);
    };
    if ping && let Some(text) = conn.wire_ping() {
        push(text.as_str());
    }
    let now = std::time::Instant::now();
    let mut events = 0u64;
    for frame in batch {
        push(conn.wire_text(frame).as_str());
        if let Some(at) = frame.published_at {
            events += 1;
            state.metrics.delivery_latency.record(now.saturating_duration_since(at).as_secs_f64());
        }
    }
    if events > 0 {
        state.metrics.deliveries.increment(events);
    }
    if closing {
        push("1");
    }
    if out.is_empty() { "6".to_owned() } else { out }
}

/// A `POST`: the client's packets, handled in order.
async fn send(state: &AppState, session: &Arc<PollingSession>, body: Body) -> Response {
    // The announced maxPayload, plus room for the separators of a batch of small packets.
    let limit = max_payload(state).saturating_mul(2);
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        close(session, CloseReason::MessageTooBig);
        return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
    };
    let Ok(payload) = std::str::from_utf8(&bytes) else {
        return EngineError::BadRequest.response(state, "the body must be UTF-8 text packets");
    };
    let Ok(mut companion) = session.companion.try_lock() else {
        close(session, CloseReason::ProtocolError);
        return EngineError::BadRequest.response(state, "overlapping sends");
    };
    if let Some(conn) = session.conn.get() {
        conn.heard();
    }
    for packet in payload.split(RECORD_SEPARATOR) {
        // While the upgrade is probed the client may still send over polling (it stops
        // once it has the `3probe`, and a POST may already be on its way): handled. The
        // switch itself waits for this POST to finish (it holds the companion).
        if matches!(session.stage(), UPGRADED | CLOSED) {
            break;
        }
        match companion.as_mut() {
            Some(companion) => companion.session.on_wire_text(packet).await,
            None => connect(state, session, &mut companion, packet).await,
        }
    }
    text("ok".to_owned())
}

/// The first packets of a session, before its CONNECT: anything but a CONNECT (or a
/// heartbeat) ends the session.
async fn connect(
    state: &AppState,
    session: &Arc<PollingSession>,
    companion: &mut Option<Box<Companion>>,
    packet: &str,
) {
    let (nsp, auth) = match socketio::parse_engine(packet) {
        Ok(EnginePacket::Pong { .. } | EnginePacket::Noop) => return,
        Ok(EnginePacket::Message(data)) => match socketio::parse_socket(data) {
            Ok(SocketPacket::Connect { nsp, auth }) => (nsp.to_owned(), auth),
            _ => return close(session, CloseReason::ProtocolError),
        },
        _ => return close(session, CloseReason::ProtocolError),
    };
    let tracked = state.tasks.token();
    let opened =
        open_session(state, session.remote, &nsp, auth.as_ref(), session.query_token.as_deref(), tracked).await;
    let (conn, fresh) = match opened {
        Ok(opened) => opened,
        Err(refusal) => {
            session.early.lock().push(refusal.packet(&nsp));
            session.changed.notify_waiters();
            return;
        }
    };
    let _ = session.conn.set(conn);
    *companion = Some(fresh);
    session.changed.notify_waiters();
}

fn close(session: &PollingSession, reason: CloseReason) {
    match session.conn.get() {
        Some(conn) => conn.close(reason),
        None => session.set_stage(CLOSED),
    }
    session.changed.notify_waiters();
}

/// The session's life: a CONNECT within the handshake timeout, then until it closes or
/// upgrades. A closed session is torn down here (as a WebSocket's task does it).
async fn watch(state: &AppState, session: &Arc<PollingSession>) {
    let connect_by = tokio::time::Instant::now() + state.config.http.handshake_timeout;
    // An idle polling client is heard at least every ping interval (its pongs); one that
    // vanished before CONNECT is dropped at the deadline, after CONNECT by the liveness
    // sweep (which closes the connection).
    let tick = Duration::from_secs(1).min(state.config.websocket.ping_interval);
    loop {
        let changed = session.changed.notified();
        match (session.stage(), session.conn.get()) {
            (UPGRADED, _) => break,
            (CLOSED, None) => break,
            (_, Some(conn)) if conn.is_closing() => {
                teardown(state, session, conn).await;
                break;
            }
            (_, None) if tokio::time::Instant::now() >= connect_by || state.shutdown.is_cancelled() => break,
            _ => {}
        }
        // A polling connection has no socket, so its socket waker is free for this: a
        // close (the sweep, the API, a client back elsewhere) wakes the watcher at once.
        let closed = poll_fn(|cx| match session.conn.get() {
            Some(conn) if session.stage() == OPEN => {
                conn.watch_socket(cx);
                if conn.is_closing() { Poll::Ready(()) } else { Poll::Pending }
            }
            _ => Poll::Pending,
        });
        tokio::select! {
            () = changed => {}
            () = closed => {}
            () = tokio::time::sleep(tick) => {}
        }
    }
    // Closed, or never connected: say so to a waiting poll, and forget the session.
    if session.stage() != UPGRADED {
        session.set_stage(CLOSED);
    }
    state.socketio.polling.by_sid.remove(&session.sid);
}

async fn teardown(state: &AppState, session: &PollingSession, conn: &Arc<ConnectionHandle>) {
    super::recovery::closing(state, conn).await;
    // Lets a waiting poll take the last frames (and the close packet) first; a client that
    // is gone polls no more.
    let gone = matches!(conn.close_reason(), CloseReason::ClientGone | CloseReason::HeartbeatTimeout);
    let grace = if gone { Duration::ZERO } else { state.config.websocket.close_timeout.min(Duration::from_secs(2)) };
    let _ = tokio::time::timeout(grace, async {
        while conn.has_queued() && session.stage() == OPEN {
            session.changed.notified().await;
        }
    })
    .await;
    session.set_stage(CLOSED);
    // A POST still running finishes first; its replies are refused (closing).
    let companion = session.companion.lock().await.take();
    state.hub.detach(conn);
    state.hub.connections.remove(&conn.id);
    state.metrics.connections.decrement(1.0);
    state.metrics.socketio_connections.decrement(1.0);
    let lived = conn.connected_at.elapsed().unwrap_or_default();
    state.metrics.connection_duration.record(lived.as_secs_f64());
    tracing::info!(connectionId = %conn.id, userId = %LogId(conn.user.as_str()), reason = ?conn.close_reason(), seconds = lived.as_secs_f64(), transport = "polling", "disconnected");
    drop(companion);
    super::recovery::save_on_close(state, conn).await;
}

/// `GET /socket.io/?transport=websocket&sid=…`: a polling session moves to a WebSocket.
pub async fn upgrade(state: AppState, remote: SocketAddr, sid: &str, upgrade: UpgradeRequest) -> Response {
    let Some(session) = find(&state, sid, remote) else {
        return EngineError::UnknownSid.response(&state, "unknown session id");
    };
    if session.conn.get().is_none() || session.stage() != OPEN {
        return EngineError::BadRequest.response(&state, "the session cannot be upgraded now");
    }
    let (response, socket) = upgrade.accept(crate::ws::upgrade::websocket_config(&state));
    let start = async move {
        let mut socket = socket.await?;
        let deadline = state.config.http.handshake_timeout;
        let switched = tokio::time::timeout(deadline, probe(&mut socket, &session)).await;
        let Ok(true) = switched else {
            // The client gave up the upgrade: it goes on polling.
            if session.stage() == UPGRADING {
                session.set_stage(OPEN);
            }
            return None;
        };
        let companion = session.companion.lock().await.take()?;
        let conn = session.conn.get()?.clone();
        session.set_stage(UPGRADED);
        state.socketio.polling.by_sid.remove(&session.sid);
        Some(Connection::new(socket, conn, state, companion))
    };
    tokio::spawn(ConnectionTask::new(start));
    response
}

/// The upgrade handshake on the new socket: `2probe` → `3probe` (the pending poll is
/// answered with a noop), then `5`. `true` once the client switched.
async fn probe(socket: &mut Socket, session: &PollingSession) -> bool {
    loop {
        let Ok(message) = poll_fn(|cx| socket.poll_read(cx)).await else { return false };
        let Message::Text(text) = message else { continue };
        match socketio::parse_engine(text.as_str()) {
            Ok(EnginePacket::Ping { probe: true }) => {
                if !write_now(socket, "3probe".to_owned()).await {
                    return false;
                }
                session.set_stage(UPGRADING);
            }
            Ok(EnginePacket::Upgrade) => return session.stage() == UPGRADING,
            _ => return false,
        }
    }
}

//! `/socket.io/`: the Engine.IO handshake and transports, and the Socket.IO CONNECT.
//!
//! A WebSocket (`transport=websocket`) runs on the native connection task: this module
//! only adds its start — the Engine.IO open packet, then the client's CONNECT with its
//! `auth`, which authenticates and admits it exactly as `GET /ws` does — after which
//! the task's open stage serves it like any other connection, its frames written as
//! Socket.IO packets (`hub::outbound::Wire`). Long-polling lives in `polling`.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{polling, recovery};
use crate::auth::{AuthError, Identity};
use crate::codec::socketio::{self, EnginePacket, SocketPacket};
use crate::domain::{ConnectionId, ErrorCode, LogId};
use crate::hub::{Admission, AdmissionError, CloseReason, ConnectionHandle, QueueLimits, SocketIoWire, Wire};
use crate::state::AppState;
use crate::ws::connection::{Companion, Connection, ConnectionTask};
use crate::ws::handshake::UpgradeRequest;
use crate::ws::session::Session;
use crate::ws::socket::{Socket, Written};

/// Engine.IO's error codes, in its JSON error bodies.
#[derive(Debug, Clone, Copy)]
pub enum EngineError {
    /// 0: the transport is not `polling` or `websocket`.
    UnknownTransport,
    /// 1: no session has this `sid` (expired, closed, or another node's).
    UnknownSid,
    /// 2: the method is not one the transport takes.
    BadHandshakeMethod,
    /// 3: anything else wrong with the request.
    BadRequest,
    /// 4: refused (origin).
    Forbidden,
    /// 5: `EIO` is not 4.
    UnsupportedVersion,
}

impl EngineError {
    fn code(self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::Forbidden => 4,
            Self::UnsupportedVersion => 5,
        }
    }

    /// The answer: the status Engine.IO servers use and their `{code, message}` body.
    pub fn response(self, state: &AppState, message: &str) -> Response {
        state.metrics.error(ErrorCode::Validation);
        let status = match self {
            Self::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, axum::Json(json!({"code": self.code(), "message": message}))).into_response()
    }
}

/// What the request's query string says.
#[derive(Debug, Default)]
pub struct EngineQuery {
    /// `EIO`.
    pub eio: Option<String>,
    /// `transport`.
    pub transport: Option<String>,
    /// `sid`: an existing session.
    pub sid: Option<String>,
    /// `token`: the fallback for clients that cannot send `auth`.
    pub token: Option<String>,
}

impl EngineQuery {
    fn parse(raw: Option<&str>) -> Self {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let slot = match key.as_ref() {
                "EIO" => &mut query.eio,
                "transport" => &mut query.transport,
                "sid" => &mut query.sid,
                "token" => &mut query.token,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        query
    }
}

/// The `/socket.io/` handler: every method, every transport.
pub async fn socketio_handler(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    let query = EngineQuery::parse(raw.as_deref());
    if query.eio.as_deref() != Some("4") {
        return EngineError::UnsupportedVersion
            .response(&state, "only Engine.IO 4 (socket.io-client 3 and 4) is served");
    }
    let (mut parts, body) = request.into_parts();
    if !state.config.allowed_origins.is_empty()
        && let Err(message) = crate::ws::upgrade::check_origin(&parts.headers, &state.config.allowed_origins)
    {
        state.metrics.refused("origin");
        return EngineError::Forbidden.response(&state, message);
    }
    match query.transport.as_deref() {
        Some("websocket") => {
            let upgrade = match UpgradeRequest::from_request_parts(&mut parts, &state).await {
                Ok(upgrade) => upgrade,
                Err(rejection) => return rejection.into_response(),
            };
            match &query.sid {
                Some(sid) => polling::upgrade(state, remote, sid, upgrade).await,
                None => websocket(state, remote, query, upgrade),
            }
        }
        Some("polling") => polling::handle(state, remote, query, parts.method, &parts.headers, body).await,
        _ => EngineError::UnknownTransport.response(&state, "transport must be polling or websocket"),
    }
}

/// A WebSocket from the start (`transports: ["websocket"]`).
fn websocket(state: AppState, remote: SocketAddr, query: EngineQuery, upgrade: UpgradeRequest) -> Response {
    if !state.is_accepting() {
        state.metrics.refused("draining");
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"code": 3, "message": "server is shutting down"})))
            .into_response();
    }
    let tracked = state.tasks.token();
    let (response, socket) = upgrade.accept(crate::ws::upgrade::websocket_config(&state));
    let start = async move {
        let mut socket = socket.await?;
        let sid = ConnectionId::generate();
        let open = socketio::open(sid.as_str(), &[], ping_ms(&state), pong_ms(&state), max_payload(&state));
        if !write_now(&mut socket, open).await {
            return None;
        }
        let deadline = state.config.http.handshake_timeout;
        let (nsp, auth) = match tokio::time::timeout(deadline, read_connect(&mut socket)).await {
            Ok(Some(connect)) => connect,
            _ => {
                // Anything but a CONNECT first (or nothing in time): closed with a reason,
                // not dropped.
                let frame = CloseFrame { code: CloseCode::Policy, reason: "expected a Socket.IO CONNECT".into() };
                let mut frame = Some(frame);
                let closed = poll_fn(|cx| socket.poll_close(cx, frame.take()));
                let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
                return None;
            }
        };
        let opened = open_session(&state, remote, &nsp, auth.as_ref(), query.token.as_deref(), tracked).await;
        let (conn, companion) = match opened {
            Ok(opened) => opened,
            Err(refusal) => {
                write_now(&mut socket, refusal.packet(&nsp)).await;
                return None;
            }
        };
        Some(Connection::new(socket, conn, state, companion))
    };
    tokio::spawn(ConnectionTask::new(start));
    response
}

/// A CONNECT to `nsp`: authenticates and admits it, recovers its session when it asks for
/// one that can be, registers the connection and subscribes it (its old topics from where
/// the client is, or the automatic ones). `auth` is the CONNECT's data.
pub async fn open_session(
    state: &AppState,
    remote: SocketAddr,
    nsp: &str,
    auth: Option<&Value>,
    query_token: Option<&str>,
    tracked: TaskTrackerToken,
) -> Result<(Arc<ConnectionHandle>, Box<Companion>), Refusal> {
    let token = auth_token(auth).or_else(|| query_token.map(str::to_owned));
    let (identity, admission) = admit(state, remote, nsp, token.as_deref())?;
    let recovery_on = !state.config.socketio.recovery.is_zero();
    let field = |name: &str| auth.and_then(|a| a.get(name)).and_then(Value::as_str);
    let recovered = match (recovery_on, field("pid")) {
        (true, Some(pid)) => recovery::take(state, &identity, nsp, pid, field("offset")).await,
        _ => None,
    };
    let id = recovered.as_ref().map_or_else(ConnectionId::generate, |r| ConnectionId::from_external(&r.connection_id));
    let pid = recovery_on.then(|| recovered.as_ref().map_or_else(|| recovery::new_pid(&id), |r| r.pid.clone()));
    let conn = register(state, remote, nsp, &identity, id, pid);
    let session = Session::new(state.clone(), conn.clone(), identity);
    let mut companion = Box::new(Companion { session, admission, tracked });
    match &recovered {
        Some(recovered) => {
            if !recovery::resubscribe(state, &conn, recovered).await {
                tracing::warn!(connectionId = %conn.id, "recovered, but a topic's history was evicted meanwhile: it restarts from now");
            }
        }
        None => companion.session.subscribe_automatic().await,
    }
    Ok((conn, companion))
}

/// Registers an admitted Socket.IO connection with the hub and queues its CONNECT answer
/// (with `pid` when it can be recovered) and `connection_established`.
fn register(
    state: &AppState,
    remote: SocketAddr,
    nsp: &str,
    identity: &Identity,
    id: ConnectionId,
    pid: Option<String>,
) -> Arc<ConnectionHandle> {
    let limits =
        QueueLimits { frames: state.config.limits.send_queue_events, bytes: state.config.limits.send_queue_bytes };
    let connect = socketio::connect_ok(nsp, id.as_str(), pid.as_deref());
    let wire = Wire::SocketIo(Box::new(SocketIoWire::new(nsp, pid)));
    let handle = ConnectionHandle::new(id, identity.user.clone(), remote, limits, state.metrics.clone());
    let conn = Arc::new(handle.with_wire(wire));
    state.hub.connections.insert(conn.clone());
    if state.shutdown.is_cancelled() {
        conn.close(CloseReason::Shutdown);
    }
    state.metrics.connections.increment(1.0);
    state.metrics.socketio_connections.increment(1.0);
    tracing::info!(connectionId = %conn.id, userId = %LogId(conn.user.as_str()), remote = %remote, protocol = "socketio", namespace = nsp, "connected");
    conn.send_encoded(connect.into());
    let established = json!({"data": {"connection_id": conn.id.as_str(), "user_id": conn.user.as_str()}}).to_string();
    conn.send_encoded(socketio::event(nsp, "connection_established", &established, None).into());
    conn
}

/// Why a CONNECT is refused.
pub struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    /// The CONNECT_ERROR packet: `err.message`, and `err.data` with the SPEC code.
    pub fn packet(&self, nsp: &str) -> String {
        let data = json!({"code": self.code.as_str(), "message": self.message});
        socketio::connect_error(nsp, &self.message, &data)
    }
}

/// Authenticates and admits a CONNECT to `nsp`, as `GET /ws` does its upgrade.
pub fn admit(
    state: &AppState,
    remote: SocketAddr,
    nsp: &str,
    token: Option<&str>,
) -> Result<(Identity, Admission), Refusal> {
    let refuse = |reason: &'static str, code: ErrorCode, message: String| {
        state.metrics.refused(reason);
        state.metrics.error(code);
        Refusal { code, message }
    };
    let allowed = &state.config.socketio.namespaces;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == nsp) {
        return Err(refuse("namespace", ErrorCode::Validation, format!("namespace {nsp} is not served here")));
    }
    if !state.is_accepting() {
        return Err(refuse("draining", ErrorCode::ServiceUnavailable, "server is shutting down".into()));
    }
    let identity = match token {
        Some(token) => state.authenticator.authenticate(token),
        None if state.config.dev => Ok(Identity::anonymous()),
        None => Err(AuthError::Missing),
    }
    .map_err(|e| refuse("unauthenticated", ErrorCode::Authentication, e.to_string()))?;
    let admission = state.hub.connections.admit(remote.ip()).map_err(|e| match e {
        AdmissionError::ServerFull => {
            refuse("capacity", ErrorCode::ServiceUnavailable, "server is at its connection limit".into())
        }
        AdmissionError::TooManyFromIp => {
            refuse("per_ip", ErrorCode::RateLimitExceeded, "too many connections from your address".into())
        }
    })?;
    Ok((identity, admission))
}

/// `auth.token` of a CONNECT, when it is a string.
pub fn auth_token(auth: Option<&Value>) -> Option<String> {
    auth?.get("token")?.as_str().map(str::to_owned)
}

/// Reads until the client's CONNECT; `None` if anything else arrives first (besides
/// heartbeats) or the socket ends.
async fn read_connect(socket: &mut Socket) -> Option<(String, Option<Value>)> {
    loop {
        let message = poll_fn(|cx| socket.poll_read(cx)).await.ok()?;
        let Message::Text(text) = message else {
            if matches!(message, Message::Ping(_) | Message::Pong(_)) {
                continue;
            }
            return None;
        };
        match socketio::parse_engine(text.as_str()) {
            Ok(EnginePacket::Message(packet)) => match socketio::parse_socket(packet) {
                Ok(SocketPacket::Connect { nsp, auth }) => return Some((nsp.to_owned(), auth)),
                _ => return None,
            },
            Ok(EnginePacket::Pong { .. } | EnginePacket::Noop) => {}
            _ => return None,
        }
    }
}

/// Writes and flushes one text message; `false` if the socket failed.
pub(super) async fn write_now(socket: &mut Socket, text: String) -> bool {
    let mut message = Some(Message::Text(text.into()));
    let written = poll_fn(|cx| match message.take() {
        Some(message) => std::task::Poll::Ready(socket.write(cx, message)),
        None => std::task::Poll::Ready(Ok(Written::Done)),
    })
    .await;
    written.is_ok() && poll_fn(|cx| socket.poll_flush(cx)).await.is_ok()
}

/// The heartbeat interval announced to clients, from `[websocket] ping_interval`.
pub fn ping_ms(state: &AppState) -> u64 {
    millis(state.config.websocket.ping_interval)
}

/// How long clients wait for a ping beyond the interval, from `[websocket] pong_timeout`.
pub fn pong_ms(state: &AppState) -> u64 {
    millis(state.config.websocket.pong_timeout)
}

/// The largest message, from `[limits] max_message_size`.
pub fn max_payload(state: &AppState) -> usize {
    state.config.limits.max_message_size
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let q = EngineQuery::parse(Some("EIO=4&transport=polling&t=abc&sid=s1&token=a%20b"));
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some("polling"));
        assert_eq!(q.sid.as_deref(), Some("s1"));
        assert_eq!(q.token.as_deref(), Some("a b"));
        assert!(EngineQuery::parse(None).eio.is_none());
    }

    #[test]
    fn the_token_comes_from_auth() {
        assert_eq!(auth_token(Some(&json!({"token": "t"}))).as_deref(), Some("t"));
        assert_eq!(auth_token(Some(&json!({"token": 1}))), None);
        assert_eq!(auth_token(None), None);
    }
}

//! One connection after the upgrade, in one task: read client frames, write queued
//! frames, close.
//!
//! The task is a hand-written future with three stages. Starting (register, subscribe)
//! and closing (last frames, close handshake, teardown) run once and are boxed; the open
//! stage is what an idle connection costs, so it holds only the socket, the handle, a
//! batch and two pointers, and the task stays within tokio's 512-byte task cell. One
//! task and an unsplit socket: no second task and no lock around the socket.
//!
//! Wake-ups stay as cheap as with a separate writer task: a delivery wakes the task
//! through the queue, and the task then takes every frame queued so far in one swap,
//! hands them to tungstenite and flushes once. The socket's read side is polled only
//! when the socket itself woke the task (the handle's socket flag), never on a delivery.
//! On close it sends what was already queued, then the close frame, and waits (bounded
//! by `close_timeout`) for the client's close reply; when no reply can be read any more (a
//! protocol violation ended the read side, see `ws::close`), it shuts its write side and
//! discards input until the client closes, so the close frame is not lost to a reset. Heartbeat pings and token expiry are
//! driven by the liveness sweep (`ws::liveness`), so a connection carries no timers. It
//! must never hold the handle's lock across a socket call, and never block the task.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::close::{close_code, is_protocol_violation, peer_close_reason, read_error_reason};
use super::session::Session;
use super::socket::{Socket, Written};
use crate::domain::LogId;
use crate::hub::{Admission, CloseReason, ConnectionHandle, SharedFrame};
use crate::state::AppState;

/// What the connection holds for its whole life but rarely touches, in one allocation
/// (moved, as a pointer, into a request's future while one runs).
pub struct Companion {
    /// Request handling.
    pub session: Session,
    /// The connection's admission slot; released when the connection ends.
    pub admission: Admission,
    /// Keeps shutdown waiting for this connection.
    pub tracked: TaskTrackerToken,
}

type Request = Pin<Box<dyn Future<Output = Box<Companion>> + Send>>;

/// The read side's request handling: idle, or running a client's request.
enum Reader {
    Idle(Box<Companion>),
    Busy(Request),
}

/// An open connection: the open stage's state.
pub struct Connection {
    conn: Arc<ConnectionHandle>,
    inner: Open,
}

/// The open stage's state besides the handle (apart, so the socket waker can borrow the
/// handle while these are mutated).
struct Open {
    socket: Socket,
    state: AppState,
    reader: Reader,
    /// Frames taken from the queue and not yet flushed.
    batch: VecDeque<SharedFrame>,
    /// How many of `batch` were handed to tungstenite.
    fed: usize,
    /// A batch (or ping) was taken and is not flushed yet.
    writing: bool,
    /// A heartbeat ping to write before the batch.
    ping: bool,
    /// A write would block: flush before writing more.
    blocked: bool,
    /// The read side is over (client's close, end of stream, read error).
    read_done: bool,
    /// The client's close frame: its code (1005 when it carried none) and reason; `None`
    /// until one arrives (for the `$disconnect` webhook).
    peer_close: Option<(u16, Box<str>)>,
}

/// The connection's task.
pub struct ConnectionTask {
    stage: Stage,
}

#[allow(
    clippy::large_enum_variant,
    reason = "by design: the open stage is inline, the once-only stages are boxed beside it"
)]
enum Stage {
    Starting(Pin<Box<dyn Future<Output = Option<Connection>> + Send>>),
    Open(Connection),
    Closing(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

impl ConnectionTask {
    /// A task that runs `start` (which yields `None` if the connection never opened),
    /// then the connection until it closes.
    pub fn new(start: impl Future<Output = Option<Connection>> + Send + 'static) -> Self {
        Self { stage: Stage::Starting(Box::pin(start)) }
    }
}

impl Future for ConnectionTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Starting(start) => match ready!(start.as_mut().poll(cx)) {
                    Some(connection) => this.stage = Stage::Open(connection),
                    None => this.stage = Stage::Done,
                },
                Stage::Open(connection) => {
                    ready!(connection.poll_open(cx));
                    if let Stage::Open(connection) = std::mem::replace(&mut this.stage, Stage::Done) {
                        this.stage = Stage::Closing(Box::pin(connection.close()));
                    }
                }
                Stage::Closing(closing) => {
                    ready!(closing.as_mut().poll(cx));
                    this.stage = Stage::Done;
                }
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Connection {
    /// An open connection on `socket`, for `conn`.
    pub fn new(socket: Socket, conn: Arc<ConnectionHandle>, state: AppState, companion: Box<Companion>) -> Self {
        let inner = Open {
            socket,
            state,
            reader: Reader::Idle(companion),
            batch: VecDeque::new(),
            fed: 0,
            writing: false,
            ping: false,
            blocked: false,
            read_done: false,
            peer_close: None,
        };
        Self { conn, inner }
    }

    /// The open stage: ready once the connection is closing (its close reason is set).
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Self { conn, inner } = self;
        let waker = conn.socket_waker();
        let mut socket_cx = Context::from_waker(&waker);
        // Closing first, as the separate reader did: once closing, no more client frames
        // are handled.
        if conn.is_closing() {
            return Poll::Ready(());
        }
        if conn.take_socket_ready(cx) && inner.poll_reader(conn, &mut socket_cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            if !inner.writing {
                let work = ready!(conn.poll_outbound(cx, &mut inner.batch));
                inner.writing = true;
                inner.ping = work.ping;
                if work.closing {
                    return Poll::Ready(());
                }
            }
            if let Err(e) = ready!(inner.poll_write_batch(conn, &mut socket_cx)) {
                tracing::debug!(connectionId = %conn.id, error = %e, "write failed");
                conn.close(CloseReason::ClientGone);
                return Poll::Ready(());
            }
        }
    }

    /// The closing stage: the close handshake for the close reason, the end of a request
    /// still running, then the connection's removal from the hub.
    async fn close(self) {
        let Self { conn, mut inner } = self;
        // As before the close: a heartbeat ping requested meanwhile is not sent.
        inner.ping = false;
        let close_timeout = inner.state.config.websocket.close_timeout;
        let reason = conn.close_reason();
        crate::socketio::recovery::closing(&inner.state, &conn).await;
        match close_code(reason) {
            Some((code, text)) => {
                if is_protocol_violation(reason) {
                    // Counted before the frame goes out, so the count is there by the time
                    // the client sees the close.
                    inner.state.metrics.ws_protocol_error(code);
                }
                let frame = CloseFrame { code: code.into(), reason: Utf8Bytes::from_static(text) };
                let mut handshake = CloseHandshake::Writing { frame: Some(frame), took_rest: false };
                let done = timeout(close_timeout, poll_fn(|cx| inner.poll_close_handshake(&conn, cx, &mut handshake)));
                if done.await.is_err() {
                    tracing::debug!(connectionId = %conn.id, "close handshake unfinished after the close timeout; dropping the socket");
                }
            }
            None if reason == CloseReason::ClientGone => {
                // Flush tungstenite's reply to the client's close frame, if any.
                let flushed = poll_fn(|cx| {
                    conn.watch_socket(cx);
                    let waker = conn.socket_waker();
                    inner.socket.poll_flush(&mut Context::from_waker(&waker))
                });
                let _ = timeout(close_timeout, flushed).await;
            }
            None => {}
        }
        let Open { socket, state, reader, peer_close, .. } = inner;
        drop(socket);
        // A request already running finishes; its replies are refused (closing).
        let companion = match reader {
            Reader::Idle(companion) => companion,
            Reader::Busy(request) => request.await,
        };
        state.hub.detach(&conn);
        state.hub.connections.remove(&conn.id);
        state.metrics.connections.decrement(1.0);
        if matches!(conn.wire(), crate::hub::Wire::SocketIo(_)) {
            state.metrics.socketio_connections.decrement(1.0);
        }
        let lived = conn.connected_at.elapsed().unwrap_or_default();
        state.metrics.connection_duration.record(lived.as_secs_f64());
        tracing::info!(connectionId = %conn.id, userId = %LogId(conn.user.as_str()), reason = ?conn.close_reason(), seconds = lived.as_secs_f64(), "disconnected");
        // After the removal, so a recovered connection may take the same id at once.
        crate::socketio::recovery::save_on_close(&state, &conn).await;
        if let Some(lifecycle) = &state.lifecycle
            && matches!(conn.wire(), crate::hub::Wire::Native)
        {
            lifecycle.on_disconnect(disconnect_notice(&conn, peer_close));
        }
        // Last: the admission slot, then the token shutdown waits for.
        let Companion { session, admission, tracked } = *companion;
        drop(session);
        drop(admission);
        drop(tracked);
    }
}

/// What the `$disconnect` webhook is told: the close code the client sent or was sent,
/// 1006 when no close frame went either way (API Gateway's own values).
fn disconnect_notice(conn: &ConnectionHandle, peer_close: Option<(u16, Box<str>)>) -> crate::apigw::DisconnectNotice {
    let reason = conn.close_reason();
    let (status_code, reason) = match (close_code(reason), peer_close) {
        (Some((code, text)), _) => (code, text.to_owned()),
        (None, Some((code, text))) => {
            (code, format!("Client-side close frame status code '{code}' and reason '{text}'"))
        }
        (None, None) if reason == CloseReason::HeartbeatTimeout => (1006, "heartbeat timeout".to_owned()),
        (None, None) => (1006, "connection lost".to_owned()),
    };
    crate::apigw::DisconnectNotice {
        connection_id: conn.id.as_str().to_owned(),
        user: conn.user.as_str().to_owned(),
        remote: conn.remote,
        user_agent: conn.user_agent().to_owned(),
        connected_at: conn.connected_at,
        status_code,
        reason,
    }
}

impl Open {
    /// Reads and handles client frames until the socket has none or a request is
    /// running. Ready when the open stage must end: the connection is closing (a request
    /// may have closed it) or the read side is over; the close reason is set by then.
    fn poll_reader(&mut self, conn: &ConnectionHandle, socket_cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Reader::Busy(request) = &mut self.reader {
                let companion = ready!(request.as_mut().poll(socket_cx));
                self.reader = Reader::Idle(companion);
            }
            // Looked at before each frame, as the separate reader did: once closing, no
            // more client frames are handled.
            if self.read_done || conn.is_closing() {
                return Poll::Ready(());
            }
            let frame = ready!(self.socket.poll_read(socket_cx));
            conn.heard();
            match frame {
                Ok(Message::Text(text)) => {
                    // The placeholder is a zero-sized future: no allocation.
                    let placeholder = Reader::Busy(Box::pin(std::future::pending()));
                    if let Reader::Idle(mut companion) = std::mem::replace(&mut self.reader, placeholder) {
                        // Boxed: request handling is large and rare, and an idle connection
                        // should not carry its state inline.
                        self.reader = Reader::Busy(Box::pin(async move {
                            companion.session.on_wire_text(text.as_str()).await;
                            companion
                        }));
                    }
                }
                Ok(Message::Binary(_)) => {
                    if let Reader::Idle(companion) = &mut self.reader {
                        companion.session.on_binary();
                    }
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(frame)) => {
                    // A forbidden close code is a protocol error; tungstenite has already
                    // queued the 1002 reply, which the closing stage flushes.
                    self.read_done = true;
                    self.peer_close = Some(match &frame {
                        Some(f) => (u16::from(f.code), f.reason.as_str().into()),
                        None => (1005, Box::default()),
                    });
                    conn.close(peer_close_reason(frame.as_ref()));
                }
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    self.read_done = true;
                    conn.close(CloseReason::ClientGone);
                }
                Err(e) => {
                    // Like tokio-tungstenite, read nothing after an error: tungstenite's
                    // reader may be mid-frame. Its writer is still usable (a read error
                    // leaves it open), so the closing stage sends 1002, 1007 or 1009.
                    self.read_done = true;
                    tracing::debug!(connectionId = %conn.id, error = %e, "read failed");
                    conn.close(read_error_reason(&e));
                }
            }
        }
    }

    /// Hands the taken ping and frames to tungstenite and flushes; ready once flushed
    /// (or failed). Publish times stay in the batch until the flush, so latency is
    /// measured to "written to the socket".
    fn poll_write_batch(&mut self, conn: &ConnectionHandle, socket_cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.ping {
            if self.socket.write(socket_cx, heartbeat_ping(conn))? == Written::Blocked {
                self.blocked = true;
            }
            self.ping = false;
        }
        while let Some(frame) = self.batch.get(self.fed) {
            if self.blocked {
                ready!(self.socket.poll_flush(socket_cx))?;
                self.blocked = false;
                continue;
            }
            if self.socket.write(socket_cx, conn.wire_message(frame))? == Written::Blocked {
                self.blocked = true;
            }
            self.fed += 1;
        }
        ready!(self.socket.poll_flush(socket_cx))?;
        self.blocked = false;
        self.writing = false;
        self.fed = 0;
        let now = std::time::Instant::now();
        let mut events = 0u64;
        for at in self.batch.drain(..).filter_map(|f| f.published_at) {
            events += 1;
            self.state.metrics.delivery_latency.record(now.saturating_duration_since(at).as_secs_f64());
        }
        if events > 0 {
            self.state.metrics.deliveries.increment(events);
        }
        Poll::Ready(Ok(()))
    }

    /// Sends the batch in progress and whatever else was queued, then the close frame,
    /// then waits for the client's close reply (unless the read side is already over).
    /// Ready when done, or when the socket failed.
    fn poll_close_handshake(
        &mut self,
        conn: &Arc<ConnectionHandle>,
        cx: &mut Context<'_>,
        handshake: &mut CloseHandshake,
    ) -> Poll<()> {
        conn.watch_socket(cx);
        let waker = conn.socket_waker();
        let mut socket_cx = Context::from_waker(&waker);
        // A request running when the close began keeps being driven (it is woken through
        // the socket waker).
        if let Reader::Busy(request) = &mut self.reader
            && let Poll::Ready(companion) = request.as_mut().poll(&mut socket_cx)
        {
            self.reader = Reader::Idle(companion);
        }
        loop {
            match handshake {
                CloseHandshake::Writing { frame, took_rest } => {
                    if !self.socket.can_write() {
                        // The client's close frame was read (tungstenite answered it):
                        // no data frame may follow; only the reply is left to flush.
                        self.batch.clear();
                        self.fed = 0;
                        self.writing = false;
                        *took_rest = true;
                    }
                    if self.writing {
                        if ready!(self.poll_write_batch(conn, &mut socket_cx)).is_err() {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    if !*took_rest {
                        // Closing: the queue answers at once, with every frame still in it.
                        // A ping requested meanwhile is not sent.
                        if conn.poll_outbound(cx, &mut self.batch).is_ready() {
                            self.writing = !self.batch.is_empty();
                        }
                        *took_rest = true;
                        continue;
                    }
                    // The frame is queued on the first call; later calls only flush.
                    if ready!(self.socket.poll_close(&mut socket_cx, frame.take())).is_err() {
                        return Poll::Ready(());
                    }
                    *handshake = CloseHandshake::AwaitingReply;
                }
                CloseHandshake::AwaitingReply => {
                    if self.read_done {
                        // No frame can be read any more (the client's close came, or a
                        // read failed): end cleanly instead.
                        *handshake = CloseHandshake::Lingering { shut: false, discarded: 0 };
                        continue;
                    }
                    match ready!(self.socket.poll_read(&mut socket_cx)) {
                        Ok(Message::Close(_)) | Err(_) => return Poll::Ready(()),
                        Ok(_) => {}
                    }
                }
                CloseHandshake::Lingering { shut, discarded } => {
                    if !*shut {
                        if ready!(self.socket.poll_shutdown(&mut socket_cx)).is_err() {
                            return Poll::Ready(());
                        }
                        *shut = true;
                    }
                    match ready!(self.socket.poll_discard(&mut socket_cx)) {
                        0 => return Poll::Ready(()),
                        n => {
                            *discarded += n;
                            if *discarded > LINGER_DISCARD_LIMIT {
                                return Poll::Ready(());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The heartbeat ping of the connection's protocol: a WebSocket ping, or Engine.IO's `2`
/// (Socket.IO clients answer that one, not the WebSocket's).
pub fn heartbeat_ping(conn: &ConnectionHandle) -> Message {
    match conn.wire_ping() {
        None => Message::Ping(Bytes::new()),
        Some(text) => Message::Text(text),
    }
}

/// Where the close handshake is.
enum CloseHandshake {
    /// Writing the last frames, then the close frame.
    Writing { frame: Option<CloseFrame>, took_rest: bool },
    /// The close frame is out; waiting for the client's.
    AwaitingReply,
    /// The close frame is out and the read side is over: the write side is shut (FIN),
    /// and what the client still sends is discarded until it closes too, so the socket
    /// is not dropped with unread data (which would send RST; see `Socket::poll_discard`).
    Lingering { shut: bool, discarded: usize },
}

/// Bytes discarded while lingering before the socket is dropped anyway: a client that
/// keeps sending after the close is not waiting for it (`close_timeout` bounds the time).
const LINGER_DISCARD_LIMIT: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokio task is its future plus about 104 bytes of header, scheduler and trailer,
    /// rounded up to 128 bytes (the cell is cache-line aligned). The open stage must stay
    /// at or under 408 bytes to fit a 512-byte cell: past it, every connection pays 128
    /// bytes more.
    #[test]
    fn the_open_stage_fits_a_512_byte_task_cell() {
        assert!(size_of::<ConnectionTask>() <= 408, "ConnectionTask is {} bytes", size_of::<ConnectionTask>());
    }
}

//! A connection's bounded outbound queue, close signal and liveness clock: its handle in
//! the hub.
//!
//! The queue is a `VecDeque` under a mutex that the writer swaps out whole, so a batch of
//! any size is taken with one lock and an idle connection holds no queue storage beyond a
//! few slots (a pre-allocated channel block would cost about 1.5 KB per connection). The
//! handle never waits: producers push and wake, and a full queue closes the connection.
//! It must never hold its lock across an await or a socket write.
//!
//! The handle is also how the connection's one task is woken, and why: the queue wakes it
//! through one waker slot, and the socket wakes it through the handle itself (an
//! [`ArcWake`]), which first raises a flag. A delivery then costs the task a look at the
//! queue only; it touches the socket's read side only when the flag says the socket
//! asked for it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use futures_util::task::{ArcWake, AtomicWaker, WakerRef, waker_ref};
use parking_lot::Mutex;

use crate::codec::reply::Reply;
use crate::codec::{FrameText, socketio};
use crate::domain::{ConnectionId, LogId, Topic, UserId};
use crate::metrics::Metrics;

/// A writer's batch keeps its storage between batches up to this many frames; beyond it
/// the storage is released so one burst does not pin memory for the connection's life.
const RETAINED_BATCH_CAPACITY: usize = 64;

/// Why a connection is being closed; decides the close code (see `ws::close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down (1001).
    Shutdown,
    /// Sustained rate-limit abuse (1008).
    PolicyViolation,
    /// A frame beyond the hard size limit (1009).
    MessageTooBig,
    /// The client broke the WebSocket framing rules (RFC 6455 §5): an unmasked frame,
    /// reserved bits or opcodes, a bad control or continuation frame, a malformed close
    /// frame (1002).
    ProtocolError,
    /// A text message or close reason that is not valid UTF-8 (1007).
    InvalidPayload,
    /// The token expired and was not refreshed (4001).
    TokenExpired,
    /// The outbound queue overflowed (4008).
    SlowConsumer,
    /// A backend closed it through the API (1000).
    ClosedByBackend,
    /// The broker could not keep a subscribed topic continuous (history lost, or a gap the
    /// stream no longer covers): the client should reconnect and resume (1012).
    Resync,
    /// The client stopped answering pings: the socket is dropped without a close frame.
    HeartbeatTimeout,
    /// The client closed the connection or the socket failed: nothing more to send.
    ClientGone,
}

/// Bounds of one outbound queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Frames.
    pub frames: usize,
    /// Bytes.
    pub bytes: usize,
}

/// One frame to send. Queues hold it behind an `Arc` (a pointer per slot), so a published
/// event is one allocation shared by every subscriber's queue.
pub struct OutboundFrame {
    /// The frame text: native JSON, or for a reply queued to a Socket.IO connection the
    /// packet itself.
    pub text: FrameText,
    /// When the event was published (for the delivery-latency histogram); `None` for replies.
    pub published_at: Option<Instant>,
    /// The event's topic and offset, for an event (live or replayed); `None` otherwise.
    pub origin: Option<(Topic, u64)>,
    /// The payload of a binary frame (a backend's post of bytes that are not UTF-8); `text`
    /// is then empty. Only native connections take one.
    pub binary: Option<bytes::Bytes>,
    /// The frame as a Socket.IO packet for one namespace, encoded by the first Socket.IO
    /// connection that writes it and shared by the others: encoded once per protocol.
    socketio: OnceLock<(SocketIoKey, FrameText)>,
}

/// What a Socket.IO packet of a frame depends on besides the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocketIoKey {
    nsp: Arc<str>,
    recovery: bool,
}

impl OutboundFrame {
    /// A frame in the native encoding.
    pub fn new(text: FrameText, published_at: Option<Instant>) -> Self {
        Self { text, published_at, origin: None, binary: None, socketio: OnceLock::new() }
    }

    /// A binary frame (native connections only).
    pub fn binary(payload: bytes::Bytes) -> Self {
        Self {
            text: FrameText::default(),
            published_at: None,
            origin: None,
            binary: Some(payload),
            socketio: OnceLock::new(),
        }
    }

    /// Bytes it takes in a send queue.
    fn queued_len(&self) -> usize {
        self.text.len() + self.binary.as_ref().map_or(0, bytes::Bytes::len)
    }

    /// An event of `topic` at `offset` (which Socket.IO recovery tracks).
    pub fn event(text: FrameText, published_at: Option<Instant>, topic: &Topic, offset: u64) -> Self {
        Self { text, published_at, origin: Some((topic.clone(), offset)), binary: None, socketio: OnceLock::new() }
    }
}

/// A frame a backend posts to one connection as it is (API Gateway's `post_to_connection`):
/// never parsed, never wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame (the posted bytes were UTF-8).
    Text(FrameText),
    /// A binary frame.
    Binary(bytes::Bytes),
}

/// Why a [`RawFrame`] cannot go to a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a binary frame cannot be sent to a Socket.IO connection (post UTF-8 text instead)")]
pub struct BinaryToSocketIo;

/// How a connection's frames go on the wire.
pub enum Wire {
    /// The native JSON protocol (`/ws`).
    Native,
    /// Socket.IO (`/socket.io/`): frames become packets of the connection's namespace.
    SocketIo(Box<SocketIoWire>),
}

impl Wire {
    /// The protocol's name in the API and metrics: `native` or `socketio`.
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::SocketIo(_) => "socketio",
        }
    }
}

/// A Socket.IO connection's wire state.
pub struct SocketIoWire {
    /// The namespace the client connected to (`/ws`).
    pub nsp: Arc<str>,
    /// Events carry their recovery offset as a last argument.
    pub recovery: bool,
    /// The private session id the client recovers with (recovery on).
    pub pid: Option<String>,
    /// The ack id of the request being handled, plus one (0: none): its reply becomes the ack.
    pending_ack: AtomicU64,
    /// What the client surely has, with recovery on.
    log: Mutex<RecoveryLog>,
    /// The client left on purpose (its DISCONNECT): nothing to recover.
    left: AtomicBool,
}

/// Unanswered-ping tails longer than this make the session unrecoverable (a client that
/// reads this far behind is near its slow-consumer bound anyway).
const MAX_UNCONFIRMED: usize = 65_536;
/// Every this many unconfirmed events the writer asks for an extra ping, so the tail is
/// cut short on busy connections instead of growing for a whole ping interval.
const PING_EVERY: usize = 512;

/// Which events a Socket.IO client surely received, for connection state recovery.
///
/// A WebSocket (or a poll) delivers a prefix of what was written, and Engine.IO's pong
/// proves the client read everything written before its ping. So the log keeps, per
/// topic, the offset confirmed by the last answered ping, plus the events written since
/// the oldest unanswered one, in write order. The client's last offset (the position it
/// reports when it reconnects) is one of those: everything up to it arrived, nothing
/// after it did — exact, with any number of topics per connection.
#[derive(Debug, Default)]
pub struct RecoveryLog {
    /// Per held topic: the epoch and the offset surely received.
    pub confirmed: Vec<(Topic, Arc<str>, u64)>,
    /// Events written and not yet confirmed, oldest first.
    pub tail: VecDeque<(Topic, u64)>,
    /// The tail's length at each unanswered ping, oldest first.
    marks: VecDeque<usize>,
    /// The tail outgrew its bound: the session cannot be recovered exactly.
    pub overflowed: bool,
}

impl SocketIoWire {
    /// The wire state of a connection to `nsp`; recoverable under `pid` when given.
    pub fn new(nsp: &str, pid: Option<String>) -> Self {
        Self {
            nsp: Arc::from(nsp),
            recovery: pid.is_some(),
            pid,
            pending_ack: AtomicU64::new(0),
            log: Mutex::new(RecoveryLog::default()),
            left: AtomicBool::new(false),
        }
    }

    /// The client sent DISCONNECT: its session ends for good.
    pub fn mark_left(&self) {
        self.left.store(true, Ordering::Release);
    }

    /// Whether the client left on purpose.
    pub fn left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }

    /// A subscription took effect at `position`: the client has everything up to it.
    fn subscribed(&self, topic: &Topic, epoch: &str, offset: u64) {
        let mut log = self.log.lock();
        log.confirmed.retain(|(t, _, _)| t != topic);
        log.confirmed.push((topic.clone(), Arc::from(epoch), offset));
    }

    fn unsubscribed(&self, topic: &Topic) {
        self.log.lock().confirmed.retain(|(t, _, _)| t != topic);
    }

    /// An event was handed to the socket; `true` when an extra ping should follow.
    fn written(&self, topic: &Topic, offset: u64) -> bool {
        let mut log = self.log.lock();
        if log.overflowed {
            return false;
        }
        if log.tail.len() >= MAX_UNCONFIRMED {
            log.overflowed = true;
            log.tail = VecDeque::new();
            return false;
        }
        log.tail.push_back((topic.clone(), offset));
        log.tail.len().is_multiple_of(PING_EVERY)
    }

    /// A ping was handed to the socket.
    fn ping_written(&self) {
        let mut log = self.log.lock();
        let at = log.tail.len();
        log.marks.push_back(at);
    }

    /// The client answered the oldest unanswered ping: what was written before it arrived.
    pub fn pong_received(&self) {
        if !self.recovery {
            return;
        }
        let mut log = self.log.lock();
        let Some(mark) = log.marks.pop_front() else { return };
        let mark = mark.min(log.tail.len());
        let RecoveryLog { confirmed, tail, marks, .. } = &mut *log;
        for (topic, offset) in tail.drain(..mark) {
            if let Some(entry) = confirmed.iter_mut().find(|(t, _, _)| *t == topic) {
                entry.2 = entry.2.max(offset);
            }
        }
        for m in marks.iter_mut() {
            *m = m.saturating_sub(mark);
        }
    }

    /// A copy of the log, for saving the session when the connection ends.
    pub fn snapshot(&self) -> RecoveryLog {
        let log = self.log.lock();
        RecoveryLog {
            confirmed: log.confirmed.clone(),
            tail: log.tail.clone(),
            marks: VecDeque::new(),
            overflowed: log.overflowed,
        }
    }

    /// Makes the next reply the ack `id` (`None`: the request has no ack).
    pub fn expect_ack(&self, id: Option<u64>) {
        self.pending_ack.store(id.map_or(0, |id| id.saturating_add(1)), Ordering::Release);
    }

    /// A typed reply: the pending request's ack, or an emit when there is none.
    fn typed_reply(&self, reply: &Reply, request_id: Option<&str>) -> FrameText {
        let pending = self.pending_ack.swap(0, Ordering::AcqRel);
        FrameText::from(socketio::reply(&self.nsp, pending.checked_sub(1), reply, request_id))
    }

    fn reply(&self, native: &str) -> FrameText {
        let pending = self.pending_ack.load(Ordering::Acquire);
        let ack = pending.checked_sub(1);
        let (packet, used) = socketio::reply_from_native(native, &self.nsp, ack);
        if used {
            // Only this request's first reply is its ack; a concurrent one lost the race
            // and goes out as an emit, which is still correct.
            let _ = self.pending_ack.compare_exchange(pending, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
        FrameText::from(packet)
    }

    /// The Engine.IO message of a shared frame: the frame's cached packet when it was
    /// encoded for this namespace, else encoded now (and cached if it is the first).
    fn packet(&self, frame: &OutboundFrame) -> FrameText {
        // Everything but the cache hit is in `encode`: a delivery that finds the packet
        // cached for its namespace only clones it (no allocation).
        let encode = || {
            let offset = match (&frame.origin, self.recovery) {
                (Some((topic, offset)), true) => Some(socketio::recovery_offset(topic.as_str(), *offset)),
                _ => None,
            };
            FrameText::from(socketio::event_from_native(frame.text.as_str(), &self.nsp, offset.as_deref()))
        };
        let (cached, packet) =
            frame.socketio.get_or_init(|| (SocketIoKey { nsp: self.nsp.clone(), recovery: self.recovery }, encode()));
        if cached.nsp == self.nsp && cached.recovery == self.recovery { packet.clone() } else { encode() }
    }
}

/// What the writer has to do after [`ConnectionHandle::next_outbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterWork {
    /// Send a heartbeat ping.
    pub ping: bool,
    /// The connection is closing: the batch holds the last frames it will ever get.
    pub closing: bool,
}

/// A frame as queued: shared, so a delivery is a reference-count increment.
pub type SharedFrame = Arc<OutboundFrame>;

#[derive(Default)]
struct Outbox {
    frames: VecDeque<SharedFrame>,
    bytes: usize,
    ping: bool,
}

/// Milliseconds on a process-wide monotonic clock (for the liveness fields, which must be
/// atomics so the heartbeat sweep can read them without a lock).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The hub's handle to one connection: queue frames to it, close it, list its topics.
pub struct ConnectionHandle {
    /// The connection id.
    pub id: ConnectionId,
    /// The authenticated user.
    pub user: UserId,
    /// The client's address.
    pub remote: SocketAddr,
    /// When it connected.
    pub connected_at: SystemTime,
    outbox: Mutex<Outbox>,
    limits: QueueLimits,
    /// The connection's task, waiting for frames, a ping or the close signal.
    queue_waker: AtomicWaker,
    /// The connection's task, waiting for its socket (see [`Self::socket_waker`]).
    socket_waker: AtomicWaker,
    /// Raised when the socket woke the task; taken by [`Self::take_socket_ready`].
    socket_ready: AtomicBool,
    /// Set once, when the connection starts closing; its presence is the close signal.
    close_reason: OnceLock<CloseReason>,
    last_heard_ms: AtomicU64,
    last_ping_ms: AtomicU64,
    expires_at_unix_s: AtomicU64,
    /// A short unsorted list: a connection holds few topics, and a `Vec` costs a fraction
    /// of a B-tree node when it holds one or two.
    topics: Mutex<Vec<Topic>>,
    metrics: Metrics,
    /// The protocol its frames are written in.
    wire: Wire,
    /// The upgrade request's `User-Agent` (empty without one), for API Gateway's
    /// `GET /@connections/{id}`.
    user_agent: Box<str>,
}

impl ConnectionHandle {
    /// Creates the handle of a connection that was just accepted.
    pub fn new(id: ConnectionId, user: UserId, remote: SocketAddr, limits: QueueLimits, metrics: Metrics) -> Self {
        let now = monotonic_ms();
        Self {
            id,
            user,
            remote,
            connected_at: SystemTime::now(),
            outbox: Mutex::new(Outbox::default()),
            limits,
            queue_waker: AtomicWaker::new(),
            socket_waker: AtomicWaker::new(),
            // Raised: the socket has not been polled yet.
            socket_ready: AtomicBool::new(true),
            close_reason: OnceLock::new(),
            last_heard_ms: AtomicU64::new(now),
            last_ping_ms: AtomicU64::new(now),
            expires_at_unix_s: AtomicU64::new(0),
            topics: Mutex::new(Vec::new()),
            metrics,
            wire: Wire::Native,
            user_agent: Box::default(),
        }
    }

    /// The same handle, remembering the client's `User-Agent`.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: &str) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The upgrade request's `User-Agent` (empty without one).
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// When the client last sent anything (a frame, a pong), on the wall clock.
    pub fn last_active_at(&self) -> SystemTime {
        let ago = monotonic_ms().saturating_sub(self.last_heard_ms.load(Ordering::Relaxed));
        let at = SystemTime::now().checked_sub(std::time::Duration::from_millis(ago)).unwrap_or(self.connected_at);
        // The two clocks round differently: never before the connection existed.
        at.max(self.connected_at)
    }

    /// The same handle speaking `wire`.
    #[must_use]
    pub fn with_wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// The protocol its frames are written in.
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// Queues a reply (a frame for this connection only), given in the native encoding:
    /// on a Socket.IO connection it becomes the pending request's ack or an emit here,
    /// once, as it is this connection's alone. See [`Self::send_shared`].
    pub fn send(&self, text: FrameText) -> bool {
        let frame = match &self.wire {
            Wire::Native => OutboundFrame::new(text, None),
            Wire::SocketIo(wire) => Self::encoded(wire.reply(text.as_str())),
        };
        self.send_shared(&Arc::new(frame))
    }

    /// Queues the reply to this connection's request, encoded for its wire: the native
    /// frame, or the Socket.IO ack of the request (an emit when it asked for none).
    pub fn send_reply(&self, reply: &Reply, request_id: Option<&str>) -> bool {
        let frame = match &self.wire {
            Wire::Native => OutboundFrame::new(FrameText::from(reply.native(request_id)), None),
            Wire::SocketIo(wire) => Self::encoded(wire.typed_reply(reply, request_id)),
        };
        self.send_shared(&Arc::new(frame))
    }

    /// Queues a frame already in this connection's wire encoding (a Socket.IO packet).
    pub fn send_encoded(&self, packet: FrameText) -> bool {
        self.send_shared(&Arc::new(Self::encoded(packet)))
    }

    /// Queues a backend's raw frame. A native connection gets it as it is; a Socket.IO
    /// connection gets text as an emit (named after a JSON object's `type`, else
    /// `message`, the text then a JSON string), and never a binary frame, which its client
    /// would take for an attachment. `Ok(false)`: the queue was full (now closing, 4008).
    pub fn send_raw(&self, frame: RawFrame) -> Result<bool, BinaryToSocketIo> {
        let frame = match (&self.wire, frame) {
            (Wire::Native, RawFrame::Text(text)) => OutboundFrame::new(text, None),
            (Wire::Native, RawFrame::Binary(payload)) => OutboundFrame::binary(payload),
            (Wire::SocketIo(wire), RawFrame::Text(text)) => {
                Self::encoded(FrameText::from(socketio::event_from_raw(text.as_str(), &wire.nsp)))
            }
            (Wire::SocketIo(_), RawFrame::Binary(_)) => return Err(BinaryToSocketIo),
        };
        Ok(self.send_shared(&Arc::new(frame)))
    }

    fn encoded(packet: FrameText) -> OutboundFrame {
        // Marked as encoded for no namespace: `wire_text` passes such frames through.
        let frame = OutboundFrame::new(packet.clone(), None);
        let _ = frame.socketio.set((SocketIoKey { nsp: Arc::from(""), recovery: false }, packet));
        frame
    }

    /// The text to write for `frame` on this connection's wire. Every writer calls it
    /// as it hands the frame to the transport, which is what Socket.IO recovery counts.
    pub fn wire_text(&self, frame: &OutboundFrame) -> FrameText {
        match &self.wire {
            Wire::Native => frame.text.clone(),
            Wire::SocketIo(wire) => {
                if wire.recovery
                    && let Some((topic, offset)) = &frame.origin
                    && wire.written(topic, *offset)
                {
                    self.request_ping();
                }
                match frame.socketio.get() {
                    Some((key, packet)) if key.nsp.is_empty() => packet.clone(),
                    _ => wire.packet(frame),
                }
            }
        }
    }

    /// The WebSocket message to write for `frame`: a binary frame's payload, else the text
    /// of [`Self::wire_text`].
    pub fn wire_message(&self, frame: &OutboundFrame) -> tokio_tungstenite::tungstenite::Message {
        use tokio_tungstenite::tungstenite::Message;
        match &frame.binary {
            Some(payload) => Message::Binary(payload.clone()),
            None => Message::Text(self.wire_text(frame)),
        }
    }

    /// The heartbeat ping as the writer writes it now: a WebSocket ping's payload is
    /// native; Engine.IO's is the text `2` (Socket.IO clients answer that one).
    pub fn wire_ping(&self) -> Option<FrameText> {
        match &self.wire {
            Wire::Native => None,
            Wire::SocketIo(wire) => {
                if wire.recovery {
                    wire.ping_written();
                }
                Some(FrameText::from_static("2"))
            }
        }
    }

    /// A subscription to `topic` took effect at `position` (recovery's baseline).
    pub(super) fn on_subscribed(&self, topic: &Topic, epoch: &str, offset: u64) {
        if let Wire::SocketIo(wire) = &self.wire
            && wire.recovery
        {
            wire.subscribed(topic, epoch, offset);
        }
    }

    pub(super) fn on_unsubscribed(&self, topic: &Topic) {
        if let Wire::SocketIo(wire) = &self.wire
            && wire.recovery
        {
            wire.unsubscribed(topic);
        }
    }

    /// Queues a frame without waiting. A full queue (frames or bytes) closes the connection
    /// as a slow consumer and returns `false`; so does a connection already closing.
    pub fn send_shared(&self, frame: &SharedFrame) -> bool {
        if self.is_closing() {
            return false;
        }
        {
            let mut outbox = self.outbox.lock();
            let bytes = outbox.bytes + frame.queued_len();
            if outbox.frames.len() < self.limits.frames && bytes <= self.limits.bytes {
                outbox.bytes = bytes;
                outbox.frames.push_back(frame.clone());
                drop(outbox);
                self.queue_waker.wake();
                return true;
            }
        }
        self.close(CloseReason::SlowConsumer);
        false
    }

    /// Whether frames are queued (not yet taken by the writer).
    pub fn has_queued(&self) -> bool {
        !self.outbox.lock().frames.is_empty()
    }

    /// Asks the writer to send a heartbeat ping.
    pub fn request_ping(&self) {
        self.outbox.lock().ping = true;
        self.queue_waker.wake();
    }

    /// The writer's wait: ready once there are frames, a ping to send, or the connection
    /// is closing. Queued frames are moved into `batch` (which must be empty) in one swap.
    /// When pending, the context's waker is woken by the next push, ping or close.
    pub fn poll_outbound(&self, cx: &mut Context<'_>, batch: &mut VecDeque<SharedFrame>) -> Poll<WriterWork> {
        if batch.capacity() > RETAINED_BATCH_CAPACITY {
            *batch = VecDeque::new();
        }
        let mut registered = false;
        loop {
            let closing = self.is_closing();
            {
                let mut outbox = self.outbox.lock();
                if closing || outbox.ping || !outbox.frames.is_empty() {
                    std::mem::swap(&mut outbox.frames, batch);
                    outbox.bytes = 0;
                    let ping = std::mem::take(&mut outbox.ping);
                    return Poll::Ready(WriterWork { ping, closing });
                }
            }
            if registered {
                return Poll::Pending;
            }
            // Register, then look again: a push between the look and the registration
            // would otherwise be missed.
            self.queue_waker.register(cx.waker());
            registered = true;
        }
    }

    /// [`Self::poll_outbound`] as a future.
    pub async fn next_outbound(&self, batch: &mut VecDeque<SharedFrame>) -> WriterWork {
        poll_fn(|cx| self.poll_outbound(cx, batch)).await
    }

    /// The waker to poll the connection's socket with: when the socket wakes it, it
    /// raises the socket flag and wakes the task registered by
    /// [`Self::take_socket_ready`] or [`Self::watch_socket`]. No allocation: it is the
    /// handle itself.
    pub fn socket_waker(self: &Arc<Self>) -> WakerRef<'_> {
        waker_ref(self)
    }

    /// Whether the socket woke the task since the last call (initially: yes); lowers the
    /// flag. Registers the task behind `cx` for the next socket wake-up on every call:
    /// poll the socket's read side after this call, not before, so a wake-up between the
    /// two is not lost.
    ///
    /// The registration must not depend on the flag. A wake-up raises the flag and then
    /// takes the registered waker, in two steps; a poll that lowers the flag and registers
    /// in between has its fresh registration taken by that wake-up, and is polled again
    /// with the flag down. Registering only when the flag was up would then leave the
    /// task with no socket waker at all, and the next socket event (a client frame, or a
    /// request finished on another thread) would be lost. Re-registering the same waker
    /// is one compare-and-swap.
    pub fn take_socket_ready(&self, cx: &Context<'_>) -> bool {
        self.socket_waker.register(cx.waker());
        // A plain load first: on the delivery path the flag is down, and a swap would be a
        // locked read-modify-write on every wake-up.
        self.socket_ready.load(Ordering::Acquire) && self.socket_ready.swap(false, Ordering::AcqRel)
    }

    /// Registers the task behind `cx` for the next socket wake-up, whatever the flag (for
    /// the close path, which polls the socket on every wake-up anyway).
    pub fn watch_socket(&self, cx: &Context<'_>) {
        self.socket_waker.register(cx.waker());
    }

    /// Starts closing the connection for `reason`; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if let Wire::SocketIo(wire) = &self.wire
            && matches!(reason, CloseReason::ClosedByBackend | CloseReason::PolicyViolation)
            && !self.is_closing()
        {
            // Socket.IO's "io server disconnect": the client must not reconnect on its own,
            // as it would after a mere transport close. Queued past the bounds on purpose.
            let packet = FrameText::from(socketio::disconnect(&wire.nsp));
            self.outbox.lock().frames.push_back(Arc::new(Self::encoded(packet)));
        }
        if self.close_reason.set(reason).is_ok() {
            if reason == CloseReason::SlowConsumer {
                self.metrics.slow_consumer_disconnects.increment(1);
                tracing::warn!(connectionId = %self.id, userId = %LogId(self.user.as_str()), "slow consumer: send queue overflowed, closing with 4008");
            }
            self.queue_waker.wake();
            self.socket_waker.wake();
        }
    }

    /// Why the connection is closing (`ClientGone` while it is still open).
    pub fn close_reason(&self) -> CloseReason {
        self.close_reason.get().copied().unwrap_or(CloseReason::ClientGone)
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.close_reason.get().is_some()
    }

    /// Records that the client was heard from (any frame, pongs included).
    pub fn heard(&self) {
        self.last_heard_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Sets when the connection's token expires (unix seconds; `None`: never).
    pub fn set_expiry(&self, unix_seconds: Option<u64>) {
        self.expires_at_unix_s.store(unix_seconds.unwrap_or(0), Ordering::Relaxed);
    }

    /// The heartbeat and expiry check, run periodically for every connection by the
    /// liveness sweep: requests a ping every `ping_interval`, and closes a connection whose
    /// ping went unanswered for `pong_timeout` or whose token expired.
    pub fn check_liveness(&self, now_ms: u64, now_unix_s: u64, ping_interval_ms: u64, pong_timeout_ms: u64) {
        if self.is_closing() {
            return;
        }
        let expires = self.expires_at_unix_s.load(Ordering::Relaxed);
        if expires != 0 && now_unix_s >= expires {
            tracing::info!(connectionId = %self.id, userId = %LogId(self.user.as_str()), "token expired; closing with 4001");
            self.close(CloseReason::TokenExpired);
            return;
        }
        let heard = self.last_heard_ms.load(Ordering::Relaxed);
        let last_ping = self.last_ping_ms.load(Ordering::Relaxed);
        if heard < last_ping {
            // A ping is outstanding.
            if now_ms.saturating_sub(last_ping) >= pong_timeout_ms {
                tracing::info!(connectionId = %self.id, userId = %LogId(self.user.as_str()), "no pong within the timeout; dropping the connection");
                self.close(CloseReason::HeartbeatTimeout);
            }
            return;
        }
        if now_ms.saturating_sub(last_ping) >= ping_interval_ms {
            self.last_ping_ms.store(now_ms, Ordering::Relaxed);
            self.request_ping();
        }
    }

    /// The topics this connection holds, sorted.
    pub fn topics(&self) -> Vec<Topic> {
        let mut topics = self.topics.lock().clone();
        topics.sort();
        topics
    }

    /// Whether it holds `topic`.
    pub fn holds(&self, topic: &Topic) -> bool {
        self.topics.lock().contains(topic)
    }

    /// How many topics it holds.
    pub fn topic_count(&self) -> usize {
        self.topics.lock().len()
    }

    pub(super) fn add_topic(&self, topic: &Topic) -> bool {
        let mut topics = self.topics.lock();
        if topics.contains(topic) {
            return false;
        }
        topics.push(topic.clone());
        true
    }

    pub(super) fn remove_topic(&self, topic: &Topic) -> bool {
        let mut topics = self.topics.lock();
        let Some(at) = topics.iter().position(|t| t == topic) else {
            return false;
        };
        topics.swap_remove(at);
        true
    }

    pub(super) fn take_topics(&self) -> Vec<Topic> {
        std::mem::take(&mut *self.topics.lock())
    }
}

impl ArcWake for ConnectionHandle {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.socket_ready.store(true, Ordering::Release);
        arc_self.socket_waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn handle(frames: usize, bytes: usize) -> ConnectionHandle {
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let limits = QueueLimits { frames, bytes };
        ConnectionHandle::new(ConnectionId::generate(), UserId::new("u"), remote, limits, Metrics::new())
    }

    fn ready(conn: &ConnectionHandle, batch: &mut VecDeque<SharedFrame>) -> Option<WriterWork> {
        conn.next_outbound(batch).now_or_never()
    }

    #[test]
    fn the_writer_takes_every_queued_frame_in_one_batch() {
        let conn = handle(8, 1 << 20);
        let mut batch = VecDeque::new();
        assert_eq!(ready(&conn, &mut batch), None, "nothing queued: the writer waits");
        for text in ["a", "b", "c"] {
            assert!(conn.send(text.into()));
        }
        assert_eq!(ready(&conn, &mut batch), Some(WriterWork { ping: false, closing: false }));
        let texts: Vec<_> = batch.drain(..).map(|f| f.text.to_string()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert_eq!(ready(&conn, &mut batch), None);
    }

    #[test]
    fn overflow_in_frames_or_bytes_closes_as_slow_consumer() {
        let conn = handle(2, 1 << 20);
        assert!(conn.send("1".into()) && conn.send("2".into()));
        assert!(!conn.send("3".into()));
        assert_eq!(conn.close_reason(), CloseReason::SlowConsumer);
        assert!(!conn.send("4".into()), "a closing connection takes nothing more");
        let mut batch = VecDeque::new();
        assert_eq!(ready(&conn, &mut batch), Some(WriterWork { ping: false, closing: true }));
        assert_eq!(batch.len(), 2, "what was queued before the overflow still goes out");

        let conn = handle(100, 4);
        assert!(conn.send("abc".into()));
        assert!(!conn.send("de".into()), "7 bytes > 4");
        assert_eq!(conn.close_reason(), CloseReason::SlowConsumer);
    }

    #[test]
    fn liveness_pings_then_drops_a_silent_client() {
        let conn = handle(8, 1 << 20);
        let t0 = conn.last_ping_ms.load(Ordering::Relaxed);
        let mut batch = VecDeque::new();
        conn.check_liveness(t0 + 50, 0, 100, 200);
        assert_eq!(ready(&conn, &mut batch), None, "no ping before the interval");
        conn.check_liveness(t0 + 100, 0, 100, 200);
        assert_eq!(ready(&conn, &mut batch), Some(WriterWork { ping: true, closing: false }));
        conn.check_liveness(t0 + 250, 0, 100, 200);
        assert!(!conn.is_closing(), "pong timeout not reached yet");
        conn.check_liveness(t0 + 300, 0, 100, 200);
        assert_eq!(conn.close_reason(), CloseReason::HeartbeatTimeout);
    }

    #[test]
    fn liveness_keeps_a_client_that_answers() {
        let conn = handle(8, 1 << 20);
        let t0 = conn.last_ping_ms.load(Ordering::Relaxed);
        conn.check_liveness(t0 + 100, 0, 100, 200);
        conn.last_heard_ms.store(t0 + 110, Ordering::Relaxed);
        conn.check_liveness(t0 + 400, 0, 100, 200);
        assert!(!conn.is_closing());
    }

    #[test]
    fn liveness_closes_on_token_expiry() {
        let conn = handle(8, 1 << 20);
        conn.set_expiry(Some(1_000));
        conn.check_liveness(monotonic_ms(), 999, 100_000, 100_000);
        assert!(!conn.is_closing());
        conn.check_liveness(monotonic_ms(), 1_000, 100_000, 100_000);
        assert_eq!(conn.close_reason(), CloseReason::TokenExpired);
    }

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicU64);

    impl ArcWake for Counter {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_socket_wakes_the_task_through_its_flag_and_deliveries_do_not_raise_it() {
        let conn = Arc::new(handle(8, 1 << 20));
        let task = Arc::new(Counter::default());
        let waker = waker_ref(&task);
        let mut cx = Context::from_waker(&waker);
        let woken = || task.0.load(Ordering::SeqCst);

        assert!(conn.take_socket_ready(&cx), "raised at first: the socket was never polled");
        assert!(!conn.take_socket_ready(&cx));

        // The socket (tokio's I/O driver) wakes the handle: flag up, task woken.
        conn.socket_waker().wake_by_ref();
        assert_eq!(woken(), 1);
        assert!(conn.take_socket_ready(&cx));
        assert!(!conn.take_socket_ready(&cx));

        // A delivery wakes the task through the queue only.
        let mut batch = VecDeque::new();
        assert!(conn.poll_outbound(&mut cx, &mut batch).is_pending());
        assert!(conn.send("a".into()));
        assert_eq!(woken(), 2);
        assert!(!conn.take_socket_ready(&cx), "a delivery must not make the task poll the socket");

        // Closing wakes the task whichever way it waits.
        conn.close(CloseReason::Shutdown);
        assert!(woken() >= 3);
    }

    #[test]
    fn a_wake_up_that_takes_a_fresh_registration_does_not_leave_the_task_deaf() {
        let conn = Arc::new(handle(8, 1 << 20));
        let task = Arc::new(Counter::default());
        let waker = waker_ref(&task);
        let cx = Context::from_waker(&waker);
        let woken = || task.0.load(Ordering::SeqCst);
        assert!(conn.take_socket_ready(&cx));

        // A wake-up on another thread (e.g. a request finished by the outbox writer) is two
        // steps; the task's poll lowers the flag and registers between them.
        conn.socket_ready.store(true, Ordering::Release);
        assert!(conn.take_socket_ready(&cx));
        conn.socket_waker.wake();
        assert_eq!(woken(), 1, "the wake-up took the fresh registration");

        // Polled again for that wake-up, with the flag already down.
        assert!(!conn.take_socket_ready(&cx));
        // The next socket event must still reach the task.
        conn.socket_waker().wake_by_ref();
        assert_eq!(woken(), 2, "the task lost its socket waker");
    }
}

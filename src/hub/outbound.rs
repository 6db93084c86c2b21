//! A connection's bounded outbound queue and its handle in the hub.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::FrameText;
use crate::domain::{ConnectionId, Topic, UserId};
use crate::metrics::Metrics;

/// Why a connection is being closed; decides the close code (see `ws::close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down (1001).
    Shutdown,
    /// Sustained rate-limit abuse (1008).
    PolicyViolation,
    /// A frame beyond the hard size limit (1009).
    MessageTooBig,
    /// The token expired and was not refreshed (4001).
    TokenExpired,
    /// The outbound queue overflowed (4008).
    SlowConsumer,
    /// A backend closed it through the API (1000).
    ClosedByBackend,
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

/// One queued frame.
pub struct OutboundFrame {
    /// The frame text.
    pub text: FrameText,
    /// When the event was published (for the delivery-latency histogram); `None` for replies.
    pub published_at: Option<Instant>,
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
    tx: mpsc::Sender<OutboundFrame>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    cancel: CancellationToken,
    close_reason: OnceLock<CloseReason>,
    topics: Mutex<BTreeSet<Topic>>,
    metrics: Metrics,
}

/// The writer's end of a connection's queue.
pub struct OutboundReceiver {
    rx: mpsc::Receiver<OutboundFrame>,
}

impl OutboundReceiver {
    /// Waits for frames and moves every ready one (up to `limit`) into `batch`; returns 0
    /// when the queue is closed.
    pub async fn recv_batch(&mut self, batch: &mut Vec<OutboundFrame>, limit: usize) -> usize {
        self.rx.recv_many(batch, limit).await
    }

    /// Takes one frame that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<OutboundFrame> {
        self.rx.try_recv().ok()
    }
}

impl ConnectionHandle {
    /// Creates the handle and the receiving end of its queue. `cancel` should be a child
    /// of the server's shutdown token.
    pub fn new(
        id: ConnectionId,
        user: UserId,
        remote: SocketAddr,
        limits: QueueLimits,
        cancel: CancellationToken,
        metrics: Metrics,
    ) -> (Self, OutboundReceiver) {
        let (tx, rx) = mpsc::channel(limits.frames);
        let handle = Self {
            id,
            user,
            remote,
            connected_at: SystemTime::now(),
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: limits.bytes,
            cancel,
            close_reason: OnceLock::new(),
            topics: Mutex::new(BTreeSet::new()),
            metrics,
        };
        (handle, OutboundReceiver { rx })
    }

    /// Queues a frame without waiting. A full queue (frames or bytes) closes the connection
    /// as a slow consumer and returns `false`; so does a connection already closing.
    pub fn send(&self, text: FrameText, published_at: Option<Instant>) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        let len = text.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.max_bytes || self.tx.try_send(OutboundFrame { text, published_at }).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        true
    }

    /// Called by the writer for every frame it takes off the queue.
    pub fn mark_written(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Starts closing the connection for `reason`; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if self.close_reason.set(reason).is_ok() {
            if reason == CloseReason::SlowConsumer {
                self.metrics.slow_consumer_disconnects.increment(1);
                tracing::warn!(connectionId = %self.id, userId = %self.user, "slow consumer: send queue overflowed, closing with 4008");
            }
            self.cancel.cancel();
        }
    }

    /// Why the connection is closing (shutdown when only the server's token fired).
    pub fn close_reason(&self) -> CloseReason {
        self.close_reason.get().copied().unwrap_or(CloseReason::Shutdown)
    }

    /// Resolves when the connection starts closing.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The topics this connection holds.
    pub fn topics(&self) -> Vec<Topic> {
        self.topics.lock().iter().cloned().collect()
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
        self.topics.lock().insert(topic.clone())
    }

    pub(super) fn remove_topic(&self, topic: &Topic) -> bool {
        self.topics.lock().remove(topic)
    }

    pub(super) fn take_topics(&self) -> BTreeSet<Topic> {
        std::mem::take(&mut *self.topics.lock())
    }
}

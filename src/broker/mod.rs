//! The broker: assigns each published event its offset, keeps the topic's history and
//! retained state, and gets the event to every node's subscribers, in order.
//!
//! This module owns the [`Broker`] contract and its implementations (`memory` now; Redis
//! later). It must never know about connections or protocols: it hands encoded frames to
//! a [`Fanout`] (the hub's topic registry), in offset order per topic.

mod memory;
mod policy;
pub mod redis;

use std::time::Instant;

use async_trait::async_trait;

pub use memory::MemoryBroker;
pub use policy::{HistoryLimits, HistoryPolicy};

use crate::codec::FrameText;
use crate::domain::{Epoch, Event, Presence, PresenceMember, StreamPosition, Topic};

/// A broker failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached (e.g. Redis is down).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// One event as history keeps it: its offset and its delivered frame.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's offset in its topic.
    pub offset: u64,
    /// The frame subscribers received (`topic`, `offset`, `timestamp` included).
    pub frame: FrameText,
}

/// Where a read of a topic's history starts.
#[derive(Debug, Clone, Default)]
pub enum ReadFrom {
    /// Read no events (position and retained state only).
    #[default]
    Nothing,
    /// Events after `offset`. With an epoch, the offset belongs to that epoch: if the
    /// topic's epoch differs, nothing is recoverable. Without one, the offset is taken in
    /// the topic's current epoch.
    After {
        /// The last offset the reader has (0: none).
        offset: u64,
        /// The epoch of that offset, when the reader knows it.
        epoch: Option<Epoch>,
    },
}

/// What to read from a topic, atomically.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// Which events to return.
    pub from: ReadFrom,
    /// At most this many events (the oldest first).
    pub limit: usize,
    /// Return the events still in history even when some after `from` were lost
    /// (`recovered: false`). A resuming subscriber says no: it must not see a gap.
    pub partial: bool,
    /// Also return the retained state.
    pub retained: bool,
}

/// The answer to a [`ReadRequest`]: everything in it was true at one instant.
#[derive(Debug, Clone)]
pub struct TopicRead {
    /// The topic's last assigned position.
    pub position: StreamPosition,
    /// Events after the requested offset, oldest first.
    pub events: Vec<StoredEvent>,
    /// Every event after the requested offset is in `events` (or beyond `limit`): same
    /// epoch, nothing evicted, no future offset. Always false for [`ReadFrom::Nothing`].
    pub recovered: bool,
    /// The retained state, when asked for and present: the delivered frame.
    pub retained: Option<FrameText>,
}

impl TopicRead {
    /// The retained state as a JSON value (`null` when there is none), for answers that
    /// embed it (`status`, `GET /api/topics/{topic}`).
    pub fn retained_json(&self) -> serde_json::Value {
        // The frame is the broker's own encoding of a JSON object, so this parse succeeds.
        self.retained.as_ref().and_then(|f| serde_json::from_str(f.as_str()).ok()).unwrap_or_default()
    }
}

/// Publishes events and reads topic streams.
///
/// Contract: `publish` assigns the next offset of the topic atomically with appending the
/// event to history (and storing it as retained state when asked), and hands the encoded
/// frame to the fan-out of every node, in offset order per topic; it returns after the
/// event has its offset and is in history.
///
/// Local interest: the hub calls [`Broker::watch`] when a topic gets its first local
/// subscriber and [`Broker::unwatch`] when it loses its last one, so a broker that carries
/// events between nodes needs to receive only the topics this node holds. Calls for one
/// topic alternate (watch, unwatch, watch, …) in call order.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// What `/ready` and `/metrics` show about the broker.
    fn status(&self) -> BrokerStatus {
        BrokerStatus::default()
    }

    /// Publishes `event` to `topic`; with `retain`, it also becomes the topic's state.
    async fn publish(&self, topic: &Topic, event: Event, retain: bool) -> Result<StreamPosition, BrokerError>;

    /// Publishes events in order (as many [`Broker::publish`] calls would, one after
    /// the other), each with its own result; a broker that can sends them in one round
    /// trip. The default publishes one by one.
    async fn publish_many(&self, items: Vec<(Topic, Event, bool)>) -> Vec<Result<StreamPosition, BrokerError>> {
        let mut results = Vec::with_capacity(items.len());
        for (topic, event, retain) in items {
            results.push(self.publish(&topic, event, retain).await);
        }
        results
    }

    /// Reads the topic's position, history and retained state in one atomic step.
    async fn read(&self, topic: &Topic, request: ReadRequest) -> Result<TopicRead, BrokerError>;

    /// The topic's last assigned position (offset 0 when it has no events yet).
    async fn position(&self, topic: &Topic) -> Result<StreamPosition, BrokerError> {
        Ok(self.read(topic, ReadRequest::default()).await?.position)
    }

    /// Checks the broker is reachable (for `/ready`).
    async fn ping(&self) -> Result<(), BrokerError>;

    /// `topic` got its first local subscriber: from the moment this returns `Ok`, every
    /// event published to it (on any node) reaches this node's [`Fanout`]. The hub awaits
    /// it after the subscriber joined the topic's entry and *before* it reads history, so
    /// an event is always either in that read or delivered afterwards (e.g. a Redis
    /// broker's SUBSCRIBE must be confirmed before this returns). On `Err` the subscribe
    /// fails; the next subscriber of the topic calls `watch` again. A watch whose caller
    /// was dropped may also be repeated, so it must be idempotent. The default suits a
    /// broker whose every publish reaches the local fan-out anyway.
    async fn watch(&self, _topic: &Topic) -> Result<(), BrokerError> {
        Ok(())
    }

    /// A local connection's subscribe to `topic` took effect. Called under the hub's
    /// topic entry lock, in order with [`Broker::left`]: must never block (a broker that
    /// keeps presence for a cluster queues the write). The default does nothing: the
    /// hub's own registry is the presence of a single node.
    fn joined(&self, _topic: &Topic, _member: &PresenceMember<'_>) {}

    /// A local connection left `topic` (unsubscribed or closed). Same rules as
    /// [`Broker::joined`].
    fn left(&self, _topic: &Topic, _member: &PresenceMember<'_>) {}

    /// Who is subscribed to `topic` on every node; `None` when the broker keeps no
    /// presence (a single node: the hub answers from its registry).
    async fn presence(&self, _topic: &Topic) -> Result<Option<Presence>, BrokerError> {
        Ok(None)
    }

    /// `topic` lost its last local subscriber (only ever after a successful
    /// [`Broker::watch`]). Called under the hub's registry shard lock so that it cannot be
    /// reordered with the next `watch` of the topic: it must never block, await or call
    /// back into the [`Fanout`]; a broker with remote work queues it (e.g. an UNSUBSCRIBE
    /// for its subscriber task). The default does nothing.
    fn unwatch(&self, _topic: &Topic) {}
}

/// The broker as `/ready` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BrokerStatus {
    /// `memory`, `redis` or `redis-cluster`.
    pub kind: &'static str,
    /// Whether the last check reached it.
    pub reachable: bool,
    /// The last check's round trip, in milliseconds (remote brokers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<f64>,
    /// Topics this node receives from the broker (remote brokers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<usize>,
    /// Gaps in a topic's sequence filled from history, since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaps_filled: Option<u64>,
    /// Topics whose subscribers had to be closed with `1012`, since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resyncs: Option<u64>,
    /// Restarts of the pub/sub connection (lost or silent), since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u64>,
}

/// One published event on its way to local subscribers.
pub struct Delivery<'a> {
    /// The topic it was published to.
    pub topic: &'a Topic,
    /// Its place in the topic.
    pub position: &'a StreamPosition,
    /// Its encoded frame, shared by every subscriber.
    pub frame: &'a FrameText,
    /// The publisher's event, for subscription filters (never re-parsed per subscriber).
    pub event: &'a Event,
    /// When the publish reached the broker (for the delivery latency metric).
    pub published_at: Instant,
}

/// Receives published events for local delivery; implemented by the hub's topic registry.
/// Called in offset order per topic and must never block.
///
/// The fan-out remembers the last offset it delivered per topic and drops an event whose
/// offset is not above it (a node's echo of its own publish, a late or repeated message),
/// so a broker may hand an event over more than once but never reorders what reaches a
/// subscriber. Offsets are compared within one epoch: a broker that sees a watched topic's
/// epoch change must not rely on the fan-out to notice.
pub trait Fanout: Send + Sync + 'static {
    /// Delivers one event to the local subscribers of its topic.
    fn deliver(&self, delivery: &Delivery<'_>);

    /// Whether any local connection holds or is joining `topic`: a broker must not forget
    /// such a topic's offsets (they would restart under the subscriber's feet).
    fn is_watched(&self, topic: &Topic) -> bool;

    /// The broker lost continuity on `topic` (its epoch changed, or a gap can no longer be
    /// filled): every local subscriber and joiner of it is closed with `1012` (they
    /// reconnect and resume, learning what was lost), and the last delivered offset is
    /// forgotten so the topic's new offsets are delivered to whoever subscribes next.
    /// Must never block.
    fn resync(&self, topic: &Topic);

    /// Sends a frame that is not an event (another node's `join`/`leave`) to every local
    /// subscriber of `topic`, as it is: no offset, no history. Must never block.
    fn broadcast(&self, topic: &Topic, frame: &FrameText);
}

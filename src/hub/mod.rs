//! The hub: who is connected, who holds which topic, and fan-out of published events.
//!
//! It owns the topic registry (sharded, one lock per topic, never a global lock on the
//! fan-out path), the connection registry with admission limits, and each connection's
//! bounded outbound queue. It must never await a client: delivery is a push into the
//! queue, and a full queue cuts that connection (4008) instead of slowing anyone else.

mod connections;
mod directory;
mod outbound;
mod topics;

use std::sync::Arc;

pub use connections::{Admission, AdmissionError, ConnectionRegistry};
pub use directory::{ConnectionDirectory, ConnectionFilter, ConnectionInfo, DirectoryError, LocalDirectory};
pub use outbound::{
    BinaryToSocketIo, CloseReason, ConnectionHandle, OutboundFrame, QueueLimits, RawFrame, SharedFrame, SocketIoWire,
    Wire, WriterWork, monotonic_ms,
};
pub use topics::{Presence, SubscribeError, SubscribeOptions, SubscribeReply, Subscribed, TopicRegistry};

use crate::broker::{Broker, BrokerError, ReadRequest, TopicRead};
use crate::domain::{Event, StreamPosition, Topic};
use crate::metrics::Metrics;

/// The hub: publish into topics, subscribe connections to them.
#[derive(Clone)]
pub struct Hub {
    /// Topic subscriptions and local fan-out.
    pub topics: Arc<TopicRegistry>,
    /// Open connections.
    pub connections: Arc<ConnectionRegistry>,
    broker: Arc<dyn Broker>,
    metrics: Metrics,
}

impl Hub {
    /// Assembles the hub around a broker that delivers into `topics`.
    pub fn new(
        topics: Arc<TopicRegistry>,
        connections: Arc<ConnectionRegistry>,
        broker: Arc<dyn Broker>,
        metrics: Metrics,
    ) -> Self {
        Self { topics, connections, broker, metrics }
    }

    /// Publishes `event` to `topic` (with `retain`, also as the topic's state); returns once
    /// it has its offset and is in history. Delivery to local subscribers has happened or is
    /// under way.
    pub async fn publish(&self, topic: &Topic, event: Event, retain: bool) -> Result<StreamPosition, BrokerError> {
        let position = self.broker.publish(topic, event, retain).await?;
        self.metrics.events_published.increment(1);
        Ok(position)
    }

    /// Publishes events in order, each with its own result (one round trip to Redis for
    /// the lot where the broker allows).
    pub async fn publish_many(&self, items: Vec<(Topic, Event, bool)>) -> Vec<Result<StreamPosition, BrokerError>> {
        let results = self.broker.publish_many(items).await;
        let published = results.iter().filter(|r| r.is_ok()).count();
        self.metrics.events_published.increment(published as u64);
        results
    }

    /// The topic's last assigned position.
    pub async fn position(&self, topic: &Topic) -> Result<StreamPosition, BrokerError> {
        self.broker.position(topic).await
    }

    /// Reads the topic's position, history and retained state in one atomic step.
    pub async fn read(&self, topic: &Topic, request: ReadRequest) -> Result<TopicRead, BrokerError> {
        self.broker.read(topic, request).await
    }

    /// Subscribes `conn` to `topic`. `reply` builds the frame that must precede the topic's
    /// events on this connection (e.g. `subscribed`); it is queued atomically with the
    /// switch to live delivery, followed by the replay after `since` (or the retained
    /// state when nothing was recovered), then live events. See `topics` for why there is
    /// no gap and no duplicate at the seam.
    pub async fn subscribe(
        &self,
        conn: &Arc<ConnectionHandle>,
        topic: &Topic,
        options: SubscribeOptions,
        reply: Option<SubscribeReply<'_>>,
    ) -> Result<Subscribed, SubscribeError> {
        self.topics.subscribe(self.broker.as_ref(), conn, topic, options, reply).await
    }

    /// Removes `conn` from `topic`; returns whether it was subscribed.
    pub fn unsubscribe(&self, conn: &Arc<ConnectionHandle>, topic: &Topic) -> bool {
        self.topics.unsubscribe(self.broker.as_ref(), conn, topic)
    }

    /// Removes `conn` from every topic it holds (on disconnect).
    pub fn detach(&self, conn: &Arc<ConnectionHandle>) {
        self.topics.detach(self.broker.as_ref(), conn);
    }

    /// Who is subscribed to `topic` (SPEC §9.1). The memory broker's cluster is this node;
    /// a clustered broker will answer for every node, hence the `Result`.
    pub async fn presence(&self, topic: &Topic) -> Result<Presence, BrokerError> {
        match self.broker.presence(topic).await? {
            Some(presence) => Ok(presence),
            None => Ok(self.topics.presence(topic)),
        }
    }

    /// Whether the broker is reachable (for `/ready`).
    pub async fn broker_ready(&self) -> bool {
        self.broker.ping().await.is_ok()
    }

    /// The broker as `/ready` and `/metrics` show it.
    pub fn broker_status(&self) -> crate::broker::BrokerStatus {
        self.broker.status()
    }
}

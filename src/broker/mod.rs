//! The broker: assigns each published event its offset and gets it to every node's
//! subscribers, in order.
//!
//! This module owns the [`Broker`] contract and its implementations (`memory` now; Redis
//! later). It must never know about connections or protocols: it hands encoded frames to
//! a [`Fanout`] (the hub's topic registry), in offset order per topic.

mod memory;

use std::time::Instant;

use async_trait::async_trait;

pub use memory::MemoryBroker;

use crate::domain::{Event, StreamPosition, Topic};
use crate::hub::FrameText;

/// A broker failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached (e.g. Redis is down).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Publishes events and reports topic positions.
///
/// Contract: `publish` assigns the next offset of the topic atomically with storing the
/// event (history, when it lands) and hands the encoded frame to the fan-out of every
/// node, in offset order per topic; it returns after the offset is assigned.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes `event` to `topic`.
    async fn publish(&self, topic: &Topic, event: Event) -> Result<StreamPosition, BrokerError>;

    /// The topic's last assigned position (offset 0 when it has no events yet).
    async fn position(&self, topic: &Topic) -> Result<StreamPosition, BrokerError>;

    /// Checks the broker is reachable (for `/ready`).
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Receives published events for local delivery; implemented by the hub's topic registry.
/// Called in offset order per topic and must never block.
pub trait Fanout: Send + Sync + 'static {
    /// Delivers one encoded event frame to the local subscribers of `topic`.
    fn deliver(&self, topic: &Topic, position: &StreamPosition, frame: &FrameText, published_at: Instant);
}

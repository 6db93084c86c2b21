//! Routing client messages to backends (SPEC §7): routes, sinks, retries and the outbox.
//!
//! A client message whose `action` is not built in is matched against the configured
//! routes ([`router`]); the matching route names a [`Sink`]. The [`dispatch`] layer then
//! makes the message durable before the client hears `accepted`: either the sink itself
//! confirmed it (inline mode, bounded by a deadline) or the on-disk [`outbox`] holds it
//! (when `[storage] data_dir` is set) and drains it to the sink in order.
//!
//! This module owns the message's journey from "parsed client frame" to "the backend has
//! it". It must never know about WebSocket frames or the hub: replies to clients go
//! through the [`ClientReplies`] seam, and only the composition root builds concrete
//! sinks from configuration. Retry decisions are made in one place ([`retry`]) for every
//! sink; a sink only classifies its failures ([`SinkError`]).

pub mod config;
pub mod dispatch;
mod health;
pub mod http;
mod message;
pub mod outbox;
pub mod redis_stream;
pub mod retry;
pub mod router;
pub mod sqs;

pub use health::{Health, SinkHandle};
pub use message::{MessageId, RoutedMessage, rfc3339_millis};

use bytes::Bytes;

/// A sink that could not be built from its (valid) configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build sink {name}: {message}")]
pub struct SinkBuildError {
    /// The sink's name.
    pub name: String,
    /// Why.
    pub message: String,
}

/// What a sink answered for a delivered message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    /// A JSON body the backend answered with, relayed to the client as one frame (http
    /// sinks only; SPEC §7).
    pub reply: Option<Bytes>,
}

/// Why a sink did not take a message. The variant decides what the retry policy does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The backend could not be reached or asked us to back off (connection refused,
    /// DNS, timeout, throttling, 502/503/504). An outage: retried with backoff, and in
    /// the outbox it does not use up the message's attempts.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backend was reached and failed to take the message (e.g. HTTP 500). Retried;
    /// each failure uses one of the message's attempts.
    #[error("failed: {0}")]
    Failed(String),
    /// The backend refused this message (e.g. HTTP 400, an invalid SQS parameter):
    /// retrying cannot help. Dead-lettered at once from the outbox; reported to the
    /// client inline.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// The result of [`Sink::send_batch`]: the first `delivered.len()` messages of the batch
/// were delivered, in order; `error`, if any, is why the next one was not (messages
/// after it were not attempted, or their outcome is unknown and they will be retried).
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One entry per delivered message, in batch order.
    pub delivered: Vec<Delivered>,
    /// Why the message at index `delivered.len()` was not delivered.
    pub error: Option<SinkError>,
}

/// A backend that takes routed messages: an SQS queue, an HTTP webhook, a Redis stream.
///
/// Implementations are built by the composition root from their `config.rs`; they must
/// not retry (the shared [`retry::RetryPolicy`] does), must classify every failure into
/// a [`SinkError`], and must bound every call by their configured timeout.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Delivers one message; returns once the backend has confirmed it.
    async fn send(&self, message: &RoutedMessage) -> Result<Delivered, SinkError>;

    /// Delivers messages in order, stopping at the first failure. Sinks with a batch
    /// API (SQS `SendMessageBatch`, a Redis pipeline) override this.
    async fn send_batch(&self, messages: &[RoutedMessage]) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for message in messages {
            match self.send(message).await {
                Ok(delivered) => outcome.delivered.push(delivered),
                Err(error) => {
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        outcome
    }

    /// Checks that the backend is reachable (SQS `GetQueueAttributes`, an HTTP request to
    /// the webhook's origin, Redis `PING`), without sending a message.
    async fn check(&self) -> Result<(), SinkError>;
}

/// How the sinks layer talks back to clients, without knowing WebSocket frames. The ws
/// layer implements it over the connection registry.
pub trait ClientReplies: Send + Sync + 'static {
    /// Tells the message's connection (if it is still connected to this node) that the
    /// message is durably held: `{"type":"accepted","messageId",…}`. Called exactly
    /// once per accepted message, before any relayed reply for it.
    fn accepted(&self, message: &RoutedMessage);

    /// Relays a sink's reply body to the message's connection as one frame, if it is
    /// still connected to this node (after a restart it is not, and the reply is dropped
    /// with a debug log: the message itself was delivered).
    fn relay(&self, message: &RoutedMessage, body: Bytes);
}

//! Making a routed message durable before the client hears `accepted` (SPEC §7).
//!
//! Two modes, chosen by the composition root from `[storage] data_dir`:
//! - **outbox**: the message is appended to the on-disk outbox (group-committed, fsynced)
//!   and `accepted` follows at once; the outbox drains it to the sink in order.
//! - **inline**: the message is sent to the sink now, retried with the shared policy,
//!   and `accepted` follows the sink's confirmation; if none comes within
//!   `routing.deadline` the client gets `SINK_UNAVAILABLE` (it still holds the message
//!   and may retry; the `messageId` lets the backend de-duplicate).
//!
//! Either way `accepted` reaches the client through [`ClientReplies`] before any reply
//! the sink relays. This module never retries on its own terms: it asks the
//! [`RetryPolicy`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::outbox::Outbox;
use super::retry::{Next, RetryPolicy};
use super::router::{NoRoute, Router};
use super::{ClientReplies, RoutedMessage, SinkHandle};

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No route has the action (`UNKNOWN_ACTION`).
    #[error("unknown action {0:?}: no route is configured for it")]
    UnknownAction(String),
    /// Routes have the action but none matched the message's fields (`UNKNOWN_ACTION`).
    #[error("no route for action {0:?} matches this message's fields")]
    NoMatch(String),
    /// The sink did not take it in time, refused it, or the outbox is full
    /// (`SINK_UNAVAILABLE`).
    #[error("sink {sink} unavailable ({reason}); the message was not accepted: send it again later")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// What happened.
        reason: String,
    },
}

/// How messages are made durable.
enum Mode {
    Inline { deadline: Duration, policy: RetryPolicy },
    Outbox(Outbox),
}

/// Routes, sinks and the durability mode: the one entry point for routed messages.
pub struct Dispatcher {
    router: Router,
    sinks: BTreeMap<String, Arc<SinkHandle>>,
    mode: Mode,
    replies: Arc<dyn ClientReplies>,
}

impl Dispatcher {
    /// Inline delivery: the sink's confirmation within `deadline` makes a message durable.
    pub fn inline(
        router: Router,
        sinks: Vec<Arc<SinkHandle>>,
        deadline: Duration,
        policy: RetryPolicy,
        replies: Arc<dyn ClientReplies>,
    ) -> Self {
        Self { router, sinks: by_name(sinks), mode: Mode::Inline { deadline, policy }, replies }
    }

    /// Outbox delivery: a message is durable once the outbox holds it.
    pub fn with_outbox(
        router: Router,
        sinks: Vec<Arc<SinkHandle>>,
        outbox: Outbox,
        replies: Arc<dyn ClientReplies>,
    ) -> Self {
        Self { router, sinks: by_name(sinks), mode: Mode::Outbox(outbox), replies }
    }

    /// The configured sinks (for health checks and `/ready`).
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<SinkHandle>> {
        self.sinks.values()
    }

    /// The outbox, when messages go through one.
    pub fn outbox(&self) -> Option<&Outbox> {
        match &self.mode {
            Mode::Outbox(outbox) => Some(outbox),
            Mode::Inline { .. } => None,
        }
    }

    /// The sink name for a message, or why there is none.
    pub fn route(&self, action: &str, message: &Map<String, Value>) -> Result<&str, DispatchError> {
        self.router.route(action, message).map_err(|why| match why {
            NoRoute::UnknownAction => DispatchError::UnknownAction(action.to_owned()),
            NoRoute::NoMatch => DispatchError::NoMatch(action.to_owned()),
        })
    }

    /// Makes `message` durable (its `sink` set by [`Self::route`]); on success the client
    /// has been sent `accepted`.
    pub async fn submit(&self, message: RoutedMessage) -> Result<(), DispatchError> {
        let Some(handle) = self.sinks.get(&message.sink) else {
            // The router only names configured sinks; this is a wiring error, reported
            // rather than dropped.
            return Err(unavailable(&message.sink, "the route names a sink that is not running".into()));
        };
        let result = match &self.mode {
            Mode::Outbox(outbox) => match outbox.append(message).await {
                Ok(()) => {
                    handle.metrics.queued.increment(1);
                    Ok(())
                }
                Err(e) => Err(unavailable(&handle.name, format!("the outbox did not take the message: {e}"))),
            },
            Mode::Inline { deadline, policy } => {
                self.send_inline(handle, &message, Instant::now() + *deadline, policy).await
            }
        };
        if result.is_err() {
            handle.metrics.unavailable.increment(1);
        }
        result
    }

    async fn send_inline(
        &self,
        handle: &SinkHandle,
        message: &RoutedMessage,
        deadline: Instant,
        policy: &RetryPolicy,
    ) -> Result<(), DispatchError> {
        let mut attempts = 0;
        loop {
            let Ok(result) = tokio::time::timeout_at(deadline, handle.sink.send(message)).await else {
                return Err(unavailable(&handle.name, "no confirmation within routing.deadline".into()));
            };
            handle.observe(&result);
            let error = match result {
                Ok(delivered) => {
                    handle.metrics.delivered.increment(1);
                    self.replies.accepted(message);
                    if let Some(reply) = delivered.reply {
                        self.replies.relay(message, reply);
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            attempts += 1;
            match policy.next(&error, attempts, attempts) {
                Next::RetryAfter(pause) if Instant::now() + pause < deadline => {
                    handle.metrics.retries.increment(1);
                    tracing::debug!(sink = %handle.name, messageId = %message.message_id, attempts, error = %error, "retrying");
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(unavailable(&handle.name, error.to_string())),
            }
        }
    }
}

fn by_name(sinks: Vec<Arc<SinkHandle>>) -> BTreeMap<String, Arc<SinkHandle>> {
    sinks.into_iter().map(|h| (h.name.clone(), h)).collect()
}

fn unavailable(sink: &str, reason: String) -> DispatchError {
    DispatchError::Unavailable { sink: sink.to_owned(), reason }
}

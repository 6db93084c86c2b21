//! The sinks layer's way back to clients: `accepted` frames and relayed webhook replies,
//! delivered through the connection registry by connection id.
//!
//! Owns only the frame shapes of those two replies; it must never block (it runs on the
//! outbox's writer thread and on drainer tasks), so it only queues frames.

use std::sync::Arc;

use bytes::Bytes;

use super::protocol::frames;
use crate::codec::FrameText;
use crate::domain::ConnectionId;
use crate::hub::ConnectionRegistry;
use crate::sinks::{ClientReplies, RoutedMessage};

/// [`ClientReplies`] over this node's connections.
pub struct ConnectionReplies {
    connections: Arc<ConnectionRegistry>,
}

impl ConnectionReplies {
    /// Replies through `connections`.
    pub fn new(connections: Arc<ConnectionRegistry>) -> Self {
        Self { connections }
    }

    fn send(&self, message: &RoutedMessage, text: FrameText, what: &str) {
        match self.connections.get(&ConnectionId::from_external(&message.connection_id)) {
            Some(conn) => {
                conn.send(text);
            }
            None => tracing::debug!(
                connectionId = %message.connection_id,
                messageId = %message.message_id,
                "connection gone; {what} not delivered"
            ),
        }
    }
}

impl ClientReplies for ConnectionReplies {
    fn accepted(&self, message: &RoutedMessage) {
        let text = frames::accepted(message.message_id.as_str(), message.request_id.as_deref());
        self.send(message, text.into(), "accepted");
    }

    fn relay(&self, message: &RoutedMessage, body: Bytes) {
        match FrameText::try_from(body) {
            Ok(text) => self.send(message, text, "relayed reply"),
            Err(_) => tracing::warn!(messageId = %message.message_id, "a sink reply is not UTF-8; not relayed"),
        }
    }
}

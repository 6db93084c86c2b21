//! The sinks layer's way back to clients: `accepted` frames and relayed webhook replies,
//! delivered through the connection directory by connection id.
//!
//! Owns only the frame shapes of those two replies; it must never block (it runs on the
//! outbox's writer thread and on drainer tasks), so it only queues frames.

use std::sync::Arc;

use bytes::Bytes;

use super::protocol::frames;
use crate::codec::FrameText;
use crate::domain::ConnectionId;
use crate::hub::ConnectionDirectory;
use crate::sinks::{ClientReplies, RoutedMessage};

/// [`ClientReplies`] through the connection directory.
pub struct ConnectionReplies {
    directory: Arc<dyn ConnectionDirectory>,
}

impl ConnectionReplies {
    /// Replies through `directory`.
    pub fn new(directory: Arc<dyn ConnectionDirectory>) -> Self {
        Self { directory }
    }

    fn send(&self, message: &RoutedMessage, text: FrameText, what: &str) {
        // `send_now`: this runs on the outbox's writer thread, which must not await, and it
        // keeps the order of `accepted` before any relayed reply.
        match self.directory.send_now(&ConnectionId::from_external(&message.connection_id), text) {
            // `false`: the queue was full and the connection is being closed (4008, logged there).
            Ok(_) => {}
            Err(error) => tracing::debug!(
                connectionId = %message.connection_id,
                messageId = %message.message_id,
                %error,
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

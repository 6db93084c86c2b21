//! Replies to one client's request, before any protocol encodes them.
//!
//! A [`Reply`] is what the session answers (`subscribed`, `error`, …) as data; each
//! protocol has one encoder for it: [`Reply::native`] gives the native JSON frame (SPEC
//! §3), and `codec::socketio::reply` the Socket.IO ack (or emit). The connection picks the
//! encoder for its wire, once per reply. This module owns the replies' shapes and must
//! never know about connections or sockets.

use serde_json::{Map, Value, json};

use crate::domain::{ErrorCode, Presence, StreamPosition, Topic, now_rfc3339};

/// A reply, protocol-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The first frame on a native connection.
    Connected {
        /// The connection id.
        connection_id: String,
        /// The authenticated user.
        user_id: String,
    },
    /// A subscription took effect.
    Subscribed {
        /// The topic.
        topic: Topic,
        /// Its position when the subscription took effect.
        position: StreamPosition,
        /// Every event after `since` was replayed.
        recovered: bool,
    },
    /// A subscription ended.
    Unsubscribed {
        /// The topic.
        topic: Topic,
    },
    /// A client's publish got its offset.
    Published {
        /// The topic.
        topic: Topic,
        /// The event's offset.
        offset: u64,
    },
    /// A routed message is durably held (SPEC §7).
    Accepted {
        /// The message's id.
        message_id: String,
    },
    /// The topic's retained state (a delivered event, or null) and position.
    Status {
        /// The topic.
        topic: Topic,
        /// The retained state.
        state: Value,
        /// Its position.
        position: StreamPosition,
    },
    /// Who is subscribed to a topic.
    Presence {
        /// The topic.
        topic: Topic,
        /// The users and the connection count.
        presence: Presence,
    },
    /// The answer to `ping`.
    Pong,
    /// The topics the connection holds.
    Subscriptions {
        /// Sorted.
        topics: Vec<Topic>,
    },
    /// The token was replaced.
    Refreshed {
        /// The new expiry, RFC 3339.
        expires_at: String,
    },
    /// The request failed.
    Error {
        /// The SPEC code.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
}

impl Reply {
    /// The reply's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connected { .. } => "connected",
            Self::Subscribed { .. } => "subscribed",
            Self::Unsubscribed { .. } => "unsubscribed",
            Self::Published { .. } => "published",
            Self::Accepted { .. } => "accepted",
            Self::Status { .. } => "status",
            Self::Presence { .. } => "presence",
            Self::Pong => "pong",
            Self::Subscriptions { .. } => "subscriptions",
            Self::Refreshed { .. } => "refreshed",
            Self::Error { .. } => "error",
        }
    }

    /// The reply as one JSON object (with `type`, without `requestId`).
    pub fn object(&self) -> Map<String, Value> {
        let fields = match self {
            Self::Connected { connection_id, user_id } => {
                json!({"connectionId": connection_id, "userId": user_id, "timestamp": now_rfc3339()})
            }
            Self::Subscribed { topic, position, recovered } => {
                json!({"topic": topic, "offset": position.offset, "epoch": position.epoch.as_str(), "recovered": recovered})
            }
            Self::Unsubscribed { topic } => json!({"topic": topic}),
            Self::Published { topic, offset } => json!({"topic": topic, "offset": offset}),
            Self::Accepted { message_id } => json!({"messageId": message_id}),
            Self::Status { topic, state, position } => {
                json!({"topic": topic, "state": state, "offset": position.offset, "epoch": position.epoch.as_str()})
            }
            Self::Presence { topic, presence } => {
                json!({"topic": topic, "users": presence.users, "connections": presence.connections})
            }
            Self::Pong => json!({}),
            Self::Subscriptions { topics } => json!({"topics": topics}),
            Self::Refreshed { expires_at } => json!({"expiresAt": expires_at}),
            Self::Error { code, message } => json!({"code": code.as_str(), "message": message}),
        };
        let mut object = Map::new();
        object.insert("type".into(), Value::from(self.kind()));
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
        object
    }

    /// The native frame: the object, with `requestId` when the request had one.
    pub fn native(&self, request_id: Option<&str>) -> String {
        let mut object = self.object();
        if let Some(id) = request_id {
            object.insert("requestId".into(), Value::from(id));
        }
        Value::Object(object).to_string()
    }
}

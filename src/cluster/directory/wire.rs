//! What the cluster directory stores in Redis and sends between nodes: the key names, one
//! connection's entry, and the messages of the request/reply protocol.
//!
//! Owns these formats only; it must never do I/O.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::domain::{ConnectionId, Topic, UserId};
use crate::hub::{CloseReason, ConnectionHandle, ConnectionInfo};

/// The set of nodes that registered connections: a sorted set, node id → the Unix time
/// (ms) of its last heartbeat. Its own prefix (`sbd`), so no topic key can equal it; one
/// key, so any hash tag works.
pub const NODES_KEY: &str = "sbd:{nodes}";

/// `sbd:{<node>}:conns`: the hash of one node's open connections, connection id → JSON
/// [`Entry`]. Tagged with the node id: the same slot as the node's channel (`sbn:{<node>}`).
pub fn node_key(node: &str) -> String {
    format!("sbd:{{{node}}}:conns")
}

/// `sbd:{<node>}:rebuild`: where a node writes its whole hash before renaming it over
/// [`node_key`] (same hash tag, so `RENAME` works on Redis Cluster).
pub fn rebuild_key(node: &str) -> String {
    format!("sbd:{{{node}}}:rebuild")
}

/// One open connection as registered in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The node that holds it.
    pub node: String,
    /// The authenticated user.
    pub user: String,
    /// The topics it holds, sorted.
    pub topics: Vec<String>,
    /// When it connected, in Unix nanoseconds.
    pub connected_at: u64,
    /// The client's address.
    pub remote: String,
    /// `native` or `socketio` (absent in entries of nodes older than Socket.IO: native).
    #[serde(default = "native")]
    pub protocol: String,
    /// The upgrade request's `User-Agent` (absent in entries of older nodes: empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// When the client last sent anything, in Unix nanoseconds: only in the answer to a
    /// `Get` (registrations would churn with it); absent means `connected_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<u64>,
}

fn native() -> String {
    "native".to_owned()
}

impl Entry {
    /// The entry of a connection held by `node`.
    pub fn of_handle(node: &str, conn: &ConnectionHandle) -> Self {
        let mut entry =
            Self::new(node, &conn.user, &conn.topics(), conn.connected_at, conn.remote, conn.wire().protocol());
        conn.user_agent().clone_into(&mut entry.user_agent);
        entry
    }

    /// The entry of a connection described by the local directory, with when it was last
    /// active (the answer to another node's `Get`).
    pub fn of_info(node: &str, info: &ConnectionInfo) -> Self {
        let mut entry = Self::new(node, &info.user, &info.topics, info.connected_at, info.remote, &info.protocol);
        info.user_agent.clone_into(&mut entry.user_agent);
        entry.last_active_at = Some(unix_nanos(info.last_active_at));
        entry
    }

    fn new(
        node: &str,
        user: &UserId,
        topics: &[Topic],
        connected_at: SystemTime,
        remote: SocketAddr,
        protocol: &str,
    ) -> Self {
        Self {
            node: node.to_owned(),
            user: user.as_str().to_owned(),
            topics: topics.iter().map(|t| t.as_str().to_owned()).collect(),
            connected_at: unix_nanos(connected_at),
            remote: remote.to_string(),
            protocol: protocol.to_owned(),
            user_agent: String::new(),
            last_active_at: None,
        }
    }

    /// The connection as the directory tells it; `None` when the entry is not one this
    /// code wrote (an unparsable address).
    pub fn into_info(self, id: ConnectionId) -> Option<ConnectionInfo> {
        let remote = self.remote.parse().ok()?;
        let mut topics: Vec<Topic> = self.topics.iter().filter_map(|t| Topic::parse(t).ok()).collect();
        topics.sort();
        let connected_at = UNIX_EPOCH + Duration::from_nanos(self.connected_at);
        Some(ConnectionInfo {
            id,
            user: UserId::new(&self.user),
            topics,
            connected_at,
            remote,
            protocol: self.protocol,
            user_agent: self.user_agent,
            last_active_at: self.last_active_at.map_or(connected_at, |n| UNIX_EPOCH + Duration::from_nanos(n)),
            node: Some(self.node),
        })
    }
}

/// `at` in Unix nanoseconds (0 before the epoch, saturating far after it).
fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What changes a connection's entry while it is open (its topics), hashed: the
/// registration compares this instead of encoding every entry at every scan.
pub fn fingerprint(conn: &ConnectionHandle) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    conn.topics().hash(&mut hasher);
    hasher.finish()
}

/// A message on a node's channel from the directory of another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "dir", rename_all = "snake_case")]
pub enum Message {
    /// Do `op` on connection `conn`, which the receiver holds; answer `from` with `id`.
    Request {
        /// The request id, unique on the requesting node.
        id: u64,
        /// The requesting node.
        from: String,
        /// The connection id.
        conn: String,
        /// What to do.
        op: Op,
    },
    /// The answer to request `id`.
    Reply {
        /// The request id.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
    /// Queue `frame` to connection `conn` (best effort, no answer).
    Push {
        /// The connection id.
        conn: String,
        /// The frame text.
        frame: String,
    },
}

/// An operation on a connection held by another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Describe it.
    Get,
    /// Queue a frame to it.
    Send {
        /// The frame text.
        frame: String,
    },
    /// Queue a backend's raw frame to it, as it is.
    SendRaw {
        /// The frame's text, or for a binary frame its bytes in standard base64.
        data: String,
        /// Whether it is a binary frame.
        #[serde(default)]
        binary: bool,
    },
    /// Start closing it.
    Close {
        /// The [`CloseReason`], by [`reason_name`].
        reason: String,
    },
}

/// The outcome of an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `Get`: the connection.
    Found {
        /// Its entry.
        entry: Entry,
    },
    /// `Send`: queued (`true`) or the queue was full (`false`, it is now closing).
    Sent {
        /// Whether it was queued.
        delivered: bool,
    },
    /// `Close`: it is closing.
    Closed,
    /// The receiver holds no open connection with that id.
    NotFound,
    /// The connection cannot take what was asked.
    Unsupported {
        /// Why.
        why: String,
    },
    /// The request could not be read (e.g. an unknown close reason).
    Refused {
        /// Why.
        why: String,
    },
}

/// Every [`CloseReason`], for [`reason_from_name`].
const REASONS: [CloseReason; 11] = [
    CloseReason::Shutdown,
    CloseReason::PolicyViolation,
    CloseReason::MessageTooBig,
    CloseReason::ProtocolError,
    CloseReason::InvalidPayload,
    CloseReason::TokenExpired,
    CloseReason::SlowConsumer,
    CloseReason::ClosedByBackend,
    CloseReason::Resync,
    CloseReason::HeartbeatTimeout,
    CloseReason::ClientGone,
];

/// A close reason's name on the wire (stable, independent of `Debug`).
pub fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Shutdown => "shutdown",
        CloseReason::PolicyViolation => "policy_violation",
        CloseReason::MessageTooBig => "message_too_big",
        CloseReason::ProtocolError => "protocol_error",
        CloseReason::InvalidPayload => "invalid_payload",
        CloseReason::TokenExpired => "token_expired",
        CloseReason::SlowConsumer => "slow_consumer",
        CloseReason::ClosedByBackend => "closed_by_backend",
        CloseReason::Resync => "resync",
        CloseReason::HeartbeatTimeout => "heartbeat_timeout",
        CloseReason::ClientGone => "client_gone",
    }
}

/// The close reason named `name` by [`reason_name`].
pub fn reason_from_name(name: &str) -> Option<CloseReason> {
    REASONS.into_iter().find(|r| reason_name(*r) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tagged_with_the_node() {
        use crate::broker::redis::keys::{hash_tag, node_channel};
        assert_eq!(node_key("node_1"), "sbd:{node_1}:conns");
        assert_eq!(hash_tag(&node_key("node_1")), hash_tag(&rebuild_key("node_1")));
        assert_eq!(hash_tag(&node_key("node_1")), hash_tag(&node_channel("node_1")));
        assert_eq!(hash_tag(NODES_KEY), Some("nodes"));
    }

    #[test]
    fn every_close_reason_round_trips() {
        for reason in REASONS {
            assert_eq!(reason_from_name(reason_name(reason)), Some(reason));
        }
        assert_eq!(reason_from_name("nonsense"), None);
    }

    #[test]
    fn entries_round_trip_to_connection_info() {
        let info = ConnectionInfo {
            id: ConnectionId::generate(),
            user: UserId::new("u1"),
            topics: vec![Topic::parse("global").unwrap(), Topic::parse("user:u1").unwrap()],
            connected_at: UNIX_EPOCH + Duration::from_nanos(1_732_226_561_187_122_144),
            remote: "10.0.3.7:54314".parse().unwrap(),
            protocol: "socketio".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64)".into(),
            last_active_at: UNIX_EPOCH + Duration::from_nanos(1_732_226_599_000_000_000),
            node: Some("node_a".into()),
        };
        let entry = Entry::of_info("node_a", &info);
        let text = serde_json::to_string(&entry).unwrap();
        let back: Entry = serde_json::from_str(&text).unwrap();
        assert_eq!(back.clone().into_info(info.id.clone()), Some(info.clone()));
        assert_eq!(back.node, "node_a");
        // Registrations carry no activity time: it reads as the connection time.
        let registered = Entry { last_active_at: None, ..back.clone() }.into_info(info.id.clone()).unwrap();
        assert_eq!(registered.last_active_at, info.connected_at);
        // Entries of nodes older than these fields still read.
        let old = r#"{"node":"n","user":"u","topics":[],"connected_at":5,"remote":"127.0.0.1:1"}"#;
        let old: Entry = serde_json::from_str(old).unwrap();
        assert_eq!((old.protocol.as_str(), old.user_agent.as_str(), old.last_active_at), ("native", "", None));
        assert!(Entry { remote: "nope".into(), ..back }.into_info(info.id).is_none());
    }

    #[test]
    fn messages_round_trip() {
        let messages = [
            Message::Request { id: 7, from: "n1".into(), conn: "c1".into(), op: Op::Get },
            Message::Request { id: 8, from: "n1".into(), conn: "c1".into(), op: Op::Send { frame: "{}".into() } },
            Message::Request {
                id: 9,
                from: "n1".into(),
                conn: "c1".into(),
                op: Op::Close { reason: reason_name(CloseReason::ClosedByBackend).into() },
            },
            Message::Reply { id: 9, outcome: Outcome::Closed },
            Message::Reply { id: 8, outcome: Outcome::Sent { delivered: false } },
            Message::Reply { id: 7, outcome: Outcome::NotFound },
            Message::Request {
                id: 10,
                from: "n1".into(),
                conn: "c1".into(),
                op: Op::SendRaw { data: "AP8=".into(), binary: true },
            },
            Message::Reply { id: 10, outcome: Outcome::Unsupported { why: "binary".into() } },
            Message::Push { conn: "c1".into(), frame: "{\"type\":\"x\"}".into() },
        ];
        for message in messages {
            let text = serde_json::to_string(&message).unwrap();
            assert!(text.starts_with("{\"dir\":"), "{text}");
            assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), message);
        }
    }
}

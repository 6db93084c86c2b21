//! The routed message: what a client sent, who sent it, and where it goes; and the JSON
//! document sinks receive (SPEC §7).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::unique_id;

/// A routed message's id, `msg_<unix-ms>_<random>`: in the `accepted` reply, the SQS
/// deduplication id and attributes, the webhook event and the Redis entry, so a backend
/// can de-duplicate a message delivered twice (after a timeout whose outcome was unknown).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// Mints a fresh, unique id.
    pub fn generate() -> Self {
        Self(unique_id("msg"))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One client message on its way to a sink. Serialized as JSON into the outbox, so its
/// field names are part of the on-disk format: add fields with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutedMessage {
    /// The message's id.
    pub message_id: MessageId,
    /// The name of the sink the route chose (`[sinks.NAME]`).
    pub sink: String,
    /// The message's `action` (the route key).
    pub action: String,
    /// The sending connection.
    pub connection_id: String,
    /// The sending user (`sub`, or `anonymous` in dev mode).
    pub user_id: String,
    /// The client's `requestId`, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// When the gateway received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// When the connection was opened, Unix milliseconds.
    pub connected_at_ms: i64,
    /// The client's IP address.
    pub source_ip: String,
    /// The client's frame text exactly as received: a JSON object (the parser checked).
    pub body: String,
}

impl RoutedMessage {
    /// `receivedAt` as RFC 3339 UTC with milliseconds.
    pub fn received_at(&self) -> String {
        rfc3339_millis(self.received_at_ms)
    }

    /// The JSON document SQS and Redis sinks receive (SPEC §7):
    /// `{"action","connectionId","userId","requestId","receivedAt","message"}` where
    /// `message` is the client's whole message, spliced in as sent (no re-encoding).
    pub fn envelope(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let request_id = self.request_id.as_deref().map_or_else(|| "null".to_owned(), quoted);
        format!(
            r#"{{"action":{},"connectionId":{},"userId":{},"requestId":{},"messageId":{},"receivedAt":{},"message":{}}}"#,
            quoted(&self.action),
            quoted(&self.connection_id),
            quoted(&self.user_id),
            request_id,
            quoted(self.message_id.as_str()),
            quoted(&self.received_at()),
            self.body,
        )
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-22T10:00:00.123Z`).
pub fn rfc3339_millis(unix_ms: i64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> RoutedMessage {
        RoutedMessage {
            message_id: MessageId("msg_1_2".into()),
            sink: "dev-agents".into(),
            action: "forward".into(),
            connection_id: "conn_1_a".into(),
            user_id: "u\"1".into(),
            request_id: Some("r1".into()),
            received_at_ms: 1_763_800_000_123,
            connected_at_ms: 1_763_800_000_000,
            source_ip: "127.0.0.1".into(),
            body: r#"{"action":"forward","type":"dev","n":1}"#.into(),
        }
    }

    #[test]
    fn the_envelope_is_json_with_the_message_spliced_in() {
        let envelope: serde_json::Value = serde_json::from_str(&message().envelope()).unwrap();
        assert_eq!(envelope["action"], "forward");
        assert_eq!(envelope["connectionId"], "conn_1_a");
        assert_eq!(envelope["userId"], "u\"1");
        assert_eq!(envelope["requestId"], "r1");
        assert_eq!(envelope["messageId"], "msg_1_2");
        assert_eq!(envelope["receivedAt"], "2025-11-22T08:26:40.123Z");
        assert_eq!(envelope["message"], serde_json::json!({"action":"forward","type":"dev","n":1}));
    }

    #[test]
    fn a_missing_request_id_is_null() {
        let mut m = message();
        m.request_id = None;
        let envelope: serde_json::Value = serde_json::from_str(&m.envelope()).unwrap();
        assert!(envelope["requestId"].is_null());
    }

    #[test]
    fn it_round_trips_through_json() {
        let m = message();
        let back: RoutedMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}

//! Events: JSON objects with a string `type`, and their delivered encoding.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{StreamPosition, Topic};

/// Why a JSON value is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not a JSON object.
    #[error("event must be a JSON object")]
    NotAnObject,
    /// `type` missing or not a non-empty string.
    #[error("event must have a non-empty string field `type`")]
    MissingType,
}

/// A validated event: a JSON object with a non-empty string `type`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event(Map<String, Value>);

impl Event {
    /// Validates a JSON value as an event.
    pub fn from_value(value: Value) -> Result<Self, EventError> {
        let Value::Object(map) = value else {
            return Err(EventError::NotAnObject);
        };
        match map.get("type") {
            Some(Value::String(t)) if !t.is_empty() => Ok(Self(map)),
            _ => Err(EventError::MissingType),
        }
    }

    /// The event's `type`.
    pub fn event_type(&self) -> &str {
        self.0.get("type").and_then(Value::as_str).unwrap_or_default()
    }

    /// The event's fields.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// Encodes `event` as the frame subscribers receive: the publisher's fields plus `topic`,
/// `offset` and, when the publisher gave none, `timestamp`. Called once per publish; the
/// resulting string is shared by every subscriber.
pub fn encode_delivery(event: &Event, topic: &Topic, position: &StreamPosition) -> String {
    let mut out = Vec::with_capacity(128 + 2 * event.0.len() * 16);
    out.push(b'{');
    // Serializing a `&str`/`u64` into a Vec cannot fail; the fallbacks below are unreachable
    // in practice and would only produce a still-valid, shorter frame.
    let _ = write_field(&mut out, "topic", &Value::from(topic.as_str()));
    out.push(b',');
    let _ = write_field(&mut out, "offset", &Value::from(position.offset));
    if !event.0.contains_key("timestamp") {
        out.push(b',');
        let _ = write_field(&mut out, "timestamp", &Value::from(now_rfc3339()));
    }
    for (key, value) in &event.0 {
        if key == "topic" || key == "offset" {
            continue;
        }
        out.push(b',');
        let _ = write_field(&mut out, key, value);
    }
    out.push(b'}');
    // The frame may live on in history: give back the capacity guessed above.
    out.shrink_to_fit();
    // serde_json only ever writes valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// `{…}` → `{…,"retained":true}`: the frame that follows a fresh subscribe with the topic's
/// retained state. A delivered frame is an encoded JSON object, so the field is spliced in
/// before its closing brace without parsing it.
pub fn mark_retained(frame: &str) -> String {
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let mut out = String::with_capacity(frame.len() + 16);
    out.push_str(body);
    out.push_str(if body.len() > 1 { ",\"retained\":true}" } else { "\"retained\":true}" });
    out
}

fn write_field(out: &mut Vec<u8>, key: &str, value: &Value) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value)
}

/// RFC 3339 UTC with exactly three fractional digits, e.g. `2026-01-15T10:00:00.120Z`.
const MILLIS_UTC: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The current time as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(MILLIS_UTC).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Epoch;
    use serde_json::json;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn validates_type() {
        assert!(Event::from_value(json!({"type": "x"})).is_ok());
        assert_eq!(Event::from_value(json!([1])), Err(EventError::NotAnObject));
        assert_eq!(Event::from_value(json!({"type": 1})), Err(EventError::MissingType));
        assert_eq!(Event::from_value(json!({"type": ""})), Err(EventError::MissingType));
        assert_eq!(Event::from_value(json!({})), Err(EventError::MissingType));
    }

    #[test]
    fn encodes_added_fields_and_overrides_reserved_ones() {
        let event = Event::from_value(json!({"type": "t", "topic": "fake", "offset": 99, "n": [1, "a"]})).unwrap();
        let topic = Topic::parse("job:1").unwrap();
        let pos = StreamPosition { offset: 7, epoch: Epoch::new("e") };
        let frame: Value = serde_json::from_str(&encode_delivery(&event, &topic, &pos)).unwrap();
        assert_eq!(frame["topic"], "job:1");
        assert_eq!(frame["offset"], 7);
        assert_eq!(frame["type"], "t");
        assert_eq!(frame["n"], json!([1, "a"]));
        let ts = frame["timestamp"].as_str().unwrap();
        assert!(OffsetDateTime::parse(ts, &Rfc3339).is_ok(), "{ts}");
        assert_eq!(ts.len(), "2026-01-15T10:00:00.120Z".len(), "{ts}");
    }

    #[test]
    fn marks_retained_frames() {
        assert_eq!(mark_retained("{\"type\":\"a\"}"), "{\"type\":\"a\",\"retained\":true}");
        assert_eq!(mark_retained("{}"), "{\"retained\":true}");
    }

    #[test]
    fn keeps_publisher_timestamp() {
        let event = Event::from_value(json!({"type": "t", "timestamp": "2024-01-01T00:00:00Z"})).unwrap();
        let pos = StreamPosition { offset: 1, epoch: Epoch::new("e") };
        let frame: Value = serde_json::from_str(&encode_delivery(&event, &Topic::parse("a").unwrap(), &pos)).unwrap();
        assert_eq!(frame["timestamp"], "2024-01-01T00:00:00Z");
    }
}

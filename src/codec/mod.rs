//! The wire encoding of server frames: the shared frame type and the encoding of a
//! delivered event.
//!
//! This module owns [`FrameText`] (the reference-counted text of one frame, which the
//! socket writer consumes without copying), [`encode_delivery`] (the frame subscribers
//! receive for a published event) and [`mark_retained`]. It sits below the broker and the
//! hub so that both speak the same frame type without knowing each other: the broker
//! encodes once per publish and stores and hands on the shared bytes, the hub queues them.
//! It must never know about connections, topics' subscribers or brokers, and never do I/O.

pub mod reply;
pub mod socketio;

use crate::domain::{Event, StreamPosition, Topic, write_now_rfc3339};

/// Text of one frame, shared by every subscriber it goes to (a reference-counted buffer:
/// cloning it does not allocate). This is the type the socket writer takes as is, so a
/// frame is neither copied nor re-validated per delivery.
pub type FrameText = tokio_tungstenite::tungstenite::Utf8Bytes;

/// Encodes `event` as the frame subscribers receive: the added fields `topic`, `offset`
/// and, when the publisher gave none, `timestamp`, then the publisher's fields. Called once
/// per publish; the resulting buffer is shared by history and every subscriber.
pub fn encode_delivery(event: &Event, topic: &Topic, position: &StreamPosition) -> FrameText {
    let fields = event.fields();
    let mut out = Vec::with_capacity(128 + 2 * fields.len() * 16);
    write_delivery_head(&mut out, topic);
    let _ = serde_json::to_writer(&mut out, &position.offset);
    write_delivery_tail(&mut out, event);
    // The frame may live on in history: give back the capacity guessed above.
    out.shrink_to_fit();
    // serde_json only ever writes valid UTF-8.
    FrameText::from(String::from_utf8(out).unwrap_or_default())
}

/// A delivered frame split around its offset, for a broker that assigns the offset
/// elsewhere (the Redis publish script): `head + offset + tail` is exactly the frame
/// [`encode_delivery`] gives for that offset, so the event is still encoded once, here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryParts {
    /// `{"topic":"…","offset":` — everything before the offset's digits.
    pub head: String,
    /// `,"timestamp":"…",<publisher fields>}` — everything after them.
    pub tail: String,
}

/// Encodes `event` for `topic` as [`DeliveryParts`] (the same bytes as [`encode_delivery`],
/// minus the offset). The timestamp, when added, is taken now.
pub fn encode_delivery_parts(event: &Event, topic: &Topic) -> DeliveryParts {
    let mut head = Vec::with_capacity(32 + topic.as_str().len());
    write_delivery_head(&mut head, topic);
    let mut tail = Vec::with_capacity(64 + event.fields().len() * 32);
    write_delivery_tail(&mut tail, event);
    // serde_json only ever writes valid UTF-8.
    DeliveryParts {
        head: String::from_utf8(head).unwrap_or_default(),
        tail: String::from_utf8(tail).unwrap_or_default(),
    }
}

/// `{"topic":"…","offset":`
fn write_delivery_head(out: &mut Vec<u8>, topic: &Topic) {
    out.push(b'{');
    // Serializing a `&str` into a Vec cannot fail; the fallbacks here and below are
    // unreachable in practice and would only produce a still-valid, shorter frame.
    let _ = write_field(out, "topic", topic.as_str());
    out.extend_from_slice(b",\"offset\":");
}

/// `,"timestamp":"…",<publisher fields>}` (the timestamp only when the publisher gave none).
fn write_delivery_tail(out: &mut Vec<u8>, event: &Event) {
    let fields = event.fields();
    if !fields.contains_key("timestamp") {
        out.extend_from_slice(b",\"timestamp\":\"");
        write_now_rfc3339(out);
        out.push(b'"');
    }
    for (key, value) in fields {
        if key == "topic" || key == "offset" {
            continue;
        }
        out.push(b',');
        let _ = write_field(out, key, value);
    }
    out.push(b'}');
}

/// A presence change: `{"type":"join"|"leave","topic","userId","connectionId"}` (SPEC §9.1).
/// Not an event: no offset, never in history.
pub fn presence_change(kind: PresenceChange, topic: &Topic, user: &str, connection_id: &str) -> FrameText {
    let kind = match kind {
        PresenceChange::Join => "join",
        PresenceChange::Leave => "leave",
    };
    let frame = serde_json::json!({"type": kind, "topic": topic, "userId": user, "connectionId": connection_id});
    FrameText::from(frame.to_string())
}

/// Which way a connection's presence in a topic changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// It subscribed.
    Join,
    /// It unsubscribed or closed.
    Leave,
}

/// `{…}` → `{…,"retained":true}`: the frame that follows a fresh subscribe with the topic's
/// retained state. A delivered frame is an encoded JSON object, so the field is spliced in
/// before its closing brace without parsing it.
pub fn mark_retained(frame: &FrameText) -> FrameText {
    let frame = frame.as_str();
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let mut out = String::with_capacity(frame.len() + 16);
    out.push_str(body);
    out.push_str(if body.len() > 1 { ",\"retained\":true}" } else { "\"retained\":true}" });
    FrameText::from(out)
}

fn write_field(out: &mut Vec<u8>, key: &str, value: &(impl serde::Serialize + ?Sized)) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Epoch;
    use serde_json::{Value, json};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn encodes_added_fields_and_overrides_reserved_ones() {
        let event = Event::from_value(json!({"type": "t", "topic": "fake", "offset": 99, "n": [1, "a"]})).unwrap();
        let topic = Topic::parse("job:1").unwrap();
        let pos = StreamPosition { offset: 7, epoch: Epoch::new("e") };
        let frame: Value = serde_json::from_str(encode_delivery(&event, &topic, &pos).as_str()).unwrap();
        assert_eq!(frame["topic"], "job:1");
        assert_eq!(frame["offset"], 7);
        assert_eq!(frame["type"], "t");
        assert_eq!(frame["n"], json!([1, "a"]));
        let ts = frame["timestamp"].as_str().unwrap();
        assert!(OffsetDateTime::parse(ts, &Rfc3339).is_ok(), "{ts}");
        assert_eq!(ts.len(), "2026-01-15T10:00:00.120Z".len(), "{ts}");
    }

    #[test]
    fn parts_around_the_offset_make_the_delivered_frame() {
        let event = Event::from_value(json!({"type": "t", "timestamp": "2024-01-01T00:00:00Z", "s": "a\"}{"})).unwrap();
        let topic = Topic::parse("job:1").unwrap();
        let parts = encode_delivery_parts(&event, &topic);
        for offset in [1, 42, u64::MAX] {
            let pos = StreamPosition { offset, epoch: Epoch::new("e") };
            let spliced = format!("{}{offset}{}", parts.head, parts.tail);
            assert_eq!(spliced, encode_delivery(&event, &topic, &pos).as_str());
        }
        assert_eq!(parts.head, "{\"topic\":\"job:1\",\"offset\":");
    }

    #[test]
    fn marks_retained_frames() {
        assert_eq!(mark_retained(&FrameText::from("{\"type\":\"a\"}")), "{\"type\":\"a\",\"retained\":true}");
        assert_eq!(mark_retained(&FrameText::from("{}")), "{\"retained\":true}");
    }

    #[test]
    fn keeps_publisher_timestamp() {
        let event = Event::from_value(json!({"type": "t", "timestamp": "2024-01-01T00:00:00Z"})).unwrap();
        let pos = StreamPosition { offset: 1, epoch: Epoch::new("e") };
        let frame = encode_delivery(&event, &Topic::parse("a").unwrap(), &pos);
        let frame: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(frame["timestamp"], "2024-01-01T00:00:00Z");
    }
}

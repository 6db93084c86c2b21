//! Events: JSON objects with a string `type`. Their delivered encoding is `codec`'s.

use serde_json::{Map, Value};
use time::OffsetDateTime;

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
    use serde_json::json;

    #[test]
    fn validates_type() {
        assert!(Event::from_value(json!({"type": "x"})).is_ok());
        assert_eq!(Event::from_value(json!([1])), Err(EventError::NotAnObject));
        assert_eq!(Event::from_value(json!({"type": 1})), Err(EventError::MissingType));
        assert_eq!(Event::from_value(json!({"type": ""})), Err(EventError::MissingType));
        assert_eq!(Event::from_value(json!({})), Err(EventError::MissingType));
    }
}

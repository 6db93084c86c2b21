//! Events: JSON objects with a string `type`. Their delivered encoding is `codec`'s.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// RFC 3339 UTC to the second, e.g. `2026-01-15T10:00:00`; [`write_now_rfc3339`] adds
/// the milliseconds and the `Z`.
const SECOND_UTC: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

thread_local! {
    /// The last second [`write_now_rfc3339`] formatted on this thread, and its text.
    static FORMATTED_SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The current time as RFC 3339 UTC with millisecond precision, e.g.
/// `2026-01-15T10:00:00.120Z`.
pub fn now_rfc3339() -> String {
    let mut out = Vec::with_capacity(24);
    write_now_rfc3339(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`now_rfc3339`]'s text to `out`. Every published event without a timestamp
/// gets one, so the calendar arithmetic and formatting are done once per second per
/// thread and reused: a call costs one clock read and a copy.
pub fn write_now_rfc3339(out: &mut Vec<u8>) {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (second, millis) = (since_epoch.as_secs(), since_epoch.subsec_millis());
    FORMATTED_SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let at = i64::try_from(second).ok().and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
            *text = at.and_then(|at| at.format(SECOND_UTC).ok()).unwrap_or_default();
            *cached = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
    // `millis` < 1000: three digits, zero-padded.
    out.extend_from_slice(&[b'.', digit(millis / 100), digit(millis / 10 % 10), digit(millis % 10), b'Z']);
}

fn digit(n: u32) -> u8 {
    b"0123456789"[(n % 10) as usize]
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

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds_and_agree_with_the_clock() {
        use time::format_description::well_known::Rfc3339;
        for _ in 0..3 {
            let before = OffsetDateTime::now_utc();
            let text = now_rfc3339();
            let after = OffsetDateTime::now_utc();
            assert_eq!(text.len(), "2026-01-15T10:00:00.120Z".len(), "{text}");
            assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
            let at = OffsetDateTime::parse(&text, &Rfc3339).unwrap();
            let millis = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
            assert!(millis(before) <= millis(at) && millis(at) <= millis(after), "{text}");
            // Once more within the same second: the cached date, new milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
    }
}

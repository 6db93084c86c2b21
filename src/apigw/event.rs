//! What API Gateway's WebSocket events have in common, whichever route they are for: the
//! API id and the `requestTime` format, and the identity and header maps of the
//! Lambda-proxy shape.
//!
//! Owns formats only; it must never touch the network.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

/// `requestContext.apiId`: API Gateway's id of the API; here, always the product.
pub const API_ID: &str = "signalbox";

/// API Gateway's `requestTime` format, e.g. `22/Nov/2026:10:00:00 +0000` (always UTC).
const REQUEST_TIME: &[FormatItem<'static>] =
    format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");

/// The ISO 8601 format of the management API's times, e.g. `2026-12-06T01:02:03.456Z`.
const ISO_8601_MS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Unix milliseconds in API Gateway's `requestTime` format; empty if out of range (the
/// times given are "now" or a connection's start, so that cannot happen in practice).
pub fn request_time(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(REQUEST_TIME).ok())
        .unwrap_or_default()
}

/// `at` as the management API writes times (UTC, milliseconds).
pub fn iso_8601(at: std::time::SystemTime) -> String {
    OffsetDateTime::from(at).format(ISO_8601_MS).unwrap_or_default()
}

/// Unix milliseconds of `at` (0 before the epoch).
pub fn unix_ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A header name as API Gateway hands it to a Lambda: each dash-separated word
/// capitalised (`user-agent` → `User-Agent`), since HTTP/1 servers see names lowercased
/// and handlers written for API Gateway look up `Host`, `User-Agent`, `X-Forwarded-For`.
pub fn header_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word_start = true;
    for c in name.chars() {
        out.push(if word_start { c.to_ascii_uppercase() } else { c });
        word_start = c == '-';
    }
    out
}

/// `headers` and `multiValueHeaders` of a Lambda-proxy event: the last value of each
/// name, and every value in order. Values that are not visible ASCII are left out, as
/// no JSON string could carry them faithfully.
pub fn header_maps(headers: &HeaderMap) -> (Value, Value) {
    let mut multi: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            multi.entry(header_case(name.as_str())).or_default().push(Value::from(value));
        }
    }
    split_multi(multi)
}

/// `queryStringParameters` and `multiValueQueryStringParameters` of a query string
/// (`None` without one, as API Gateway leaves them out).
pub fn query_maps(query: Option<&str>) -> Option<(Value, Value)> {
    let query = query.filter(|q| !q.is_empty())?;
    let mut multi: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        multi.entry(key.into_owned()).or_default().push(Value::from(value.into_owned()));
    }
    Some(split_multi(multi))
}

fn split_multi(multi: BTreeMap<String, Vec<Value>>) -> (Value, Value) {
    let mut single = Map::new();
    let mut all = Map::new();
    for (name, values) in multi {
        if let Some(last) = values.last() {
            single.insert(name.clone(), last.clone());
        }
        all.insert(name, Value::Array(values));
    }
    (Value::Object(single), Value::Object(all))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn times_in_api_gateway_formats() {
        assert_eq!(request_time(1_795_341_600_123), "22/Nov/2026:10:00:00 +0000");
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_341_600_123);
        assert_eq!(iso_8601(at), "2026-11-22T10:00:00.123Z");
        assert_eq!(unix_ms(at), 1_795_341_600_123);
    }

    #[test]
    fn headers_and_query_in_the_lambda_proxy_shape() {
        assert_eq!(header_case("sec-websocket-key"), "Sec-Websocket-Key");
        assert_eq!(header_case("x-forwarded-for"), "X-Forwarded-For");
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("gw.example.com"));
        headers.append("x-tag", HeaderValue::from_static("a"));
        headers.append("x-tag", HeaderValue::from_static("b"));
        headers.insert("x-bin", HeaderValue::from_bytes(b"\xff").unwrap());
        let (single, multi) = header_maps(&headers);
        assert_eq!(single, json!({"Host": "gw.example.com", "X-Tag": "b"}));
        assert_eq!(multi, json!({"Host": ["gw.example.com"], "X-Tag": ["a", "b"]}));

        let (single, multi) = query_maps(Some("token=t%201&topic=a&topic=b")).unwrap();
        assert_eq!(single, json!({"token": "t 1", "topic": "b"}));
        assert_eq!(multi, json!({"token": ["t 1"], "topic": ["a", "b"]}));
        assert!(query_maps(None).is_none() && query_maps(Some("")).is_none());
    }
}

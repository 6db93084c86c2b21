//! What a webhook's answer means: the status → [`SinkError`] table, and which bodies are
//! relayed to the client.
//!
//! Pure functions only: no I/O, so every row of the table is unit-tested. The transport
//! failures (connect, timeout) are classified in `sink.rs`, next to the client that sees them.

use bytes::Bytes;
use reqwest::StatusCode;

use crate::sinks::SinkError;

/// The most of an answer's body the sink reads. A reply is relayed to the client as one
/// frame, so anything larger is not relayed at all: reading it whole would let one
/// webhook answer cost the gateway unbounded memory.
pub(super) const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The outcome an HTTP status means: `Ok` for 2xx, else the error class.
///
/// - 408, 429, 502, 503, 504: the webhook (or a proxy in front of it) is overloaded,
///   throttling or not there → [`SinkError::Unavailable`], retried without using attempts.
/// - other 5xx: the webhook was reached and failed → [`SinkError::Failed`].
/// - other 4xx: the webhook refuses this message → [`SinkError::Rejected`].
/// - 3xx (redirects are not followed: a POST must not silently turn into a GET elsewhere)
///   and 1xx → [`SinkError::Rejected`]: the URL is wrong, retrying cannot help.
pub(super) fn classify_status(status: StatusCode) -> Result<(), SinkError> {
    let reason = || match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 | 502 | 503 | 504 => Err(SinkError::Unavailable(reason())),
        500..=599 => Err(SinkError::Failed(reason())),
        300..=399 => Err(SinkError::Rejected(format!("{} (redirects are not followed)", reason()))),
        _ => Err(SinkError::Rejected(reason())),
    }
}

/// How much of an error answer's body is quoted in the error (it ends up in logs and in
/// dead letters, so an operator sees *why* the webhook refused).
const DETAIL_CHARS: usize = 200;

/// Appends the start of an error answer's body to `error`'s reason, on one line.
pub(super) fn with_detail(error: SinkError, body: &[u8]) -> SinkError {
    let text = String::from_utf8_lossy(body);
    let detail: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(DETAIL_CHARS).collect();
    if detail.is_empty() {
        return error;
    }
    match error {
        SinkError::Unavailable(reason) => SinkError::Unavailable(format!("{reason}: {detail}")),
        SinkError::Failed(reason) => SinkError::Failed(format!("{reason}: {detail}")),
        SinkError::Rejected(reason) => SinkError::Rejected(format!("{reason}: {detail}")),
    }
}

/// The reply to relay for a 2xx answer's body: the bytes unchanged if they are one valid
/// JSON value, else none (an empty body, `OK`, an HTML page).
pub(super) fn reply(body: Bytes) -> Option<Bytes> {
    // `IgnoredAny` validates without building a tree: the bytes are relayed, not parsed.
    let valid = !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
    valid.then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: u16) -> Result<(), SinkError> {
        classify_status(StatusCode::from_u16(code).unwrap())
    }

    fn is_unavailable(code: u16) -> bool {
        matches!(class(code), Err(SinkError::Unavailable(_)))
    }

    fn is_failed(code: u16) -> bool {
        matches!(class(code), Err(SinkError::Failed(_)))
    }

    fn is_rejected(code: u16) -> bool {
        matches!(class(code), Err(SinkError::Rejected(_)))
    }

    #[test]
    fn every_2xx_is_delivered() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(class(code), Ok(()), "{code}");
        }
    }

    #[test]
    fn throttling_and_gateway_errors_are_unavailable() {
        for code in [408, 429, 502, 503, 504] {
            assert!(is_unavailable(code), "{code}: {:?}", class(code));
        }
    }

    #[test]
    fn other_5xx_are_failed() {
        for code in [500, 501, 505, 507, 599] {
            assert!(is_failed(code), "{code}: {:?}", class(code));
        }
    }

    #[test]
    fn other_4xx_redirects_and_informational_are_rejected() {
        for code in [400, 401, 403, 404, 405, 409, 410, 413, 422, 499, 301, 302, 307, 308, 100, 199] {
            assert!(is_rejected(code), "{code}: {:?}", class(code));
        }
    }

    #[test]
    fn the_reason_names_the_status() {
        assert_eq!(class(503), Err(SinkError::Unavailable("HTTP 503 Service Unavailable".into())));
        assert_eq!(class(599), Err(SinkError::Failed("HTTP 599".into())));
    }

    #[test]
    fn an_error_body_is_quoted_on_one_line_and_cut() {
        let error = SinkError::Rejected("HTTP 400 Bad Request".into());
        let body = b"{\"error\":\n  \"missing field\"}";
        assert_eq!(
            with_detail(error.clone(), body),
            SinkError::Rejected("HTTP 400 Bad Request: {\"error\": \"missing field\"}".into())
        );
        assert_eq!(with_detail(error.clone(), b"  \n"), error);
        assert_eq!(with_detail(error.clone(), b""), error);
        let long = vec![b'x'; 1000];
        let SinkError::Rejected(reason) = with_detail(error, &long) else { unreachable!() };
        assert_eq!(reason.len(), "HTTP 400 Bad Request: ".len() + DETAIL_CHARS);
    }

    #[test]
    fn a_json_body_is_relayed_byte_for_byte() {
        for body in [&b"{\"type\":\"ack\",  \"n\": 1}\n"[..], b"[1,2]", b"\"text\"", b"42", b"null"] {
            assert_eq!(reply(Bytes::from_static(body)).as_deref(), Some(body));
        }
    }

    #[test]
    fn empty_or_non_json_bodies_are_not_relayed() {
        for body in [&b""[..], b"  ", b"OK", b"<html></html>", b"{\"a\":1", b"{} {}"] {
            assert_eq!(reply(Bytes::from_static(body)), None, "{:?}", String::from_utf8_lossy(body));
        }
    }
}

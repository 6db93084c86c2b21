//! The HTTP side of the WebSocket opening handshake (RFC 6455 §4.2), owned here instead of
//! through axum's `WebSocketUpgrade`.
//!
//! Owns the checks on the upgrade request ([`check_upgrade`], a pure function so it can be
//! fuzzed), the refusals of malformed upgrades (JSON bodies, `426` with
//! `Sec-WebSocket-Version: 13` for a version this server does not speak), the
//! `101 Switching Protocols` response and turning hyper's upgraded connection into a
//! tungstenite stream. Owning it means a connection's task holds only our own state and
//! the socket: axum's wrapper kept its own future and a copy of the request's protocol
//! header beside ours for the connection's life, and tokio-tungstenite's stream two waker
//! proxies (see `socket`). It must never decide who may connect (that is `upgrade`'s job,
//! after these checks) and never reads or writes frames.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::socket::Socket;
use crate::domain::ErrorCode;
use crate::state::AppState;

/// A valid WebSocket upgrade request: the extractor of `GET /ws`.
pub struct UpgradeRequest {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request cannot be upgraded. Each refusal is an HTTP response with a JSON body
/// (`VALIDATION_ERROR`); see [`UpgradeRejection::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRejection {
    /// Not `GET` (405, with `Allow: GET`).
    MethodNotGet,
    /// `Connection` does not list `upgrade` (400).
    InvalidConnectionHeader,
    /// `Upgrade` does not list `websocket` (400).
    InvalidUpgradeHeader,
    /// `Sec-WebSocket-Version` is missing, repeated or not 13 (426, with
    /// `Sec-WebSocket-Version: 13`, RFC 6455 §4.4).
    InvalidWebSocketVersionHeader,
    /// No `Sec-WebSocket-Key` (400).
    WebSocketKeyHeaderMissing,
    /// `Sec-WebSocket-Key` is repeated or not the base64 encoding of 16 bytes (400, RFC
    /// 6455 §4.2.1 item 5).
    InvalidWebSocketKeyHeader,
    /// The connection cannot be taken over: not HTTP/1.1 (HTTP/1.0, or HTTP/2, whose
    /// WebSocket bootstrapping this server does not speak), or hyper offers no upgrade
    /// (426, with `Upgrade: websocket`).
    ConnectionNotUpgradable,
}

impl UpgradeRejection {
    /// The HTTP status of the refusal.
    pub fn status(self) -> StatusCode {
        match self {
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidConnectionHeader
            | Self::InvalidUpgradeHeader
            | Self::WebSocketKeyHeaderMissing
            | Self::InvalidWebSocketKeyHeader => StatusCode::BAD_REQUEST,
            Self::InvalidWebSocketVersionHeader | Self::ConnectionNotUpgradable => StatusCode::UPGRADE_REQUIRED,
        }
    }

    /// The human-readable message of the refusal.
    pub fn message(self) -> &'static str {
        match self {
            Self::MethodNotGet => "a WebSocket upgrade must use GET",
            Self::InvalidConnectionHeader => "the Connection header must include 'upgrade'",
            Self::InvalidUpgradeHeader => "the Upgrade header must include 'websocket'",
            Self::InvalidWebSocketVersionHeader => "unsupported WebSocket version: send one Sec-WebSocket-Version: 13",
            Self::WebSocketKeyHeaderMissing => "the Sec-WebSocket-Key header is missing",
            Self::InvalidWebSocketKeyHeader => "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
            Self::ConnectionNotUpgradable => "a WebSocket upgrade needs an HTTP/1.1 connection",
        }
    }
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let code = ErrorCode::Validation.as_str();
        let message = self.message();
        // The shape of every refused upgrade (see `upgrade::refuse`): frame and API shape.
        let body =
            json!({"type": "error", "code": code, "message": message, "error": {"code": code, "message": message}});
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::MethodNotGet => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            Self::InvalidWebSocketVersionHeader => {
                headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
            Self::ConnectionNotUpgradable => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            _ => {}
        }
        response
    }
}

/// Whether any value of the header `name` holds `token` in its comma-separated list
/// (case-insensitive, RFC 9110 §5.6.1). A value that is not visible ASCII holds nothing.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The only value of the header `name`: `None` when it is absent, `Some(Err(()))` when it
/// is repeated.
fn single(headers: &HeaderMap, name: HeaderName) -> Option<Result<&HeaderValue, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    Some(if values.next().is_some() { Err(()) } else { Ok(first) })
}

/// The 6-bit value of a base64 digit (RFC 4648 §4, standard alphabet).
fn base64_digit(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'Z' => Some(byte - b'A'),
        b'a'..=b'z' => Some(byte - b'a' + 26),
        b'0'..=b'9' => Some(byte - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Whether `key` is the canonical base64 encoding of exactly 16 bytes (RFC 6455 §4.2.1
/// item 5): 22 digits, `==`, and zero in the 4 bits the last digit carries past the 128th.
/// Written out because this is all the base64 the server needs; the fuzz target checks it
/// against the `base64` crate.
pub fn is_valid_key(key: &[u8]) -> bool {
    let Some((digits, padding)) = key.split_at_checked(22) else { return false };
    if padding != b"==" {
        return false;
    }
    let mut last = 0;
    for &byte in digits {
        match base64_digit(byte) {
            Some(value) => last = value,
            None => return false,
        }
    }
    last & 0x0F == 0
}

/// The checks of RFC 6455 §4.2.1 on an upgrade request, without the connection: the
/// `Sec-WebSocket-Accept` value to answer with, or why the request is refused. Pure, and
/// total on any input (the fuzz target `handshake` runs it on arbitrary requests).
pub fn check_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> Result<HeaderValue, UpgradeRejection> {
    if version != Version::HTTP_11 {
        return Err(UpgradeRejection::ConnectionNotUpgradable);
    }
    if method != Method::GET {
        return Err(UpgradeRejection::MethodNotGet);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(UpgradeRejection::InvalidConnectionHeader);
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(UpgradeRejection::InvalidUpgradeHeader);
    }
    match single(headers, header::SEC_WEBSOCKET_VERSION) {
        Some(Ok(v)) if v.as_bytes() == b"13" => {}
        _ => return Err(UpgradeRejection::InvalidWebSocketVersionHeader),
    }
    let key = match single(headers, header::SEC_WEBSOCKET_KEY) {
        None => return Err(UpgradeRejection::WebSocketKeyHeaderMissing),
        Some(Ok(key)) if is_valid_key(key.as_bytes()) => key,
        Some(_) => return Err(UpgradeRejection::InvalidWebSocketKeyHeader),
    };
    // Base64 of a SHA-1 digest: always a valid header value.
    HeaderValue::try_from(derive_accept_key(key.as_bytes())).map_err(|_| UpgradeRejection::InvalidWebSocketKeyHeader)
}

impl FromRequestParts<AppState> for UpgradeRequest {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let checked = check_upgrade(&parts.method, parts.version, &parts.headers).and_then(|accept| {
            let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(UpgradeRejection::ConnectionNotUpgradable)?;
            Ok(Self { accept, on_upgrade })
        });
        if checked.is_err() {
            // Counted like every other refused upgrade (`signalbox_errors_total`).
            state.metrics.error(ErrorCode::Validation);
        }
        checked
    }
}

impl UpgradeRequest {
    /// Accepts the upgrade: returns the `101` response to send, and the future that
    /// resolves to the socket once hyper hands the connection over (after the response
    /// is written), or to `None` if the client went away before that.
    pub fn accept(self, config: WebSocketConfig) -> (Response, impl Future<Output = Option<Socket>> + Send + 'static) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        let on_upgrade = self.on_upgrade;
        let socket = async move {
            let upgraded = on_upgrade.await.ok()?;
            Some(Socket::new(TokioIo::new(upgraded), config))
        };
        (response, socket)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn check(request: Request<()>) -> Result<HeaderValue, UpgradeRejection> {
        check_upgrade(request.method(), request.version(), request.headers())
    }

    fn upgrade_request() -> axum::http::request::Builder {
        Request::get("/ws")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
    }

    fn with(name: HeaderName, value: &'static str) -> Request<()> {
        let mut request = upgrade_request().body(()).unwrap();
        request.headers_mut().insert(name, HeaderValue::from_static(value));
        request
    }

    #[test]
    fn accepts_a_valid_upgrade_with_the_rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(check(upgrade_request().body(()).unwrap()).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        // Header tokens are case-insensitive lists.
        assert!(check(with(header::UPGRADE, "WebSocket")).is_ok());
        assert!(check(with(header::CONNECTION, "Upgrade")).is_ok());
        let mut split = upgrade_request().header(header::CONNECTION, "upgrade").body(()).unwrap();
        split.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        split.headers_mut().append(header::CONNECTION, HeaderValue::from_static("upgrade"));
        assert!(check(split).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_websocket_upgrade() {
        let post = upgrade_request().method(Method::POST).body(()).unwrap();
        assert_eq!(check(post), Err(UpgradeRejection::MethodNotGet));
        let plain = Request::get("/ws").body(()).unwrap();
        assert_eq!(check(plain), Err(UpgradeRejection::InvalidConnectionHeader));
        // A substring is not a token.
        assert_eq!(check(with(header::CONNECTION, "upgraded")), Err(UpgradeRejection::InvalidConnectionHeader));
        assert_eq!(check(with(header::UPGRADE, "h2c")), Err(UpgradeRejection::InvalidUpgradeHeader));
        let old = upgrade_request().version(Version::HTTP_10).body(()).unwrap();
        assert_eq!(check(old), Err(UpgradeRejection::ConnectionNotUpgradable));
        let h2 = upgrade_request().version(Version::HTTP_2).body(()).unwrap();
        assert_eq!(check(h2), Err(UpgradeRejection::ConnectionNotUpgradable));
    }

    #[test]
    fn refuses_other_versions_with_426() {
        assert_eq!(
            check(with(header::SEC_WEBSOCKET_VERSION, "8")),
            Err(UpgradeRejection::InvalidWebSocketVersionHeader)
        );
        let mut missing = upgrade_request().body(()).unwrap();
        missing.headers_mut().remove(header::SEC_WEBSOCKET_VERSION);
        assert_eq!(check(missing), Err(UpgradeRejection::InvalidWebSocketVersionHeader));
        let repeated = upgrade_request().header(header::SEC_WEBSOCKET_VERSION, "13").body(()).unwrap();
        assert_eq!(check(repeated), Err(UpgradeRejection::InvalidWebSocketVersionHeader));
        let response = UpgradeRejection::InvalidWebSocketVersionHeader.into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn refuses_keys_that_are_not_16_base64_bytes() {
        let mut missing = upgrade_request().body(()).unwrap();
        missing.headers_mut().remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(check(missing), Err(UpgradeRejection::WebSocketKeyHeaderMissing));
        for key in [
            "abc",
            "",
            "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 21 bytes
            "AAAAAAAAAAAAAAAAAAAAAB==",     // non-zero bits past the 16th byte
            "AAAAAAAAAAAAAAAAAAAAA-==",     // URL-safe alphabet
            "AAAAAAAAAAAAAAAAAAAAAA",       // no padding
            "AAAAAAAAAAAAAAAAAAAAAA= =",
        ] {
            assert_eq!(
                check(with(header::SEC_WEBSOCKET_KEY, key)),
                Err(UpgradeRejection::InvalidWebSocketKeyHeader),
                "{key:?}"
            );
        }
        let repeated =
            upgrade_request().header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==").body(()).unwrap();
        assert_eq!(check(repeated), Err(UpgradeRejection::InvalidWebSocketKeyHeader));
        for key in ["AAAAAAAAAAAAAAAAAAAAAA==", "/////////////////////w==", "+/+/+/+/+/+/+/+/+/+/+g=="] {
            assert!(is_valid_key(key.as_bytes()), "{key}");
        }
    }

    #[tokio::test]
    async fn every_refusal_is_a_json_validation_error() {
        for rejection in [
            UpgradeRejection::MethodNotGet,
            UpgradeRejection::InvalidConnectionHeader,
            UpgradeRejection::InvalidUpgradeHeader,
            UpgradeRejection::InvalidWebSocketVersionHeader,
            UpgradeRejection::WebSocketKeyHeaderMissing,
            UpgradeRejection::InvalidWebSocketKeyHeader,
            UpgradeRejection::ConnectionNotUpgradable,
        ] {
            let response = rejection.into_response();
            assert_eq!(response.status(), rejection.status());
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["code"], "VALIDATION_ERROR");
            assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
            assert_eq!(body["message"], rejection.message());
            assert_eq!(body["error"]["message"], rejection.message());
        }
    }
}

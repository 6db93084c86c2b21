//! The HTTP side of the WebSocket opening handshake (RFC 6455 §4.2), owned here instead of
//! through axum's `WebSocketUpgrade`.
//!
//! Owns the checks on the upgrade request, the `101 Switching Protocols` response and
//! turning hyper's upgraded connection into a tungstenite stream. Owning it means a
//! connection's task holds only our own state and the socket: axum's wrapper kept its own
//! future and a copy of the request's protocol header beside ours for the connection's
//! life, and tokio-tungstenite's stream two waker proxies (see `socket`). It must never decide who may connect (that is `upgrade`'s job, before any of
//! this) and never reads or writes frames.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::socket::Socket;

/// A valid WebSocket upgrade request: the extractor of `GET /ws`.
///
/// It refuses exactly as axum's `WebSocketUpgrade` did (same statuses and texts), so
/// clients that are not WebSocket clients see no change.
pub struct UpgradeRequest {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request cannot be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRejection {
    /// Not `GET`.
    MethodNotGet,
    /// `Connection` does not list `upgrade`.
    InvalidConnectionHeader,
    /// `Upgrade` is not `websocket`.
    InvalidUpgradeHeader,
    /// `Sec-WebSocket-Version` is not 13.
    InvalidWebSocketVersionHeader,
    /// No `Sec-WebSocket-Key`.
    WebSocketKeyHeaderMissing,
    /// The connection cannot be taken over (e.g. HTTP/1.0, or HTTP/2, which this server
    /// does not speak).
    ConnectionNotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Self::MethodNotGet => (StatusCode::METHOD_NOT_ALLOWED, "Request method must be `GET`"),
            Self::InvalidConnectionHeader => (StatusCode::BAD_REQUEST, "Connection header did not include 'upgrade'"),
            Self::InvalidUpgradeHeader => (StatusCode::BAD_REQUEST, "`Upgrade` header did not include 'websocket'"),
            Self::InvalidWebSocketVersionHeader => {
                (StatusCode::BAD_REQUEST, "`Sec-WebSocket-Version` header did not include '13'")
            }
            Self::WebSocketKeyHeaderMissing => (StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` header missing"),
            Self::ConnectionNotUpgradable => (
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ),
        };
        (status, text).into_response()
    }
}

fn header_eq(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers.get(key).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers.get(key).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains(value))
}

impl<S: Send + Sync> FromRequestParts<S> for UpgradeRequest {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.version > Version::HTTP_11 {
            return Err(UpgradeRejection::ConnectionNotUpgradable);
        }
        if parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::InvalidConnectionHeader);
        }
        if !header_eq(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::InvalidUpgradeHeader);
        }
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).ok_or(UpgradeRejection::WebSocketKeyHeaderMissing)?;
        // Base64 of a SHA-1 digest: always a valid header value.
        let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
            .map_err(|_| UpgradeRejection::WebSocketKeyHeaderMissing)?;
        if !header_eq(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRejection::InvalidWebSocketVersionHeader);
        }
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(UpgradeRejection::ConnectionNotUpgradable)?;
        Ok(Self { accept, on_upgrade })
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

    async fn extract(request: Request<()>) -> Result<UpgradeRequest, UpgradeRejection> {
        let (mut parts, ()) = request.into_parts();
        UpgradeRequest::from_request_parts(&mut parts, &()).await
    }

    fn upgrade_request() -> axum::http::request::Builder {
        Request::get("/ws")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_websocket_upgrade() {
        let post = upgrade_request().method(Method::POST).body(()).unwrap();
        assert_eq!(extract(post).await.err(), Some(UpgradeRejection::MethodNotGet));
        let plain = Request::get("/ws").body(()).unwrap();
        assert_eq!(extract(plain).await.err(), Some(UpgradeRejection::InvalidConnectionHeader));
        let mut old = upgrade_request().body(()).unwrap();
        old.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(extract(old).await.err(), Some(UpgradeRejection::InvalidWebSocketVersionHeader));
        // Valid headers, but no connection to take over (as for HTTP/1.0).
        let valid = upgrade_request().body(()).unwrap();
        assert_eq!(extract(valid).await.err(), Some(UpgradeRejection::ConnectionNotUpgradable));
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}

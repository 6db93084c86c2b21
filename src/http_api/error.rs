//! API errors and their HTTP statuses, in one place, and the extractors that turn every
//! request-parsing failure into one of them.
//!
//! Every `/api` failure is answered `{"error":{"code","message"}}` with
//! `Content-Type: application/json`, whichever part of the request is wrong: handlers take
//! their inputs through [`ApiJson`], [`ApiPath`] and [`ApiQuery`] (never axum's `Json`,
//! `Path` or `Query` directly, whose rejections are plain text), and the router answers
//! unknown paths and methods with [`ApiError`] too. It must never let an axum rejection
//! through as it is.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::broker::BrokerError;
use crate::domain::ErrorCode;
use crate::state::AppState;
use crate::ws::protocol::describe_json_error;

/// An error answered as `{"error":{"code","message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    Validation(String),
    /// 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not (code `VALIDATION_ERROR`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 500: a bug on our side (e.g. a route and its handler disagree).
    #[error("{0}")]
    Internal(String),
    /// 503.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ApiError {
    /// The wire error code (what a per-item error of a batch carries).
    pub fn code(&self) -> ErrorCode {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Validation(_) => (StatusCode::BAD_REQUEST, ErrorCode::Validation),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Authentication),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Validation),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            Self::Broker(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::BrokerUnavailable),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = Json(json!({"error": {"code": code.as_str(), "message": self.to_string()}}));
        let mut response = (status, body).into_response();
        // Lets the ops layer count errors by code without a second mapping.
        response.extensions_mut().insert(code);
        response
    }
}

/// The fallback of `/api`: no route has this path.
pub async fn no_such_route() -> ApiError {
    ApiError::NotFound("no such API route".into())
}

/// The fallback of every `/api` route for a method it does not serve. axum adds the
/// `Allow` header to this answer.
pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on this path"))
}

/// A JSON request body. Requires `Content-Type: application/json` (or a `+json` type),
/// reads at most `limits.max_api_body_size` bytes (413 beyond), and parses with the same
/// rules and messages as client frames (nesting included, see
/// [`describe_json_error`]). Every failure is an [`ApiError`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

// Generic over the router's state, so routers whose state contains the gateway's (the
// admin dashboard's) mount the same handlers.
impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    AppState: axum::extract::FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let ApiBody(body) = ApiBody::from_request(request, state).await?;
        parse_json(&body).map(Self)
    }
}

/// A JSON request body's bytes, not yet parsed, with the checks of [`ApiJson`]: for
/// handlers that read the body their own way (`POST /api/publish`).
#[derive(Debug)]
pub struct ApiBody(pub Bytes);

impl<S> FromRequest<S> for ApiBody
where
    S: Send + Sync,
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        require_json(request.headers())?;
        let limit = <AppState as axum::extract::FromRef<S>>::from_ref(state).config.limits.max_api_body_size;
        Bytes::from_request(request, state).await.map(Self).map_err(|e| body_error(&e, limit))
    }
}

/// Parses a JSON body with the same rules and messages as client frames.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::Validation(if e.is_data() { format!("invalid body: {e}") } else { describe_json_error(&e) })
    })
}

/// Refuses a body that does not say it is JSON.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(ApiError::Validation("the body must be JSON with Content-Type: application/json".into()))
    }
}

/// The refusal of a body over `limits.max_api_body_size`.
pub(crate) fn body_too_large(limit: usize) -> ApiError {
    ApiError::TooLarge(format!("the request body is larger than {limit} bytes (limits.max_api_body_size)"))
}

/// Whether the request says its body is JSON: `application/json` or `application/*+json`,
/// parameters (`; charset=utf-8`) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large(limit)
    } else {
        ApiError::Validation(format!("the request body could not be read: {}", rejection.body_text()))
    }
}

/// Path parameters. A parameter that is not UTF-8 once percent-decoded (`%FF`) or does
/// not fit `T` is a 400 [`ApiError`].
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            // The route has no parameter the handler asks for: our bug, not the client's.
            Err(PathRejection::MissingPathParams(e)) => Err(ApiError::Internal(e.body_text())),
            Err(e) => Err(ApiError::Validation(format!("invalid path: {}", e.body_text()))),
        }
    }
}

/// The query string, deserialized into `T`. Unknown parameters are ignored; a repeated
/// one that `T` takes once (`?user=a&user=b`), or one of the wrong type, is a 400
/// [`ApiError`].
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e: QueryRejection| ApiError::Validation(format!("invalid query string: {}", query_reason(&e))))
    }
}

/// The reason of a query rejection without axum's prefix ("Failed to deserialize query
/// string: ").
fn query_reason(rejection: &QueryRejection) -> String {
    match std::error::Error::source(rejection).and_then(std::error::Error::source) {
        Some(cause) => cause.to_string(),
        None => rejection.body_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            h
        };
        for ok in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"]
        {
            assert!(is_json(&with(ok)), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "json", "application/x-www-form-urlencoded", ""] {
            assert!(!is_json(&with(bad)), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}

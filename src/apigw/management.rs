//! The API Gateway management API: `POST|GET|DELETE /@connections/{id}`, also under a
//! stage prefix (`/{stage}/@connections/{id}`, as API Gateway endpoint URLs end in the
//! stage), answered as AWS answers them so boto3's `apigatewaymanagementapi` client and the
//! AWS SDKs work unchanged with their endpoint pointed here.
//!
//! Owns the routes' authentication (SigV4 or an API key bearer), the mapping of directory
//! outcomes to AWS statuses and error types, and the response shapes. It reaches
//! connections only through the connection directory (so any node's connection answers)
//! and must never parse or re-encode a posted body: it goes out byte for byte.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::event::iso_8601;
use crate::auth::SignedRequest;
use crate::codec::FrameText;
use crate::domain::{ConnectionId, LogId};
use crate::hub::{CloseReason, DirectoryError, RawFrame};
use crate::state::AppState;

/// The header AWS SDKs read an error's type from.
const ERROR_TYPE: &str = "x-amzn-errortype";

/// An AWS-style error answer: status, `x-amzn-ErrorType` and `{"message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl AwsError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self { status, error_type, message: message.into() }
    }

    /// 403 `ForbiddenException`, the same for every authentication failure (which one
    /// it was is logged, never answered).
    fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "ForbiddenException", "Forbidden")
    }

    /// 410 `GoneException`: no open connection has the id.
    fn gone() -> Self {
        Self::new(StatusCode::GONE, "GoneException", "Gone")
    }

    /// The outcome label of `signalbox_apigw_requests_total`.
    fn outcome(&self) -> &'static str {
        self.error_type
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(json!({"message": self.message}))).into_response();
        response.headers_mut().insert(ERROR_TYPE, HeaderValue::from_static(self.error_type));
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
        }
        response
    }
}

/// Answers one `/@connections/{id}` call; `params` holds `id` (percent-decoded) and, under
/// a stage prefix, `stage`.
pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(params): Path<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let outcome = answer(&state, &method, &uri, &headers, params.get("id").map(String::as_str), body).await;
    match outcome {
        Ok(response) => {
            state.metrics.apigw_request("ok");
            response
        }
        Err(error) => {
            state.metrics.apigw_request(error.outcome());
            error.into_response()
        }
    }
}

async fn answer(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    id: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AwsError> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            // Before the signature: it covers the body, which was not read whole.
            let limit = state.config.apigw.max_post_size;
            return Err(AwsError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLargeException",
                format!("Request entity too large: the body may hold at most {limit} bytes (apigw.max_post_size)"),
            ));
        }
        Err(rejection) => {
            return Err(AwsError::new(StatusCode::BAD_REQUEST, "BadRequestException", rejection.body_text()));
        }
    };
    authorize(state, method, uri, headers, &body)?;
    let Some(raw_id) = id else {
        return Err(AwsError::new(StatusCode::BAD_REQUEST, "BadRequestException", "missing connection id"));
    };
    let id = ConnectionId::from_external(raw_id);
    let directory = &state.directory;
    match *method {
        Method::POST => {
            let frame = match FrameText::try_from(body.clone()) {
                Ok(text) => RawFrame::Text(text),
                Err(_) => RawFrame::Binary(body),
            };
            match directory.send_raw(&id, frame).await {
                Ok(true) => Ok(StatusCode::OK.into_response()),
                Ok(false) => Err(AwsError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "LimitExceededException",
                    "the connection's send queue is full; it is being closed as a slow consumer (4008)",
                )),
                Err(e) => Err(directory_error(e)),
            }
        }
        Method::GET => {
            let info = directory.get(&id).await.map_err(directory_error)?;
            let body = json!({
                "connectedAt": iso_8601(info.connected_at),
                "identity": {"sourceIp": info.remote.ip().to_string(), "userAgent": info.user_agent},
                "lastActiveAt": iso_8601(info.last_active_at),
            });
            Ok(axum::Json(body).into_response())
        }
        Method::DELETE => {
            directory.close(&id, CloseReason::ClosedByBackend).await.map_err(directory_error)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(AwsError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequestException",
            format!("{method} is not a method of /@connections/{{id}}: use POST, GET or DELETE"),
        )),
    }
}

/// Lets the call through in dev mode, with a backend API key bearer, or with a SigV4
/// signature by one of `[apigw] credentials`; anything else is 403.
fn authorize(state: &AppState, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Result<(), AwsError> {
    if state.config.dev {
        return Ok(());
    }
    if let Some(key) = crate::ws::upgrade::bearer(headers) {
        if state.api_keys.verify(key) {
            return Ok(());
        }
        tracing::info!(path = %LogId(uri.path()), "/@connections: refused an invalid API key");
        return Err(AwsError::forbidden());
    }
    let request =
        SignedRequest { method: method.as_str(), path: uri.path(), query: uri.query(), headers, body: body.as_ref() };
    match state.sigv4.verify(&request, std::time::SystemTime::now()) {
        Ok(_key_id) => Ok(()),
        Err(e) => {
            tracing::info!(path = %LogId(uri.path()), error = %e, "/@connections: refused a request");
            Err(AwsError::forbidden())
        }
    }
}

fn directory_error(error: DirectoryError) -> AwsError {
    match error {
        DirectoryError::NotFound(_) => AwsError::gone(),
        DirectoryError::Unsupported(why) => AwsError::new(StatusCode::BAD_REQUEST, "BadRequestException", why),
        DirectoryError::Unavailable(why) => {
            tracing::warn!(error = %why, "/@connections: the connection directory is unavailable");
            AwsError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException", why)
        }
    }
}

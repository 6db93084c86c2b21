//! API errors and their HTTP statuses, in one place.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::broker::BrokerError;
use crate::domain::ErrorCode;

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
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 503.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Validation(_) => (StatusCode::BAD_REQUEST, ErrorCode::Validation),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Authentication),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
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

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::TooLarge("request body is too large".into())
            }
            other => Self::Validation(other.body_text()),
        }
    }
}

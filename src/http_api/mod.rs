//! The HTTP side: backend API (`/api/*`, SPEC §6) and operations (`/health`, `/ready`,
//! `/metrics`, SPEC §8), plus the router that mounts `/ws`, `/socket.io/` and API
//! Gateway's `/@connections` (`crate::apigw`).
//!
//! Owns request parsing, API-key checks and the mapping of errors to HTTP statuses. It
//! reaches topics and connections only through the hub; it must never name a broker.

mod batch;
pub(crate) mod connections;
mod error;
mod ops;
pub(crate) mod publish;
mod service;
mod topics;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};

pub use error::{ApiBody, ApiError, ApiJson, ApiPath, ApiQuery, method_not_allowed};
pub use service::HttpService;

use crate::state::AppState;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/publish", post(publish::publish))
        .route("/publish/batch", post(batch::publish_batch))
        .route("/broadcast", post(publish::broadcast))
        // A wildcard, since topics may contain `/`.
        .route("/topics/{*topic}", get(topics::get))
        .route("/connections", get(connections::list))
        .route("/connections/{id}/send", post(connections::send))
        .route("/connections/{id}", axum::routing::delete(connections::close))
        // After the routes: it applies to the routes added so far.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_such_route)
        .layer(middleware::from_fn_with_state(state.clone(), require_api_key))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        .layer(DefaultBodyLimit::max(state.config.limits.max_api_body_size));
    // API Gateway's management API, with and without a stage prefix; its own body bound
    // (API Gateway's 128 KiB by default), answered 413 PayloadTooLargeException.
    let management = Router::new()
        .route("/@connections/{id}", any(crate::apigw::management::handle))
        .route("/{stage}/@connections/{id}", any(crate::apigw::management::handle))
        // The same with `@` percent-encoded, as some signing tools (awscurl) send it.
        .route("/%40connections/{id}", any(crate::apigw::management::handle))
        .route("/{stage}/%40connections/{id}", any(crate::apigw::management::handle))
        .layer(DefaultBodyLimit::max(state.config.apigw.max_post_size));
    Router::new()
        .merge(management)
        // Every method reaches the handshake checks, so a wrong one gets their JSON 405.
        .route("/ws", any(crate::ws::ws_handler))
        .route("/socket.io/", any(crate::socketio::socketio_handler))
        .route("/socket.io", any(crate::socketio::socketio_handler))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        // `nest` serves `/api` and `/api/…` but not `/api/` itself; that path gets the API's
        // own answers too (key check, then its JSON 404).
        .route_service("/api/", api.clone().with_state(state.clone()))
        .nest("/api", api)
        .with_state(state)
}

/// Counts the error codes of the answers (`signalbox_errors_total`).
pub async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(code) = response.extensions().get::<crate::domain::ErrorCode>() {
        state.metrics.error(*code);
    }
    response
}

async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    service::check_api_key(&state, request.headers())?;
    Ok(next.run(request).await)
}

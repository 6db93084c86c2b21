//! What the listener serves: the HTTP router, with `POST /api/publish` answered before it.
//!
//! Publishing is the request backends make most often, one per job step. Through the
//! router it paid for routing, two `from_fn` middlewares with their boxed futures and the
//! boxing of its body: about a fifth of its CPU (`docs/benchmarks.md`, "Profile: where one
//! HTTP publish goes"). Here it gets the same checks in the same order as on the route
//! (API key, content type, body limit, then the body), the same answers and the same
//! error counting, without those layers. Owns only that dispatch: it must never answer any
//! other method or path itself, and never judge a publish differently from the route
//! (both call `publish::publish_body`).

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tower_service::Service;

use super::error::{ApiError, body_too_large, require_json};
use super::publish;
use crate::state::AppState;

/// The path answered directly (exactly: the router still serves every other spelling).
const PUBLISH_PATH: &str = "/api/publish";

/// The gateway's HTTP side as the listener calls it, once per request.
#[derive(Clone)]
pub struct HttpService {
    router: Router,
    state: AppState,
}

impl HttpService {
    /// Serves `router`, with `POST /api/publish` taken directly against `state`.
    pub fn new(router: Router, state: AppState) -> Self {
        Self { router, state }
    }

    /// Answers one request from `remote`.
    pub async fn call(&self, mut request: Request<Incoming>, remote: SocketAddr) -> Response {
        if request.method() == Method::POST && request.uri().path() == PUBLISH_PATH {
            return publish_directly(&self.state, request).await;
        }
        // Only the router's handlers read the peer address (`ConnectInfo`).
        request.extensions_mut().insert(ConnectInfo(remote));
        match self.router.clone().call(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// `POST /api/publish` without the router's layers; see the module documentation.
async fn publish_directly(state: &AppState, request: Request<Incoming>) -> Response {
    let result = async {
        check_api_key(state, request.headers())?;
        require_json(request.headers())?;
        let body = read_body(request.into_body(), state.config.limits.max_api_body_size).await?;
        publish::publish_body(state, &body).await
    }
    .await;
    result.unwrap_or_else(|error| {
        // What the router's `count_errors` layer does for the route.
        state.metrics.error(error.code());
        error.into_response()
    })
}

/// The route's `require_api_key`: any valid key, unless the server runs with `--dev`.
pub(super) fn check_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.config.dev {
        return Ok(());
    }
    match crate::ws::upgrade::bearer(headers) {
        None => Err(ApiError::Unauthenticated("missing Authorization: Bearer <api key>".into())),
        Some(key) if !state.api_keys.verify(key) => Err(ApiError::Unauthenticated("invalid API key".into())),
        Some(_) => Ok(()),
    }
}

/// The whole body, at most `limit` bytes (413 beyond, as the route's `DefaultBodyLimit`).
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(body_too_large(limit)),
        Err(error) => Err(ApiError::Validation(format!("the request body could not be read: {error}"))),
    }
}

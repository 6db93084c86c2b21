//! The admin dashboard at `/admin` (SPEC §11): a login page, the JSON API under
//! `/admin/api/*`, one live stream per page (SSE), and pages compiled into the binary.
//!
//! Owns the dashboard's sessions and login throttling, and each node's stats samples
//! (shared in a cluster through [`ClusterStats`]). It reads the gateway through the shared
//! state (hub, connection directory, dispatcher, the metrics' counters) and must never add
//! work to the delivery path: its figures come from counters `/metrics` already keeps,
//! sampled once a second. Off unless `[admin] password` is set: then nothing is mounted
//! and every `/admin` path is the router's 404.

mod api;
mod assets;
mod session;
mod stats;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

pub use stats::{ClusterStats, ClusterStatsError, NodeStats, SAMPLE_INTERVAL, STALE_AFTER};

use crate::config::AdminConfig;
use crate::http_api::ApiError;
use crate::state::AppState;
use session::{COOKIE, LoginThrottle, Sessions};
use stats::StatsBoard;

/// The dashboard's state: sessions, throttle, this node's stats, the cluster's.
pub struct Admin {
    sessions: Sessions,
    throttle: LoginThrottle,
    stats: StatsBoard,
    cluster: Option<Arc<dyn ClusterStats>>,
}

impl Admin {
    /// The dashboard for `config`, as node `node` (`cluster`: where nodes share samples).
    pub fn new(config: &AdminConfig, node: String, cluster: Option<Arc<dyn ClusterStats>>) -> Self {
        Self {
            sessions: Sessions::new(&config.password, config.session_ttl),
            throttle: LoginThrottle::new(config.login_attempts_per_minute),
            stats: StatsBoard::new(node),
            cluster,
        }
    }

    /// Samples this node once a second and shares the sample with the cluster, until `stop`.
    pub async fn run_sampler(self: Arc<Self>, state: AppState, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let sample = self.stats.sample(&state);
            if let Some(cluster) = &self.cluster
                && let Ok(text) = serde_json::to_string(&sample)
                && let Err(e) = cluster.publish(self.stats.node(), &text).await
            {
                tracing::debug!(error = %e, "admin: could not share this node's stats");
            }
        }
    }
}

/// The router's state: the gateway's and the dashboard's.
#[derive(Clone)]
pub struct AdminState {
    app: AppState,
    admin: Arc<Admin>,
}

impl FromRef<AdminState> for AppState {
    fn from_ref(state: &AdminState) -> Self {
        state.app.clone()
    }
}

/// Everything under `/admin`.
pub fn router(admin: Arc<Admin>, app: AppState) -> Router {
    let state = AdminState { app, admin };
    let api = Router::new()
        .route("/overview", get(api::overview))
        .route("/nodes", get(api::nodes))
        .route("/topics", get(api::topics))
        .route("/topics/{*topic}", get(api::topic))
        .route("/connections", get(api::connections))
        .route("/connections/{id}", get(api::connection).delete(crate::http_api::connections::close))
        .route("/connections/{id}/send", post(crate::http_api::connections::send))
        .route("/publish", post(crate::http_api::publish::publish))
        .route("/sinks", get(api::sinks))
        .route("/stream", get(stream::stream))
        .method_not_allowed_fallback(crate::http_api::method_not_allowed)
        .fallback(|| async { ApiError::NotFound("no such admin API route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), require_session_for_api))
        .layer(middleware::from_fn_with_state(state.app.clone(), crate::http_api::count_errors))
        .layer(DefaultBodyLimit::max(state.app.config.limits.max_api_body_size));
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/assets/{name}", get(assets::asset))
        // `nest` leaves out `/admin/api/` itself: it gets the API's answers too.
        .route_service("/admin/api/", api.clone().with_state(state.clone()))
        .nest("/admin/api", api)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Whether the request carries a valid session cookie.
fn has_session(admin: &Admin, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && admin.sessions.verify(value))
}

/// `/admin/api/*`: 401 without a session; a mutating call must be JSON (a cross-site
/// form cannot send that, on top of the SameSite=Strict cookie).
async fn require_session_for_api(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if !has_session(&state.admin, request.headers()) {
        return ApiError::Unauthenticated("log in at /admin/login".into()).into_response();
    }
    let mutating = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH);
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if mutating && !json {
        let body = axum::Json(
            serde_json::json!({"error": {"code": "VALIDATION_ERROR", "message": "send Content-Type: application/json"}}),
        );
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, body).into_response();
    }
    next.run(request).await
}

/// The CSP and the other hardening headers, on every admin response.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(assets::CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn index(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if has_session(&state.admin, &headers) {
        assets::page("index.html")
    } else {
        Redirect::to("/admin/login").into_response()
    }
}

async fn login_page() -> Response {
    assets::page("login.html")
}

/// The login form's body.
#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
}

/// `POST /admin/login`: a session cookie and on to `/admin`, or back to the form.
async fn login(
    State(state): State<AdminState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let admin = &state.admin;
    let ip = remote.ip();
    if !admin.throttle.allows(ip) {
        tracing::warn!(%ip, "admin: login throttled");
        return Redirect::to("/admin/login?error=rate").into_response();
    }
    let password = form.map(|f| f.0.password).unwrap_or_default();
    if !admin.sessions.password_matches(&password) {
        admin.throttle.failed(ip);
        tracing::warn!(%ip, "admin: wrong password");
        return Redirect::to("/admin/login?error=1").into_response();
    }
    let (value, ttl) = admin.sessions.issue();
    // Secure when the client reached us over TLS (a load balancer terminating it says so).
    let secure = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    tracing::info!(%ip, "admin: logged in");
    let mut response = Redirect::to("/admin").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /admin/logout`: the cookie is cleared.
async fn logout() -> Response {
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sb_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

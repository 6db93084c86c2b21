//! One typed configuration tree: built-in defaults < TOML file < environment < flags.
//! The file's strings may use `${VAR}` and `${VAR:-default}` (`interpolate`).
//!
//! This module owns every setting's name, default and validation. It must never bind a
//! port or open a connection: `validate()` runs before anything is started, and its
//! errors name the setting at fault so `serve` can exit with code 2 and a useful message.

mod env;
mod interpolate;
mod load;
mod overlay;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::{Environment, ProcessEnvironment};

pub use crate::sinks::config::{RouteConfig, RoutingConfig, SinkConfig, StorageConfig};
pub use load::{ConfigSources, FlagOverrides};
pub use overlay::env_name;

/// The commented TOML printed by `signalbox default-config`; a test keeps it equal to
/// [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

/// A configuration problem, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A setting has an invalid value.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// The setting, as TOML path and, where one exists, environment variable.
        setting: String,
        /// What is wrong and what to set.
        message: String,
    },
}

impl From<crate::sinks::config::SinkConfigError> for ConfigError {
    // The sink configs sit below this module and report their own error; the text stays
    // exactly "invalid setting <setting>: <message>".
    fn from(e: crate::sinks::config::SinkConfigError) -> Self {
        Self::Invalid { setting: e.setting, message: e.message }
    }
}

impl ConfigError {
    pub(crate) fn invalid(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { setting: setting.into(), message: message.into() }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP + WebSocket address (`SIGNALBOX_LISTEN`, `--listen`).
    pub listen: String,
    /// Development mode (`SIGNALBOX_DEV=1`, `--dev`).
    pub dev: bool,
    /// `memory`, or a `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://`
    /// URL (`SIGNALBOX_BROKER`).
    pub broker: String,
    /// Origins allowed to open a WebSocket; empty = any (`SIGNALBOX_ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// Client tokens and backend API keys.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// The HTTP edge before a connection upgrades: timeouts and bounds (`[http]`).
    pub http: HttpConfig,
    /// WebSocket heartbeat and close handshake.
    pub websocket: WebSocketConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Several nodes over a Redis broker (`[cluster]`).
    pub cluster: ClusterConfig,
    /// The Socket.IO endpoint (`[socketio]`).
    pub socketio: SocketIoConfig,
    /// History kept for resume, across all topics.
    pub history: HistoryConfig,
    /// Per-namespace policy (`[namespaces.project]`).
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// How routed messages reach sinks: deadline, retries, outbox bounds.
    pub routing: RoutingConfig,
    /// Local state on disk (`[storage] data_dir` enables the outbox).
    pub storage: StorageConfig,
    /// Named backends for routed client messages (`[sinks.NAME]`).
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Client actions routed to sinks (`[[routes]]`), first match wins.
    pub routes: Vec<RouteConfig>,
    /// Action aliases (`[actions] subscribeToDeals = "subscribe"`): a client action name
    /// that behaves as a built-in action, for clients written against API Gateway route keys.
    pub actions: BTreeMap<String, String>,
    /// AWS API Gateway compatibility (`[apigw]`): `/@connections` and lifecycle webhooks.
    pub apigw: ApiGatewayConfig,
    /// The admin dashboard (`[admin]`), off unless a password is set.
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            dev: false,
            broker: "memory".into(),
            allowed_origins: Vec::new(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            websocket: WebSocketConfig::default(),
            shutdown: ShutdownConfig::default(),
            cluster: ClusterConfig::default(),
            socketio: SocketIoConfig::default(),
            history: HistoryConfig::default(),
            namespaces: BTreeMap::new(),
            routing: RoutingConfig::default(),
            storage: StorageConfig::default(),
            sinks: BTreeMap::new(),
            routes: Vec::new(),
            actions: BTreeMap::new(),
            apigw: ApiGatewayConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

impl Config {
    /// The policy of `namespace`, or the defaults when it is not configured.
    pub fn namespace(&self, namespace: &str) -> NamespaceConfig {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret (`SIGNALBOX_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256/ES256 (`SIGNALBOX_JWT_PUBLIC_KEY_FILE`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` (`SIGNALBOX_JWT_ISSUER`).
    pub jwt_issuer: Option<String>,
    /// Required `aud` (`SIGNALBOX_JWT_AUDIENCE`).
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,
    /// Bearer keys for `/api/*` (`SIGNALBOX_API_KEYS`, comma-separated).
    pub api_keys: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::ZERO,
            api_keys: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter directive, e.g. `info` or `signalbox=debug` (`SIGNALBOX_LOG`).
    pub level: String,
    /// `json` or `text` (`SIGNALBOX_LOG_FORMAT`).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Json }
    }
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client message accepted, in bytes; larger gets `PAYLOAD_TOO_LARGE`, and more
    /// than twice this closes the connection with 1009.
    pub max_message_size: usize,
    /// Sustained client messages per second per connection.
    pub rate_per_second: u32,
    /// Token bucket size (burst) per connection.
    pub rate_burst: u32,
    /// Topics one connection may hold, the automatic ones included.
    pub max_subscriptions: usize,
    /// Connections in all.
    pub max_connections: usize,
    /// Connections per client IP.
    pub max_connections_per_ip: usize,
    /// Frames queued for one connection before it is cut as a slow consumer (4008).
    pub send_queue_events: usize,
    /// Bytes queued for one connection before it is cut as a slow consumer (4008).
    pub send_queue_bytes: usize,
    /// Largest backend API request body, in bytes.
    pub max_api_body_size: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            rate_per_second: 50,
            rate_burst: 100,
            max_subscriptions: 1000,
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            send_queue_events: 1024,
            send_queue_bytes: 8 * 1024 * 1024,
            max_api_body_size: 1024 * 1024,
        }
    }
}

/// The HTTP edge: what a connection may hold before it upgrades to a WebSocket (or
/// while it serves API requests), so idle and unfinished requests cannot exhaust the node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The request line and headers must arrive within this time of the connection's
    /// accept (or of the first byte of a later request on a keep-alive connection).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this time.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request must be read and answered within this time once its headers arrived.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Request line and headers together, in bytes; beyond it the answer is `431`.
    pub max_header_bytes: usize,
    /// Connections not upgraded to a WebSocket (handshakes, API keep-alive), in all.
    /// When full, the oldest one with no request in progress is closed to make room.
    pub max_pending_connections: usize,
    /// Connections not upgraded to a WebSocket from one client IP; beyond it new ones
    /// are answered `429` and closed.
    pub max_pending_connections_per_ip: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_pending_connections: 4096,
            max_pending_connections_per_ip: 1024,
        }
    }
}

/// WebSocket heartbeat and close handshake.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How often the server pings each client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a client may take to answer a ping before it is dropped.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// How long the server waits for the client's close reply.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Per-connection read buffer, bytes (small: it is paid once per connection).
    pub read_buffer_size: usize,
    /// Bytes gathered before a write syscall; frames queued together go out in one write.
    pub write_buffer_size: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            close_timeout: Duration::from_secs(10),
            read_buffer_size: 512,
            write_buffer_size: 16 * 1024,
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Deadline for closing connections and flushing after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_period: Duration::from_secs(10) }
    }
}

/// Several nodes over a Redis broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long a node's presence entries live in Redis without a refresh (refreshed
    /// every third of it): a crashed node's subscribers leave presence, with `leave`
    /// events, within 4/3 of it.
    #[serde(with = "humantime_serde")]
    pub presence_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { presence_ttl: Duration::from_secs(45) }
    }
}

/// The Socket.IO endpoint at `/socket.io/`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Namespaces clients may connect to (`["/ws"]`); empty = any. A CONNECT to another
    /// gets `connect_error`.
    pub namespaces: Vec<String>,
    /// Connection state recovery: how long a lost client's session is kept for it to
    /// come back with every missed event; zero (the default, as in Socket.IO) = off.
    #[serde(with = "humantime_serde")]
    pub recovery: Duration,
}

/// The admin dashboard at `/admin` (SPEC §11).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The dashboard's password (`SIGNALBOX_ADMIN_PASSWORD`); empty (the default) turns
    /// `/admin` off: every path under it answers 404.
    pub password: String,
    /// How long a login lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Failed logins allowed per client IP per minute (and ten times that from all IPs).
    pub login_attempts_per_minute: u32,
}

impl AdminConfig {
    /// Whether the dashboard is on.
    pub fn enabled(&self) -> bool {
        !self.password.is_empty()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { password: String::new(), session_ttl: Duration::from_secs(12 * 3600), login_attempts_per_minute: 10 }
    }
}

// Never print the password (configuration dumps and logs use Debug).
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("password", &if self.enabled() { "<set>" } else { "<empty>" })
            .field("session_ttl", &self.session_ttl)
            .field("login_attempts_per_minute", &self.login_attempts_per_minute)
            .finish()
    }
}

/// AWS API Gateway compatibility: the management API at `/@connections/{id}` and the
/// `$connect`/`$disconnect` lifecycle webhooks (SPEC §9.3).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiGatewayConfig {
    /// `ACCESS_KEY_ID:SECRET` pairs whose SigV4 signatures `/@connections` accepts
    /// (`SIGNALBOX_APIGW_CREDENTIALS`, comma-separated); several, for rotation.
    pub credentials: Vec<String>,
    /// Bytes a `POST /@connections/{id}` body may hold (API Gateway's 128 KiB by default).
    pub max_post_size: usize,
    /// Receives the `$connect` event before an upgrade completes; a non-2xx answer refuses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// Receives the `$disconnect` event after a connection closed (best effort).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect_url: Option<String>,
    /// How long one lifecycle webhook call may take, answer included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `requestContext.stage` in lifecycle events.
    pub stage: String,
}

impl Default for ApiGatewayConfig {
    fn default() -> Self {
        Self {
            credentials: Vec::new(),
            max_post_size: 128 * 1024,
            connect_url: None,
            disconnect_url: None,
            timeout: Duration::from_secs(5),
            stage: "signalbox".into(),
        }
    }
}

/// History kept for resume, across all topics (per-topic sizes are per namespace).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Bytes all topics' history and retained state may take in memory; beyond it the
    /// oldest events across all topics are evicted first.
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { max_bytes: 256 * 1024 * 1024 }
    }
}

/// Who may subscribe to a namespace's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SubscribePolicy {
    /// A pattern in the token's `topics` claim must match.
    #[default]
    Token,
    /// Any authenticated user.
    Authenticated,
    /// Only the user whose id is the topic's id (`ns:<sub>`).
    Owner,
}

/// Policy of one namespace.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Who may subscribe.
    pub subscribe: SubscribePolicy,
    /// Whether clients may publish into it.
    pub client_publish: bool,
    /// Events kept for resume; 0 = none.
    pub history_size: usize,
    /// How long events stay in history; zero keeps none.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// How long a topic's retained state is kept after it was last set.
    #[serde(with = "humantime_serde")]
    pub retained_ttl: Duration,
    /// Subscribers get `join`/`leave` events when connections subscribe and leave.
    pub join_leave: bool,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            subscribe: SubscribePolicy::Token,
            client_publish: false,
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            retained_ttl: Duration::from_secs(24 * 3600),
            join_leave: false,
        }
    }
}

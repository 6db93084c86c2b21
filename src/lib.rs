//! Signalbox: a self-hosted real-time gateway. Clients hold a WebSocket, subscribe to
//! topics and receive every event in order; backends publish over HTTP.
//!
//! # Layout
//!
//! ```text
//! main.rs        the binary: CLI → config → telemetry → serve; exit codes
//! cli.rs         command-line flags (serve | token | check-config | default-config)
//! config/        one typed tree: defaults < TOML < env < flags; validate() before binding
//! app/           composition root: builds broker, hub, auth, sinks from config; runs and shuts down
//! state.rs       what handlers and connection tasks share (trait objects only)
//! shutdown.rs    signals; the fixed shutdown order
//! telemetry.rs   JSON/text logs on stderr
//! metrics.rs     every metric name and label; Prometheus rendering
//! token.rs       `signalbox token`
//! domain/        pure types: Topic, ConnectionId, UserId, Event, StreamPosition, ErrorCode
//! codec/         wire encoding of server frames: FrameText (shared bytes), encode_delivery
//! auth/          Authenticator trait + JWT, API keys, topic ACL
//! broker/        Broker trait (offsets, ordered hand-off to fan-out) + memory broker
//! cluster/       cross-node services on the Redis broker: the cluster-wide connection directory
//! hub/           topic registry + fan-out + presence, connection registry + directory, outbound queues
//! sinks/         routed client messages: routes, sinks (sqs, http, redis_stream), retry, outbox
//! listener/      accept loop, HTTP/1.1 until upgrade: handshake/idle timeouts, pending limits, file limit
//! ws/            /ws: upgrade, per-connection reader/writer, protocol frames, close codes
//! http_api/      /api/* backend API, /health, /ready, /metrics
//! socketio/      /socket.io/: Engine.IO (polling, WebSocket, upgrade), namespaces, recovery
//! apigw/         API Gateway compatibility: /@connections management API, $connect/$disconnect webhooks
//! ```
//!
//! Data flow and invariants: see `ARCHITECTURE.md`.

pub mod admin;
pub mod apigw;
pub mod app;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod domain;
pub mod http_api;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod shutdown;
pub mod sinks;
pub mod socketio;
pub mod state;
pub mod telemetry;
pub mod token;
pub mod ws;

pub use app::{BuildError, Gateway, run};
/// The version and the git revision it was built from, e.g. `0.1.0 (1a2b3c4d5e6f)`
/// (`signalbox --version`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SIGNALBOX_GIT_REV"), ")");
pub use config::{Config, DEFAULT_CONFIG_TOML};

//! What request handlers and connection tasks share: built once by the composition root.
//!
//! Holds the hub and the auth and connection-directory seams as trait objects, never
//! concrete broker, directory or JWT types.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apigw::Lifecycle;
use crate::auth::{AccessPolicy, ApiKeys, Authenticator, SigV4Verifier};
use crate::config::Config;
use crate::hub::{ConnectionDirectory, Hub};
use crate::metrics::Metrics;
use crate::sinks::dispatch::Dispatcher;

/// Shared server state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

/// The shared parts.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Topics, connections, publishing.
    pub hub: Hub,
    /// List, message and close connections by id (the API and the reply paths use this,
    /// not the hub's registry, so a cluster directory can answer for other nodes).
    pub directory: Arc<dyn ConnectionDirectory>,
    /// Verifies client tokens.
    pub authenticator: Arc<dyn Authenticator>,
    /// Topic access rules.
    pub policy: AccessPolicy,
    /// Backend API keys.
    pub api_keys: ApiKeys,
    /// SigV4 credentials of the API Gateway management API (`[apigw] credentials`).
    pub sigv4: SigV4Verifier,
    /// The `$connect`/`$disconnect` webhooks, when configured.
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Metric handles.
    pub metrics: Metrics,
    /// Routes and sinks for client messages with a routed action.
    pub dispatcher: Arc<Dispatcher>,
    /// Fires when the server starts shutting down; connection tokens are its children.
    pub shutdown: CancellationToken,
    /// Tracks every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// This node's Socket.IO polling sessions and recovery store.
    pub socketio: crate::socketio::SocketIoState,
    draining: AtomicBool,
    started: AtomicBool,
}

impl AppState {
    /// Bundles the shared parts; the access policy, the API keys and the SigV4
    /// credentials come from `config`.
    #[allow(clippy::too_many_arguments, reason = "the composition root's one call; each part is distinct")]
    pub fn new(
        config: Config,
        hub: Hub,
        directory: Arc<dyn ConnectionDirectory>,
        authenticator: Arc<dyn Authenticator>,
        metrics: Metrics,
        dispatcher: Arc<Dispatcher>,
        lifecycle: Option<Arc<Lifecycle>>,
        shutdown: CancellationToken,
    ) -> Self {
        // Both follow from the validated config alone.
        let policy = AccessPolicy::new(config.dev, config.namespaces.clone());
        let api_keys = ApiKeys::new(&config.auth.api_keys);
        // Validated with the configuration: an error here cannot happen after `validate`.
        let sigv4 = SigV4Verifier::from_pairs(&config.apigw.credentials).unwrap_or_default();
        Self {
            inner: Arc::new(Shared {
                config,
                hub,
                directory,
                authenticator,
                policy,
                api_keys,
                sigv4,
                lifecycle,
                metrics,
                dispatcher,
                shutdown,
                tasks: TaskTracker::new(),
                socketio: crate::socketio::SocketIoState::default(),
                draining: AtomicBool::new(false),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// Marks the server as accepting connections.
    pub fn mark_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    /// Marks the server as draining: `/ready` answers 503 and upgrades are refused.
    pub fn mark_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Whether the server accepts connections (started and not draining).
    pub fn is_accepting(&self) -> bool {
        self.inner.started.load(Ordering::Acquire) && !self.is_draining()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

//! The composition root: the only place that names concrete brokers, authenticators and
//! sinks, builds them from configuration, and runs the services in the shutdown order.

pub mod routing;

pub use routing::check;

use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, JwtAuthenticator, JwtKeyError, NoTokens};
use crate::broker::redis::{RedisBroker, StoreError, Target};
use crate::broker::{Broker, HistoryLimits, MemoryBroker};
use crate::cluster::{DirectoryOptions, RedisDirectory};
use crate::config::Config;
use crate::hub::{CloseReason, ConnectionDirectory, ConnectionRegistry, Hub, LocalDirectory, TopicRegistry};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::ws::replies::ConnectionReplies;

/// Why the gateway could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration failed validation.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The JWT public key could not be loaded.
    #[error("invalid setting auth.jwt_public_key_file (SIGNALBOX_JWT_PUBLIC_KEY_FILE): {0}")]
    JwtKey(#[from] JwtKeyError),
    /// Sinks, routes or the outbox could not be set up.
    #[error(transparent)]
    Routing(#[from] routing::RoutingBuildError),
    /// The Redis broker could not be set up.
    #[error("invalid setting broker (SIGNALBOX_BROKER): {0}")]
    Broker(#[from] StoreError),
    /// The lifecycle webhooks (`[apigw] connect_url`, `disconnect_url`) could not be set up.
    #[error("{0}")]
    Lifecycle(String),
}

/// The broker's Redis target, parsed from `broker` (`None` for the memory broker).
pub fn broker_target(config: &Config) -> Result<Option<Target>, BuildError> {
    if config.broker == "memory" {
        return Ok(None);
    }
    Target::parse(&config.broker).map(Some).map_err(|e| BuildError::Broker(e.into()))
}

/// The broker the gateway runs, with what its upkeep needs.
enum BrokerKind {
    Memory(Arc<MemoryBroker>),
    Redis(Arc<RedisBroker>),
}

/// A gateway built from configuration, not yet serving.
pub struct Gateway {
    state: AppState,
    /// The broker, for its background task (history expiry, or the Redis subscriber).
    broker: BrokerKind,
    /// With the Redis broker: the cluster directory, for its background tasks.
    cluster_directory: Option<Arc<RedisDirectory>>,
    /// The admin dashboard, when `[admin] password` is set.
    admin: Option<Arc<crate::admin::Admin>>,
}

impl Gateway {
    /// Validates `config` and builds every component. Nothing is bound or started, and no
    /// backend is contacted; the outbox (if configured) is opened and locked.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        config.validate()?;
        let target = broker_target(&config)?;
        let metrics = Metrics::new();
        let authenticator: Arc<dyn Authenticator> =
            if config.auth.jwt_secret.is_some() || config.auth.jwt_public_key_file.is_some() {
                Arc::new(JwtAuthenticator::from_config(&config.auth)?)
            } else {
                Arc::new(NoTokens)
            };
        let limits = &config.limits;
        let join_leave = config.namespaces.iter().filter(|(_, n)| n.join_leave).map(|(name, _)| name.clone());
        let topics =
            Arc::new(TopicRegistry::new(limits.max_subscriptions, metrics.clone()).with_join_leave(join_leave));
        let connections = Arc::new(ConnectionRegistry::new(limits.max_connections, limits.max_connections_per_ip));
        let limits = HistoryLimits::from_config(&config);
        let (broker, kind): (Arc<dyn Broker>, _) = match target {
            None => {
                let memory = Arc::new(MemoryBroker::new(topics.clone(), limits));
                (memory.clone(), BrokerKind::Memory(memory))
            }
            Some(target) => {
                let redis =
                    Arc::new(RedisBroker::connect(target, topics.clone(), limits, config.cluster.presence_ttl).await?);
                tracing::info!(node = redis.node_id(), url = %crate::broker::redis::conn::redact(&config.broker), "broker: Redis");
                (redis.clone(), BrokerKind::Redis(redis))
            }
        };
        // With Redis the directory spans the cluster (its tasks start in `serve`).
        let cluster_directory = match &kind {
            BrokerKind::Redis(redis) => {
                Some(Arc::new(RedisDirectory::new(redis.clone(), connections.clone(), DirectoryOptions::default())))
            }
            BrokerKind::Memory(_) => None,
        };
        let directory: Arc<dyn ConnectionDirectory> = match &cluster_directory {
            Some(cluster) => cluster.clone(),
            None => Arc::new(LocalDirectory::new(connections.clone())),
        };
        let replies = Arc::new(ConnectionReplies::new(directory.clone()));
        let hub = Hub::new(topics, connections, broker, metrics.clone());
        let sinks = routing::build_sinks(&config, &metrics).await?;
        let dispatcher = Arc::new(routing::build_dispatcher(&config, sinks, replies)?);
        warn_about_replays_beyond_the_send_queue(&config);
        if config.dev {
            tracing::warn!(
                "DEVELOPMENT MODE: anonymous clients are allowed, every topic is open and the API needs no key. \
                 Never run --dev in production."
            );
        }
        let lifecycle =
            crate::apigw::Lifecycle::new(&config.apigw, metrics.clone()).map_err(BuildError::Lifecycle)?.map(Arc::new);
        let admin = config.admin.enabled().then(|| {
            let (node, cluster): (String, Option<Arc<dyn crate::admin::ClusterStats>>) = match &kind {
                BrokerKind::Redis(redis) => {
                    (redis.node_id().to_owned(), Some(Arc::new(crate::cluster::RedisClusterStats::new(redis.clone()))))
                }
                BrokerKind::Memory(_) => ("local".to_owned(), None),
            };
            Arc::new(crate::admin::Admin::new(&config.admin, node, cluster))
        });
        let state = AppState::new(
            config,
            hub,
            directory,
            authenticator,
            metrics,
            dispatcher,
            lifecycle,
            CancellationToken::new(),
        );
        if let BrokerKind::Redis(redis) = &kind {
            // Recoverable Socket.IO sessions in Redis: a client may come back on any node.
            let store = crate::socketio::recovery::RedisStore::new(redis.store().conn());
            state.socketio.use_store(Arc::new(store));
        }
        Ok(Self { state, broker: kind, cluster_directory, admin })
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down in order and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        // The Redis broker outlives the connections: the presence leaves of the connections
        // closed at shutdown are written to Redis before it stops.
        let stop_broker = CancellationToken::new();
        let mut broker_task = match self.broker {
            BrokerKind::Memory(broker) => tokio::spawn(broker.run_sweeper(state.shutdown.clone())),
            BrokerKind::Redis(broker) => tokio::spawn(broker.run(stop_broker.clone())),
        };
        // Deregisters this node's connections when `state.shutdown` is cancelled.
        let directory_task = self.cluster_directory.map(|d| tokio::spawn(d.run(state.shutdown.clone())));
        let stop_accepting = CancellationToken::new();
        let mut router = crate::http_api::router(state.clone());
        if let Some(admin) = self.admin {
            tokio::spawn(admin.clone().run_sampler(state.clone(), state.shutdown.clone()));
            router = router.merge(crate::admin::router(admin, state.clone()));
        }
        // Ready before the first accept: the binary prints its "listening" line before
        // calling `serve`, and a client connecting right after it must not get a 503.
        state.mark_started();
        let server = {
            let (stop, limits, metrics) = (stop_accepting.clone(), state.config.http.clone(), state.metrics.clone());
            let http = crate::http_api::HttpService::new(router, state.clone());
            tokio::spawn(crate::listener::serve(listener, http, limits, metrics, stop))
        };
        let upkeep = {
            let (metrics, stop) = (state.metrics.clone(), state.shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Metrics::UPKEEP_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => metrics.run_upkeep(),
                    }
                }
            })
        };
        let liveness = tokio::spawn(crate::ws::liveness::run(state.clone()));
        let health_checks = tokio::spawn(routing::run_health_checks(
            state.dispatcher.clone(),
            state.config.routing.health_check_interval,
            state.shutdown.clone(),
        ));
        // Drainers have their own token: they keep delivering while clients are closed,
        // and stop only when the outbox is flushed or the grace period is over.
        let (drainers, stop_drainers) = (TaskTracker::new(), CancellationToken::new());
        routing::start_drainers(&state.dispatcher, &state.config, &drainers, stop_drainers.clone());
        shutdown.await;

        let grace = state.config.shutdown.grace_period;
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(connections = state.hub.connections.len(), grace_seconds = grace.as_secs_f64(), "shutting down");
        state.mark_draining();
        stop_accepting.cancel();
        state.shutdown.cancel();
        state.hub.connections.close_all(CloseReason::Shutdown);
        state.tasks.close();
        if timeout(grace, state.tasks.wait()).await.is_err() {
            tracing::warn!(left = state.hub.connections.len(), "grace period over; dropping the remaining connections");
        }
        let result = match tokio::time::timeout_at(deadline, server).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => Ok(()),
        };
        routing::flush_outbox(&state.dispatcher, &drainers, stop_drainers, deadline).await;
        upkeep.abort();
        stop_broker.cancel();
        if timeout(BROKER_FLUSH, &mut broker_task).await.is_err() {
            broker_task.abort();
        }
        if let Some(task) = directory_task {
            task.abort();
        }
        liveness.abort();
        health_checks.abort();
        tracing::info!("shutdown complete");
        result
    }
}

/// How long a stopping node waits for the broker to write what it queued (the presence
/// leaves of the connections it closed).
const BROKER_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// A resume replays up to `history_size` events into the send queue at once; a smaller
/// queue cuts such a client with 4008 after the first part (it then resumes from there,
/// one queue-full at a time). Legal, but rarely intended.
fn warn_about_replays_beyond_the_send_queue(config: &Config) {
    let queue = config.limits.send_queue_events;
    let default = crate::config::NamespaceConfig::default();
    let namespaces =
        std::iter::once(("(default)", &default)).chain(config.namespaces.iter().map(|(n, c)| (n.as_str(), c)));
    for (name, namespace) in namespaces {
        if namespace.history_size > queue {
            tracing::warn!(
                namespace = name,
                history_size = namespace.history_size,
                send_queue_events = queue,
                "history_size exceeds limits.send_queue_events: a client resuming a full history is cut with 4008 and resumes in parts"
            );
        }
    }
}

/// Pending connections the kernel queues for `accept`. Rust's default (128) overflows
/// when a few hundred clients reconnect at once: the kernel then drops SYNs and those
/// clients wait a whole 1 s SYN retransmit. The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket for `addr` (`host:port`; port 0 picks a free port) with a
/// backlog of [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")))
}

/// Builds a gateway from `config` and serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let gateway = Gateway::build(config).await?;
    gateway.serve(listener, shutdown).await?;
    Ok(())
}

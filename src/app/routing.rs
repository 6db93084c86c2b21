//! The routing half of the composition root: builds each configured sink, the outbox (when
//! `[storage] data_dir` is set) and the dispatcher, and runs the sinks' health checks.
//!
//! The only place that names concrete sink types.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, SinkConfig};
use crate::metrics::Metrics;
use crate::sinks::dispatch::Dispatcher;
use crate::sinks::outbox::{Outbox, OutboxError, OutboxLimits};
use crate::sinks::router::Router;
use crate::sinks::{ClientReplies, Sink, SinkBuildError, SinkHandle};

/// Why routing could not be set up from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum RoutingBuildError {
    /// A sink could not be built.
    #[error(transparent)]
    Sink(#[from] SinkBuildError),
    /// A route's `when` is not a valid condition.
    #[error("invalid setting routes: {0}")]
    Route(#[from] crate::domain::FilterError),
    /// The outbox could not be opened.
    #[error("invalid setting storage.data_dir: cannot open the outbox: {0}")]
    Outbox(#[from] OutboxError),
}

/// The API Gateway compatibility lines of `check-config`: which access key ids may sign
/// `/@connections` calls (never a secret) and where the lifecycle webhooks go.
fn describe_apigw(apigw: &crate::config::ApiGatewayConfig) -> Vec<String> {
    let mut lines = Vec::new();
    let key_ids: Vec<&str> =
        apigw.credentials.iter().filter_map(|pair| pair.split_once(':')).map(|(id, _)| id).collect();
    if !key_ids.is_empty() {
        lines.push(format!(
            "apigw /@connections: SigV4 (execute-api) by access key {} or an API key; POST bodies up to {} bytes",
            key_ids.join(", "),
            apigw.max_post_size
        ));
    }
    for (event, url) in [("$connect", &apigw.connect_url), ("$disconnect", &apigw.disconnect_url)] {
        if let Some(url) = url {
            let url = crate::sinks::config::hide_password(url);
            lines.push(format!(
                "apigw {event} webhook -> {url} (timeout {})",
                humantime::format_duration(apigw.timeout)
            ));
        }
    }
    lines
}

/// `signalbox check-config`: validates `config`, builds its sinks and routes (no
/// network), checks that `data_dir` can be created and written, and describes what it
/// found, one line per sink and route.
pub async fn check(config: &Config) -> Result<Vec<String>, crate::app::BuildError> {
    config.validate()?;
    let broker = super::broker_target(config)?;
    let sinks = build_sinks(config, &Metrics::new()).await?;
    Router::new(&config.routes).map_err(RoutingBuildError::from)?;
    let mut lines = vec![match &broker {
        None => "broker memory (this node only)".to_owned(),
        Some(target) if target.is_cluster() => "broker Redis Cluster (sharded pub/sub)".to_owned(),
        Some(_) => "broker Redis".to_owned(),
    }];
    for sink in &sinks {
        let target = config.sinks.get(&sink.name).map(|c| format!(" -> {}", c.target())).unwrap_or_default();
        lines.push(format!("sink {} ({}){target}", sink.name, sink.kind));
    }
    for (alias, action) in &config.actions {
        lines.push(format!("action alias {alias:?} -> {action}"));
    }
    lines.extend(describe_apigw(&config.apigw));
    for route in &config.routes {
        let when: Vec<String> = route.when.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let when = if when.is_empty() { String::new() } else { format!(" when {}", when.join(", ")) };
        lines.push(format!("route {:?}{when} -> {}", route.action, route.sink));
    }
    match &config.storage.data_dir {
        Some(dir) => {
            let probe = dir.join(".signalbox-write-check");
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&probe, b"ok"))
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| OutboxError::Io(format!("{}: {e}", dir.display())))
                .map_err(RoutingBuildError::from)?;
            lines.push(format!("outbox in {} (accepted = on disk)", dir.display()));
        }
        None if !config.routes.is_empty() => lines.push(format!(
            "no outbox (storage.data_dir unset): accepted = the sink confirmed, within {}",
            humantime::format_duration(config.routing.deadline)
        )),
        None => {}
    }
    Ok(lines)
}

/// Builds every configured sink, without touching the network.
pub async fn build_sinks(config: &Config, metrics: &Metrics) -> Result<Vec<Arc<SinkHandle>>, RoutingBuildError> {
    let mut handles = Vec::with_capacity(config.sinks.len());
    for (name, sink_config) in &config.sinks {
        let sink = build_sink(name, sink_config).await?;
        handles.push(Arc::new(SinkHandle::new(name.clone(), sink_config.kind(), sink, metrics.sink(name))));
    }
    Ok(handles)
}

async fn build_sink(name: &str, config: &SinkConfig) -> Result<Arc<dyn Sink>, SinkBuildError> {
    Ok(match config {
        SinkConfig::Sqs(c) => Arc::new(crate::sinks::sqs::build(name, c).await?),
        SinkConfig::Http(c) => Arc::new(crate::sinks::http::build(name, c)?),
        SinkConfig::RedisStream(c) => Arc::new(crate::sinks::redis_stream::build(name, c).await?),
    })
}

/// Builds the dispatcher: with an outbox under `data_dir` when it is set (opening it
/// takes its lock: a second gateway on the same directory fails here), inline otherwise.
pub fn build_dispatcher(
    config: &Config,
    sinks: Vec<Arc<SinkHandle>>,
    replies: Arc<dyn ClientReplies>,
) -> Result<Dispatcher, RoutingBuildError> {
    let router = Router::new(&config.routes)?;
    let routing = &config.routing;
    Ok(match &config.storage.data_dir {
        Some(dir) => {
            let limits =
                OutboxLimits { max_messages: routing.outbox_max_messages, max_bytes: routing.outbox_max_bytes };
            let outbox = Outbox::open(dir, limits, replies.clone())?;
            Dispatcher::with_outbox(router, sinks, outbox, replies)
        }
        None => Dispatcher::inline(router, sinks, routing.deadline, routing.retry, replies),
    })
}

/// Checks every sink now, then every `interval`, until `stop`. Checks run concurrently,
/// so one slow sink does not delay the others' status.
pub async fn run_health_checks(dispatcher: Arc<Dispatcher>, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let checks = dispatcher.sinks().map(|sink| sink.check());
                futures_util::future::join_all(checks).await;
            }
        }
    }
}

/// Starts the outbox's drainers, if there is an outbox.
pub fn start_drainers(dispatcher: &Dispatcher, config: &Config, tracker: &TaskTracker, stop: CancellationToken) {
    if let Some(outbox) = dispatcher.outbox() {
        let sinks: Vec<_> = dispatcher.sinks().cloned().collect();
        outbox.start_drainers(&sinks, config.routing.retry, tracker, stop);
    }
}

/// After clients are closed: lets the outbox drain until it is empty or `deadline`
/// passes, then stops the drainers and closes the store. What is left stays on disk and
/// is delivered after the next start.
pub async fn flush_outbox(
    dispatcher: &Dispatcher,
    drainers: &TaskTracker,
    stop_drainers: CancellationToken,
    deadline: tokio::time::Instant,
) {
    if let Some(outbox) = dispatcher.outbox() {
        while outbox.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = outbox.pending();
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown deadline: messages stay in the outbox and are delivered after the next start"
            );
        }
    }
    stop_drainers.cancel();
    drainers.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), drainers.wait()).await;
    if let Some(outbox) = dispatcher.outbox() {
        outbox.close().await;
    }
}

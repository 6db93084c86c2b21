//! Per-node figures for the dashboard, sampled once a second from the counters `/metrics`
//! already keeps (no work on the delivery path), and shared across a cluster through
//! [`ClusterStats`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::sinks::Health;
use crate::state::AppState;

/// How often a node samples itself (and the stream sends `stats`).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// A node whose last sample is older than this is left out (it stopped or crashed).
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// One node's figures (the contract of `/admin/api/nodes` and the stream's `stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's id (`local` on the memory broker).
    pub node: String,
    /// Whether it is the node that answered (set by the reader, not stored).
    #[serde(default, rename = "self")]
    pub is_self: bool,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Open connections (both protocols).
    pub connections: u64,
    /// Open Socket.IO connections.
    pub socketio_connections: u64,
    /// Subscriptions held.
    pub subscriptions: u64,
    /// Events published per second.
    pub publishes_per_sec: f64,
    /// Event frames written per second.
    pub deliveries_per_sec: f64,
    /// Client messages received per second.
    pub messages_per_sec: f64,
    /// Median publish-to-socket latency over the last interval.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// Error frames and API errors per second, by code (codes seen in the interval).
    pub errors_per_sec: BTreeMap<String, f64>,
    /// Connections closed with 4008 since start.
    pub slow_consumer_disconnects: u64,
    /// The broker as this node sees it.
    pub broker: BrokerStats,
    /// The sinks of routed messages.
    pub sinks: Vec<SinkStats>,
    /// The on-disk outbox, when configured.
    pub outbox: Option<OutboxStats>,
    /// When the sample was taken (RFC 3339).
    pub at: String,
    /// The same, in Unix milliseconds (for staleness).
    #[serde(default)]
    pub at_ms: u64,
}

/// The broker, from this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStats {
    /// `memory`, `redis` or `redis-cluster`.
    pub kind: String,
    /// Whether the last check reached it.
    pub up: bool,
    /// The last check's round trip.
    pub round_trip_ms: Option<f64>,
    /// Topics this node receives from it.
    pub subscriptions: Option<usize>,
}

/// One sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkStats {
    /// Its name (`[sinks.NAME]`).
    pub name: String,
    /// `sqs`, `http` or `redis_stream`.
    pub kind: String,
    /// `up`, `down` or `unknown`.
    pub status: String,
    /// The last error while down.
    pub error: Option<String>,
    /// Messages waiting for it in the outbox.
    pub outbox: u64,
}

/// The outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStats {
    /// Messages waiting.
    pub pending: u64,
    /// Messages given up on (in the dead-letter file) since start.
    pub dead_letters: u64,
}

/// Where nodes leave their samples for each other (Redis, in a cluster).
#[async_trait]
pub trait ClusterStats: Send + Sync {
    /// Stores this node's latest sample (JSON).
    async fn publish(&self, node: &str, sample: &str) -> Result<(), ClusterStatsError>;
    /// Every node's latest sample (JSON), this node's included.
    async fn read_all(&self) -> Result<Vec<String>, ClusterStatsError>;
}

/// The cluster's samples could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("cluster stats unavailable: {0}")]
pub struct ClusterStatsError(pub String);

/// This node's sampler and its latest sample.
pub struct StatsBoard {
    node: String,
    started: SystemTime,
    started_instant: Instant,
    latest: RwLock<Option<NodeStats>>,
    previous: parking_lot::Mutex<Option<(Instant, Counters)>>,
}

/// The raw figures read from the metrics text.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    connections: f64,
    socketio_connections: f64,
    subscriptions: f64,
    published: f64,
    deliveries: f64,
    messages: f64,
    slow_consumers: f64,
    dead_letters: f64,
    errors: BTreeMap<String, f64>,
    /// (upper bound in seconds, cumulative count), in bucket order.
    latency: Vec<(f64, f64)>,
    sink_outbox: BTreeMap<String, f64>,
}

impl StatsBoard {
    /// A board for node `node`.
    pub fn new(node: String) -> Self {
        Self {
            node,
            started: SystemTime::now(),
            started_instant: Instant::now(),
            latest: RwLock::new(None),
            previous: parking_lot::Mutex::new(None),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The latest sample, taking one first if there is none yet.
    pub fn latest(&self, state: &AppState) -> NodeStats {
        if let Some(latest) = self.latest.read().clone() {
            return latest;
        }
        self.sample(state)
    }

    /// Takes a sample now: rates over the time since the previous one.
    pub fn sample(&self, state: &AppState) -> NodeStats {
        state.metrics.record_broker(&state.hub.broker_status());
        let counters = Counters::parse(&state.metrics.render());
        let now = Instant::now();
        let previous = self.previous.lock().replace((now, counters.clone()));
        let (elapsed, before) = match &previous {
            Some((at, before)) => (now.duration_since(*at).as_secs_f64().max(0.001), before.clone()),
            None => (1.0, counters.clone()),
        };
        let rate = |after: f64, before: f64| ((after - before).max(0.0) / elapsed * 10.0).round() / 10.0;
        let errors_per_sec = counters
            .errors
            .iter()
            .map(|(code, after)| (code.clone(), rate(*after, before.errors.get(code).copied().unwrap_or(0.0))))
            .filter(|(_, r)| *r > 0.0)
            .collect();
        let (p50, p99) = latency_quantiles(&before.latency, &counters.latency);
        let status = state.hub.broker_status();
        let sinks = state
            .dispatcher
            .sinks()
            .map(|sink| {
                let health = sink.health();
                SinkStats {
                    name: sink.name.clone(),
                    kind: sink.kind.to_owned(),
                    status: match health {
                        Health::Up => "up",
                        Health::Down => "down",
                        Health::Unknown => "unknown",
                    }
                    .to_owned(),
                    error: if health == Health::Down { sink.last_error() } else { None },
                    outbox: count(counters.sink_outbox.get(&sink.name).copied().unwrap_or(0.0)),
                }
            })
            .collect();
        let outbox = state
            .dispatcher
            .outbox()
            .map(|o| OutboxStats { pending: o.pending(), dead_letters: count(counters.dead_letters) });
        let wall = OffsetDateTime::now_utc();
        let stats = NodeStats {
            node: self.node.clone(),
            is_self: true,
            started_at: OffsetDateTime::from(self.started).format(&Rfc3339).unwrap_or_default(),
            uptime_seconds: self.started_instant.elapsed().as_secs(),
            connections: count(counters.connections),
            socketio_connections: count(counters.socketio_connections),
            subscriptions: count(counters.subscriptions),
            publishes_per_sec: rate(counters.published, before.published),
            deliveries_per_sec: rate(counters.deliveries, before.deliveries),
            messages_per_sec: rate(counters.messages, before.messages),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            errors_per_sec,
            slow_consumer_disconnects: count(counters.slow_consumers),
            broker: BrokerStats {
                kind: status.kind.to_owned(),
                up: status.reachable,
                round_trip_ms: status.round_trip_ms,
                subscriptions: status.subscriptions,
            },
            sinks,
            outbox,
            at: wall.format(&Rfc3339).unwrap_or_default(),
            at_ms: u64::try_from(wall.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        };
        *self.latest.write() = Some(stats.clone());
        stats
    }

    /// Every node's latest sample: this one's, and the others' from `cluster` (stale ones
    /// left out). A cluster that cannot be read gives this node alone.
    pub async fn all(&self, state: &AppState, cluster: Option<&Arc<dyn ClusterStats>>) -> Vec<NodeStats> {
        let mine = self.latest(state);
        let mut nodes = vec![mine.clone()];
        if let Some(cluster) = cluster {
            match cluster.read_all().await {
                Ok(samples) => {
                    let horizon = mine.at_ms.saturating_sub(STALE_AFTER.as_millis() as u64);
                    nodes.extend(
                        samples
                            .iter()
                            .filter_map(|text| serde_json::from_str::<NodeStats>(text).ok())
                            .filter(|s| s.node != self.node && s.at_ms >= horizon)
                            .map(|mut s| {
                                s.is_self = false;
                                s
                            }),
                    );
                }
                Err(e) => tracing::debug!(error = %e, "admin: other nodes' stats unavailable"),
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }
}

/// A gauge or counter read as a float, as the whole number it is.
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 { value.round() as u64 } else { 0 }
}

/// Sums over nodes, for the overview cards.
pub fn totals(nodes: &[NodeStats]) -> serde_json::Value {
    let sum = |f: fn(&NodeStats) -> f64| (nodes.iter().map(f).sum::<f64>() * 10.0).round() / 10.0;
    let add = |f: fn(&NodeStats) -> u64| nodes.iter().map(f).sum::<u64>();
    serde_json::json!({
        "nodes": nodes.len(),
        "connections": add(|n| n.connections),
        "socketioConnections": add(|n| n.socketio_connections),
        "subscriptions": add(|n| n.subscriptions),
        "publishesPerSec": sum(|n| n.publishes_per_sec),
        "deliveriesPerSec": sum(|n| n.deliveries_per_sec),
    })
}

impl Counters {
    /// Reads the figures from Prometheus text (`name{labels} value` lines).
    fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            match name {
                "signalbox_connections" => c.connections = value,
                "signalbox_socketio_connections" => c.socketio_connections = value,
                "signalbox_subscriptions" => c.subscriptions = value,
                "signalbox_events_published_total" => c.published += value,
                "signalbox_deliveries_total" => c.deliveries += value,
                "signalbox_messages_received_total" => c.messages += value,
                "signalbox_slow_consumer_disconnects_total" => c.slow_consumers += value,
                "signalbox_sink_messages_total" if label(labels, "outcome") == Some("dead_lettered") => {
                    c.dead_letters += value;
                }
                "signalbox_errors_total" => {
                    if let Some(code) = label(labels, "code") {
                        *c.errors.entry(code.to_owned()).or_insert(0.0) += value;
                    }
                }
                "signalbox_outbox_messages" => {
                    if let Some(sink) = label(labels, "sink") {
                        c.sink_outbox.insert(sink.to_owned(), value);
                    }
                }
                "signalbox_delivery_latency_seconds_bucket" => {
                    let bound = label(labels, "le")
                        .map(|le| if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) });
                    if let Some(bound) = bound.filter(|b| !b.is_nan()) {
                        c.latency.push((bound, value));
                    }
                }
                _ => {}
            }
        }
        c.latency.sort_by(|a, b| a.0.total_cmp(&b.0));
        c
    }
}

/// The value of `key` in a label list `a="x",b="y"`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// p50 and p99 in milliseconds of the deliveries between two cumulative histograms,
/// interpolated linearly inside the bucket (`None` without deliveries in between).
fn latency_quantiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> (Option<f64>, Option<f64>) {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before.iter().find(|(b, _)| b == bound).map_or(0.0, |(_, c)| *c);
            (*bound, (count - earlier).max(0.0))
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, c)| *c);
    if total <= 0.0 {
        return (None, None);
    }
    let quantile = |q: f64| {
        let target = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &deltas {
            if cumulative >= target {
                if bound.is_infinite() {
                    return lower.0 * 1000.0;
                }
                let span = cumulative - lower.1;
                let fraction = if span > 0.0 { (target - lower.1) / span } else { 1.0 };
                return ((lower.0 + (bound - lower.0) * fraction) * 1000.0 * 1000.0).round() / 1000.0;
            }
            lower = (bound, cumulative);
        }
        lower.0 * 1000.0
    };
    (Some(quantile(0.5)), Some(quantile(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP signalbox_connections Open client connections.
# TYPE signalbox_connections gauge
signalbox_connections 12
signalbox_socketio_connections 2
signalbox_subscriptions 30
signalbox_events_published_total 100
signalbox_deliveries_total 1000
signalbox_errors_total{code="VALIDATION_ERROR"} 3
signalbox_errors_total{code="RATE_LIMIT_EXCEEDED"} 1
signalbox_outbox_messages{sink="pipeline"} 4
signalbox_delivery_latency_seconds_bucket{le="0.001"} 50
signalbox_delivery_latency_seconds_bucket{le="0.0025"} 90
signalbox_delivery_latency_seconds_bucket{le="+Inf"} 100
"#;

    #[test]
    fn reads_the_metrics_text() {
        let c = Counters::parse(TEXT);
        assert_eq!((c.connections, c.socketio_connections, c.subscriptions), (12.0, 2.0, 30.0));
        assert_eq!((c.published, c.deliveries), (100.0, 1000.0));
        assert_eq!(c.errors.get("VALIDATION_ERROR"), Some(&3.0));
        assert_eq!(c.sink_outbox.get("pipeline"), Some(&4.0));
        assert_eq!(c.latency.len(), 3);
        assert!(c.latency[2].0.is_infinite());
        // Garbage lines are skipped, never a panic.
        let junk = Counters::parse(
            "signalbox_connections\n{}\nsignalbox_connections x\n\u{0}\nsignalbox_errors_total{code} 1",
        );
        assert_eq!(junk, Counters::default());
    }

    #[test]
    fn quantiles_of_the_interval_only() {
        let before = vec![(0.001, 50.0), (0.0025, 90.0), (f64::INFINITY, 100.0)];
        let after = vec![(0.001, 150.0), (0.0025, 190.0), (f64::INFINITY, 200.0)];
        // 100 new deliveries: 100 under 1 ms, so p50 inside the first bucket.
        let (p50, p99) = latency_quantiles(&before, &after);
        assert_eq!(p50, Some(0.5));
        assert_eq!(p99, Some(0.99));
        assert_eq!(latency_quantiles(&after, &after), (None, None));
        let (p50, p99) = latency_quantiles(&[], &before);
        assert_eq!(p50, Some(1.0));
        assert_eq!(p99, Some(2.5), "the last finite bound when the tail is beyond it");
    }
}

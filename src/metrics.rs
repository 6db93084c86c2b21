//! Every metric name and label in one place (SPEC §8), rendered in Prometheus text.
//!
//! Each gateway owns its own recorder (no process-global state), so several gateways in
//! one test process keep separate numbers. Labels are bounded sets only (error codes,
//! close reasons): never a user, topic or connection id.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::domain::ErrorCode;

const LATENCY_BUCKETS: &[f64] = &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const DURATION_BUCKETS: &[f64] = &[1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 4.0 * 3600.0, 24.0 * 3600.0];

/// (name, type, help) of every metric, so `/metrics` lists each one even before it has a
/// sample (e.g. sink metrics on a server without sinks).
const DESCRIPTIONS: &[(&str, &str, &str)] = &[
    ("signalbox_connections", "gauge", "Open client connections."),
    ("signalbox_socketio_connections", "gauge", "Open Socket.IO connections (also counted in signalbox_connections)."),
    ("signalbox_subscriptions", "gauge", "Topic subscriptions held by open connections."),
    ("signalbox_messages_received_total", "counter", "Client messages received."),
    ("signalbox_events_published_total", "counter", "Events published (HTTP API and clients)."),
    ("signalbox_deliveries_total", "counter", "Event frames written to client sockets."),
    ("signalbox_delivery_latency_seconds", "histogram", "Publish to written-to-socket latency."),
    (
        "signalbox_slow_consumer_disconnects_total",
        "counter",
        "Connections closed with 4008 because their send queue overflowed.",
    ),
    ("signalbox_sink_messages_total", "counter", "Routed client messages by sink and outcome."),
    ("signalbox_broker_up", "gauge", "1 when the last check reached the broker (the memory broker always)."),
    ("signalbox_broker_round_trip_seconds", "gauge", "Round trip of the last broker check (Redis)."),
    (
        "signalbox_broker_subscriptions",
        "gauge",
        "Topics this node receives from the broker (Redis pub/sub channels held).",
    ),
    ("signalbox_broker_gaps_filled_total", "counter", "Gaps in a topic's sequence filled from the topic's history."),
    (
        "signalbox_broker_resyncs_total",
        "counter",
        "Topics whose local subscribers were closed with 1012 (history lost or no longer covering a gap).",
    ),
    ("signalbox_broker_reconnects_total", "counter", "Lost or silent broker pub/sub connections replaced."),
    ("signalbox_connection_duration_seconds", "histogram", "How long connections stayed open."),
    ("signalbox_errors_total", "counter", "Error frames and API errors sent, by code."),
    ("signalbox_connections_refused_total", "counter", "WebSocket upgrades refused, by reason."),
    (
        "signalbox_apigw_requests_total",
        "counter",
        "API Gateway management API calls (/@connections), by outcome (ok, or the AWS error type).",
    ),
    (
        "signalbox_apigw_webhook_failures_total",
        "counter",
        "Lifecycle webhook calls that failed (unreachable, timed out, $disconnect non-2xx), by event.",
    ),
    (
        "signalbox_ws_protocol_errors_total",
        "counter",
        "Connections closed because the client broke the WebSocket protocol, by close code.",
    ),
    ("signalbox_sink_retries_total", "counter", "Retried sink sends (inline and from the outbox), by sink."),
    ("signalbox_outbox_messages", "gauge", "Messages waiting in the on-disk outbox, by sink."),
    ("signalbox_sink_up", "gauge", "1 when the sink's last health check or send succeeded, by sink."),
    (
        "signalbox_http_pending_connections",
        "gauge",
        "Accepted TCP connections not (yet) upgraded to a WebSocket: handshakes and API keep-alive.",
    ),
    (
        "signalbox_http_connections_shed_total",
        "counter",
        "Connections closed before upgrading, by reason (timeouts, pending limits, eviction).",
    ),
    ("signalbox_accept_errors_total", "counter", "Failed accept calls, by kind (file_limit, other)."),
];

/// Why a connection was closed before it upgraded (the label values of
/// `signalbox_http_connections_shed_total`): `handshake_timeout` its request line and headers
/// were not in within `http.handshake_timeout`; `idle_timeout` a keep-alive connection sat
/// idle for `http.idle_timeout`; `request_timeout` a request was not answered within
/// `http.request_timeout`; `pending_limit_per_ip` refused at accept (429); `pending_limit`
/// refused at accept, nothing to evict (503); `evicted` the oldest idle one, closed to make
/// room for a new connection or a free descriptor.
pub const SHED_REASONS: &[&str] =
    &["handshake_timeout", "idle_timeout", "request_timeout", "pending_limit_per_ip", "pending_limit", "evicted"];

/// Kinds of failed `accept` (the label values of `signalbox_accept_errors_total`):
/// `file_limit` the process or system is out of file descriptors; `other` anything else.
pub const ACCEPT_ERROR_KINDS: &[&str] = &["file_limit", "other"];

/// Outcomes of `signalbox_sink_messages_total{sink,outcome}`:
/// `delivered` the sink confirmed it; `queued` the outbox holds it (the client got
/// `accepted`); `unavailable` the client got `SINK_UNAVAILABLE` (inline deadline or
/// attempts ran out, sink rejected it, outbox full); `dead_lettered` it left the outbox
/// for the dead-letter file.
pub const SINK_OUTCOMES: &[&str] = &["delivered", "queued", "unavailable", "dead_lettered"];

/// The metric handles of one sink (labels `sink=<name>`; sink names come from the
/// configuration, so the label set is bounded).
#[derive(Clone)]
pub struct SinkMetrics {
    /// `outcome="delivered"`.
    pub delivered: Counter,
    /// `outcome="queued"`.
    pub queued: Counter,
    /// `outcome="unavailable"`.
    pub unavailable: Counter,
    /// `outcome="dead_lettered"`.
    pub dead_lettered: Counter,
    /// `signalbox_sink_retries_total`.
    pub retries: Counter,
    /// `signalbox_outbox_messages`.
    pub outbox_messages: Gauge,
    /// `signalbox_sink_up`.
    pub up: Gauge,
}

/// Handles to every metric; cheap to clone, lock-free to update.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Handles>,
    render: PrometheusHandle,
    recorder: Arc<PrometheusRecorder>,
}

/// The metric handles.
pub struct Handles {
    /// `signalbox_connections`.
    pub connections: Gauge,
    /// `signalbox_socketio_connections`.
    pub socketio_connections: Gauge,
    /// `signalbox_subscriptions`.
    pub subscriptions: Gauge,
    /// `signalbox_messages_received_total`.
    pub messages_received: Counter,
    /// `signalbox_events_published_total`.
    pub events_published: Counter,
    /// `signalbox_deliveries_total`.
    pub deliveries: Counter,
    /// `signalbox_delivery_latency_seconds`.
    pub delivery_latency: Histogram,
    /// `signalbox_slow_consumer_disconnects_total`.
    pub slow_consumer_disconnects: Counter,
    /// `signalbox_connection_duration_seconds`.
    pub connection_duration: Histogram,
    errors: Vec<(ErrorCode, Counter)>,
    ws_protocol_errors: Vec<(u16, Counter)>,
    refused: Vec<(&'static str, Counter)>,
    apigw_requests: Vec<(&'static str, Counter)>,
    apigw_webhook_failures: Vec<(&'static str, Counter)>,
    /// `signalbox_http_pending_connections`.
    pub pending_connections: Gauge,
    shed: Vec<(&'static str, Counter)>,
    accept_errors: Vec<(&'static str, Counter)>,
    broker: BrokerHandles,
}

/// The broker's metrics, set from its status when `/metrics` is rendered.
struct BrokerHandles {
    up: Gauge,
    round_trip: Gauge,
    subscriptions: Gauge,
    gaps_filled: Counter,
    resyncs: Counter,
    reconnects: Counter,
}

impl Handles {
    /// Counts one error of `code`.
    pub fn error(&self, code: ErrorCode) {
        if let Some((_, c)) = self.errors.iter().find(|(k, _)| *k == code) {
            c.increment(1);
        }
    }

    /// Counts one connection closed before it upgraded; `reason` is one of [`SHED_REASONS`].
    pub fn shed(&self, reason: &'static str) {
        if let Some((_, c)) = self.shed.iter().find(|(k, _)| *k == reason) {
            c.increment(1);
        }
    }

    /// Counts one failed `accept`; `kind` is one of [`ACCEPT_ERROR_KINDS`].
    pub fn accept_error(&self, kind: &'static str) {
        if let Some((_, c)) = self.accept_errors.iter().find(|(k, _)| *k == kind) {
            c.increment(1);
        }
    }

    /// Counts one refused upgrade; `reason` is one of the fixed reasons in [`REFUSAL_REASONS`].
    pub fn refused(&self, reason: &'static str) {
        if let Some((_, c)) = self.refused.iter().find(|(k, _)| *k == reason) {
            c.increment(1);
        }
    }
}

/// Close codes of `signalbox_ws_protocol_errors_total{code}`: `1002` a framing rule broken
/// (RFC 6455 §5), `1007` invalid UTF-8, `1009` a message over the hard size limit.
pub const WS_PROTOCOL_CLOSE_CODES: &[(u16, &str)] = &[(1002, "1002"), (1007, "1007"), (1009, "1009")];

impl Handles {
    /// Counts one connection closed with `code` for a WebSocket protocol violation; `code`
    /// is one of [`WS_PROTOCOL_CLOSE_CODES`].
    pub fn ws_protocol_error(&self, code: u16) {
        if let Some((_, c)) = self.ws_protocol_errors.iter().find(|(k, _)| *k == code) {
            c.increment(1);
        }
    }
}

/// Reasons an upgrade is refused (the label values of `signalbox_connections_refused_total`).
pub const REFUSAL_REASONS: &[&str] =
    &["unauthenticated", "origin", "capacity", "per_ip", "draining", "too_many_topics", "namespace", "connect_hook"];

/// Outcomes of a `/@connections` call (the label values of `signalbox_apigw_requests_total`):
/// `ok`, or the AWS error type answered.
pub const APIGW_OUTCOMES: &[&str] = &[
    "ok",
    "GoneException",
    "ForbiddenException",
    "PayloadTooLargeException",
    "LimitExceededException",
    "BadRequestException",
    "ServiceUnavailableException",
];

/// Lifecycle webhook events (the label values of `signalbox_apigw_webhook_failures_total`).
pub const APIGW_WEBHOOK_EVENTS: &[&str] = &["connect", "disconnect"];

impl Handles {
    /// Counts one `/@connections` call; `outcome` is one of [`APIGW_OUTCOMES`].
    pub fn apigw_request(&self, outcome: &'static str) {
        if let Some((_, c)) = self.apigw_requests.iter().find(|(k, _)| *k == outcome) {
            c.increment(1);
        }
    }

    /// Counts one failed lifecycle webhook call; `event` is one of [`APIGW_WEBHOOK_EVENTS`].
    pub fn apigw_webhook_failure(&self, event: &'static str) {
        if let Some((_, c)) = self.apigw_webhook_failures.iter().find(|(k, _)| *k == event) {
            c.increment(1);
        }
    }
}

impl Metrics {
    /// Creates a fresh registry with every metric registered at zero.
    pub fn new() -> Self {
        let recorder = build_recorder();
        let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let key = |name: &'static str| Key::from_static_name(name);
        let counter = |name| recorder.register_counter(&key(name), &meta);
        let labelled = |name: &'static str, label: &'static str, value: &'static str| {
            recorder.register_counter(&Key::from_parts(name, vec![Label::new(label, value)]), &meta)
        };
        let handles = Handles {
            connections: recorder.register_gauge(&key("signalbox_connections"), &meta),
            socketio_connections: recorder.register_gauge(&key("signalbox_socketio_connections"), &meta),
            subscriptions: recorder.register_gauge(&key("signalbox_subscriptions"), &meta),
            messages_received: counter("signalbox_messages_received_total"),
            events_published: counter("signalbox_events_published_total"),
            deliveries: counter("signalbox_deliveries_total"),
            delivery_latency: recorder.register_histogram(&key("signalbox_delivery_latency_seconds"), &meta),
            slow_consumer_disconnects: counter("signalbox_slow_consumer_disconnects_total"),
            connection_duration: recorder.register_histogram(&key("signalbox_connection_duration_seconds"), &meta),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| (*c, labelled("signalbox_errors_total", "code", c.as_str())))
                .collect(),
            ws_protocol_errors: WS_PROTOCOL_CLOSE_CODES
                .iter()
                .map(|(code, label)| (*code, labelled("signalbox_ws_protocol_errors_total", "code", label)))
                .collect(),
            refused: REFUSAL_REASONS
                .iter()
                .map(|r| (*r, labelled("signalbox_connections_refused_total", "reason", r)))
                .collect(),
            apigw_requests: APIGW_OUTCOMES
                .iter()
                .map(|o| (*o, labelled("signalbox_apigw_requests_total", "outcome", o)))
                .collect(),
            apigw_webhook_failures: APIGW_WEBHOOK_EVENTS
                .iter()
                .map(|e| (*e, labelled("signalbox_apigw_webhook_failures_total", "event", e)))
                .collect(),
            pending_connections: recorder.register_gauge(&key("signalbox_http_pending_connections"), &meta),
            shed: SHED_REASONS
                .iter()
                .map(|r| (*r, labelled("signalbox_http_connections_shed_total", "reason", r)))
                .collect(),
            accept_errors: ACCEPT_ERROR_KINDS
                .iter()
                .map(|k| (*k, labelled("signalbox_accept_errors_total", "kind", k)))
                .collect(),
            broker: BrokerHandles {
                up: recorder.register_gauge(&key("signalbox_broker_up"), &meta),
                round_trip: recorder.register_gauge(&key("signalbox_broker_round_trip_seconds"), &meta),
                subscriptions: recorder.register_gauge(&key("signalbox_broker_subscriptions"), &meta),
                gaps_filled: counter("signalbox_broker_gaps_filled_total"),
                resyncs: counter("signalbox_broker_resyncs_total"),
                reconnects: counter("signalbox_broker_reconnects_total"),
            },
        };
        handles.pending_connections.set(0.0);
        handles.connections.set(0.0);
        handles.subscriptions.set(0.0);
        Self { inner: Arc::new(handles), render: recorder.handle(), recorder: Arc::new(recorder) }
    }

    /// Registers (or finds) the metrics of the sink `name`, every outcome at zero.
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let sink = Label::new("sink", name.to_owned());
        let counter = |metric: &'static str, outcome: Option<&'static str>| {
            let mut labels = vec![sink.clone()];
            labels.extend(outcome.map(|o| Label::new("outcome", o)));
            self.recorder.register_counter(&Key::from_parts(metric, labels), &meta)
        };
        let gauge =
            |metric: &'static str| self.recorder.register_gauge(&Key::from_parts(metric, vec![sink.clone()]), &meta);
        let outcome = |o| counter("signalbox_sink_messages_total", Some(o));
        let handles = SinkMetrics {
            delivered: outcome("delivered"),
            queued: outcome("queued"),
            unavailable: outcome("unavailable"),
            dead_lettered: outcome("dead_lettered"),
            retries: counter("signalbox_sink_retries_total", None),
            outbox_messages: gauge("signalbox_outbox_messages"),
            up: gauge("signalbox_sink_up"),
        };
        for c in [&handles.delivered, &handles.queued, &handles.unavailable, &handles.dead_lettered, &handles.retries] {
            c.increment(0);
        }
        handles.outbox_messages.set(0.0);
        handles
    }

    /// Renders the Prometheus text exposition, listing metrics that have no sample yet
    /// with their HELP and TYPE lines.
    pub fn render(&self) -> String {
        let mut text = self.render.render();
        for (name, kind, help) in DESCRIPTIONS {
            if !text.contains(&format!("# TYPE {name} ")) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }

    /// Sets the broker's metrics from its status (before a render).
    pub fn record_broker(&self, status: &crate::broker::BrokerStatus) {
        let broker = &self.inner.broker;
        broker.up.set(if status.reachable { 1.0 } else { 0.0 });
        broker.round_trip.set(status.round_trip_ms.unwrap_or(0.0) / 1000.0);
        broker.subscriptions.set(status.subscriptions.unwrap_or(0) as f64);
        broker.gaps_filled.absolute(status.gaps_filled.unwrap_or(0));
        broker.resyncs.absolute(status.resyncs.unwrap_or(0));
        broker.reconnects.absolute(status.reconnects.unwrap_or(0));
    }

    /// Drains histogram samples into their buckets. The exporter keeps raw samples until
    /// this runs, so the composition root calls it on a timer to bound memory.
    pub fn run_upkeep(&self) {
        self.render.run_upkeep();
    }

    /// How often [`Metrics::run_upkeep`] should run.
    pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for Metrics {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.inner
    }
}

fn build_recorder() -> PrometheusRecorder {
    let with_buckets = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("signalbox_delivery_latency_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("signalbox_connection_duration_seconds".into()), DURATION_BUCKETS)
        });
    // The bucket lists are non-empty constants, so the fallback (summaries) never runs.
    let recorder = with_buckets.unwrap_or_else(|_| PrometheusBuilder::new()).build_recorder();
    for (name, _, help) in DESCRIPTIONS {
        recorder.describe_counter(metrics::KeyName::from(*name), None, (*help).into());
    }
    recorder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_spec_metric() {
        let m = Metrics::new();
        m.delivery_latency.record(0.0003);
        m.error(ErrorCode::Validation);
        let text = m.render();
        for (name, _, _) in DESCRIPTIONS {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
        }
        assert!(text.contains("signalbox_delivery_latency_seconds_bucket"), "{text}");
        assert!(text.contains("signalbox_errors_total{code=\"VALIDATION_ERROR\"} 1"), "{text}");
    }

    #[test]
    fn sink_metrics_carry_the_sink_and_outcome() {
        let m = Metrics::new();
        let sink = m.sink("dev-agents");
        sink.delivered.increment(2);
        sink.outbox_messages.set(3.0);
        let text = m.render();
        assert!(text.contains(r#"signalbox_sink_messages_total{sink="dev-agents",outcome="delivered"} 2"#), "{text}");
        assert!(
            text.contains(r#"signalbox_sink_messages_total{sink="dev-agents",outcome="dead_lettered"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"signalbox_outbox_messages{sink="dev-agents"} 3"#), "{text}");
    }
}

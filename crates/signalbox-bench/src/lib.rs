//! `signalbox-bench`: a load generator for any server that speaks the native protocol
//! (SPEC §3) or Socket.IO v4 (`--protocol socketio`), and `POST /api/publish`.
//!
//! A crate of its own in the workspace (the `signalbox-bench` binary, `src/main.rs`), so
//! that the server binary and its image carry none of the load tool's dependencies
//! (histograms, plots, progress bars). It uses the `signalbox` library for one thing only:
//! minting the client token the same way `signalbox token` does.
//!
//! Subscribers may be spread over several nodes of a cluster (`--server A,B`) and the
//! publishes sent to another one (`--publish-server C`): the run then measures delivery
//! across nodes, with the same latency, loss and offset checks as on one server.
//!
//! `signalbox-bench apigw-post` ([`apigw`]) measures the API Gateway management API
//! instead: `POST /@connections/{id}` (boto3's `post_to_connection`) from keep-alive HTTP
//! clients, signed with SigV4 or an API key, to WebSocket receivers.
//!
//! It owns the client and publisher sides of a run, the `/proc` readings of the server
//! under test, and the report. It never touches the gateway's internals: it measures
//! Signalbox and the peer servers in `bench/peers/` the same way.

pub mod apigw;
mod client;
mod procstat;
mod publisher;
mod report;
mod scan;
mod socketio;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use client::{ClientConfig, ClientTally, Shared};
use publisher::{PublishPlan, PublishStats};
pub use report::Report;

/// Preset load shapes (flags override their values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 10k connections on 100 topics, no publishing: memory per connection.
    Idle,
    /// 5k subscribers on one topic, 200 publishes/s for 10 s: CPU per delivery.
    Fanout,
    /// 5k topics with one subscriber each, 5,000 publishes/s: CPU per publish + delivery.
    Many,
    /// 1k connections on 10 topics, 100 publishes/s: end-to-end latency.
    Latency,
    /// As many connections as the 20,000-fd limit allows (19k), light publishing.
    Scale,
    /// 10k subscribed clients drop at once a third into the measured window, reconnect
    /// and resubscribe with `since`: reconnect time, and events lost across it.
    Storm,
}

/// How the subscriber clients talk to the server (publishing is always `POST /api/publish`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The native protocol at `/ws` (SPEC §3).
    #[default]
    Native,
    /// Socket.IO v4 (Engine.IO v4 over WebSocket) at `/socket.io/`: emits `subscribe` with
    /// `{"topic"}` and counts every event that carries an `offset`.
    #[value(name = "socketio")]
    #[serde(rename = "socketio")]
    SocketIo,
}

impl Protocol {
    /// The flag value naming it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::SocketIo => "socketio",
        }
    }
}

/// Flags of `signalbox-bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A preset; the flags below override its values.
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
    /// The server under test: `--server`, `--publish-server`, `--server-pid`.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The subscribers' protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,
    /// Subscriber connections.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Topics; client i subscribes to `bench:{i % topics}`.
    #[arg(long)]
    pub topics: Option<usize>,
    /// Publishes per second (all publishers together); 0 = none.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured duration, after the warm-up.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Publishing before measurement starts.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Bytes of padding in each event.
    #[arg(long)]
    pub payload: Option<usize>,
    /// Concurrent publisher connections.
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Events per request: 1 posts each to `/api/publish`; more posts them in groups to
    /// `/api/publish/batch` (SPEC §9.4), the topics still round-robin. `--rate` counts events.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// API key for `/api/publish` (default: the first of SIGNALBOX_API_KEYS, if set).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Client token (default: minted from SIGNALBOX_JWT_SECRET with topics `bench:*`, or none).
    #[arg(long)]
    pub token: Option<String>,
    /// Name of the server under test, for the report.
    #[arg(long, default_value = "signalbox")]
    pub label: String,
    /// Directory for report.json and the plots.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// No live progress bars (for scripts).
    #[arg(long)]
    pub quiet: bool,
    /// Storm: how long dropped clients stay offline before reconnecting (they then miss
    /// about rate / topics × this many events each, replayed on resume).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub storm_offline: Duration,
    /// Storm: the fraction of clients that drop (the others keep receiving; their latency
    /// while the resumes run shows whether resuming stalls live delivery).
    #[arg(long, default_value_t = 1.0)]
    pub storm_fraction: f64,
    /// A subscriber whose connection ends before the run does (its node was killed, or
    /// closed it with 1001 or 1012) resumes with `since` on the next node of `--server`,
    /// as a client behind a load balancer would; loss and duplicates are still counted.
    #[arg(long)]
    pub failover: bool,
}

/// Where the server under test is: one server, or the nodes of a cluster.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Server address (HTTP and WebSocket on the same port). A comma-separated list spreads
    /// the subscribers round-robin over several nodes of a cluster (client i on node
    /// (i + i / topics) % nodes, so that every topic has subscribers on every node).
    #[arg(long, value_name = "ADDR[,ADDR…]", value_delimiter = ',', default_value = "127.0.0.1:8080")]
    pub server: Vec<SocketAddr>,
    /// Where `POST /api/publish` goes (default: the first `--server`). Another node of the
    /// same cluster measures cross-node delivery.
    #[arg(long, value_name = "ADDR")]
    pub publish_server: Option<SocketAddr>,
    /// PID of the server, for its RSS and CPU from /proc; a comma-separated list for a
    /// cluster (nodes, Redis…): the server figures are then their sum, and each is reported.
    #[arg(long, value_name = "PID[,PID…]", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
}

/// The resolved shape of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The preset, if any.
    pub scenario: Option<Scenario>,
    /// The subscribers' protocol.
    pub protocol: Protocol,
    /// Subscriber connections.
    pub connections: usize,
    /// Topics.
    pub topics: usize,
    /// Publishes per second.
    pub rate: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Padding bytes per event.
    pub payload: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Events per publish request (`--batch`).
    pub batch: usize,
}

impl BenchArgs {
    fn plan(&self) -> Plan {
        // (connections, topics, rate, duration s, warm-up s, payload, publishers)
        let preset = match self.scenario {
            Some(Scenario::Idle) => (10_000, 100, 0.0, 5.0, 0.0, 64, 1),
            Some(Scenario::Fanout) => (5_000, 1, 200.0, 10.0, 2.0, 64, 1),
            Some(Scenario::Many) => (5_000, 5_000, 5_000.0, 10.0, 2.0, 64, 8),
            Some(Scenario::Latency) => (1_000, 10, 100.0, 10.0, 2.0, 64, 2),
            Some(Scenario::Scale) => (19_000, 100, 100.0, 10.0, 2.0, 64, 2),
            Some(Scenario::Storm) => (10_000, 100, 100.0, 10.0, 2.0, 64, 2),
            None => (1_000, 10, 100.0, 10.0, 2.0, 64, 2),
        };
        Plan {
            scenario: self.scenario,
            protocol: self.protocol,
            connections: self.connections.unwrap_or(preset.0),
            topics: self.topics.unwrap_or(preset.1).max(1),
            rate: self.rate.unwrap_or(preset.2),
            duration_s: self.duration.map_or(preset.3, |d| d.as_secs_f64()),
            warmup_s: self.warmup.map_or(preset.4, |d| d.as_secs_f64()),
            payload: self.payload.unwrap_or(preset.5),
            publishers: self.publishers.unwrap_or(preset.6).max(1),
            batch: usize::from(self.batch),
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Too many clients failed to connect.
    #[error(
        "{failed} of {total} connections failed; first error: {first}. Check --server, and give a token \
         (--token, or SIGNALBOX_JWT_SECRET to mint one with topics bench:*) unless the server runs with --dev"
    )]
    Connect {
        /// Failures.
        failed: usize,
        /// Attempts.
        total: usize,
        /// The first error.
        first: String,
    },
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Report(String),
    /// The flags do not describe a run.
    #[error("{0}")]
    Args(String),
}

/// The node client `index` (subscribed to topic `index % topics`) connects to, of `nodes`:
/// round-robin, shifted by one at each round of topics, so that every node gets an even
/// share of the clients and every topic has subscribers on every node (with plain
/// `index % nodes`, 2 nodes and 10 topics would put all of a topic's subscribers on one).
pub fn node_of(index: usize, topics: usize, nodes: usize) -> usize {
    (index + index / topics.max(1)) % nodes.max(1)
}

/// The client token: `--token`, or one minted from SIGNALBOX_JWT_SECRET, or none.
fn token(args: &BenchArgs) -> Option<String> {
    let secret = std::env::var("SIGNALBOX_JWT_SECRET").ok().filter(|s| !s.is_empty());
    args.token.clone().or_else(|| {
        let mint = signalbox::cli::TokenArgs {
            sub: "bench".into(),
            ttl: Duration::from_secs(24 * 3600),
            claims: Vec::new(),
            topics: Some("bench:*".into()),
        };
        signalbox::token::mint(&mint, secret.as_deref()).ok()
    })
}

fn api_key(args: &BenchArgs) -> Option<String> {
    args.api_key.clone().or_else(|| {
        std::env::var("SIGNALBOX_API_KEYS").ok()?.split(',').map(str::trim).find(|k| !k.is_empty()).map(String::from)
    })
}

fn progress(quiet: bool, len: u64, message: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

/// Runs one benchmark and writes its report.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let plan = args.plan();
    let servers = args.target.server.clone();
    let Some(&first_server) = servers.first() else {
        return Err(BenchError::Args("no --server address".into()));
    };
    let publish_server = args.target.publish_server.unwrap_or(first_server);
    let shared = Arc::new(Shared::with_nodes(servers.len()));
    let config = ClientConfig { server: first_server, node: 0, protocol: plan.protocol, token: token(&args) };
    let pids = args.target.server_pid.clone();
    let sample = |pids: &[u32]| procstat::sample_all(pids);
    let server_before = sample(&pids);

    // Connect.
    let bar = progress(args.quiet, plan.connections as u64, "connecting");
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connect_started = Instant::now();
    let mut attempts = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        let (gate, mut config, bar) = (gate.clone(), config.clone(), bar.clone());
        let topic = i % plan.topics;
        config.node = node_of(i, plan.topics, servers.len());
        config.server = servers[config.node];
        attempts.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let result = client::connect(&config, i, topic, None).await;
            bar.inc(1);
            result
        }));
    }
    let stop_clients = CancellationToken::new();
    let storm = CancellationToken::new();
    let mut readers = Vec::with_capacity(plan.connections);
    // Connected clients that will drop in a storm.
    let mut dropping = 0u64;
    let mut connect_times = client::latency_histogram();
    let (mut failed, mut first_error) = (0usize, String::new());
    let mut failed_per_node = vec![0usize; servers.len()];
    for (i, attempt) in attempts.into_iter().enumerate() {
        let node = node_of(i, plan.topics, servers.len());
        match attempt.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok((ws, tally)) => {
                let _ = connect_times.record(tally.connect_time.as_nanos() as u64);
                let receiver = client::Receiver {
                    index: i,
                    config: ClientConfig { server: servers[node], node, ..config.clone() },
                    shared: shared.clone(),
                    stop: stop_clients.clone(),
                    storm: storm.clone(),
                    drops: drops_in_storm(i, plan.topics, args.storm_fraction),
                    offline: args.storm_offline,
                    failover: if args.failover { servers.clone() } else { Vec::new() },
                };
                dropping += u64::from(receiver.drops);
                readers.push(tokio::spawn(client::receive(ws, tally, receiver)));
            }
            Err(e) => {
                failed += 1;
                failed_per_node[node] += 1;
                if first_error.is_empty() {
                    first_error = if servers.len() > 1 { format!("{e} ({})", servers[node]) } else { e };
                }
            }
        }
    }
    let connect_elapsed = connect_started.elapsed();
    bar.finish_and_clear();
    if failed * 100 > plan.connections.max(1) {
        stop_clients.cancel();
        return Err(BenchError::Connect { failed, total: plan.connections, first: first_error });
    }
    // Let the server settle, then read its memory with every client connected and idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_idle = sample(&pids);

    // Publish: warm-up, then the measured window.
    let stats = Arc::new(PublishStats::new(plan.topics));
    let stop_publishing = CancellationToken::new();
    let publishing = (plan.rate > 0.0).then(|| {
        let publish_plan = PublishPlan {
            server: publish_server,
            api_key: api_key(&args),
            rate: plan.rate,
            publishers: plan.publishers,
            topics: plan.topics,
            payload: plan.payload,
            batch: plan.batch,
        };
        tokio::spawn(publisher::run(publish_plan, shared.clone(), stats.clone(), stop_publishing.clone()))
    });
    let bar = progress(args.quiet, (plan.warmup_s + plan.duration_s).ceil() as u64, "running");
    let mut timeline = Vec::new();
    let mut last_received = shared.received.load(Ordering::Relaxed);
    let run_started = Instant::now();
    let mut window: Option<report::WindowStart> = None;
    let total = Duration::from_secs_f64(plan.warmup_s + plan.duration_s);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let storm_at = (plan.scenario == Some(Scenario::Storm))
        .then(|| Duration::from_secs_f64(plan.warmup_s + plan.duration_s / 3.0));
    let mut storm_started: Option<Instant> = None;
    let mut storm_cpu: Option<tokio::task::JoinHandle<report::StormCpu>> = None;
    while run_started.elapsed() < total {
        if storm_started.is_none() && storm_at.is_some_and(|at| run_started.elapsed() >= at) {
            storm_started = Some(Instant::now());
            shared.catching_up.store(dropping, Ordering::Release);
            shared.storm_span.0.store(shared.now_ns(), Ordering::Relaxed);
            let (shared, pids, before) = (shared.clone(), pids.clone(), procstat::total(&sample(&pids)));
            storm_cpu = Some(tokio::spawn(async move {
                let started = Instant::now();
                shared.all_caught_up.notified().await;
                let after = procstat::total(&procstat::sample_all(&pids));
                report::StormCpu { wall: started.elapsed(), before, after }
            }));
            storm.cancel();
        }
        let warmup_over = run_started.elapsed() >= Duration::from_secs_f64(plan.warmup_s);
        if warmup_over && window.is_none() {
            shared.window.0.store(shared.now_ns(), Ordering::Relaxed);
            let received = shared.received.load(Ordering::Relaxed);
            let accepted = stats.accepted.load(Ordering::Relaxed);
            window = Some(report::WindowStart {
                at: Instant::now(),
                received,
                accepted,
                server: sample(&pids),
                bench: procstat::sample(std::process::id()),
            });
        }
        let mut left = total.saturating_sub(run_started.elapsed());
        if storm_started.is_none()
            && let Some(at) = storm_at
        {
            left = left.min(at.saturating_sub(run_started.elapsed()));
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep(left) => {}
        }
        let received = shared.received.load(Ordering::Relaxed);
        timeline.push((run_started.elapsed().as_secs_f64(), received.saturating_sub(last_received)));
        last_received = received;
        bar.inc(1);
    }
    shared.window.1.store(shared.now_ns(), Ordering::Relaxed);
    let window_end = (Instant::now(), shared.received.load(Ordering::Relaxed), stats.accepted.load(Ordering::Relaxed));
    let server_end = sample(&pids);
    let bench_end = procstat::sample(std::process::id());
    stop_publishing.cancel();
    if let Some(p) = publishing {
        let _ = p.await;
    }
    bar.finish_and_clear();
    // Drain: wait until nothing has arrived for a second.
    let mut idle_since = Instant::now();
    let mut seen = shared.received.load(Ordering::Relaxed);
    while idle_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = shared.received.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            idle_since = Instant::now();
        }
    }
    stop_clients.cancel();
    // Every dropping client has caught up (or gave up) by now, unless the storm never ended.
    let storm_cpu = match storm_cpu {
        Some(task) => tokio::time::timeout(Duration::from_secs(1), task).await.ok().and_then(Result::ok),
        None => None,
    };
    let mut tallies: Vec<ClientTally> = Vec::with_capacity(readers.len());
    for r in readers {
        if let Ok(t) = r.await {
            tallies.push(t);
        }
    }
    let inputs = report::Inputs {
        label: args.label.clone(),
        plan,
        servers,
        publish_server,
        connect_failures_per_node: failed_per_node,
        node_latency: (0..args.target.server.len()).map(|node| shared.node_latency(node)).collect(),
        server_pids: pids,
        connect_elapsed,
        connect_times,
        connect_failures: failed,
        tallies,
        final_offsets: stats.last_offset.iter().map(|o| o.load(Ordering::Relaxed)).collect(),
        published: stats.accepted.load(Ordering::Relaxed),
        publish_failures: stats.failed.load(Ordering::Relaxed),
        round_trip: stats.round_trip.lock().clone(),
        latency: shared.latency(),
        storm: storm_started.map(|_| report::StormInputs {
            reconnect: shared.reconnect.lock().clone(),
            resubscribed: shared.resubscribed.load(Ordering::Relaxed),
            caught_up: shared.caught_up.lock().clone(),
            missed: shared.missed.load(Ordering::Relaxed),
            steady_latency: shared.steady_latency.lock().clone(),
            offline: args.storm_offline,
            cpu: storm_cpu,
        }),
        timeline,
        server_before,
        server_idle,
        window_start: window,
        window_end,
        server_end,
        bench_end,
    };
    let report = Report::build(inputs);
    report.write(&args.out).map_err(|e| BenchError::Report(e.to_string()))?;
    Ok(report)
}

/// Whether client `index` drops in the storm: `fraction` of each topic's subscribers
/// (client i holds topic i % topics), spread evenly.
fn drops_in_storm(index: usize, topics: usize, fraction: f64) -> bool {
    let round = (index / topics.max(1)) as f64;
    ((round + 1.0) * fraction).floor() > (round * fraction).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_fraction_picks_that_share_of_clients() {
        let count = |f| (0..1000).filter(|&i| drops_in_storm(i, 10, f)).count();
        assert_eq!((count(1.0), count(0.5), count(0.25), count(0.0)), (1000, 500, 250, 0));
        // Every topic loses half its subscribers, not half the topics all of theirs.
        let topic_0 = (0..1000).filter(|&i| i % 10 == 0 && drops_in_storm(i, 10, 0.5)).count();
        assert_eq!(topic_0, 50);
    }

    #[test]
    fn nodes_share_the_clients_evenly_and_every_topic_spans_every_node() {
        for (connections, topics, nodes) in [(40, 4, 2), (1000, 10, 2), (5000, 5000, 2), (999, 7, 3), (10, 10, 1)] {
            let mut clients = vec![0usize; nodes];
            let mut per_topic = vec![vec![0usize; nodes]; topics];
            for i in 0..connections {
                let node = node_of(i, topics, nodes);
                clients[node] += 1;
                per_topic[i % topics][node] += 1;
            }
            let (least, most) = (clients.iter().min().copied(), clients.iter().max().copied());
            assert!(most.unwrap() - least.unwrap() <= 1 + connections / topics, "{clients:?}");
            if connections >= topics * nodes {
                assert!(per_topic.iter().all(|t| t.iter().all(|&n| n > 0)), "{per_topic:?}");
            }
        }
        // One node: everything on it, as before the flag took a list.
        assert!((0..100).all(|i| node_of(i, 7, 1) == 0));
    }

    #[test]
    fn server_and_pid_flags_take_lists_and_stay_single_by_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench.target)
        };
        let default = parse(&[]).unwrap();
        assert_eq!(default.server, vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
        assert_eq!((default.publish_server, default.server_pid.len()), (None, 0));
        let cluster = parse(&[
            "--server",
            "127.0.0.1:1,127.0.0.1:2",
            "--publish-server",
            "127.0.0.1:3",
            "--server-pid",
            "10,11,12",
        ])
        .unwrap();
        assert_eq!(cluster.server.len(), 2);
        assert_eq!(cluster.publish_server, "127.0.0.1:3".parse().ok());
        assert_eq!(cluster.server_pid, vec![10, 11, 12]);
        assert_eq!(parse(&["--server-pid", "42"]).unwrap().server_pid, vec![42]);
        assert!(parse(&["--server", "127.0.0.1:1,nonsense"]).is_err());
    }

    #[test]
    fn protocol_names_match_the_flag_and_the_report() {
        for protocol in [Protocol::Native, Protocol::SocketIo] {
            let flag = protocol.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(flag.as_deref(), Some(protocol.name()));
            assert_eq!(serde_json::to_value(protocol).unwrap(), protocol.name());
        }
        assert_eq!(Protocol::from_str("socketio", false), Ok(Protocol::SocketIo));
        assert_eq!(Protocol::default(), Protocol::Native);
    }
}

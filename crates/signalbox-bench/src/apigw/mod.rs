//! `signalbox-bench apigw-post`: measures API Gateway's `post_to_connection` on Signalbox,
//! i.e. `POST /@connections/{id}` with a small raw body, as a backend sends it with a
//! keep-alive HTTP/1.1 client.
//!
//! A run opens `--receivers` WebSocket connections at `/ws` (each learns its id from the
//! `connected` frame), then `--clients` closed-loop clients, each on one keep-alive
//! connection, post one request after another for `--warmup` + `--duration`, round-robin
//! over the receivers. Every body carries a sequence number unique in the run, the
//! receiver it is meant for and when it was sent, so the report gives the HTTP latency,
//! the end-to-end latency (request built → frame read by the receiver), errors by status,
//! and whether every `200` arrived exactly once at the right connection.
//!
//! Owns the run's orchestration, its flags and its report (`report.json` in `--out`). It
//! measures the server only from outside (HTTP, WebSocket, `/proc/<pid>`), and it never
//! retries a request: a retry would hide an error and could deliver a frame twice.

mod poster;
mod receiver;
mod report;
mod sign;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use report::{ApigwReport, Latency};
pub use sign::{Auth, SERVICE, SignError};

use crate::BenchError;
use crate::procstat;
use poster::{PostPlan, PosterTally};
use receiver::{Clock, ReceiverTally};

/// Flags of `signalbox-bench apigw-post`.
#[derive(Debug, Clone, Args)]
pub struct ApigwArgs {
    /// Server address: the receivers connect to `ws://ADDR/ws`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Where the posts go (default: --server). Another node of the same cluster measures
    /// a post forwarded to the node holding the connection.
    #[arg(long, value_name = "ADDR")]
    pub post_server: Option<SocketAddr>,
    /// PID of the server, for its CPU from /proc; a comma-separated list for a cluster
    /// (the CPU is then their sum).
    #[arg(long, value_name = "PID[,PID…]", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// WebSocket connections the posts go to (C), round-robin.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub receivers: u32,
    /// Concurrent keep-alive HTTP/1.1 clients (K), each with one request in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Measured duration, after the warm-up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Posting before the measured window opens (connections warm, allocator settled).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Bytes of each JSON body (padded up to this; at least the ~45 B of its fields).
    #[arg(long, default_value_t = 100)]
    pub body_size: usize,
    /// A stage prefix: post to `/{stage}/@connections/{id}`, as an endpoint URL ending in
    /// the stage does.
    #[arg(long)]
    pub stage: Option<String>,
    /// SigV4 access key id (service execute-api); needs --apigw-secret. The server must
    /// hold the pair in SIGNALBOX_APIGW_CREDENTIALS.
    #[arg(long, value_name = "AKID", requires = "apigw_secret", conflicts_with = "api_key")]
    pub apigw_key: Option<String>,
    /// SigV4 secret access key.
    #[arg(long, value_name = "SECRET", requires = "apigw_key")]
    pub apigw_secret: Option<String>,
    /// SigV4 signing region (the server accepts any; boto3 users set one).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Authenticate with `Authorization: Bearer KEY` instead of SigV4. Neither flag: no
    /// credentials (a server in --dev mode).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Client token for the receivers (default: minted from SIGNALBOX_JWT_SECRET, or none).
    #[arg(long)]
    pub token: Option<String>,
    /// A request with no answer within this time counts as a `timeout` error.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Name of the server under test, for the report.
    #[arg(long, default_value = "signalbox")]
    pub label: String,
    /// Directory for report.json.
    #[arg(long, default_value = "bench-results/apigw")]
    pub out: PathBuf,
}

impl ApigwArgs {
    /// The authentication the flags ask for.
    pub fn auth(&self) -> Result<Auth, SignError> {
        match (&self.apigw_key, &self.apigw_secret, &self.api_key) {
            (Some(key), Some(secret), _) => Ok(Auth::sigv4(key, secret, &self.region)),
            (_, _, Some(api_key)) => Auth::bearer(api_key),
            _ => Ok(Auth::None),
        }
    }
}

/// The receivers' token: `--token`, or one minted from SIGNALBOX_JWT_SECRET as the other
/// scenarios mint theirs, or none.
fn token(args: &ApigwArgs) -> Option<String> {
    if args.token.is_some() {
        return args.token.clone();
    }
    let secret = std::env::var("SIGNALBOX_JWT_SECRET").ok().filter(|s| !s.is_empty());
    let mint = signalbox::cli::TokenArgs {
        sub: "bench".into(),
        ttl: Duration::from_secs(24 * 3600),
        claims: Vec::new(),
        topics: Some("bench:*".into()),
    };
    signalbox::token::mint(&mint, secret.as_deref()).ok()
}

/// Percent-encodes a connection id for the path as the SDKs do (RFC 3986 unreserved bytes
/// stay; Signalbox's `conn_<ms>_<hex>` ids need no escaping).
fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs one `apigw-post` measurement and writes `report.json` into `--out`.
pub async fn run(args: ApigwArgs) -> Result<ApigwReport, BenchError> {
    let auth = args.auth().map_err(|e| BenchError::Args(e.to_string()))?;
    if args.duration.is_zero() {
        return Err(BenchError::Args("--duration must be more than 0".into()));
    }
    let token = token(&args);
    let receivers = args.receivers as usize;

    // Receivers.
    let gate = Arc::new(Semaphore::new(64));
    let mut attempts = Vec::with_capacity(receivers);
    for _ in 0..receivers {
        let (gate, token, server) = (gate.clone(), token.clone(), args.server);
        attempts.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            receiver::connect(server, token.as_deref()).await
        }));
    }
    let mut sockets = Vec::with_capacity(receivers);
    let mut failed = 0;
    let mut first_error = String::new();
    for attempt in attempts {
        match attempt.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(socket) => sockets.push(socket),
            Err(e) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = e;
                }
            }
        }
    }
    if failed > 0 {
        return Err(BenchError::Connect { failed, total: receivers, first: first_error });
    }
    let prefix = args.stage.as_ref().map(|s| format!("/{}", encode_id(s))).unwrap_or_default();
    let paths: Vec<String> = sockets.iter().map(|(_, id)| format!("{prefix}/@connections/{}", encode_id(id))).collect();

    // The clock starts now: warm-up, then the window.
    let warmup_ns = args.warmup.as_nanos() as u64;
    let end_ns = warmup_ns + args.duration.as_nanos() as u64;
    let clock = Arc::new(Clock { epoch: Instant::now(), received: AtomicU64::new(0), window: (warmup_ns, end_ns) });
    let stop_receivers = CancellationToken::new();
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (ws, _))| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            tokio::spawn(receiver::receive(ws, index, clock.clone(), stop_receivers.clone()))
        })
        .collect();
    let plan = Arc::new(PostPlan {
        server: args.post_server.unwrap_or(args.server),
        paths,
        auth: auth.clone(),
        body_size: args.body_size,
        end_ns,
        timeout: args.request_timeout,
    });
    let next_seq = Arc::new(AtomicU64::new(0));
    let posters: Vec<_> = (0..args.clients)
        .map(|_| tokio::spawn(poster::post_loop(plan.clone(), clock.clone(), next_seq.clone())))
        .collect();

    // CPU of the server and of the load generator over the window.
    let pids = args.server_pid.clone();
    tokio::time::sleep_until((clock.epoch + args.warmup).into()).await;
    let server_start = procstat::total(&procstat::sample_all(&pids));
    let bench_start = procstat::sample(std::process::id());
    tokio::time::sleep_until((clock.epoch + args.warmup + args.duration).into()).await;
    let server_end = procstat::total(&procstat::sample_all(&pids));
    let bench_end = procstat::sample(std::process::id());

    let mut posted = Vec::with_capacity(posters.len());
    for p in posters {
        if let Ok(tally) = p.await {
            posted.push(tally);
        }
    }
    // Drain: until every 200 has arrived, or nothing has for a second (5 s at most).
    let acknowledged: u64 = posted.iter().map(|t| t.ok_seqs.len() as u64).sum();
    let drain_started = Instant::now();
    let (mut seen, mut idle_since) = (clock.received.load(Ordering::Relaxed), Instant::now());
    while clock.received.load(Ordering::Relaxed) < acknowledged
        && idle_since.elapsed() < Duration::from_secs(1)
        && drain_started.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = clock.received.load(Ordering::Relaxed);
        if now != seen {
            (seen, idle_since) = (now, Instant::now());
        }
    }
    stop_receivers.cancel();
    let mut received: Vec<ReceiverTally> = Vec::with_capacity(readers.len());
    for r in readers {
        if let Ok(tally) = r.await {
            received.push(tally);
        }
    }

    let cpu = |start: Option<procstat::ProcSample>, end: Option<procstat::ProcSample>| match (start, end) {
        (Some(s), Some(e)) => Some(e.cpu.saturating_sub(s.cpu)),
        _ => None,
    };
    let report = ApigwReport::build(report::Inputs {
        label: args.label.clone(),
        server: args.server,
        post_server: plan.server,
        auth: auth.name(),
        receivers: args.receivers,
        clients: args.clients,
        body_size: args.body_size,
        warmup: args.warmup,
        duration: args.duration,
        posted,
        received,
        server_cpu: cpu(server_start, server_end),
        bench_cpu: cpu(bench_start, bench_end),
    });
    report.write(&args.out).map_err(|e| BenchError::Report(e.to_string()))?;
    Ok(report)
}

/// How many times each sequence number was read, over every receiver.
fn delivery_counts(received: &[ReceiverTally]) -> HashMap<u64, u32> {
    let mut counts: HashMap<u64, u32> = HashMap::with_capacity(received.iter().map(|r| r.seqs.len()).sum());
    for seq in received.iter().flat_map(|r| r.seqs.iter()) {
        *counts.entry(*seq).or_default() += 1;
    }
    counts
}

/// Loss accounting: every `200` must have been read exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Requests answered 200 over the whole run (warm-up included).
    pub acknowledged: u64,
    /// Posted bodies read by the receivers (duplicates included).
    pub delivered: u64,
    /// 200s never read.
    pub lost: u64,
    /// Extra copies read of a sequence number.
    pub duplicates: u64,
    /// Bodies read at a connection other than the one posted to.
    pub misdelivered: u64,
    /// Bodies read whose request did not get a 200 (an error or a timeout that was
    /// delivered all the same).
    pub delivered_without_200: u64,
}

impl Delivery {
    fn of(posted: &[PosterTally], received: &[ReceiverTally]) -> Self {
        let counts = delivery_counts(received);
        let mut d = Self {
            delivered: received.iter().map(|r| r.seqs.len() as u64).sum(),
            misdelivered: received.iter().map(|r| r.misdelivered).sum(),
            duplicates: counts.values().map(|&c| u64::from(c.saturating_sub(1))).sum(),
            ..Self::default()
        };
        let mut acknowledged = std::collections::HashSet::new();
        for seq in posted.iter().flat_map(|p| p.ok_seqs.iter()) {
            acknowledged.insert(*seq);
            if !counts.contains_key(seq) {
                d.lost += 1;
            }
        }
        d.acknowledged = acknowledged.len() as u64;
        d.delivered_without_200 = counts.keys().filter(|seq| !acknowledged.contains(seq)).count() as u64;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::latency_histogram;

    fn receiver(seqs: &[u64], misdelivered: u64) -> ReceiverTally {
        ReceiverTally {
            seqs: seqs.to_vec(),
            latency: latency_histogram(),
            misdelivered,
            other_frames: 0,
            ended_early: None,
        }
    }

    fn poster(ok: &[u64]) -> PosterTally {
        PosterTally { ok_seqs: ok.to_vec(), ..PosterTally::new() }
    }

    #[test]
    fn loss_duplicates_and_strays_are_told_apart() {
        let posted = [poster(&[0, 2, 4]), poster(&[1, 3, 5])];
        let received = [receiver(&[0, 1, 2, 2], 0), receiver(&[3, 4, 9], 1)];
        let d = Delivery::of(&posted, &received);
        assert_eq!(
            d,
            Delivery {
                acknowledged: 6,
                delivered: 7,
                lost: 1,
                duplicates: 1,
                misdelivered: 1,
                delivered_without_200: 1
            }
        );
        let clean = Delivery::of(&[poster(&[0, 1])], &[receiver(&[1], 0), receiver(&[0], 0)]);
        assert_eq!((clean.lost, clean.duplicates, clean.delivered_without_200), (0, 0, 0));
    }

    #[test]
    fn ids_are_escaped_only_where_needed() {
        assert_eq!(encode_id("conn_1765000000000_aB3dE"), "conn_1765000000000_aB3dE");
        assert_eq!(encode_id("a b/c=é"), "a%20b%2Fc%3D%C3%A9");
    }

    #[test]
    fn the_auth_flags_pick_one_mode() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ApigwArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()));
        let auth = |args: &[&str]| parse(args).unwrap().args.auth().unwrap().name();
        assert_eq!(auth(&[]), "none");
        assert_eq!(auth(&["--api-key", "k"]), "bearer");
        assert_eq!(auth(&["--apigw-key", "AKID", "--apigw-secret", "s"]), "sigv4");
        assert!(parse(&["--apigw-key", "AKID"]).is_err(), "a key needs its secret");
        assert!(parse(&["--apigw-key", "A", "--apigw-secret", "s", "--api-key", "k"]).is_err());
        assert!(parse(&["--clients", "0"]).is_err());
        let defaults = parse(&[]).unwrap().args;
        assert_eq!((defaults.receivers, defaults.clients, defaults.region.as_str()), (100, 16, "us-east-1"));
    }
}

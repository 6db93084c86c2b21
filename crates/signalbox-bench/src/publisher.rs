//! The publishing side of the load generator: HTTP/1.1 keep-alive connections posting
//! to `/api/publish` (or, with `--batch`, groups of events to `/api/publish/batch`) at a
//! fixed total rate of events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::client::{Shared, latency_histogram};
use super::scan::FrameScanner;

/// Publishing parameters.
#[derive(Clone)]
pub struct PublishPlan {
    /// The server publishes go to (`--publish-server`, else the first `--server`).
    pub server: SocketAddr,
    /// `Authorization: Bearer` value, if any.
    pub api_key: Option<String>,
    /// Publishes per second, all publishers together.
    pub rate: f64,
    /// Concurrent publisher connections.
    pub publishers: usize,
    /// Number of topics (`bench:0` … `bench:{topics-1}`), published round-robin.
    pub topics: usize,
    /// Bytes of padding in each event.
    pub payload: usize,
    /// Events per request: 1 uses `/api/publish`, more `/api/publish/batch`.
    pub batch: usize,
}

/// What the publishers did.
pub struct PublishStats {
    /// Publishes answered 200.
    pub accepted: AtomicU64,
    /// Publishes that failed.
    pub failed: AtomicU64,
    /// Highest offset answered per topic.
    pub last_offset: Vec<AtomicU64>,
    /// HTTP round-trip times, ns.
    pub round_trip: Mutex<hdrhistogram::Histogram<u64>>,
}

impl PublishStats {
    /// Zeroed stats for `topics` topics.
    pub fn new(topics: usize) -> Self {
        Self {
            accepted: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_offset: (0..topics).map(|_| AtomicU64::new(0)).collect(),
            round_trip: Mutex::new(latency_histogram()),
        }
    }
}

/// Runs `plan` until `stop` fires.
pub async fn run(plan: PublishPlan, shared: Arc<Shared>, stats: Arc<PublishStats>, stop: CancellationToken) {
    let mut tasks = Vec::new();
    let publishers = plan.publishers.clamp(1, plan.topics.max(1));
    for worker in 0..publishers {
        let (plan, shared, stats, stop) = (plan.clone(), shared.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = publish_loop(worker, publishers, &plan, &shared, &stats, &stop).await {
                eprintln!("publisher {worker}: {e}");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn publish_loop(
    worker: usize,
    workers: usize,
    plan: &PublishPlan,
    shared: &Shared,
    stats: &PublishStats,
    stop: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(plan.server).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let batch = plan.batch.max(1);
    let period = Duration::from_secs_f64((workers * batch) as f64 / plan.rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let pad = "x".repeat(plan.payload);
    let scanner = FrameScanner::default();
    let authorization = plan.api_key.as_ref().map(|k| format!("Bearer {k}"));
    let host = plan.server.to_string();
    let path = if batch > 1 { "/api/publish/batch" } else { "/api/publish" };
    let mut topic = worker;
    let mut next_topic = || {
        let this = topic;
        topic += workers;
        if topic >= plan.topics {
            topic = worker;
        }
        this
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let sent = shared.now_ns();
        let event = |topic: usize| {
            format!(r#"{{"topic":"bench:{topic}","event":{{"type":"bench","sent":{sent},"pad":"{pad}"}}}}"#)
        };
        let topics: Vec<usize> = (0..batch).map(|_| next_topic()).collect();
        let body = if batch > 1 {
            let items: Vec<String> = topics.iter().map(|&t| event(t)).collect();
            format!(r#"{{"events":[{}]}}"#, items.join(","))
        } else {
            event(topics[0])
        };
        let mut request = Request::post(path).header(HOST, &host).header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &authorization {
            request = request.header(AUTHORIZATION, auth);
        }
        let response = sender.send_request(request.body(Full::new(Bytes::from(body)))?).await?;
        let ok = response.status().is_success();
        let answer = response.into_body().collect().await?.to_bytes();
        let _ = stats.round_trip.lock().record(shared.now_ns().saturating_sub(sent).max(1));
        if batch > 1 {
            record_batch(stats, &topics, ok.then_some(&answer[..]));
            continue;
        }
        match scanner.scan(&answer).filter(|_| ok) {
            Some(scanned) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                stats.last_offset[topics[0]].fetch_max(scanned.offset, Ordering::Relaxed);
            }
            None => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Counts a batch's answer `{"results":[{"offset"…} or {"error"…}…]}` item by item
/// (`None`: the request failed as a whole).
fn record_batch(stats: &PublishStats, topics: &[usize], answer: Option<&[u8]>) {
    let results = answer
        .and_then(|a| serde_json::from_slice::<serde_json::Value>(a).ok())
        .and_then(|mut v| v.get_mut("results").map(serde_json::Value::take));
    let results = results.as_ref().and_then(serde_json::Value::as_array);
    for (i, &topic) in topics.iter().enumerate() {
        match results.and_then(|r| r.get(i)).and_then(|r| r.get("offset")).and_then(serde_json::Value::as_u64) {
            Some(offset) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                stats.last_offset[topic].fetch_max(offset, Ordering::Relaxed);
            }
            None => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

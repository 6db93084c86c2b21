//! The `apigw-post` report: computed from the clients' and receivers' raw tallies, printed
//! as a block of text and written as `report.json` (which `bench/apigw/run` tabulates).
//!
//! Owns the arithmetic (rates, percentiles, CPU per request) and the output formats. It
//! never measures anything itself and never drops a failure from the counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Delivery;
use super::poster::PosterTally;
use super::receiver::ReceiverTally;
use crate::client::latency_histogram;

/// Percentiles of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Raw measurements of one run.
pub struct Inputs {
    pub(super) label: String,
    pub(super) server: SocketAddr,
    pub(super) post_server: SocketAddr,
    pub(super) auth: &'static str,
    pub(super) receivers: u32,
    pub(super) clients: u32,
    pub(super) body_size: usize,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    pub(super) posted: Vec<PosterTally>,
    pub(super) received: Vec<ReceiverTally>,
    /// Server CPU time over the window (all `--server-pid` together).
    pub(super) server_cpu: Option<Duration>,
    /// The load generator's CPU time over the window.
    pub(super) bench_cpu: Option<Duration>,
}

/// The result of one `apigw-post` run.
#[derive(Debug, Clone, Serialize)]
pub struct ApigwReport {
    /// Name of the server under test.
    pub label: String,
    /// Where the receivers are connected.
    pub server: SocketAddr,
    /// Where the posts went.
    pub post_server: SocketAddr,
    /// `sigv4`, `bearer` or `none`.
    pub auth: &'static str,
    /// WebSocket receivers (C).
    pub receivers: u32,
    /// Concurrent keep-alive clients (K).
    pub clients: u32,
    /// Bytes per body.
    pub body_size: usize,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Requests started in the window, whatever their outcome.
    pub window_requests: u64,
    /// Of those, answered 200.
    pub window_ok: u64,
    /// 200s per second over the window.
    pub requests_per_s: f64,
    /// HTTP latency of the window's 200s (request built and signed → response read).
    pub http: Latency,
    /// Request built → frame read by its receiver, for the window's posts.
    pub end_to_end: Latency,
    /// Failures over the whole run, by `"<status> <x-amzn-ErrorType>"` or kind.
    pub errors: BTreeMap<String, u64>,
    /// Every 200 read exactly once at its connection?
    pub delivery: Delivery,
    /// Receivers whose connection ended before the run did.
    pub receivers_ended_early: u64,
    /// Why the first of them ended.
    pub first_early_end: Option<String>,
    /// Frames read that were not a posted body (besides `connected`).
    pub other_frames: u64,
    /// Server CPU per request answered in the window, µs (`--server-pid`).
    pub server_cpu_us_per_request: Option<f64>,
    /// Server cores busy over the window.
    pub server_cpu_cores: Option<f64>,
    /// Load generator cores busy over the window.
    pub bench_cpu_cores: Option<f64>,
}

impl ApigwReport {
    /// Computes the report.
    pub fn build(i: Inputs) -> Self {
        let secs = i.duration.as_secs_f64().max(1e-9);
        let window_requests = i.posted.iter().map(|p| p.window_requests).sum();
        let window_ok: u64 = i.posted.iter().map(|p| p.window_ok).sum();
        let mut http = latency_histogram();
        let mut end_to_end = latency_histogram();
        let mut errors = BTreeMap::new();
        for p in &i.posted {
            let _ = http.add(&p.latency);
            for (what, n) in &p.errors {
                *errors.entry(what.clone()).or_default() += n;
            }
        }
        for r in &i.received {
            let _ = end_to_end.add(&r.latency);
        }
        let ended: Vec<&str> = i.received.iter().filter_map(|r| r.ended_early.as_deref()).collect();
        let server_cpu_s = i.server_cpu.map(|d| d.as_secs_f64());
        Self {
            label: i.label,
            server: i.server,
            post_server: i.post_server,
            auth: i.auth,
            receivers: i.receivers,
            clients: i.clients,
            body_size: i.body_size,
            warmup_s: i.warmup.as_secs_f64(),
            duration_s: secs,
            window_requests,
            window_ok,
            requests_per_s: window_ok as f64 / secs,
            http: Latency::of(&http),
            end_to_end: Latency::of(&end_to_end),
            errors,
            delivery: Delivery::of(&i.posted, &i.received),
            receivers_ended_early: ended.len() as u64,
            first_early_end: ended.first().map(|s| (*s).to_owned()),
            other_frames: i.received.iter().map(|r| r.other_frames).sum(),
            server_cpu_us_per_request: server_cpu_s
                .and_then(|cpu| (window_requests > 0).then(|| cpu * 1e6 / window_requests as f64)),
            server_cpu_cores: server_cpu_s.map(|cpu| cpu / secs),
            bench_cpu_cores: i.bench_cpu.map(|d| d.as_secs_f64() / secs),
        }
    }

    /// Writes `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)
    }

    /// Whether the run is clean: no error, nothing lost, duplicated or misdelivered.
    pub fn clean(&self) -> bool {
        let d = &self.delivery;
        self.errors.is_empty() && d.lost == 0 && d.duplicates == 0 && d.misdelivered == 0 && d.acknowledged > 0
    }
}

impl std::fmt::Display for ApigwReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>, digits: usize| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"));
        let lat = |l: &Latency| {
            if l.count == 0 {
                return "n/a (no 200 in the window)".to_owned();
            }
            format!(
                "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} samples)",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.count
            )
        };
        let d = &self.delivery;
        writeln!(f, "apigw-post: {} ({}), POST /@connections/{{id}} at {}", self.label, self.auth, self.post_server)?;
        writeln!(
            f,
            "  {} receivers, {} keep-alive clients, {} B bodies, {:.1} s warm-up + {:.1} s measured",
            self.receivers, self.clients, self.body_size, self.warmup_s, self.duration_s
        )?;
        writeln!(
            f,
            "  throughput     {:.0} req/s ({} of {} requests in the window answered 200)",
            self.requests_per_s, self.window_ok, self.window_requests
        )?;
        writeln!(f, "  HTTP latency   {}", lat(&self.http))?;
        writeln!(f, "  end to end     {}", lat(&self.end_to_end))?;
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
        };
        writeln!(f, "  errors         {errors}")?;
        writeln!(
            f,
            "  delivery       {} acknowledged, {} read; lost {}, duplicates {}, misdelivered {}, read without a 200 {}",
            d.acknowledged, d.delivered, d.lost, d.duplicates, d.misdelivered, d.delivered_without_200
        )?;
        if self.receivers_ended_early > 0 {
            writeln!(
                f,
                "  receivers cut  {} (first: {})",
                self.receivers_ended_early,
                self.first_early_end.as_deref().unwrap_or("?")
            )?;
        }
        writeln!(
            f,
            "  server CPU     {} µs/request, {} cores; bench {} cores",
            opt(self.server_cpu_us_per_request, 1),
            opt(self.server_cpu_cores, 2),
            opt(self.bench_cpu_cores, 2)
        )
    }
}

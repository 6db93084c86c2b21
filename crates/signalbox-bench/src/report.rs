//! The run's results: computed from raw counts, printed as a table, written as JSON and
//! plotted (latency distribution, deliveries over time) as SVG.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use super::Plan;
use super::client::{ClientTally, latency_histogram};
use super::procstat::{self, ProcSample};

/// Counters read when the measured window opens.
pub struct WindowStart {
    pub(super) at: Instant,
    pub(super) received: u64,
    pub(super) accepted: u64,
    /// One sample per `--server-pid`.
    pub(super) server: Vec<Option<ProcSample>>,
    pub(super) bench: Option<ProcSample>,
}

/// Raw measurements of the storm, if one ran.
pub struct StormInputs {
    pub(super) reconnect: Histogram<u64>,
    pub(super) resubscribed: u64,
    pub(super) caught_up: Histogram<u64>,
    pub(super) missed: u64,
    pub(super) steady_latency: Histogram<u64>,
    pub(super) offline: Duration,
    pub(super) cpu: Option<StormCpu>,
}

/// Server CPU from the drop until every dropping client caught up.
pub struct StormCpu {
    pub(super) wall: Duration,
    pub(super) before: Option<ProcSample>,
    pub(super) after: Option<ProcSample>,
}

/// Raw measurements of a run.
pub struct Inputs {
    pub(super) label: String,
    pub(super) plan: Plan,
    /// The subscribers' servers (`--server`), in order; a tally's `node` indexes it.
    pub(super) servers: Vec<SocketAddr>,
    pub(super) publish_server: SocketAddr,
    pub(super) connect_failures_per_node: Vec<usize>,
    /// Latency of the clients of each server (ns).
    pub(super) node_latency: Vec<Histogram<u64>>,
    /// `--server-pid`, in order; the samples below follow it.
    pub(super) server_pids: Vec<u32>,
    pub(super) connect_elapsed: Duration,
    pub(super) connect_times: Histogram<u64>,
    pub(super) connect_failures: usize,
    pub(super) tallies: Vec<ClientTally>,
    pub(super) final_offsets: Vec<u64>,
    pub(super) published: u64,
    pub(super) publish_failures: u64,
    pub(super) round_trip: Histogram<u64>,
    pub(super) latency: Histogram<u64>,
    pub(super) storm: Option<StormInputs>,
    pub(super) timeline: Vec<(f64, u64)>,
    pub(super) server_before: Vec<Option<ProcSample>>,
    pub(super) server_idle: Vec<Option<ProcSample>>,
    pub(super) window_start: Option<WindowStart>,
    pub(super) window_end: (Instant, u64, u64),
    pub(super) server_end: Vec<Option<ProcSample>>,
    pub(super) bench_end: Option<ProcSample>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th.
    pub p90_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// 99.9th.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What the storm did.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Clients that reconnected and resubscribed.
    pub resubscribed: u64,
    /// Clients that could not reconnect.
    pub failed: u64,
    /// Resubscriptions answered `recovered: true` (every missed event replayed).
    pub recovered: u64,
    /// Time from the drop to the new `subscribed` reply.
    pub reconnect: Percentiles,
    /// How long dropped clients stayed offline.
    pub offline_ms: f64,
    /// Events the resuming clients had missed, in all (each one replayed when recovered).
    pub missed_events: u64,
    /// Time from the drop until the client had every missed event (replay over).
    pub caught_up: Percentiles,
    /// Wall time from the drop until the last dropping client caught up.
    pub all_caught_up_ms: Option<f64>,
    /// Server CPU over that time, ms (live publishing included).
    pub server_cpu_ms: Option<f64>,
    /// Latency of the clients that did not drop, for events sent while the others resumed.
    pub steady_latency: Percentiles,
}

/// The subscribers on one server of `--server`.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Its address.
    pub server: String,
    /// Clients connected to it.
    pub connected: usize,
    /// Clients that failed to connect to it.
    pub connect_failures: usize,
    /// Events its clients expected (from the final offsets).
    pub expected: u64,
    /// Events its clients received.
    pub received: u64,
    /// Expected events its clients never received.
    pub lost: u64,
    /// Events its clients received twice or out of order.
    pub duplicates: u64,
    /// Publisher send → receive, for its clients.
    pub latency: Percentiles,
}

/// One process of `--server-pid`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// Its pid.
    pub pid: u32,
    /// RSS before the clients connected (bytes).
    pub rss_before: Option<u64>,
    /// RSS with every client connected (bytes).
    pub rss_idle: Option<u64>,
    /// RSS at the end of the measured window (bytes).
    pub rss_end: Option<u64>,
    /// CPU in the measured window, fraction of one core.
    pub cpu_cores: Option<f64>,
}

/// Expected, received, lost and duplicate events of a set of clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
}

impl Counts {
    fn of<'a>(tallies: impl Iterator<Item = &'a ClientTally>, final_offsets: &[u64]) -> Self {
        let mut c = Self::default();
        for t in tallies {
            let last = final_offsets.get(t.topic).copied().unwrap_or(0);
            c.expected += last.saturating_sub(t.start_offset);
            c.received += t.received;
            c.duplicates += t.duplicates;
        }
        c.lost = c.expected.saturating_sub(c.received.saturating_sub(c.duplicates));
        c
    }
}

/// The report (also `report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Server under test.
    pub label: String,
    /// The run's shape.
    pub plan: Plan,
    /// Where the publishes went (`--publish-server`, else the first `--server`).
    pub publish_server: String,
    /// The subscribers per server of `--server`, in order (one entry for one server).
    pub servers: Vec<NodeReport>,
    /// Each process of `--server-pid`; the `server_*` figures are their sum.
    pub server_processes: Vec<ProcessReport>,
    /// Connections established.
    pub connected: usize,
    /// Connections that failed.
    pub connect_failures: usize,
    /// Seconds to open every connection.
    pub connect_seconds: f64,
    /// Time from TCP connect to `subscribed`.
    pub connect_time: Percentiles,
    /// Server RSS growth per connection (bytes), idle, all subscribed.
    pub server_rss_per_connection: Option<f64>,
    /// Server RSS with every client connected (bytes).
    pub server_rss_idle: Option<u64>,
    /// Publishes answered 200 (whole run).
    pub published: u64,
    /// Publishes that failed.
    pub publish_failures: u64,
    /// Publishes per second accepted in the measured window.
    pub publish_rate: f64,
    /// Deliveries per second in the measured window.
    pub deliveries_per_second: f64,
    /// Events expected by subscribers (from the final offsets).
    pub expected: u64,
    /// Events received.
    pub received: u64,
    /// Expected events never received.
    pub lost: u64,
    /// Events received twice or out of order.
    pub duplicates: u64,
    /// Server CPU per delivery in the window, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server CPU per publish (with its deliveries) in the window, µs.
    pub server_cpu_us_per_publish: Option<f64>,
    /// Server CPU use in the window, fraction of one core.
    pub server_cpu_cores: Option<f64>,
    /// The load generator's own CPU in the window, fraction of one core.
    pub bench_cpu_cores: Option<f64>,
    /// Publisher send → client receive.
    pub latency: Percentiles,
    /// HTTP publish round trip.
    pub publish_round_trip: Percentiles,
    /// The storm (`--scenario storm`): every client dropped and resubscribed.
    pub storm: Option<StormReport>,
    /// Subscribers that resumed on another node after theirs went away (`--failover`).
    pub failovers: u64,
    /// (seconds since start, deliveries in that second).
    pub timeline: Vec<(f64, u64)>,
    #[serde(skip)]
    latency_histogram: Histogram<u64>,
}

impl Report {
    /// Computes the report.
    pub fn build(i: Inputs) -> Self {
        let Counts { expected, received, lost, duplicates } = Counts::of(i.tallies.iter(), &i.final_offsets);
        let servers = i
            .servers
            .iter()
            .enumerate()
            .map(|(node, addr)| {
                let counts = Counts::of(i.tallies.iter().filter(|t| t.node == node), &i.final_offsets);
                NodeReport {
                    server: addr.to_string(),
                    connected: i.tallies.iter().filter(|t| t.node == node).count(),
                    connect_failures: i.connect_failures_per_node.get(node).copied().unwrap_or(0),
                    expected: counts.expected,
                    received: counts.received,
                    lost: counts.lost,
                    duplicates: counts.duplicates,
                    latency: i
                        .node_latency
                        .get(node)
                        .map_or_else(|| Percentiles::of(&latency_histogram()), Percentiles::of),
                }
            })
            .collect();
        let window_secs = i.window_start.as_ref().map(|w| i.window_end.0.duration_since(w.at).as_secs_f64().max(1e-9));
        let server_processes = i
            .server_pids
            .iter()
            .enumerate()
            .map(|(k, &pid)| {
                let at = |samples: &[Option<ProcSample>]| samples.get(k).copied().flatten();
                let cpu_cores = match (i.window_start.as_ref().and_then(|w| at(&w.server)), at(&i.server_end)) {
                    (Some(s0), Some(s1)) => window_secs.map(|secs| s1.cpu.saturating_sub(s0.cpu).as_secs_f64() / secs),
                    _ => None,
                };
                ProcessReport {
                    pid,
                    rss_before: at(&i.server_before).map(|s| s.rss_bytes),
                    rss_idle: at(&i.server_idle).map(|s| s.rss_bytes),
                    rss_end: at(&i.server_end).map(|s| s.rss_bytes),
                    cpu_cores,
                }
            })
            .collect();
        let (server_before, server_idle) = (procstat::total(&i.server_before), procstat::total(&i.server_idle));
        let server_end = procstat::total(&i.server_end);
        let failovers = i.tallies.iter().map(|t| u64::from(t.failovers)).sum();
        let storm = i.storm.map(|s| StormReport {
            resubscribed: s.resubscribed,
            failed: i.tallies.iter().map(|t| u64::from(t.reconnect_failures)).sum(),
            recovered: i.tallies.iter().map(|t| u64::from(t.recovered)).sum(),
            reconnect: Percentiles::of(&s.reconnect),
            offline_ms: s.offline.as_secs_f64() * 1e3,
            missed_events: s.missed,
            caught_up: Percentiles::of(&s.caught_up),
            all_caught_up_ms: s.cpu.as_ref().map(|c| c.wall.as_secs_f64() * 1e3),
            server_cpu_ms: s.cpu.as_ref().and_then(|c| match (c.before, c.after) {
                (Some(b), Some(a)) => Some(a.cpu.saturating_sub(b.cpu).as_secs_f64() * 1e3),
                _ => None,
            }),
            steady_latency: Percentiles::of(&s.steady_latency),
        });
        let rss_per_conn = match (server_before, server_idle) {
            (Some(b), Some(a)) if !i.tallies.is_empty() => {
                Some((a.rss_bytes as f64 - b.rss_bytes as f64) / i.tallies.len() as f64)
            }
            _ => None,
        };
        let (mut publish_rate, mut deliveries_per_second) = (0.0, 0.0);
        let (mut cpu_per_delivery, mut cpu_per_publish, mut server_cores, mut bench_cores) = (None, None, None, None);
        if let Some(WindowStart {
            at: start,
            received: received0,
            accepted: accepted0,
            server: server0,
            bench: bench0,
        }) = i.window_start
        {
            let (end, received1, accepted1) = i.window_end;
            let secs = end.duration_since(start).as_secs_f64().max(1e-9);
            let deliveries = received1.saturating_sub(received0);
            let publishes = accepted1.saturating_sub(accepted0);
            publish_rate = publishes as f64 / secs;
            deliveries_per_second = deliveries as f64 / secs;
            if let (Some(s0), Some(s1)) = (procstat::total(&server0), server_end) {
                let cpu = s1.cpu.saturating_sub(s0.cpu).as_secs_f64();
                server_cores = Some(cpu / secs);
                cpu_per_delivery = (deliveries > 0).then(|| cpu * 1e6 / deliveries as f64);
                cpu_per_publish = (publishes > 0).then(|| cpu * 1e6 / publishes as f64);
            }
            if let (Some(b0), Some(b1)) = (bench0, i.bench_end) {
                bench_cores = Some(b1.cpu.saturating_sub(b0.cpu).as_secs_f64() / secs);
            }
        }
        Self {
            label: i.label,
            plan: i.plan,
            publish_server: i.publish_server.to_string(),
            servers,
            server_processes,
            connected: i.tallies.len(),
            connect_failures: i.connect_failures,
            connect_seconds: i.connect_elapsed.as_secs_f64(),
            connect_time: Percentiles::of(&i.connect_times),
            server_rss_per_connection: rss_per_conn,
            server_rss_idle: server_idle.map(|s| s.rss_bytes),
            published: i.published,
            publish_failures: i.publish_failures,
            publish_rate,
            deliveries_per_second,
            expected,
            received,
            lost,
            duplicates,
            server_cpu_us_per_delivery: cpu_per_delivery,
            server_cpu_us_per_publish: cpu_per_publish,
            server_cpu_cores: server_cores,
            bench_cpu_cores: bench_cores,
            latency: Percentiles::of(&i.latency),
            publish_round_trip: Percentiles::of(&i.round_trip),
            storm,
            failovers,
            timeline: i.timeline,
            latency_histogram: i.latency,
        }
    }

    /// Writes `report.json`, `latency.svg` and `throughput.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        if self.latency.count > 0 {
            self.plot_latency(&dir.join("latency.svg")).map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        if !self.timeline.is_empty() {
            self.plot_timeline(&dir.join("throughput.svg")).map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    fn plot_latency(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        // Latency against percentile on a "nines" axis: x = -log10(1 - q).
        let points: Vec<(f64, f64)> = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999]
            .iter()
            .map(|q| (-(1.0f64 - q).log10(), self.latency_histogram.value_at_quantile(*q) as f64 / 1e6))
            .collect();
        let max_ms = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.01) * 1.1;
        let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: publish → receive latency", self.label), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..4.0, 0.0..max_ms)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| format!("{:.2}%", 100.0 * (1.0 - 10f64.powf(-x))))
            .draw()?;
        chart.draw_series(LineSeries::new(points.clone(), &BLUE))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
        root.present()?;
        Ok(())
    }

    fn plot_timeline(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let max = self.timeline.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64 * 1.1;
        let end = self.timeline.last().map_or(1.0, |p| p.0).max(1.0);
        let root = SVGBackend::new(path, (800, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{}: deliveries per second", self.label), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, 0.0..max)?;
        chart.configure_mesh().x_desc("seconds").y_desc("deliveries/s").draw()?;
        chart.draw_series(LineSeries::new(self.timeline.iter().map(|(t, n)| (*t, *n as f64)), &RED))?;
        root.present()?;
        Ok(())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let has_pid = self.server_rss_idle.is_some();
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.2}{unit}"),
            None if has_pid => "n/a".to_owned(),
            None => "n/a (pass --server-pid)".to_owned(),
        };
        writeln!(f, "server                 {} ({} protocol)", self.label, self.plan.protocol.name())?;
        let subscribers: Vec<&str> = self.servers.iter().map(|n| n.server.as_str()).collect();
        writeln!(
            f,
            "nodes                  subscribers on {}; publishes to {}",
            subscribers.join(", "),
            self.publish_server
        )?;
        if self.servers.len() > 1 || subscribers.first() != Some(&self.publish_server.as_str()) {
            for n in &self.servers {
                writeln!(
                    f,
                    "  {:<20} {} clients ({} failed); expected {}, received {}, lost {}, duplicates {}; latency p50 {:.3} ms, p99 {:.3} ms",
                    n.server,
                    n.connected,
                    n.connect_failures,
                    n.expected,
                    n.received,
                    n.lost,
                    n.duplicates,
                    n.latency.p50_ms,
                    n.latency.p99_ms
                )?;
            }
        }
        writeln!(
            f,
            "connections            {} ok, {} failed, opened in {:.2} s (p50 {:.2} ms, p99 {:.2} ms)",
            self.connected,
            self.connect_failures,
            self.connect_seconds,
            self.connect_time.p50_ms,
            self.connect_time.p99_ms
        )?;
        writeln!(f, "server RSS/connection  {}", opt(self.server_rss_per_connection.map(|b| b / 1024.0), " KiB"))?;
        writeln!(
            f,
            "publishes              {} ok, {} failed; {:.1}/s in the window (asked {:.1}/s){}",
            self.published,
            self.publish_failures,
            self.publish_rate,
            self.plan.rate,
            if self.plan.batch > 1 {
                format!(", {} per POST /api/publish/batch", self.plan.batch)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "deliveries             {:.0}/s; expected {}, received {}, lost {}, duplicates {}",
            self.deliveries_per_second, self.expected, self.received, self.lost, self.duplicates
        )?;
        writeln!(
            f,
            "server CPU             {} per delivery, {} per publish, {} cores",
            opt(self.server_cpu_us_per_delivery, " µs"),
            opt(self.server_cpu_us_per_publish, " µs"),
            opt(self.server_cpu_cores, "")
        )?;
        if self.server_processes.len() > 1 {
            for p in &self.server_processes {
                let mib = |b: Option<u64>| b.map_or("n/a".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
                writeln!(
                    f,
                    "  pid {:<16} RSS {} idle, {} at the end; {} cores",
                    p.pid,
                    mib(p.rss_idle),
                    mib(p.rss_end),
                    p.cpu_cores.map_or("n/a".to_owned(), |c| format!("{c:.2}"))
                )?;
            }
        }
        writeln!(f, "bench CPU              {} cores", opt(self.bench_cpu_cores, ""))?;
        let l = &self.latency;
        writeln!(
            f,
            "latency (ms)           p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
        )?;
        let r = &self.publish_round_trip;
        write!(f, "publish round trip     p50 {:.3} ms  p99 {:.3} ms", r.p50_ms, r.p99_ms)?;
        if self.failovers > 0 {
            write!(f, "\nfailover               {} subscribers resumed on another node", self.failovers)?;
        }
        if let Some(s) = &self.storm {
            write!(
                f,
                "\nstorm                  {} resubscribed ({} recovered), {} failed; drop → subscribed p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                s.resubscribed, s.recovered, s.failed, s.reconnect.p50_ms, s.reconnect.p99_ms, s.reconnect.max_ms
            )?;
            write!(
                f,
                "\nresume                 offline {:.0} ms, {} missed events replayed; drop → caught up p50 {:.1} ms, p99 {:.1} ms; all caught up after {}, server CPU {}",
                s.offline_ms,
                s.missed_events,
                s.caught_up.p50_ms,
                s.caught_up.p99_ms,
                s.all_caught_up_ms.map_or("n/a".into(), |ms| format!("{ms:.0} ms")),
                s.server_cpu_ms.map_or("n/a".into(), |ms| format!("{ms:.0} ms")),
            )?;
            let l = &s.steady_latency;
            write!(
                f,
                "\nsteady clients         latency during the resumes p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
                l.p50_ms, l.p99_ms, l.max_ms, l.count
            )?;
        }
        Ok(())
    }
}

//! Criterion benches for the durable outbox (`signalbox::sinks::outbox`).
//!
//! Run them with `cargo bench --bench outbox` (add `-- append` or `-- drain` for one
//! group). Every bench works on a fresh temp dir on the machine's disk (`/tmp` unless
//! `TMPDIR` says otherwise), so fsync is real; numbers depend on the disk.
//!
//! Groups:
//!
//! - `outbox/append/{1,64,512}`: [`Outbox::append`] of realistic messages (a ~150-byte
//!   client body; ~420 bytes of stored JSON) from N concurrent tasks on a 2-worker tokio
//!   runtime, no drainer running. Each append returns once its message is committed with
//!   fsync, so one appender measures one fsync per message; many appenders measure group
//!   commit (one fsync per batch). Throughput is messages.
//! - `outbox/drain/noop`: messages already in the outbox (put there untimed) delivered by
//!   one drainer into a sink that takes every message at once; timed from
//!   [`Outbox::start_drainers`] until the sink has seen them all. Throughput is messages.

// Benches are not test code to clippy, so `allow-expect-in-tests` does not reach them; a
// failed setup here should just stop the bench with a message.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signalbox::metrics::Metrics;
use signalbox::sinks::outbox::{Outbox, OutboxLimits};
use signalbox::sinks::retry::RetryPolicy;
use signalbox::sinks::{ClientReplies, Delivered, MessageId, RoutedMessage, Sink, SinkError, SinkHandle};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const UNBOUNDED: OutboxLimits = OutboxLimits { max_messages: u64::MAX, max_bytes: u64::MAX };

struct NoReplies;

impl ClientReplies for NoReplies {
    fn accepted(&self, _message: &RoutedMessage) {}
    fn relay(&self, _message: &RoutedMessage, _body: Bytes) {}
}

/// Takes every message at once; wakes the bench when `target` messages were seen.
#[derive(Default)]
struct NoopSink {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

#[async_trait::async_trait]
impl Sink for NoopSink {
    async fn send(&self, _message: &RoutedMessage) -> Result<Delivered, SinkError> {
        Ok(Delivered::default())
    }

    async fn send_batch(&self, messages: &[RoutedMessage]) -> signalbox::sinks::BatchOutcome {
        let seen = self.seen.fetch_add(messages.len() as u64, Ordering::AcqRel) + messages.len() as u64;
        if seen >= self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
        signalbox::sinks::BatchOutcome { delivered: vec![Delivered::default(); messages.len()], error: None }
    }

    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn message(n: u64) -> RoutedMessage {
    RoutedMessage {
        message_id: MessageId::generate(),
        sink: "bench".into(),
        action: "forward".into(),
        connection_id: "conn_1763800000000_6f1c2a9b".into(),
        user_id: "user-42".into(),
        request_id: Some(format!("req-{n}")),
        received_at_ms: 1_763_800_000_123,
        connected_at_ms: 1_763_800_000_000,
        source_ip: "10.0.3.17".into(),
        body: format!(
            r#"{{"action":"forward","type":"dev","n":{n},"payload":{{"job":"build-1234","note":"{}"}}}}"#,
            "x".repeat(64)
        ),
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Appends `total` messages from `tasks` concurrent tasks.
async fn append_all(outbox: &Outbox, tasks: u64, total: u64) {
    let mut joins = Vec::new();
    for task in 0..tasks {
        let outbox = outbox.clone();
        joins.push(tokio::spawn(async move {
            for n in (task..total).step_by(tasks as usize) {
                outbox.append(message(n)).await.expect("append");
            }
        }));
    }
    for join in joins {
        join.await.expect("appender");
    }
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("outbox/append");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(8));
    for tasks in [1_u64, 64, 512] {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path(), UNBOUNDED, Arc::new(NoReplies)).expect("open");
        group.bench_with_input(BenchmarkId::from_parameter(tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    append_all(&outbox, tasks.min(iters), iters).await;
                    start.elapsed()
                })
            });
        });
        rt.block_on(outbox.close());
    }
    group.finish();
}

fn bench_drain(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("outbox/drain");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(8));
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = Outbox::open(dir.path(), UNBOUNDED, Arc::new(NoReplies)).expect("open");
    let metrics = Metrics::new();
    let policy = RetryPolicy::default();
    group.bench_function("noop", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                append_all(&outbox, 512, iters).await;
                let sink = Arc::new(NoopSink::default());
                sink.target.store(iters, Ordering::Release);
                let handle =
                    Arc::new(SinkHandle::new("bench".into(), "noop", Arc::clone(&sink) as _, metrics.sink("bench")));
                let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
                let start = Instant::now();
                outbox.start_drainers(&[handle], policy, &tracker, stop.clone());
                while sink.seen.load(Ordering::Acquire) < iters {
                    sink.done.notified().await;
                }
                let elapsed = start.elapsed();
                stop.cancel();
                tracker.close();
                tracker.wait().await;
                // Let the deletes land so the next sample starts from an empty outbox.
                while outbox.pending() > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                elapsed
            })
        });
    });
    rt.block_on(outbox.close());
    group.finish();
}

criterion_group!(benches, bench_append, bench_drain);
criterion_main!(benches);

//! Criterion benches for the functions on the publish → deliver hot path.
//!
//! Run them with `cargo bench --bench hot_path` (add e.g. `-- fanout` to run one group, or
//! `-- --warm-up-time 1 --measurement-time 3` for a quicker pass). Every bench goes through
//! the crate's public API only.
//!
//! Groups:
//!
//! - `encode/delivery/{64,512,4096}`: [`encode_delivery`] of one event whose JSON, as a
//!   backend posts it to `/api/publish`, is that many bytes (`type` plus a padding string).
//!   The publisher gives no `timestamp`, so each call also formats the current time, as the
//!   real path does. Throughput is the event's size in bytes (the frame is about 85 bytes
//!   longer: `topic`, `offset`, `timestamp`).
//! - `fanout/{1,100,5000}`: one already-encoded frame handed to [`Fanout::deliver`] of a
//!   [`TopicRegistry`] in which N connections hold the topic; that is the whole local
//!   fan-out of one publish (entry lookup, entry lock, one queue push per subscriber), with
//!   the broker's offset assignment and the encode left out. Subscriptions are made through
//!   [`Hub::subscribe`] on a [`MemoryBroker`]. Throughput is N elements (deliveries), so
//!   time / N is the cost of one delivery; it should stay flat in N. The queues are drained
//!   (as each connection's writer would, with [`ConnectionHandle::next_outbound`] and one
//!   reused batch) every [`DELIVERIES_PER_DRAIN`] publishes, outside the timed part, so no
//!   queue ever fills up (a full queue would close its connection).
//! - `topic/parse`: [`Topic::parse`] on realistic topics, a 256-byte one (the longest
//!   allowed) and one rejected for a bad character.
//! - `pattern/match`: [`TopicPattern::matches`] for `job:*` and `project:42` against a
//!   matching and a non-matching topic each, and for `*` (which matches every topic)
//!   against two topics.
//! - `filter/match`: [`Filter::matches`] of the SPEC §5 example filter
//!   `{"category":"electronics","discount":{"gte":20}}` (compiled once with
//!   [`Filter::parse`]) against a realistic matching event and one that fails on `discount`
//!   (so both conditions are evaluated either way).

// Benches are not test code to clippy, so `allow-expect-in-tests` does not reach them; a
// failed setup here should just stop the bench with a message.
#![allow(clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use serde_json::json;
use signalbox::Config;
use signalbox::broker::{Broker, Delivery, Fanout, HistoryLimits, MemoryBroker};
use signalbox::codec::{FrameText, encode_delivery};
use signalbox::domain::{ConnectionId, Epoch, Event, Filter, StreamPosition, Topic, TopicPattern, UserId};
use signalbox::hub::{
    ConnectionHandle, ConnectionRegistry, Hub, QueueLimits, SharedFrame, SubscribeOptions, TopicRegistry,
};
use signalbox::metrics::Metrics;

/// Publishes timed back to back before the queues are drained; below the writer's retained
/// batch capacity (64), so draining never reallocates a queue.
const DELIVERIES_PER_DRAIN: u64 = 32;

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode/delivery");
    let topic = Topic::parse("job:job_20240115_abc123").expect("valid topic");
    let position = StreamPosition { offset: 42, epoch: Epoch::new("1a2b3c4d") };
    for size in [64usize, 512, 4096] {
        let event = event_of_size(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &event, |b, event| {
            b.iter(|| encode_delivery(black_box(event), black_box(&topic), black_box(&position)));
        });
    }
    group.finish();
}

/// An event whose JSON is exactly `size` bytes: `{"type":"job.progress","data":"xxx…"}`,
/// parsed from a JSON value the way the HTTP publish path does.
fn event_of_size(size: usize) -> Event {
    let skeleton = json!({"type": "job.progress", "data": ""});
    let overhead = serde_json::to_string(&skeleton).expect("serializable").len();
    let padding = "x".repeat(size.saturating_sub(overhead));
    let value = json!({"type": "job.progress", "data": padding});
    assert_eq!(serde_json::to_string(&value).expect("serializable").len(), size.max(overhead));
    Event::from_value(value).expect("valid event")
}

/// A hub on a memory broker with `n` connections subscribed to `topic`.
struct FanoutFixture {
    topics: Arc<TopicRegistry>,
    handles: Vec<Arc<ConnectionHandle>>,
    topic: Topic,
    position: StreamPosition,
    event: Event,
    frame: FrameText,
}

impl FanoutFixture {
    fn new(n: usize) -> Self {
        let config = Config::default();
        let limits = QueueLimits { frames: config.limits.send_queue_events, bytes: config.limits.send_queue_bytes };
        let metrics = Metrics::new();
        let topics = Arc::new(TopicRegistry::new(config.limits.max_subscriptions, metrics.clone()));
        let connections = Arc::new(ConnectionRegistry::new(usize::MAX, usize::MAX));
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(topics.clone(), HistoryLimits::from_config(&config)));
        let hub = Hub::new(topics.clone(), connections.clone(), broker, metrics.clone());
        let topic = Topic::parse("project:42").expect("valid topic");
        let remote = "127.0.0.1:40000".parse().expect("valid address");

        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let user = UserId::new(&format!("user_{i}"));
                Arc::new(ConnectionHandle::new(ConnectionId::generate(), user, remote, limits, metrics.clone()))
            })
            .collect();
        let position = runtime.block_on(async {
            for handle in &handles {
                connections.insert(handle.clone());
                hub.subscribe(handle, &topic, SubscribeOptions::default(), None).await.expect("subscribe");
            }
            hub.position(&topic).await.expect("broker position")
        });
        assert_eq!(topics.subscriber_count(&topic), n);

        // Deliveries start at the next offset: above every subscriber's start, so each one
        // reaches every queue (the bench raises it per delivery: the registry drops an
        // offset it already delivered).
        let position = StreamPosition { offset: position.offset + 1, ..position };
        let event = event_of_size(512);
        let frame = encode_delivery(&event, &topic, &position);
        Self { topics, handles, topic, position, event, frame }
    }

    /// Empties every queue the way the connection writers do; checks that each held
    /// exactly `expected` frames and that no connection was closed.
    fn drain(&self, batch: &mut VecDeque<SharedFrame>, expected: usize) {
        for handle in &self.handles {
            let work = handle.next_outbound(batch).now_or_never().expect("queued frames make the writer ready at once");
            assert!(!work.closing, "a connection was closed: its queue overflowed");
            assert_eq!(batch.len(), expected);
            batch.clear();
        }
    }
}

fn bench_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for n in [1usize, 100, 5000] {
        let fixture = FanoutFixture::new(n);
        let mut batch = VecDeque::new();
        let published_at = Instant::now();
        let mut position = fixture.position.clone();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(DELIVERIES_PER_DRAIN);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        position.offset += 1;
                        fixture.topics.deliver(black_box(&Delivery {
                            topic: &fixture.topic,
                            position: &position,
                            frame: &fixture.frame,
                            event: &fixture.event,
                            published_at,
                        }));
                    }
                    timed += start.elapsed();
                    fixture.drain(&mut batch, chunk as usize);
                    left -= chunk;
                }
                timed
            });
        });
    }
    group.finish();
}

fn bench_topic_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic/parse");
    let longest = longest_topic();
    let cases: [(&str, &str, bool); 6] = [
        ("project:42", "project:42", true),
        ("job:job_20240115_abc123", "job:job_20240115_abc123", true),
        ("user:u1", "user:u1", true),
        ("global", "global", true),
        ("256B", &longest, true),
        ("rejected:job:*", "job:*", false),
    ];
    for (name, raw, valid) in cases {
        assert_eq!(Topic::parse(raw).is_ok(), valid, "{name}");
        group.bench_with_input(BenchmarkId::from_parameter(name), raw, |b, raw| {
            b.iter(|| Topic::parse(black_box(raw)));
        });
    }
    group.finish();
}

/// Longest topic accepted, in bytes (SPEC §1; the crate's constant is not public).
const MAX_TOPIC_LEN: usize = 256;

/// A valid `namespace:id` topic of exactly the maximum length, using every allowed kind of
/// character.
fn longest_topic() -> String {
    let namespace = "tenant:";
    let id = "doc-7/2024_01.eu@a=B9".chars().cycle().take(MAX_TOPIC_LEN - namespace.len());
    namespace.chars().chain(id).collect()
}

fn bench_pattern_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern/match");
    let cases = [
        ("job:*", "job:job_20240115_abc123", true),
        ("job:*", "jobs:job_20240115_abc123", false),
        ("project:42", "project:42", true),
        ("project:42", "project:420", false),
        // `*` matches every topic, so it has no miss case.
        ("*", "user:u1", true),
        ("*", "global", true),
    ];
    for (pattern, topic, expected) in cases {
        let compiled = TopicPattern::new(pattern);
        let topic = Topic::parse(topic).expect("valid topic");
        assert_eq!(compiled.matches(&topic), expected, "{pattern} vs {topic}");
        let outcome = if expected { "hit" } else { "miss" };
        group.bench_function(BenchmarkId::new(pattern, format!("{topic} ({outcome})")), |b| {
            b.iter(|| black_box(&compiled).matches(black_box(&topic)));
        });
    }
    group.finish();
}

fn bench_filter_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter/match");
    let filter = Filter::parse(&json!({"category": "electronics", "discount": {"gte": 20}})).expect("valid filter");
    let event = |discount| {
        json!({
            "type": "product.discounted",
            "category": "electronics",
            "discount": discount,
            "sku": "SKU-4711-B",
            "price": 129.99,
            "data": {"store": "berlin-mitte", "currency": "EUR"},
        })
        .as_object()
        .cloned()
        .expect("an object literal")
    };
    for (name, event, expected) in [("hit", event(25), true), ("miss", event(5), false)] {
        assert_eq!(filter.matches(&event), expected, "{name}");
        group.bench_function(name, |b| b.iter(|| black_box(&filter).matches(black_box(&event))));
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_fanout, bench_topic_parse, bench_pattern_match, bench_filter_match);
criterion_main!(benches);

//! Test doubles and helpers: a scriptable in-memory sink, a recording `ClientReplies`
//! sharing one event log with the sink (so "accepted before sent" is checkable), and a
//! fixture owning the temp dir, the outbox and its drainers.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::sinks::outbox::{Outbox, OutboxLimits};
use crate::sinks::retry::RetryPolicy;
use crate::sinks::{ClientReplies, Delivered, MessageId, RoutedMessage, Sink, SinkError, SinkHandle};

/// What happened, in order, across the replies seam and every test sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Accepted(String),
    Sent(String, String),
    Relayed(String),
}

/// The shared event log.
pub type Log = Arc<Mutex<Vec<Event>>>;

/// A `ClientReplies` recording into the log; `accepted` may be made slow, to widen the
/// window in which a drainer could overtake it.
pub struct Replies(pub Log, pub Duration);

impl ClientReplies for Replies {
    fn accepted(&self, message: &RoutedMessage) {
        std::thread::sleep(self.1);
        self.0.lock().push(Event::Accepted(message.message_id.to_string()));
    }
    fn relay(&self, message: &RoutedMessage, _body: Bytes) {
        self.0.lock().push(Event::Relayed(message.message_id.to_string()));
    }
}

/// How the test sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
}

/// A scriptable sink: up or down, with messages (by `body`) it fails or rejects.
pub struct TestSink {
    pub name: String,
    pub log: Log,
    pub mode: Mutex<Mode>,
    pub failing: Mutex<HashSet<String>>,
    pub rejecting: Mutex<HashSet<String>>,
    pub reply: bool,
    /// Every message offered to `send`, delivered or not (ids).
    pub offered: Mutex<Vec<String>>,
    /// Delivered messages, in order (ids).
    pub delivered: Mutex<Vec<String>>,
}

impl TestSink {
    pub fn new(name: &str, log: &Log, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            log: Arc::clone(log),
            mode: Mutex::new(mode),
            failing: Mutex::default(),
            rejecting: Mutex::default(),
            reply: false,
            offered: Mutex::default(),
            delivered: Mutex::default(),
        })
    }

    /// An up sink whose every delivery answers a JSON body (like an http sink).
    pub fn replying(name: &str, log: &Log) -> Arc<Self> {
        let mut sink = Self::new(name, log, Mode::Up);
        if let Some(s) = Arc::get_mut(&mut sink) {
            s.reply = true;
        }
        sink
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    pub fn delivered(&self) -> Vec<String> {
        self.delivered.lock().clone()
    }

    pub fn offered_count(&self, id: &str) -> usize {
        self.offered.lock().iter().filter(|o| *o == id).count()
    }
}

#[async_trait::async_trait]
impl Sink for TestSink {
    async fn send(&self, message: &RoutedMessage) -> Result<Delivered, SinkError> {
        let id = message.message_id.to_string();
        self.offered.lock().push(id.clone());
        if *self.mode.lock() == Mode::Down {
            return Err(SinkError::Unavailable("connection refused".into()));
        }
        if self.rejecting.lock().contains(&message.body) {
            return Err(SinkError::Rejected("400 bad request".into()));
        }
        if self.failing.lock().contains(&message.body) {
            return Err(SinkError::Failed("500 internal error".into()));
        }
        self.log.lock().push(Event::Sent(self.name.clone(), id.clone()));
        self.delivered.lock().push(id);
        Ok(Delivered { reply: self.reply.then(|| Bytes::from_static(br#"{"ok":true}"#)) })
    }

    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A message for `sink` whose body is `body` (bodies name messages in scripts).
pub fn message(sink: &str, body: &str) -> RoutedMessage {
    RoutedMessage {
        message_id: MessageId::generate(),
        sink: sink.to_owned(),
        action: "forward".into(),
        connection_id: "conn_1_a".into(),
        user_id: "u1".into(),
        request_id: None,
        received_at_ms: 1_763_800_000_123,
        connected_at_ms: 1_763_800_000_000,
        source_ip: "127.0.0.1".into(),
        body: body.to_owned(),
    }
}

/// Small backoffs so retries happen quickly.
pub const POLICY: RetryPolicy =
    RetryPolicy { max_attempts: 3, initial_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(20) };

/// Limits that never bind.
pub const UNBOUNDED: OutboxLimits = OutboxLimits { max_messages: u64::MAX, max_bytes: u64::MAX };

/// Polls `condition` every 5 ms until it holds; fails the test after `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An outbox in a temp dir with its drainers.
pub struct Fixture {
    pub outbox: Outbox,
    pub log: Log,
    pub metrics: Metrics,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Fixture {
    pub fn open(dir: &Path, limits: OutboxLimits) -> Self {
        Self::with_slow_accepted(dir, limits, Duration::ZERO)
    }

    pub fn with_slow_accepted(dir: &Path, limits: OutboxLimits, delay: Duration) -> Self {
        let log = Log::default();
        let outbox = Outbox::open(dir, limits, Arc::new(Replies(Arc::clone(&log), delay))).unwrap();
        Self { outbox, log, metrics: Metrics::new(), tracker: TaskTracker::new(), stop: CancellationToken::new() }
    }

    pub fn start(&self, sinks: &[&Arc<TestSink>]) {
        let handles: Vec<Arc<SinkHandle>> = sinks
            .iter()
            .map(|s| {
                let sink: Arc<dyn Sink> = Arc::clone(*s) as Arc<dyn Sink>;
                Arc::new(SinkHandle::new(s.name.clone(), "test", sink, self.metrics.sink(&s.name)))
            })
            .collect();
        self.outbox.start_drainers(&handles, POLICY, &self.tracker, self.stop.clone());
    }

    /// Stops the drainers and closes the outbox.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.outbox.close().await;
    }

    /// Every id in `accepted` order.
    pub fn accepted(&self) -> Vec<String> {
        let log = self.log.lock();
        log.iter().filter_map(|e| if let Event::Accepted(id) = e { Some(id.clone()) } else { None }).collect()
    }

    /// A sample of `signalbox_sink_messages_total` / other metrics for `sink`.
    pub fn metric(&self, name: &str, sink: &str, outcome: Option<&str>) -> f64 {
        let text = self.metrics.render();
        let sink_label = format!("sink=\"{sink}\"");
        let outcome_label = outcome.map(|o| format!("outcome=\"{o}\""));
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(&sink_label))
            .find(|l| outcome_label.as_ref().is_none_or(|o| l.contains(o.as_str())))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

/// Appends `count` messages to `sink` from `tasks` concurrent tasks, each appending its
/// share in order; bodies are `{"task":T,"n":N}`. Returns the ids per task, in order.
pub async fn append_concurrently(outbox: &Outbox, sink: &str, tasks: usize, count: usize) -> Vec<Vec<String>> {
    let mut joins = Vec::new();
    for task in 0..tasks {
        let outbox = outbox.clone();
        let sink = sink.to_owned();
        joins.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (task..count).step_by(tasks) {
                let m = message(&sink, &format!(r#"{{"task":{task},"n":{n}}}"#));
                ids.push(m.message_id.to_string());
                outbox.append(m).await.unwrap();
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for join in joins {
        all.push(join.await.unwrap());
    }
    all
}

/// Whether `sub` appears in `seq` in the same relative order.
pub fn is_subsequence(sub: &[String], seq: &[String]) -> bool {
    let mut it = seq.iter();
    sub.iter().all(|s| it.any(|x| x == s))
}

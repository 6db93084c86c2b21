//! SPEC §9.1 end to end with real parts only: gateway nodes (in this process, or the real
//! `signalbox` binary where one must die by SIGKILL) sharing a real `redis-server` (or a
//! real 3-master Redis Cluster) started on free loopback ports. Cross-node delivery and
//! resume (§5) under concurrent publishers, a crashed node, Redis lost with and without
//! its data, a killed pub/sub connection, per-topic interest, one round trip per publish,
//! bad broker URLs, and sharded pub/sub on a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::servers::free_port;
use crate::servers::redis::{Monitor, Redis, RedisCluster, command_calls, monitored};
use crate::support::{API_KEY, Api, Client, SECRET, TestGateway, WAIT, metric, token_with};

/// The `type` of every event these tests publish (nothing else a client receives has it).
const EVENT: &str = "rb.event";

/// The namespace of every topic here: long history, so resumes after an outage recover.
const NAMESPACE: &str = "rb";
const HISTORY: usize = 20_000;

/// A gateway node in this process on `broker`.
async fn node(broker: &str) -> TestGateway {
    let broker = broker.to_owned();
    TestGateway::spawn_with(move |c| {
        c.broker = broker;
        c.limits.send_queue_events = HISTORY;
        c.namespaces.entry(NAMESPACE.into()).or_default().history_size = HISTORY;
    })
    .await
}

fn admin_token(sub: &str) -> String {
    token_with(SECRET, sub, json!({"role": "admin"}))
}

/// A client of the node at `addr` (`ip:port`), allowed every topic.
async fn connect(addr: &str) -> Client {
    Client::connect(&format!("ws://{addr}/ws?token={}", admin_token("rb-user"))).await
}

fn since(offset: u64, epoch: &Value) -> Value {
    json!({"offset": offset, "epoch": epoch})
}

fn offset_of(frame: &Value) -> u64 {
    frame["offset"].as_u64().unwrap_or_else(|| panic!("no offset in {frame}"))
}

/// What a client read: a JSON frame, or the end of its connection (with the close code
/// when the server sent a close frame).
enum Read {
    Frame(Value),
    Closed(Option<u16>),
}

async fn read_any(c: &mut Client) -> Read {
    loop {
        match c.ws.next().await {
            Some(Ok(Message::Text(t))) => return Read::Frame(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return Read::Closed(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Read::Closed(None),
        }
    }
}

/// The next event frame, skipping replies; fails on an error frame or the end.
async fn next_event(c: &mut Client) -> Value {
    loop {
        let read = tokio::time::timeout(WAIT, read_any(c)).await.expect("an event within 10 s");
        match read {
            Read::Frame(frame) if frame["type"] == EVENT => return frame,
            Read::Frame(frame) if frame["type"] == "error" => panic!("error frame while waiting for an event: {frame}"),
            Read::Frame(_) => continue,
            Read::Closed(code) => panic!("connection ended (close code {code:?}) while waiting for an event"),
        }
    }
}

/// Sends `subscribe` (with `since` when given) and returns the reply to it (frames before
/// it, none expected, are skipped).
async fn subscribe(c: &mut Client, topic: &str, since: Option<Value>) -> Value {
    let mut request = json!({"action": "subscribe", "topic": topic, "requestId": format!("sub-{topic}")});
    if let Some(since) = since {
        request["since"] = since;
    }
    c.send(request).await;
    loop {
        let reply = c.recv().await;
        if reply["requestId"] == format!("sub-{topic}") {
            return reply;
        }
    }
}

/// Asserts `events` are exactly the offsets `after+1 ..= last`, each once, in order.
fn assert_consecutive(events: &[Value], after: u64, last: u64, who: &str) {
    let offsets: Vec<u64> = events.iter().map(offset_of).collect();
    let expected: Vec<u64> = (after + 1..=last).collect();
    if offsets != expected {
        let first_bad =
            offsets.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(offsets.len().min(expected.len()));
        let from = first_bad.saturating_sub(3);
        panic!(
            "{who}: expected offsets {}..={last} ({} events), got {} events; first difference at index {first_bad}: got {:?}, expected {:?}",
            after + 1,
            expected.len(),
            offsets.len(),
            &offsets[from..(first_bad + 4).min(offsets.len())],
            &expected[from..(first_bad + 4).min(expected.len())],
        );
    }
}

/// (offset, publisher, k) of each event: what "the same order everywhere" compares.
fn identities(events: &[Value]) -> Vec<(u64, u64, u64)> {
    events.iter().map(|e| (offset_of(e), e["p"].as_u64().unwrap(), e["k"].as_u64().unwrap())).collect()
}

/// Every acknowledged publish is in `events` at its acknowledged offset.
fn assert_has_every_acked(events: &[Value], acked: &BTreeMap<u64, (u64, u64)>, who: &str) {
    let got: BTreeMap<u64, (u64, u64)> = identities(events).into_iter().map(|(o, p, k)| (o, (p, k))).collect();
    for (offset, publish) in acked {
        assert_eq!(got.get(offset), Some(publish), "{who}: acknowledged event at offset {offset} missing or different");
    }
}

/// A client reading its events in a task, until its connection ends.
struct Reader {
    events: Arc<Mutex<Vec<Value>>>,
    closed: Arc<Mutex<Option<Option<u16>>>>,
    errors: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl Reader {
    fn start(mut client: Client) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(None));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (events, closed, errors) = (events.clone(), closed.clone(), errors.clone());
            tokio::spawn(async move {
                loop {
                    match read_any(&mut client).await {
                        Read::Frame(frame) if frame["type"] == EVENT => events.lock().push(frame),
                        Read::Frame(frame) if frame["type"] == "error" => errors.lock().push(frame),
                        Read::Frame(_) => {}
                        Read::Closed(code) => {
                            *closed.lock() = Some(code);
                            return;
                        }
                    }
                }
            })
        };
        Self { events, closed, errors, task }
    }

    fn count(&self) -> usize {
        self.events.lock().len()
    }

    fn last_offset(&self) -> u64 {
        self.events.lock().last().map_or(0, offset_of)
    }

    async fn wait_for_count(&self, n: usize, who: &str) {
        wait_until(&format!("{who} has {n} events"), Duration::from_secs(15), || self.count() >= n).await;
    }

    async fn wait_for_offset(&self, offset: u64, who: &str) {
        let what = format!("{who} reaches offset {offset}");
        let reached = poll(Duration::from_secs(15), || self.last_offset() >= offset).await;
        assert!(
            reached,
            "{what}: not within 15 s; it has {} events, last offset {}, closed {:?}, errors {:?}",
            self.count(),
            self.last_offset(),
            self.closed.lock(),
            self.errors.lock()
        );
    }

    async fn wait_for_end(&self, who: &str) -> Option<u16> {
        wait_until(&format!("{who}'s connection ends"), Duration::from_secs(10), || self.closed.lock().is_some()).await;
        self.closed.lock().unwrap()
    }

    /// Stops reading (after a short settle, so a late duplicate would be seen) and returns
    /// the events, the close (if any) and the error frames.
    async fn finish(self) -> (Vec<Value>, Option<Option<u16>>, Vec<Value>) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.task.abort();
        let _ = self.task.await;
        let events = std::mem::take(&mut *self.events.lock());
        let closed = *self.closed.lock();
        let errors = std::mem::take(&mut *self.errors.lock());
        (events, closed, errors)
    }
}

async fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn wait_until(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    assert!(poll(limit, done).await, "{what}: not within {limit:?}");
}

/// Polls an async check every 50 ms until it answers `Some`, for at most `limit`.
async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a publisher got: acknowledged (offset, k), and how many publishes were refused
/// with 503 `BROKER_UNAVAILABLE`.
#[derive(Default)]
struct Published {
    acked: Vec<(u64, u64)>,
    refused: usize,
}

/// A backend publishing `{"type": EVENT, "p": p, "k": k}` to one topic through the HTTP
/// API of one node, one call after the other, until stopped.
struct Publisher {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: JoinHandle<Published>,
}

impl Publisher {
    fn start(api: Api, topic: &str, p: u64, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let topic = topic.to_owned();
        let task = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut out = Published::default();
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"topic": topic, "event": {"type": EVENT, "p": p, "k": k}});
                    let (status, reply) = api.post("/api/publish", body).await;
                    match status {
                        200 => {
                            out.acked.push((offset_of(&reply), k));
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            assert_eq!(reply["error"]["code"], "BROKER_UNAVAILABLE", "{reply}");
                            out.refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => panic!("publish answered {status}: {reply}"),
                    }
                    k += 1;
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
                out
            })
        };
        Self { stop, acked, task }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    async fn wait_for_acked(&self, n: u64, who: &str) {
        wait_until(&format!("{who} has {n} acknowledged publishes"), Duration::from_secs(15), || self.acked() >= n)
            .await;
    }

    async fn finish(self) -> Published {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// offset → (publisher, k) of every acknowledged publish; fails on an offset given twice.
fn acked_by_offset(published: &[(u64, &Published)]) -> BTreeMap<u64, (u64, u64)> {
    let mut all = BTreeMap::new();
    for (p, out) in published {
        let mut previous = 0;
        for &(offset, k) in &out.acked {
            assert!(offset > previous, "publisher {p}: offsets not increasing ({previous} then {offset})");
            previous = offset;
            assert!(all.insert(offset, (*p, k)).is_none(), "offset {offset} acknowledged twice");
        }
    }
    all
}

async fn redis_conn(url: &str) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

fn channel_of(topic: &str) -> String {
    format!("sb:{{{topic}}}")
}

// ---------------------------------------------------------------------------------------
// 1. Cross-node delivery under concurrent publishers on every node.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_delivers_every_event_once_in_the_same_order() {
    const PER_NODE: u64 = 200;
    let redis = Redis::start();
    let nodes = [node(&redis.url()).await, node(&redis.url()).await, node(&redis.url()).await];
    let topic = "rb:fanout";

    let mut readers = Vec::new();
    for (n, gw) in nodes.iter().enumerate() {
        for i in 0..2 {
            let mut c = connect(&gw.addr.to_string()).await;
            let reply = subscribe(&mut c, topic, None).await;
            assert_eq!(reply["type"], "subscribed", "{reply}");
            readers.push((format!("client {i} on node {n}"), offset_of(&reply), Reader::start(c)));
        }
    }
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, gw)| {
            let api = gw.http();
            tokio::spawn(async move {
                let mut out = Published::default();
                for k in 0..PER_NODE {
                    out.acked.push((api.publish(topic, json!({"type": EVENT, "p": n, "k": k})).await, k));
                }
                out
            })
        })
        .collect();
    let mut published = Vec::new();
    for (n, p) in publishers.into_iter().enumerate() {
        published.push((n as u64, p.await.unwrap()));
    }
    let acked = acked_by_offset(&published.iter().map(|(n, p)| (*n, p)).collect::<Vec<_>>());
    let total = 3 * PER_NODE;
    let start = readers[0].1;
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (start + 1..=start + total).collect::<Vec<_>>());

    let mut reference: Option<Vec<(u64, u64, u64)>> = None;
    for (who, subscribed_at, reader) in readers {
        reader.wait_for_offset(subscribed_at + total, &who).await;
        let (events, closed, errors) = reader.finish().await;
        assert!(closed.is_none() && errors.is_empty(), "{who}: closed {closed:?}, errors {errors:?}");
        assert_eq!(subscribed_at, start, "{who} subscribed at another offset");
        assert_consecutive(&events, start, start + total, &who);
        assert_has_every_acked(&events, &acked, &who);
        let ids = identities(&events);
        match &reference {
            None => reference = Some(ids),
            Some(reference) => assert!(*reference == ids, "{who} saw another order"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. Resume on another node.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let topic = "rb:roam";
    let publish = async |api: &Api, p: u64, k: u64| api.publish(topic, json!({"type": EVENT, "p": p, "k": k})).await;

    let mut on_a = connect(&a.addr.to_string()).await;
    let reply = subscribe(&mut on_a, topic, None).await;
    assert_eq!(reply["offset"], 0, "{reply}");
    let epoch = reply["epoch"].clone();
    for k in 0..10 {
        publish(&b.http(), 1, k).await;
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(next_event(&mut on_a).await);
    }
    assert_consecutive(&seen, 0, 10, "the client on A");
    drop(on_a);

    // Missed while away, published on both nodes.
    for k in 10..25 {
        let api = if k % 2 == 0 { a.http() } else { b.http() };
        publish(&api, 1, k).await;
    }
    let mut on_b = connect(&b.addr.to_string()).await;
    let reply = subscribe(&mut on_b, topic, Some(since(10, &epoch))).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["epoch"], epoch, "{reply}");
    assert_eq!(reply["offset"], 25, "{reply}");
    let mut resumed = Vec::new();
    for _ in 0..15 {
        resumed.push(next_event(&mut on_b).await);
    }
    assert_consecutive(&resumed, 10, 25, "the resumed client on B (replay)");
    assert!(resumed.iter().enumerate().all(|(i, e)| e["k"] == 10 + i as u64), "replayed events differ");

    // Then live, from either node.
    for k in 25..30 {
        let api = if k % 2 == 0 { a.http() } else { b.http() };
        publish(&api, 1, k).await;
    }
    for _ in 25..30 {
        resumed.push(next_event(&mut on_b).await);
    }
    assert_consecutive(&resumed, 10, 30, "the resumed client on B (live)");
    on_b.expect_silence(Duration::from_millis(300)).await;
}

// ---------------------------------------------------------------------------------------
// 3. A node killed with SIGKILL: its clients resume elsewhere and lose nothing.

fn signalbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalbox"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SIGNALBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The real binary serving on a free port (killed with SIGKILL on drop).
struct NodeProcess {
    child: Child,
    addr: String,
}

impl NodeProcess {
    fn spawn(broker: &str, dir: &std::path::Path) -> Self {
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!("[limits]\nsend_queue_events = {HISTORY}\n\n[namespaces.{NAMESPACE}]\nhistory_size = {HISTORY}\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let mut child = signalbox()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("SIGNALBOX_BROKER", broker)
            .env("SIGNALBOX_JWT_SECRET", SECRET)
            .env("SIGNALBOX_API_KEYS", API_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("the ready line within 10 s");
        let addr = line
            .trim()
            .strip_prefix("signalbox listening on ")
            .unwrap_or_else(|| panic!("ready line: {line:?}; log in {}", dir.display()))
            .to_owned();
        Self { child, addr }
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_node_killed_with_sigkill_resume_on_another_without_loss() {
    let redis = Redis::start();
    let survivor = node(&redis.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut doomed = NodeProcess::spawn(&redis.url(), dir.path());
    let topic = "rb:crash";

    let mut readers = Vec::new();
    let mut epoch = Value::Null;
    for i in 0..3 {
        let mut c = connect(&doomed.addr).await;
        let reply = subscribe(&mut c, topic, None).await;
        assert_eq!(reply["offset"], 0, "{reply}");
        epoch = reply["epoch"].clone();
        readers.push((format!("client {i}"), Reader::start(c)));
    }
    let publisher = Publisher::start(survivor.http(), topic, 0, Duration::from_millis(2));
    for (who, reader) in &readers {
        reader.wait_for_count(30, who).await;
    }
    doomed.sigkill();

    let mut resumes = Vec::new();
    for (who, reader) in readers {
        reader.wait_for_end(&who).await;
        let (events, _, errors) = reader.finish().await;
        assert!(errors.is_empty(), "{who}: {errors:?}");
        let last = events.last().map_or(0, offset_of);
        assert_consecutive(&events, 0, last, &format!("{who} before the kill"));
        resumes.push((who, events, last));
    }
    // Events go on meanwhile: the resumes below must replay some.
    let max_before = resumes.iter().map(|(_, _, last)| *last).max().unwrap();
    let at_kill = publisher.acked();
    publisher.wait_for_acked(max_before.max(at_kill) + 20, "the publisher").await;

    let mut resumed = Vec::new();
    for (who, before, last) in resumes {
        let mut c = connect(&survivor.addr.to_string()).await;
        let reply = subscribe(&mut c, topic, Some(since(last, &epoch))).await;
        assert_eq!(reply["type"], "subscribed", "{who}: {reply}");
        assert_eq!(reply["recovered"], true, "{who}: {reply}");
        assert!(offset_of(&reply) >= last + 20, "{who}: nothing to replay? {reply}");
        resumed.push((who, before, last, Reader::start(c)));
    }
    let acked_now = publisher.acked();
    publisher.wait_for_acked(acked_now + 50, "the publisher").await;
    let published = publisher.finish().await;
    let acked = acked_by_offset(&[(0, &published)]);
    let final_offset = *acked.keys().last().unwrap();
    assert_eq!(acked.len() as u64, final_offset, "every publish was acknowledged");
    for (who, before, last, reader) in resumed {
        reader.wait_for_offset(final_offset, &who).await;
        let (after, closed, errors) = reader.finish().await;
        assert!(closed.is_none() && errors.is_empty(), "{who}: closed {closed:?}, errors {errors:?}");
        assert_consecutive(&after, last, final_offset, &format!("{who} after resuming"));
        let all: Vec<Value> = before.into_iter().chain(after).collect();
        assert_has_every_acked(&all, &acked, &who);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Redis killed and restarted with its data.

async fn ready(gw: &TestGateway) -> (u16, Value) {
    gw.http().get("/ready").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_refuses_new_work_keeps_connections_and_recovers_with_its_data() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let persistent = ["--appendonly", "yes", "--dir", data.path().to_str().unwrap()];
    let mut redis = Redis::start_with(port, &persistent);
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let topic = "rb:outage";

    let mut readers = Vec::new();
    for (n, gw) in [&a, &b].into_iter().enumerate() {
        let mut c = connect(&gw.addr.to_string()).await;
        let reply = subscribe(&mut c, topic, None).await;
        assert_eq!(reply["offset"], 0, "{reply}");
        readers.push((format!("the client on node {n}"), Reader::start(c)));
    }
    let mut idle = connect(&a.addr.to_string()).await;
    let publishers = [
        Publisher::start(a.http(), topic, 0, Duration::from_millis(2)),
        Publisher::start(b.http(), topic, 1, Duration::from_millis(2)),
    ];
    for (who, reader) in &readers {
        reader.wait_for_count(40, who).await;
    }

    redis.process.kill();
    for gw in [&a, &b] {
        let body = eventually("/ready answers 503", Duration::from_secs(10), async || {
            let (status, body) = ready(gw).await;
            (status == 503).then_some(body)
        })
        .await;
        assert_eq!(body["broker"]["reachable"], false, "{body}");
    }
    let (status, body) = a.http().post("/api/publish", json!({"topic": topic, "event": {"type": EVENT}})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "BROKER_UNAVAILABLE", "{body}");
    let reply = subscribe(&mut idle, "rb:outage-new", None).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "BROKER_UNAVAILABLE", "{reply}");
    let reply = subscribe(&mut idle, topic, None).await;
    assert_eq!(reply["code"], "BROKER_UNAVAILABLE", "a topic this node already receives: {reply}");
    assert_eq!(idle.request(json!({"action": "ping"})).await["type"], "pong", "the connection stays open");
    let acked_at_outage: Vec<u64> = publishers.iter().map(Publisher::acked).collect();

    let _restarted = Redis::start_with(port, &persistent);
    for gw in [&a, &b] {
        eventually("/ready answers 200 again", Duration::from_secs(20), async || {
            let (status, body) = ready(gw).await;
            (status == 200 && body["broker"]["reachable"] == true).then_some(())
        })
        .await;
    }
    for (p, publisher) in publishers.iter().enumerate() {
        publisher.wait_for_acked(acked_at_outage[p] + 30, &format!("publisher {p} after the restart")).await;
    }
    let reply = subscribe(&mut idle, "rb:outage-new", None).await;
    assert_eq!(reply["type"], "subscribed", "subscribing works again: {reply}");
    let [pa, pb] = publishers;
    let (pa, pb) = (pa.finish().await, pb.finish().await);
    assert!(pa.refused + pb.refused > 0, "no publish was refused during the outage");
    let acked = acked_by_offset(&[(0, &pa), (1, &pb)]);
    let last = *acked.keys().last().unwrap();
    let mut reference = None;
    for (who, reader) in readers {
        reader.wait_for_offset(last, &who).await;
        let (events, closed, errors) = reader.finish().await;
        assert!(closed.is_none(), "{who}: its connection ended ({closed:?})");
        assert!(errors.is_empty(), "{who}: {errors:?}");
        // Acknowledged ones all arrive; an unacknowledged publish that Redis ran just
        // before it died may arrive too, at its own offset, but nothing twice or out of order.
        assert_consecutive(&events, 0, last, &who);
        assert_has_every_acked(&events, &acked, &who);
        let ids = identities(&events);
        match &reference {
            None => reference = Some(ids),
            Some(reference) => assert!(*reference == ids, "{who} saw another order"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Redis restarted without its data.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_data_closes_subscribers_with_1012_and_resumes_unrecovered() {
    let mut redis = Redis::start();
    let port = redis.process.port;
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let topic = "rb:wiped";
    let mut clients = Vec::new();
    let mut epoch = Value::Null;
    for gw in [&a, &b] {
        let mut c = connect(&gw.addr.to_string()).await;
        epoch = subscribe(&mut c, topic, None).await["epoch"].clone();
        clients.push(c);
    }
    for k in 0..5 {
        a.http().publish(topic, json!({"type": EVENT, "p": 0, "k": k})).await;
    }
    for c in &mut clients {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(next_event(c).await);
        }
        assert_consecutive(&got, 0, 5, "a subscriber before the restart");
    }

    redis.process.kill();
    let _wiped = Redis::start_on(port);
    for (n, c) in clients.iter_mut().enumerate() {
        let mut before = Vec::new();
        let code = c.expect_close(&mut before).await;
        assert_eq!(code, 1012, "the subscriber on node {n}: {before:?}");
        assert!(before.iter().all(|f| f["type"] != EVENT), "no event after the loss: {before:?}");
    }

    let mut again = connect(&a.addr.to_string()).await;
    let reply = subscribe(&mut again, topic, Some(since(5, &epoch))).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["epoch"], epoch, "a new epoch: {reply}");
    assert_eq!(reply["offset"], 0, "{reply}");
    let (_, info) = b.http().get(&format!("/api/topics/{topic}")).await;
    assert_eq!(info["epoch"], reply["epoch"], "every node sees the new epoch: {info}");
    b.http().publish(topic, json!({"type": EVENT, "p": 1, "k": 0})).await;
    let event = next_event(&mut again).await;
    assert_eq!(event["offset"], 1, "{event}");
}

// ---------------------------------------------------------------------------------------
// 6. The pub/sub connections killed by Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_noticed_and_caught_up() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let topic = "rb:pubsub-killed";
    let mut readers = Vec::new();
    for i in 0..2 {
        let mut c = connect(&b.addr.to_string()).await;
        assert_eq!(subscribe(&mut c, topic, None).await["offset"], 0);
        readers.push((format!("client {i} on B"), Reader::start(c)));
    }
    let publisher = Publisher::start(a.http(), topic, 0, Duration::from_millis(1));
    for (who, reader) in &readers {
        reader.wait_for_count(30, who).await;
    }
    let mut conn = redis_conn(&redis.url()).await;
    let killed: u64 =
        ::redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
    assert!(killed >= 2, "CLIENT KILL TYPE pubsub killed {killed} connections (one per node expected)");
    let at_kill = publisher.acked();
    eventually("node B counts a reconnect", Duration::from_secs(10), async || {
        let (_, body) = ready(&b).await;
        (body["broker"]["reconnects"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    publisher.wait_for_acked(at_kill + 100, "the publisher").await;
    let published = publisher.finish().await;
    let acked = acked_by_offset(&[(0, &published)]);
    let last = *acked.keys().last().unwrap();
    assert_eq!(acked.len() as u64, last);
    // Subscribed again (while its clients hold the topic): the channel is held.
    assert_eq!(numsub(&mut conn, &channel_of(topic)).await, 1, "node B holds the topic's channel again");
    for (who, reader) in readers {
        reader.wait_for_offset(last, &who).await;
        let (events, closed, errors) = reader.finish().await;
        assert!(closed.is_none() && errors.is_empty(), "{who}: closed {closed:?}, errors {errors:?}");
        assert_consecutive(&events, 0, last, &who);
        assert_has_every_acked(&events, &acked, &who);
    }
    let (_, metrics) = b.http().get("/metrics").await;
    let reconnects = metric(metrics.as_str().unwrap(), "signalbox_broker_reconnects_total");
    assert!(reconnects > 0.0, "signalbox_broker_reconnects_total = {reconnects}");
    let (status, body) = ready(&b).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["broker"]["reconnects"].as_u64().unwrap() > 0, "{body}");
}

// ---------------------------------------------------------------------------------------
// 7. Only the topics a node's clients hold are subscribed in Redis.

async fn numsub(conn: &mut ::redis::aio::MultiplexedConnection, channel: &str) -> u64 {
    let (_, count): (String, u64) = ::redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(conn).await.unwrap();
    count
}

async fn channels(conn: &mut ::redis::aio::MultiplexedConnection, command: &str) -> BTreeSet<String> {
    ::redis::cmd("PUBSUB").arg(command).arg("sb:*").query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_node_subscribes_in_redis_only_to_topics_its_clients_hold() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let topic = "rb:interest";
    let channel = channel_of(topic);
    let mut conn = redis_conn(&redis.url()).await;
    assert!(!channels(&mut conn, "CHANNELS").await.contains(&channel));

    let mut a1 = connect(&a.addr.to_string()).await;
    let mut a2 = connect(&a.addr.to_string()).await;
    let mut b1 = connect(&b.addr.to_string()).await;
    assert_eq!(subscribe(&mut a1, topic, None).await["type"], "subscribed");
    // Confirmed by Redis before the reply.
    assert!(channels(&mut conn, "CHANNELS").await.contains(&channel));
    assert_eq!(numsub(&mut conn, &channel).await, 1);
    subscribe(&mut a2, topic, None).await;
    assert_eq!(numsub(&mut conn, &channel).await, 1, "one SUBSCRIBE per node, not per client");
    subscribe(&mut b1, topic, None).await;
    assert_eq!(numsub(&mut conn, &channel).await, 2);

    let unsubscribed = a1.request(json!({"action": "unsubscribe", "topic": topic})).await;
    assert_eq!(unsubscribed["type"], "unsubscribed", "{unsubscribed}");
    a.http().publish(topic, json!({"type": EVENT, "p": 0, "k": 0})).await;
    assert_eq!(next_event(&mut a2).await["offset"], 1, "A still holds it for its other client");
    assert_eq!(numsub(&mut conn, &channel).await, 2);

    drop(a2); // A's last subscriber leaves by disconnecting
    eventually("node A unsubscribes", Duration::from_secs(5), async || {
        (numsub(&mut conn, &channel).await == 1).then_some(())
    })
    .await;
    assert_eq!(next_event(&mut b1).await["offset"], 1, "B holds it too");
    let left = b1.request(json!({"action": "unsubscribe", "topic": topic})).await;
    assert_eq!(left["type"], "unsubscribed", "{left}");
    eventually("no node holds the channel", Duration::from_secs(5), async || {
        (!channels(&mut conn, "CHANNELS").await.contains(&channel)).then_some(())
    })
    .await;
    // Interest comes back with the next subscriber.
    subscribe(&mut a1, topic, None).await;
    assert_eq!(numsub(&mut conn, &channel).await, 1);
}

// ---------------------------------------------------------------------------------------
// 8. One round trip per publish.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_is_one_script_call_and_fans_out_only_from_the_script() {
    const N: u64 = 50;
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()).await, node(&redis.url()).await);
    let topic = "rb:roundtrip";
    let mut subscriber = connect(&b.addr.to_string()).await;
    subscribe(&mut subscriber, topic, None).await;
    // Warm-up: loads the script.
    a.http().publish(topic, json!({"type": EVENT, "p": 0, "k": 0})).await;
    assert_eq!(next_event(&mut subscriber).await["offset"], 1);

    let mut conn = redis_conn(&redis.url()).await;
    let info: String = ::redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    let evalsha_before = command_calls(&info, "evalsha");
    let monitor = Monitor::start(redis.process.port);
    let api = a.http();
    for k in 1..=N {
        api.publish(topic, json!({"type": EVENT, "p": 0, "k": k})).await;
    }
    for k in 1..=N {
        assert_eq!(next_event(&mut subscriber).await["offset"], k + 1);
    }
    let info: String = ::redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    let evalsha_after = command_calls(&info, "evalsha");
    let marker = "rb-monitor-end";
    let _: String = ::redis::cmd("ECHO").arg(marker).query_async(&mut conn).await.unwrap();
    let lines = monitor.until(marker);

    assert_eq!(evalsha_after - evalsha_before, N, "EVALSHA calls for {N} publishes");
    let commands: Vec<_> = lines.iter().map(|l| monitored(l)).collect();
    let from_clients = |name: &str| commands.iter().filter(|(s, c, _)| s != "lua" && c == name).count() as u64;
    assert_eq!(from_clients("EVALSHA"), N, "one EVALSHA per publish");
    for other in ["EVAL", "SCRIPT", "XADD", "HINCRBY", "SET", "MULTI"] {
        assert_eq!(from_clients(other), 0, "{other} outside the script");
    }
    let channel = channel_of(topic);
    let outside: Vec<_> = commands
        .iter()
        .filter(|(s, c, first)| s != "lua" && (c == "PUBLISH" || c == "SPUBLISH") && !first.starts_with("sbn:"))
        .collect();
    assert!(outside.is_empty(), "PUBLISH outside the script (only node probes may): {outside:?}");
    let fanned_out = commands.iter().filter(|(s, c, first)| s == "lua" && c == "PUBLISH" && *first == channel).count();
    assert_eq!(fanned_out as u64, N, "one PUBLISH per publish, from the script");
}

// ---------------------------------------------------------------------------------------
// 9. Bad broker URLs.

#[test]
fn bad_broker_urls_exit_2_naming_the_broker_setting() {
    for url in
        ["redis+cluster://", "kafka://x", "redis://host:notaport", "redis+cluster://127.0.0.1:7000/3", "redis//x"]
    {
        let mut child = signalbox()
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .env("SIGNALBOX_BROKER", url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "SIGNALBOX_BROKER={url}: still running after 10 s; stdout {:?}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "SIGNALBOX_BROKER={url}: {stderr}");
        assert!(stderr.contains("broker"), "SIGNALBOX_BROKER={url}: the message names the setting: {stderr}");
        assert!(out.stdout.is_empty(), "SIGNALBOX_BROKER={url}: {:?}", String::from_utf8_lossy(&out.stdout));
    }
}

// ---------------------------------------------------------------------------------------
// 10. Redis Cluster: sharded pub/sub, offsets per topic across nodes, resume.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_serves_topics_over_every_shard_with_resume_across_nodes() {
    const TOPICS: usize = 20;
    const ROUNDS: u64 = 10;
    let cluster = RedisCluster::start(3);
    let (a, b) = (node(&cluster.url()).await, node(&cluster.url()).await);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("rb:shard-{i}")).collect();

    let mut epochs = BTreeMap::new();
    let mut clients = Vec::new();
    for gw in [&a, &b] {
        let mut c = connect(&gw.addr.to_string()).await;
        for topic in &topics {
            let reply = subscribe(&mut c, topic, None).await;
            assert_eq!(reply["type"], "subscribed", "{reply}");
            assert_eq!(reply["offset"], 0, "{reply}");
            let epoch = epochs.entry(topic.clone()).or_insert_with(|| reply["epoch"].clone());
            assert_eq!(*epoch, reply["epoch"], "one epoch per topic on every node");
        }
        clients.push(c);
    }

    // Sharded channels, held on the shard of each topic's slot.
    let mut shard_of = BTreeMap::new();
    for url in cluster.node_urls() {
        let mut conn = redis_conn(&url).await;
        for channel in channels(&mut conn, "SHARDCHANNELS").await {
            assert!(shard_of.insert(channel.clone(), url.clone()).is_none(), "{channel} on two shards");
        }
    }
    for topic in &topics {
        assert!(shard_of.contains_key(&channel_of(topic)), "{topic}'s channel is on no shard: {shard_of:?}");
    }
    let shards: BTreeSet<_> = topics.iter().map(|t| &shard_of[&channel_of(t)]).collect();
    assert!(shards.len() >= 2, "20 topics all on one shard: {shard_of:?}");

    // Both nodes publish to every topic at once.
    let publish_rounds = |gw: &TestGateway, p: u64, rounds: std::ops::Range<u64>| {
        let (api, topics) = (gw.http(), topics.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in rounds {
                for topic in &topics {
                    let offset = api.publish(topic, json!({"type": EVENT, "p": p, "k": k})).await;
                    acked.push((topic.clone(), offset, p, k));
                }
            }
            acked
        })
    };
    let tasks = [publish_rounds(&a, 0, 0..ROUNDS), publish_rounds(&b, 1, 0..ROUNDS)];
    let mut acked: BTreeMap<String, BTreeMap<u64, (u64, u64)>> = BTreeMap::new();
    for task in tasks {
        for (topic, offset, p, k) in task.await.unwrap() {
            assert!(acked.entry(topic).or_default().insert(offset, (p, k)).is_none(), "offset {offset} given twice");
        }
    }
    let per_topic = 2 * ROUNDS;
    let mut received: Vec<BTreeMap<String, Vec<Value>>> = Vec::new();
    for (n, c) in clients.iter_mut().enumerate() {
        let mut by_topic: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for _ in 0..TOPICS as u64 * per_topic {
            let event = next_event(c).await;
            by_topic.entry(event["topic"].as_str().unwrap().to_owned()).or_default().push(event);
        }
        for topic in &topics {
            let events = by_topic.get(topic).map_or(&[][..], Vec::as_slice);
            let who = format!("node {n}'s client on {topic}");
            assert_consecutive(events, 0, per_topic, &who);
            assert_has_every_acked(events, &acked[topic], &who);
        }
        received.push(by_topic);
    }
    assert!(received[0] == received[1], "the two nodes delivered different events");

    // The client on A leaves; more is published on A; it resumes every topic on B.
    let mut stays = clients.pop().unwrap();
    drop(clients.pop());
    for k in ROUNDS..ROUNDS + 3 {
        for topic in &topics {
            a.http().publish(topic, json!({"type": EVENT, "p": 0, "k": k})).await;
        }
    }
    let mut back = connect(&b.addr.to_string()).await;
    for topic in &topics {
        let mut request = json!({"action": "subscribe", "topic": topic, "since": since(per_topic, &epochs[topic])});
        request["requestId"] = json!(format!("resume-{topic}"));
        back.send(request).await;
    }
    let mut replies = BTreeMap::new();
    let mut replayed: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    while replies.len() < TOPICS || replayed.values().map(Vec::len).sum::<usize>() < TOPICS * 3 {
        let frame = back.recv().await;
        if frame["type"] == EVENT {
            replayed.entry(frame["topic"].as_str().unwrap().to_owned()).or_default().push(frame);
        } else {
            assert_eq!(frame["type"], "subscribed", "{frame}");
            replies.insert(frame["topic"].as_str().unwrap().to_owned(), frame);
        }
    }
    for topic in &topics {
        let reply = &replies[topic];
        assert_eq!(reply["recovered"], true, "{reply}");
        assert_eq!(reply["offset"], per_topic + 3, "{reply}");
        assert_consecutive(&replayed[topic], per_topic, per_topic + 3, &format!("the resumed client on {topic}"));
    }
    // Live again, published on the other node.
    for topic in &topics {
        a.http().publish(topic, json!({"type": EVENT, "p": 0, "k": 99})).await;
    }
    let mut live = BTreeSet::new();
    for _ in 0..TOPICS {
        let event = next_event(&mut back).await;
        assert_eq!(event["offset"], per_topic + 4, "{event}");
        assert!(live.insert(event["topic"].as_str().unwrap().to_owned()), "{event} twice");
    }
    for _ in 0..TOPICS * 4 {
        next_event(&mut stays).await;
    }
    back.expect_silence(Duration::from_millis(200)).await;
}

//! Subscriber connections of the load generator.
//!
//! Each client connects (from a spread of 127.0.0.x source addresses when there are more
//! connections than one source address has ports), subscribes to its topic with the
//! native protocol or Socket.IO (`--protocol`), then counts what it receives: per-topic
//! offsets give loss and duplicates; the publisher's `sent` stamp gives latency. Frames
//! are scanned in place. Socket.IO clients also answer the server's Engine.IO pings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;

use super::Protocol;

use super::scan::FrameScanner;
use super::socketio::{self, Packet};

/// Clients per source address. One address has ~28k ephemeral ports towards one server
/// port; blocks of 5k also stay under the per-IP admission limits servers commonly have
/// (Signalbox's default is 10k), so `scale` measures capacity, not a per-IP refusal.
const CLIENTS_PER_SOURCE: usize = 5_000;
const LATENCY_SHARDS: usize = 32;
/// Attempts to reconnect after a storm drop before the client gives up.
const RECONNECT_ATTEMPTS: u32 = 8;

/// Counters and histograms shared by every client.
pub struct Shared {
    /// When the run started; `sent` stamps are ns since this instant.
    pub epoch: Instant,
    /// Event frames received (all clients).
    pub received: AtomicU64,
    /// Latency is recorded only for events sent inside [start, end) ns.
    pub window: (AtomicU64, AtomicU64),
    /// `LATENCY_SHARDS` histograms per node the clients connect to, node by node.
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Storm: time from the drop to the new `subscribed` reply, ns.
    pub reconnect: Mutex<Histogram<u64>>,
    /// Storm: clients resubscribed.
    pub resubscribed: AtomicU64,
    /// Storm: time from the drop until the client has every event up to the offset of its
    /// new `subscribed` reply (the replay is over), ns.
    pub caught_up: Mutex<Histogram<u64>>,
    /// Storm: events the resuming clients had missed (sum of subscribed offset − since).
    pub missed: AtomicU64,
    /// Storm: dropping clients not yet caught up; the last one to catch up ends the storm.
    pub catching_up: AtomicU64,
    /// Storm: [start, end) in ns since the run started; `u64::MAX` until known.
    pub storm_span: (AtomicU64, AtomicU64),
    /// Storm: latency of the clients that did not drop, for events sent during the storm.
    pub steady_latency: Mutex<Histogram<u64>>,
    /// Storm: fires when every dropping client has caught up.
    pub all_caught_up: tokio::sync::Notify,
}

impl Shared {
    /// Fresh counters, clients on one server.
    pub fn new() -> Self {
        Self::with_nodes(1)
    }

    /// Fresh counters, clients spread over `nodes` servers.
    pub fn with_nodes(nodes: usize) -> Self {
        Self {
            epoch: Instant::now(),
            received: AtomicU64::new(0),
            window: (AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)),
            latency: (0..LATENCY_SHARDS * nodes.max(1)).map(|_| Mutex::new(latency_histogram())).collect(),
            reconnect: Mutex::new(latency_histogram()),
            resubscribed: AtomicU64::new(0),
            caught_up: Mutex::new(latency_histogram()),
            missed: AtomicU64::new(0),
            catching_up: AtomicU64::new(0),
            storm_span: (AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)),
            steady_latency: Mutex::new(latency_histogram()),
            all_caught_up: tokio::sync::Notify::new(),
        }
    }

    /// ns since the run started.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The merged latency histogram (ns).
    pub fn latency(&self) -> Histogram<u64> {
        merge(&self.latency)
    }

    /// The latency histogram (ns) of the clients on node `node`.
    pub fn node_latency(&self, node: usize) -> Histogram<u64> {
        merge(self.latency.chunks(LATENCY_SHARDS).nth(node).unwrap_or_default())
    }

    /// The shard client `index` on node `node` records into.
    fn latency_shard(&self, node: usize, index: usize) -> &Mutex<Histogram<u64>> {
        let shard = node * LATENCY_SHARDS + index % LATENCY_SHARDS;
        &self.latency[shard % self.latency.len()]
    }
}

fn merge(shards: &[Mutex<Histogram<u64>>]) -> Histogram<u64> {
    let mut all = latency_histogram();
    for shard in shards {
        let _ = all.add(&*shard.lock());
    }
    all
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram of 1 ns .. 60 s with 3 significant digits.
#[allow(clippy::expect_used)]
pub fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct ClientTally {
    /// Topic index.
    pub topic: usize,
    /// Index of the server (`--server` list) the client is connected to.
    pub node: usize,
    /// Offset in the `subscribed` reply.
    pub start_offset: u64,
    /// Last offset received.
    pub last_offset: u64,
    /// Events received.
    pub received: u64,
    /// Offsets received twice or out of order.
    pub duplicates: u64,
    /// Time from TCP connect to the `subscribed` reply.
    pub connect_time: Duration,
    /// The topic's epoch from the last `subscribed` reply (for `since` on resubscribe).
    pub epoch: Option<String>,
    /// Times this client reconnected and resubscribed (storm).
    pub reconnects: u32,
    /// Resubscriptions the server answered `recovered: true`.
    pub recovered: u32,
    /// Reconnections that failed for good.
    pub reconnect_failures: u32,
    /// Times the connection ended (its node stopped, or closed it) and the client resumed
    /// on another node (`--failover`).
    pub failovers: u32,
    /// Offset in the `subscribed` reply of the last resubscription: the replay ends there.
    pub resumed_at: u64,
}

/// Where a client resumes after a reconnect: the last offset it saw and its epoch.
#[derive(Debug, Clone)]
pub struct Resume {
    /// Last offset received.
    pub offset: u64,
    /// The epoch of that offset.
    pub epoch: String,
}

/// What a `subscribed` reply said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Subscribed {
    offset: u64,
    epoch: Option<String>,
    recovered: bool,
}

impl Subscribed {
    fn from_reply(reply: &str) -> Self {
        Self {
            offset: FrameScanner::default().scan(reply.as_bytes()).map_or(0, |s| s.offset),
            epoch: string_field(reply, "epoch").map(str::to_owned),
            recovered: reply.contains("\"recovered\":true"),
        }
    }
}

/// A string field's value in a flat JSON reply (no escapes in the values the bench reads).
fn string_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Connection parameters shared by all clients.
#[derive(Clone)]
pub struct ClientConfig {
    /// Server address.
    pub server: SocketAddr,
    /// Its index in the `--server` list.
    pub node: usize,
    /// The subscribers' protocol.
    pub protocol: Protocol,
    /// Client token, sent as the `token` query parameter.
    pub token: Option<String>,
}

impl ClientConfig {
    /// The WebSocket URL for the protocol, with the token if any.
    fn url(&self) -> String {
        let (path, separator) = match self.protocol {
            Protocol::Native => ("/ws", '?'),
            Protocol::SocketIo => (socketio::HANDSHAKE_PATH, '&'),
        };
        match &self.token {
            Some(token) => format!("ws://{}{path}{separator}token={token}", self.server),
            None => format!("ws://{}{path}", self.server),
        }
    }
}

type Socket = WebSocketStream<TcpStream>;

/// Why a client failed to connect or subscribe.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP or WebSocket failure.
    #[error("{0}")]
    Io(String),
    /// The server answered something unexpected.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

fn source_address(index: usize) -> Option<IpAddr> {
    let block = index / CLIENTS_PER_SOURCE;
    // 127.0.0.2 … 127.0.0.255: far beyond what one process can hold open.
    let last_octet = u8::try_from(block + 1).unwrap_or(u8::MAX);
    (block > 0).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last_octet)))
}

fn io(e: &dyn std::fmt::Display) -> ClientError {
    ClientError::Io(e.to_string())
}

/// Connects client `index`, subscribes it to `bench:{topic}` (resuming from `resume` if
/// given, native protocol only).
pub async fn connect(
    config: &ClientConfig,
    index: usize,
    topic: usize,
    resume: Option<&Resume>,
) -> Result<(Socket, ClientTally), ClientError> {
    let started = Instant::now();
    let socket = TcpSocket::new_v4().map_err(|e| io(&e))?;
    if let Some(ip) = source_address(index) {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| io(&e))?;
    }
    let stream = socket.connect(config.server).await.map_err(|e| io(&e))?;
    let _ = stream.set_nodelay(true);
    // Small buffers: the load generator holds as many sockets as the server.
    let ws_config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(config.url(), stream, Some(ws_config)).await.map_err(|e| io(&e))?;
    let subscribed = match config.protocol {
        Protocol::Native => subscribe_native(&mut ws, topic, resume).await?,
        Protocol::SocketIo => subscribe_socketio(&mut ws, topic).await?,
    };
    let tally = ClientTally {
        topic,
        node: config.node,
        start_offset: subscribed.offset,
        last_offset: subscribed.offset,
        connect_time: started.elapsed(),
        epoch: subscribed.epoch,
        recovered: u32::from(subscribed.recovered),
        ..Default::default()
    };
    Ok((ws, tally))
}

/// Native protocol: `connected`, then `subscribe` → `subscribed`; returns its offset.
async fn subscribe_native(ws: &mut Socket, topic: usize, resume: Option<&Resume>) -> Result<Subscribed, ClientError> {
    let connected = next_text(ws).await?;
    if !connected.contains("\"connected\"") {
        return Err(ClientError::Protocol(connected));
    }
    let subscribe = match resume {
        Some(Resume { offset, epoch }) => format!(
            r#"{{"action":"subscribe","topic":"bench:{topic}","since":{{"offset":{offset},"epoch":"{epoch}"}},"requestId":"s"}}"#
        ),
        None => format!(r#"{{"action":"subscribe","topic":"bench:{topic}","requestId":"s"}}"#),
    };
    ws.send(Message::text(subscribe)).await.map_err(|e| io(&e))?;
    // Skip anything before our reply (e.g. frames of automatic subscriptions).
    let reply = loop {
        let text = next_text(ws).await?;
        if text.contains("\"subscribed\"") || text.contains("\"error\"") {
            break text;
        }
    };
    if !reply.contains("\"subscribed\"") {
        return Err(ClientError::Protocol(reply));
    }
    Ok(Subscribed::from_reply(&reply))
}

/// Socket.IO: Engine.IO OPEN, namespace CONNECT, then the `subscribe` emit answered by a
/// `subscribed` event or the ack; returns the reply's offset. Pings are answered throughout.
async fn subscribe_socketio(ws: &mut Socket, topic: usize) -> Result<Subscribed, ClientError> {
    let open = next_socketio(ws).await?;
    if socketio::classify(open.as_bytes()) != Packet::Open {
        return Err(ClientError::Protocol(open));
    }
    ws.send(Message::text(socketio::CONNECT)).await.map_err(|e| io(&e))?;
    loop {
        let text = next_socketio(ws).await?;
        match socketio::classify(text.as_bytes()) {
            Packet::Connected => break,
            Packet::ConnectError | Packet::Close => return Err(ClientError::Protocol(text)),
            _ => {}
        }
    }
    ws.send(Message::text(socketio::subscribe(topic))).await.map_err(|e| io(&e))?;
    // Skip anything before the reply (e.g. a welcome event).
    loop {
        let text = next_socketio(ws).await?;
        let packet = socketio::classify(text.as_bytes());
        if socketio::is_subscribe_reply(&packet) {
            return Ok(Subscribed::from_reply(&text));
        }
        match packet {
            Packet::Close => return Err(ClientError::Protocol(text)),
            Packet::Event { name, .. } if name == b"error" => return Err(ClientError::Protocol(text)),
            _ => {}
        }
    }
}

/// The next Socket.IO text frame that is not an Engine.IO PING (those are answered).
async fn next_socketio(ws: &mut Socket) -> Result<String, ClientError> {
    loop {
        let text = next_text(ws).await?;
        if socketio::classify(text.as_bytes()) != Packet::Ping {
            return Ok(text);
        }
        ws.send(Message::text(socketio::PONG)).await.map_err(|e| io(&e))?;
    }
}

async fn next_text(ws: &mut Socket) -> Result<String, ClientError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => return Err(ClientError::Io("no reply within 30 s".into())),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(ClientError::Io(e.to_string())),
            Ok(None) => return Err(ClientError::Io("connection closed".into())),
        }
    }
}

/// What a receiving client needs besides its socket.
pub struct Receiver {
    /// Client index.
    pub index: usize,
    /// Connection parameters (for reconnecting).
    pub config: ClientConfig,
    /// Shared counters.
    pub shared: Arc<Shared>,
    /// Fires at the end of the run.
    pub stop: CancellationToken,
    /// Fires when every client must drop its connection and resubscribe (storm).
    pub storm: CancellationToken,
    /// Whether this client drops in the storm (others keep receiving, to show whether
    /// resumes stall live delivery).
    pub drops: bool,
    /// How long a dropping client stays offline before it reconnects.
    pub offline: Duration,
    /// With `--failover`: every node of the cluster. When the connection ends before the
    /// run does, the client resumes with `since` on the next node of this list.
    pub failover: Vec<SocketAddr>,
}

/// Reads until `stop` fires or the socket ends, counting into `tally` and `shared`. When
/// `storm` fires, drops the connection at once, reconnects and resubscribes with `since`.
pub async fn receive(mut ws: Socket, mut tally: ClientTally, ctx: Receiver) -> ClientTally {
    let Receiver { index, mut config, shared, stop, storm, drops, offline, failover } = ctx;
    let protocol = config.protocol;
    let scanner = FrameScanner::default();
    let shard = shared.latency_shard(config.node, index);
    let mut storm_pending = drops;
    // (offset that ends the replay, when the client dropped)
    let mut catching_up: Option<(u64, Instant)> = None;
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            () = storm.cancelled(), if storm_pending => {
                storm_pending = false;
                let dropped = Instant::now();
                // An abrupt drop, as when a load balancer or a network path fails.
                drop(ws);
                tokio::time::sleep(offline).await;
                let since = tally.last_offset;
                match reconnect(&config, index, &mut tally, &shared, &stop, dropped).await {
                    Some(socket) => ws = socket,
                    None => {
                        caught_up(&shared, None);
                        return tally;
                    }
                }
                shared.missed.fetch_add(tally.resumed_at.saturating_sub(since), Ordering::Relaxed);
                if tally.last_offset >= tally.resumed_at {
                    caught_up(&shared, Some(dropped));
                } else {
                    catching_up = Some((tally.resumed_at, dropped));
                }
                continue;
            }
            frame = ws.next() => frame,
        };
        let Some(Ok(Message::Text(text))) = frame else {
            if matches!(frame, Some(Ok(_))) {
                continue;
            }
            if stop.is_cancelled() || failover.len() < 2 {
                break;
            }
            // The node went away (killed, drained with 1001, or resynchronising with
            // 1012): resume on the next nodes in turn, as a client behind a load balancer.
            match fail_over(&mut config, &failover, index, &mut tally, &shared, &stop).await {
                Some(socket) => {
                    ws = socket;
                    continue;
                }
                None => break,
            }
        };
        let body = match protocol {
            Protocol::Native => Some(text.as_bytes()),
            Protocol::SocketIo => {
                let packet = socketio::classify(text.as_bytes());
                if packet == Packet::Ping && ws.send(Message::text(socketio::PONG)).await.is_err() {
                    break;
                }
                socketio::delivery(&packet)
            }
        };
        let Some(event) = body.and_then(|b| scanner.scan(b)) else { continue };
        tally.received += 1;
        shared.received.fetch_add(1, Ordering::Relaxed);
        // Loss is derived at the end (expected offsets vs. unique ones received).
        if event.offset <= tally.last_offset {
            tally.duplicates += 1;
        } else {
            tally.last_offset = event.offset;
        }
        if let Some((target, dropped)) = catching_up
            && tally.last_offset >= target
        {
            catching_up = None;
            caught_up(&shared, Some(dropped));
        }
        if let Some(sent) = event.sent_ns {
            let latency = shared.now_ns().saturating_sub(sent).max(1);
            if within(&shared.window, sent) {
                let _ = shard.lock().record(latency);
            }
            if !drops && within(&shared.storm_span, sent) {
                let _ = shared.steady_latency.lock().record(latency);
            }
        }
    }
    let _ = ws.close(None).await;
    tally
}

/// Resumes on the other nodes of `nodes` in turn, starting after the current one; returns
/// the new socket, with `config` pointing at its node.
async fn fail_over(
    config: &mut ClientConfig,
    nodes: &[SocketAddr],
    index: usize,
    tally: &mut ClientTally,
    shared: &Shared,
    stop: &CancellationToken,
) -> Option<Socket> {
    let dropped = Instant::now();
    let current = nodes.iter().position(|n| *n == config.server).unwrap_or(0);
    for step in 1..=nodes.len() {
        let mut next = config.clone();
        next.server = nodes[(current + step) % nodes.len()];
        if let Some(socket) = reconnect(&next, index, tally, shared, stop, dropped).await {
            tally.failovers += 1;
            *config = next;
            return Some(socket);
        }
        if stop.is_cancelled() {
            break;
        }
    }
    None
}

/// Whether `sent` (ns since the run started) falls in the span [start, end).
fn within(span: &(AtomicU64, AtomicU64), sent: u64) -> bool {
    sent >= span.0.load(Ordering::Relaxed) && sent < span.1.load(Ordering::Relaxed)
}

/// One dropping client has every event it missed (or gave up: `None`); the last one ends
/// the storm's span.
fn caught_up(shared: &Shared, dropped: Option<Instant>) {
    if let Some(dropped) = dropped {
        let _ = shared.caught_up.lock().record((dropped.elapsed().as_nanos() as u64).max(1));
    }
    if shared.catching_up.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.storm_span.1.store(shared.now_ns(), Ordering::Relaxed);
        shared.all_caught_up.notify_one();
    }
}

/// Reconnects and resubscribes after a storm drop, retrying a few times; records the time
/// from the drop to the `subscribed` reply.
async fn reconnect(
    config: &ClientConfig,
    index: usize,
    tally: &mut ClientTally,
    shared: &Shared,
    stop: &CancellationToken,
    dropped: Instant,
) -> Option<Socket> {
    let resume = tally.epoch.clone().map(|epoch| Resume { offset: tally.last_offset, epoch });
    for attempt in 0..RECONNECT_ATTEMPTS {
        if stop.is_cancelled() {
            break;
        }
        match connect(config, index, tally.topic, resume.as_ref()).await {
            Ok((ws, fresh)) => {
                tally.reconnects += 1;
                tally.recovered += fresh.recovered;
                if fresh.recovered == 0 {
                    // Not resumed: the events up to the new subscription's offset are gone
                    // for this client; counting continues after it, and the gap shows as loss.
                    tally.last_offset = tally.last_offset.max(fresh.start_offset);
                }
                tally.epoch = fresh.epoch.or(tally.epoch.take());
                tally.resumed_at = fresh.start_offset;
                let took = dropped.elapsed().as_nanos() as u64;
                let _ = shared.reconnect.lock().record(took.max(1));
                shared.resubscribed.fetch_add(1, Ordering::Relaxed);
                return Some(ws);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await,
        }
    }
    tally.reconnect_failures += 1;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribed_replies_give_offset_epoch_and_recovery() {
        let reply = r#"{"epoch":"a46dd388","offset":7,"recovered":true,"topic":"bench:1","type":"subscribed"}"#;
        let expected = Subscribed { offset: 7, epoch: Some("a46dd388".into()), recovered: true };
        assert_eq!(Subscribed::from_reply(reply), expected);
        // Peers without epochs or recovery, and malformed replies, degrade to defaults.
        let peer = Subscribed::from_reply(r#"{"type":"subscribed","topic":"bench:1","offset":3}"#);
        assert_eq!(peer, Subscribed { offset: 3, epoch: None, recovered: false });
        assert_eq!(Subscribed::from_reply(r#"{"epoch":"unterminated"#), Subscribed::default());
        assert_eq!(Subscribed::from_reply(""), Subscribed::default());
    }

    #[test]
    fn urls_per_protocol_carry_the_token() {
        let server: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let mut config = ClientConfig { server, node: 0, protocol: Protocol::Native, token: None };
        assert_eq!(config.url(), "ws://127.0.0.1:9000/ws");
        config.token = Some("t.k.n".into());
        assert_eq!(config.url(), "ws://127.0.0.1:9000/ws?token=t.k.n");
        config.protocol = Protocol::SocketIo;
        assert_eq!(config.url(), "ws://127.0.0.1:9000/socket.io/?EIO=4&transport=websocket&token=t.k.n");
        config.token = None;
        assert_eq!(config.url(), "ws://127.0.0.1:9000/socket.io/?EIO=4&transport=websocket");
    }

    #[test]
    fn latency_is_kept_per_node_and_merged() {
        let shared = Shared::with_nodes(2);
        let _ = shared.latency_shard(0, 5).lock().record(1_000);
        let _ = shared.latency_shard(1, 5).lock().record(2_000);
        let _ = shared.latency_shard(1, 40).lock().record(3_000);
        assert_eq!((shared.node_latency(0).len(), shared.node_latency(1).len()), (1, 2));
        assert_eq!(shared.latency().len(), 3);
        assert_eq!(shared.node_latency(2).len(), 0);
        // One node: the shards of before.
        assert_eq!(Shared::new().latency.len(), LATENCY_SHARDS);
    }

    #[test]
    fn source_addresses_spread_past_one_address_and_never_overflow() {
        assert_eq!(source_address(0), None);
        assert_eq!(source_address(CLIENTS_PER_SOURCE), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(source_address(usize::MAX / 2), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 255))));
    }
}

//! [`RedisDirectory`]: the [`ConnectionDirectory`] of a cluster of gateways sharing one
//! Redis (or Redis Cluster), so `/api/connections…` answers for every node's connections.
//!
//! Layout in Redis (see `wire`): each node keeps a hash `sbd:{<node>}:conns` of its open
//! connections (id → JSON entry: node, user, topics, connected at, remote address) with a
//! TTL it renews, and its id in the sorted set `sbd:{nodes}` with its last heartbeat.
//! A node writes only its own hash, from a background task (`registration`), so a client's
//! connect never waits for Redis; a crashed node's hash expires after the TTL.
//!
//! - `list` reads every registered node's hash (one `HGETALL` each, concurrently: they
//!   live in different slots) and this node's connections from its own registry.
//! - `get`, `send`, `close` of a connection this node holds are answered at once, without
//!   Redis. For any other id the owning node is looked up (`HGET` on each node's hash)
//!   and sent a request with an id over its channel; its directory performs it with the
//!   [`LocalDirectory`] and answers on the requester's channel. An id not found but
//!   minted within the last two scans (its node may not have written it yet) is asked of
//!   every other node at once, so a connection is reachable from any node as soon as it
//!   opens. The requester waits at
//!   most [`DirectoryOptions::request_timeout`] (1 s) for the whole exchange. A node that
//!   no longer listens on its channel (crashed) means the connection is gone.
//! - `send_now` (which must not block) queues a frame for another node to a background
//!   task that forwards it in order, best effort, with no answer.
//!
//! Redis unreachable: every answer that needs it is [`DirectoryError::Unavailable`].
//! This module must never await a client, never block in `send_now`, and never hold a
//! lock across an await.

mod registration;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::wire::{Entry, Message, NODES_KEY, Op, Outcome, node_key, reason_from_name, reason_name};
use crate::broker::redis::RedisBroker;
use crate::codec::FrameText;
use crate::domain::ConnectionId;
use crate::hub::{
    CloseReason, ConnectionDirectory, ConnectionFilter, ConnectionInfo, ConnectionRegistry, DirectoryError,
    LocalDirectory, RawFrame,
};

/// Timings and bounds of the cluster directory. The defaults suit production; tests
/// shorten them.
#[derive(Debug, Clone)]
pub struct DirectoryOptions {
    /// How long a node's entries outlive its last refresh (a crashed node's connections
    /// disappear after this).
    pub ttl: Duration,
    /// How often a node renews its entries' TTL and its heartbeat (well under `ttl`).
    pub refresh: Duration,
    /// How often a node writes its connections' changes (opened, closed, topics) to
    /// Redis: another node sees a new connection at most this late.
    pub scan: Duration,
    /// The longest a `get`, `send` or `close` for another node's connection waits.
    pub request_timeout: Duration,
    /// Frames `send_now` may hold for other nodes before it refuses more.
    pub push_queue: usize,
}

impl Default for DirectoryOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            refresh: Duration::from_secs(10),
            scan: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
            push_queue: 10_000,
        }
    }
}

/// A frame `send_now` queued for a connection on another node.
type Push = (ConnectionId, FrameText);

/// How long the push forwarder trusts a connection's node without looking it up again.
const PUSH_ROUTE_TTL: Duration = Duration::from_secs(5);

/// The push forwarder remembers at most this many connections' nodes.
const PUSH_ROUTES: usize = 10_000;

/// What the directory and its tasks share.
struct Shared {
    broker: Arc<RedisBroker>,
    connections: Arc<ConnectionRegistry>,
    local: LocalDirectory,
    node: String,
    options: DirectoryOptions,
    /// Requests awaiting a reply, by request id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    next_request: AtomicU64,
    pushes: mpsc::Sender<Push>,
}

/// The receivers the background tasks consume (taken by the first [`RedisDirectory::run`]).
struct Receivers {
    inbox: mpsc::UnboundedReceiver<String>,
    pushes: mpsc::Receiver<Push>,
}

/// The cluster-wide [`ConnectionDirectory`] over the Redis broker. Start its background
/// tasks with [`RedisDirectory::run`].
pub struct RedisDirectory {
    shared: Arc<Shared>,
    receivers: Mutex<Option<Receivers>>,
}

impl RedisDirectory {
    /// The directory of this node's `connections` and every other node's, through
    /// `broker`. Takes the broker's node messages (see [`RedisBroker::node_messages`])
    /// from now on; they wait for [`RedisDirectory::run`].
    pub fn new(broker: Arc<RedisBroker>, connections: Arc<ConnectionRegistry>, options: DirectoryOptions) -> Self {
        let inbox = broker.node_messages();
        let (pushes, pushes_rx) = mpsc::channel(options.push_queue.max(1));
        let shared = Shared {
            node: broker.node_id().to_owned(),
            broker,
            local: LocalDirectory::new(connections.clone()),
            connections,
            options,
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            pushes,
        };
        Self { shared: Arc::new(shared), receivers: Mutex::new(Some(Receivers { inbox, pushes: pushes_rx })) }
    }

    /// This node's id (the broker's).
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// Runs the background tasks until `stop`: registering this node's connections,
    /// answering other nodes' requests, forwarding `send_now` frames. On `stop` the node's
    /// entries are removed. Only the first call does anything.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(receivers) = self.receivers.lock().take() else { return };
        let shared = self.shared.clone();
        tokio::join!(
            registration::run(&shared, stop.clone()),
            serve_inbox(&shared, receivers.inbox, stop.clone()),
            forward_pushes(&shared, receivers.pushes, stop),
        );
    }
}

/// Answers other nodes' requests and takes the replies to this node's, until `stop`.
async fn serve_inbox(shared: &Arc<Shared>, mut inbox: mpsc::UnboundedReceiver<String>, stop: CancellationToken) {
    loop {
        let payload = tokio::select! {
            () = stop.cancelled() => return,
            payload = inbox.recv() => match payload {
                Some(payload) => payload,
                None => return,
            },
        };
        shared.on_message(&payload).await;
    }
}

/// Forwards the frames `send_now` queued for other nodes, in order, until `stop`.
async fn forward_pushes(shared: &Shared, mut pushes: mpsc::Receiver<Push>, stop: CancellationToken) {
    let mut routes: HashMap<ConnectionId, (String, Instant)> = HashMap::new();
    loop {
        let (id, frame) = tokio::select! {
            () = stop.cancelled() => return,
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        shared.forward(&mut routes, id, frame).await;
    }
}

/// Removes a pending request when its requester stops waiting (answered, timed out or
/// dropped).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending.lock().remove(&self.id);
    }
}

fn unavailable(error: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unavailable(error.to_string())
}

impl Shared {
    /// The node ids registered in the cluster, this one excluded.
    async fn other_nodes(&self) -> Result<Vec<String>, DirectoryError> {
        let mut conn = self.broker.store().conn();
        let nodes: Vec<String> =
            redis::cmd("ZRANGE").arg(NODES_KEY).arg(0).arg(-1).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(nodes.into_iter().filter(|n| *n != self.node).collect())
    }

    /// The node that registered connection `id` (never this one).
    async fn locate(&self, id: &ConnectionId) -> Result<String, DirectoryError> {
        let conn = self.broker.store().conn();
        let lookups = self.other_nodes().await?.into_iter().map(|node| {
            let mut conn = conn.clone();
            async move {
                let found: Option<String> =
                    redis::cmd("HGET").arg(node_key(&node)).arg(id.as_str()).query_async(&mut conn).await?;
                Ok::<_, redis::RedisError>(found.map(|_| node))
            }
        });
        let found = futures_util::future::try_join_all(lookups).await.map_err(unavailable)?;
        found.into_iter().flatten().next().ok_or_else(|| DirectoryError::NotFound(id.clone()))
    }

    /// Every other node's registered connections that match `filter`.
    async fn remote_list(&self, filter: &ConnectionFilter) -> Result<Vec<ConnectionInfo>, DirectoryError> {
        let conn = self.broker.store().conn();
        let reads =
            self.other_nodes().await?.into_iter().map(|node| {
                let mut conn = conn.clone();
                async move {
                    redis::cmd("HGETALL").arg(node_key(&node)).query_async::<HashMap<String, String>>(&mut conn).await
                }
            });
        let hashes = futures_util::future::try_join_all(reads).await.map_err(unavailable)?;
        let topic = filter.topic.as_ref().map(|t| t.as_str());
        let mut out = Vec::new();
        for (id, json) in hashes.into_iter().flatten() {
            let Ok(entry) = serde_json::from_str::<Entry>(&json) else {
                tracing::debug!(connectionId = %id, "connection directory: an entry in Redis is not readable; skipped");
                continue;
            };
            if filter.user.as_ref().is_some_and(|u| *u != entry.user)
                || topic.is_some_and(|t| !entry.topics.iter().any(|held| held == t))
            {
                continue;
            }
            out.extend(entry.into_info(ConnectionId::from_external(&id)));
        }
        Ok(out)
    }

    /// Has the node holding `id` perform `op`; waits for its answer at most the request
    /// timeout, lookup included.
    async fn ask(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DirectoryError> {
        let limit = self.options.request_timeout;
        match tokio::time::timeout(limit, self.ask_unbounded(id, op)).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Unavailable(format!(
                "the node holding connection {id} did not answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    async fn ask_unbounded(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DirectoryError> {
        let node = match self.locate(id).await {
            Ok(node) => node,
            Err(DirectoryError::NotFound(_)) if self.may_be_unregistered(id) => return self.ask_everyone(id, op).await,
            Err(e) => return Err(e),
        };
        // Its node no longer listens (crashed; its entries will expire): gone with it.
        self.request(&node, id, op).await?.ok_or_else(|| DirectoryError::NotFound(id.clone()))
    }

    /// Whether `id` may name a connection its node has opened but not yet written to
    /// Redis (that happens every `scan`, off the connect path): an id minted within the
    /// last two scans, give or take the clock difference between nodes. A backend that
    /// answers a client's first message at once asks about exactly such an id.
    fn may_be_unregistered(&self, id: &ConnectionId) -> bool {
        const CLOCK_SLACK_MS: i64 = 2_000;
        let Some(created) = id.created_at_ms() else { return false };
        let window = i64::try_from(self.options.scan.as_millis()).unwrap_or(i64::MAX).saturating_mul(2);
        let now = crate::domain::unix_millis(std::time::SystemTime::now());
        (now - window - CLOCK_SLACK_MS..=now + CLOCK_SLACK_MS).contains(&created)
    }

    /// Asks every other node at once, for a connection not registered yet: the node that
    /// holds it acts and answers, the others answer `NotFound`.
    async fn ask_everyone(&self, id: &ConnectionId, op: Op) -> Result<Outcome, DirectoryError> {
        let nodes = self.other_nodes().await?;
        let asks = nodes.iter().map(|node| Box::pin(self.request(node, id, op.clone())));
        let mut pending: Vec<_> = asks.collect();
        while !pending.is_empty() {
            let (answer, _, rest) = futures_util::future::select_all(pending).await;
            pending = rest;
            match answer? {
                Some(Outcome::NotFound) | None => {}
                Some(outcome) => return Ok(outcome),
            }
        }
        Err(DirectoryError::NotFound(id.clone()))
    }

    /// Sends `op` on connection `id` to `node` and waits for its answer; `None` when no
    /// one listens on that node's channel.
    async fn request(&self, node: &str, id: &ConnectionId, op: Op) -> Result<Option<Outcome>, DirectoryError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.pending.lock().insert(request, answer);
        let _pending = PendingGuard { shared: self, id: request };
        let message = Message::Request { id: request, from: self.node.clone(), conn: id.as_str().to_owned(), op };
        let text = serde_json::to_string(&message).map_err(unavailable)?;
        let receivers = self.broker.send_to_node(node, &text).await.map_err(unavailable)?;
        if receivers == 0 {
            return Ok(None);
        }
        answered.await.map(Some).map_err(|_| unavailable("the request was dropped"))
    }

    /// One message from another node's directory.
    async fn on_message(self: &Arc<Self>, payload: &str) {
        let message = match serde_json::from_str::<Message>(payload) {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(error = %e, "connection directory: a message on this node's channel is not the directory's; ignored");
                return;
            }
        };
        match message {
            Message::Request { id, from, conn, op } => {
                let outcome = self.perform(&ConnectionId::from_external(&conn), op).await;
                let Ok(reply) = serde_json::to_string(&Message::Reply { id, outcome }) else { return };
                let shared = self.clone();
                // Not awaited here: the inbox keeps serving while the reply goes out.
                tokio::spawn(async move {
                    if let Err(e) = shared.broker.send_to_node(&from, &reply).await {
                        tracing::debug!(node = %from, error = %e, "connection directory: a reply could not be sent");
                    }
                });
            }
            Message::Reply { id, outcome } => {
                if let Some(answer) = self.pending.lock().remove(&id) {
                    let _ = answer.send(outcome);
                }
            }
            Message::Push { conn, frame } => {
                if let Err(e) = self.local.send_now(&ConnectionId::from_external(&conn), frame.into()) {
                    tracing::debug!(connectionId = %conn, error = %e, "connection directory: a forwarded frame was not delivered");
                }
            }
        }
    }

    /// Performs another node's request on this node's connection `id`.
    async fn perform(&self, id: &ConnectionId, op: Op) -> Outcome {
        let result = match op {
            Op::Get => self.local.get(id).await.map(|info| Outcome::Found { entry: Entry::of_info(&self.node, &info) }),
            Op::Send { frame } => self.local.send(id, frame.into()).await.map(|delivered| Outcome::Sent { delivered }),
            Op::SendRaw { data, binary } => {
                let frame = if binary {
                    match BASE64.decode(data.as_bytes()) {
                        Ok(bytes) => RawFrame::Binary(bytes.into()),
                        Err(e) => return Outcome::Refused { why: format!("a binary frame that is not base64: {e}") },
                    }
                } else {
                    RawFrame::Text(data.into())
                };
                match self.local.send_raw(id, frame).await {
                    Err(DirectoryError::Unsupported(why)) => return Outcome::Unsupported { why },
                    other => other.map(|delivered| Outcome::Sent { delivered }),
                }
            }
            Op::Close { reason } => match reason_from_name(&reason) {
                Some(reason) => self.local.close(id, reason).await.map(|()| Outcome::Closed),
                None => return Outcome::Refused { why: format!("unknown close reason {reason:?}") },
            },
        };
        result.unwrap_or(Outcome::NotFound)
    }

    /// Forwards one `send_now` frame to the node holding `id` (looked up, or remembered
    /// for a few seconds); a frame for a connection found nowhere is dropped.
    async fn forward(&self, routes: &mut HashMap<ConnectionId, (String, Instant)>, id: ConnectionId, frame: FrameText) {
        let limit = self.options.request_timeout;
        let node = match routes.get(&id) {
            Some((node, at)) if at.elapsed() < PUSH_ROUTE_TTL => node.clone(),
            _ => match tokio::time::timeout(limit, self.locate(&id)).await {
                Ok(Ok(node)) => {
                    if routes.len() >= PUSH_ROUTES {
                        routes.clear();
                    }
                    routes.insert(id.clone(), (node.clone(), Instant::now()));
                    node
                }
                Ok(Err(DirectoryError::NotFound(_))) if self.may_be_unregistered(&id) => {
                    self.push_everywhere(&id, &frame).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(connectionId = %id, error = %e, "connection directory: frame not forwarded");
                    return;
                }
                Err(_) => {
                    tracing::debug!(connectionId = %id, "connection directory: frame not forwarded (lookup timed out)");
                    return;
                }
            },
        };
        let message = Message::Push { conn: id.as_str().to_owned(), frame: frame.as_str().to_owned() };
        let Ok(text) = serde_json::to_string(&message) else { return };
        match tokio::time::timeout(limit, self.broker.send_to_node(&node, &text)).await {
            Ok(Ok(receivers)) if receivers > 0 => {}
            outcome => {
                routes.remove(&id);
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".to_owned(),
                    Ok(Ok(_)) => "its node is gone".to_owned(),
                };
                tracing::debug!(connectionId = %id, node = %node, %error, "connection directory: frame not forwarded");
            }
        }
    }

    /// Forwards one `send_now` frame for a connection not registered yet to every other
    /// node (the one holding it delivers it; for the others it names no connection). Not
    /// remembered as a route: the next frame looks the connection up again.
    async fn push_everywhere(&self, id: &ConnectionId, frame: &FrameText) {
        let limit = self.options.request_timeout;
        let message = Message::Push { conn: id.as_str().to_owned(), frame: frame.as_str().to_owned() };
        let Ok(text) = serde_json::to_string(&message) else { return };
        let Ok(Ok(nodes)) = tokio::time::timeout(limit, self.other_nodes()).await else { return };
        let sends = nodes.iter().map(|node| tokio::time::timeout(limit, self.broker.send_to_node(node, &text)));
        futures_util::future::join_all(sends).await;
    }

    /// Whether connection `id` is this node's (open or closing): then it is nowhere else.
    fn holds(&self, id: &ConnectionId) -> bool {
        self.connections.get(id).is_some()
    }
}

/// An answer of another node that does not fit the request.
fn unexpected(outcome: Outcome) -> DirectoryError {
    match outcome {
        Outcome::Refused { why } => DirectoryError::Unavailable(format!("another node refused the request: {why}")),
        other => DirectoryError::Unavailable(format!("unexpected answer from another node: {other:?}")),
    }
}

#[async_trait]
impl ConnectionDirectory for RedisDirectory {
    async fn list(&self, filter: &ConnectionFilter) -> Result<Vec<ConnectionInfo>, DirectoryError> {
        let shared = &self.shared;
        let mut all = shared.remote_list(filter).await?;
        all.extend(shared.local.list(filter).await?);
        all.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then_with(|| a.id.as_str().cmp(b.id.as_str())));
        Ok(all)
    }

    async fn get(&self, id: &ConnectionId) -> Result<ConnectionInfo, DirectoryError> {
        let shared = &self.shared;
        if shared.holds(id) {
            return shared.local.get(id).await;
        }
        match shared.ask(id, Op::Get).await? {
            Outcome::Found { entry } => entry
                .into_info(id.clone())
                .ok_or_else(|| unavailable("another node described the connection unreadably")),
            Outcome::NotFound => Err(DirectoryError::NotFound(id.clone())),
            other => Err(unexpected(other)),
        }
    }

    async fn send(&self, id: &ConnectionId, frame: FrameText) -> Result<bool, DirectoryError> {
        let shared = &self.shared;
        if shared.holds(id) {
            return shared.local.send(id, frame).await;
        }
        match shared.ask(id, Op::Send { frame: frame.as_str().to_owned() }).await? {
            Outcome::Sent { delivered } => Ok(delivered),
            Outcome::NotFound => Err(DirectoryError::NotFound(id.clone())),
            other => Err(unexpected(other)),
        }
    }

    /// A connection on this node gets the frame at once. For any other id the frame is
    /// queued (never blocking) for a background task that forwards it to the connection's
    /// node in order, best effort: `Ok(true)` then means queued, and a frame for an id
    /// found nowhere is dropped there (logged at debug).
    fn send_now(&self, id: &ConnectionId, frame: FrameText) -> Result<bool, DirectoryError> {
        let shared = &self.shared;
        if shared.holds(id) {
            return shared.local.send_now(id, frame);
        }
        match shared.pushes.try_send((id.clone(), frame)) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(unavailable("too many frames are waiting to be forwarded to other nodes"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(unavailable("the directory is shutting down")),
        }
    }

    async fn send_raw(&self, id: &ConnectionId, frame: RawFrame) -> Result<bool, DirectoryError> {
        let shared = &self.shared;
        if shared.holds(id) {
            return shared.local.send_raw(id, frame).await;
        }
        let op = match frame {
            RawFrame::Text(text) => Op::SendRaw { data: text.as_str().to_owned(), binary: false },
            RawFrame::Binary(bytes) => Op::SendRaw { data: BASE64.encode(&bytes), binary: true },
        };
        match shared.ask(id, op).await? {
            Outcome::Sent { delivered } => Ok(delivered),
            Outcome::NotFound => Err(DirectoryError::NotFound(id.clone())),
            Outcome::Unsupported { why } => Err(DirectoryError::Unsupported(why)),
            other => Err(unexpected(other)),
        }
    }

    async fn close(&self, id: &ConnectionId, reason: CloseReason) -> Result<(), DirectoryError> {
        let shared = &self.shared;
        if shared.holds(id) {
            return shared.local.close(id, reason).await;
        }
        match shared.ask(id, Op::Close { reason: reason_name(reason).to_owned() }).await? {
            Outcome::Closed => Ok(()),
            Outcome::NotFound => Err(DirectoryError::NotFound(id.clone())),
            other => Err(unexpected(other)),
        }
    }
}

//! Presence across the cluster: who is subscribed to a topic on any node, and the
//! `join`/`leave` frames of other nodes' subscribers.
//!
//! Each topic has a hash `sb:{<topic>}:presence` (connection id → `{"u":user,"n":node,
//! "l":leave frame or ""}`) and a sorted set `sb:{<topic>}:presence:exp` (connection id →
//! expiry, unix ms). A join or leave is one script that also publishes the frame on the
//! topic's channel (tagged with the node, offset 0: not an event), so other nodes relay
//! it to their subscribers in its place among the topic's messages. Every node rewrites
//! its own entries every third of the TTL, and sweeps the expired entries of the topics it
//! watches, publishing the stored `leave` frame of each (a crashed node's subscribers
//! leave within 4/3 of the TTL). Reads count only unexpired entries.
//!
//! Frames of other nodes reach this node's subscribers through [`super::reconcile`], which
//! also announces what pub/sub missed while this node was not subscribed.
//!
//! Writes are queued from the hub's locks and sent by one task, never awaited by a
//! subscriber. It must never touch two topics in one script (cluster slots).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::broker::Shared;
use super::keys::TopicKeys;
use super::reconcile::relay;
use super::script::channel_payload;
use crate::codec::{PresenceChange, presence_change};
use crate::domain::{Presence, PresenceMember, Topic};

/// Entries rewritten per refresh script.
const REFRESH_CHUNK: usize = 500;

/// Join: `KEYS` hash, expiry set; `ARGV` connection, entry, expiry ms, key ttl ms,
/// publish command, channel, message (empty: none).
const JOIN: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[7] ~= '' then redis.call(ARGV[5], ARGV[6], ARGV[7]) end
return 1
";

/// Leave: `KEYS` hash, expiry set; `ARGV` connection, publish command, channel, message
/// (empty: none). Announces only an entry that was there (a sweeper may have been first).
const LEAVE: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if ARGV[4] ~= '' then redis.call(ARGV[2], ARGV[3], ARGV[4]) end
end
return 1
";

/// Refresh: `KEYS` hash, expiry set; `ARGV` expiry ms, key ttl ms, publish command,
/// channel, message prefix, then (connection, entry) pairs, rewritten. An entry that was
/// gone (swept while its node was paused past the TTL, and announced as a `leave`) comes
/// back with a `join` (its stored `leave` frame with the type changed), so members lists
/// kept from join/leave frames come right again.
const REFRESH: &str = r#"
local frames = {}
for i = 6, #ARGV, 2 do
  local added = redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  if added == 1 then
    local ok, decoded = pcall(cjson.decode, ARGV[i + 1])
    if ok and type(decoded) == 'table' and type(decoded.l) == 'string' and decoded.l ~= '' then
      local join = string.gsub(decoded.l, '"type":"leave"', '"type":"join"', 1)
      redis.call(ARGV[3], ARGV[4], ARGV[5] .. join)
      frames[#frames + 1] = join
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return frames
"#;

/// Sweep: `KEYS` hash, expiry set; `ARGV` now ms, publish command, channel, message
/// prefix. Removes up to 500 expired entries, publishing each one's stored `leave`;
/// returns those frames (the sweeping node relays them to its own subscribers itself: its
/// pub/sub connection may be down, e.g. right after Redis came back).
const SWEEP: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 500)
local frames = {}
for _, id in ipairs(ids) do
  local entry = redis.call('HGET', KEYS[1], id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if entry then
    local ok, decoded = pcall(cjson.decode, entry)
    if ok and type(decoded) == 'table' and type(decoded.l) == 'string' and decoded.l ~= '' then
      redis.call(ARGV[2], ARGV[3], ARGV[4] .. decoded.l)
      frames[#frames + 1] = decoded.l
    end
  end
end
return frames
";

/// Members: `KEYS` hash, expiry set; `ARGV` now ms. Connection id and entry of each
/// unexpired member, flat (an expired one is gone: its sweep is due, and its `leave` with
/// it). The presence answer and the reconcile after a reconnect both read this.
pub(super) const MEMBERS: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
local out = {}
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  local chunk = redis.call('HMGET', KEYS[1], unpack(ids, i, last))
  for j = 1, #chunk do
    if chunk[j] then
      out[#out + 1] = ids[i + j - 1]
      out[#out + 1] = chunk[j]
    end
  end
end
return out
";

/// One queued write.
enum Op {
    Join { topic: Topic, connection: String, entry: String, message: Option<String> },
    Leave { topic: Topic, connection: String, message: Option<String> },
}

/// One entry as stored.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Entry {
    /// The user.
    pub u: String,
    /// The node.
    pub n: String,
    /// The `leave` frame to publish if the entry expires; empty when the namespace does
    /// not announce.
    pub l: String,
}

/// Presence writes and reads of this node.
pub(super) struct PresenceStore {
    ops: mpsc::UnboundedSender<Op>,
    receiver: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
    /// This node's subscribed connections per topic, with their entries (for refresh).
    local: DashMap<Topic, HashMap<String, String>>,
    ttl: Duration,
    join: redis::Script,
    leave: redis::Script,
    refresh: redis::Script,
    sweep: redis::Script,
    read: redis::Script,
}

impl PresenceStore {
    /// Entries live `ttl` without a refresh.
    pub fn new(ttl: Duration) -> Self {
        let (ops, receiver) = mpsc::unbounded_channel();
        Self {
            ops,
            receiver: parking_lot::Mutex::new(Some(receiver)),
            local: DashMap::new(),
            ttl,
            join: redis::Script::new(JOIN),
            leave: redis::Script::new(LEAVE),
            refresh: redis::Script::new(REFRESH),
            sweep: redis::Script::new(SWEEP),
            read: redis::Script::new(MEMBERS),
        }
    }

    /// Queues a join (never blocks).
    pub fn joined(&self, node_id: &str, topic: &Topic, member: &PresenceMember<'_>) {
        let leave = if member.announce {
            presence_change(PresenceChange::Leave, topic, member.user, member.connection_id).to_string()
        } else {
            String::new()
        };
        let entry = Entry { u: member.user.to_owned(), n: node_id.to_owned(), l: leave };
        let Ok(entry) = serde_json::to_string(&entry) else { return };
        let message = member.announce.then(|| {
            let join = presence_change(PresenceChange::Join, topic, member.user, member.connection_id);
            channel_payload(node_id, "", 0, join.as_str())
        });
        self.local.entry(topic.clone()).or_default().insert(member.connection_id.to_owned(), entry.clone());
        let _ = self.ops.send(Op::Join {
            topic: topic.clone(),
            connection: member.connection_id.to_owned(),
            entry,
            message,
        });
    }

    /// Queues a leave (never blocks).
    pub fn left(&self, node_id: &str, topic: &Topic, member: &PresenceMember<'_>) {
        self.local.remove_if_mut(topic, |_, members| {
            members.remove(member.connection_id);
            members.is_empty()
        });
        let message = member.announce.then(|| {
            let leave = presence_change(PresenceChange::Leave, topic, member.user, member.connection_id);
            channel_payload(node_id, "", 0, leave.as_str())
        });
        let _ = self.ops.send(Op::Leave { topic: topic.clone(), connection: member.connection_id.to_owned(), message });
    }

    /// Who is subscribed to `topic` on any live node.
    pub async fn read(&self, shared: &Shared, topic: &Topic) -> Result<Presence, StoreError> {
        let keys = TopicKeys::new(topic);
        let mut conn = shared.store.conn();
        let members: Vec<String> =
            self.read.key(&keys.presence).key(&keys.presence_expiry).arg(now_ms()).invoke_async(&mut conn).await?;
        // Connection id, entry, connection id, entry…: the entries are the odd ones.
        let mut users: Vec<String> = members
            .iter()
            .skip(1)
            .step_by(2)
            .filter_map(|e| serde_json::from_str::<Entry>(e).ok())
            .map(|e| e.u)
            .collect();
        let connections = users.len();
        users.sort_unstable();
        users.dedup();
        Ok(Presence { users, connections })
    }

    /// Whether `connection` is this node's subscriber of `topic`.
    pub(super) fn is_local(&self, topic: &Topic, connection: &str) -> bool {
        self.local.get(topic).is_some_and(|members| members.contains_key(connection))
    }

    /// Whether this node's subscribers of `topic` hear joins and leaves. One entry tells:
    /// every member of a topic is in its namespace, which announces or not.
    pub(super) fn announces(&self, topic: &Topic) -> bool {
        self.local.get(topic).is_some_and(|members| {
            members.values().next().and_then(|e| serde_json::from_str::<Entry>(e).ok()).is_some_and(|e| !e.l.is_empty())
        })
    }

    /// Sends queued writes, refreshes this node's entries and sweeps expired ones until
    /// `stop`.
    pub async fn run(&self, shared: Arc<Shared>, stop: CancellationToken) {
        let Some(mut ops) = self.receiver.lock().take() else { return };
        let mut upkeep = tokio::time::interval(self.ttl / 3);
        upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // Stopping: what is queued (the leaves of the connections closed at
                    // shutdown) is still written, so other nodes see them go at once.
                    let mut rest = Vec::new();
                    while let Ok(op) = ops.try_recv() {
                        rest.push(op);
                    }
                    self.write_all(&shared, rest).await;
                    return;
                }
                op = ops.recv() => {
                    let Some(op) = op else { return };
                    let mut batch = vec![op];
                    while batch.len() < 512 {
                        match ops.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                    self.write_all(&shared, batch).await;
                }
                _ = upkeep.tick() => {
                    if let Err(e) = self.upkeep(&shared).await {
                        tracing::debug!(error = %e, "presence refresh or sweep failed");
                    }
                }
            }
        }
    }

    /// Sends `ops`. One topic's writes stay in order: the multiplexed connection sends them
    /// in the order they are polled, and `join_all` polls in order.
    async fn write_all(&self, shared: &Shared, ops: Vec<Op>) {
        let writes = ops.into_iter().map(|op| self.write(shared, op));
        for result in futures_util::future::join_all(writes).await {
            if let Err(e) = result {
                tracing::debug!(error = %e, "presence write failed; the next refresh rewrites this node's entries");
            }
        }
    }

    async fn write(&self, shared: &Shared, op: Op) -> Result<(), StoreError> {
        let mut conn = shared.store.conn();
        let command = shared.store.publish_command();
        match op {
            Op::Join { topic, connection, entry, message } => {
                let keys = TopicKeys::new(&topic);
                self.join
                    .key(&keys.presence)
                    .key(&keys.presence_expiry)
                    .arg(&connection)
                    .arg(&entry)
                    .arg(now_ms() + millis(self.ttl))
                    .arg(millis(self.ttl))
                    .arg(command)
                    .arg(&keys.channel)
                    .arg(message.unwrap_or_default())
                    .invoke_async::<i64>(&mut conn)
                    .await?;
            }
            Op::Leave { topic, connection, message } => {
                let keys = TopicKeys::new(&topic);
                self.leave
                    .key(&keys.presence)
                    .key(&keys.presence_expiry)
                    .arg(&connection)
                    .arg(command)
                    .arg(&keys.channel)
                    .arg(message.unwrap_or_default())
                    .invoke_async::<i64>(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Rewrites this node's entries with a fresh expiry, and sweeps the expired entries
    /// of the topics this node watches (their subscribers get the `leave` frames).
    async fn upkeep(&self, shared: &Shared) -> Result<(), StoreError> {
        let expiry = now_ms() + millis(self.ttl);
        // In chunks: a topic every connection holds (`global`) must not become one script
        // that keeps Redis busy for long.
        let refreshes: Vec<(Topic, Vec<(String, String)>)> = self
            .local
            .iter()
            .flat_map(|e| {
                let members: Vec<(String, String)> = e.value().iter().map(|(c, v)| (c.clone(), v.clone())).collect();
                let topic = e.key().clone();
                members.chunks(REFRESH_CHUNK).map(|chunk| (topic.clone(), chunk.to_vec())).collect::<Vec<_>>()
            })
            .collect();
        let command = shared.store.publish_command();
        // Tagged with this node: the other nodes relay what a sweep or refresh publishes;
        // this node relays the frames the script returns (not its own echo).
        let sweep_prefix = channel_payload(&shared.node_id, "", 0, "");
        let refresh = refreshes.into_iter().map(|(topic, members)| {
            let mut conn = shared.store.conn();
            let sweep_prefix = &sweep_prefix;
            async move {
                let keys = TopicKeys::new(&topic);
                let mut call = self.refresh.key(&keys.presence);
                call.key(&keys.presence_expiry).arg(expiry).arg(millis(self.ttl));
                call.arg(command).arg(&keys.channel).arg(sweep_prefix);
                for (connection, entry) in &members {
                    call.arg(connection).arg(entry);
                }
                call.invoke_async::<Vec<String>>(&mut conn).await.map(|frames| (topic, frames))
            }
        });
        let watched: Vec<Topic> = shared.topics.iter().map(|e| e.key().clone()).collect();
        let sweeps = watched.into_iter().map(|topic| {
            let mut conn = shared.store.conn();
            let prefix = &sweep_prefix;
            async move {
                let keys = TopicKeys::new(&topic);
                self.sweep
                    .key(&keys.presence)
                    .key(&keys.presence_expiry)
                    .arg(now_ms())
                    .arg(command)
                    .arg(&keys.channel)
                    .arg(prefix)
                    .invoke_async::<Vec<String>>(&mut conn)
                    .await
                    .map(|frames| (topic, frames))
            }
        });
        let (refreshed, swept) =
            tokio::join!(futures_util::future::join_all(refresh), futures_util::future::join_all(sweeps));
        // Every script that ran published its frames: relay them all, whatever failed.
        let mut first_error = None;
        for result in refreshed.into_iter().chain(swept) {
            match result {
                Ok((topic, frames)) => {
                    for frame in frames {
                        relay(shared, &topic, &frame);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

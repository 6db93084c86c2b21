//! The Redis broker's storage layer: each topic's offset counter and epoch, its history
//! (a Redis Stream) and its retained state, changed by one script per publish and read by
//! one script per read.
//!
//! This module owns the key layout ([`keys`]), the Lua scripts and the message they
//! publish ([`script`]), [`RedisStore`], the typed API over them, the connections
//! ([`conn`]), and [`RedisBroker`]: the [`super::Broker`] on top, which receives the
//! published messages (`subscriber`) and delivers each topic in order (`sequencer`).
//!
//! It must never encode a frame more than once per publish (the node encodes, the script
//! only splices the offset in), never assign an offset outside the publish script (that is
//! what keeps offsets consecutive across nodes), and never touch two topics in one script
//! (every key of a script shares one hash tag, so it runs on Redis Cluster).
//!
//! Key lifetimes: the stream expires `history_ttl` after the topic's last publish and the
//! retained state `retained_ttl` after it was set; the meta hash (offset, epoch) expires
//! after the longest of those and [`StoreOptions::meta_ttl`], refreshed at every publish.
//! Meta outlives both, so while any history or retained frame exists its offsets are still
//! counted; when meta goes, the topic comes back with a new epoch and offsets from 1, which
//! is exactly what a resuming reader must be told (never old offsets reused silently).

mod announced;
mod broker;
pub mod conn;
pub mod keys;
mod presence;
mod reconcile;
pub mod script;
mod sequencer;
mod subscriber;

use std::time::Duration;

use crate::broker::{HistoryPolicy, ReadFrom, ReadRequest, StoredEvent, TopicRead};
use crate::codec::{FrameText, encode_delivery_parts};
use crate::domain::{Epoch, Event, StreamPosition, Topic};

pub use broker::RedisBroker;
pub use conn::{RedisConn, Target};
pub use keys::TopicKeys;
pub use script::ChannelMessage;

/// A failure of the Redis store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// A script answered with something it never returns.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// The node id cannot be carried in a channel message (it contains a newline).
    #[error("node id must not contain a newline")]
    BadNodeId,
    /// The broker URL is not usable.
    #[error(transparent)]
    Url(#[from] conn::UrlError),
}

impl From<StoreError> for super::BrokerError {
    fn from(error: StoreError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// The events of one topic in a [`RedisStore::publish_many`]: their index in the call,
/// their encoding, and whether each is retained.
struct Group {
    keys: TopicKeys,
    policy: HistoryPolicy,
    items: Vec<(usize, crate::codec::DeliveryParts, bool)>,
}

/// The most events one read asks for (a larger limit means "all": a stream never holds
/// more than a namespace's `history_size`, itself far below this).
const MAX_READ_LIMIT: usize = 1 << 30;

/// Settings of the store that are not per namespace.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How long a topic's offset and epoch are kept after its last publish, at least
    /// (never less than its history and retained TTLs).
    pub meta_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { meta_ttl: Duration::from_secs(30 * 24 * 3600) }
    }
}

/// Topic offsets, history and retained state in Redis (one connection, multiplexed and
/// reconnecting). Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    publish: ::redis::Script,
    publish_many: ::redis::Script,
    read: ::redis::Script,
    /// `PUBLISH`, or `SPUBLISH` on a cluster (sharded pub/sub).
    publish_command: &'static str,
    options: StoreOptions,
}

impl RedisStore {
    /// Connects to `url` (any URL [`Target::parse`] accepts).
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let conn = target.commands().await?;
        Ok(Self::new(conn, options))
    }

    /// A store over an existing connection.
    pub fn new(conn: RedisConn, options: StoreOptions) -> Self {
        let publish_command = if matches!(conn, RedisConn::Cluster(_)) { "SPUBLISH" } else { "PUBLISH" };
        Self {
            conn,
            publish: ::redis::Script::new(script::PUBLISH),
            publish_many: ::redis::Script::new(script::PUBLISH_MANY),
            read: ::redis::Script::new(script::READ),
            publish_command,
            options,
        }
    }

    /// The command connection (for the broker's own commands).
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    pub fn publish_command(&self) -> &'static str {
        self.publish_command
    }

    /// Publishes `event` to `topic` in one round trip: the next offset, history per
    /// `policy`, retained state with `retain`, and the frame on the topic's channel tagged
    /// with `node_id`. Returns the event's position.
    pub async fn publish(
        &self,
        topic: &Topic,
        event: &Event,
        retain: bool,
        policy: &HistoryPolicy,
        node_id: &str,
    ) -> Result<StreamPosition, StoreError> {
        Ok(self.publish_frame(topic, event, retain, policy, node_id).await?.0)
    }

    /// [`RedisStore::publish`], also returning the delivered frame (the same bytes the
    /// script stored and published), for this node's own subscribers.
    pub async fn publish_frame(
        &self,
        topic: &Topic,
        event: &Event,
        retain: bool,
        policy: &HistoryPolicy,
        node_id: &str,
    ) -> Result<(StreamPosition, FrameText), StoreError> {
        if node_id.contains('\n') {
            return Err(StoreError::BadNodeId);
        }
        let keys = TopicKeys::new(topic);
        let parts = encode_delivery_parts(event, topic);
        let history_size = if policy.keeps_history() { policy.size } else { 0 };
        let retain = retain && !policy.retained_ttl.is_zero();
        let mut conn = self.conn.clone();
        let (offset, epoch): (u64, String) = self
            .publish
            .key(&keys.meta)
            .key(&keys.stream)
            .key(&keys.retained)
            .arg(Epoch::generate().as_str())
            .arg(&parts.head)
            .arg(&parts.tail)
            .arg(history_size)
            .arg(millis(policy.ttl))
            .arg(self.meta_ttl_ms(policy))
            .arg(if retain { "1" } else { "0" })
            .arg(millis(policy.retained_ttl))
            .arg(node_id)
            .arg(&keys.channel)
            .arg(self.publish_command)
            .invoke_async(&mut conn)
            .await?;
        let frame = FrameText::from(format!("{}{offset}{}", parts.head, parts.tail));
        Ok((StreamPosition { offset, epoch: Epoch::new(&epoch) }, frame))
    }

    /// Publishes many events with one round trip: the events of each topic, in their
    /// order, in one script ([`script::PUBLISH_MANY`]); the scripts of all topics in one
    /// pipeline to a single Redis, or sent together on a cluster's node connections (a
    /// pipeline cannot span slots). Each result is that event's, as
    /// [`RedisStore::publish_frame`] would answer it. Order is kept per topic (offsets);
    /// events of different topics are not ordered against each other.
    pub async fn publish_many(
        &self,
        items: &[(&Topic, &Event, bool, HistoryPolicy)],
        node_id: &str,
    ) -> Vec<Result<(StreamPosition, FrameText), StoreError>> {
        if node_id.contains('\n') {
            return items.iter().map(|_| Err(StoreError::BadNodeId)).collect();
        }
        // One group per topic, in the order topics first appear; items keep their order.
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of: std::collections::HashMap<&Topic, usize> = std::collections::HashMap::new();
        for (index, (topic, event, retain, policy)) in items.iter().enumerate() {
            let group = *group_of.entry(*topic).or_insert_with(|| {
                groups.push(Group { keys: TopicKeys::new(topic), policy: *policy, items: Vec::new() });
                groups.len() - 1
            });
            let retain = *retain && !policy.retained_ttl.is_zero();
            groups[group].items.push((index, encode_delivery_parts(event, topic), retain));
        }
        let mut answers: Vec<Option<Result<(u64, String), StoreError>>> = (0..groups.len()).map(|_| None).collect();
        // Twice at most: the second time after loading the script (Redis restarted and
        // forgot it, or never had it), for the groups that failed with NOSCRIPT.
        for attempt in 0..2 {
            let pending: Vec<usize> = (0..groups.len())
                .filter(|&g| match &answers[g] {
                    None => true,
                    Some(Err(StoreError::Redis(e))) => {
                        attempt == 1 && e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
                    }
                    Some(_) => false,
                })
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut conn = self.conn.clone();
            if attempt == 1
                && let Err(e) = self.publish_many.load_async(&mut conn).await
            {
                for &g in &pending {
                    answers[g] = Some(Err(StoreError::Reply(e.to_string())));
                }
                break;
            }
            let results: Vec<::redis::RedisResult<(u64, String)>> = match &conn {
                RedisConn::Single(_) => {
                    let mut pipe = ::redis::pipe();
                    pipe.ignore_errors();
                    for &g in &pending {
                        pipe.add_command(self.publish_group(&groups[g], node_id));
                    }
                    match pipe.query_async(&mut conn).await {
                        Ok(results) => results,
                        Err(e) => pending.iter().map(|_| Err(e.clone())).collect(),
                    }
                }
                RedisConn::Cluster(_) => {
                    let calls = pending.iter().map(|&g| {
                        let cmd = self.publish_group(&groups[g], node_id);
                        let mut conn = conn.clone();
                        async move { cmd.query_async(&mut conn).await }
                    });
                    futures_util::future::join_all(calls).await
                }
            };
            for (&g, result) in pending.iter().zip(results) {
                answers[g] = Some(result.map_err(StoreError::Redis));
            }
        }
        let mut results: Vec<Option<Result<(StreamPosition, FrameText), StoreError>>> =
            (0..items.len()).map(|_| None).collect();
        for (group, answer) in groups.into_iter().zip(answers) {
            match answer.unwrap_or_else(|| Err(StoreError::Reply("no answer".into()))) {
                Ok((first, epoch)) => {
                    let epoch = Epoch::new(&epoch);
                    for (offset, (index, parts, _)) in (first..).zip(group.items) {
                        let frame = FrameText::from(format!("{}{offset}{}", parts.head, parts.tail));
                        results[index] = Some(Ok((StreamPosition { offset, epoch: epoch.clone() }, frame)));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for (index, _, _) in group.items {
                        results[index] = Some(Err(StoreError::Reply(message.clone())));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(StoreError::Reply("no answer".into())))).collect()
    }

    /// The `EVALSHA` of [`script::PUBLISH_MANY`] for one topic's group.
    fn publish_group(&self, group: &Group, node_id: &str) -> ::redis::Cmd {
        let policy = &group.policy;
        let history_size = if policy.keeps_history() { policy.size } else { 0 };
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(self.publish_many.get_hash())
            .arg(3)
            .arg(&group.keys.meta)
            .arg(&group.keys.stream)
            .arg(&group.keys.retained)
            .arg(Epoch::generate().as_str())
            .arg(history_size)
            .arg(millis(policy.ttl))
            .arg(self.meta_ttl_ms(policy))
            .arg(millis(policy.retained_ttl))
            .arg(node_id)
            .arg(&group.keys.channel)
            .arg(self.publish_command);
        for (_, parts, retain) in &group.items {
            cmd.arg(&parts.head).arg(&parts.tail).arg(if *retain { "1" } else { "0" });
        }
        cmd
    }

    /// Reads `topic`'s position, events and retained state per `request`, at one instant
    /// and in one round trip. A topic never seen gets its epoch here.
    pub async fn read(&self, topic: &Topic, request: &ReadRequest) -> Result<TopicRead, StoreError> {
        let keys = TopicKeys::new(topic);
        let (mode, after, epoch) = match &request.from {
            ReadFrom::Nothing => ("0", 0, String::new()),
            ReadFrom::After { offset, epoch } => {
                ("1", *offset, epoch.as_ref().map(|e| e.as_str().to_owned()).unwrap_or_default())
            }
        };
        let mut conn = self.conn.clone();
        let (offset, epoch, recovered, flat, retained): (u64, String, u8, Vec<String>, Option<String>) = self
            .read
            .key(&keys.meta)
            .key(&keys.stream)
            .key(&keys.retained)
            .arg(Epoch::generate().as_str())
            .arg(millis(self.options.meta_ttl).max(1))
            .arg(mode)
            .arg(after)
            .arg(epoch)
            // Lua reads numbers as doubles and Redis refuses COUNT in exponent notation
            .arg(request.limit.min(MAX_READ_LIMIT))
            .arg(if request.partial { "1" } else { "0" })
            .arg(if request.retained { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await?;
        let mut events = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let Some(offset) = flat.next() {
            let frame = flat.next().ok_or_else(|| StoreError::Reply("odd event list".into()))?;
            let offset = offset.parse().map_err(|_| StoreError::Reply(format!("bad event offset {offset:?}")))?;
            events.push(StoredEvent { offset, frame: FrameText::from(frame) });
        }
        Ok(TopicRead {
            position: StreamPosition { offset, epoch: Epoch::new(&epoch) },
            events,
            recovered: recovered == 1,
            retained: retained.map(FrameText::from),
        })
    }

    /// `topic`'s last assigned position (offset 0 before its first event).
    pub async fn position(&self, topic: &Topic) -> Result<StreamPosition, StoreError> {
        Ok(self.read(topic, &ReadRequest::default()).await?.position)
    }

    /// The meta hash's TTL for a publish under `policy`: it must outlive the history and
    /// the retained state (see the module docs).
    fn meta_ttl_ms(&self, policy: &HistoryPolicy) -> u64 {
        millis(self.options.meta_ttl.max(policy.ttl).max(policy.retained_ttl)).max(1)
    }
}

/// `duration` in whole milliseconds, at least 1 (Redis refuses a zero expiry), saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

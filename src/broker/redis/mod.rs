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

mod broker;
pub mod conn;
pub mod keys;
mod presence;
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

    /// Publishes many events in order with one round trip: one pipeline of publish
    /// scripts to a single Redis; on a cluster the scripts are sent together on the
    /// nodes' multiplexed connections (one wait; a pipeline cannot span slots). Each
    /// result is that event's, as [`RedisStore::publish_frame`] would answer it.
    pub async fn publish_many(
        &self,
        items: &[(&Topic, &Event, bool, HistoryPolicy)],
        node_id: &str,
    ) -> Vec<Result<(StreamPosition, FrameText), StoreError>> {
        if node_id.contains('\n') {
            return items.iter().map(|_| Err(StoreError::BadNodeId)).collect();
        }
        let prepared: Vec<(TopicKeys, crate::codec::DeliveryParts, HistoryPolicy, bool)> = items
            .iter()
            .map(|(topic, event, retain, policy)| {
                (TopicKeys::new(topic), encode_delivery_parts(event, topic), *policy, *retain)
            })
            .collect();
        let invocation =
            |keys: &TopicKeys, parts: &crate::codec::DeliveryParts, policy: &HistoryPolicy, retain: bool| {
                let history_size = if policy.keeps_history() { policy.size } else { 0 };
                let retain = retain && !policy.retained_ttl.is_zero();
                let mut cmd = ::redis::cmd("EVALSHA");
                cmd.arg(self.publish.get_hash())
                    .arg(3)
                    .arg(&keys.meta)
                    .arg(&keys.stream)
                    .arg(&keys.retained)
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
                    .arg(self.publish_command);
                cmd
            };
        let mut results: Vec<Option<Result<(u64, String), StoreError>>> = (0..items.len()).map(|_| None).collect();
        // Twice at most: the second time after loading the script (Redis restarted and
        // forgot it, or never had it), for the items that failed with NOSCRIPT.
        for attempt in 0..2 {
            let pending: Vec<usize> = (0..items.len())
                .filter(|&i| match &results[i] {
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
                && let Err(e) = self.publish.load_async(&mut conn).await
            {
                let e = StoreError::Redis(e);
                for &i in &pending {
                    results[i] = Some(Err(StoreError::Reply(e.to_string())));
                }
                break;
            }
            let answers: Vec<::redis::RedisResult<(u64, String)>> = match &conn {
                RedisConn::Single(_) => {
                    let mut pipe = ::redis::pipe();
                    pipe.ignore_errors();
                    for &i in &pending {
                        let (keys, parts, policy, retain) = &prepared[i];
                        pipe.add_command(invocation(keys, parts, policy, *retain));
                    }
                    match pipe.query_async(&mut conn).await {
                        Ok(answers) => answers,
                        Err(e) => pending.iter().map(|_| Err(e.clone())).collect(),
                    }
                }
                RedisConn::Cluster(_) => {
                    let calls = pending.iter().map(|&i| {
                        let (keys, parts, policy, retain) = &prepared[i];
                        let cmd = invocation(keys, parts, policy, *retain);
                        let mut conn = conn.clone();
                        async move { cmd.query_async(&mut conn).await }
                    });
                    futures_util::future::join_all(calls).await
                }
            };
            for (&i, answer) in pending.iter().zip(answers) {
                results[i] = Some(answer.map_err(StoreError::Redis));
            }
        }
        results
            .into_iter()
            .zip(prepared)
            .map(|(result, (_, parts, _, _))| {
                let (offset, epoch) = result.unwrap_or_else(|| Err(StoreError::Reply("no answer".into())))?;
                let frame = FrameText::from(format!("{}{offset}{}", parts.head, parts.tail));
                Ok((StreamPosition { offset, epoch: Epoch::new(&epoch) }, frame))
            })
            .collect()
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

//! Connections to Redis or a Redis Cluster: where the broker's URL points, one command
//! connection (multiplexed, reconnecting) and one pub/sub connection (RESP3 pushes).
//!
//! This module owns the difference between a single Redis (or Valkey, ElastiCache without
//! cluster mode) and a Redis Cluster, so nothing above it branches on the mode: commands
//! and scripts run through [`RedisConn`] (the cluster client routes each by its key's
//! slot), and [`PubSubConn`] subscribes with SUBSCRIBE or, on a cluster, SSUBSCRIBE
//! (sharded pub/sub: a message is sent only to the shard that owns its channel's slot).
//! It must never hold a lock across an await, nor parse what travels on a channel.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

/// A command that does not answer within this is failed (the broker is then unavailable
/// for that call, instead of holding a publisher or a subscriber forever).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connecting to a Redis node gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a broker URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The scheme is not one of ours.
    #[error("unknown scheme in {0:?}: use memory, redis://, rediss://, redis+cluster:// or rediss+cluster://")]
    Scheme(String),
    /// A cluster URL without a node.
    #[error("a cluster URL needs at least one host:port")]
    NoNodes,
    /// A cluster has one database.
    #[error("a Redis Cluster has only database 0; remove the /{0} from the URL")]
    ClusterDb(String),
    /// The redis crate could not parse it.
    #[error("{0}")]
    Invalid(String),
}

/// Where the broker connects, parsed from `SIGNALBOX_BROKER`.
#[derive(Debug, Clone)]
pub enum Target {
    /// One Redis server (`redis://`, `rediss://`).
    Single(Box<redis::ConnectionInfo>),
    /// A Redis Cluster, by its seed nodes (`redis+cluster://h:p,h:p`).
    Cluster(Vec<redis::ConnectionInfo>),
}

impl Target {
    /// Parses `redis://[user:password@]host:port[/db]`, `rediss://…`,
    /// `redis+cluster://[user:password@]host:port[,host:port…]` or `rediss+cluster://…`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| UrlError::Scheme(redact(url)))?;
        match scheme {
            "redis" | "rediss" => Ok(Self::Single(Box::new(info(url)?))),
            "redis+cluster" | "rediss+cluster" => {
                let plain = scheme.trim_end_matches("+cluster");
                let (userinfo, hosts) = match rest.rsplit_once('@') {
                    Some((user, hosts)) => (format!("{user}@"), hosts),
                    None => (String::new(), rest),
                };
                let (hosts, query) = match hosts.split_once('?') {
                    Some((hosts, query)) => (hosts, format!("?{query}")),
                    None => (hosts, String::new()),
                };
                let (hosts, db) = hosts.split_once('/').unwrap_or((hosts, ""));
                if !db.is_empty() && db != "0" {
                    return Err(UrlError::ClusterDb(db.to_owned()));
                }
                let nodes = hosts
                    .split(',')
                    .filter(|h| !h.trim().is_empty())
                    .map(|host| info(&format!("{plain}://{userinfo}{}{query}", host.trim())))
                    .collect::<Result<Vec<_>, _>>()?;
                if nodes.is_empty() {
                    return Err(UrlError::NoNodes);
                }
                Ok(Self::Cluster(nodes))
            }
            _ => Err(UrlError::Scheme(redact(url))),
        }
    }

    /// Whether this is a Redis Cluster (sharded pub/sub).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Opens the command connection. To a single server it connects lazily (a Redis that
    /// is down now is retried at each command); a cluster's topology must be reachable now.
    pub async fn commands(&self) -> RedisResult<RedisConn> {
        match self {
            Self::Single(info) => {
                let config = manager_config().set_max_delay(Duration::from_secs(1));
                let client = redis::Client::open((**info).clone())?;
                Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(client, config)?))
            }
            Self::Cluster(nodes) => {
                Ok(RedisConn::Cluster(cluster_builder(nodes).build()?.get_async_connection().await?))
            }
        }
    }

    /// Opens a pub/sub connection whose messages (and disconnection notices) arrive on the
    /// returned receiver.
    pub async fn pubsub(&self) -> RedisResult<(PubSubConn, mpsc::UnboundedReceiver<PushInfo>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = match self {
            Self::Single(info) => {
                let redis = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
                let client = redis::Client::open((**info).clone().set_redis_settings(redis))?;
                let config = manager_config().set_push_sender(tx);
                PubSubConn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            Self::Cluster(nodes) => PubSubConn::Cluster(
                cluster_builder(nodes)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?
                    .get_async_connection()
                    .await?,
            ),
        };
        Ok((conn, rx))
    }
}

fn info(url: &str) -> Result<redis::ConnectionInfo, UrlError> {
    url.into_connection_info().map_err(|e| UrlError::Invalid(format!("{} in {}", e, redact(url))))
}

/// The URL with its password replaced by `***` (for messages and logs).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}")
        }
        None => url.to_owned(),
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

fn cluster_builder(nodes: &[redis::ConnectionInfo]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(2)
}

/// The command connection: scripts, reads, directory and presence commands.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster; each command goes to the node owning its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The pub/sub connection. Subscribing again to a channel already held is harmless, so a
/// caller that lost track (after a disconnection) simply subscribes to everything again.
#[derive(Clone)]
pub enum PubSubConn {
    /// SUBSCRIBE on one server.
    Single(ConnectionManager),
    /// SSUBSCRIBE, routed to the shard of each channel.
    Cluster(ClusterConnection),
}

impl PubSubConn {
    /// Subscribes to `channels`; returns when Redis confirmed every one.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Self::Single(conn) => conn.subscribe(channels).await,
            // One SSUBSCRIBE per channel: a command's channels must share a slot. They are
            // sent together on the multiplexed connections, so this is still one wait.
            Self::Cluster(conn) => {
                let calls = channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(channel).await }
                });
                futures_util::future::try_join_all(calls).await.map(drop)
            }
        }
    }

    /// Unsubscribes from `channels`.
    pub async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Self::Single(conn) => conn.unsubscribe(channels).await,
            Self::Cluster(conn) => {
                let calls = channels.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(channel).await }
                });
                futures_util::future::try_join_all(calls).await.map(drop)
            }
        }
    }
}

/// What a RESP3 push from the pub/sub connection means to the broker.
#[derive(Debug)]
pub enum Push {
    /// A message on a channel (`PUBLISH` or `SPUBLISH`).
    Message {
        /// The channel.
        channel: String,
        /// The payload.
        payload: String,
    },
    /// A connection to Redis (or to one cluster node) was lost: messages may have been
    /// missed, and the client library is reconnecting.
    Disconnected,
    /// Anything else (subscription confirmations, …).
    Other,
}

impl Push {
    /// Classifies a push.
    pub fn from_info(info: PushInfo) -> Self {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else { return Self::Other };
                match (redis::from_redis_value::<String>(channel), redis::from_redis_value::<String>(payload)) {
                    (Ok(channel), Ok(payload)) => Self::Message { channel, payload },
                    _ => Self::Other,
                }
            }
            PushKind::Disconnection => Self::Disconnected,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text is a URL or a refusal, never a panic, and a refusal never repeats a
        /// password given in it.
        #[test]
        fn any_broker_url_parses_or_is_refused(
            scheme in prop_oneof![Just("redis"), Just("rediss"), Just("redis+cluster"), Just("rediss+cluster"), Just("http"), Just("")],
            rest in ".{0,60}",
        ) {
            let url = format!("{scheme}://user:s3cr3tpw@{rest}");
            if let Err(e) = Target::parse(&url) {
                prop_assert!(!e.to_string().contains("s3cr3tpw"), "{}", e);
            }
            let _ = Target::parse(&rest);
        }
    }

    #[test]
    fn parses_single_and_cluster_urls() {
        assert!(matches!(Target::parse("redis://127.0.0.1:6379").unwrap(), Target::Single(_)));
        assert!(matches!(Target::parse("rediss://u:p@example.com:6380/2").unwrap(), Target::Single(_)));
        let Target::Cluster(nodes) = Target::parse("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001").unwrap() else {
            panic!("cluster")
        };
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].redis_settings().password(), Some("p"));
        assert_eq!(nodes[1].redis_settings().username(), Some("u"));
        assert!(Target::parse("rediss+cluster://127.0.0.1:7000").unwrap().is_cluster());
    }

    #[test]
    fn refuses_bad_urls_without_leaking_passwords() {
        for bad in ["http://x:1", "redis+cluster://", "redis+cluster://h:1/3", "redis//x", "nonsense"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let message = Target::parse("ftp://user:secret@h:1").unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
        assert_eq!(redact("redis://u:secret@h:1"), "redis://u:***@h:1");
    }
}

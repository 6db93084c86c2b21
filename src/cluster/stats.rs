//! The admin dashboard's per-node samples in Redis: a hash `sbd:{admin}:stats`, node id
//! → the node's latest [`crate::admin::NodeStats`] JSON, and a sorted set
//! `sbd:{admin}:seen`, node id → when it last wrote (Unix ms). One hash tag, so it works on
//! Redis Cluster. Readers take only the nodes seen within the TTL; writers remove nodes
//! gone for longer; both keys expire when no node writes any more.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::admin::{ClusterStats, ClusterStatsError};
use crate::broker::redis::RedisBroker;

/// The hash of samples.
const STATS_KEY: &str = "sbd:{admin}:stats";
/// When each node last wrote its sample.
const SEEN_KEY: &str = "sbd:{admin}:seen";
/// A node silent this long is removed from both keys.
const FORGET_AFTER_MS: u64 = 60_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// [`ClusterStats`] over the Redis broker's command connection.
pub struct RedisClusterStats {
    broker: Arc<RedisBroker>,
}

impl RedisClusterStats {
    /// Samples stored through `broker`.
    pub fn new(broker: Arc<RedisBroker>) -> Self {
        Self { broker }
    }
}

fn unavailable(error: redis::RedisError) -> ClusterStatsError {
    ClusterStatsError(error.to_string())
}

#[async_trait]
impl ClusterStats for RedisClusterStats {
    async fn publish(&self, node: &str, sample: &str) -> Result<(), ClusterStatsError> {
        let mut conn = self.broker.store().conn();
        let now = now_ms();
        let keep = i64::try_from(FORGET_AFTER_MS).unwrap_or(i64::MAX);
        let gone: Vec<String> = redis::pipe()
            .atomic()
            .hset(STATS_KEY, node, sample)
            .ignore()
            .zadd(SEEN_KEY, node, now)
            .ignore()
            // Both keys outlive the last writer by the forget delay, no more.
            .pexpire(STATS_KEY, keep)
            .ignore()
            .pexpire(SEEN_KEY, keep)
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(SEEN_KEY)
            .arg("-inf")
            .arg(now.saturating_sub(FORGET_AFTER_MS))
            .query_async::<(Vec<String>,)>(&mut conn)
            .await
            .map_err(unavailable)?
            .0;
        if !gone.is_empty() {
            redis::pipe()
                .atomic()
                .hdel(STATS_KEY, &gone)
                .ignore()
                .zrem(SEEN_KEY, &gone)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn read_all(&self) -> Result<Vec<String>, ClusterStatsError> {
        let mut conn = self.broker.store().conn();
        let samples: HashMap<String, String> =
            redis::cmd("HGETALL").arg(STATS_KEY).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(samples.into_values().collect())
    }
}

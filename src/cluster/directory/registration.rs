//! This node's half of the directory in Redis: its open connections in its hash
//! (`sbd:{<node>}:conns`), kept current from a background task, and its heartbeat in the
//! node set.
//!
//! Every scan compares the registry with what was last written (a fingerprint per
//! connection) and writes only the difference, `HSET`/`HDEL` in batches of [`BATCH`] in one
//! pipeline; a client's connect path never waits for Redis. Every `refresh` the hash's TTL
//! is renewed and its length checked; a failed write or a hash that does not hold what
//! was written (Redis restarted, or expired it while unreachable) makes the next scan
//! rebuild the whole hash under another key and `RENAME` it over the old one, so readers
//! never see it half-written. A crashed node stops renewing: its hash expires after
//! `ttl`. It must never touch two hash tags in one command or pipeline.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redis::RedisResult;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::wire::{Entry, NODES_KEY, fingerprint, node_key, rebuild_key};
use crate::domain::{ConnectionId, unix_millis};

/// Fields per `HSET` / `HDEL` command.
pub const BATCH: usize = 500;

/// Deregistering at shutdown gives up after this (the TTL cleans up anyway).
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the registration until `stop`, then removes this node's entries.
pub(super) async fn run(shared: &Shared, stop: CancellationToken) {
    let mut registration = Registration::new(shared);
    let mut tick = tokio::time::interval(shared.options.scan);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => registration.tick().await,
        }
    }
    registration.deregister().await;
}

/// What was last written for one connection.
struct Synced {
    /// [`fingerprint`] of the entry.
    print: u64,
    /// The last scan that saw it open.
    seen: u64,
}

struct Registration<'a> {
    shared: &'a Shared,
    key: String,
    /// Connection id → the entry last written (changed in place by each scan, so a scan
    /// allocates nothing for a connection that did not change).
    synced: HashMap<ConnectionId, Synced>,
    /// The current scan's number, marking the connections it saw.
    scan: u64,
    /// Write the whole hash anew at the next scan.
    rebuild: bool,
    last_refresh: Option<Instant>,
    /// The last write failed (logged once until it works again).
    failing: bool,
}

impl<'a> Registration<'a> {
    fn new(shared: &'a Shared) -> Self {
        let key = node_key(&shared.node);
        Self { shared, key, synced: HashMap::new(), scan: 0, rebuild: true, last_refresh: None, failing: false }
    }

    async fn tick(&mut self) {
        let result = self.sync().await;
        let result = match result {
            Ok(()) if self.last_refresh.is_none_or(|at| at.elapsed() >= self.shared.options.refresh) => {
                self.refresh().await
            }
            other => other,
        };
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(node = %self.shared.node, connections = self.synced.len(), "connection directory: registered in Redis again");
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(node = %self.shared.node, error = %e, "connection directory: cannot register this node's connections in Redis; retrying");
                }
                self.failing = true;
                self.rebuild = true;
            }
        }
    }

    /// Writes what changed since the last scan (everything, when rebuilding). `synced`
    /// is updated before the write: a failed write makes the next scan rebuild anyway.
    async fn sync(&mut self) -> RedisResult<()> {
        let node = &self.shared.node;
        self.scan += 1;
        let (scan, rebuild, synced) = (self.scan, self.rebuild, &mut self.synced);
        let mut writes: Vec<(String, String)> = Vec::new();
        self.shared.connections.for_each(|conn| {
            if conn.is_closing() {
                return;
            }
            let print = fingerprint(conn);
            let changed = match synced.get_mut(&conn.id) {
                Some(entry) => {
                    entry.seen = scan;
                    std::mem::replace(&mut entry.print, print) != print
                }
                None => {
                    synced.insert(conn.id.clone(), Synced { print, seen: scan });
                    true
                }
            };
            if (changed || rebuild)
                && let Ok(json) = serde_json::to_string(&Entry::of_handle(node, conn))
            {
                writes.push((conn.id.as_str().to_owned(), json));
            }
        });
        let mut removed: Vec<ConnectionId> = Vec::new();
        synced.retain(|id, entry| {
            let open = entry.seen == scan;
            if !open && !rebuild {
                removed.push(id.clone());
            }
            open
        });
        let ttl = millis(self.shared.options.ttl);
        let mut pipe = redis::pipe();
        if self.rebuild {
            if writes.is_empty() {
                pipe.cmd("DEL").arg(&self.key).ignore();
            } else {
                let staging = rebuild_key(node);
                pipe.cmd("DEL").arg(&staging).ignore();
                for batch in writes.chunks(BATCH) {
                    pipe.cmd("HSET").arg(&staging).arg(batch).ignore();
                }
                pipe.cmd("PEXPIRE").arg(&staging).arg(ttl).ignore();
                pipe.cmd("RENAME").arg(&staging).arg(&self.key).ignore();
            }
        } else {
            let removed: Vec<&str> = removed.iter().map(ConnectionId::as_str).collect();
            if writes.is_empty() && removed.is_empty() {
                return Ok(());
            }
            for batch in writes.chunks(BATCH) {
                pipe.cmd("HSET").arg(&self.key).arg(batch).ignore();
            }
            for batch in removed.chunks(BATCH) {
                pipe.cmd("HDEL").arg(&self.key).arg(batch).ignore();
            }
            pipe.cmd("PEXPIRE").arg(&self.key).arg(ttl).ignore();
        }
        let mut conn = self.shared.broker.store().conn();
        pipe.query_async::<()>(&mut conn).await?;
        if std::mem::replace(&mut self.rebuild, false) {
            // Announce the node at once (the first scan, or back after a failure).
            self.last_refresh = None;
        }
        Ok(())
    }

    /// Renews the hash's TTL and the node's heartbeat; schedules a rebuild when the hash
    /// does not hold what was written.
    async fn refresh(&mut self) -> RedisResult<()> {
        let ttl = self.shared.options.ttl;
        let now = unix_millis(SystemTime::now());
        // Members silent for three TTLs are gone (their hashes expired long ago); the
        // margin covers clocks that disagree between nodes.
        let stale = now.saturating_sub(i64::try_from(3 * millis(ttl)).unwrap_or(i64::MAX));
        let (mut hash_conn, mut nodes_conn) = (self.shared.broker.store().conn(), self.shared.broker.store().conn());
        let mut hash = redis::pipe();
        hash.cmd("PEXPIRE").arg(&self.key).arg(millis(ttl)).ignore().cmd("HLEN").arg(&self.key);
        let mut nodes = redis::pipe();
        nodes.cmd("ZADD").arg(NODES_KEY).arg(now).arg(&self.shared.node).ignore();
        nodes.cmd("ZREMRANGEBYSCORE").arg(NODES_KEY).arg("-inf").arg(format!("({stale}")).ignore();
        let (len, ()) =
            tokio::try_join!(hash.query_async::<(usize,)>(&mut hash_conn), nodes.query_async::<()>(&mut nodes_conn))?;
        if len.0 != self.synced.len() {
            tracing::info!(node = %self.shared.node, in_redis = len.0, open = self.synced.len(), "connection directory: this node's hash lost entries; rewriting it");
            self.rebuild = true;
        }
        self.last_refresh = Some(Instant::now());
        Ok(())
    }

    /// Removes this node's hash and heartbeat (a clean shutdown: its connections are
    /// closing, so other nodes must no longer find them).
    async fn deregister(&self) {
        let mut conn = self.shared.broker.store().conn();
        let mut nodes_conn = conn.clone();
        let (mut del, mut zrem) = (redis::cmd("DEL"), redis::cmd("ZREM"));
        del.arg(&self.key);
        zrem.arg(NODES_KEY).arg(&self.shared.node);
        let both =
            async { tokio::try_join!(del.query_async::<()>(&mut conn), zrem.query_async::<()>(&mut nodes_conn)) };
        match tokio::time::timeout(DEREGISTER_TIMEOUT, both).await {
            Ok(Ok(_)) => tracing::debug!(node = %self.shared.node, "connection directory: deregistered"),
            Ok(Err(e)) => {
                tracing::debug!(node = %self.shared.node, error = %e, "connection directory: deregistering failed; the TTL will")
            }
            Err(_) => {
                tracing::debug!(node = %self.shared.node, "connection directory: deregistering timed out; the TTL will")
            }
        }
    }
}

/// `duration` in whole milliseconds, at least 1 (Redis refuses a zero expiry).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

//! The embedded single-node broker: offsets, history and retained state in process memory.
//!
//! One lock per topic makes "assign offset + encode + append to history + hand to fan-out"
//! atomic, so local delivery is in offset order and a read of history (a resume) sees
//! exactly the events delivered before it. Each topic's stream draws its epoch when it is
//! created: after a restart, or after an idle topic was forgotten, offsets restart and the
//! new epoch tells resuming clients so. All history together is bounded in bytes; beyond
//! the bound the oldest events across all topics are evicted first (`eviction`). It keeps
//! the no-op `watch`/`unwatch` of the trait: every publish reaches the local fan-out anyway.
//!
//! It must never await while a stream is locked, and never lock a stream while holding
//! the eviction queue.

mod eviction;
mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use self::eviction::Eviction;
use self::stream::Stream;
use super::{Broker, BrokerError, BrokerStatus, Delivery, Fanout, HistoryLimits, ReadRequest, TopicRead};
use crate::codec::encode_delivery;
use crate::domain::{Event, StreamPosition, Topic};

/// How often [`MemoryBroker::sweep`] should run: the delay before expired history frees
/// its memory (reads never return expired events, whenever the sweep runs).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Queued eviction tickets tolerated beyond twice the live events before the sweeper
/// drops the stale ones.
const STALE_TICKET_SLACK: usize = 4096;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Topics forgotten (no history, no retained state, no local subscriber).
    pub topics_removed: usize,
    /// Topics left.
    pub topics: usize,
    /// Events left in history.
    pub events: usize,
    /// Bytes accounted to history and retained state.
    pub bytes: usize,
}

/// In-process broker.
pub struct MemoryBroker {
    streams: DashMap<Topic, Arc<Mutex<Stream>>>,
    limits: HistoryLimits,
    eviction: Eviction,
    fanout: Arc<dyn Fanout>,
    /// Origin of the broker's clock (tokio's, so tests can pause and advance time).
    started: tokio::time::Instant,
}

impl MemoryBroker {
    /// A broker delivering into `fanout`, keeping history within `limits`.
    pub fn new(fanout: Arc<dyn Fanout>, limits: HistoryLimits) -> Self {
        Self {
            streams: DashMap::new(),
            eviction: Eviction::new(limits.max_bytes),
            limits,
            fanout,
            started: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The topic's stream, created on first use.
    fn stream(&self, topic: &Topic) -> Arc<Mutex<Stream>> {
        if let Some(stream) = self.streams.get(topic) {
            return stream.value().clone();
        }
        self.streams
            .entry(topic.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Stream::new(self.limits.policy(topic)))))
            .value()
            .clone()
    }

    /// Runs `f` on the topic's live stream, under its lock. A stream the sweeper removed
    /// between the lookup and the lock is looked up again (a new one is created).
    fn with_stream<R>(&self, topic: &Topic, mut f: impl FnMut(&Arc<Mutex<Stream>>, &mut Stream) -> R) -> R {
        loop {
            let cell = self.stream(topic);
            let mut stream = cell.lock();
            if !stream.removed {
                return f(&cell, &mut stream);
            }
        }
    }

    /// Bytes accounted to history and retained state.
    pub fn stored_bytes(&self) -> usize {
        self.eviction.bytes()
    }

    /// Drops expired history and retained state, forgets topics with nothing left and no
    /// local subscriber, and drops stale eviction tickets. Run it every [`SWEEP_INTERVAL`].
    pub fn sweep(&self) -> SweepReport {
        let now = self.now_ms();
        let mut report = SweepReport::default();
        let mut idle = Vec::new();
        for entry in &self.streams {
            let mut stream = entry.value().lock();
            let freed = stream.expire(now);
            self.eviction.account(0, freed);
            report.events += stream.history_len();
            if stream.is_empty() {
                idle.push(entry.key().clone());
            }
        }
        for topic in idle {
            // The map's shard lock is held while checking, so no publisher can look the
            // stream up in between; one that looked it up before sees `removed` and retries.
            let removed = self.streams.remove_if(&topic, |topic, cell| {
                let mut stream = cell.lock();
                let forget = stream.is_empty() && !self.fanout.is_watched(topic);
                stream.removed = forget;
                forget
            });
            report.topics_removed += usize::from(removed.is_some());
        }
        if self.eviction.tickets() > 2 * report.events + STALE_TICKET_SLACK {
            self.eviction.compact();
        }
        report.topics = self.streams.len();
        report.bytes = self.eviction.bytes();
        report
    }

    /// Runs [`MemoryBroker::sweep`] every [`SWEEP_INTERVAL`] until `stop` is cancelled.
    pub async fn run_sweeper(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    let broker = self.clone();
                    // A sweep of many topics takes milliseconds; keep it off the I/O workers.
                    let _ = tokio::task::spawn_blocking(move || broker.sweep()).await;
                }
            }
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn status(&self) -> BrokerStatus {
        BrokerStatus { kind: "memory", reachable: true, ..BrokerStatus::default() }
    }

    async fn publish(&self, topic: &Topic, event: Event, retain: bool) -> Result<StreamPosition, BrokerError> {
        let published_at = Instant::now();
        let now = self.now_ms();
        let position = self.with_stream(topic, |cell, stream| {
            let position = stream.next_position();
            let frame = encode_delivery(&event, topic, &position);
            let (mut added, mut freed, stored) = stream.append(position.offset, &frame, now);
            if stored {
                self.eviction.push(cell, position.offset);
            }
            if retain {
                let (a, f) = stream.retain(&frame, now);
                added += a;
                freed += f;
            }
            self.eviction.account(added, freed);
            self.fanout.deliver(&Delivery { topic, position: &position, frame: &frame, event: &event, published_at });
            position
        });
        if self.eviction.over_limit() {
            self.eviction.evict();
        }
        Ok(position)
    }

    async fn read(&self, topic: &Topic, request: ReadRequest) -> Result<TopicRead, BrokerError> {
        let now = self.now_ms();
        Ok(self.with_stream(topic, |_, stream| {
            let freed = stream.expire(now);
            self.eviction.account(0, freed);
            stream.read(&request)
        }))
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! Topic registry: subscribers per topic and ordered local fan-out.
//!
//! Sharded map from topic to entry; each entry has its own lock, taken briefly by
//! delivery (one encode per publish happened before; here only `try_send`s) and by
//! subscribe/unsubscribe. The map's shard lock is never held while an entry lock is
//! taken on the delivery path, and never across an await.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;

use super::{ConnectionHandle, FrameText, OutboundFrame};
use crate::broker::{Broker, BrokerError, Fanout};
use crate::domain::{StreamPosition, Topic};
use crate::metrics::Metrics;

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already holds the maximum number of topics.
    #[error("subscription limit reached ({0} topics per connection)")]
    TooMany(usize),
    /// The broker could not tell the topic's position.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

struct Subscriber {
    conn: Arc<ConnectionHandle>,
    /// Events at or below this offset were already counted in the `subscribed` reply.
    after_offset: u64,
}

#[derive(Default)]
struct TopicInner {
    /// The last position delivered through this entry (or read from the broker at join).
    last: Option<StreamPosition>,
    subscribers: Vec<Subscriber>,
}

#[derive(Default)]
struct TopicEntry {
    inner: Mutex<TopicInner>,
    /// Subscribes under way; an entry with joiners is never removed.
    joining: AtomicUsize,
}

/// All topics with local subscribers.
pub struct TopicRegistry {
    topics: DashMap<Topic, Arc<TopicEntry>>,
    max_subscriptions: usize,
    metrics: Metrics,
}

impl TopicRegistry {
    /// An empty registry; each connection may hold at most `max_subscriptions` topics.
    pub fn new(max_subscriptions: usize, metrics: Metrics) -> Self {
        Self { topics: DashMap::new(), max_subscriptions, metrics }
    }

    /// Number of local subscribers of `topic`.
    pub fn subscriber_count(&self, topic: &Topic) -> usize {
        self.topics.get(topic).map(|e| e.value().clone()).map_or(0, |e| e.inner.lock().subscribers.len())
    }

    pub(super) async fn subscribe(
        &self,
        broker: &dyn Broker,
        conn: &Arc<ConnectionHandle>,
        topic: &Topic,
        reply: Option<&(dyn Fn(&StreamPosition) -> FrameText + Sync)>,
    ) -> Result<StreamPosition, SubscribeError> {
        // Subscribes of one connection run one at a time (its reader), so `holds` is exact.
        let already = conn.holds(topic);
        if !already && conn.topic_count() >= self.max_subscriptions {
            return Err(SubscribeError::TooMany(self.max_subscriptions));
        }
        // Join first, then ask the broker: every event assigned after that answer is
        // delivered through this entry, so taking max(answer, last delivered) as the start
        // leaves no gap and no duplicate.
        let entry = {
            let e = self.topics.entry(topic.clone()).or_default();
            e.joining.fetch_add(1, Ordering::AcqRel);
            e.value().clone()
        };
        let position = broker.position(topic).await;
        entry.joining.fetch_sub(1, Ordering::AcqRel);
        let position = match position {
            Ok(p) => p,
            Err(e) => {
                self.remove_if_idle(topic, &entry);
                return Err(e.into());
            }
        };
        let start = {
            let mut inner = entry.inner.lock();
            let start = match inner.last.take() {
                Some(last) if last.epoch == position.epoch && last.offset > position.offset => last,
                _ => position,
            };
            inner.last = Some(start.clone());
            if !already {
                inner.subscribers.push(Subscriber { conn: conn.clone(), after_offset: start.offset });
            }
            if let Some(reply) = reply {
                conn.send(reply(&start));
            }
            start
        };
        if conn.add_topic(topic) {
            self.metrics.subscriptions.increment(1.0);
        }
        Ok(start)
    }

    pub(super) fn unsubscribe(&self, conn: &Arc<ConnectionHandle>, topic: &Topic) -> bool {
        if !conn.remove_topic(topic) {
            return false;
        }
        self.leave(conn, topic);
        true
    }

    /// Removes `conn` from every topic it holds (on disconnect).
    pub fn detach(&self, conn: &Arc<ConnectionHandle>) {
        for topic in conn.take_topics() {
            self.leave(conn, &topic);
        }
    }

    fn leave(&self, conn: &Arc<ConnectionHandle>, topic: &Topic) {
        self.metrics.subscriptions.decrement(1.0);
        let Some(entry) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return;
        };
        let now_empty = {
            let mut inner = entry.inner.lock();
            if let Some(i) = inner.subscribers.iter().position(|s| Arc::ptr_eq(&s.conn, conn)) {
                inner.subscribers.swap_remove(i);
            }
            inner.subscribers.is_empty()
        };
        if now_empty {
            self.remove_if_idle(topic, &entry);
        }
    }

    fn remove_if_idle(&self, topic: &Topic, entry: &Arc<TopicEntry>) {
        // Under the shard's write lock no subscribe can start joining this entry.
        self.topics.remove_if(topic, |_, e| {
            Arc::ptr_eq(e, entry) && e.joining.load(Ordering::Acquire) == 0 && e.inner.lock().subscribers.is_empty()
        });
    }
}

impl Fanout for TopicRegistry {
    fn deliver(&self, topic: &Topic, position: &StreamPosition, frame: &FrameText, published_at: Instant) {
        let Some(entry) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return;
        };
        let mut inner = entry.inner.lock();
        match &mut inner.last {
            Some(last) if last.epoch == position.epoch => last.offset = last.offset.max(position.offset),
            last => *last = Some(position.clone()),
        }
        let frame = Arc::new(OutboundFrame { text: frame.clone(), published_at: Some(published_at) });
        for sub in &inner.subscribers {
            if position.offset > sub.after_offset {
                sub.conn.send_shared(&frame);
            }
        }
    }
}

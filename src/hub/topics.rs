//! Topic registry: subscribers per topic and ordered local fan-out.
//!
//! Sharded map from topic to entry; each entry has its own lock, taken briefly by
//! delivery (one encode per publish happened before; here only filter checks and queue
//! pushes) and by subscribe/unsubscribe. The map's shard lock is never held while an entry
//! lock is taken on the delivery path, and never across an await.
//!
//! Subscribing is a join, a read, and a switch-over. The connection first joins the
//! entry as a *joiner*: every event delivered from then on is buffered for it. Then the
//! broker is read (position, history after `since`, retained state) without any lock
//! held. Finally, under the entry lock, the connection gets the `subscribed` reply, the
//! replay (or the retained state), and the buffered events newer than the read, and
//! becomes a subscriber. Every event is thus either in the read or in the buffer, and the
//! overlap is dropped by offset: no gap and no duplicate at the seam, whatever publishes
//! run concurrently.
//!
//! The registry also tells the broker which topics this node holds: the first joiner of a
//! topic's entry awaits `Broker::watch` before its read (later joiners wait for that same
//! watch), and removing the entry calls `Broker::unwatch`. Each entry remembers the last
//! offset it delivered and drops anything not above it, so a repeated or late hand-over
//! from the broker never reaches a subscriber twice or out of order.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::{CloseReason, ConnectionHandle, OutboundFrame, SharedFrame};
use crate::broker::{Broker, BrokerError, Delivery, Fanout, ReadFrom, ReadRequest};
use crate::codec::{FrameText, PresenceChange, mark_retained, presence_change};
pub use crate::domain::Presence;
use crate::domain::{Epoch, Filter, PresenceMember, StreamPosition, Topic};
use crate::metrics::Metrics;

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already holds the maximum number of topics.
    #[error("subscription limit reached ({0} topics per connection)")]
    TooMany(usize),
    /// The broker could not be read.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Queues the answer to a subscribe (e.g. `subscribed`, encoded for the connection's wire),
/// called at the switch to live delivery, before any replayed or live event.
pub type SubscribeReply<'a> = &'a (dyn Fn(&ConnectionHandle, &Subscribed) + Sync);

/// What a subscribe asks for beyond the topic.
#[derive(Debug, Default, Clone)]
pub struct SubscribeOptions {
    /// Resume after this offset of this epoch.
    pub since: Option<(u64, Epoch)>,
    /// Deliver only the events that pass.
    pub filter: Option<Arc<Filter>>,
}

/// How a subscribe went, for the `subscribed` reply.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The topic's last offset when the subscription took effect: live events follow it.
    pub position: StreamPosition,
    /// Every event after `since` was replayed (false without `since`).
    pub recovered: bool,
}

struct Subscriber {
    conn: Arc<ConnectionHandle>,
    /// Events at or below this offset reached the connection through its subscribe.
    after_offset: u64,
    filter: Option<Arc<Filter>>,
}

struct Joiner {
    conn: Arc<ConnectionHandle>,
    filter: Option<Arc<Filter>>,
    /// Events delivered while the joiner reads the broker, with their offsets.
    buffered: Vec<(u64, SharedFrame)>,
}

#[derive(Default)]
struct TopicInner {
    subscribers: Vec<Subscriber>,
    joiners: Vec<Joiner>,
    /// The highest offset delivered to this entry: an event at or below it was already
    /// handed to every subscriber that should have it, so it is dropped.
    last_offset: u64,
}

#[derive(Default)]
struct TopicEntry {
    inner: Mutex<TopicInner>,
    /// Set once the broker confirmed `watch` for this entry. Joiners that arrive while the
    /// first one's watch is in flight wait for it here; after a failed watch the next
    /// joiner tries again. An entry is removed (and unwatched) only when idle.
    watched: tokio::sync::OnceCell<()>,
}

/// All topics with local subscribers.
pub struct TopicRegistry {
    topics: DashMap<Topic, Arc<TopicEntry>>,
    max_subscriptions: usize,
    metrics: Metrics,
    /// Namespaces whose subscribers get `join`/`leave` frames.
    join_leave: HashSet<String>,
}

impl TopicRegistry {
    /// An empty registry; each connection may hold at most `max_subscriptions` topics.
    pub fn new(max_subscriptions: usize, metrics: Metrics) -> Self {
        Self { topics: DashMap::new(), max_subscriptions, metrics, join_leave: HashSet::new() }
    }

    /// Announces subscribes and leaves (`join`/`leave` frames) to the subscribers of the
    /// topics of these namespaces.
    pub fn with_join_leave(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.join_leave = namespaces.into_iter().collect();
        self
    }

    /// The connections subscribed to `topic` on this node, and their distinct users.
    /// Joiners still reading the broker are not counted yet.
    pub fn presence(&self, topic: &Topic) -> Presence {
        let Some(entry) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return Presence::default();
        };
        let inner = entry.inner.lock();
        let users: BTreeSet<&str> = inner.subscribers.iter().map(|s| s.conn.user.as_str()).collect();
        Presence { users: users.into_iter().map(str::to_owned).collect(), connections: inner.subscribers.len() }
    }

    /// Records a join or leave of `conn` with the broker (cluster-wide presence) and sends
    /// the `join`/`leave` frame to every subscriber of the entry, when the namespace asks
    /// (under the entry's lock, so the frame keeps its place among the topic's events).
    fn announce(
        &self,
        broker: &dyn Broker,
        inner: &TopicInner,
        topic: &Topic,
        conn: &ConnectionHandle,
        change: PresenceChange,
    ) {
        let announce = self.join_leave.contains(topic.namespace());
        let member = PresenceMember { connection_id: conn.id.as_str(), user: conn.user.as_str(), announce };
        match change {
            PresenceChange::Join => broker.joined(topic, &member),
            PresenceChange::Leave => broker.left(topic, &member),
        }
        if !announce || inner.subscribers.is_empty() {
            return;
        }
        let frame =
            Arc::new(OutboundFrame::new(presence_change(change, topic, conn.user.as_str(), conn.id.as_str()), None));
        for sub in &inner.subscribers {
            sub.conn.send_shared(&frame);
        }
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
        options: SubscribeOptions,
        reply: Option<SubscribeReply<'_>>,
    ) -> Result<Subscribed, SubscribeError> {
        // Subscribes of one connection run one at a time (its reader), so `holds` is exact.
        if conn.holds(topic) {
            return self.resubscribe(broker, conn, topic, options, reply).await;
        }
        if conn.topic_count() >= self.max_subscriptions {
            return Err(SubscribeError::TooMany(self.max_subscriptions));
        }
        let entry = {
            // Joining under the shard's write lock: the entry cannot be removed in between.
            let e = self.topics.entry(topic.clone()).or_default();
            let joiner = Joiner { conn: conn.clone(), filter: options.filter.clone(), buffered: Vec::new() };
            e.inner.lock().joiners.push(joiner);
            e.value().clone()
        };
        // Interest before the read: from here on every event of the topic reaches `deliver`
        // and is buffered for this joiner, so none can fall between the read and the buffer.
        if let Err(e) = entry.watched.get_or_try_init(|| broker.watch(topic)).await {
            let mut inner = entry.inner.lock();
            if let Some(i) = inner.joiners.iter().position(|j| Arc::ptr_eq(&j.conn, conn)) {
                inner.joiners.swap_remove(i);
            }
            drop(inner);
            self.remove_if_idle(broker, topic, &entry);
            return Err(e.into());
        }
        let from = match &options.since {
            Some((offset, epoch)) => ReadFrom::After { offset: *offset, epoch: Some(epoch.clone()) },
            None => ReadFrom::Nothing,
        };
        let request = ReadRequest { from, limit: usize::MAX, partial: false, retained: true };
        let read = broker.read(topic, request).await;
        let mut inner = entry.inner.lock();
        let joiner =
            inner.joiners.iter().position(|j| Arc::ptr_eq(&j.conn, conn)).map(|i| inner.joiners.swap_remove(i));
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                drop(inner);
                self.remove_if_idle(broker, topic, &entry);
                return Err(e.into());
            }
        };
        let subscribed = Subscribed { position: read.position.clone(), recovered: read.recovered };
        conn.on_subscribed(topic, read.position.epoch.as_str(), read.position.offset);
        if let Some(reply) = reply {
            reply(conn, &subscribed);
        }
        let filter = options.filter;
        let passes = |frame: &FrameText| filter.as_deref().is_none_or(|f| stored_frame_passes(f, frame));
        if read.recovered {
            for event in read.events.into_iter().filter(|e| passes(&e.frame)) {
                conn.send_shared(&Arc::new(OutboundFrame::event(event.frame, None, topic, event.offset)));
            }
        } else if let Some(state) = read.retained.filter(|s| passes(s)) {
            conn.send(mark_retained(&state));
        }
        let mut after_offset = read.position.offset;
        for (offset, frame) in joiner.map(|j| j.buffered).unwrap_or_default() {
            if offset > read.position.offset {
                conn.send_shared(&frame);
                after_offset = offset;
            }
        }
        inner.subscribers.push(Subscriber { conn: conn.clone(), after_offset, filter });
        self.announce(broker, &inner, topic, conn, PresenceChange::Join);
        drop(inner);
        if conn.add_topic(topic) {
            self.metrics.subscriptions.increment(1.0);
        }
        Ok(subscribed)
    }

    /// A subscribe to a topic the connection already holds: it keeps receiving, takes the
    /// new filter, and gets `subscribed` again. Nothing is replayed (nothing was missed).
    async fn resubscribe(
        &self,
        broker: &dyn Broker,
        conn: &Arc<ConnectionHandle>,
        topic: &Topic,
        options: SubscribeOptions,
        reply: Option<SubscribeReply<'_>>,
    ) -> Result<Subscribed, SubscribeError> {
        let position = broker.position(topic).await?;
        let recovered = options.since.as_ref().is_some_and(|(_, epoch)| *epoch == position.epoch);
        let subscribed = Subscribed { position, recovered };
        let entry = self.topics.get(topic).map(|e| e.value().clone());
        // The reply is queued under the entry lock (when there is one), so it cannot
        // overtake an event already queued for this connection.
        let mut inner = entry.as_ref().map(|e| e.inner.lock());
        if let Some(sub) = inner.as_mut().and_then(|i| i.subscribers.iter_mut().find(|s| Arc::ptr_eq(&s.conn, conn))) {
            sub.filter = options.filter;
        }
        if let Some(reply) = reply {
            reply(conn, &subscribed);
        }
        drop(inner);
        Ok(subscribed)
    }

    pub(super) fn unsubscribe(&self, broker: &dyn Broker, conn: &Arc<ConnectionHandle>, topic: &Topic) -> bool {
        if !conn.remove_topic(topic) {
            return false;
        }
        conn.on_unsubscribed(topic);
        self.leave(broker, conn, topic);
        true
    }

    /// Removes `conn` from every topic it holds (on disconnect).
    pub(super) fn detach(&self, broker: &dyn Broker, conn: &Arc<ConnectionHandle>) {
        for topic in conn.take_topics() {
            self.leave(broker, conn, &topic);
        }
    }

    fn leave(&self, broker: &dyn Broker, conn: &Arc<ConnectionHandle>, topic: &Topic) {
        self.metrics.subscriptions.decrement(1.0);
        let Some(entry) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return;
        };
        let now_empty = {
            let mut inner = entry.inner.lock();
            if let Some(i) = inner.subscribers.iter().position(|s| Arc::ptr_eq(&s.conn, conn)) {
                inner.subscribers.swap_remove(i);
                self.announce(broker, &inner, topic, conn, PresenceChange::Leave);
            }
            inner.subscribers.is_empty() && inner.joiners.is_empty()
        };
        if now_empty {
            self.remove_if_idle(broker, topic, &entry);
        }
    }

    fn remove_if_idle(&self, broker: &dyn Broker, topic: &Topic, entry: &Arc<TopicEntry>) {
        // Under the shard's write lock no subscribe can start joining this entry, nor create
        // the topic's next entry: so this unwatch is called before that entry's watch.
        self.topics.remove_if(topic, |_, e| {
            let inner = e.inner.lock();
            let idle = Arc::ptr_eq(e, entry) && inner.joiners.is_empty() && inner.subscribers.is_empty();
            if idle && e.watched.initialized() {
                broker.unwatch(topic);
            }
            idle
        });
    }
}

/// Whether a frame from history passes `filter`. History keeps frames, not parsed events,
/// so a replay to a filtered subscriber parses each frame once; live delivery never does.
fn stored_frame_passes(filter: &Filter, frame: &FrameText) -> bool {
    serde_json::from_str::<Map<String, Value>>(frame.as_str()).is_ok_and(|event| filter.matches(&event))
}

impl Fanout for TopicRegistry {
    fn deliver(&self, delivery: &Delivery<'_>) {
        let Some(entry) = self.topics.get(delivery.topic).map(|e| e.value().clone()) else {
            return;
        };
        let offset = delivery.position.offset;
        let event = delivery.event.fields();
        let frame =
            Arc::new(OutboundFrame::event(delivery.frame.clone(), Some(delivery.published_at), delivery.topic, offset));
        let mut inner = entry.inner.lock();
        // An echo, a late or a repeated hand-over: already delivered (or it would arrive out
        // of order). Subscribers also skip what their subscribe's read covered (`after_offset`).
        if offset <= inner.last_offset {
            return;
        }
        inner.last_offset = offset;
        for sub in &inner.subscribers {
            if offset > sub.after_offset && sub.filter.as_deref().is_none_or(|f| f.matches(event)) {
                sub.conn.send_shared(&frame);
            }
        }
        for joiner in &mut inner.joiners {
            if joiner.filter.as_deref().is_none_or(|f| f.matches(event)) {
                joiner.buffered.push((offset, frame.clone()));
            }
        }
    }

    fn is_watched(&self, topic: &Topic) -> bool {
        self.topics.contains_key(topic)
    }

    fn broadcast(&self, topic: &Topic, frame: &FrameText) {
        let Some(entry) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return;
        };
        let frame = Arc::new(OutboundFrame::new(frame.clone(), None));
        for sub in &entry.inner.lock().subscribers {
            sub.conn.send_shared(&frame);
        }
    }

    fn resync(&self, topic: &Topic) {
        let Some(entry) = self.topics.get(topic).map(|e| e.value().clone()) else {
            return;
        };
        let mut inner = entry.inner.lock();
        inner.last_offset = 0;
        // They stay listed until their connection detaches (the normal leave), but get
        // nothing more: what follows belongs to a sequence they must resume into.
        for sub in &mut inner.subscribers {
            sub.after_offset = u64::MAX;
            sub.conn.close(CloseReason::Resync);
        }
        for joiner in &mut inner.joiners {
            joiner.buffered.clear();
            joiner.conn.close(CloseReason::Resync);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The switch-over, with the broker's read held open while events are delivered, so
    //! the buffered window is exercised deterministically (a real memory broker answers
    //! too fast to hit it reliably).

    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::time::Instant;

    use async_trait::async_trait;
    use futures_util::FutureExt;
    use serde_json::json;
    use tokio::sync::Notify;

    use super::*;
    use crate::broker::{StoredEvent, TopicRead};
    use crate::domain::{ConnectionId, Event, UserId};
    use crate::hub::QueueLimits;

    /// A broker whose reads wait for `release` and then answer `answer`.
    struct GatedBroker {
        release: Notify,
        answer: TopicRead,
    }

    #[async_trait]
    impl Broker for GatedBroker {
        async fn publish(&self, _: &Topic, _: Event, _: bool) -> Result<StreamPosition, BrokerError> {
            Err(BrokerError::Unavailable("not used".into()))
        }
        async fn read(&self, _: &Topic, _: ReadRequest) -> Result<TopicRead, BrokerError> {
            self.release.notified().await;
            Ok(self.answer.clone())
        }
        async fn ping(&self) -> Result<(), BrokerError> {
            Ok(())
        }
    }

    fn frame(offset: u64) -> FrameText {
        FrameText::from(format!("{{\"offset\":{offset},\"n\":{}}}", offset % 2))
    }

    fn deliver(registry: &TopicRegistry, topic: &Topic, epoch: &Epoch, offset: u64) {
        let position = StreamPosition { offset, epoch: epoch.clone() };
        let event = Event::from_value(json!({"type": "t", "n": offset % 2})).unwrap();
        let frame = frame(offset);
        registry.deliver(&Delivery {
            topic,
            position: &position,
            frame: &frame,
            event: &event,
            published_at: Instant::now(),
        });
    }

    fn queued(conn: &ConnectionHandle) -> Vec<String> {
        let mut batch = VecDeque::new();
        let _ = conn.next_outbound(&mut batch).now_or_never();
        batch.drain(..).map(|f| f.text.to_string()).collect()
    }

    async fn subscribe_while_delivering(filter: Option<Filter>, recovered: bool) -> Vec<String> {
        let registry = Arc::new(TopicRegistry::new(10, Metrics::new()));
        let topic = Topic::parse("job:seam").unwrap();
        let epoch = Epoch::new("e");
        // The broker's answer: position 5, history 3..=5 (the client has up to 2).
        let events = (3..=5).map(|offset| StoredEvent { offset, frame: frame(offset) }).collect();
        let answer = TopicRead {
            position: StreamPosition { offset: 5, epoch: epoch.clone() },
            events,
            recovered,
            retained: Some(FrameText::from("{\"offset\":5,\"n\":1}")),
        };
        let broker = Arc::new(GatedBroker { release: Notify::new(), answer });
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let limits = QueueLimits { frames: 100, bytes: 1 << 20 };
        let conn =
            Arc::new(ConnectionHandle::new(ConnectionId::generate(), UserId::new("u"), remote, limits, Metrics::new()));
        let options = SubscribeOptions { since: Some((2, epoch.clone())), filter: filter.map(Arc::new) };
        let task = {
            let (registry, broker, conn, topic) = (registry.clone(), broker.clone(), conn.clone(), topic.clone());
            tokio::spawn(async move {
                let reply = |c: &ConnectionHandle, s: &Subscribed| {
                    c.send(FrameText::from(format!("subscribed {} {}", s.position.offset, s.recovered)));
                };
                registry.subscribe(broker.as_ref(), &conn, &topic, options, Some(&reply)).await.map(|_| ())
            })
        };
        while !registry.is_watched(&topic) {
            tokio::task::yield_now().await;
        }
        // Published while the subscriber reads: 4 and 5 are in the read too, 6 is not.
        for offset in 4..=6 {
            deliver(&registry, &topic, &epoch, offset);
        }
        broker.release.notify_one();
        assert!(task.await.unwrap().is_ok());
        deliver(&registry, &topic, &epoch, 7);
        queued(&conn)
    }

    #[tokio::test]
    async fn events_delivered_during_the_read_follow_the_replay_without_duplicates() {
        let frames = subscribe_while_delivering(None, true).await;
        let expected =
            ["subscribed 5 true", "{\"offset\":3,\"n\":1}", "{\"offset\":4,\"n\":0}", "{\"offset\":5,\"n\":1}"]
                .into_iter()
                .map(String::from)
                .chain([frame(6).to_string(), frame(7).to_string()])
                .collect::<Vec<_>>();
        assert_eq!(frames, expected);
    }

    #[tokio::test]
    async fn an_unrecovered_subscribe_gets_the_retained_state_then_the_buffered_events() {
        let frames = subscribe_while_delivering(None, false).await;
        assert_eq!(
            frames,
            [
                "subscribed 5 false",
                "{\"offset\":5,\"n\":1,\"retained\":true}",
                "{\"offset\":6,\"n\":0}",
                "{\"offset\":7,\"n\":1}"
            ]
        );
    }

    #[tokio::test]
    async fn filters_apply_to_replay_buffer_and_live_events() {
        let only_odd = Filter::parse(&json!({"n": 1})).unwrap();
        let frames = subscribe_while_delivering(Some(only_odd), true).await;
        assert_eq!(
            frames,
            ["subscribed 5 true", "{\"offset\":3,\"n\":1}", "{\"offset\":5,\"n\":1}", "{\"offset\":7,\"n\":1}"]
        );
    }

    /// A broker that logs `watch`, `unwatch` and `read` calls in order; `watch` waits for
    /// `watch_gate` when `gated`, and the next `watch` or `read` fails when asked to.
    #[derive(Default)]
    struct RecordingBroker {
        log: std::sync::Mutex<Vec<&'static str>>,
        gated: std::sync::atomic::AtomicBool,
        watch_gate: Notify,
        fail_watch: std::sync::atomic::AtomicBool,
        fail_read: std::sync::atomic::AtomicBool,
    }

    impl RecordingBroker {
        fn record(&self, what: &'static str) {
            self.log.lock().unwrap().push(what);
        }
        fn take_log(&self) -> Vec<&'static str> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }
    }

    #[async_trait]
    impl Broker for RecordingBroker {
        async fn publish(&self, _: &Topic, _: Event, _: bool) -> Result<StreamPosition, BrokerError> {
            Err(BrokerError::Unavailable("not used".into()))
        }
        async fn read(&self, _: &Topic, _: ReadRequest) -> Result<TopicRead, BrokerError> {
            self.record("read");
            if self.fail_read.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(BrokerError::Unavailable("read failed".into()));
            }
            let position = StreamPosition { offset: 0, epoch: Epoch::new("e") };
            Ok(TopicRead { position, events: Vec::new(), recovered: false, retained: None })
        }
        async fn ping(&self) -> Result<(), BrokerError> {
            Ok(())
        }
        async fn watch(&self, _: &Topic) -> Result<(), BrokerError> {
            self.record("watch");
            if self.gated.load(std::sync::atomic::Ordering::SeqCst) {
                self.watch_gate.notified().await;
            }
            if self.fail_watch.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(BrokerError::Unavailable("watch failed".into()));
            }
            Ok(())
        }
        fn unwatch(&self, _: &Topic) {
            self.record("unwatch");
        }
    }

    fn connection() -> Arc<ConnectionHandle> {
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let limits = QueueLimits { frames: 100, bytes: 1 << 20 };
        Arc::new(ConnectionHandle::new(ConnectionId::generate(), UserId::new("u"), remote, limits, Metrics::new()))
    }

    #[tokio::test]
    async fn the_broker_watches_a_topic_from_its_first_join_to_its_last_leave() {
        let registry = TopicRegistry::new(10, Metrics::new());
        let broker = RecordingBroker::default();
        let topic = Topic::parse("job:interest").unwrap();
        let (a, b) = (connection(), connection());
        registry.subscribe(&broker, &a, &topic, SubscribeOptions::default(), None).await.unwrap();
        // The watch is in place before the history read.
        assert_eq!(broker.take_log(), ["watch", "read"]);
        registry.subscribe(&broker, &b, &topic, SubscribeOptions::default(), None).await.unwrap();
        // A second subscriber, and a resubscribe, change nothing about interest.
        registry.subscribe(&broker, &b, &topic, SubscribeOptions::default(), None).await.unwrap();
        // (The resubscribe reads the position only.)
        assert_eq!(broker.take_log(), ["read", "read"]);
        assert!(registry.unsubscribe(&broker, &a, &topic));
        assert!(!registry.unsubscribe(&broker, &a, &topic));
        assert!(broker.take_log().is_empty());
        registry.detach(&broker, &b);
        assert_eq!(broker.take_log(), ["unwatch"]);
        assert!(!registry.is_watched(&topic));
        // The topic's next first subscriber watches it again.
        registry.subscribe(&broker, &a, &topic, SubscribeOptions::default(), None).await.unwrap();
        assert!(registry.unsubscribe(&broker, &a, &topic));
        assert_eq!(broker.take_log(), ["watch", "read", "unwatch"]);
    }

    #[tokio::test]
    async fn failed_subscribes_leave_interest_balanced() {
        let registry = TopicRegistry::new(10, Metrics::new());
        let broker = RecordingBroker::default();
        let topic = Topic::parse("job:failing").unwrap();
        let conn = connection();
        // A failed watch: no read, nothing to unwatch, and the next subscribe watches again.
        broker.fail_watch.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(registry.subscribe(&broker, &conn, &topic, SubscribeOptions::default(), None).await.is_err());
        assert_eq!(broker.take_log(), ["watch"]);
        assert!(!registry.is_watched(&topic) && !conn.holds(&topic));
        // A failed read after a successful watch: the entry goes and the watch is undone.
        broker.fail_read.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(registry.subscribe(&broker, &conn, &topic, SubscribeOptions::default(), None).await.is_err());
        assert_eq!(broker.take_log(), ["watch", "read", "unwatch"]);
        assert!(!registry.is_watched(&topic) && !conn.holds(&topic));
        registry.subscribe(&broker, &conn, &topic, SubscribeOptions::default(), None).await.unwrap();
        registry.detach(&broker, &conn);
        assert_eq!(broker.take_log(), ["watch", "read", "unwatch"]);
    }

    #[tokio::test]
    async fn a_joiner_waits_for_the_first_joiners_watch_before_it_reads() {
        let registry = Arc::new(TopicRegistry::new(10, Metrics::new()));
        let broker = Arc::new(RecordingBroker::default());
        broker.gated.store(true, std::sync::atomic::Ordering::SeqCst);
        let topic = Topic::parse("job:gated").unwrap();
        let spawn_subscribe = |conn: Arc<ConnectionHandle>| {
            let (registry, broker, topic) = (registry.clone(), broker.clone(), topic.clone());
            tokio::spawn(async move {
                registry.subscribe(broker.as_ref(), &conn, &topic, SubscribeOptions::default(), None).await.map(|_| ())
            })
        };
        let first = spawn_subscribe(connection());
        while broker.log.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let second = spawn_subscribe(connection());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The second joiner neither watches again nor reads while the watch is in flight.
        assert_eq!(broker.take_log(), ["watch"]);
        broker.watch_gate.notify_one();
        assert!(first.await.unwrap().is_ok() && second.await.unwrap().is_ok());
        assert_eq!(broker.take_log(), ["read", "read"]);
    }

    #[tokio::test]
    async fn an_offset_not_above_the_last_delivered_one_is_dropped() {
        let registry = TopicRegistry::new(10, Metrics::new());
        let broker = RecordingBroker::default();
        let topic = Topic::parse("job:echo").unwrap();
        let epoch = Epoch::new("e");
        let conn = connection();
        registry.subscribe(&broker, &conn, &topic, SubscribeOptions::default(), None).await.unwrap();
        // An echo (2 again), a late message (1) and a repeat of the newest (3).
        for offset in [1, 2, 2, 1, 3, 3, 4] {
            deliver(&registry, &topic, &epoch, offset);
        }
        assert_eq!(queued(&conn), [1, 2, 3, 4].map(|o| frame(o).to_string()));
    }
}

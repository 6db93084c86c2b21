//! [`RedisBroker`]: the [`Broker`] of a cluster of gateways sharing one Redis (or Redis
//! Cluster).
//!
//! A publish is one script (see [`super::script`]); its node delivers the returned frame
//! to its own subscribers at once and ignores the echo. Every node SUBSCRIBEs to the
//! topics its clients hold (`subscriber`), and each watched topic goes through a
//! [`Sequencer`], so its events reach the fan-out strictly in offset order whatever path
//! they took. A gap (an event ahead of the next expected one) is given [`GAP_WAIT`] to be
//! filled by pub/sub, then is filled from the topic's stream; after a lost pub/sub
//! connection every watched topic is caught up from its stream. What the stream no longer
//! covers, or an epoch change (Redis lost the topic), closes the topic's local
//! subscribers with `1012`: they resume and are told `recovered: false`, never a silent
//! gap.
//!
//! It must never hold a sequencer's lock across an await, and never deliver outside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::announced::Announced;
use super::conn::Target;
use super::keys::{TopicKeys, node_channel};
use super::presence::PresenceStore;
use super::sequencer::{Arrival, Offer, Sequencer};
use super::subscriber::{self, Command};
use super::{RedisStore, StoreError, StoreOptions};
use crate::broker::{
    Broker, BrokerError, BrokerStatus, Delivery, Fanout, HistoryLimits, ReadFrom, ReadRequest, StoredEvent, TopicRead,
};
use crate::domain::{Epoch, Event, Presence, PresenceMember, StreamPosition, Topic};

/// How long an event held behind a gap waits for pub/sub to bring the missing ones (they
/// are usually already on the wire: another node's publish that ran just before ours)
/// before the gap is read from the stream.
pub const GAP_WAIT: Duration = Duration::from_millis(200);

/// Events per read when a topic is caught up from its stream.
const CATCH_UP_PAGE: usize = 1000;

/// A failed repair read is retried after this (Redis is probably down; the reconnect
/// will catch up anyway).
const REPAIR_RETRY: Duration = Duration::from_millis(500);

/// One topic this node's clients hold.
#[derive(Default)]
pub(super) struct Watched {
    seq: Mutex<Sequencer>,
    /// A repair task runs for it.
    repairing: AtomicBool,
    /// Unwatched: a late repair or presence reconcile must not deliver any more.
    pub removed: AtomicBool,
    /// The other nodes' members announced to this node's subscribers (`join`/`leave`
    /// frames are sent under this lock, so a reconcile and a relay keep their order).
    pub announced: Mutex<Announced>,
}

/// Counters and the last check, shown by `/ready` and `/metrics`.
#[derive(Default)]
pub(super) struct Stats {
    pub reachable: AtomicBool,
    pub round_trip_micros: AtomicU64,
    pub gaps_filled: AtomicU64,
    pub resyncs: AtomicU64,
    pub reconnects: AtomicU64,
    /// Probes published since the last one came back on the node's channel.
    pub unanswered_probes: AtomicU64,
}

/// What the broker and its subscriber task share.
pub(super) struct Shared {
    pub store: RedisStore,
    pub target: Target,
    limits: HistoryLimits,
    pub fanout: Arc<dyn Fanout>,
    pub node_id: String,
    pub node_channel: String,
    pub topics: DashMap<Topic, Arc<Watched>>,
    commands: mpsc::UnboundedSender<Command>,
    pub stats: Stats,
    /// Where messages other nodes send to this node's channel go (the directory).
    inbox: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// Cluster-wide presence.
    pub presence: PresenceStore,
}

/// The Redis broker. Start its subscriber with [`RedisBroker::run`].
pub struct RedisBroker {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl RedisBroker {
    /// A broker on `target`, delivering into `fanout`, keeping history per `limits`.
    /// Connects lazily: a Redis that is down now makes `/ready` fail until it is back.
    /// Presence entries live `presence_ttl` without a refresh.
    pub async fn connect(
        target: Target,
        fanout: Arc<dyn Fanout>,
        limits: HistoryLimits,
        presence_ttl: Duration,
    ) -> Result<Self, StoreError> {
        let store = RedisStore::new(target.commands().await?, StoreOptions::default());
        let node_id = format!("node_{}", Epoch::generate().as_str());
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            store,
            target,
            limits,
            fanout,
            node_channel: node_channel(&node_id),
            node_id,
            topics: DashMap::new(),
            commands,
            stats: Stats::default(),
            inbox: Mutex::new(None),
            presence: PresenceStore::new(presence_ttl),
        };
        Ok(Self { shared: Arc::new(shared), commands: Mutex::new(Some(receiver)) })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// The command connection's store (for the directory and presence).
    pub fn store(&self) -> &RedisStore {
        &self.shared.store
    }

    /// Messages other nodes send to this node (see [`RedisBroker::send_to_node`]); only
    /// the last receiver asked for gets them.
    pub fn node_messages(&self) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.shared.inbox.lock() = Some(tx);
        rx
    }

    /// Sends `payload` to the node `node_id` over its channel (at most once: a node that
    /// is not subscribed, e.g. crashed, never gets it). Returns how many received it.
    pub async fn send_to_node(&self, node_id: &str, payload: &str) -> Result<u64, BrokerError> {
        let mut conn = self.shared.store.conn();
        ::redis::cmd(self.shared.store.publish_command())
            .arg(node_channel(node_id))
            .arg(payload)
            .query_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
    }

    /// Runs the pub/sub subscriber until `stop`: watches and unwatches, messages, the
    /// liveness probe, reconnects and catch-ups. Only the first call does anything.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(commands) = self.commands.lock().take() else { return };
        let presence = self.shared.presence.run(self.shared.clone(), stop.clone());
        tokio::join!(subscriber::run(self.shared.clone(), commands, stop), presence);
    }
}

impl Shared {
    /// Offers one event to `topic`'s sequencer (its lock held); true when it left a gap
    /// to repair.
    fn offer(&self, topic: &Topic, seq: &mut Sequencer, epoch: Epoch, offset: u64, arrival: Arrival) -> bool {
        let fanout = &*self.fanout;
        let mut deliver =
            |epoch: &Epoch, offset: u64, arrival: &Arrival| deliver(fanout, topic, epoch, offset, arrival);
        match seq.offer(epoch, offset, arrival, &mut deliver) {
            Offer::Delivered | Offer::Duplicate => false,
            Offer::Held => true,
            Offer::Overflow => {
                let (epoch, _) = seq.position().unwrap_or((Epoch::new(""), 0));
                let last = seq.set_baseline(epoch.clone(), 0).last().map_or(0, |(_, offset, _)| *offset);
                self.resync(topic, seq, epoch, last, "too many events held behind a gap");
                false
            }
            Offer::EpochChanged(epoch, offset, arrival) => {
                self.resync(topic, seq, epoch.clone(), offset.saturating_sub(1), "the topic's epoch changed");
                self.offer(topic, seq, epoch, offset, arrival)
            }
        }
    }

    /// The topic lost continuity: its local subscribers are closed with 1012 and the
    /// sequence starts again after `offset` in `epoch`.
    fn resync(&self, topic: &Topic, seq: &mut Sequencer, epoch: Epoch, offset: u64, why: &str) {
        tracing::warn!(topic = %topic, epoch = %epoch.as_str(), offset, reason = why, "resynchronising a topic: its subscribers are closed with 1012 and resume");
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        self.fanout.resync(topic);
        // What was held belongs to the sequence left behind, or is covered by the read.
        for (held_epoch, held_offset, arrival) in seq.set_baseline(epoch.clone(), offset) {
            if held_epoch == epoch && held_offset > offset {
                self.offer(topic, seq, held_epoch, held_offset, arrival);
            }
        }
    }

    /// Starts a repair of `topic`'s gap, unless one runs.
    pub fn schedule_repair(self: &Arc<Self>, topic: Topic, watched: Arc<Watched>) {
        if watched.repairing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(GAP_WAIT).await;
            loop {
                if let Err(e) = shared.repair(&topic, &watched, false).await {
                    tracing::debug!(topic = %topic, error = %e, "filling a gap failed; retrying");
                    tokio::time::sleep(REPAIR_RETRY).await;
                    continue;
                }
                watched.repairing.store(false, Ordering::Release);
                let gap = watched.seq.lock().gap().is_some();
                if !gap || watched.removed.load(Ordering::Acquire) || watched.repairing.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    /// Reads what `topic` misses from its stream and delivers it: the gap behind held
    /// events, or (`catch_up`) everything after the last delivered offset. What the
    /// stream no longer covers resynchronises the topic.
    pub async fn repair(&self, topic: &Topic, watched: &Watched, catch_up: bool) -> Result<(), StoreError> {
        let mut catch_up = catch_up;
        loop {
            if watched.removed.load(Ordering::Acquire) {
                return Ok(());
            }
            let start = {
                let seq = watched.seq.lock();
                if catch_up { seq.position() } else { seq.gap() }
            };
            let Some((epoch, after)) = start else { return Ok(()) };
            let from = ReadFrom::After { offset: after, epoch: Some(epoch.clone()) };
            let request = ReadRequest { from, limit: CATCH_UP_PAGE, partial: false, retained: false };
            let read = self.store.read(topic, &request).await?;
            let mut seq = watched.seq.lock();
            if watched.removed.load(Ordering::Acquire) {
                return Ok(());
            }
            if seq.position() != Some((epoch.clone(), after)) {
                continue; // moved on meanwhile (pub/sub filled it): look again
            }
            let full_page = read.events.len() >= CATCH_UP_PAGE;
            if read.recovered {
                if self.fill(topic, &mut seq, read.events) > 0 {
                    self.stats.gaps_filled.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                let position = read.position;
                self.resync(topic, &mut seq, position.epoch, position.offset, "history no longer covers a gap");
            }
            // A full page may have more behind it; then go on as a gap repair.
            catch_up = catch_up && full_page;
        }
    }

    fn fill(&self, topic: &Topic, seq: &mut Sequencer, events: Vec<StoredEvent>) -> usize {
        let fanout = &*self.fanout;
        let mut deliver =
            |epoch: &Epoch, offset: u64, arrival: &Arrival| deliver(fanout, topic, epoch, offset, arrival);
        seq.fill(events, Instant::now(), &mut deliver)
    }

    /// A message from `topic`'s channel (another node's publish).
    pub fn on_message(self: &Arc<Self>, topic: &Topic, epoch: &str, offset: u64, frame: &str) {
        let Some(watched) = self.topics.get(topic).map(|w| w.value().clone()) else { return };
        let Some(arrival) = Arrival::from_frame(frame.to_owned().into(), Instant::now()) else {
            tracing::warn!(topic = %topic, offset, "a message on the topic's channel is not an event; ignored");
            return;
        };
        let gap = {
            let mut seq = watched.seq.lock();
            self.offer(topic, &mut seq, Epoch::new(epoch), offset, arrival)
        };
        if gap {
            self.schedule_repair(topic.clone(), watched);
        }
    }

    /// Every channel this node must hold: its own and its watched topics'.
    pub fn channels(&self) -> Vec<String> {
        let mut channels = vec![self.node_channel.clone()];
        channels.extend(self.topics.iter().map(|entry| TopicKeys::new(entry.key()).channel));
        channels
    }

    /// Catches every watched topic up from its stream (after the pub/sub connection was
    /// lost and subscribed again). False when a read failed (Redis is down again): the
    /// caller tries again later.
    pub async fn catch_up_all(self: &Arc<Self>) -> bool {
        use futures_util::StreamExt;
        let topics: Vec<_> = self.topics.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
        let failed = std::sync::atomic::AtomicBool::new(false);
        futures_util::stream::iter(topics)
            .for_each_concurrent(32, |(topic, watched)| {
                let failed = &failed;
                async move {
                    if watched.seq.lock().position().is_some() && self.repair(&topic, &watched, true).await.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            })
            .await;
        !failed.load(Ordering::Relaxed)
    }

    /// Publishes a probe to this node's own channel (the subscriber expects it back),
    /// recording whether Redis answered and how fast.
    pub async fn probe(&self) {
        let started = Instant::now();
        let mut conn = self.store.conn();
        let result: Result<u64, _> = ::redis::cmd(self.store.publish_command())
            .arg(&self.node_channel)
            .arg(super::subscriber::PROBE)
            .query_async(&mut conn)
            .await;
        self.record_check(started, result.is_ok());
        if result.is_ok() {
            self.stats.unanswered_probes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_check(&self, started: Instant, reachable: bool) {
        self.stats.reachable.store(reachable, Ordering::Relaxed);
        if reachable {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.round_trip_micros.store(micros, Ordering::Relaxed);
        }
    }

    /// A message another node sent to this node's channel.
    pub fn node_message(&self, payload: &str) {
        if let Some(inbox) = self.inbox.lock().as_ref() {
            let _ = inbox.send(payload.to_owned());
        }
    }

    /// Checks Redis with a PING, recording reachability and round trip.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        let started = Instant::now();
        let mut conn = self.store.conn();
        let result: Result<String, _> = ::redis::cmd("PING").query_async(&mut conn).await;
        self.record_check(started, result.is_ok());
        result.map(drop).map_err(|e| BrokerError::Unavailable(e.to_string()))
    }
}

fn deliver(fanout: &dyn Fanout, topic: &Topic, epoch: &Epoch, offset: u64, arrival: &Arrival) {
    let position = StreamPosition { offset, epoch: epoch.clone() };
    fanout.deliver(&Delivery {
        topic,
        position: &position,
        frame: &arrival.frame,
        event: &arrival.event,
        published_at: arrival.published_at,
    });
}

/// Undoes a watch that did not complete (failed, or its caller was dropped): the hub
/// will not unwatch it, so the watch itself must.
struct WatchGuard<'a> {
    shared: &'a Shared,
    topic: &'a Topic,
    watched: Arc<Watched>,
    channel: String,
    armed: bool,
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.shared.topics.remove_if(self.topic, |_, w| Arc::ptr_eq(w, &self.watched)).is_some() {
            self.watched.removed.store(true, Ordering::Release);
            let _ = self.shared.commands.send(Command::Unwatch(std::mem::take(&mut self.channel)));
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn status(&self) -> BrokerStatus {
        let stats = &self.shared.stats;
        BrokerStatus {
            kind: if self.shared.target.is_cluster() { "redis-cluster" } else { "redis" },
            reachable: stats.reachable.load(Ordering::Relaxed),
            round_trip_ms: Some(stats.round_trip_micros.load(Ordering::Relaxed) as f64 / 1000.0),
            subscriptions: Some(self.shared.topics.len()),
            gaps_filled: Some(stats.gaps_filled.load(Ordering::Relaxed)),
            resyncs: Some(stats.resyncs.load(Ordering::Relaxed)),
            reconnects: Some(stats.reconnects.load(Ordering::Relaxed)),
        }
    }

    async fn publish(&self, topic: &Topic, event: Event, retain: bool) -> Result<StreamPosition, BrokerError> {
        let published_at = Instant::now();
        let shared = &self.shared;
        let policy = shared.limits.policy(topic);
        let (position, frame) = shared.store.publish_frame(topic, &event, retain, &policy, &shared.node_id).await?;
        if let Some(watched) = shared.topics.get(topic).map(|w| w.value().clone()) {
            let arrival = Arrival { frame, event, published_at };
            let gap = {
                let mut seq = watched.seq.lock();
                shared.offer(topic, &mut seq, position.epoch.clone(), position.offset, arrival)
            };
            if gap {
                shared.schedule_repair(topic.clone(), watched);
            }
        }
        Ok(position)
    }

    async fn publish_many(&self, items: Vec<(Topic, Event, bool)>) -> Vec<Result<StreamPosition, BrokerError>> {
        let published_at = Instant::now();
        let shared = &self.shared;
        let policies: Vec<_> = items.iter().map(|(topic, _, _)| shared.limits.policy(topic)).collect();
        let request: Vec<_> = items
            .iter()
            .zip(&policies)
            .map(|((topic, event, retain), policy)| (topic, event, *retain, *policy))
            .collect();
        let answers = shared.store.publish_many(&request, &shared.node_id).await;
        let mut results = Vec::with_capacity(items.len());
        for ((topic, event, _), answer) in items.into_iter().zip(answers) {
            let (position, frame) = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    results.push(Err(e.into()));
                    continue;
                }
            };
            if let Some(watched) = shared.topics.get(&topic).map(|w| w.value().clone()) {
                let arrival = Arrival { frame, event, published_at };
                let gap = {
                    let mut seq = watched.seq.lock();
                    shared.offer(&topic, &mut seq, position.epoch.clone(), position.offset, arrival)
                };
                if gap {
                    shared.schedule_repair(topic.clone(), watched);
                }
            }
            results.push(Ok(position));
        }
        results
    }

    async fn read(&self, topic: &Topic, request: ReadRequest) -> Result<TopicRead, BrokerError> {
        Ok(self.shared.store.read(topic, &request).await?)
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.shared.ping().await
    }

    async fn watch(&self, topic: &Topic) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let watched = shared.topics.entry(topic.clone()).or_default().value().clone();
        let channel = TopicKeys::new(topic).channel;
        let mut guard = WatchGuard { shared, topic, watched: watched.clone(), channel: channel.clone(), armed: true };
        let (done, confirmed) = oneshot::channel();
        shared
            .commands
            .send(Command::Watch(channel, done))
            .map_err(|_| BrokerError::Unavailable("the broker is shutting down".into()))?;
        confirmed.await.map_err(|_| BrokerError::Unavailable("the broker is shutting down".into()))??;
        if watched.seq.lock().position().is_none() {
            // Subscribed: every publish from here on reaches this node, so the position
            // read now is a baseline nothing can slip under.
            let position = shared.store.position(topic).await?;
            let mut gap = false;
            {
                let mut seq = watched.seq.lock();
                if seq.position().is_none() {
                    for (epoch, offset, arrival) in seq.set_baseline(position.epoch.clone(), position.offset) {
                        gap |= shared.offer(topic, &mut seq, epoch, offset, arrival);
                    }
                }
            }
            if gap {
                shared.schedule_repair(topic.clone(), watched.clone());
            }
        }
        guard.armed = false;
        Ok(())
    }

    fn joined(&self, topic: &Topic, member: &PresenceMember<'_>) {
        self.shared.presence.joined(&self.shared.node_id, topic, member);
    }

    fn left(&self, topic: &Topic, member: &PresenceMember<'_>) {
        self.shared.presence.left(&self.shared.node_id, topic, member);
    }

    async fn presence(&self, topic: &Topic) -> Result<Option<Presence>, BrokerError> {
        Ok(Some(self.shared.presence.read(&self.shared, topic).await?))
    }

    fn unwatch(&self, topic: &Topic) {
        if let Some((_, watched)) = self.shared.topics.remove(topic) {
            watched.removed.store(true, Ordering::Release);
        }
        let _ = self.shared.commands.send(Command::Unwatch(TopicKeys::new(topic).channel));
    }
}

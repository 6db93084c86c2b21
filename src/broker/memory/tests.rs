//! The memory broker against a recording fan-out: offsets, history, retained state,
//! expiry on tokio's paused clock, the global memory bound, and forgetting idle topics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::broker::{HistoryPolicy, ReadFrom};
use crate::domain::Epoch;

#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<(String, u64, String)>>,
    watched: AtomicBool,
}

impl Fanout for Recorder {
    fn deliver(&self, d: &Delivery<'_>) {
        self.delivered.lock().push((d.topic.to_string(), d.position.offset, d.frame.to_string()));
    }
    fn is_watched(&self, _: &Topic) -> bool {
        self.watched.load(Ordering::Relaxed)
    }
    fn resync(&self, _: &Topic) {}
    fn broadcast(&self, _: &Topic, _: &crate::codec::FrameText) {}
}

fn policy(size: usize, ttl: Duration) -> HistoryPolicy {
    HistoryPolicy { size, ttl, retained_ttl: Duration::from_secs(3600) }
}

fn broker_with(limits: HistoryLimits) -> (Arc<Recorder>, MemoryBroker) {
    let rec = Arc::new(Recorder::default());
    (rec.clone(), MemoryBroker::new(rec, limits))
}

fn broker() -> (Arc<Recorder>, MemoryBroker) {
    broker_with(HistoryLimits::new(policy(100, Duration::from_secs(600)), 1 << 30))
}

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn event(n: u64) -> Event {
    Event::from_value(json!({"type": "t", "n": n, "pad": "x".repeat(100)})).unwrap()
}

fn after(offset: u64, epoch: Option<Epoch>) -> ReadRequest {
    ReadRequest { from: ReadFrom::After { offset, epoch }, limit: usize::MAX, partial: false, retained: false }
}

fn offsets(read: &TopicRead) -> Vec<u64> {
    read.events.iter().map(|e| e.offset).collect()
}

#[tokio::test]
async fn offsets_are_per_topic_and_start_at_one() {
    let (rec, broker) = broker();
    let (a, b) = (topic("job:a"), topic("job:b"));
    assert_eq!(broker.position(&a).await.unwrap().offset, 0);
    assert_eq!(broker.publish(&a, event(1), false).await.unwrap().offset, 1);
    assert_eq!(broker.publish(&a, event(2), false).await.unwrap().offset, 2);
    assert_eq!(broker.publish(&b, event(3), false).await.unwrap().offset, 1);
    assert_eq!(broker.position(&a).await.unwrap().offset, 2);
    let delivered = rec.delivered.lock();
    assert_eq!(delivered.len(), 3);
    assert!(delivered[1].2.contains("\"offset\":2"));
}

#[tokio::test]
async fn history_holds_the_delivered_frames() {
    let (rec, broker) = broker();
    let t = topic("job:h");
    for n in 1..=5 {
        broker.publish(&t, event(n), false).await.unwrap();
    }
    let epoch = broker.position(&t).await.unwrap().epoch;
    let read = broker.read(&t, after(2, Some(epoch))).await.unwrap();
    assert!(read.recovered);
    assert_eq!(offsets(&read), vec![3, 4, 5]);
    assert_eq!(read.events[0].frame.as_str(), rec.delivered.lock()[2].2);
}

#[tokio::test]
async fn retained_state_is_the_last_retained_event() {
    let (_, broker) = broker();
    let t = topic("job:r");
    broker.publish(&t, event(1), true).await.unwrap();
    broker.publish(&t, event(2), false).await.unwrap();
    let read = broker.read(&t, ReadRequest { retained: true, ..ReadRequest::default() }).await.unwrap();
    let state = read.retained.unwrap();
    assert!(state.contains("\"n\":1") && state.contains("\"offset\":1"), "{state}");
    assert_eq!(read.position.offset, 2);
}

#[tokio::test(start_paused = true)]
async fn history_expires_on_the_clock() {
    let (_, broker) = broker_with(HistoryLimits::new(policy(100, Duration::from_secs(10)), 1 << 30));
    let t = topic("job:ttl");
    broker.publish(&t, event(1), false).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    broker.publish(&t, event(2), false).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let read = broker.read(&t, after(0, None)).await.unwrap();
    assert!(!read.recovered, "event 1 expired");
    assert_eq!(offsets(&broker.read(&t, after(1, None)).await.unwrap()), vec![2]);
    tokio::time::advance(Duration::from_secs(5)).await;
    let report = broker.sweep();
    assert_eq!(report.events, 0);
    assert!(broker.stored_bytes() <= 2 * eviction::TICKET_COST, "expired history frees its bytes");
}

#[tokio::test(start_paused = true)]
async fn idle_topics_are_forgotten_with_a_new_epoch_unless_watched() {
    let (rec, broker) = broker_with(HistoryLimits::new(policy(100, Duration::from_secs(10)), 1 << 30));
    let t = topic("job:idle");
    let first = broker.publish(&t, event(1), false).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    rec.watched.store(true, Ordering::Relaxed);
    assert_eq!(broker.sweep().topics_removed, 0, "a topic with local subscribers keeps its offsets");
    assert_eq!(broker.position(&t).await.unwrap(), first);
    rec.watched.store(false, Ordering::Relaxed);
    assert_eq!(broker.sweep().topics_removed, 1);
    let again = broker.publish(&t, event(2), false).await.unwrap();
    assert_eq!(again.offset, 1, "offsets restart…");
    assert_ne!(again.epoch, first.epoch, "…in a new epoch");
    let read = broker.read(&t, after(1, Some(first.epoch))).await.unwrap();
    assert!(!read.recovered, "a client of the old epoch must resynchronise");
}

#[tokio::test]
async fn the_memory_bound_evicts_the_oldest_events_first() {
    let max_bytes = 64 * 1024;
    let (_, broker) = broker_with(HistoryLimits::new(policy(1000, Duration::from_secs(600)), max_bytes));
    let (old, new) = (topic("job:old"), topic("job:new"));
    for n in 0..50 {
        broker.publish(&old, event(n), false).await.unwrap();
    }
    for n in 0..1000 {
        broker.publish(&new, event(n), false).await.unwrap();
    }
    assert!(broker.stored_bytes() <= max_bytes, "{} > {max_bytes}", broker.stored_bytes());
    let old_read = broker.read(&old, after(0, None)).await.unwrap();
    assert!(old_read.events.is_empty() && !old_read.recovered, "the oldest topic's events went first");
    let new_read = broker.read(&new, after(990, None)).await.unwrap();
    assert!(new_read.recovered, "the newest events are kept");
    assert_eq!(new_read.events.len(), 10);
}

#[tokio::test]
async fn stale_tickets_are_compacted() {
    let (_, broker) = broker_with(HistoryLimits::new(policy(2, Duration::from_secs(600)), 1 << 30));
    let t = topic("job:busy");
    for n in 0..(2 * STALE_TICKET_SLACK as u64) {
        broker.publish(&t, event(n), false).await.unwrap();
    }
    let before = broker.stored_bytes();
    broker.sweep();
    assert_eq!(broker.eviction.tickets(), 2, "only the tickets of the two stored events stay");
    assert!(broker.stored_bytes() < before);
}

#[tokio::test]
async fn many_topics_stay_within_the_memory_bound() {
    let max_bytes = 4 * 1024 * 1024;
    let (_, broker) = broker_with(HistoryLimits::new(policy(100, Duration::from_secs(600)), max_bytes));
    for n in 0..100_000u64 {
        broker.publish(&topic(&format!("job:{n}")), event(n), false).await.unwrap();
    }
    assert!(broker.stored_bytes() <= max_bytes, "{} > {max_bytes}", broker.stored_bytes());
    let newest = broker.read(&topic("job:99999"), after(0, None)).await.unwrap();
    assert!(newest.recovered);
    let oldest = broker.read(&topic("job:0"), after(0, None)).await.unwrap();
    assert!(!oldest.recovered);
}

//! The embedded single-node broker: offsets in process memory.
//!
//! One lock per topic makes "assign offset + encode + hand to fan-out" atomic, so local
//! delivery is in offset order. The epoch is drawn at start: offsets restart after a
//! restart, and the new epoch tells resuming clients so.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::{Broker, BrokerError, Fanout};
use crate::domain::{Epoch, Event, StreamPosition, Topic, encode_delivery};
use crate::hub::FrameText;

#[derive(Default)]
struct TopicSequence {
    last_offset: u64,
}

/// In-process broker.
pub struct MemoryBroker {
    epoch: Epoch,
    topics: DashMap<Topic, Arc<Mutex<TopicSequence>>>,
    fanout: Arc<dyn Fanout>,
}

impl MemoryBroker {
    /// A broker delivering into `fanout`, with a fresh epoch.
    pub fn new(fanout: Arc<dyn Fanout>) -> Self {
        Self { epoch: Epoch::generate(), topics: DashMap::new(), fanout }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, topic: &Topic, event: Event) -> Result<StreamPosition, BrokerError> {
        let published_at = Instant::now();
        let sequence = self.topics.entry(topic.clone()).or_default().value().clone();
        let mut sequence = sequence.lock();
        sequence.last_offset += 1;
        let position = StreamPosition { offset: sequence.last_offset, epoch: self.epoch.clone() };
        let frame = FrameText::from(encode_delivery(&event, topic, &position));
        self.fanout.deliver(topic, &position, &frame, published_at);
        Ok(position)
    }

    async fn position(&self, topic: &Topic) -> Result<StreamPosition, BrokerError> {
        let offset = self.topics.get(topic).map_or(0, |s| s.value().lock().last_offset);
        Ok(StreamPosition { offset, epoch: self.epoch.clone() })
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, u64, String)>>);
    impl Fanout for Recorder {
        fn deliver(&self, topic: &Topic, position: &StreamPosition, frame: &FrameText, _: Instant) {
            self.0.lock().push((topic.to_string(), position.offset, frame.to_string()));
        }
    }

    #[tokio::test]
    async fn offsets_are_per_topic_and_start_at_one() {
        let rec = Arc::new(Recorder::default());
        let broker = MemoryBroker::new(rec.clone());
        let a = Topic::parse("job:a").unwrap();
        let b = Topic::parse("job:b").unwrap();
        let ev = || Event::from_value(json!({"type": "t"})).unwrap();
        assert_eq!(broker.position(&a).await.unwrap().offset, 0);
        assert_eq!(broker.publish(&a, ev()).await.unwrap().offset, 1);
        assert_eq!(broker.publish(&a, ev()).await.unwrap().offset, 2);
        assert_eq!(broker.publish(&b, ev()).await.unwrap().offset, 1);
        assert_eq!(broker.position(&a).await.unwrap().offset, 2);
        let delivered = rec.0.lock();
        assert_eq!(delivered.len(), 3);
        assert!(delivered[1].2.contains("\"offset\":2"));
    }
}

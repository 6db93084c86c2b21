//! The Redis broker's storage layer (`broker::redis::RedisStore`) against a real
//! `redis-server`: consecutive offsets under concurrent publishers, trimming, epochs,
//! retained state, reads that recover or not, the channel message, one round trip per
//! publish, and the spliced frame.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use signalbox::broker::redis::{ChannelMessage, RedisStore, StoreOptions, TopicKeys};
use signalbox::broker::{HistoryPolicy, ReadFrom, ReadRequest};
use signalbox::codec::encode_delivery;
use signalbox::domain::{Epoch, Event, Topic};

use crate::servers::redis::Redis;

const NODE: &str = "node-a";

fn policy(size: usize) -> HistoryPolicy {
    HistoryPolicy { size, ttl: Duration::from_secs(300), retained_ttl: Duration::from_secs(300) }
}

fn event(n: u64) -> Event {
    Event::from_value(json!({"type": "tick", "n": n, "timestamp": "2026-01-01T00:00:00.000Z"})).unwrap()
}

async fn store(redis: &Redis) -> RedisStore {
    RedisStore::connect(&redis.url(), StoreOptions::default()).await.unwrap()
}

async fn plain(redis: &Redis) -> MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

fn after(offset: u64, epoch: Option<Epoch>, partial: bool) -> ReadRequest {
    ReadRequest { from: ReadFrom::After { offset, epoch }, limit: 100, partial, retained: false }
}

/// `calls` of `command` in `INFO commandstats` (0 when never called).
async fn calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn redis_store_concurrent_publishers_get_consecutive_offsets() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:many").unwrap();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let store = store.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for i in 0..250 {
                positions.push(store.publish(&topic, &event(t * 1000 + i), false, &policy(2000), NODE).await.unwrap());
            }
            positions
        }));
    }
    let mut offsets = Vec::new();
    let mut epochs = HashSet::new();
    for task in tasks {
        for position in task.await.unwrap() {
            offsets.push(position.offset);
            epochs.insert(position.epoch);
        }
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=1000).collect::<Vec<u64>>());
    assert_eq!(epochs.len(), 1, "{epochs:?}");
    let read = store.read(&topic, &after(0, None, false)).await.unwrap();
    assert!(read.recovered);
    assert_eq!(read.events.len(), 100);
    assert_eq!(read.position.offset, 1000);
    let stream = TopicKeys::new(&topic).stream;
    assert_eq!(crate::servers::redis::stream_len(&redis.url(), &stream).await, 1000);
}

#[tokio::test]
async fn redis_store_trims_history_and_recovers_only_without_gaps() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:trim").unwrap();
    let mut epoch = None;
    for n in 1..=5 {
        epoch = Some(store.publish(&topic, &event(n), false, &policy(3), NODE).await.unwrap().epoch);
    }
    let stream = TopicKeys::new(&topic).stream;
    assert_eq!(crate::servers::redis::stream_len(&redis.url(), &stream).await, 3);

    let read = store.read(&topic, &after(2, epoch.clone(), false)).await.unwrap();
    assert!(read.recovered);
    assert_eq!(read.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(read.position.offset, 5);

    let gap = store.read(&topic, &after(1, epoch.clone(), false)).await.unwrap();
    assert!(!gap.recovered);
    assert!(gap.events.is_empty());
    let partial = store.read(&topic, &after(1, epoch.clone(), true)).await.unwrap();
    assert!(!partial.recovered);
    assert_eq!(partial.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [3, 4, 5]);

    let other = store.read(&topic, &after(4, Some(Epoch::new("other")), false)).await.unwrap();
    assert!(!other.recovered);
    assert!(other.events.is_empty());

    let future = store.read(&topic, &after(9, epoch.clone(), true)).await.unwrap();
    assert!(!future.recovered);
    assert!(future.events.is_empty());

    let current = store.read(&topic, &after(5, epoch.clone(), false)).await.unwrap();
    assert!(current.recovered);
    assert!(current.events.is_empty());

    let limited = store.read(&topic, &ReadRequest { limit: 1, ..after(2, epoch, false) }).await.unwrap();
    assert!(limited.recovered);
    assert_eq!(limited.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [3]);

    // No history at all: nothing after an old offset is recoverable.
    let bare = Topic::parse("job:bare").unwrap();
    for n in 1..=2 {
        store.publish(&bare, &event(n), false, &policy(0), NODE).await.unwrap();
    }
    let read = store.read(&bare, &after(1, None, false)).await.unwrap();
    assert_eq!(read.position.offset, 2);
    assert!(!read.recovered);
    assert!(
        !redis::cmd("EXISTS")
            .arg(TopicKeys::new(&bare).stream)
            .query_async::<bool>(&mut plain(&redis).await)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn redis_store_epoch_is_stable_until_redis_loses_the_topic() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:epoch").unwrap();
    let before = store.position(&topic).await.unwrap();
    assert_eq!(before.offset, 0);
    let first = store.publish(&topic, &event(1), false, &policy(10), NODE).await.unwrap();
    let second = store.publish(&topic, &event(2), false, &policy(10), NODE).await.unwrap();
    assert_eq!((first.offset, second.offset), (1, 2));
    assert_eq!(before.epoch, first.epoch, "a read's epoch is the one the first publish keeps");
    assert_eq!(first.epoch, second.epoch);
    assert_eq!(store.position(&topic).await.unwrap(), second);

    let mut conn = plain(&redis).await;
    let meta_ttl: i64 = redis::cmd("PTTL").arg(TopicKeys::new(&topic).meta).query_async(&mut conn).await.unwrap();
    let stream_ttl: i64 = redis::cmd("PTTL").arg(TopicKeys::new(&topic).stream).query_async(&mut conn).await.unwrap();
    assert!(meta_ttl > stream_ttl && stream_ttl > 0, "meta {meta_ttl} ms, stream {stream_ttl} ms");

    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let again = store.publish(&topic, &event(3), false, &policy(10), NODE).await.unwrap();
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, first.epoch);
    let read = store.read(&topic, &after(2, Some(first.epoch), true)).await.unwrap();
    assert!(!read.recovered);
    assert_eq!(read.events.iter().map(|e| e.offset).collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn redis_store_keeps_retained_state_and_the_encoded_frame() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:state").unwrap();
    let retained = ReadRequest { retained: true, ..ReadRequest::default() };
    assert!(store.read(&topic, &retained).await.unwrap().retained.is_none());

    let position = store.publish(&topic, &event(1), true, &policy(10), NODE).await.unwrap();
    store.publish(&topic, &event(2), false, &policy(10), NODE).await.unwrap();
    let read = store.read(&topic, &ReadRequest { retained: true, ..after(0, None, false) }).await.unwrap();
    let expected = encode_delivery(&event(1), &topic, &position);
    assert_eq!(read.retained.as_ref().unwrap().as_str(), expected.as_str());
    assert_eq!(read.events[0].frame.as_str(), expected.as_str(), "history holds the spliced frame");
    assert_eq!(read.retained_json()["n"], 1);

    let pttl: i64 =
        redis::cmd("PTTL").arg(TopicKeys::new(&topic).retained).query_async(&mut plain(&redis).await).await.unwrap();
    assert!(pttl > 0 && pttl <= 300_000, "{pttl}");
    assert!(store.read(&topic, &ReadRequest::default()).await.unwrap().retained.is_none(), "only when asked");
}

#[tokio::test]
async fn redis_store_publishes_the_tagged_frame_on_the_topic_channel() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:chan").unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(TopicKeys::new(&topic).channel).await.unwrap();
    let mut messages = pubsub.into_on_message();

    let position = store.publish(&topic, &event(7), false, &policy(10), NODE).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), messages.next()).await.unwrap().unwrap();
    let payload: String = message.get_payload().unwrap();
    let parsed = ChannelMessage::parse(&payload).unwrap();
    assert_eq!(parsed.node_id, NODE);
    assert_eq!(parsed.offset, position.offset);
    assert_eq!(parsed.epoch, position.epoch.as_str());
    assert_eq!(parsed.frame, encode_delivery(&event(7), &topic, &position).as_str());

    assert!(store.publish(&topic, &event(8), false, &policy(10), "bad\nnode").await.is_err());
}

#[tokio::test]
async fn redis_store_publish_is_one_round_trip() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:trips").unwrap();
    // The first call of each script on a server loads it: EVALSHA → NOSCRIPT, SCRIPT LOAD,
    // EVALSHA again. From then on each call is a single EVALSHA.
    store.publish(&topic, &event(0), true, &policy(10), NODE).await.unwrap();
    store.position(&topic).await.unwrap();
    let mut conn = plain(&redis).await;
    let (load, evalsha, eval, hincrby) = (
        calls(&mut conn, "script|load").await,
        calls(&mut conn, "evalsha").await,
        calls(&mut conn, "eval").await,
        calls(&mut conn, "hincrby").await,
    );
    for n in 1..=50 {
        store.publish(&topic, &event(n), n % 2 == 0, &policy(10), NODE).await.unwrap();
    }
    assert_eq!(calls(&mut conn, "evalsha").await - evalsha, 50, "one EVALSHA per publish");
    assert_eq!(calls(&mut conn, "eval").await - eval, 0);
    assert_eq!(calls(&mut conn, "script|load").await - load, 0);
    assert_eq!(calls(&mut conn, "hincrby").await - hincrby, 50, "one offset per publish");
    // A read is one EVALSHA too.
    let before = calls(&mut conn, "evalsha").await;
    store.read(&topic, &ReadRequest { retained: true, ..after(40, None, false) }).await.unwrap();
    assert_eq!(calls(&mut conn, "evalsha").await - before, 1);
}

#[tokio::test]
async fn redis_store_splices_large_offsets_as_plain_digits() {
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:big").unwrap();
    let first = store.publish(&topic, &event(1), false, &policy(10), NODE).await.unwrap();
    // Lua's default number format would write 10^15 + 1 as 1e+15.
    let big: u64 = 1_000_000_000_000_000;
    let () = redis::cmd("HSET")
        .arg(TopicKeys::new(&topic).meta)
        .arg("offset")
        .arg(big)
        .query_async(&mut plain(&redis).await)
        .await
        .unwrap();
    let position = store.publish(&topic, &event(2), true, &policy(10), NODE).await.unwrap();
    assert_eq!(position.offset, big + 1);
    assert_eq!(position.epoch, first.epoch);
    let read = store.read(&topic, &ReadRequest { retained: true, ..after(big, None, false) }).await.unwrap();
    assert!(read.recovered);
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].offset, big + 1);
    let expected = encode_delivery(&event(2), &topic, &position);
    assert_eq!(read.events[0].frame.as_str(), expected.as_str());
    assert_eq!(read.retained.unwrap().as_str(), expected.as_str());
}

#[tokio::test]
async fn redis_store_reads_everything_when_the_limit_is_unbounded() {
    // The hub asks a resume for every event after `since` with `limit: usize::MAX`.
    let redis = Redis::start();
    let store = store(&redis).await;
    let topic = Topic::parse("job:unbounded").unwrap();
    for n in 1..=5 {
        store.publish(&topic, &event(n), false, &policy(100), NODE).await.unwrap();
    }
    let mut request = after(2, None, false);
    request.limit = usize::MAX;
    let read = store.read(&topic, &request).await.unwrap();
    assert!(read.recovered);
    assert_eq!(read.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
}

//! The `redis_stream` sink against a real `redis-server`: the entry's fields, trimming,
//! pipelined batches, outages, restarts on the same port and a sink built while Redis is down.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde_json::Value;
use signalbox::sinks::redis_stream::{self, RedisStreamConfig, RedisStreamSink};
use signalbox::sinks::{MessageId, RoutedMessage, Sink, SinkError};

use crate::measure;
use crate::servers::free_port;
use crate::servers::redis::Redis;

const STREAM: &str = "chat-in";

fn config(url: &str) -> RedisStreamConfig {
    RedisStreamConfig { url: url.into(), stream: STREAM.into(), max_len: 1_000_000, timeout: Duration::from_secs(2) }
}

async fn sink(url: &str) -> RedisStreamSink {
    redis_stream::build("chat", &config(url)).await.unwrap()
}

fn message(n: u32) -> RoutedMessage {
    RoutedMessage {
        message_id: MessageId::generate(),
        sink: "chat".into(),
        action: "sendMessage".into(),
        connection_id: format!("conn_1_{n}"),
        user_id: "user-7".into(),
        request_id: Some(format!("r{n}")),
        received_at_ms: 1_795_341_600_123,
        connected_at_ms: 1_795_341_590_000,
        source_ip: "203.0.113.9".into(),
        body: format!(r#"{{"action":"sendMessage",  "n":{n}, "text":"h\u00e9\"llo"}}"#),
    }
}

/// A plain client of the test's own, to look at what the sink wrote.
async fn inspect(redis: &Redis) -> MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// The stream's entries: (id, [field, value, field, value…]) in stream order.
async fn entries(redis: &Redis) -> Vec<(String, Vec<String>)> {
    redis::cmd("XRANGE").arg(STREAM).arg("-").arg("+").query_async(&mut inspect(redis).await).await.unwrap()
}

fn field<'a>(fields: &'a [String], name: &str) -> &'a str {
    let at = fields.iter().step_by(2).position(|f| f == name).unwrap_or_else(|| panic!("no {name} in {fields:?}"));
    &fields[at * 2 + 1]
}

fn is_unavailable(result: &Result<impl std::fmt::Debug, SinkError>) -> bool {
    matches!(result, Err(SinkError::Unavailable(_)))
}

#[tokio::test]
async fn an_entry_carries_every_field_and_data_is_the_envelope() {
    let redis = Redis::start();
    let sink = sink(&redis.url()).await;
    let message = message(1);
    let mut without_request_id = self::message(2);
    without_request_id.request_id = None;

    sink.send(&message).await.unwrap();
    sink.send(&without_request_id).await.unwrap();

    let entries = entries(&redis).await;
    assert_eq!(entries.len(), 2);
    let names: Vec<_> = entries[0].1.iter().step_by(2).map(String::as_str).collect();
    assert_eq!(names, ["messageId", "action", "connectionId", "userId", "requestId", "receivedAt", "data"]);
    let fields = &entries[0].1;
    assert_eq!(field(fields, "messageId"), message.message_id.as_str());
    assert_eq!(field(fields, "action"), "sendMessage");
    assert_eq!(field(fields, "connectionId"), "conn_1_1");
    assert_eq!(field(fields, "userId"), "user-7");
    assert_eq!(field(fields, "requestId"), "r1");
    assert_eq!(field(fields, "receivedAt"), "2026-11-22T10:00:00.123Z");
    let data: Value = serde_json::from_str(field(fields, "data")).unwrap();
    assert_eq!(data, serde_json::from_str::<Value>(&message.envelope()).unwrap());
    assert_eq!(data["message"], serde_json::from_str::<Value>(&message.body).unwrap());
    assert_eq!(data["messageId"], message.message_id.as_str());

    assert_eq!(field(&entries[1].1, "requestId"), "", "no requestId: an empty field");
    let data: Value = serde_json::from_str(field(&entries[1].1, "data")).unwrap();
    assert!(data["requestId"].is_null());
}

#[tokio::test]
async fn a_batch_of_100_is_pipelined_in_order() {
    let redis = Redis::start();
    let sink = sink(&redis.url()).await;
    let batch: Vec<_> = (0..100).map(message).collect();

    let outcome = sink.send_batch(&batch).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.delivered.len(), 100);
    assert!(outcome.delivered.iter().all(|d| d.reply.is_none()));

    let ids: Vec<_> = entries(&redis).await.iter().map(|(_, fields)| field(fields, "messageId").to_owned()).collect();
    let expected: Vec<_> = batch.iter().map(|m| m.message_id.as_str().to_owned()).collect();
    assert_eq!(ids, expected);
    assert!(sink.send_batch(&[]).await.delivered.is_empty());
}

#[tokio::test]
async fn maxlen_trims_the_stream_near_max_len() {
    let redis = Redis::start();
    let mut config = config(&redis.url());
    config.max_len = 100;
    let sink = redis_stream::build("chat", &config).await.unwrap();
    let messages: Vec<_> = (0..2_000).map(message).collect();
    for batch in messages.chunks(100) {
        assert!(sink.send_batch(batch).await.error.is_none());
    }
    for m in &messages[..50] {
        sink.send(m).await.unwrap();
    }

    let length: u64 = redis::cmd("XLEN").arg(STREAM).query_async(&mut inspect(&redis).await).await.unwrap();
    // `~` trims whole macro nodes (100 entries by default): never below max_len, and at
    // most about one node above it.
    assert!((100..=250).contains(&length), "XLEN {length} after 2,050 XADDs with MAXLEN ~ 100");
}

#[tokio::test]
async fn a_killed_redis_is_unavailable_at_once() {
    let mut redis = Redis::start();
    let mut config = config(&redis.url());
    config.timeout = Duration::from_secs(5);
    let sink = redis_stream::build("chat", &config).await.unwrap();
    sink.send(&message(1)).await.unwrap();
    sink.check().await.unwrap();

    redis.process.kill();
    let start = Instant::now();
    let send = sink.send(&message(2)).await;
    let batch = sink.send_batch(&[message(3), message(4)]).await;
    let check = sink.check().await;
    let took = start.elapsed();

    assert!(is_unavailable(&send), "{send:?}");
    assert!(batch.delivered.is_empty());
    assert!(matches!(batch.error, Some(SinkError::Unavailable(_))), "{:?}", batch.error);
    assert!(is_unavailable(&check), "{check:?}");
    assert!(took < Duration::from_secs(1), "a refused connection is known at once, not at the 5 s timeout: {took:?}");
}

#[tokio::test]
async fn after_a_restart_on_the_same_port_sends_succeed_without_rebuilding_the_sink() {
    let mut redis = Redis::start();
    let port = redis.process.port;
    let sink = sink(&redis.url()).await;
    sink.send(&message(1)).await.unwrap();

    redis.process.kill();
    assert!(is_unavailable(&sink.send(&message(2)).await));

    let redis = Redis::start_on(port);
    sink.check().await.unwrap();
    sink.send(&message(3)).await.unwrap();
    let outcome = sink.send_batch(&[message(4), message(5)]).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(entries(&redis).await.len(), 3, "the new server has what was sent after the restart");
}

#[tokio::test]
async fn a_connection_that_died_while_idle_costs_at_most_one_failed_send() {
    let mut redis = Redis::start();
    let port = redis.process.port;
    let sink = sink(&redis.url()).await;
    sink.send(&message(1)).await.unwrap();

    // Killed and back while the sink sent nothing: it still holds the dead connection.
    redis.process.kill();
    let redis = Redis::start_on(port);

    let first = sink.send(&message(2)).await;
    if first.is_err() {
        assert!(is_unavailable(&first), "{first:?}");
    }
    sink.send(&message(3)).await.unwrap();
    let expected = if first.is_ok() { 2 } else { 1 };
    assert_eq!(entries(&redis).await.len(), expected);
}

#[tokio::test]
async fn build_succeeds_while_redis_is_down_and_sends_once_it_is_up() {
    let port = free_port();
    let sink = sink(&format!("redis://127.0.0.1:{port}")).await;
    assert!(is_unavailable(&sink.check().await));
    assert!(is_unavailable(&sink.send(&message(1)).await));

    let redis = Redis::start_on(port);
    sink.check().await.unwrap();
    sink.send(&message(2)).await.unwrap();
    assert_eq!(entries(&redis).await.len(), 1);
}

#[tokio::test]
async fn a_paused_redis_is_unavailable_within_the_timeout() {
    let redis = Redis::start();
    let mut config = config(&redis.url());
    config.timeout = Duration::from_millis(300);
    let sink = redis_stream::build("chat", &config).await.unwrap();
    sink.send(&message(1)).await.unwrap();

    // Redis holds every write command until the pause ends: an unresponsive server.
    let mut admin = inspect(&redis).await;
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(5_000).arg("WRITE").query_async(&mut admin).await.unwrap();
    let start = Instant::now();
    let send = sink.send(&message(2)).await;
    let took = start.elapsed();
    assert!(is_unavailable(&send), "{send:?}");
    assert!(took >= Duration::from_millis(300), "gave up early: {took:?}");
    assert!(took < Duration::from_millis(1_000), "took {took:?} for a 300 ms timeout");

    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query_async(&mut admin).await.unwrap();
    sink.send(&message(3)).await.unwrap();
}

#[tokio::test]
async fn a_stream_key_of_another_type_is_unavailable_until_fixed() {
    let redis = Redis::start();
    let sink = sink(&redis.url()).await;
    let mut admin = inspect(&redis).await;
    let _: () = redis::cmd("SET").arg(STREAM).arg("not a stream").query_async(&mut admin).await.unwrap();

    let send = sink.send(&message(1)).await;
    assert!(is_unavailable(&send), "{send:?}");
    assert!(format!("{send:?}").contains("WRONGTYPE"), "{send:?}");
    let batch = sink.send_batch(&[message(2), message(3)]).await;
    assert!(batch.delivered.is_empty());
    assert!(matches!(&batch.error, Some(SinkError::Unavailable(e)) if e.contains("WRONGTYPE")), "{:?}", batch.error);

    let _: () = redis::cmd("DEL").arg(STREAM).query_async(&mut admin).await.unwrap();
    sink.send(&message(4)).await.unwrap();
}

/// Throughput through one sink against a local redis-server; a measurement, not a check.
/// `cargo test --release --test it measure_redis -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement: run in release with --ignored --nocapture"]
async fn measure_redis_throughput() {
    let redis = Redis::start();
    let sink = std::sync::Arc::new(sink(&redis.url()).await);
    let count = 50_000_u32;
    let messages: Vec<_> = (0..count).map(message).collect();

    measure::one_at_a_time("redis send, one at a time", sink.as_ref(), &messages).await;
    for size in [10, 100, 1000] {
        let what = format!("redis send_batch of {size} (one pipeline each)");
        measure::in_batches(&what, sink.as_ref(), &messages, size).await;
    }
    for in_flight in [16_usize, 64] {
        let what = format!("redis send, {in_flight} in flight (one multiplexed connection)");
        measure::in_flight(&what, &sink, &messages, in_flight).await;
    }
}

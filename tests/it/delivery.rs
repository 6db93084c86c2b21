//! Fan-out: per-topic order, offsets, shared frames, and slow consumers.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn events_carry_topic_offset_timestamp_and_arrive_in_order() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        let mut c = gw.connect_dev("").await;
        c.subscribe("job:ordered").await;
        subs.push(c);
    }
    let api = gw.http();
    let publisher = tokio::spawn(async move {
        for i in 0..200 {
            let offset = api.publish("job:ordered", json!({"type": "progress_update", "i": i})).await;
            assert_eq!(offset, i + 1);
        }
        api.publish("job:ordered", json!({"type": "stamped", "timestamp": "2024-01-01T00:00:00Z"})).await;
    });
    for c in &mut subs {
        for i in 0..200u64 {
            let ev = c.recv().await;
            assert_eq!((ev["offset"].as_u64(), ev["i"].as_u64()), (Some(i + 1), Some(i)), "{ev}");
            assert_eq!(ev["topic"], "job:ordered");
            assert!(ev["timestamp"].as_str().unwrap().ends_with('Z'));
        }
        let stamped = c.recv().await;
        assert_eq!(stamped["timestamp"], "2024-01-01T00:00:00Z", "a publisher timestamp is kept");
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn concurrent_publishers_keep_gapless_order_per_topic() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    c.subscribe("project:race").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let api = gw.http();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                api.publish("project:race", json!({"type": "t"})).await;
            }
        }));
    }
    for expected in 1..=200u64 {
        assert_eq!(c.recv().await["offset"].as_u64(), Some(expected));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn subscribe_during_publishing_has_no_gap_or_duplicate() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    let publisher = tokio::spawn(async move {
        for _ in 0..300 {
            api.publish("job:seam", json!({"type": "t"})).await;
        }
    });
    let mut c = gw.connect_dev("").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = c.subscribe("job:seam").await["offset"].as_u64().unwrap();
    publisher.await.unwrap();
    for expected in start + 1..=300 {
        assert_eq!(
            c.recv().await["offset"].as_u64(),
            Some(expected),
            "live delivery starts right after `subscribed.offset`"
        );
    }
    c.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    c.subscribe("job:u").await;
    let api = gw.http();
    api.publish("job:u", json!({"type": "a"})).await;
    assert_eq!(c.recv().await["type"], "a");
    let r = c.request(json!({"action": "unsubscribe", "topic": "job:u"})).await;
    assert_eq!(r["type"], "unsubscribed");
    api.publish("job:u", json!({"type": "b"})).await;
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn slow_consumer_is_cut_with_4008_while_fast_one_gets_everything() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.send_queue_events = 64;
    })
    .await;
    let mut slow = gw.connect_dev("").await;
    slow.subscribe("job:flood").await;
    let mut fast = gw.connect_dev("").await;
    fast.subscribe("job:flood").await;
    const EVENTS: u64 = 1500;
    let reader = tokio::spawn(async move {
        for expected in 1..=EVENTS {
            let ev = fast.recv().await;
            assert_eq!(ev["offset"].as_u64(), Some(expected));
        }
        fast
    });
    // 16 KiB events: the slow client's kernel buffers fill, then its queue overflows.
    let payload = "x".repeat(16 * 1024);
    let api = gw.http();
    for _ in 0..EVENTS {
        api.publish("job:flood", json!({"type": "chunk", "data": payload})).await;
    }
    let mut fast = reader.await.unwrap();
    // The slow client gets what was queued before its cut, in order, then 4008.
    let mut before = Vec::new();
    assert_eq!(slow.expect_close(&mut before).await, 4008);
    assert!((before.len() as u64) < EVENTS, "the slow client was cut before the end");
    for (i, ev) in before.iter().enumerate() {
        assert_eq!(ev["offset"].as_u64(), Some(i as u64 + 1));
    }
    let metrics = gw.http().get("/metrics").await.1;
    let text = metrics.as_str().unwrap();
    assert_eq!(metric(text, "signalbox_slow_consumer_disconnects_total"), 1.0);
    // The fast client is unaffected.
    assert_eq!(fast.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_and_its_connection_fully_released() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.send_queue_events = 16;
        c.websocket.close_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stuck = gw.connect_dev("").await;
    stuck.subscribe("job:stuck").await;
    let payload = "z".repeat(64 * 1024);
    let api = gw.http();
    // Far more than the kernel buffers hold: the server's writer blocks mid-write.
    for _ in 0..400 {
        api.publish("job:stuck", json!({"type": "chunk", "data": payload})).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = api.get("/metrics").await.1.as_str().unwrap().to_owned();
        if metric(&text, "signalbox_connections") == 0.0 {
            assert_eq!(metric(&text, "signalbox_slow_consumer_disconnects_total"), 1.0);
            assert_eq!(metric(&text, "signalbox_subscriptions"), 0.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the blocked connection was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stuck);
}

#[tokio::test]
async fn one_connection_gets_frames_from_many_topics_interleaved_in_publish_order() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    for t in ["a:1", "a:2", "a:3"] {
        c.subscribe(t).await;
    }
    let api = gw.http();
    for round in 0..20 {
        for t in ["a:1", "a:2", "a:3"] {
            api.publish(t, json!({"type": "t", "round": round})).await;
        }
    }
    for round in 0..20u64 {
        for t in ["a:1", "a:2", "a:3"] {
            let ev = c.recv().await;
            assert_eq!((ev["topic"].as_str(), ev["offset"].as_u64()), (Some(t), Some(round + 1)));
        }
    }
    // Nothing else pending.
    assert!(tokio::time::timeout(Duration::from_millis(100), c.ws.next()).await.is_err_or_ping());
}

trait PingOrTimeout {
    fn is_err_or_ping(&self) -> bool;
}

impl<E> PingOrTimeout for Result<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>, E> {
    fn is_err_or_ping(&self) -> bool {
        matches!(self, Err(_) | Ok(Some(Ok(Message::Ping(_)))))
    }
}

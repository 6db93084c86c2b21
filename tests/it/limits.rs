//! Rate limits, size limits, subscription and connection caps.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rate_limit_rejects_then_closes_1008_on_sustained_abuse() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.rate_per_second = 1;
        c.limits.rate_burst = 5;
    })
    .await;
    let mut c = gw.connect_dev("").await;
    for i in 0..40 {
        c.send(json!({"action": "ping", "requestId": format!("r{i}")})).await;
    }
    let mut frames = Vec::new();
    assert_eq!(c.expect_close(&mut frames).await, 1008);
    let pongs = frames.iter().filter(|f| f["type"] == "pong").count();
    let limited = frames.iter().filter(|f| f["code"] == "RATE_LIMIT_EXCEEDED").count();
    assert!((5..=6).contains(&pongs), "the burst is served: {pongs}");
    // Closed on the 25th (5 × burst) consecutive rejection, never before.
    assert_eq!(limited, 24, "{frames:?}");
    for f in &frames {
        assert!(f["requestId"].as_str().is_some_and(|r| r.starts_with('r')), "every reply echoes its requestId: {f}");
    }
    // Other clients are unaffected.
    let mut other = gw.connect_dev("").await;
    assert_eq!(other.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn rate_limit_recovers_after_a_pause() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.rate_per_second = 20;
        c.limits.rate_burst = 3;
    })
    .await;
    let mut c = gw.connect_dev("").await;
    for _ in 0..6 {
        c.send(json!({"action": "ping"})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..6 {
        let f = c.recv().await;
        codes.push(f["code"].as_str().unwrap_or("ok").to_owned());
    }
    assert!(codes.iter().any(|c| c == "RATE_LIMIT_EXCEEDED"), "{codes:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(c.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn oversized_messages_get_payload_too_large_and_huge_frames_close_1009() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.max_message_size = 4096;
    })
    .await;
    let mut c = gw.connect_dev("").await;
    let big = json!({"action": "ping", "requestId": "big", "pad": "x".repeat(5000)}).to_string();
    c.send_text(big).await;
    let r = c.recv().await;
    assert_eq!((r["code"].as_str(), r["requestId"].as_str()), (Some("PAYLOAD_TOO_LARGE"), Some("big")));
    assert_eq!(c.request(json!({"action": "ping"})).await["type"], "pong", "the connection stays open");
    let huge = "y".repeat(64 * 1024);
    c.send_text(huge).await;
    let mut before = Vec::new();
    assert_eq!(c.expect_close(&mut before).await, 1009);
    let mut other = gw.connect_dev("").await;
    assert_eq!(other.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn subscription_limit_per_connection() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.max_subscriptions = 4;
    })
    .await;
    let mut c = gw.connect_dev("").await;
    // user:anonymous and global already count.
    c.subscribe("t:1").await;
    c.subscribe("t:2").await;
    let r = c.request(json!({"action": "subscribe", "topic": "t:3"})).await;
    assert_eq!(r["code"], "VALIDATION_ERROR", "{r}");
    assert!(r["message"].as_str().unwrap().contains("limit"));
    c.subscribe("t:2").await; // re-subscribing a held topic is fine
    c.request(json!({"action": "unsubscribe", "topic": "t:1"})).await;
    c.subscribe("t:3").await;
}

#[tokio::test]
async fn connection_caps_total_and_per_ip() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.max_connections_per_ip = 2;
    })
    .await;
    let a = gw.connect_dev("").await;
    let _b = gw.connect_dev("").await;
    let (status, body) = refused_upgrade(&gw.ws_url(""), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    drop(a);
    // The slot is released when the connection ends.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if tokio_tungstenite::connect_async(gw.ws_url("")).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "a freed slot can be reused");

    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.max_connections = 1;
    })
    .await;
    let _only = gw.connect_dev("").await;
    let (status, body) = refused_upgrade(&gw.ws_url(""), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
}

#[tokio::test]
async fn a_flood_of_garbage_does_not_affect_other_connections() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut watcher = gw.connect_dev("").await;
    watcher.subscribe("job:w").await;
    let mut flooders = Vec::new();
    for _ in 0..5 {
        let mut f = gw.connect_dev("").await;
        flooders.push(tokio::spawn(async move {
            for i in 0..300 {
                let junk = match i % 3 {
                    0 => "{{{{".to_owned(),
                    1 => json!({"action": "subscribe", "topic": 1}).to_string(),
                    _ => "\u{0}\u{1}binary-ish".to_owned(),
                };
                use futures_util::SinkExt;
                if f.ws.send(tokio_tungstenite::tungstenite::Message::text(junk)).await.is_err() {
                    break;
                }
            }
        }));
    }
    let api = gw.http();
    for i in 1..=50u64 {
        api.publish("job:w", json!({"type": "t"})).await;
        assert_eq!(watcher.recv().await["offset"].as_u64(), Some(i));
    }
    for f in flooders {
        f.await.unwrap();
    }
}

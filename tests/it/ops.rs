//! Health, readiness, metrics and graceful shutdown.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn health_ready_and_metrics() {
    let gw = TestGateway::spawn().await;
    let api = gw.http().without_key();
    assert_eq!(api.get("/health").await.0, 200);
    assert_eq!(api.get("/ready").await.0, 200);
    let mut c = gw.connect("u", json!({"topics": ["job:*"]})).await;
    c.subscribe("job:m").await;
    c.send_text("garbage").await;
    assert_eq!(c.recv().await["code"], "VALIDATION_ERROR");
    gw.http().publish("job:m", json!({"type": "t"})).await;
    c.recv().await;
    let (status, text) = api.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    for name in [
        "signalbox_connections",
        "signalbox_subscriptions",
        "signalbox_messages_received_total",
        "signalbox_events_published_total",
        "signalbox_deliveries_total",
        "signalbox_delivery_latency_seconds",
        "signalbox_slow_consumer_disconnects_total",
        "signalbox_sink_messages_total",
        "signalbox_connection_duration_seconds",
        "signalbox_errors_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert_eq!(metric(&text, "signalbox_connections"), 1.0);
    assert_eq!(metric(&text, "signalbox_subscriptions"), 3.0, "user:u, global, job:m");
    assert_eq!(metric(&text, "signalbox_events_published_total"), 1.0);
    assert_eq!(metric(&text, "signalbox_deliveries_total"), 1.0);
    assert_eq!(metric(&text, "signalbox_messages_received_total"), 2.0);
    assert_eq!(metric(&text, "signalbox_errors_total{code=\"VALIDATION_ERROR\"}"), 1.0);
    assert_eq!(metric(&text, "signalbox_delivery_latency_seconds_count"), 1.0);
    drop(c);
    gw.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_after_queued_frames_and_returns() {
    let mut gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.shutdown.grace_period = Duration::from_secs(5);
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = gw.connect_dev("").await;
        c.subscribe("job:bye").await;
        clients.push(c);
    }
    gw.http().publish("job:bye", json!({"type": "last"})).await;
    let state = gw.state.clone();
    let started = Instant::now();
    let serve = gw.begin_shutdown();
    for c in &mut clients {
        let mut before = Vec::new();
        assert_eq!(c.expect_close(&mut before).await, 1001);
        assert_eq!(before.len(), 1, "queued frames go out before the close frame");
        assert_eq!(before[0]["type"], "last");
    }
    assert!(state.is_draining());
    serve.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "clients answered the close, so no need to wait out the grace period"
    );
    assert!(tokio_tungstenite::connect_async(gw.ws_url("")).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn shutdown_does_not_wait_past_the_grace_period_for_unresponsive_clients() {
    let mut gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.shutdown.grace_period = Duration::from_secs(1);
    })
    .await;
    // A client that never reads: it never answers the close frame.
    let _mute = gw.connect_dev("").await;
    let started = Instant::now();
    gw.begin_shutdown().await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn heartbeat_drops_clients_that_stop_answering_pings() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.websocket.ping_interval = Duration::from_millis(100);
        c.websocket.pong_timeout = Duration::from_millis(200);
    })
    .await;
    // A live client answers pings (tungstenite does so while it reads) and stays.
    let mut live = gw.connect_dev("").await;
    live.expect_silence(Duration::from_millis(600)).await;
    assert_eq!(live.request(json!({"action": "ping"})).await["type"], "pong");
    // A client that stops reading stops answering pings and is dropped.
    let _mute = gw.connect_dev("").await;
    let api = gw.http();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = api.get("/api/connections").await;
        if list["connections"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "unresponsive client not dropped");
        // Reading keeps the live client answering pings while we wait.
        live.expect_silence(Duration::from_millis(50)).await;
    }
    assert_eq!(live.request(json!({"action": "ping"})).await["type"], "pong");
}

//! Routed client messages end to end (SPEC §7): a real gateway, real WebSocket clients,
//! and real sinks (redis-server here; the webhook and SQS through their own servers).

use std::time::Duration;

use serde_json::{Value, json};

use crate::servers::redis::{Redis, stream_entries, stream_len};
use crate::servers::webhook::{Behaviour, Webhook};
use crate::support::{TestGateway, metric};

const WAIT: Duration = Duration::from_secs(20);

/// Adds a `chat` redis_stream sink at `url` and routes `sendMessage` to it.
fn chat_route(config: &mut signalbox::Config, url: &str) {
    let sinks: toml::Table = toml::from_str(&format!(
        r#"
        [chat]
        kind = "redis_stream"
        url = "{url}"
        stream = "chat-in"
        timeout = "300ms"
        "#
    ))
    .unwrap();
    for (name, sink) in sinks {
        config.sinks.insert(name, sink.try_into().unwrap());
    }
    config.routes.push(
        toml::from_str(
            r#"action = "sendMessage"
sink = "chat""#,
        )
        .unwrap(),
    );
    config.limits.rate_per_second = 100_000;
    config.limits.rate_burst = 100_000;
    config.routing.retry.initial_backoff = Duration::from_millis(20);
    config.routing.retry.max_backoff = Duration::from_millis(200);
}

async fn wait_for_entries(url: &str, count: usize) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let start = tokio::time::Instant::now();
    loop {
        let len = stream_len(url, "chat-in").await;
        if len >= count {
            return stream_entries(url, "chat-in").await;
        }
        assert!(start.elapsed() < WAIT, "only {len} of {count} entries arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_action_without_a_route_is_unknown_and_the_connection_carries_on() {
    let redis = Redis::start();
    let gw = TestGateway::spawn_with(|c| {
        chat_route(c, &redis.url());
        c.routes.push(toml::from_str("action = \"forward\"\nwhen = { type = \"dev\" }\nsink = \"chat\"").unwrap());
    })
    .await;
    let mut client = gw.connect("u1", json!({})).await;
    let reply = client.request(json!({"action": "launch_rockets", "requestId": "r1"})).await;
    assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some("UNKNOWN_ACTION")), "{reply}");
    assert_eq!(reply["requestId"], "r1");
    let reply = client.request(json!({"action": "forward", "type": "qa", "requestId": "r2"})).await;
    assert_eq!(reply["code"], "UNKNOWN_ACTION", "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("matches"), "{reply}");
    // Hostile input on a routed action: refused before routing, connection unaffected.
    client.send_text(r#"{"action":"sendMessage","text":"#).await;
    assert_eq!(client.recv().await["code"], "VALIDATION_ERROR");
    let huge = json!({"action": "sendMessage", "requestId": "big", "text": "x".repeat(70 * 1024)});
    let reply = client.request(huge).await;
    assert_eq!(
        (reply["code"].as_str(), reply["requestId"].as_str()),
        (Some("PAYLOAD_TOO_LARGE"), Some("big")),
        "{reply}"
    );
    let reply = client.request(json!({"action": "sendMessage", "requestId": 7})).await;
    assert_eq!(reply["code"], "VALIDATION_ERROR", "{reply}");
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    assert!(stream_entries(&redis.url(), "chat-in").await.is_empty(), "nothing was routed");
}

#[tokio::test]
async fn a_routed_message_is_accepted_once_the_sink_has_it_inline() {
    let redis = Redis::start();
    let gw = TestGateway::spawn_with(|c| chat_route(c, &redis.url())).await;
    let mut client = gw.connect("u1", json!({})).await;
    let text = r#"{"action":"sendMessage","requestId":"r1","data":{"text":"hi \u00e9"},"n":1}"#;
    client.send_text(text).await;
    let accepted = client.recv().await;
    assert_eq!(accepted["type"], "accepted", "{accepted}");
    assert_eq!(accepted["requestId"], "r1");
    let message_id = accepted["messageId"].as_str().unwrap();
    assert!(message_id.starts_with("msg_"), "{accepted}");
    // Inline: accepted means the stream already has it.
    let entries = stream_entries(&redis.url(), "chat-in").await;
    assert_eq!(entries.len(), 1);
    let fields = &entries[0].1;
    assert_eq!(fields["messageId"], message_id);
    assert_eq!(fields["connectionId"], client.id());
    assert_eq!(fields["userId"], "u1");
    let envelope: Value = serde_json::from_str(&fields["data"]).unwrap();
    assert_eq!(envelope["message"], serde_json::from_str::<Value>(text).unwrap());
    assert_eq!(envelope["action"], "sendMessage");
    let metrics = gw.http().get("/metrics").await.1.as_str().unwrap().to_owned();
    assert_eq!(metric(&metrics, r#"signalbox_sink_messages_total{sink="chat",outcome="delivered"}"#), 1.0);
}

#[tokio::test]
async fn inline_a_sink_that_is_down_answers_sink_unavailable_within_the_deadline() {
    let mut redis = Redis::start();
    let url = redis.url();
    redis.process.kill();
    let gw = TestGateway::spawn_with(|c| {
        chat_route(c, &url);
        c.routing.deadline = Duration::from_millis(800);
    })
    .await;
    let mut client = gw.connect("u1", json!({})).await;
    let started = std::time::Instant::now();
    let reply = client.request(json!({"action": "sendMessage", "text": "hi", "requestId": "r9"})).await;
    assert_eq!(reply["code"], "SINK_UNAVAILABLE", "{reply}");
    assert_eq!(reply["requestId"], "r9");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    let (status, body) = gw.http().get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["sinks"]["chat"]["status"], "down", "{body}");
}

#[tokio::test]
async fn the_outbox_accepts_during_an_outage_and_delivers_everything_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let (url, port) = (redis.url(), redis.process.port);
    redis.process.kill();
    let configure = |c: &mut signalbox::Config| {
        chat_route(c, &url);
        c.storage.data_dir = Some(data.path().to_owned());
        // The sink stays down through shutdown: don't wait the default 10 s for a flush.
        c.shutdown.grace_period = Duration::from_millis(500);
    };
    let gw = TestGateway::spawn_with(configure).await;
    let mut client = gw.connect("u1", json!({})).await;
    let mut ids = Vec::new();
    for n in 0..200 {
        let reply = client.request(json!({"action": "sendMessage", "n": n})).await;
        assert_eq!(reply["type"], "accepted", "{reply}");
        ids.push(reply["messageId"].as_str().unwrap().to_owned());
    }
    let (status, body) = gw.http().get("/ready").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")), "{body}");
    assert_eq!(body["outbox"]["pending"], 200, "{body}");
    gw.shutdown().await.unwrap();

    // A new gateway on the same data_dir, then the sink comes back.
    let gw = TestGateway::spawn_with(configure).await;
    let _redis = Redis::start_on(port);
    let entries = wait_for_entries(&url, 200).await;
    let delivered: Vec<&str> = entries.iter().map(|(_, f)| f["messageId"].as_str()).collect();
    assert_eq!(delivered, ids, "every message, once, in order");
    let metrics = gw.http().get("/metrics").await.1.as_str().unwrap().to_owned();
    assert_eq!(metric(&metrics, r#"signalbox_sink_messages_total{sink="chat",outcome="delivered"}"#), 200.0);
}

#[tokio::test]
async fn ten_thousand_messages_through_a_sink_outage_arrive_with_zero_loss() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let (url, port) = (redis.url(), redis.process.port);
    redis.process.kill();
    let gw = TestGateway::spawn_with(|c| {
        chat_route(c, &url);
        c.storage.data_dir = Some(data.path().to_owned());
    })
    .await;
    const CLIENTS: usize = 20;
    const EACH: usize = 500;
    let mut senders = Vec::new();
    for c in 0..CLIENTS {
        let mut client = gw.connect(&format!("u{c}"), json!({})).await;
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EACH);
            for n in 0..EACH {
                let reply = client.request(json!({"action": "sendMessage", "client": c, "n": n})).await;
                assert_eq!(reply["type"], "accepted", "{reply}");
                ids.push(reply["messageId"].as_str().unwrap().to_owned());
            }
            (client.id(), ids)
        }));
    }
    let mut sent = Vec::new();
    for sender in senders {
        sent.push(sender.await.unwrap());
    }
    let _redis = Redis::start_on(port);
    let entries = wait_for_entries(&url, CLIENTS * EACH).await;
    assert_eq!(entries.len(), CLIENTS * EACH, "no duplicates");
    for (connection, ids) in &sent {
        let arrived: Vec<&str> = entries
            .iter()
            .filter(|(_, f)| f["connectionId"] == *connection)
            .map(|(_, f)| f["messageId"].as_str())
            .collect();
        assert_eq!(&arrived, ids, "connection {connection}: all of its messages, in order");
    }
}

/// Adds a `pipeline` http sink at `url` and routes `cancel_job` to it.
fn pipeline_route(config: &mut signalbox::Config, url: &str) {
    let sink: toml::Table = toml::from_str(&format!("kind = \"http\"\nurl = \"{url}\"\ntimeout = \"2s\"")).unwrap();
    config.sinks.insert("pipeline".into(), sink.try_into().unwrap());
    config.routes.push(toml::from_str("action = \"cancel_job\"\nsink = \"pipeline\"").unwrap());
    config.routing.retry.initial_backoff = Duration::from_millis(20);
    config.routing.retry.max_backoff = Duration::from_millis(100);
}

#[tokio::test]
async fn inline_a_webhook_reply_follows_accepted_and_a_refusal_is_sink_unavailable() {
    let webhook = Webhook::start().await;
    let gw = TestGateway::spawn_with(|c| pipeline_route(c, &webhook.url())).await;
    let mut client = gw.connect("u1", json!({})).await;
    webhook.set(Behaviour::Json(r#"{"cancelled":true}"#));
    let reply = client.request(json!({"action": "cancel_job", "job_id": "j1", "requestId": "r1"})).await;
    assert_eq!(reply["type"], "accepted", "{reply}");
    assert_eq!(client.recv().await, json!({"cancelled": true}));

    webhook.set(Behaviour::Status(400));
    let reply = client.request(json!({"action": "cancel_job", "job_id": "j2", "requestId": "r2"})).await;
    assert_eq!(
        (reply["code"].as_str(), reply["requestId"].as_str()),
        (Some("SINK_UNAVAILABLE"), Some("r2")),
        "{reply}"
    );
    assert_eq!(webhook.requests().len(), 2, "a refusal is not retried");

    webhook.set(Behaviour::Status(500));
    let reply = client.request(json!({"action": "cancel_job", "job_id": "j3"})).await;
    assert_eq!(reply["code"], "SINK_UNAVAILABLE", "{reply}");
    assert!(webhook.requests().len() > 3, "a failure is retried: {}", webhook.requests().len());
    let metrics = gw.http().get("/metrics").await.1.as_str().unwrap().to_owned();
    assert_eq!(metric(&metrics, r#"signalbox_sink_messages_total{sink="pipeline",outcome="unavailable"}"#), 2.0);
    assert!(metric(&metrics, r#"signalbox_sink_retries_total{sink="pipeline"}"#) >= 2.0);
}

#[tokio::test]
async fn from_the_outbox_a_refused_message_is_dead_lettered_and_the_next_one_delivered() {
    let data = tempfile::tempdir().unwrap();
    let webhook = Webhook::start().await;
    webhook.set(Behaviour::Status(400));
    let gw = TestGateway::spawn_with(|c| {
        pipeline_route(c, &webhook.url());
        c.storage.data_dir = Some(data.path().to_owned());
    })
    .await;
    let mut client = gw.connect("u1", json!({})).await;
    let refused = client.request(json!({"action": "cancel_job", "job_id": "bad"})).await;
    assert_eq!(refused["type"], "accepted", "{refused}");
    webhook.wait_for(1).await;
    let dead_letters = data.path().join("dead-letters.jsonl");
    let start = tokio::time::Instant::now();
    while std::fs::read_to_string(&dead_letters).map_or(true, |t| t.is_empty()) {
        assert!(start.elapsed() < WAIT, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line: Value = serde_json::from_str(std::fs::read_to_string(&dead_letters).unwrap().trim()).unwrap();
    assert_eq!(line["sink"], "pipeline");
    assert_eq!(line["message"]["messageId"], refused["messageId"], "{line}");
    webhook.set(Behaviour::NoContent);
    let good = client.request(json!({"action": "cancel_job", "job_id": "good"})).await;
    assert_eq!(good["type"], "accepted", "{good}");
    let body: Value = serde_json::from_str(webhook.wait_for(2).await[1].json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["job_id"], "good");
    let metrics = gw.http().get("/metrics").await.1.as_str().unwrap().to_owned();
    assert_eq!(metric(&metrics, r#"signalbox_sink_messages_total{sink="pipeline",outcome="dead_lettered"}"#), 1.0);
}

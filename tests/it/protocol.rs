//! Client actions, aliases, requestId echo, and bad input.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn subscribe_with_topic_and_every_alias_at_top_level_or_in_data() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    for (msg, topic) in [
        (json!({"action": "subscribe", "topic": "project:1"}), "project:1"),
        (json!({"action": "subscribe", "data": {"topic": "project:2"}}), "project:2"),
        (json!({"action": "subscribe", "room": "chat:3"}), "chat:3"),
        (json!({"action": "subscribe", "project_id": "p4"}), "project:p4"),
        (json!({"action": "subscribe", "data": {"job_id": "job_20240115_abc123"}}), "job:job_20240115_abc123"),
        (json!({"action": "subscribe", "agent_id": "a6"}), "agent:a6"),
    ] {
        let r = c.request(msg).await;
        assert_eq!((r["type"].as_str(), r["topic"].as_str()), (Some("subscribed"), Some(topic)), "{r}");
        assert_eq!(r["offset"], 0);
        assert_eq!(r["recovered"], false);
        assert!(r["epoch"].is_string());
    }
    let r = c.request(json!({"action": "unsubscribe", "data": {"project_id": "p4"}, "requestId": "u"})).await;
    assert_eq!(
        (r["type"].as_str(), r["topic"].as_str(), r["requestId"].as_str()),
        (Some("unsubscribed"), Some("project:p4"), Some("u"))
    );
}

#[tokio::test]
async fn subscribed_offset_is_last_assigned_and_resubscribe_is_idempotent() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    for _ in 0..3 {
        api.publish("job:j", json!({"type": "progress_update"})).await;
    }
    let mut c = gw.connect_dev("").await;
    assert_eq!(c.subscribe("job:j").await["offset"], 3);
    assert_eq!(c.subscribe("job:j").await["offset"], 3);
    api.publish("job:j", json!({"type": "progress_update"})).await;
    let ev = c.recv().await;
    assert_eq!(ev["offset"], 4, "one delivery despite two subscribes");
    c.expect_silence(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn query_parameters_subscribe_at_connect() {
    let gw = TestGateway::spawn().await;
    let token = gw.token("u", json!({"topics": ["project:*", "job:*"]}));
    let mut c =
        Client::connect(&gw.ws_url(&format!("?token={token}&project_id=proj_123&topic=job:9&agent_id=a1"))).await;
    let r1 = c.recv().await;
    assert_eq!((r1["type"].as_str(), r1["topic"].as_str()), (Some("subscribed"), Some("project:proj_123")));
    let r2 = c.recv().await;
    assert_eq!(r2["topic"], "job:9");
    let r3 = c.recv().await;
    assert_eq!(
        (r3["type"].as_str(), r3["code"].as_str()),
        (Some("error"), Some("AUTHORIZATION_ERROR")),
        "agent:a1 is not in the claims"
    );
    // The connection stays open.
    assert_eq!(c.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn ping_status_subscriptions_and_request_id_echo() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    let r = c.request(json!({"action": "ping", "requestId": "p1"})).await;
    assert_eq!(r, json!({"type": "pong", "requestId": "p1"}));
    gw.http().publish("job:s", json!({"type": "progress_update"})).await;
    let r = c.request(json!({"action": "request_status", "job_id": "s", "requestId": "s1"})).await;
    assert_eq!(
        (r["type"].as_str(), r["topic"].as_str(), r["offset"].as_u64()),
        (Some("status"), Some("job:s"), Some(1))
    );
    assert_eq!((r["state"].clone(), r["requestId"].as_str()), (Value::Null, Some("s1")));
    let r = c.request(json!({"action": "subscriptions", "requestId": "l"})).await;
    assert_eq!(r["requestId"], "l");
    assert!(r["topics"].as_array().unwrap().contains(&json!("global")));
}

#[tokio::test]
async fn client_publish_only_where_namespace_allows() {
    use signalbox::config::NamespaceConfig;
    let gw = TestGateway::spawn_with(|c| {
        c.namespaces.insert("chat".into(), NamespaceConfig { client_publish: true, ..Default::default() });
    })
    .await;
    let mut a = gw.connect("a", json!({"topics": ["chat:*", "project:*"]})).await;
    let mut b = gw.connect("b", json!({"topics": ["chat:*"]})).await;
    b.subscribe("chat:room1").await;
    let r = a.request(json!({"action": "publish", "topic": "chat:room1", "event": {"type": "message", "text": "hi"}, "requestId": "m1"})).await;
    assert_eq!(
        (r["type"].as_str(), r["offset"].as_u64(), r["requestId"].as_str()),
        (Some("published"), Some(1), Some("m1")),
        "{r}"
    );
    let ev = b.recv().await;
    assert_eq!((ev["text"].as_str(), ev["offset"].as_u64()), (Some("hi"), Some(1)));
    let r = a.request(json!({"action": "publish", "topic": "project:1", "event": {"type": "x"}})).await;
    assert_eq!(r["code"], "AUTHORIZATION_ERROR");
    let r = a.request(json!({"action": "publish", "topic": "chat:room1", "event": {"no_type": 1}})).await;
    assert_eq!(r["code"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn malformed_and_wrong_input_gets_clear_errors_and_connection_survives() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "VALIDATION_ERROR"),
        ("[1,2]".into(), "VALIDATION_ERROR"),
        ("\"str\"".into(), "VALIDATION_ERROR"),
        ("{}".into(), "VALIDATION_ERROR"),
        (json!({"action": 5}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe"}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": 42}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": "has space"}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": "x".repeat(300)}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": "job:"}).to_string(), "VALIDATION_ERROR"),
        (
            json!({"action": "subscribe", "topic": "a", "since": {"offset": -1, "epoch": "e"}}).to_string(),
            "VALIDATION_ERROR",
        ),
        (json!({"action": "subscribe", "topic": "a", "since": {"offset": "1"}}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": "a", "filters": {"x": {"gtt": 1}}}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": "a", "filters": [1]}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "subscribe", "topic": "a", "filters": {"x": [1, 2]}}).to_string(), "VALIDATION_ERROR"),
        (
            json!({"action": "subscribe", "topic": "a", "since": {"offset": 1.5, "epoch": "e"}}).to_string(),
            "VALIDATION_ERROR",
        ),
        (
            json!({"action": "subscribe", "topic": "a", "since": {"offset": 1, "epoch": 7}}).to_string(),
            "VALIDATION_ERROR",
        ),
        (
            r#"{"action":"subscribe","topic":"a","since":{"offset":99999999999999999999999,"epoch":"e"}}"#.into(),
            "VALIDATION_ERROR",
        ),
        (
            json!({"action": "publish", "topic": "a", "event": {"type": "t"}, "retain": "yes"}).to_string(),
            "VALIDATION_ERROR",
        ),
        (json!({"action": "publish", "topic": "a", "event": [1]}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "refresh", "token": 5}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "ping", "requestId": {"x": 1}}).to_string(), "VALIDATION_ERROR"),
        (json!({"action": "launch_missiles", "requestId": "r9"}).to_string(), "UNKNOWN_ACTION"),
    ];
    for (text, code) in &cases {
        c.send_text(text.clone()).await;
        let r = c.recv().await;
        assert_eq!((r["type"].as_str(), r["code"].as_str()), (Some("error"), Some(*code)), "{text} -> {r}");
        assert!(!r["message"].as_str().unwrap().is_empty());
    }
    c.send_text(json!({"action": "nope", "requestId": "r9"}).to_string()).await;
    assert_eq!(c.recv().await["requestId"], "r9");
    // Binary frames are refused, the connection stays.
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(c.recv().await["code"], "VALIDATION_ERROR");
    assert_eq!(c.request(json!({"action": "ping"})).await["type"], "pong");
}

/// `[actions]` aliases (SPEC §9.3): a client written against API Gateway route keys sends
/// `subscribeToDeals` with its parameters in `data`, and gets what `subscribe` gives.
#[tokio::test]
async fn an_action_alias_behaves_as_its_built_in_action() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.actions.insert("subscribeToDeals".into(), "subscribe".into());
        c.actions.insert("leaveDeals".into(), "unsubscribe".into());
    })
    .await;
    let mut c = gw.connect_dev("").await;
    let r = c.request(json!({"action": "subscribeToDeals", "data": {"topic": "deals:7"}, "requestId": "a1"})).await;
    assert_eq!(
        (&r["type"], &r["topic"], &r["requestId"]),
        (&json!("subscribed"), &json!("deals:7"), &json!("a1")),
        "{r}"
    );
    let offset = gw.http().publish("deals:7", json!({"type": "deal.updated"})).await;
    let event = c.recv().await;
    assert_eq!((&event["type"], event["offset"].as_u64()), (&json!("deal.updated"), Some(offset)), "{event}");
    let r = c.request(json!({"action": "leaveDeals", "topic": "deals:7", "requestId": "a2"})).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    let r = c.request(json!({"action": "notAnAlias", "requestId": "a3"})).await;
    assert_eq!(r["code"], "UNKNOWN_ACTION", "other names are still routed (here: no route): {r}");
}

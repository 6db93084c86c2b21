//! The `http` sink against a real local webhook: the event as the webhook receives it, the
//! reply relayed, every answer classified, timeouts and outages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use signalbox::sinks::http::{self, HttpConfig, HttpSink};
use signalbox::sinks::{MessageId, RoutedMessage, Sink, SinkError};

use crate::measure;
use crate::servers::free_port;
use crate::servers::webhook::{Behaviour, Webhook};

fn config(url: &str) -> HttpConfig {
    HttpConfig {
        url: url.into(),
        headers: BTreeMap::new(),
        timeout: Duration::from_secs(2),
        stage: "signalbox".into(),
        domain_name: None,
    }
}

fn sink(url: &str) -> HttpSink {
    http::build("pipeline", &config(url)).unwrap()
}

fn message(n: u32) -> RoutedMessage {
    RoutedMessage {
        message_id: MessageId::generate(),
        sink: "pipeline".into(),
        action: "sendMessage".into(),
        connection_id: "conn_1_a".into(),
        user_id: "user-7".into(),
        request_id: Some(format!("r{n}")),
        received_at_ms: 1_795_341_600_123,
        connected_at_ms: 1_795_341_590_000,
        source_ip: "203.0.113.9".into(),
        body: format!(r#"{{"action":"sendMessage",  "n":{n}, "text":"h\u00e9\"llo"}}"#),
    }
}

#[tokio::test]
async fn the_webhook_receives_an_api_gateway_message_event() {
    let webhook = Webhook::start().await;
    let mut config = config(&webhook.url());
    config.headers.insert("Authorization".into(), "Bearer hook-secret".into());
    config.headers.insert("X-Team".into(), "dev".into());
    config.stage = "prod".into();
    let sink = http::build("pipeline", &config).unwrap();
    let message = message(1);

    let delivered = sink.send(&message).await.unwrap();
    assert_eq!(delivered.reply, None, "a 204 relays nothing");

    let requests = webhook.wait_for(1).await;
    let request = &requests[0];
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-signalbox-message-id"), Some(message.message_id.as_str()));
    assert_eq!(request.header("authorization"), Some("Bearer hook-secret"));
    assert_eq!(request.header("x-team"), Some("dev"));
    let event = request.json();
    let id = message.message_id.as_str();
    assert_eq!(
        event["requestContext"],
        json!({
            "routeKey": "sendMessage",
            "eventType": "MESSAGE",
            "messageId": id,
            "extendedRequestId": id,
            "requestTime": "22/Nov/2026:10:00:00 +0000",
            "messageDirection": "IN",
            "stage": "prod",
            "connectedAt": 1_795_341_590_000_i64,
            "requestTimeEpoch": 1_795_341_600_123_i64,
            "identity": {"sourceIp": "203.0.113.9"},
            "requestId": "r1",
            "domainName": "127.0.0.1",
            "connectionId": "conn_1_a",
            "apiId": "signalbox",
            "authorizer": {"principalId": "user-7"},
        })
    );
    assert_eq!(event["body"].as_str(), Some(message.body.as_str()), "the frame text exactly");
    assert_eq!(event["isBase64Encoded"], false);
}

#[tokio::test]
async fn the_configured_domain_name_replaces_the_url_host() {
    let webhook = Webhook::start().await;
    let mut config = config(&webhook.url());
    config.domain_name = Some("ws.example.com".into());
    let sink = http::build("pipeline", &config).unwrap();
    sink.send(&message(1)).await.unwrap();
    assert_eq!(webhook.wait_for(1).await[0].json()["requestContext"]["domainName"], "ws.example.com");
}

#[tokio::test]
async fn a_json_reply_is_relayed_byte_for_byte() {
    let webhook = Webhook::start().await;
    let body = "{\"type\":\"reply\",  \"ok\": true,\n \"text\":\"h\\u00e9\"}";
    webhook.set(Behaviour::Json(body));
    let delivered = sink(&webhook.url()).send(&message(1)).await.unwrap();
    assert_eq!(delivered.reply.as_deref(), Some(body.as_bytes()));
}

#[tokio::test]
async fn an_empty_or_non_json_answer_relays_nothing() {
    let webhook = Webhook::start().await;
    let sink = sink(&webhook.url());
    for behaviour in [Behaviour::NoContent, Behaviour::EmptyOk, Behaviour::Text("OK"), Behaviour::Json("{\"cut")] {
        webhook.set(behaviour.clone());
        let delivered = sink.send(&message(1)).await.unwrap_or_else(|e| panic!("{behaviour:?}: {e}"));
        assert_eq!(delivered.reply, None, "{behaviour:?}");
    }
}

#[tokio::test]
async fn a_reply_over_1_mib_is_delivered_but_not_relayed() {
    let webhook = Webhook::start().await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    webhook.set(Behaviour::Json(Box::leak(big.into_boxed_str())));
    let delivered = sink(&webhook.url()).send(&message(1)).await.unwrap();
    assert_eq!(delivered.reply, None);
}

#[tokio::test]
async fn error_answers_are_classified_500_failed_503_unavailable_400_rejected() {
    let webhook = Webhook::start().await;
    let sink = sink(&webhook.url());
    let cases = [
        (500, "failed"),
        (503, "unavailable"),
        (400, "rejected"),
        (429, "unavailable"),
        (504, "unavailable"),
        (404, "rejected"),
        (302, "rejected"),
    ];
    for (status, expected) in cases {
        webhook.set(Behaviour::Status(status));
        let error = sink.send(&message(1)).await.unwrap_err();
        let class = match error {
            SinkError::Unavailable(_) => "unavailable",
            SinkError::Failed(_) => "failed",
            SinkError::Rejected(_) => "rejected",
        };
        assert_eq!(class, expected, "{status}: {error:?}");
        assert!(error.to_string().contains(&format!("HTTP {status}")), "{error}");
        assert!(error.to_string().contains(&format!("webhook says {status}")), "the answer is quoted: {error}");
    }
    assert_eq!(webhook.requests().len(), cases.len(), "one request per send: the sink never retries");
}

#[tokio::test]
async fn a_slow_webhook_is_unavailable_within_the_timeout() {
    let webhook = Webhook::start().await;
    webhook.set(Behaviour::Slow(Duration::from_secs(30)));
    let mut config = config(&webhook.url());
    config.timeout = Duration::from_millis(300);
    let sink = http::build("pipeline", &config).unwrap();

    let start = Instant::now();
    let error = sink.send(&message(1)).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(error, SinkError::Unavailable(_)), "{error:?}");
    assert!(took >= Duration::from_millis(300), "gave up early: {took:?}");
    assert!(took < Duration::from_millis(1_000), "took {took:?} for a 300 ms timeout");
}

#[tokio::test]
async fn a_stopped_webhook_is_unavailable() {
    let mut webhook = Webhook::start().await;
    let sink = sink(&webhook.url());
    sink.send(&message(1)).await.unwrap();
    webhook.stop().await;

    let start = Instant::now();
    let error = sink.send(&message(2)).await.unwrap_err();
    assert!(matches!(error, SinkError::Unavailable(_)), "{error:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "a refused connection is known at once: {:?}", start.elapsed());
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let error = sink(&url).send(&message(1)).await.unwrap_err();
    assert!(matches!(error, SinkError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn check_is_ok_while_the_webhook_answers_even_405() {
    let webhook = Webhook::start().await;
    sink(&webhook.url()).check().await.unwrap();
    assert!(webhook.requests().is_empty(), "a check posts no message");
    let elsewhere = format!("http://{}/no-such-route", webhook.addr);
    sink(&elsewhere).check().await.unwrap();
}

#[tokio::test]
async fn check_is_unavailable_when_the_webhook_is_down() {
    let mut webhook = Webhook::start().await;
    let sink = sink(&webhook.url());
    sink.check().await.unwrap();
    webhook.stop().await;
    let error = sink.check().await.unwrap_err();
    assert!(matches!(error, SinkError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn a_batch_is_posted_in_order_one_request_each() {
    let webhook = Webhook::start().await;
    let sink = sink(&webhook.url());
    let batch: Vec<_> = (0..20).map(message).collect();
    let outcome = sink.send_batch(&batch).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.delivered.len(), 20);
    let ids: Vec<_> =
        webhook.wait_for(20).await.iter().map(|r| r.json()["requestContext"]["messageId"].clone()).collect();
    let expected: Vec<_> = batch.iter().map(|m| json!(m.message_id.as_str())).collect();
    assert_eq!(ids, expected);
}

/// Throughput through one sink against the local webhook; a measurement, not a check.
/// `cargo test --release --test it measure_http -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement: run in release with --ignored --nocapture"]
async fn measure_http_throughput() {
    let webhook = Webhook::start().await;
    let sink = std::sync::Arc::new(sink(&webhook.url()));
    let count = 20_000_u32;
    let messages: Vec<_> = (0..count).map(message).collect();

    measure::one_at_a_time("http send, one at a time", sink.as_ref(), &messages).await;
    measure::in_batches("http send_batch of 100 (sequential POSTs)", sink.as_ref(), &messages, 100).await;
    for in_flight in [16_usize, 64] {
        measure::in_flight(&format!("http send, {in_flight} in flight"), &sink, &messages, in_flight).await;
    }
}

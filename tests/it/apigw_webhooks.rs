//! API Gateway's lifecycle webhooks (SPEC §9.3, `[apigw] connect_url` and `disconnect_url`)
//! end to end: a real gateway, real WebSocket clients and a real local webhook that
//! accepts, refuses (by status, or by a Lambda-proxy `statusCode`) or is down.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::servers::webhook::{Behaviour, Webhook};
use crate::support::*;

/// A gateway whose `$connect` and `$disconnect` events both go to `hook`.
async fn gateway_with(hook: &Webhook) -> TestGateway {
    let url = hook.url();
    TestGateway::spawn_with(|c| {
        c.apigw.connect_url = Some(url.clone());
        c.apigw.disconnect_url = Some(url);
        c.apigw.stage = "prod".into();
    })
    .await
}

async fn metrics_text(gw: &TestGateway) -> String {
    let (status, text) = gw.http().get("/metrics").await;
    assert_eq!(status, 200);
    text.as_str().unwrap().to_owned()
}

/// The events received so far with this `routeKey`.
fn events(hook: &Webhook, route_key: &str) -> Vec<Value> {
    hook.requests().iter().map(|r| r.json()).filter(|e| e["requestContext"]["routeKey"] == route_key).collect()
}

/// Waits until `count` events with this `routeKey` arrived; returns them.
async fn wait_events(hook: &Webhook, route_key: &str, count: usize) -> Vec<Value> {
    let mut seen = 0;
    loop {
        let found = events(hook, route_key);
        if found.len() >= count {
            return found;
        }
        seen += 1;
        hook.wait_for(hook.requests().len() + 1).await;
        assert!(seen < 100, "{count} {route_key} events never arrived");
    }
}

#[tokio::test]
async fn connect_event_precedes_the_upgrade_and_disconnect_follows_the_close() {
    let hook = Webhook::start().await;
    let gw = gateway_with(&hook).await;
    let token = gw.token("user-7", json!({}));
    let url = gw.ws_url(&format!("?token={token}&job_id=j1&x=1&x=2"));
    let mut client = Client::connect_with_headers(&url, &[("user-agent", "seed-browser/1.0")]).await.unwrap();
    let id = client.id();

    // Asked before the upgrade completed, with the id the connection then has.
    let connect = &events(&hook, "$connect")[0];
    let c = &connect["requestContext"];
    assert_eq!(c["eventType"], "CONNECT");
    assert_eq!(c["connectionId"], id.as_str());
    assert_eq!(c["stage"], "prod");
    assert_eq!(c["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(c["identity"]["userAgent"], "seed-browser/1.0");
    assert_eq!(c["authorizer"]["principalId"], "user-7");
    assert_eq!(c["apiId"], "signalbox");
    assert_eq!(connect["queryStringParameters"]["token"], token.as_str());
    assert_eq!(connect["multiValueQueryStringParameters"]["x"], json!(["1", "2"]));
    assert_eq!(connect["headers"]["User-Agent"], "seed-browser/1.0");
    assert_eq!(connect["headers"]["Host"], gw.addr.to_string());
    assert_eq!(connect["isBase64Encoded"], false);

    // The client closes with 1000: `$disconnect` says so.
    let frame = CloseFrame { code: 1000.into(), reason: "bye".into() };
    client.ws.send(Message::Close(Some(frame))).await.unwrap();
    let disconnect = wait_events(&hook, "$disconnect", 1).await;
    let c = &disconnect[0]["requestContext"];
    assert_eq!(c["eventType"], "DISCONNECT");
    assert_eq!(c["connectionId"], id.as_str());
    assert_eq!(c["disconnectStatusCode"], 1000);
    assert_eq!(c["disconnectReason"], "Client-side close frame status code '1000' and reason 'bye'");
    assert_eq!(c["authorizer"]["principalId"], "user-7");
    // One connection, one start time, as API Gateway reports it.
    assert_eq!(c["connectedAt"], connect["requestContext"]["connectedAt"]);
}

#[tokio::test]
async fn a_backend_close_and_a_lost_client_are_reported_with_their_codes() {
    let hook = Webhook::start().await;
    let gw = gateway_with(&hook).await;

    let mut closed = gw.connect("u1", json!({})).await;
    let (status, _) = gw.http().delete(&format!("/@connections/{}", closed.id())).await;
    assert_eq!(status, 204);
    assert_eq!(closed.expect_close(&mut Vec::new()).await, 1000);
    let events = wait_events(&hook, "$disconnect", 1).await;
    assert_eq!(events[0]["requestContext"]["disconnectStatusCode"], 1000);
    assert_eq!(events[0]["requestContext"]["disconnectReason"], "closed by backend");

    // A client that vanishes without a close frame: 1006, as API Gateway reports it.
    let lost = gw.connect("u2", json!({})).await;
    let lost_id = lost.id();
    drop(lost);
    let events = wait_events(&hook, "$disconnect", 2).await;
    let c = &events[1]["requestContext"];
    assert_eq!((c["connectionId"].as_str(), c["disconnectStatusCode"].as_u64()), (Some(lost_id.as_str()), Some(1006)));
}

#[tokio::test]
async fn a_refusing_connect_webhook_refuses_the_upgrade_with_its_status() {
    let hook = Webhook::start().await;
    let gw = gateway_with(&hook).await;
    let url = gw.ws_url(&format!("?token={}", gw.token("u1", json!({}))));

    hook.set(Behaviour::Status(401));
    let (status, body) = refused_upgrade(&url, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "AUTHENTICATION_ERROR");

    // A handler behind a plain HTTP adapter answering 200 with its Lambda-proxy result.
    hook.set(Behaviour::Json(r#"{"statusCode": 403, "body": "\"Invalid authentication token\""}"#));
    let (status, body) = refused_upgrade(&url, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "AUTHORIZATION_ERROR");

    // Refused connections never opened: no `$disconnect` for them.
    hook.set(Behaviour::Json(r#"{"statusCode": 200, "body": "\"Connected\""}"#));
    let client = gw.connect("u1", json!({})).await;
    assert_eq!(events(&hook, "$connect").len(), 3);
    assert!(events(&hook, "$disconnect").is_empty());
    let metrics = metrics_text(&gw).await;
    assert_eq!(metric(&metrics, "signalbox_connections_refused_total{reason=\"connect_hook\"}"), 2.0);
    drop(client);
}

#[tokio::test]
async fn a_connect_webhook_that_is_down_refuses_with_502_and_the_server_carries_on() {
    let mut hook = Webhook::start().await;
    let gw = gateway_with(&hook).await;
    hook.stop().await;
    let url = gw.ws_url(&format!("?token={}", gw.token("u1", json!({}))));
    let (status, body) = refused_upgrade(&url, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("$connect webhook is unavailable"), "{body}");
    let metrics = metrics_text(&gw).await;
    assert_eq!(metric(&metrics, "signalbox_apigw_webhook_failures_total{event=\"connect\"}"), 1.0);
    // The API and the rest of the server are unaffected.
    assert_eq!(gw.http().get("/api/connections").await.0, 200);
}

#[tokio::test]
async fn without_a_token_the_webhook_is_not_asked() {
    let hook = Webhook::start().await;
    let gw = gateway_with(&hook).await;
    let (status, _) = refused_upgrade(&gw.ws_url(""), &[]).await;
    assert_eq!(status, 401);
    // Authentication comes first: the webhook never sees an unauthenticated client.
    let other = gw.connect("u1", json!({})).await;
    assert_eq!(events(&hook, "$connect").len(), 1);
    drop(other);
}

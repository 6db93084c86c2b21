//! The edge around the upgrade and the API (issue 11): exact Origin checks, connect-time
//! subscriptions that never cut the client, `expiresAt` for any accepted `exp`, JSON
//! errors from every `/api` failure, one JSON nesting limit, and `requestId` on oversize
//! frames.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

use crate::support::*;

/// A response read off a raw TCP connection.
struct RawResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `head` (request line and headers, without the blank line) as raw bytes, so
/// headers no client library would send (non-ASCII, repeated) reach the server as written.
async fn raw_request(gw: &TestGateway, head: &[u8]) -> RawResponse {
    let exchange = async {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        let mut request = head.to_vec();
        request.extend_from_slice(b"\r\n\r\n");
        tcp.write_all(&request).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed before answering: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, Vec<u8>)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| String::from_utf8_lossy(v).parse::<usize>().unwrap());
        let mut body = buf[end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the body ended early");
            body.extend_from_slice(&chunk[..n]);
        }
        RawResponse { status, headers, body }
    };
    tokio::time::timeout(WAIT, exchange).await.expect("an answer within 10 s")
}

/// The request head of a WebSocket upgrade to `/ws` with `extra` header lines.
fn upgrade_head(gw: &TestGateway, extra: &[&[u8]]) -> Vec<u8> {
    let mut head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        gw.addr
    )
    .into_bytes();
    for line in extra {
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(line);
    }
    head
}

/// Asserts a refused upgrade's JSON body: both the frame shape and the API shape.
fn assert_refusal_body(body: &Value, code: &str) {
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["message"], body["error"]["message"], "{body}");
}

const APP: &str = "https://app.example.com";

#[tokio::test]
async fn origin_must_be_one_header_equal_byte_for_byte() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.allowed_origins = vec![APP.into()];
    })
    .await;
    let refused: [&[&[u8]]; 6] = [
        &[b"Origin: https://evil.example.com"],
        &[b"Origin: https://evil.example.com\xff"],
        &[b"Origin: https://app.example.com\xff"],
        &[b"Origin: https://app.example.com", b"Origin: https://evil.example.com"],
        &[b"Origin: https://app.example.com", b"Origin: https://app.example.com"],
        &[b"Origin: HTTPS://APP.EXAMPLE.COM"],
    ];
    for lines in refused {
        let r = raw_request(&gw, &upgrade_head(&gw, lines)).await;
        assert_eq!(r.status, 403, "{lines:?}");
        assert_eq!(r.header("content-type"), Some(&b"application/json"[..]), "{lines:?}");
        assert_refusal_body(&r.json(), "AUTHORIZATION_ERROR");
    }
    let r = raw_request(&gw, &upgrade_head(&gw, &[b"Origin: https://app.example.com"])).await;
    assert_eq!(r.status, 101, "the allowed origin, once");
    // Non-browser clients send no Origin: not checked (docs/protocol.md, Origins).
    let r = raw_request(&gw, &upgrade_head(&gw, &[])).await;
    assert_eq!(r.status, 101, "no Origin");
    let metrics = gw.http().get("/metrics").await.1;
    let refusals = metric(metrics.as_str().unwrap(), r#"signalbox_connections_refused_total{reason="origin"}"#);
    assert_eq!(refusals, 6.0);
}

#[tokio::test]
async fn without_allowed_origins_any_origin_is_accepted() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let r = raw_request(&gw, &upgrade_head(&gw, &[b"Origin: https://evil.example.com\xff"])).await;
    assert_eq!(r.status, 101);
}

/// `job_id=q0&job_id=q1…`, `n` of them.
fn job_params(n: usize) -> String {
    (0..n).map(|i| format!("job_id=q{i}")).collect::<Vec<_>>().join("&")
}

#[tokio::test]
async fn more_connect_time_topics_than_the_limit_refuse_the_upgrade_with_400() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let limit = gw.state.config.limits.max_subscriptions;
    let url = gw.ws_url(&format!("?{}", job_params(limit + 1)));
    let request = tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    let Err(tungstenite::Error::Http(response)) = tokio_tungstenite::connect_async(request).await else {
        panic!("the upgrade was not refused with an HTTP answer");
    };
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.headers().get("content-type").unwrap(), "application/json");
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_refusal_body(&body, "VALIDATION_ERROR");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&limit.to_string()) && message.contains("limits.max_subscriptions"), "{message}");
    assert_eq!(gw.state.hub.connections.list(None, None).len(), 0, "nothing was registered");
    // The same in the topic form, and a token counts for nothing here.
    let topics: Vec<String> = (0..=limit).map(|i| format!("topic=job:t{i}")).collect();
    let (status, body) = refused_upgrade(&gw.ws_url(&format!("?{}", topics.join("&"))), &[]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn connect_time_replies_at_the_limit_never_count_as_slow_consumption() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.send_queue_events = 8;
        // Room for the `subscriptions` reply below, which lists every topic in one frame.
        c.limits.send_queue_bytes = 64 * 1024;
    })
    .await;
    let limit = gw.state.config.limits.max_subscriptions;
    assert!(limit >= 100 * gw.state.config.limits.send_queue_events, "the replies are many times the queue");
    let api = gw.http();
    // Every tenth topic has a retained state, which follows its `subscribed` reply.
    for i in (0..limit).step_by(10) {
        let body = json!({"topic": format!("job:q{i}"), "event": {"type": "state", "i": i}, "retain": true});
        assert_eq!(api.post("/api/publish", body).await.0, 200);
    }
    // The automatic topics are named too (a re-subscribe answers `subscribed`), so the query
    // names exactly `limit` topics and the connection holds exactly `limit`.
    let query = format!("?topic=global&topic=user:anonymous&{}", job_params(limit - 2));
    let mut c = gw.connect_dev(&query).await;
    let mut subscribed = 0;
    let mut retained = 0;
    while subscribed < limit {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("subscribed") => subscribed += 1,
            Some("state") if f["retained"] == true => retained += 1,
            _ => panic!("unexpected frame after {subscribed} replies: {f}"),
        }
    }
    assert_eq!(retained, limit / 10, "q0, q10, … q990");
    let r = c.request(json!({"action": "subscriptions"})).await;
    assert_eq!(r["topics"].as_array().unwrap().len(), limit, "{r}");
    let offset = api.publish("job:q500", json!({"type": "after"})).await;
    let event = c.recv().await;
    assert_eq!((event["type"].as_str(), event["offset"].as_u64()), (Some("after"), Some(offset)), "{event}");
    c.expect_silence(Duration::from_millis(200)).await;
    let metrics = api.get("/metrics").await.1;
    assert_eq!(metric(metrics.as_str().unwrap(), "signalbox_slow_consumer_disconnects_total"), 0.0);
}

/// Retains a 100 KB state in each of `job:big0` … `job:big99` (10 MB in all, far more than
/// the socket buffers hold); returns the query string that subscribes to all of them.
async fn retain_big_states(gw: &TestGateway) -> String {
    let api = gw.http();
    let pad = "r".repeat(100 * 1024);
    for i in 0..100 {
        let body = json!({"topic": format!("job:big{i}"), "event": {"type": "state", "pad": pad}, "retain": true});
        assert_eq!(api.post("/api/publish", body).await.0, 200);
    }
    let query: Vec<String> = (0..100).map(|i| format!("job_id=big{i}")).collect();
    format!("?{}", query.join("&"))
}

#[tokio::test]
async fn connect_time_replies_wait_for_a_client_that_reads_late() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.send_queue_events = 8;
        c.limits.send_queue_bytes = 256 * 1024;
    })
    .await;
    // 100 retained states of 100 KB: 10 MB of connect-time frames, far more than the
    // socket buffers hold, so the server has to wait for this client to read.
    let api = gw.http();
    let query = retain_big_states(&gw).await;
    let url = gw.ws_url(&query);
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c = Client { ws, connected: Value::Null };
    c.connected = c.recv().await;
    assert_eq!(c.connected["type"], "connected");
    for i in 0..100 {
        let topic = format!("job:big{i}");
        let f = c.recv().await;
        assert_eq!((f["type"].as_str(), f["topic"].as_str()), (Some("subscribed"), Some(topic.as_str())));
        let f = c.recv().await;
        assert_eq!((f["type"].as_str(), f["retained"].as_bool()), (Some("state"), Some(true)));
    }
    assert_eq!(c.request(json!({"action": "ping"})).await["type"], "pong");
    let metrics = api.get("/metrics").await.1;
    assert_eq!(metric(metrics.as_str().unwrap(), "signalbox_slow_consumer_disconnects_total"), 0.0);
}

#[tokio::test]
async fn a_connection_closed_while_its_connect_time_replies_wait_closes_cleanly() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.send_queue_bytes = 256 * 1024;
    })
    .await;
    let api = gw.http();
    let query = retain_big_states(&gw).await;
    let (ws, _) = tokio_tungstenite::connect_async(gw.ws_url(&query)).await.unwrap();
    // The client reads nothing yet: the server is waiting for it in the middle of its
    // connect-time subscriptions.
    let id = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(conn) = gw.state.hub.connections.list(None, None).first() {
                break conn.id.as_str().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.delete(&format!("/api/connections/{id}")).await.0, 204);
    let mut c = Client { ws, connected: Value::Null };
    let mut frames = Vec::new();
    assert_eq!(c.expect_close(&mut frames).await, 1000, "closed by the backend, with its close code");
    assert_eq!(frames[0]["type"], "connected");
    let subscribed = frames.iter().filter(|f| f["type"] == "subscribed").count();
    assert!((1..100).contains(&subscribed), "it stopped part-way: {subscribed}");
    for (i, pair) in frames[1..].chunks(2).enumerate() {
        assert_eq!(pair[0]["topic"], format!("job:big{i}"), "in order, nothing lost before the close");
    }
    let connections = tokio::time::timeout(WAIT, async {
        while !gw.state.hub.connections.list(None, None).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    connections.await.expect("the connection is gone from the hub");
}

#[tokio::test]
async fn refresh_answers_valid_rfc3339_or_refuses_exp_past_9999() {
    let gw = TestGateway::spawn().await;
    let mut c = gw.connect("u", json!({})).await;
    let year_10000 = gw.token("u", json!({"exp": 253_402_300_800_u64}));
    let r = c.request(json!({"action": "refresh", "token": year_10000, "requestId": "y"})).await;
    assert_eq!((r["code"].as_str(), r["requestId"].as_str()), (Some("AUTHENTICATION_ERROR"), Some("y")), "{r}");
    assert!(r["message"].as_str().unwrap().contains("9999"), "{r}");
    let last_second = gw.token("u", json!({"exp": 253_402_300_799_u64}));
    let r = c.request(json!({"action": "refresh", "token": last_second})).await;
    assert_eq!((r["type"].as_str(), r["expiresAt"].as_str()), (Some("refreshed"), Some("9999-12-31T23:59:59Z")));
    // The same rule at connect.
    let (status, body) = refused_upgrade(&gw.ws_url(&format!("?token={year_10000}")), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("9999"), "{body}");
}

/// `[[[…]]]`, `depth` levels.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn json_nesting_limit_is_the_same_for_client_frames_and_api_bodies() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    // Client frame: the object is level 1.
    let frame = |depth: usize| format!(r#"{{"action":"ping","requestId":"d","pad":{}}}"#, nested(depth - 1));
    c.send_text(frame(127)).await;
    assert_eq!(c.recv().await["type"], "pong");
    for depth in [128, 129] {
        c.send_text(frame(depth)).await;
        let r = c.recv().await;
        assert_eq!(r["code"], "VALIDATION_ERROR", "{depth}: {r}");
        assert!(r["message"].as_str().unwrap().starts_with("JSON nesting is deeper than 127 levels"), "{r}");
    }
    // API body: the body is level 1, the event level 2.
    c.subscribe("job:deep").await;
    let body = |depth: usize| format!(r#"{{"topic":"job:deep","event":{{"type":"t","pad":{}}}}}"#, nested(depth - 2));
    let (status, r) = publish_text(&gw, body(127)).await;
    assert_eq!(status, 200, "{r}");
    let event = c.recv().await;
    assert_eq!(event["type"], "t", "a 126-level event is delivered");
    for depth in [128, 129] {
        let (status, r) = publish_text(&gw, body(depth)).await;
        assert_eq!((status, r["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{depth}");
        assert!(r["error"]["message"].as_str().unwrap().starts_with("JSON nesting is deeper than 127 levels"), "{r}");
    }
}

#[tokio::test]
async fn payload_too_large_echoes_a_readable_request_id() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.max_message_size = 4096;
    })
    .await;
    let mut c = gw.connect_dev("").await;
    let pad = "x".repeat(5000);
    // Wherever the top-level `requestId` stands.
    for text in [
        format!(r#"{{"requestId":"first","action":"ping","pad":"{pad}"}}"#),
        format!(r#"{{"action":"ping","pad":"{pad}","requestId":"last"}}"#),
    ] {
        c.send_text(text).await;
        let r = c.recv().await;
        assert_eq!(r["code"], "PAYLOAD_TOO_LARGE", "{r}");
        assert!(r["requestId"].is_string(), "{r}");
    }
    // Not echoed: a nested one, a non-string one, one in a message that is not JSON.
    for text in [
        format!(r#"{{"action":"ping","data":{{"requestId":"nested"}},"pad":"{pad}"}}"#),
        format!(r#"{{"action":"ping","requestId":5,"pad":"{pad}"}}"#),
        format!(r#"{{"action":"ping","requestId":"broken","pad":"{pad}""#),
    ] {
        c.send_text(text).await;
        let r = c.recv().await;
        assert_eq!(r["code"], "PAYLOAD_TOO_LARGE", "{r}");
        assert!(r.get("requestId").is_none(), "{r}");
    }
}

/// Posts `text` to `/api/publish` as JSON; the status and the JSON answer.
async fn publish_text(gw: &TestGateway, text: String) -> (u16, Value) {
    let api = gw.http();
    let request = api.client.post(format!("{}/api/publish", api.base)).bearer_auth(API_KEY);
    let r = request.header("content-type", "application/json").body(text).send().await.unwrap();
    assert_json_content_type(&r);
    (r.status().as_u16(), r.json::<Value>().await.unwrap())
}

fn assert_json_content_type(response: &reqwest::Response) {
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"), "{} {}", response.status(), response.url());
}

/// Sends `request` and asserts a JSON error in the SPEC shape with `status` and `code`.
async fn expect_api_error(
    request: reqwest::RequestBuilder,
    status: u16,
    code: &str,
) -> (reqwest::header::HeaderMap, String) {
    let response = request.send().await.unwrap();
    let what = format!("{} {}", response.status(), response.url());
    assert_eq!(response.status().as_u16(), status, "{what}");
    assert_json_content_type(&response);
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let error = body["error"].as_object().unwrap_or_else(|| panic!("{what}: {body}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
    assert_eq!(error.len(), 2, "{what}: {body}");
    assert_eq!(error["code"], code, "{what}: {body}");
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{what}: {body}");
    (headers, message)
}

#[tokio::test]
async fn every_api_error_is_json_in_the_spec_shape() {
    let gw = TestGateway::spawn_with(|c| c.limits.max_api_body_size = 2048).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(API_KEY);
    let post = |path: &str| http.post(format!("{base}{path}")).bearer_auth(API_KEY);
    let json = |path: &str, body: &str| post(path).header("content-type", "application/json").body(body.to_owned());
    let event = r#"{"topic":"job:a","event":{"type":"t"}}"#;

    // Paths and query strings.
    let (_, m) = expect_api_error(get("/api/topics/job:%FF"), 400, "VALIDATION_ERROR").await;
    assert!(m.starts_with("invalid path: "), "{m}");
    expect_api_error(get("/api/topics/job:%FF/history"), 400, "VALIDATION_ERROR").await;
    expect_api_error(get("/api/topics/bad%20topic"), 400, "VALIDATION_ERROR").await;
    expect_api_error(get("/api/topics/job:a/history?since=x"), 400, "VALIDATION_ERROR").await;
    let (_, m) = expect_api_error(get("/api/connections?user=a&user=b"), 400, "VALIDATION_ERROR").await;
    assert_eq!(m, "invalid query string: duplicate field `user`");
    expect_api_error(get("/api/connections?topic=a&topic=b"), 400, "VALIDATION_ERROR").await;
    expect_api_error(get("/api/connections?topic=bad%20topic"), 400, "VALIDATION_ERROR").await;
    let delete = http.delete(format!("{base}/api/connections/%FF%FE")).bearer_auth(API_KEY);
    expect_api_error(delete, 400, "VALIDATION_ERROR").await;
    expect_api_error(json("/api/connections/%FF/send", r#"{"event":{"type":"t"}}"#), 400, "VALIDATION_ERROR").await;
    expect_api_error(json("/api/connections/conn_1_2/send", r#"{"event":{"type":"t"}}"#), 404, "NOT_FOUND").await;

    // Bodies.
    let (_, m) = expect_api_error(post("/api/publish").body(event), 400, "VALIDATION_ERROR").await;
    assert!(m.contains("Content-Type: application/json"), "{m}");
    expect_api_error(post("/api/publish").header("content-type", "text/plain").body(event), 400, "VALIDATION_ERROR")
        .await;
    let (_, m) =
        expect_api_error(json("/api/publish", r#"{"topic":"job:a","event":{"type":"t"#), 400, "VALIDATION_ERROR").await;
    assert!(m.starts_with("malformed JSON: "), "{m}");
    expect_api_error(json("/api/publish", ""), 400, "VALIDATION_ERROR").await;
    expect_api_error(json("/api/publish", r#"{"topic":"job:a","event":{"type":7}}"#), 400, "VALIDATION_ERROR").await;
    expect_api_error(json("/api/broadcast", "[]"), 400, "VALIDATION_ERROR").await;
    expect_api_error(json("/api/connections/x/send", r#"{"event":"no"}"#), 400, "VALIDATION_ERROR").await;
    let big = format!(r#"{{"topic":"job:a","event":{{"type":"t","pad":"{}"}}}}"#, "x".repeat(4096));
    let (_, m) = expect_api_error(json("/api/publish", &big), 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(m, "the request body is larger than 2048 bytes (limits.max_api_body_size)");
    // Without a Content-Length: the limit holds for a chunked body too.
    let mut chunked = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for _ in 0..8 {
        chunked.push_str(&format!("400\r\n{}\r\n", " ".repeat(1024)));
    }
    chunked.push('0');
    let r = raw_request(&gw, chunked.as_bytes()).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");

    // Routes and methods.
    expect_api_error(get("/api/nope"), 404, "NOT_FOUND").await;
    expect_api_error(get("/api"), 404, "NOT_FOUND").await;
    expect_api_error(get("/api/"), 404, "NOT_FOUND").await;
    expect_api_error(http.get(format!("{base}/api/")), 401, "AUTHENTICATION_ERROR").await;
    expect_api_error(get("/api/publish/extra"), 404, "NOT_FOUND").await;
    let (headers, m) = expect_api_error(get("/api/publish"), 405, "VALIDATION_ERROR").await;
    assert_eq!(m, "method GET is not allowed on this path");
    assert_eq!(headers.get("allow").map(|v| v.to_str().unwrap()), Some("POST"));
    let (headers, _) = expect_api_error(json("/api/topics/job:a", "{}"), 405, "VALIDATION_ERROR").await;
    assert!(headers.get("allow").is_some_and(|v| v.to_str().unwrap().contains("GET")));
    expect_api_error(http.put(format!("{base}/api/connections/x")).bearer_auth(API_KEY), 405, "VALIDATION_ERROR").await;

    // Authentication comes first, also for unknown paths.
    expect_api_error(http.get(format!("{base}/api/nope")), 401, "AUTHENTICATION_ERROR").await;
    expect_api_error(http.get(format!("{base}/api/topics/job:%FF")), 401, "AUTHENTICATION_ERROR").await;

    // And a valid call still works.
    assert_eq!(json("/api/publish", event).send().await.unwrap().status().as_u16(), 200);
    let metrics = gw.http().get("/metrics").await.1;
    let counted = metric(metrics.as_str().unwrap(), r#"signalbox_errors_total{code="VALIDATION_ERROR"}"#);
    // 9 path and query errors, 7 body errors, 3 wrong methods: each counted once.
    assert_eq!(counted, 19.0, "API errors are counted");
}

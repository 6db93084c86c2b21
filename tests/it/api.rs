//! The backend HTTP API (SPEC §6).

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn api_requires_a_valid_key_and_accepts_every_configured_key() {
    let gw = TestGateway::spawn_with(|c| c.auth.api_keys = vec!["old-key-123".into(), "new-key-456".into()]).await;
    let body = json!({"topic": "job:1", "event": {"type": "t"}});
    for key in ["old-key-123", "new-key-456"] {
        assert_eq!(gw.http().with_key(key).post("/api/publish", body.clone()).await.0, 200);
    }
    for api in [gw.http().without_key(), gw.http().with_key("wrong-key-000")] {
        let (status, err) = api.post("/api/publish", body.clone()).await;
        assert_eq!(status, 401);
        assert_eq!(err["error"]["code"], "AUTHENTICATION_ERROR");
        assert!(err["error"]["message"].is_string());
        assert_eq!(api.get("/api/connections").await.0, 401);
    }
    // Ops endpoints need no key.
    assert_eq!(gw.http().without_key().get("/health").await.0, 200);
}

#[tokio::test]
async fn publish_single_and_many_topics() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    let (status, r) = api.post("/api/publish", json!({"topic": "job:a", "event": {"type": "t"}})).await;
    assert_eq!(status, 200);
    assert_eq!((r["topic"].as_str(), r["offset"].as_u64()), (Some("job:a"), Some(1)));
    assert_eq!(r["results"][0]["offset"], 1);
    let (status, r) =
        api.post("/api/publish", json!({"topics": ["job:a", "job:b"], "event": {"type": "t"}, "retain": false})).await;
    assert_eq!(status, 200);
    assert_eq!(
        r["results"],
        json!([{"topic": "job:a", "offset": 2, "epoch": r["results"][0]["epoch"]}, {"topic": "job:b", "offset": 1, "epoch": r["results"][1]["epoch"]}])
    );
    assert!(r.get("topic").is_none(), "top-level topic only for single-topic publishes");
    let (status, r) = api.post("/api/broadcast", json!({"event": {"type": "announcement"}})).await;
    assert_eq!((status, r["topic"].as_str(), r["offset"].as_u64()), (200, Some("global"), Some(1)));
}

#[tokio::test]
async fn publish_validation_errors_are_400_json() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    for body in [
        json!({}),
        json!({"topic": "job:a"}),
        json!({"topic": "job:a", "event": {}}),
        json!({"topic": "job:a", "event": {"type": 5}}),
        json!({"topic": "job:a", "event": "str"}),
        json!({"topic": "bad topic", "event": {"type": "t"}}),
        json!({"topic": 5, "event": {"type": "t"}}),
        json!({"topics": [], "event": {"type": "t"}}),
        json!({"topics": "job:a", "event": {"type": "t"}}),
        json!({"topics": ["job:a", 1], "event": {"type": "t"}}),
        json!({"topic": "job:a", "topics": ["job:b"], "event": {"type": "t"}}),
        json!({"topic": "job:a", "event": {"type": "t"}, "retain": "yes"}),
        json!([1, 2]),
    ] {
        let (status, r) = api.post("/api/publish", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {r}");
        assert_eq!(r["error"]["code"], "VALIDATION_ERROR", "{body}");
    }
    let (status, r) = api.post_raw("/api/publish", "{not json").await;
    assert_eq!((status, r["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")));
    let huge = json!({"topic": "job:a", "event": {"type": "t", "pad": "x".repeat(2 * 1024 * 1024)}});
    let (status, r) = api.post("/api/publish", huge).await;
    assert_eq!((status, r["error"]["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{r}");
    let (status, r) = api.get("/api/nope").await;
    assert_eq!((status, r["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
}

/// `POST /api/publish` is answered before the router (http_api::service): the same
/// checks in the same order, the same messages, and its refusals still counted.
#[tokio::test]
async fn the_direct_publish_path_answers_and_counts_like_the_route() {
    let gw = TestGateway::spawn_with(|c| c.auth.api_keys = vec!["key-direct-123".into()]).await;
    let api = gw.http().with_key("key-direct-123");
    let expect = [
        (r#"[1,2]"#, "body must be a JSON object"),
        (r#"{"topic":null,"topics":["job:a"],"event":{"type":"t"}}"#, "give either `topic` or `topics`, not both"),
        (r#"{"topics":null,"event":{"type":"t"}}"#, "`topics` must be an array of strings"),
        (r#"{"topic":"job:a","event":{"type":"t"},"retain":"yes"}"#, "`retain` must be a boolean"),
        (r#"{"topic":"job:a"}"#, "missing field `event`"),
    ];
    for (body, message) in expect {
        let (status, r) = api.post_raw("/api/publish", body).await;
        assert_eq!((status, r["error"]["message"].as_str()), (400, Some(message)), "{body}");
    }
    // A field named twice: the last wins, as everywhere a body is read as JSON.
    let (status, r) = api.post_raw("/api/publish", r#"{"topic":"job:x","topic":"job:y","event":{"type":"t"}}"#).await;
    assert_eq!((status, r["topic"].as_str(), r["results"][0]["topic"].as_str()), (200, Some("job:y"), Some("job:y")));
    // Whitespace before the object, a query string: still the publish.
    let (status, r) = api.post_raw("/api/publish?x=1", " \n {\"topic\":\"job:x\",\"event\":{\"type\":\"t\"}}").await;
    assert_eq!((status, r["offset"].as_u64()), (200, Some(1)), "{r}");
    // Not JSON by its content type; then no key at all (checked first, as on the route).
    let url = format!("http://{}/api/publish", gw.addr);
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth("key-direct-123")
        .header("content-type", "text/plain")
        .body(r#"{"topic":"job:a","event":{"type":"t"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["message"], "the body must be JSON with Content-Type: application/json");
    let (status, r) = gw.http().without_key().post_raw("/api/publish", "{not json").await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("AUTHENTICATION_ERROR")));
    // Other methods still reach the router: 405 with `Allow`.
    let answer = reqwest::Client::new().get(&url).bearer_auth("key-direct-123").send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 405);
    assert_eq!(answer.headers().get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
    let (_, metrics) = gw.http().get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    // Five bodies and the content type above, then the 405.
    assert_eq!(metric(&metrics, r#"signalbox_errors_total{code="VALIDATION_ERROR"}"#), 7.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"signalbox_errors_total{code="AUTHENTICATION_ERROR"}"#), 1.0, "{metrics}");
}

/// Sends `chunks` as a chunked `POST /api/publish` body (no Content-Length) and returns
/// the answer's status and body. Writes run beside the read and their errors are ignored:
/// a refused body is answered before the client has finished sending it.
async fn chunked_publish(gw: &TestGateway, chunks: Vec<Vec<u8>>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let sending = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for chunk in chunks {
            writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(writer)
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, reader.read_to_end(&mut answer)).await.expect("an answer within 10 s");
    // A reset after the answer (the server closes with the rest of the body unread) is fine.
    assert!(read.is_ok() || !answer.is_empty(), "no answer: {read:?}");
    sending.abort();
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")))
}

/// A chunked body (no Content-Length to refuse up front) is read whole on the direct
/// publish path, and held to `limits.max_api_body_size` while it streams in: 413 once past
/// it, and the server goes on publishing.
#[tokio::test]
async fn a_chunked_publish_body_is_read_whole_and_held_to_the_limit() {
    let gw = TestGateway::spawn().await;
    let body = br#"{"topic":"job:chunked","event":{"type":"t","n":1}}"#;
    let (status, r) = chunked_publish(&gw, body.chunks(7).map(<[u8]>::to_vec).collect()).await;
    assert_eq!((status, r["topic"].as_str(), r["offset"].as_u64()), (200, Some("job:chunked"), Some(1)), "{r}");

    // 1 MiB is the default limit: send 1 MiB + 64 KiB of an event's padding, never the end.
    let mut chunks = vec![br#"{"topic":"job:chunked","event":{"type":"t","pad":""#.to_vec()];
    chunks.extend(std::iter::repeat_n(vec![b'x'; 64 * 1024], 17));
    let (status, r) = chunked_publish(&gw, chunks).await;
    assert_eq!((status, r["error"]["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{r}");
    assert!(r["error"]["message"].as_str().is_some_and(|m| m.contains("limits.max_api_body_size")), "{r}");

    let (status, r) = gw.http().post("/api/publish", json!({"topic": "job:chunked", "event": {"type": "t"}})).await;
    assert_eq!((status, r["offset"].as_u64()), (200, Some(2)), "{r}");
}

#[tokio::test]
async fn topic_info_and_connection_listing() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    let mut a = gw.connect("alice", json!({"topics": ["project:*"]})).await;
    a.subscribe("project:9").await;
    let _b = gw.connect("bob", json!({})).await;
    api.publish("project:9", json!({"type": "t"})).await;
    let (status, info) = api.get("/api/topics/project:9").await;
    assert_eq!(status, 200);
    assert_eq!(
        (info["subscribers"].as_u64(), info["offset"].as_u64(), info["state"].clone()),
        (Some(1), Some(1), Value::Null)
    );
    assert!(info["epoch"].is_string());
    assert_eq!(api.get("/api/topics/bad%20topic").await.0, 400);

    let (_, all) = api.get("/api/connections").await;
    assert_eq!(all["connections"].as_array().unwrap().len(), 2);
    let (_, alice) = api.get("/api/connections?user=alice").await;
    let list = alice["connections"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["connectionId"], a.id());
    assert_eq!(list[0]["userId"], "alice");
    assert!(list[0]["topics"].as_array().unwrap().contains(&json!("project:9")));
    assert!(list[0]["connectedAt"].as_str().unwrap().ends_with('Z'));
    assert!(list[0]["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(list[0]["protocol"], "native");
    let (_, by_topic) = api.get("/api/connections?topic=project:9").await;
    assert_eq!(by_topic["connections"].as_array().unwrap().len(), 1);
    let (_, none) = api.get("/api/connections?user=nobody").await;
    assert_eq!(none["connections"], json!([]));
}

#[tokio::test]
async fn send_to_and_close_one_connection() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    let mut c = gw.connect("u", json!({})).await;
    let id = c.id();
    let (status, r) =
        api.post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "direct", "n": 1}})).await;
    assert_eq!((status, r["delivered"].as_bool()), (200, Some(true)));
    let ev = c.recv().await;
    assert_eq!((ev["type"].as_str(), ev["n"].as_u64()), (Some("direct"), Some(1)));
    let (status, _) = api.post(&format!("/api/connections/{id}/send"), json!({"event": {"no": "type"}})).await;
    assert_eq!(status, 400);
    let (status, r) = api.post("/api/connections/conn_1_nope/send", json!({"event": {"type": "t"}})).await;
    assert_eq!((status, r["error"]["code"].as_str()), (404, Some("NOT_FOUND")));

    let (status, _) = api.delete(&format!("/api/connections/{id}")).await;
    assert_eq!(status, 204);
    let mut before = Vec::new();
    assert_eq!(c.expect_close(&mut before).await, 1000);
    assert_eq!(api.delete("/api/connections/conn_1_nope").await.0, 404);
    // Gone from the list once closed.
    for _ in 0..100 {
        if api.get("/api/connections").await.1["connections"] == json!([]) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("closed connection still listed");
}

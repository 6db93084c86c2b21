//! `POST /api/publish/batch` (SPEC §9.4): items published in order, a result or an error
//! per item in the same order, bad items never failing the others.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn a_batch_publishes_in_order_with_a_result_or_an_error_per_item() {
    let gw = TestGateway::spawn().await;
    let mut client = gw.connect("alice", json!({"topics": ["job:*"]})).await;
    client.subscribe("job:1").await;
    let (status, body) = gw
        .http()
        .post(
            "/api/publish/batch",
            json!({"events": [
                {"topic": "job:1", "event": {"type": "step", "n": 1}},
                {"topic": "job:1", "event": {"n": 2}},
                {"topic": "bad topic", "event": {"type": "step"}},
                {"topics": ["job:1", "job:2"], "event": {"type": "step", "n": 3}, "retain": true},
                "not an object",
                {"topic": "job:1", "event": {"type": "step", "n": 4}, "retain": "yes"},
                {"topic": "job:1", "event": {"type": "step", "n": 5}},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 7, "one result per item: {body}");
    assert_eq!((results[0]["topic"].as_str(), results[0]["offset"].as_u64()), (Some("job:1"), Some(1)));
    assert!(results[0]["epoch"].is_string());
    for bad in [1, 2, 4, 5] {
        assert_eq!(results[bad]["error"]["code"], "VALIDATION_ERROR", "item {bad}: {body}");
        assert!(results[bad]["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let multi = results[3]["results"].as_array().unwrap();
    assert_eq!((multi[0]["topic"].as_str(), multi[0]["offset"].as_u64()), (Some("job:1"), Some(2)));
    assert_eq!((multi[1]["topic"].as_str(), multi[1]["offset"].as_u64()), (Some("job:2"), Some(1)));
    assert_eq!(results[6]["offset"], 3);

    // The subscriber sees the valid items, in batch order, with consecutive offsets.
    let received: Vec<(u64, u64)> = {
        let mut received = Vec::new();
        for _ in 0..3 {
            let event = client.recv().await;
            received.push((event["offset"].as_u64().unwrap(), event["n"].as_u64().unwrap()));
        }
        received
    };
    assert_eq!(received, [(1, 1), (2, 3), (3, 5)]);
    // The `retain` of the multi-topic item stored job:2's state.
    let (_, topic) = gw.http().get("/api/topics/job:2").await;
    assert_eq!(topic["state"]["n"], 3, "{topic}");
    let metrics = reqwest::get(format!("http://{}/metrics", gw.addr)).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "signalbox_errors_total{code=\"VALIDATION_ERROR\"}"), 4.0);
}

#[tokio::test]
async fn a_malformed_or_oversized_batch_is_refused_whole() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    let item = json!({"topic": "job:1", "event": {"type": "t"}});
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "JSON object"),
        (json!({}), "missing field `events`"),
        (json!({"events": {}}), "must be an array"),
        (json!({"events": []}), "1 to 1000"),
        (json!({"events": vec![item.clone(); 1001]}), "1 to 1000"),
        (
            json!({"events": vec![json!({"topics": vec!["job:1"; 600], "event": {"type": "t"}}); 2]}),
            "at most 1000 topics",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = api.post("/api/publish/batch", body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "VALIDATION_ERROR");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message:?} should mention {expected:?}");
    }
    let (status, _) = api.post("/api/publish/batch", json!({"events": vec![item.clone(); 1000]})).await;
    assert_eq!(status, 200, "1,000 items is the bound, inclusive");
    let (status, answer) = api.post_raw("/api/publish/batch", "{\"events\": [").await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")));
    let (status, _) = gw.http().without_key().post("/api/publish/batch", json!({"events": [item]})).await;
    assert_eq!(status, 401);
    // Nothing of the refused batches was published: the topic holds the 1,000 of the valid one.
    let (_, topic) = api.get("/api/topics/job:1").await;
    assert_eq!(topic["offset"], 1000, "{topic}");
}

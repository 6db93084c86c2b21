//! SPEC §5 end to end: resume with `since` (the seam under concurrent publishing),
//! retained state and `request_status`, filters, the history API, and bad `since` values.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{Client, TestGateway};

/// The next event frame (anything with an `offset` that is not a reply).
async fn next_event(c: &mut Client) -> Value {
    loop {
        let frame = c.recv().await;
        if frame.get("offset").is_some()
            && frame["topic"].is_string()
            && frame.get("type") != Some(&json!("subscribed"))
        {
            return frame;
        }
    }
}

fn since(offset: u64, epoch: &Value) -> Value {
    json!({"offset": offset, "epoch": epoch})
}

#[tokio::test]
async fn resume_has_no_gap_and_no_duplicate_while_publishes_keep_arriving() {
    const EVENTS: u64 = 3000;
    const PUBLISHERS: u64 = 4;
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.limits.send_queue_events = 10_000;
        c.namespaces.entry("seam".into()).or_default().history_size = 5000;
    })
    .await;
    let topic = "seam:1";

    // The witness holds the topic from the start and sees every event live.
    let mut witness = gw.connect_dev("").await;
    let epoch = witness.subscribe(topic).await["epoch"].clone();
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (progress_tx, progress) = watch::channel(0u64);
    let witness_task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            for expected in 1..=EVENTS {
                let event = next_event(&mut witness).await;
                assert_eq!(event["offset"], expected, "the live subscriber saw a gap or a duplicate");
                seen.lock().push(event);
                let _ = progress_tx.send(expected);
            }
        })
    };
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let api = gw.http();
            tokio::spawn(async move {
                for k in 0..EVENTS / PUBLISHERS {
                    api.publish(topic, json!({"type": "seq", "publisher": p, "k": k})).await;
                }
            })
        })
        .collect();

    // The resumer reads a while, drops its connection, waits until at least 50 more events
    // were published, and resumes; again and again until the last event.
    let mut received: Vec<Value> = Vec::new();
    let mut resumes = 0;
    let mut client = gw.connect_dev("").await;
    let first = client.subscribe(topic).await;
    let mut last = first["offset"].as_u64().unwrap();
    while last < EVENTS {
        for _ in 0..(97 + resumes * 31) {
            if last == EVENTS {
                break;
            }
            let event = next_event(&mut client).await;
            assert_eq!(event["offset"], last + 1, "gap or duplicate after resume {resumes}");
            last += 1;
            received.push(event);
        }
        if last == EVENTS {
            break;
        }
        drop(client);
        let mut progress = progress.clone();
        let wait_for = (last + 50).min(EVENTS);
        progress.wait_for(|seen| *seen >= wait_for).await.unwrap();
        client = gw.connect_dev("").await;
        let reply = client
            .request(json!({"action": "subscribe", "topic": topic, "since": since(last, &epoch), "requestId": "r"}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["recovered"], true, "{reply}");
        assert!(reply["offset"].as_u64().unwrap() >= wait_for, "{reply}");
        resumes += 1;
    }
    witness_task.await.unwrap();
    for p in publishers {
        p.await.unwrap();
    }
    assert!(resumes >= 5, "only {resumes} resumes");
    // Every event after the first subscribe, in order, exactly as delivered live.
    let seen = seen.lock();
    let start = first["offset"].as_u64().unwrap() as usize;
    assert_eq!(received.len(), seen.len() - start);
    assert!(received.iter().zip(&seen[start..]).all(|(a, b)| a == b), "a replayed frame differs from the live one");
}

#[tokio::test]
async fn a_fresh_subscriber_mid_stream_continues_from_its_subscribed_offset() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    let publisher = tokio::spawn(async move {
        for k in 0..600 {
            api.publish("job:mid", json!({"type": "t", "k": k})).await;
        }
    });
    for _ in 0..5 {
        let mut c = gw.connect_dev("").await;
        let reply = c.subscribe("job:mid").await;
        let start = reply["offset"].as_u64().unwrap() + 1;
        // A retained-less topic: the next frames are live events, in order, from offset+1.
        for expected in (start..=600).take(20) {
            assert_eq!(next_event(&mut c).await["offset"], expected);
        }
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn resume_is_refused_when_history_was_lost_and_the_retained_state_follows() {
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.namespaces.entry("job".into()).or_default().history_size = 5;
    })
    .await;
    let api = gw.http();
    let mut c = gw.connect_dev("").await;
    let epoch = c.subscribe("job:lost").await["epoch"].clone();
    for n in 1..=10 {
        let (status, _) = api
            .post(
                "/api/publish",
                json!({"topic": "job:lost", "event": {"type": "progress_update", "progress": n * 10}, "retain": true}),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Offsets 1..5 left history (size 5): resuming after 2 cannot be complete.
    let mut r = gw.connect_dev("").await;
    let reply = r.request(json!({"action": "subscribe", "topic": "job:lost", "since": since(2, &epoch)})).await;
    assert_eq!((reply["recovered"].as_bool(), reply["offset"].as_u64()), (Some(false), Some(10)), "{reply}");
    let state = r.recv().await;
    assert_eq!((state["retained"].as_bool(), state["offset"].as_u64()), (Some(true), Some(10)), "{state}");
    assert_eq!(state["progress"], 100);
    // After 5 everything is still there.
    let mut ok = gw.connect_dev("").await;
    let reply = ok.request(json!({"action": "subscribe", "topic": "job:lost", "since": since(5, &epoch)})).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for offset in 6..=10 {
        let event = ok.recv().await;
        assert_eq!(event["offset"], offset);
        assert!(event.get("retained").is_none(), "replayed events are not marked retained");
    }
    // Another epoch (e.g. the gateway restarted since): not recovered.
    let mut other = gw.connect_dev("").await;
    let reply =
        other.request(json!({"action": "subscribe", "topic": "job:lost", "since": since(9, &json!("0000"))})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(other.recv().await["retained"], true);
}

#[tokio::test]
async fn an_epoch_from_another_gateway_run_is_not_recovered() {
    let first = TestGateway::spawn_with(|c| c.dev = true).await;
    first.http().publish("job:e", json!({"type": "t"})).await;
    let old_epoch = first.http().get("/api/topics/job:e").await.1["epoch"].clone();
    first.shutdown().await.unwrap();
    // A restarted memory broker has lost history: same offsets would mean other events.
    let second = TestGateway::spawn_with(|c| c.dev = true).await;
    second.http().publish("job:e", json!({"type": "t"})).await;
    second.http().publish("job:e", json!({"type": "t"})).await;
    let mut c = second.connect_dev("").await;
    let reply = c.request(json!({"action": "subscribe", "topic": "job:e", "since": since(1, &old_epoch)})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["epoch"], old_epoch);
    c.expect_silence(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn odd_since_values_are_answered_not_fatal() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    api.publish("job:s", json!({"type": "t"})).await;
    let mut c = gw.connect_dev("").await;
    let epoch = c.subscribe("job:s").await["epoch"].clone();
    // A future offset in the right epoch: the client is confused; it must resynchronise.
    let mut huge = gw.connect_dev("").await;
    let reply = huge.request(json!({"action": "subscribe", "topic": "job:s", "since": since(u64::MAX, &epoch)})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    let mut d = gw.connect_dev("").await;
    let reply = d.request(json!({"action": "subscribe", "topic": "job:s", "since": since(7, &epoch)})).await;
    assert_eq!(reply["recovered"], false, "future offset: {reply}");
    // Up to date: recovered, nothing replayed.
    let mut e = gw.connect_dev("").await;
    let reply = e.request(json!({"action": "subscribe", "topic": "job:s", "since": since(1, &epoch)})).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    e.expect_silence(std::time::Duration::from_millis(200)).await;
    // Missing epoch: not comparable, so not recovered.
    let reply = e.request(json!({"action": "subscribe", "topic": "job:u", "since": {"offset": 0}})).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    for bad in [json!({"offset": -1, "epoch": "e"}), json!({"offset": "1", "epoch": "e"}), json!([1]), json!(5)] {
        let reply = e.request(json!({"action": "subscribe", "topic": "job:s", "since": bad, "requestId": "b"})).await;
        assert_eq!(
            (reply["code"].as_str(), reply["requestId"].as_str()),
            (Some("VALIDATION_ERROR"), Some("b")),
            "{reply}"
        );
    }
    // The connection still works.
    assert_eq!(e.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn retained_state_follows_a_fresh_subscribe_and_answers_request_status() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    let (status, _) = api
        .post(
            "/api/publish",
            json!({"topic": "job:42", "event": {"type": "stage_complete", "stage": "build"}, "retain": true}),
        )
        .await;
    assert_eq!(status, 200);
    api.publish("job:42", json!({"type": "log", "line": "not retained"})).await;

    let mut c = gw.connect_dev("").await;
    let reply = c.request(json!({"action": "subscribe", "job_id": "42", "requestId": "s"})).await;
    assert_eq!((reply["type"].as_str(), reply["offset"].as_u64()), (Some("subscribed"), Some(2)), "{reply}");
    let state = c.recv().await;
    assert_eq!(state["retained"], true, "{state}");
    assert_eq!(
        (state["type"].as_str(), state["offset"].as_u64(), state["topic"].as_str()),
        (Some("stage_complete"), Some(1), Some("job:42"))
    );
    // Then live events, not marked.
    api.publish("job:42", json!({"type": "progress_update", "progress": 50})).await;
    let live = c.recv().await;
    assert_eq!((live["offset"].as_u64(), live.get("retained")), (Some(3), None), "{live}");

    for request in [
        json!({"action": "request_status", "topic": "job:42", "requestId": "q"}),
        json!({"action": "request_status", "job_id": 42}),
    ] {
        let status = c.request(request).await;
        assert_eq!(status["type"], "status", "{status}");
        assert_eq!((status["topic"].as_str(), status["offset"].as_u64()), (Some("job:42"), Some(3)));
        assert_eq!(status["state"]["stage"], "build", "{status}");
        assert!(status["state"].get("retained").is_none());
    }
    let empty = c.request(json!({"action": "request_status", "topic": "job:none"})).await;
    assert_eq!((empty["state"].clone(), empty["offset"].as_u64()), (Value::Null, Some(0)), "{empty}");

    let (_, info) = api.get("/api/topics/job:42").await;
    assert_eq!((info["offset"].as_u64(), info["subscribers"].as_u64()), (Some(3), Some(1)), "{info}");
    assert_eq!(info["state"]["type"], "stage_complete");
    // A client may retain where it may publish.
    let gw = TestGateway::spawn_with(|c| {
        c.dev = true;
        c.namespaces.entry("room".into()).or_default().client_publish = true;
    })
    .await;
    let mut p = gw.connect_dev("").await;
    let published = p.request(json!({"action": "publish", "topic": "room:1", "event": {"type": "topic_set", "text": "hi"}, "retain": true})).await;
    assert_eq!(published["type"], "published", "{published}");
    let status = p.request(json!({"action": "request_status", "topic": "room:1"})).await;
    assert_eq!(status["state"]["text"], "hi", "{status}");
}

#[tokio::test]
async fn filters_select_live_and_replayed_events() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    let mut c = gw.connect_dev("").await;
    let filters = json!({"category": "electronics", "discount": {"gte": 20}});
    let reply = c.request(json!({"action": "subscribe", "topic": "deals:all", "filters": filters})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let epoch = reply["epoch"].clone();
    let events = [
        json!({"type": "deal", "category": "electronics", "discount": 25}),
        json!({"type": "deal", "category": "electronics", "discount": 10}),
        json!({"type": "deal", "category": "garden", "discount": 50}),
        json!({"type": "deal", "category": "electronics", "discount": 20.0}),
        json!({"type": "deal", "discount": 90}),
    ];
    for event in &events {
        api.publish("deals:all", event.clone()).await;
    }
    assert_eq!(next_event(&mut c).await["offset"], 1);
    assert_eq!(next_event(&mut c).await["offset"], 4);
    c.expect_silence(std::time::Duration::from_millis(200)).await;
    // The same filter applies to a replay.
    let mut r = gw.connect_dev("").await;
    let reply = r
        .request(json!({"action": "subscribe", "topic": "deals:all", "since": since(0, &epoch), "filters": filters}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(next_event(&mut r).await["offset"], 1);
    assert_eq!(next_event(&mut r).await["offset"], 4);
    r.expect_silence(std::time::Duration::from_millis(200)).await;
    // Subscribing again replaces the filter.
    let reply = c
        .request(json!({"action": "subscribe", "topic": "deals:all", "filters": {"category": {"in": ["garden"]}}}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    api.publish("deals:all", events[0].clone()).await;
    api.publish("deals:all", events[2].clone()).await;
    assert_eq!(next_event(&mut c).await["offset"], 7);
    // A bad filter is a clear validation error, and the connection goes on.
    let bad = c
        .request(
            json!({"action": "subscribe", "topic": "deals:all", "filters": {"discount": {"gtt": 1}}, "requestId": "f"}),
        )
        .await;
    assert_eq!(bad["code"], "VALIDATION_ERROR", "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("gtt"), "{bad}");
    assert_eq!(c.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn history_api_pages_through_stored_events() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let api = gw.http();
    for n in 1..=25 {
        api.publish("job:h/x", json!({"type": "t", "n": n})).await;
    }
    let (status, page) = api.get("/api/topics/job:h%2Fx/history?since=10&limit=5").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["topic"].as_str(), page["offset"].as_u64(), page["recovered"].as_bool()),
        (Some("job:h/x"), Some(25), Some(true))
    );
    let offsets: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, vec![11, 12, 13, 14, 15]);
    assert_eq!(page["events"][0]["n"], 11);
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    // A `/` in the topic also works unencoded.
    let (_, all) = api.get("/api/topics/job:h/x/history").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 25);
    let (_, other) = api.get("/api/topics/job:h/x/history?since=3&epoch=nope").await;
    assert_eq!(other["recovered"], false, "{other}");
    let (_, same) = api.get(&format!("/api/topics/job:h/x/history?since=24&epoch={epoch}")).await;
    assert_eq!((same["recovered"].as_bool(), same["events"].as_array().unwrap().len()), (Some(true), 1));
    for bad in ["since=-1", "since=x", "limit=0", "limit=100000"] {
        let (status, body) = api.get(&format!("/api/topics/job:h/x/history?{bad}")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{bad}: {body}");
    }
    let (status, _) = api.get("/api/topics/bad%20topic/history").await;
    assert_eq!(status, 400);
}

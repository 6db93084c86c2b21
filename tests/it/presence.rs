//! Presence (SPEC §9.1) on one node: the `presence` action and API, and `join`/`leave`
//! frames in `join_leave` namespaces.

use serde_json::json;
use signalbox::config::NamespaceConfig;

use crate::support::*;

#[tokio::test]
async fn presence_lists_distinct_users_and_counts_connections_by_frame_and_api() {
    let gw = TestGateway::spawn().await;
    let claims = json!({"topics": ["project:*"]});
    let mut alice1 = gw.connect("alice", claims.clone()).await;
    let mut alice2 = gw.connect("alice", claims.clone()).await;
    let mut bob = gw.connect("bob", claims.clone()).await;
    for client in [&mut alice1, &mut alice2, &mut bob] {
        client.subscribe("project:1").await;
    }
    let answer = bob.request(json!({"action": "presence", "project_id": "1", "requestId": "p1"})).await;
    assert_eq!(
        answer,
        json!({"type": "presence", "topic": "project:1", "users": ["alice", "bob"], "connections": 3, "requestId": "p1"})
    );
    let (status, body) = gw.http().get("/api/topics/project:1/presence").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"type": "presence", "topic": "project:1", "users": ["alice", "bob"], "connections": 3}));

    // Leaving and closing are reflected at once.
    assert_eq!(alice2.request(json!({"action": "unsubscribe", "topic": "project:1"})).await["type"], "unsubscribed");
    drop(bob);
    let wait = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = alice1.request(json!({"action": "presence", "topic": "project:1"})).await;
        if answer["connections"] == 1 {
            assert_eq!(answer["users"], json!(["alice"]));
            break;
        }
        assert!(tokio::time::Instant::now() < wait, "bob's close never left the topic: {answer}");
    }
    // An empty topic, and one the client may not subscribe to.
    let (_, body) = gw.http().get("/api/topics/project:empty/presence").await;
    assert_eq!((body["users"].clone(), body["connections"].clone()), (json!([]), json!(0)));
    let denied = alice1.request(json!({"action": "presence", "topic": "job:1", "requestId": "p2"})).await;
    assert_eq!((denied["code"].as_str(), denied["requestId"].as_str()), (Some("AUTHORIZATION_ERROR"), Some("p2")));
    let bad = alice1.request(json!({"action": "presence"})).await;
    assert_eq!(bad["code"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn join_leave_namespaces_announce_subscribes_and_closes_without_offsets() {
    let gw = TestGateway::spawn_with(|c| {
        c.namespaces.insert("project".into(), NamespaceConfig { join_leave: true, ..Default::default() });
    })
    .await;
    let claims = json!({"topics": ["project:*", "job:*"]});
    let mut alice = gw.connect("alice", claims.clone()).await;
    alice.subscribe("project:1").await;
    let own = alice.recv().await;
    assert_eq!(own["type"], "join");
    assert_eq!(own["connectionId"], alice.id().as_str());

    let mut bob = gw.connect("bob", claims.clone()).await;
    bob.subscribe("project:1").await;
    let join = alice.recv().await;
    assert_eq!(
        join,
        json!({"type": "join", "topic": "project:1", "userId": "bob", "connectionId": bob.id()}),
        "alice hears bob join"
    );
    assert!(join.get("offset").is_none());
    let bob_id = bob.id();
    drop(bob);
    let leave = alice.recv().await;
    assert_eq!(leave, json!({"type": "leave", "topic": "project:1", "userId": "bob", "connectionId": bob_id}));

    // Not events: the topic's first published event still gets offset 1.
    gw.http().publish("project:1", json!({"type": "x"})).await;
    assert_eq!(alice.recv().await["offset"], 1);

    // A namespace without join_leave stays quiet.
    alice.subscribe("job:1").await;
    let mut carol = gw.connect("carol", claims).await;
    carol.subscribe("job:1").await;
    gw.http().publish("job:1", json!({"type": "y"})).await;
    let next = alice.recv().await;
    assert_eq!((next["type"].as_str(), next["topic"].as_str()), (Some("y"), Some("job:1")), "no join for job:1");
}

//! The cluster-wide connection directory (SPEC §9.1): gateways on one real Redis (and on a
//! 3-master Redis Cluster); a connection on one node is listed, described, messaged and
//! closed from another; a node that shuts down deregisters at once, a crashed node's
//! connections disappear after the directory's TTL (short here, through
//! `DirectoryOptions` on a bare node); 20 000 connections on one node list from another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signalbox::broker::HistoryLimits;
use signalbox::broker::redis::{RedisBroker, Target};
use signalbox::cluster::{DirectoryOptions, RedisDirectory};
use signalbox::domain::{ConnectionId, UserId};
use signalbox::hub::{ConnectionHandle, ConnectionRegistry, DirectoryError, QueueLimits, TopicRegistry};
use signalbox::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use crate::servers::redis::{Redis, RedisCluster};
use crate::support::{Api, TestGateway, until};

/// The connection ids `GET /api/connections{query}` lists.
async fn listed(api: &Api, query: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/api/connections{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["connections"].as_array().unwrap().iter().map(|c| c["connectionId"].as_str().unwrap().to_owned()).collect()
}

async fn cluster_node(redis: &Redis) -> TestGateway {
    gateway_on(redis.url()).await
}

async fn gateway_on(url: String) -> TestGateway {
    TestGateway::spawn_with(|c| c.broker = url).await
}

#[tokio::test]
async fn a_connection_is_reachable_from_another_node_the_moment_it_opens() {
    // A backend that answers a client's first message at once (an API Gateway Lambda with
    // post_to_connection) asks about a connection its node has not written to Redis yet
    // (that happens every 500 ms): it must not be told the connection is gone.
    let redis = Redis::start();
    let a = cluster_node(&redis).await;
    let b = cluster_node(&redis).await;
    let mut alice = a.connect("alice", json!({})).await;
    let id = alice.id();
    let conn = ConnectionId::from_external(&id);

    let (status, reply) =
        b.http().post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "first"}})).await;
    assert_eq!((status, reply["delivered"].as_bool()), (200, Some(true)), "{reply}");
    assert_eq!(alice.recv().await, json!({"type": "first"}));
    assert_eq!(b.state.directory.get(&conn).await.map(|i| i.user), Ok(UserId::new("alice")));
    // `send_now` (the sinks' replies) too.
    assert_eq!(b.state.directory.send_now(&conn, json!({"type": "reply"}).to_string().into()), Ok(true));
    assert_eq!(alice.recv().await, json!({"type": "reply"}));
    // An unknown id that looks just as young is still gone, after asking every node.
    let young = ConnectionId::generate();
    assert_eq!(b.state.directory.get(&young).await, Err(DirectoryError::NotFound(young)));
    let (status, _) = b.http().delete(&format!("/api/connections/{id}")).await;
    assert_eq!(status, 204);
    let mut before = Vec::new();
    assert_eq!(alice.expect_close(&mut before).await, 1000);
}

#[tokio::test]
async fn a_connection_on_one_node_is_listed_messaged_and_closed_from_another() {
    let redis = Redis::start();
    let a = cluster_node(&redis).await;
    let b = cluster_node(&redis).await;
    let (api_a, api_b) = (a.http(), b.http());
    let mut alice = a.connect("alice", json!({"topics": ["project:*"]})).await;
    alice.subscribe("project:7").await;
    let _bob = b.connect("bob", json!({})).await;
    let id = alice.id();

    // Listed from node B (registered by A's background task, so not necessarily at once),
    // with its details as A knows them, and filtered like a single node's list.
    let want = id.clone();
    let entry = until(Duration::from_secs(5), "A's connection listed on B with its topic", || {
        let (api_b, want) = (&api_b, want.clone());
        async move {
            let (_, body) = api_b.get("/api/connections?topic=project:7").await;
            body["connections"].as_array().unwrap().iter().find(|c| c["connectionId"] == want.as_str()).cloned()
        }
    })
    .await;
    assert_eq!(entry["userId"], "alice");
    for topic in ["global", "project:7", "user:alice"] {
        assert!(entry["topics"].as_array().unwrap().contains(&json!(topic)), "{entry}");
    }
    assert!(entry["connectedAt"].as_str().unwrap().ends_with('Z'), "{entry}");
    assert!(entry["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"), "{entry}");
    let (_, on_a) = api_a.get("/api/connections?user=alice").await;
    assert_eq!(on_a["connections"][0], entry, "both nodes describe it the same way");

    assert_eq!(listed(&api_b, "?user=alice").await, vec![id.clone()]);
    assert!(listed(&api_b, "?user=bob").await.len() == 1, "B's own connection is listed too");
    assert_eq!(listed(&api_b, "").await.len(), 2);
    assert!(listed(&api_b, "?topic=project:8").await.is_empty());
    assert!(listed(&api_b, "?user=alice&topic=user:bob").await.is_empty());
    assert_eq!(listed(&api_b, "?user=alice&topic=user:alice").await, vec![id.clone()]);

    // `get` (no HTTP route of its own yet): answered by A through its channel.
    let conn = ConnectionId::from_external(&id);
    let info = b.state.directory.get(&conn).await.unwrap();
    assert_eq!((info.user, info.topics.len()), (UserId::new("alice"), 3));
    let unknown = ConnectionId::from_external("conn_1_nope");
    assert_eq!(b.state.directory.get(&unknown).await, Err(DirectoryError::NotFound(unknown)));

    // Send from B: delivered to the client on A within 1 s.
    let started = Instant::now();
    let (status, reply) =
        api_b.post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "direct", "n": 1}})).await;
    assert_eq!((status, reply["delivered"].as_bool()), (200, Some(true)), "{reply}");
    let frame = tokio::time::timeout(Duration::from_secs(1), alice.recv()).await.expect("delivered within 1 s");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(frame, json!({"type": "direct", "n": 1}));

    // `send_now` (the sinks' replies) from B: queued, forwarded in order.
    for n in 2..5 {
        let text = json!({"type": "reply", "n": n}).to_string();
        assert_eq!(b.state.directory.send_now(&conn, text.into()), Ok(true));
    }
    for n in 2..5 {
        assert_eq!(alice.recv().await, json!({"type": "reply", "n": n}));
    }

    // Unknown ids answer 404 from B, as on a single node.
    let (status, body) = api_b.post("/api/connections/conn_1_nope/send", json!({"event": {"type": "t"}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{body}");
    assert_eq!(api_b.delete("/api/connections/conn_1_nope").await.0, 404);

    // Close from B: the client sees the single-node close code (1000) within 1 s.
    let started = Instant::now();
    assert_eq!(api_b.delete(&format!("/api/connections/{id}")).await.0, 204);
    let mut before = Vec::new();
    assert_eq!(alice.expect_close(&mut before).await, 1000);
    assert!(started.elapsed() < Duration::from_secs(1), "closed after {:?}", started.elapsed());
    assert!(before.is_empty(), "{before:?}");
    // Gone everywhere: closing counts as gone at once; the list follows A's next scan.
    let (status, _) = api_b.post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "t"}})).await;
    assert_eq!(status, 404);
    until(Duration::from_secs(5), "the closed connection leaves B's list", || {
        let api_b = &api_b;
        async move { listed(api_b, "?user=alice").await.is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_node_that_shuts_down_deregisters_its_connections_at_once() {
    let redis = Redis::start();
    let mut a = cluster_node(&redis).await;
    let b = cluster_node(&redis).await;
    let api_b = b.http();
    let mut carol = a.connect("carol", json!({})).await;
    until(Duration::from_secs(5), "A's connection listed on B", || {
        let api_b = &api_b;
        async move { (!listed(api_b, "?user=carol").await.is_empty()).then_some(()) }
    })
    .await;

    let shutdown = a.begin_shutdown();
    assert_eq!(carol.expect_close(&mut Vec::new()).await, 1001);
    // Far sooner than the 30 s TTL: A removed its entries when it began shutting down.
    until(Duration::from_secs(3), "A's connections leave B's list", || {
        let api_b = &api_b;
        async move { listed(api_b, "?user=carol").await.is_empty().then_some(()) }
    })
    .await;
    shutdown.await.unwrap().unwrap();
}

/// A node without HTTP: a Redis broker and a cluster directory with short timings, in a
/// runtime of its own so that dropping that runtime is a crash (no task gets to clean up).
struct BareNode {
    runtime: Option<tokio::runtime::Runtime>,
    connection: Arc<ConnectionHandle>,
    registry: Arc<ConnectionRegistry>,
    node_id: String,
}

impl BareNode {
    async fn start(redis_url: &str, options: DirectoryOptions) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (connections, connection) = {
            let registry = Arc::new(ConnectionRegistry::new(100_000, 100_000));
            let remote = SocketAddr::from(([10, 0, 0, 9], 4242));
            let limits = QueueLimits { frames: 16, bytes: 1 << 20 };
            let handle =
                ConnectionHandle::new(ConnectionId::generate(), UserId::new("ghost"), remote, limits, Metrics::new());
            let handle = Arc::new(handle);
            registry.insert(handle.clone());
            (registry, handle)
        };
        let registry = connections.clone();
        let target = Target::parse(redis_url).unwrap();
        let started = runtime.spawn(async move {
            let config = crate::support::test_config();
            let fanout = Arc::new(TopicRegistry::new(100, Metrics::new()));
            let limits = HistoryLimits::from_config(&config);
            let broker = Arc::new(RedisBroker::connect(target, fanout, limits, Duration::from_secs(30)).await.unwrap());
            let directory = Arc::new(RedisDirectory::new(broker.clone(), connections, options));
            let node_id = directory.node_id().to_owned();
            let stop = CancellationToken::new();
            tokio::spawn(broker.run(stop.clone()));
            tokio::spawn(directory.run(stop.clone()));
            // Never cancelled: the node only ever crashes.
            std::mem::forget(stop);
            node_id
        });
        let node_id = started.await.unwrap();
        Self { runtime: Some(runtime), connection, registry, node_id }
    }

    /// Stops the node as a crash would: every task and connection is dropped, nothing is
    /// deregistered.
    fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for BareNode {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[tokio::test]
async fn a_crashed_nodes_connections_disappear_after_the_ttl() {
    let redis = Redis::start();
    let b = cluster_node(&redis).await;
    let api_b = b.http();
    let (ttl, refresh, scan) = (Duration::from_millis(1500), Duration::from_millis(250), Duration::from_millis(50));
    let options = DirectoryOptions { ttl, refresh, scan, ..DirectoryOptions::default() };
    let node = BareNode::start(&redis.url(), options).await;
    let id = node.connection.id.as_str().to_owned();
    let conn = node.connection.id.clone();

    let want = id.clone();
    let entry = until(Duration::from_secs(5), "the bare node's connection listed on B", || {
        let (api_b, want) = (&api_b, want.clone());
        async move {
            let (_, body) = api_b.get("/api/connections?user=ghost").await;
            body["connections"].as_array().unwrap().iter().find(|c| c["connectionId"] == want.as_str()).cloned()
        }
    })
    .await;
    assert_eq!(entry["remoteAddr"], "10.0.0.9:4242");
    // Alive, the node answers for it (its directory serves its channel).
    assert_eq!(b.state.directory.get(&conn).await.map(|c| c.user), Ok(UserId::new("ghost")));
    let (status, reply) = api_b.post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "t"}})).await;
    assert_eq!((status, reply["delivered"].clone()), (200, Value::Bool(true)));

    // Refreshed past its TTL while alive: still listed after more than one TTL.
    let alive_since = Instant::now();
    until(ttl * 2, "the live node stays listed past one TTL", || {
        let api_b = &api_b;
        async move {
            assert_eq!(listed(api_b, "?user=ghost").await.len(), 1, "a live node's entry expired");
            (alive_since.elapsed() > ttl + Duration::from_millis(200)).then_some(())
        }
    })
    .await;

    // Its hash lost (as when Redis restarts without data): rewritten at its next refresh.
    let redis_client = ::redis::Client::open(redis.url()).unwrap();
    let mut raw = redis_client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("sbd:{{{}}}:conns", node.node_id);
    let () = ::redis::cmd("DEL").arg(&key).query_async(&mut raw).await.unwrap();
    until(refresh * 4, "the lost hash is rewritten", || {
        let (mut raw, key, id) = (raw.clone(), &key, &id);
        async move {
            let back: bool = ::redis::cmd("HEXISTS").arg(key).arg(id).query_async(&mut raw).await.unwrap();
            back.then_some(())
        }
    })
    .await;
    let pttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut raw).await.unwrap();
    assert!(pttl > 0 && pttl <= 1500, "{pttl}");

    node.crash();
    let crashed_at = Instant::now();
    // Operations on its connections answer 404 as soon as its channel has no listener.
    until(Duration::from_secs(3), "a send to the crashed node's connection is 404", || {
        let (api_b, id) = (&api_b, &id);
        async move {
            let (status, _) = api_b.post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "t"}})).await;
            assert!(status == 200 || status == 404, "{status}");
            (status == 404).then_some(())
        }
    })
    .await;
    assert_eq!(api_b.delete(&format!("/api/connections/{id}")).await.0, 404);
    // Nobody deregistered it, so it is listed until its TTL runs out, and not after.
    until(ttl + Duration::from_secs(2), "the crashed node's connection leaves B's list", || {
        let api_b = &api_b;
        async move { listed(api_b, "?user=ghost").await.is_empty().then_some(()) }
    })
    .await;
    // The last refresh came at most one refresh interval (checked at a scan) before the
    // crash, so the entry lived at least that much short of a TTL after it.
    let gone_after = crashed_at.elapsed();
    assert!(gone_after + refresh + scan >= ttl, "gone after {gone_after:?}: deregistered, not expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_works_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    // Four nodes: their hashes, tagged with random node ids, spread over the shards.
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(gateway_on(cluster.url()).await);
    }
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        clients.push(node.connect(&format!("user{i}"), json!({})).await);
    }
    let ids: Vec<String> = clients.iter().map(|c| c.id()).collect();
    let api = nodes[0].http();
    until(Duration::from_secs(5), "every node's connection listed on node 0", || {
        let (api, ids) = (&api, &ids);
        async move {
            let mut listed = listed(api, "").await;
            listed.sort();
            let mut want = ids.clone();
            want.sort();
            (listed == want).then_some(())
        }
    })
    .await;
    assert_eq!(listed(&api, "?user=user3").await, vec![ids[3].clone()]);

    for (i, client) in clients.iter_mut().enumerate().skip(1) {
        let id = &ids[i];
        let (status, reply) =
            api.post(&format!("/api/connections/{id}/send"), json!({"event": {"type": "hi", "n": i}})).await;
        assert_eq!((status, reply["delivered"].as_bool()), (200, Some(true)), "{reply}");
        let frame = tokio::time::timeout(Duration::from_secs(1), client.recv()).await.expect("within 1 s");
        assert_eq!(frame, json!({"type": "hi", "n": i}));
        assert_eq!(api.delete(&format!("/api/connections/{id}")).await.0, 204);
        assert_eq!(client.expect_close(&mut Vec::new()).await, 1000);
    }
    assert_eq!(api.delete("/api/connections/conn_1_nope").await.0, 404);
    until(Duration::from_secs(5), "closed connections leave the list", || {
        let (api, ids) = (&api, &ids);
        async move { (listed(api, "").await == vec![ids[0].clone()]).then_some(()) }
    })
    .await;
}

/// A node at its expected scale: 20 000 connections are registered (in batches of 500
/// fields per command) and listed by another node, filters included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_connections_are_registered_and_listed() {
    const CONNECTIONS: u32 = 20_000;
    let redis = Redis::start();
    let b = cluster_node(&redis).await;
    let api_b = b.http();
    let node = BareNode::start(&redis.url(), DirectoryOptions::default()).await;
    let (metrics, limits) = (Metrics::new(), QueueLimits { frames: 16, bytes: 1 << 20 });
    for i in 0..CONNECTIONS {
        let remote = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 4242));
        let user = UserId::new(&format!("u{}", i % 100));
        let handle = ConnectionHandle::new(ConnectionId::generate(), user, remote, limits, metrics.clone());
        node.registry.insert(Arc::new(handle));
    }
    let total = CONNECTIONS as usize + 1; // and the bare node's first one
    until(Duration::from_secs(20), "every connection listed on the other node", || {
        let api_b = &api_b;
        async move { (listed(api_b, "").await.len() == total).then_some(()) }
    })
    .await;
    assert_eq!(listed(&api_b, "?user=u7").await.len(), CONNECTIONS as usize / 100);
    assert_eq!(listed(&api_b, "?user=u7&topic=global").await.len(), 0, "these connections hold no topic");
}

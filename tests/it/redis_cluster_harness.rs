//! The Redis Cluster harness itself: a real 3-master cluster whose keys really spread
//! over the masters, as the `redis` cluster client sees it and as each node reports it.

use crate::servers::redis::RedisCluster;

#[tokio::test]
async fn three_master_cluster_serves_keys_in_every_slot_range() {
    let cluster = RedisCluster::start(3);
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    let seeds: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    assert_eq!(cluster.url(), format!("redis+cluster://{}", seeds.join(",")));

    // Through the cluster client: writes and reads are routed by slot.
    let client = ::redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("harness:key:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let () = ::redis::cmd("SET").arg(key).arg(i).query_async(&mut conn).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        let value: usize = ::redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap();
        assert_eq!(value, i, "{key}");
    }

    // Node by node: every master reports the same 3-master cluster and owns some of the keys.
    let mut keys_on_nodes = 0;
    for url in cluster.node_urls() {
        let node = ::redis::Client::open(url.as_str()).unwrap();
        let mut node = node.get_multiplexed_async_connection().await.unwrap();
        let info: String = ::redis::cmd("CLUSTER").arg("INFO").query_async(&mut node).await.unwrap();
        let info: Vec<&str> = info.lines().map(str::trim).collect();
        for expected in ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"]
        {
            assert!(info.contains(&expected), "{url}: {expected} missing from CLUSTER INFO {info:?}");
        }
        let nodes: String = ::redis::cmd("CLUSTER").arg("NODES").query_async(&mut node).await.unwrap();
        for port in &ports {
            let line = nodes.lines().find(|line| {
                line.split(' ').nth(1).is_some_and(|addr| addr.starts_with(&format!("127.0.0.1:{port}@")))
            });
            let line = line.unwrap_or_else(|| panic!("{url}: node {port} missing from CLUSTER NODES:\n{nodes}"));
            assert!(
                line.split(' ').nth(2).is_some_and(|flags| flags.split(',').any(|f| f == "master")),
                "{url}: {line}"
            );
        }
        let held: usize = ::redis::cmd("DBSIZE").query_async(&mut node).await.unwrap();
        assert!(held > 0, "{url} holds none of the {} keys", keys.len());
        keys_on_nodes += held;
    }
    assert_eq!(keys_on_nodes, keys.len());
}

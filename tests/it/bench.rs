//! The load generator (`signalbox-bench`, crates/signalbox-bench) against a real gateway:
//! small, bounded runs on 127.0.0.1.

use std::time::Duration;

use signalbox_bench::{BenchArgs, Protocol, Scenario, TargetArgs};

use crate::support::*;

fn args(gw: &TestGateway, out: &std::path::Path) -> BenchArgs {
    BenchArgs {
        scenario: Some(Scenario::Latency),
        target: TargetArgs { server: vec![gw.addr], publish_server: None, server_pid: vec![std::process::id()] },
        protocol: Protocol::Native,
        connections: Some(40),
        topics: Some(4),
        rate: Some(200.0),
        duration: Some(Duration::from_millis(1500)),
        warmup: Some(Duration::from_millis(300)),
        payload: Some(32),
        publishers: Some(2),
        batch: 1,
        connect_concurrency: 20,
        api_key: Some(API_KEY.into()),
        token: Some(gw.token("bench", serde_json::json!({"topics": ["bench:*"]}))),
        label: "signalbox-test".into(),
        out: out.to_owned(),
        quiet: true,
        storm_offline: Duration::ZERO,
        storm_fraction: 1.0,
        failover: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_a_real_run_with_no_loss_and_writes_report_and_plots() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-{}", std::process::id()));
    let report = signalbox_bench::run(args(&gw, &out)).await.unwrap();
    assert_eq!(report.connected, 40);
    assert!(report.published > 100, "{report}");
    assert_eq!(report.publish_failures, 0);
    assert!(report.expected > 1000, "{report}");
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    assert_eq!(report.received, report.expected);
    assert!(report.latency.count > 0 && report.latency.p50_ms > 0.0);
    assert!(report.server_rss_per_connection.is_some() && report.server_cpu_cores.is_some());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["lost"], 0);
    // Without the cluster flags: one server, which also took the publishes.
    assert_eq!(json["publish_server"], gw.addr.to_string());
    assert_eq!(json["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!((json["servers"][0]["connected"].as_u64(), json["servers"][0]["lost"].as_u64()), (Some(40), Some(0)));
    assert_eq!(json["server_processes"][0]["pid"], std::process::id());
    for plot in ["latency.svg", "throughput.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{plot}");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publishes_go_through_publish_batch_with_no_loss() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-batch-{}", std::process::id()));
    let mut a = args(&gw, &out);
    a.batch = 10;
    let report = signalbox_bench::run(a).await.unwrap();
    assert_eq!(report.publish_failures, 0, "{report}");
    assert!(report.published >= 100 && report.published % 10 == 0, "{report}");
    assert!(report.expected > 1000, "{report}");
    assert_eq!((report.lost, report.duplicates, report.received), (0, 0, report.expected), "{report}");
    assert!(report.to_string().contains("10 per POST /api/publish/batch"), "{report}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["plan"]["batch"], 10);
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_refused_connections_instead_of_measuring_nothing() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-bad-{}", std::process::id()));
    let mut a = args(&gw, &out);
    a.token = Some("not-a-token".into());
    let err = signalbox_bench::run(a).await.unwrap_err().to_string();
    assert!(err.contains("40 of 40 connections failed") && err.contains("--token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_clients_resume_with_since_and_lose_nothing() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-storm-{}", std::process::id()));
    let mut a = args(&gw, &out);
    a.scenario = Some(Scenario::Storm);
    a.duration = Some(Duration::from_millis(2400));
    a.storm_offline = Duration::from_millis(300);
    a.storm_fraction = 0.5;
    let report = signalbox_bench::run(a).await.unwrap();
    let storm = report.storm.clone().expect("a storm report");
    assert_eq!((storm.resubscribed, storm.recovered, storm.failed), (20, 20, 0), "{report}");
    assert!(storm.missed_events > 20, "the dropped clients missed events while offline: {report}");
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    assert!(storm.caught_up.count == 20 && storm.all_caught_up_ms.is_some(), "{report}");
    assert!(storm.steady_latency.count > 0, "the clients that stayed measured latency: {report}");
    let _ = std::fs::remove_dir_all(out);
}

/// The cluster flags: `--server A,B` spreads the subscribers, `--publish-server` takes the
/// publishes, `--server-pid P,Q` reads each process. With the memory broker two gateways
/// share nothing, so one gateway stands for both nodes: the run must see every event on
/// every node, count each node's clients and report where it published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_flags_spread_subscribers_and_name_the_publish_server_with_no_loss() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-cluster-{}", std::process::id()));
    let mut a = args(&gw, &out);
    a.target.server = vec![gw.addr, gw.addr];
    a.target.publish_server = Some(gw.addr);
    a.target.server_pid = vec![std::process::id(), std::process::id()];
    let report = signalbox_bench::run(a).await.unwrap();
    assert_eq!(report.connected, 40);
    assert_eq!(report.publish_failures, 0);
    assert!(report.expected > 1000, "{report}");
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    assert_eq!(report.publish_server, gw.addr.to_string());
    let nodes: Vec<_> = report.servers.iter().map(|n| (n.server.clone(), n.connected, n.lost, n.duplicates)).collect();
    let addr = gw.addr.to_string();
    assert_eq!(nodes, vec![(addr.clone(), 20, 0, 0), (addr, 20, 0, 0)], "{report}");
    assert_eq!(report.servers.iter().map(|n| n.expected).sum::<u64>(), report.expected);
    assert!(report.servers.iter().all(|n| n.received > 0 && n.latency.count > 0), "{report}");
    assert_eq!(report.server_processes.len(), 2);
    assert!(report.server_processes.iter().all(|p| p.pid == std::process::id() && p.rss_idle.is_some()));
    assert!(report.server_cpu_cores.is_some() && report.server_rss_idle.is_some());
    let text = report.to_string();
    assert!(text.contains(&format!("publishes to {}", gw.addr)), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["publish_server"], gw.addr.to_string());
    assert_eq!(json["servers"][1]["connected"], 20);
    let _ = std::fs::remove_dir_all(out);
}

/// Two gateways on the memory broker are not a cluster: subscribers on the node that does
/// not take the publishes get nothing, and the per-node counts say which node lost what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_counts_show_a_node_that_is_not_in_the_cluster() {
    let (a_gw, b_gw) = (TestGateway::spawn().await, TestGateway::spawn().await);
    let out = std::env::temp_dir().join(format!("signalbox-bench-split-{}", std::process::id()));
    let mut a = args(&a_gw, &out);
    a.target.server = vec![a_gw.addr, b_gw.addr];
    a.target.publish_server = Some(a_gw.addr);
    let report = signalbox_bench::run(a).await.unwrap();
    let (on_a, on_b) = (&report.servers[0], &report.servers[1]);
    assert_eq!((on_a.connected, on_b.connected), (20, 20), "{report}");
    assert_eq!((on_a.lost, on_a.duplicates), (0, 0), "{report}");
    assert!(on_a.received > 500 && on_a.received == on_a.expected, "{report}");
    assert_eq!(on_b.received, 0, "{report}");
    assert!(on_b.expected > 500 && on_b.lost == on_b.expected, "{report}");
    assert_eq!(report.lost, on_b.lost);
    let _ = std::fs::remove_dir_all(out);
}

/// `--failover` on a real two-node cluster (one Redis): node B stops mid-run (its clients
/// get 1001), they resume with `since` on node A, and the run still counts every event
/// once on every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_clients_resume_on_another_node_with_nothing_lost() {
    let redis = crate::servers::redis::Redis::start();
    let a = TestGateway::spawn_with(|c| c.broker = redis.url()).await;
    let mut b = TestGateway::spawn_with(|c| c.broker = redis.url()).await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-failover-{}", std::process::id()));
    let mut bench = args(&a, &out);
    bench.target.server = vec![a.addr, b.addr];
    bench.target.publish_server = Some(a.addr);
    bench.duration = Some(Duration::from_millis(2500));
    bench.failover = true;
    let run = tokio::spawn(signalbox_bench::run(bench));
    // Let the run get going (warm-up 300 ms), then stop node B.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stopping = b.begin_shutdown();
    let report = run.await.unwrap().unwrap();
    stopping.await.unwrap().unwrap();
    assert_eq!(report.failovers, 20, "node B's 20 clients moved to node A: {report}");
    assert_eq!(report.publish_failures, 0, "{report}");
    assert!(report.expected > 1000, "{report}");
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    assert!(report.to_string().contains("failover               20 subscribers resumed on another node"), "{report}");
    let _ = std::fs::remove_dir_all(out);
}

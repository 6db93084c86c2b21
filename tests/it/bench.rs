//! `signalbox bench` against a real gateway: small, bounded runs on 127.0.0.1.

use std::time::Duration;

use signalbox::bench::{BenchArgs, Protocol, Scenario};

use crate::support::*;

fn args(gw: &TestGateway, out: &std::path::Path) -> BenchArgs {
    BenchArgs {
        scenario: Some(Scenario::Latency),
        server: gw.addr,
        protocol: Protocol::Native,
        connections: Some(40),
        topics: Some(4),
        rate: Some(200.0),
        duration: Some(Duration::from_millis(1500)),
        warmup: Some(Duration::from_millis(300)),
        payload: Some(32),
        publishers: Some(2),
        connect_concurrency: 20,
        api_key: Some(API_KEY.into()),
        token: Some(gw.token("bench", serde_json::json!({"topics": ["bench:*"]}))),
        server_pid: Some(std::process::id()),
        label: "signalbox-test".into(),
        out: out.to_owned(),
        quiet: true,
        storm_offline: Duration::ZERO,
        storm_fraction: 1.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_a_real_run_with_no_loss_and_writes_report_and_plots() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-{}", std::process::id()));
    let report = signalbox::bench::run(args(&gw, &out)).await.unwrap();
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
    for plot in ["latency.svg", "throughput.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{plot}");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_refused_connections_instead_of_measuring_nothing() {
    let gw = TestGateway::spawn().await;
    let out = std::env::temp_dir().join(format!("signalbox-bench-bad-{}", std::process::id()));
    let mut a = args(&gw, &out);
    a.token = Some("not-a-token".into());
    let err = signalbox::bench::run(a).await.unwrap_err().to_string();
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
    let report = signalbox::bench::run(a).await.unwrap();
    let storm = report.storm.clone().expect("a storm report");
    assert_eq!((storm.resubscribed, storm.recovered, storm.failed), (20, 20, 0), "{report}");
    assert!(storm.missed_events > 20, "the dropped clients missed events while offline: {report}");
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    assert!(storm.caught_up.count == 20 && storm.all_caught_up_ms.is_some(), "{report}");
    assert!(storm.steady_latency.count > 0, "the clients that stayed measured latency: {report}");
    let _ = std::fs::remove_dir_all(out);
}

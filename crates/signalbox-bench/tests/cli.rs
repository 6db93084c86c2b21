//! The `signalbox-bench` binary itself (cargo builds it for these tests and names it in
//! `CARGO_BIN_EXE_signalbox-bench`): flags, exit codes, and one short real run against a
//! gateway started in this process. The measurements are checked in depth through the
//! library in the server's integration tests (tests/it/bench.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output};
use std::time::Duration;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_signalbox-bench"))
        .args(args)
        .env_remove("SIGNALBOX_JWT_SECRET")
        .env_remove("SIGNALBOX_API_KEYS")
        .output()
        .expect("run signalbox-bench")
}

#[test]
fn help_lists_the_scenarios_and_the_cluster_flags() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--scenario", "--server", "--publish-server", "--server-pid", "--protocol", "--failover", "--out"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("storm"), "{help}");
}

#[test]
fn bad_flags_exit_2() {
    let out = bench(&["--scenario", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
}

#[test]
fn version_is_the_servers() {
    let out = bench(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("signalbox-bench {}", signalbox::VERSION));
}

#[test]
fn a_run_against_nothing_fails_with_exit_1_and_says_why() {
    // Port 9 on loopback (discard): nothing listens there in the test environment.
    let out = bench(&["--server", "127.0.0.1:9", "--connections", "2", "--duration", "1s", "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("signalbox-bench: ") && err.contains("connections failed"), "{err}");
}

/// A short run of the real binary against a `--dev` gateway (anonymous clients, no API key):
/// exit 0, the report on stdout, report.json and the plots in --out, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_against_a_dev_gateway_writes_the_report_and_loses_nothing() {
    let config = signalbox::Config { listen: "127.0.0.1:0".into(), dev: true, ..signalbox::Config::default() };
    let gateway = signalbox::Gateway::build(config).await.expect("a dev gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    let out_dir = std::env::temp_dir().join(format!("signalbox-bench-cli-{}", std::process::id()));
    let pid = std::process::id().to_string();
    let args = [
        "--server",
        &addr,
        "--server-pid",
        &pid,
        "--connections",
        "20",
        "--topics",
        "2",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--quiet",
        "--out",
        out_dir.to_str().unwrap(),
    ]
    .map(String::from);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || bench(&args.iter().map(String::as_str).collect::<Vec<_>>())),
    )
    .await
    .expect("the run ends")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("report and plots:"), "{stdout}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["connected"], 20, "{json}");
    assert_eq!((json["lost"].as_u64(), json["duplicates"].as_u64()), (Some(0), Some(0)), "{json}");
    assert!(json["received"].as_u64() > Some(0), "{json}");
    assert!(out_dir.join("latency.svg").exists() && out_dir.join("throughput.svg").exists());
    let _ = std::fs::remove_dir_all(&out_dir);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

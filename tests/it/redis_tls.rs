//! `rediss://` with a password: the Redis broker over TLS and AUTH, against a real `redis-server --tls-port` with a
//! certificate from a throwaway CA (made with the `openssl` command). The node trusts the
//! CA through `SSL_CERT_FILE`, as a container would with its CA bundle; without it the
//! node starts but is not ready.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::servers::{ServerProcess, free_port};
use crate::support::Client;

fn run(program: &str, args: &[&str], dir: &Path) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; install it with: apt-get install -y openssl"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=signalbox-test-ca",
        ],
        dir,
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost").unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
        dir,
    );
}

/// The real binary on a free port (killed on drop).
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    fn spawn(broker: &str, ca: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalbox"));
        for (key, _) in std::env::vars() {
            if key.starts_with("SIGNALBOX_") || key.starts_with("SSL_CERT") {
                cmd.env_remove(key);
            }
        }
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let mut child = cmd
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .env("SIGNALBOX_BROKER", broker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("signalbox listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
        Self { child, addr }
    }

    async fn ready(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/ready", self.addr)).await.unwrap().json().await.unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_reach_redis_over_tls_and_verify_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let port = free_port();
    let (cert, key, ca) = (dir.path().join("redis.crt"), dir.path().join("redis.key"), dir.path().join("ca.crt"));
    let port_arg = port.to_string();
    let args = [
        "--port",
        "0",
        "--tls-port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "tls-test-password",
    ];
    let _redis = ServerProcess::start("redis-server", &args, port, "apt-get install -y redis-server");
    // A password in the URL, as managed Redis with AUTH needs.
    let url = format!("rediss://default:tls-test-password@127.0.0.1:{port}");

    let trusted = Node::spawn(&url, Some(&ca));
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        body = trusted.ready().await;
        if body["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["broker"]["reachable"], true);

    let mut client = Client::connect(&format!("ws://{}/ws?topic=job:tls", trusted.addr)).await;
    loop {
        let frame = client.recv().await; // connected, then the connect-time subscribes
        if frame["type"] == "subscribed" && frame["topic"] == "job:tls" {
            break;
        }
    }
    let published: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/publish", trusted.addr))
        .json(&json!({"topic": "job:tls", "event": {"type": "over_tls"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(published["offset"], 1, "{published}");
    let event = loop {
        let frame = client.recv().await;
        if frame["topic"] == "job:tls" {
            break frame;
        }
    };
    assert_eq!((event["type"].as_str(), event["offset"].as_u64()), (Some("over_tls"), Some(1)));

    // A certificate the node cannot verify is refused: the node runs, but is not ready.
    let untrusting = Node::spawn(&url, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = untrusting.ready().await;
    assert_eq!(body["status"], "broker unreachable", "{body}");
    assert_eq!(body["broker"]["reachable"], false);
}

//! The HTTP edge before the upgrade, attacked as a slowloris would: idle and unfinished
//! connections are closed within their deadlines, headers are bounded, pending
//! connections are bounded in all and per IP, and the node keeps serving at its
//! open-file limit. A normal client is served throughout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Reads until the server closes the socket; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "the server kept the socket open for {limit:?}; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    (received, Instant::now())
}

/// Reads one HTTP response head (and whatever body came with it).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response");
    String::from_utf8_lossy(&received).into_owned()
}

fn shed(gateway: &TestGateway, reason: &str) -> f64 {
    metric(&gateway.state.metrics.render(), &format!("signalbox_http_connections_shed_total{{reason=\"{reason}\"}}"))
}

fn pending(gateway: &TestGateway) -> f64 {
    metric(&gateway.state.metrics.render(), "signalbox_http_pending_connections")
}

/// Waits until the server holds `n` pending connections.
async fn until_pending(gateway: &TestGateway, n: f64) {
    tokio::time::timeout(WAIT, async {
        while pending(gateway) != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("pending connections stayed at {} (wanted {n})", pending(gateway)));
}

#[tokio::test]
async fn slowloris_sockets_close_within_the_handshake_timeout_while_a_client_is_served() {
    let timeout = Duration::from_millis(700);
    let gateway = TestGateway::spawn_with(|c| c.http.handshake_timeout = timeout).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    // Unfinished heads: a request line and 8 KiB of one header, never the blank line.
    let mut unfinished = Vec::new();
    let head = format!("GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: {}", "a".repeat(8 * 1024));
    for _ in 0..100 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        unfinished.push(stream);
    }

    // A normal client connects, subscribes and receives while the attack is held.
    let mut client = gateway.connect("alice", json!({"topics": ["job:*"]})).await;
    client.subscribe("job:1").await;
    gateway.http().publish("job:1", json!({"type": "progress", "pct": 10})).await;
    let event = client.recv().await;
    assert_eq!(event["pct"], 10);

    let mut closed_after = Vec::new();
    for stream in idle.iter_mut().chain(unfinished.iter_mut()) {
        let (_, at) = read_until_closed(stream, timeout + Duration::from_secs(5)).await;
        closed_after.push(at - started);
    }
    let last = closed_after.iter().max().copied().unwrap_or_default();
    assert!(last < timeout + Duration::from_secs(3), "the last attacker socket closed after {last:?}");
    assert_eq!(shed(&gateway, "handshake_timeout"), 300.0);
    // The client's WebSocket is not a pending connection, and still works.
    gateway.http().publish("job:1", json!({"type": "progress", "pct": 20})).await;
    assert_eq!(client.recv().await["pct"], 20);
}

#[tokio::test]
async fn idle_keep_alive_closes_after_the_idle_timeout_and_a_late_head_after_the_handshake_timeout() {
    let gateway = TestGateway::spawn_with(|c| {
        c.http.handshake_timeout = Duration::from_millis(300);
        c.http.idle_timeout = Duration::from_secs(3);
    })
    .await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    let mut idle = TcpStream::connect(gateway.addr).await.unwrap();
    idle.write_all(request).await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let idled = closed - answered;
    assert!(
        idled >= Duration::from_millis(2500),
        "an idle keep-alive connection closed after {idled:?}, before the idle timeout"
    );

    // After a request, the next head must arrive within the handshake timeout, not the idle one.
    let mut late = TcpStream::connect(gateway.addr).await.unwrap();
    late.write_all(request).await.unwrap();
    assert!(read_response(&mut late).await.starts_with("HTTP/1.1 200"));
    late.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut late, Duration::from_secs(10)).await;
    assert!(closed - started < Duration::from_millis(2000), "an unfinished head was held {:?}", closed - started);
    assert_eq!(shed(&gateway, "idle_timeout"), 1.0);
    assert_eq!(shed(&gateway, "handshake_timeout"), 1.0);
}

#[tokio::test]
async fn headers_are_bounded() {
    let gateway = TestGateway::spawn().await;
    let mut big = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(20 * 1024));
    big.write_all(head.as_bytes()).await.unwrap();
    let response = read_response(&mut big).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");

    let mut fits = TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(12 * 1024));
    fits.write_all(head.as_bytes()).await.unwrap();
    let response = read_response(&mut fits).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn pending_connections_are_bounded_per_ip() {
    let gateway = TestGateway::spawn_with(|c| c.http.max_pending_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    until_pending(&gateway, 3.0).await;
    let mut refused = TcpStream::connect(gateway.addr).await.unwrap();
    let (answer, _) = read_until_closed(&mut refused, WAIT).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains(r#""code":"RATE_LIMIT_EXCEEDED""#), "{answer}");
    assert_eq!(shed(&gateway, "pending_limit_per_ip"), 1.0);
    // Upgraded WebSockets do not count: a slot freed, a client connects and stays.
    drop(held.pop());
    until_pending(&gateway, 2.0).await;
    let mut client = gateway.connect("bob", json!({})).await;
    until_pending(&gateway, 2.0).await;
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_full_pending_table_evicts_the_oldest_idle_connection_for_a_new_one() {
    let gateway = TestGateway::spawn_with(|c| c.http.max_pending_connections = 3).await;
    let mut oldest = TcpStream::connect(gateway.addr).await.unwrap();
    until_pending(&gateway, 1.0).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    until_pending(&gateway, 3.0).await;
    // Only connections older than half a second may be evicted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut fresh = TcpStream::connect(gateway.addr).await.unwrap();
    fresh.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(read_response(&mut fresh).await.starts_with("HTTP/1.1 200"));
    read_until_closed(&mut oldest, WAIT).await;
    assert_eq!(shed(&gateway, "evicted"), 1.0);
}

/// A child process killed when the test ends, also when it panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary, with its open-file limit lowered to `nofile` for this child only.
fn spawn_with_file_limit(nofile: u32) -> (KillOnDrop, String) {
    let binary = env!("CARGO_BIN_EXE_signalbox");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"{binary}\" serve --dev --listen 127.0.0.1:0"))
        .env_remove("SIGNALBOX_CONFIG")
        .env("SIGNALBOX_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh to start the gateway");
    let stdout = child.stdout.take().unwrap();
    let child = KillOnDrop(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let addr = line.trim().strip_prefix("signalbox listening on ").unwrap_or_else(|| panic!("{line}")).to_owned();
    (child, addr)
}

async fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, WAIT).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn at_the_file_limit_health_answers_and_the_node_recovers() {
    let (_child, addr) = spawn_with_file_limit(64);
    // Upgraded WebSockets until the server cannot accept more.
    let mut sockets = Vec::new();
    let mut refused = false;
    for _ in 0..80 {
        match tokio::time::timeout(
            Duration::from_secs(1),
            Client::connect_with_headers(&format!("ws://{addr}/ws"), &[]),
        )
        .await
        {
            Ok(Ok(client)) => sockets.push(client),
            _ => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "64 descriptors held {} WebSockets", sockets.len());
    let started = Instant::now();
    let health = get(&addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(started.elapsed() < Duration::from_secs(3), "/health took {:?} at the file limit", started.elapsed());
    let metrics = get(&addr, "/metrics").await;
    assert!(metric(&metrics, "signalbox_accept_errors_total{kind=\"file_limit\"}") > 0.0, "{metrics}");
    // Anything else on the priority lane is told to come back.
    let api = get(&addr, "/api/topics/job:1").await;
    assert!(api.starts_with("HTTP/1.1 503"), "{api}");

    // The WebSockets already open were never disturbed.
    for client in sockets.iter_mut().take(3) {
        assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
    }
    drop(sockets);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_secs(1), Client::connect_with_headers(&format!("ws://{addr}/ws"), &[]))
                .await
        {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = again.expect("a new WebSocket once descriptors were free");
    assert_eq!(again.request(json!({"action": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_slowloris_at_the_file_limit_loses_its_oldest_sockets_to_health_checks() {
    let (_child, addr) = spawn_with_file_limit(64);
    let mut attackers = Vec::new();
    for _ in 0..150 {
        attackers.push(TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    let health = get(&addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(started.elapsed() < Duration::from_secs(3), "/health took {:?}", started.elapsed());
    let mut client = tokio::time::timeout(WAIT, Client::connect_with_headers(&format!("ws://{addr}/ws"), &[]))
        .await
        .expect("a WebSocket client gets in during the attack")
        .unwrap();
    assert_eq!(client.request(json!({"action": "ping"})).await["type"], "pong");
}

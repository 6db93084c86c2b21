//! The opening handshake over a raw TCP socket (RFC 6455 §4): what a WebSocket client
//! library would never send — wrong versions, malformed keys, other methods — and the
//! exact refusal each one gets.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestGateway, metric};

/// Bound on every exchange in this file.
pub const STEP: Duration = Duration::from_secs(5);

/// The RFC 6455 §1.3 sample key and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A parsed HTTP response head and the body after it (`Content-Length` bytes), plus
/// whatever the server sent past them (the first WebSocket frames after a `101`).
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names; repeated headers joined with `, `.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub rest: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// The headers of a valid upgrade request for `path`, in order; tests edit the list.
pub fn upgrade_headers(gw: &TestGateway) -> Vec<(&'static str, String)> {
    vec![
        ("Host", gw.addr.to_string()),
        ("Connection", "Upgrade".into()),
        ("Upgrade", "websocket".into()),
        ("Sec-WebSocket-Version", "13".into()),
        ("Sec-WebSocket-Key", KEY.into()),
    ]
}

/// Sends `method path` with `headers` on a new connection and reads the response head and
/// body. Returns the socket too (open after a `101`).
pub async fn raw_request(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&'static str, String)],
) -> (TcpStream, RawResponse) {
    let mut stream = tokio::time::timeout(STEP, TcpStream::connect(gw.addr)).await.unwrap().unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = tokio::time::timeout(STEP, read_response(&mut stream)).await.expect("a response within 5 s");
    (stream, response)
}

async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = HashMap::<String, String>::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap();
        headers
            .entry(name.trim().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value.trim());
            })
            .or_insert_with(|| value.trim().to_owned());
    }
    let length: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
    let mut rest = buf.split_off(head_end);
    while rest.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the body");
        rest.extend_from_slice(&chunk[..n]);
    }
    let body = rest.drain(..length).collect();
    RawResponse { status, headers, body, rest }
}

/// `path` with a valid token for `user`.
pub fn ws_path(gw: &TestGateway, user: &str) -> String {
    format!("/ws?token={}", gw.token(user, json!({})))
}

fn assert_validation_error(response: &RawResponse, status: u16) {
    assert_eq!(response.status, status);
    assert_eq!(response.headers["content-type"], "application/json");
    let body = response.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], "VALIDATION_ERROR", "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["message"], body["error"]["message"], "{body}");
}

fn with(
    mut headers: Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| *n != name);
    if let Some(value) = value {
        headers.push((name, value.to_owned()));
    }
    headers
}

#[tokio::test]
async fn a_valid_upgrade_switches_protocols() {
    let gw = TestGateway::spawn().await;
    let (_stream, response) = raw_request(&gw, "GET", &ws_path(&gw, "u1"), &upgrade_headers(&gw)).await;
    assert_eq!(response.status, 101);
    assert_eq!(response.headers["sec-websocket-accept"], ACCEPT);
    assert_eq!(response.headers["upgrade"].to_ascii_lowercase(), "websocket");
}

#[tokio::test]
async fn version_8_gets_426_naming_version_13() {
    let gw = TestGateway::spawn().await;
    let headers = with(upgrade_headers(&gw), "Sec-WebSocket-Version", Some("8"));
    let (_, response) = raw_request(&gw, "GET", &ws_path(&gw, "u1"), &headers).await;
    assert_validation_error(&response, 426);
    assert_eq!(response.headers["sec-websocket-version"], "13");
    // Counted like every refused upgrade.
    let text = gw.http().get("/metrics").await.1;
    assert_eq!(metric(text.as_str().unwrap(), r#"signalbox_errors_total{code="VALIDATION_ERROR"}"#), 1.0);
}

/// Each malformed handshake, with the status it must get: the JSON error shape every time,
/// and the supported version on a `426`.
#[tokio::test]
async fn malformed_handshakes_are_refused_with_the_right_status() {
    let gw = TestGateway::spawn().await;
    let cases: [(&str, Option<&str>, u16); 6] = [
        ("Sec-WebSocket-Version", None, 426),
        ("Sec-WebSocket-Key", Some("abc"), 400),
        // base64 of the 15 bytes "fifteen bytes!!".
        ("Sec-WebSocket-Key", Some("ZmlmdGVlbiBieXRlcyEh"), 400),
        ("Sec-WebSocket-Key", None, 400),
        ("Connection", Some("keep-alive"), 400),
        ("Upgrade", Some("h2c"), 400),
    ];
    for (header, value, status) in cases {
        let headers = with(upgrade_headers(&gw), header, value);
        let (_, response) = raw_request(&gw, "GET", &ws_path(&gw, "u1"), &headers).await;
        assert_validation_error(&response, status);
        if status == 426 {
            assert_eq!(response.headers["sec-websocket-version"], "13", "{header}: {value:?}");
        }
    }
}

#[tokio::test]
async fn http_1_0_gets_426() {
    let gw = TestGateway::spawn().await;
    let mut stream = tokio::time::timeout(STEP, TcpStream::connect(gw.addr)).await.unwrap().unwrap();
    let mut request = format!("GET {} HTTP/1.0\r\n", ws_path(&gw, "u1"));
    for (name, value) in upgrade_headers(&gw) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = tokio::time::timeout(STEP, read_response(&mut stream)).await.unwrap();
    assert_validation_error(&response, 426);
    assert_eq!(response.headers["upgrade"], "websocket");
}

#[tokio::test]
async fn another_method_gets_405_allowing_get() {
    let gw = TestGateway::spawn().await;
    let mut headers = upgrade_headers(&gw);
    headers.push(("Content-Length", "0".into()));
    let (_, response) = raw_request(&gw, "POST", &ws_path(&gw, "u1"), &headers).await;
    assert_eq!(response.status, 405);
    assert!(response.headers["allow"].split(',').any(|m| m.trim() == "GET"), "{:?}", response.headers);
}

/// `/ws` is routed for every method, so the handshake's own 405 answers, in JSON.
#[tokio::test]
async fn another_method_gets_405_json() {
    let gw = TestGateway::spawn().await;
    let mut headers = upgrade_headers(&gw);
    headers.push(("Content-Length", "0".into()));
    let (_, response) = raw_request(&gw, "POST", &ws_path(&gw, "u1"), &headers).await;
    assert_validation_error(&response, 405);
    assert_eq!(response.headers["allow"], "GET");
}

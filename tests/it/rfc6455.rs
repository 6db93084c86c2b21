//! Frame-level conformance over a raw TCP socket (RFC 6455 §5-7): every way a client can
//! break the framing rules ends with the server's Close frame carrying the right code
//! (§7.4.1: `1002` protocol error, `1007` invalid UTF-8, `1009` too big), then the end of
//! the TCP stream, and is counted in `signalbox_ws_protocol_errors_total{code}`.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handshake::{STEP, raw_request, upgrade_headers, ws_path};
use crate::support::{TestGateway, metric};

/// A frame as the server sent it.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

/// A WebSocket client written by hand, so it can send what no library would.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// A client frame: `first` is the first header byte (FIN, RSV bits, opcode) as given; the
/// payload is masked with a fixed non-zero key, as clients must (§5.3).
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = header(first, 0x80, payload.len());
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// A client frame without a mask (forbidden, §5.1).
fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = header(first, 0, payload.len());
    frame.extend_from_slice(payload);
    frame
}

fn header(first: u8, mask_bit: u8, len: usize) -> Vec<u8> {
    match len {
        0..=125 => vec![first, mask_bit | len as u8],
        126..=0xFFFF => [&[first, mask_bit | 126][..], &(len as u16).to_be_bytes()].concat(),
        _ => [&[first, mask_bit | 127][..], &(len as u64).to_be_bytes()].concat(),
    }
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

impl RawWs {
    /// Upgrades by hand and reads the `connected` frame.
    async fn connect(gw: &TestGateway) -> Self {
        let (stream, response) = raw_request(gw, "GET", &ws_path(gw, "raw"), &upgrade_headers(gw)).await;
        assert_eq!(response.status, 101);
        let mut ws = Self { stream, buf: response.rest };
        let connected = ws.next_frame().await.expect("the connected frame");
        assert_eq!(connected.opcode, TEXT);
        let connected: serde_json::Value = serde_json::from_slice(&connected.payload).unwrap();
        assert_eq!(connected["type"], "connected", "{connected}");
        ws
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next server frame, or `None` at the end of the stream.
    async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(STEP, self.read_frame()).await.expect("a frame or the end of the stream within 5 s")
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.expect("a clean end of stream, not a reset");
            if n == 0 {
                assert!(self.buf.is_empty(), "the stream ended inside a frame: {:?}", self.buf);
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads past any text frame to the server's Close frame; returns its code and
    /// reason. Then asserts the server ends the TCP stream (FIN, not RST).
    async fn expect_close(&mut self) -> (u16, String) {
        let close = loop {
            let frame = self.next_frame().await.expect("a close frame before the end of the stream");
            if frame.opcode != TEXT {
                break frame;
            }
        };
        assert_eq!(close.opcode, CLOSE, "{close:?}");
        assert!(close.fin && !close.masked, "{close:?}");
        assert!(close.payload.len() >= 2, "a close frame with a code: {close:?}");
        let code = u16::from_be_bytes([close.payload[0], close.payload[1]]);
        let reason = String::from_utf8(close.payload[2..].to_vec()).expect("a UTF-8 reason");
        assert!(self.next_frame().await.is_none(), "the TCP stream ends after the close frame");
        (code, reason)
    }
}

/// One complete server frame at the start of `buf`, and its length.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7F {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize, 10),
        n => (n as usize, 2),
    };
    if masked {
        at += 4;
    }
    let payload = buf.get(at..at + len)?.to_vec();
    Some((Frame { fin: first & 0x80 != 0, opcode: first & 0x0F, masked, payload }, at + len))
}

/// One way to break the protocol: the bytes sent after the upgrade, and the close code
/// the server must answer with.
struct Case {
    name: String,
    bytes: Vec<u8>,
    code: u16,
}

fn case(name: impl Into<String>, bytes: Vec<u8>, code: u16) -> Case {
    Case { name: name.into(), bytes, code }
}

/// Every case; a test picks the ones whose name starts with its prefix.
fn cases() -> Vec<Case> {
    let mut cases = vec![
        case("unmasked text frame", unmasked(FIN | TEXT, br#"{"action":"ping"}"#), 1002),
        case("rsv1 without extension", masked(FIN | 0x40 | TEXT, br#"{"action":"ping"}"#), 1002),
        case("rsv2 without extension", masked(FIN | 0x20 | TEXT, br#"{"action":"ping"}"#), 1002),
        case("rsv3 without extension", masked(FIN | 0x10 | TEXT, br#"{"action":"ping"}"#), 1002),
        case("control frame over 125 bytes", masked(FIN | PING, &[b'p'; 126]), 1002),
        case("control frame fragmented", masked(PING, b"ping"), 1002),
        case("continuation with no message started", masked(FIN | CONTINUATION, b"{}"), 1002),
        case(
            "new data frame inside a fragmented message",
            [masked(TEXT, br#"{"action":"#), masked(FIN | TEXT, br#"{"action":"ping"}"#)].concat(),
            1002,
        ),
        case("close with a 1-byte payload", masked(FIN | CLOSE, &[0x03]), 1002),
        case("invalid utf-8 in a text message", masked(FIN | TEXT, b"{\"a\":\"\xff\xfe\"}"), 1007),
        case(
            "invalid utf-8 in a fragmented text message",
            [masked(TEXT, b"{\"a\":\""), masked(FIN | CONTINUATION, b"\xc0\x80\"}")].concat(),
            1007,
        ),
        case("invalid utf-8 in a close reason", masked(FIN | CLOSE, &close_payload(1000, b"bye \xff")), 1007),
        // Only the header: the length alone is over the hard limit (2 × 65,536).
        case("too big", header(FIN | TEXT, 0x80, 200_000).into_iter().chain([1, 2, 3, 4]).collect(), 1009),
    ];
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        cases.push(case(format!("reserved opcode {opcode:#x}"), masked(FIN | opcode, b""), 1002));
    }
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        cases.push(case(format!("invalid close code {code}"), masked(FIN | CLOSE, &close_payload(code, b"")), 1002));
    }
    cases
}

/// Breaks the protocol as `case` says on a new connection and checks the server's answer.
async fn violate(gw: &TestGateway, case: &Case) {
    let mut ws = RawWs::connect(gw).await;
    ws.send(&case.bytes).await;
    let (code, reason) = ws.expect_close().await;
    assert_eq!(code, case.code, "{}: reason {reason:?}", case.name);
}

async fn protocol_errors(gw: &TestGateway, code: u16) -> f64 {
    let text = gw.http().get("/metrics").await.1;
    metric(text.as_str().unwrap(), &format!(r#"signalbox_ws_protocol_errors_total{{code="{code}"}}"#))
}

/// Runs the cases named `prefix…` against a fresh gateway, each on its own connection,
/// and checks each was counted under its code.
async fn check(prefix: &str) {
    let gw = TestGateway::spawn().await;
    let picked: Vec<Case> = cases().into_iter().filter(|c| c.name.starts_with(prefix)).collect();
    assert!(!picked.is_empty(), "no case named {prefix}");
    for case in &picked {
        violate(&gw, case).await;
    }
    for code in [1002, 1007, 1009] {
        let expected = picked.iter().filter(|c| c.code == code).count() as f64;
        assert_eq!(protocol_errors(&gw, code).await, expected, "{prefix}: code {code}");
    }
}

#[tokio::test]
async fn unmasked_client_frame_is_1002() {
    check("unmasked text frame").await;
}

#[tokio::test]
async fn rsv1_is_1002() {
    check("rsv1").await;
}

#[tokio::test]
async fn rsv2_is_1002() {
    check("rsv2").await;
}

#[tokio::test]
async fn rsv3_is_1002() {
    check("rsv3").await;
}

#[tokio::test]
async fn control_frame_over_125_bytes_is_1002() {
    check("control frame over 125 bytes").await;
}

#[tokio::test]
async fn fragmented_control_frame_is_1002() {
    check("control frame fragmented").await;
}

#[tokio::test]
async fn orphan_continuation_is_1002() {
    check("continuation with no message started").await;
}

#[tokio::test]
async fn data_frame_inside_a_fragmented_message_is_1002() {
    check("new data frame inside a fragmented message").await;
}

#[tokio::test]
async fn reserved_data_opcodes_are_1002() {
    for opcode in ["0x3", "0x4", "0x5", "0x6", "0x7"] {
        check(&format!("reserved opcode {opcode}")).await;
    }
}

#[tokio::test]
async fn reserved_control_opcodes_are_1002() {
    for opcode in ["0xb", "0xc", "0xd", "0xe", "0xf"] {
        check(&format!("reserved opcode {opcode}")).await;
    }
}

#[tokio::test]
async fn invalid_close_codes_are_1002() {
    check("invalid close code").await;
}

#[tokio::test]
async fn close_with_a_1_byte_payload_is_1002() {
    check("close with a 1-byte payload").await;
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    check("invalid utf-8 in a text message").await;
    check("invalid utf-8 in a fragmented text message").await;
}

#[tokio::test]
async fn invalid_utf8_close_reason_is_1007() {
    check("invalid utf-8 in a close reason").await;
}

#[tokio::test]
async fn too_big_is_1009() {
    check("too big").await;
}

#[tokio::test]
async fn a_valid_close_is_answered_with_the_same_code_and_not_counted() {
    let gw = TestGateway::spawn().await;
    let mut ws = RawWs::connect(&gw).await;
    ws.send(&masked(FIN | CLOSE, &close_payload(4000, b"done"))).await;
    assert_eq!(ws.expect_close().await, (4000, "done".to_owned()));
    for code in [1002, 1007, 1009] {
        assert_eq!(protocol_errors(&gw, code).await, 0.0);
    }
}

#[tokio::test]
async fn every_violation_leaves_other_clients_unaffected() {
    let gw = TestGateway::spawn().await;
    let mut watcher = gw.connect("watcher", json!({"topics": ["job:*"]})).await;
    watcher.subscribe("job:rfc6455").await;
    let all = cases();
    for case in &all {
        violate(&gw, case).await;
    }
    // An existing client and a new one both still receive.
    let mut client = gw.connect("after", json!({"topics": ["job:*"]})).await;
    client.subscribe("job:rfc6455").await;
    let offset = gw.http().publish("job:rfc6455", json!({"type": "still.here"})).await;
    for c in [&mut watcher, &mut client] {
        let event = c.recv().await;
        assert_eq!(event["type"], "still.here", "{event}");
        assert_eq!(event["offset"], offset);
    }
    for code in [1002, 1007, 1009] {
        let expected = all.iter().filter(|c| c.code == code).count() as f64;
        assert_eq!(protocol_errors(&gw, code).await, expected, "code {code}");
    }
    // Every violating connection was released.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = gw.http().get("/metrics").await.1;
        if metric(text.as_str().unwrap(), "signalbox_connections") == 2.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "violating connections still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

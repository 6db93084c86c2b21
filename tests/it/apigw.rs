//! AWS API Gateway's management API at `/@connections/{id}` (SPEC §9.3), driven by the
//! real clients our users call it with, unchanged but for the endpoint URL: boto3's
//! `apigatewaymanagementapi` client (tests/apigw/boto3_driver.py, run with python3) and
//! the AWS JS SDK v3 `ApiGatewayManagementApiClient` (tests/apigw/sdk_driver.mjs, run with
//! node), each spoken to in JSON lines, against a real gateway on 127.0.0.1:0.
//!
//! Covered: post (a UTF-8 body arrives as one text frame, byte for byte; a non-UTF-8 body as
//! one binary frame), get (ISO 8601 `connectedAt`/`lastActiveAt` that bracket what the test
//! saw, `sourceIp`, the upgrade's `User-Agent`), delete (close 1000, then 410
//! `GoneException`), all with and without a stage in the endpoint URL; 410 for unknown ids;
//! percent-encoded ids (`%5F` for `_` with an API key and with a SigV4 signature over the
//! path as sent, ids the SDKs themselves encode); 413 `PayloadTooLargeException` over
//! `max_post_size` (a small one, and the 128 KiB default); 403 `ForbiddenException` for a
//! wrong secret, an unknown key id, an expired date, a tampered body, a signature replayed
//! on another path and no auth at all, with the API key bearer and a second (rotated)
//! credential pair accepted; a two-node cluster on one Redis where the call lands on the
//! node that does not hold the connection; 429 `LimitExceededException` for a connection
//! whose send queue is full.
//!
//! Needs python3 with boto3 (`python3 -m pip install boto3`), node with
//! `tests/apigw/node_modules` (`(cd tests/apigw && npm ci)`; scripts/test does both) and
//! redis-server; without them these tests fail with the command that installs them.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::servers::redis::Redis;
use crate::support::*;

/// The credential pairs every gateway here accepts (two, as during a key rotation).
const KEY: &str = "AKIDSIGNALBOXTEST1";
const KEY_SECRET: &str = "apigw-secret-one/0123456789";
const KEY2: &str = "AKIDSIGNALBOXTEST2";
const KEY2_SECRET: &str = "apigw-secret-two/9876543210";

/// How long one driver call may take (a flood of posts is one call).
const CALL_LIMIT: Duration = Duration::from_secs(60);

fn credentials() -> Vec<String> {
    vec![format!("{KEY}:{KEY_SECRET}"), format!("{KEY2}:{KEY2_SECRET}")]
}

async fn gateway() -> TestGateway {
    TestGateway::spawn_with(|c| c.apigw.credentials = credentials()).await
}

// --- the drivers -------------------------------------------------------------------------

/// `tests/apigw`, where both drivers (and the JS SDK's node_modules) live.
fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("apigw")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sdk {
    Boto3,
    Js,
}

const BOTH: [Sdk; 2] = [Sdk::Boto3, Sdk::Js];

/// A running driver (killed when dropped) in `--ops-file -` mode: each op is one JSON line
/// on its stdin, answered by one JSON line before the next is read.
struct Driver {
    sdk: Sdk,
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Driver {
    /// Starts `sdk`'s driver with `endpoint` and the first credential pair as defaults.
    async fn start(sdk: Sdk, endpoint: &str) -> Self {
        let dir = driver_dir();
        let (program, script, install) = match sdk {
            Sdk::Boto3 => ("python3", "boto3_driver.py", "python3 -m pip install boto3"),
            Sdk::Js => {
                assert!(
                    dir.join("node_modules/@aws-sdk/client-apigatewaymanagementapi").is_dir(),
                    "@aws-sdk/client-apigatewaymanagementapi is not installed for the tests; run: \
                     (cd tests/apigw && npm ci) (scripts/test does this; node and npm come with: \
                     apt-get install -y nodejs npm)"
                );
                ("node", "sdk_driver.mjs", "(cd tests/apigw && npm ci), node from apt-get install -y nodejs npm")
            }
        };
        let mut child = Command::new(program)
            .arg(dir.join(script))
            .args(["--endpoint", endpoint, "--key", KEY, "--secret", KEY_SECRET, "--region", "eu-west-1"])
            .args(["--ops-file", "-"])
            .current_dir(&dir)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}; install it with: {install}"));
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let collected = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                collected.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { sdk, _child: child, stdin, lines, stderr }
    }

    /// Runs one op and returns the driver's answer.
    async fn call(&mut self, op: Value) -> Value {
        let install = match self.sdk {
            Sdk::Boto3 => "python3 -m pip install boto3",
            Sdk::Js => "(cd tests/apigw && npm ci)",
        };
        let mut line = op.to_string();
        line.push('\n');
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            panic!("the {:?} driver takes no ops ({e}; install: {install}); stderr:\n{}", self.sdk, self.stderr());
        }
        let answer = match tokio::time::timeout(CALL_LIMIT, self.lines.next_line()).await {
            Ok(Ok(Some(answer))) => answer,
            Ok(_) => panic!(
                "the {:?} driver ended during {op} (is it installed? {install}); stderr:\n{}",
                self.sdk,
                self.stderr()
            ),
            Err(_) => panic!("the {:?} driver did not answer {op} within {CALL_LIMIT:?}", self.sdk),
        };
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the {:?} driver printed {answer:?}: {e}", self.sdk));
        assert!(answer.get("driver_error").is_none(), "the {:?} driver failed on {op}: {answer}", self.sdk);
        answer
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn post(&mut self, id: &str, text: &str) -> Value {
        self.call(json!({"op": "post", "id": id, "data": text})).await
    }

    async fn post_bytes(&mut self, id: &str, bytes: &[u8]) -> Value {
        self.call(json!({"op": "post", "id": id, "data_hex": hex(bytes)})).await
    }

    async fn get(&mut self, id: &str) -> Value {
        self.call(json!({"op": "get", "id": id})).await
    }

    async fn delete(&mut self, id: &str) -> Value {
        self.call(json!({"op": "delete", "id": id})).await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The driver's answer is a success with HTTP `status`; returns its result.
#[track_caller]
fn ok(answer: &Value, status: u16) -> Value {
    assert_eq!(answer["ok"], true, "expected success: {answer}");
    assert_eq!(answer["result"]["status"], status, "{answer}");
    answer["result"].clone()
}

/// The driver's answer is the SDK's exception `code` for HTTP `status`.
#[track_caller]
fn aws_error(answer: &Value, code: &str, status: u16) {
    assert_eq!(answer["ok"], false, "expected {code}: {answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    assert_eq!(answer["error"]["status"], status, "{answer}");
}

/// A raw answer (the driver's signature attacks, or [`raw`]) is API Gateway's 403.
#[track_caller]
fn forbidden(answer: &Value) {
    assert_eq!(answer["status"], 403, "{answer}");
    assert_eq!(answer["headers"]["x-amzn-errortype"], "ForbiddenException", "{answer}");
    assert_eq!(answer["body"], json!({"message": "Forbidden"}), "{answer}");
}

// --- raw HTTP ------------------------------------------------------------------------------

/// One request as given (the path is sent exactly as written, percent-encoding included),
/// optionally with `Authorization: Bearer <key>`; answers `{"status","headers","body"}` as
/// the drivers' raw ops do.
async fn raw(method: &str, url: &str, bearer: Option<&str>, body: &[u8]) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method, url).body(body.to_vec());
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
        .collect();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { json!("") } else { serde_json::from_str(&text).unwrap_or(json!(text)) };
    json!({"status": status, "headers": headers, "body": body})
}

/// `id` with every `_` written `%5F`, as an HTTP client may send it.
fn encoded(id: &str) -> String {
    id.replace('_', "%5F")
}

// --- WebSocket clients ---------------------------------------------------------------------

/// A client of `gw` for `sub` whose upgrade request carries `User-Agent: user_agent`.
async fn connect_as(gw: &TestGateway, sub: &str, user_agent: &str) -> Client {
    let url = gw.ws_url(&format!("?token={}", gw.token(sub, json!({}))));
    let client = Client::connect_with_headers(&url, &[("user-agent", user_agent)]).await.unwrap();
    assert_eq!(client.connected["type"], "connected", "{}", client.connected);
    client
}

/// The next data frame (pings and pongs skipped); fails on anything else.
async fn frame(client: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, client.ws.next()).await.expect("a frame within 10 s");
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return m,
            other => panic!("expected a data frame, got {other:?}"),
        }
    }
}

/// The next frame is a text frame holding exactly `text`.
async fn expect_text(client: &mut Client, text: &str) {
    match frame(client).await {
        Message::Text(t) => assert_eq!(t.as_str(), text),
        other => panic!("expected the text frame {text:?}, got {other:?}"),
    }
}

/// The next frame is a binary frame holding exactly `bytes`.
async fn expect_binary(client: &mut Client, bytes: &[u8]) {
    match frame(client).await {
        Message::Binary(b) => assert_eq!(&b[..], bytes),
        other => panic!("expected a binary frame of {bytes:?}, got {other:?}"),
    }
}

/// Data frames until the server's close frame; returns (frames, close code).
async fn frames_until_close(client: &mut Client) -> (Vec<Message>, u16) {
    let mut before = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, client.ws.next()).await.expect("close within 10 s");
        match msg {
            Some(Ok(Message::Close(frame))) => {
                let _ = tokio::time::timeout(WAIT, async { while client.ws.next().await.is_some() {} }).await;
                return (before, frame.map_or(u16::from(CloseCode::Status), |f| u16::from(f.code)));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => before.push(m),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Nothing a refused call might have sent reached `client`: a marker posted now (API key)
/// is its very next frame.
async fn nothing_delivered(gw_base: &str, client: &mut Client, id: &str) {
    static MARKERS: AtomicU64 = AtomicU64::new(0);
    let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
    let answer = raw("POST", &format!("{gw_base}/@connections/{id}"), Some(API_KEY), marker.as_bytes()).await;
    assert_eq!(answer["status"], 200, "{answer}");
    expect_text(client, &marker).await;
}

// --- timestamps ----------------------------------------------------------------------------

fn parse_time(value: &Value) -> OffsetDateTime {
    let text = value.as_str().unwrap_or_else(|| panic!("a timestamp string, got {value}"));
    OffsetDateTime::parse(text, &Rfc3339).unwrap_or_else(|e| panic!("{text:?} is not ISO 8601 / RFC 3339: {e}"))
}

/// `at` lies in [`from` - `slack_ms`, `to` + 1 ms]: the wire format keeps milliseconds.
#[track_caller]
fn within(at: OffsetDateTime, from: OffsetDateTime, to: OffsetDateTime, slack_ms: i64, what: &str) {
    let (slack, ms) = (time::Duration::milliseconds(slack_ms), time::Duration::milliseconds(1));
    assert!(at >= from - slack && at <= to + ms, "{what} {at} is not within [{from} - {slack_ms} ms, {to}]");
}

// --- post / get / delete ---------------------------------------------------------------------

/// Post, get and delete with one SDK, through `http://host:port` and `http://host:port/prod`
/// (as API Gateway endpoint URLs end in the stage).
async fn post_get_delete(sdk: Sdk) {
    let gw = gateway().await;
    let base = format!("http://{}", gw.addr);
    let staged = format!("{base}/prod");
    let user_agent = format!("Mozilla/5.0 (signalbox apigw test; {sdk:?}) Gecko/20100101");
    let t0 = OffsetDateTime::now_utc();
    let mut alice = connect_as(&gw, "alice", &user_agent).await;
    let t1 = OffsetDateTime::now_utc();
    let id = alice.id();
    let mut driver = Driver::start(sdk, &base).await;

    // POST: a UTF-8 body is one text frame, byte for byte (not JSON, not re-encoded).
    let text = "héllo wörld ✓ {\"not\": \"parsed\"}  \n\ttrailing ";
    ok(&driver.post(&id, text).await, 200);
    expect_text(&mut alice, text).await;
    // A non-UTF-8 body is one binary frame with those bytes.
    let bytes = [0x00, 0xff, 0xfe, 0x80, b'a', 0xc3, 0x28, 0x00];
    ok(&driver.post_bytes(&id, &bytes).await, 200);
    expect_binary(&mut alice, &bytes).await;

    // The client speaks: lastActiveAt moves past this moment (well after connectedAt: a
    // driver call came between).
    let t2 = OffsetDateTime::now_utc();
    assert_eq!(alice.request(json!({"action": "ping"})).await["type"], "pong");

    // GET: ISO 8601 timestamps (parsed by the SDK itself), the peer address, the User-Agent.
    let got = ok(&driver.get(&id).await, 200);
    let now = OffsetDateTime::now_utc();
    let (connected_at, last_active_at) = (parse_time(&got["connectedAt"]), parse_time(&got["lastActiveAt"]));
    within(connected_at, t0, t1, 1, "connectedAt");
    // lastActiveAt is "now minus the time since the client was last heard" on a clock of
    // whole milliseconds, then written in whole milliseconds: up to 2 ms early.
    within(last_active_at, t2, now, 2, "lastActiveAt");
    assert!(t2 - t1 > time::Duration::milliseconds(5), "a driver call lies between connecting and speaking");
    assert!(last_active_at > connected_at, "lastActiveAt moved when the client spoke: {got}");
    assert_eq!(got["identity"], json!({"sourceIp": "127.0.0.1", "userAgent": user_agent}), "{got}");

    // The same calls with the stage in the endpoint URL.
    let staged_post = driver.call(json!({"op": "post", "id": id, "data": "via /prod", "endpoint": staged})).await;
    ok(&staged_post, 200);
    expect_text(&mut alice, "via /prod").await;
    let staged_get = ok(&driver.call(json!({"op": "get", "id": id, "endpoint": staged})).await, 200);
    assert_eq!(staged_get["connectedAt"], got["connectedAt"], "{staged_get}");
    assert_eq!(staged_get["identity"], got["identity"]);

    // DELETE: 204, the client sees close 1000 and nothing else.
    ok(&driver.call(json!({"op": "delete", "id": id, "endpoint": staged})).await, 204);
    let (before, code) = frames_until_close(&mut alice).await;
    assert_eq!((before, code), (vec![], 1000));
    // Gone: every call on it is 410 GoneException, with and without the stage.
    aws_error(&driver.delete(&id).await, "GoneException", 410);
    aws_error(&driver.post(&id, "too late").await, "GoneException", 410);
    aws_error(&driver.get(&id).await, "GoneException", 410);
    let staged_post = driver.call(json!({"op": "post", "id": id, "data": "too late", "endpoint": staged})).await;
    aws_error(&staged_post, "GoneException", 410);
}

#[tokio::test]
async fn boto3_posts_gets_and_deletes_with_and_without_a_stage() {
    post_get_delete(Sdk::Boto3).await;
}

#[tokio::test]
async fn the_js_sdk_posts_gets_and_deletes_with_and_without_a_stage() {
    post_get_delete(Sdk::Js).await;
}

// --- ids -------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_ids_are_gone_and_percent_encoded_ids_are_decoded() {
    let gw = gateway().await;
    let base = format!("http://{}", gw.addr);
    let mut bob = connect_as(&gw, "bob", "bob-agent").await;
    let id = bob.id();
    assert!(id.contains('_'), "{id}");

    for sdk in BOTH {
        let mut driver = Driver::start(sdk, &base).await;
        aws_error(&driver.post("conn_1_nope", "x").await, "GoneException", 410);
        aws_error(&driver.get("conn_1_nope").await, "GoneException", 410);
        aws_error(&driver.delete("conn_1_nope").await, "GoneException", 410);
        // An API Gateway style id: the SDKs send `=` and `+` percent-encoded and sign the
        // encoded path; the signature verifies (no 403), the id is simply unknown.
        aws_error(&driver.post("L0SM9cOFvHcCIhw=", "x").await, "GoneException", 410);
        aws_error(&driver.get("a+b=").await, "GoneException", 410);
    }
    let gone = raw("POST", &format!("{base}/@connections/conn_1_nope"), Some(API_KEY), b"x").await;
    assert_eq!(gone["status"], 410, "{gone}");
    assert_eq!(gone["headers"]["x-amzn-errortype"], "GoneException", "{gone}");
    assert_eq!(gone["body"], json!({"message": "Gone"}));

    // `_` sent as `%5F`, with the API key, with and without a stage.
    let posted = raw("POST", &format!("{base}/@connections/{}", encoded(&id)), Some(API_KEY), b"encoded").await;
    assert_eq!(posted["status"], 200, "{posted}");
    expect_text(&mut bob, "encoded").await;
    let posted = raw("POST", &format!("{base}/prod/@connections/{}", encoded(&id)), Some(API_KEY), b"staged").await;
    assert_eq!(posted["status"], 200, "{posted}");
    expect_text(&mut bob, "staged").await;
    // The wire format of GET: ISO 8601 UTC with milliseconds, as API Gateway writes it.
    let got = raw("GET", &format!("{base}/@connections/{}", encoded(&id)), Some(API_KEY), b"").await;
    assert_eq!(got["status"], 200, "{got}");
    for field in ["connectedAt", "lastActiveAt"] {
        let text = got["body"][field].as_str().unwrap_or_else(|| panic!("{field} in {got}"));
        parse_time(&got["body"][field]);
        assert!(text.ends_with('Z') && text.len() == "2026-12-06T01:02:03.456Z".len(), "{field} {text:?}");
    }
    assert_eq!(got["body"]["identity"], json!({"sourceIp": "127.0.0.1", "userAgent": "bob-agent"}));

    // SigV4 over the path exactly as sent: botocore's signer on `/@connections/conn%5F…`
    // (canonical path double-encoded, `%255F`), and on the plain path as a control.
    let mut boto3 = Driver::start(Sdk::Boto3, &base).await;
    // `@` itself percent-encoded too, as awscurl sends it.
    for path in [
        format!("/@connections/{}", encoded(&id)),
        format!("/prod/@connections/{}", encoded(&id)),
        format!("/%40connections/{id}"),
        format!("/prod/%40connections/{}", encoded(&id)),
    ] {
        let signed = boto3.call(json!({"op": "signed-path", "id": id, "path": path, "data": "signed encoded"})).await;
        assert_eq!(signed["status"], 200, "{path}: {signed}");
        expect_text(&mut bob, "signed encoded").await;
    }
    let signed = boto3.call(json!({"op": "signed-path", "id": id, "path": format!("/@connections/{id}")})).await;
    assert_eq!(signed["status"], 200, "{signed}");
    expect_text(&mut bob, "signed body").await;

    // Other methods are 405.
    let put = raw("PUT", &format!("{base}/@connections/{id}"), Some(API_KEY), b"x").await;
    assert_eq!(put["status"], 405, "{put}");
    nothing_delivered(&base, &mut bob, &id).await;
}

// --- sizes -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_over_max_post_size_is_413() {
    let gw = TestGateway::spawn_with(|c| {
        c.apigw.credentials = credentials();
        c.apigw.max_post_size = 1024;
    })
    .await;
    let base = format!("http://{}", gw.addr);
    let mut carol = connect_as(&gw, "carol", "carol-agent").await;
    let id = carol.id();
    let at_limit = "a".repeat(1024);
    for sdk in BOTH {
        let mut driver = Driver::start(sdk, &format!("{base}/prod")).await;
        ok(&driver.post(&id, &at_limit).await, 200);
        expect_text(&mut carol, &at_limit).await;
        aws_error(&driver.post(&id, &"b".repeat(1025)).await, "PayloadTooLargeException", 413);
        aws_error(&driver.post_bytes(&id, &[0xff; 4096]).await, "PayloadTooLargeException", 413);
        nothing_delivered(&base, &mut carol, &id).await;
    }
    let raw_413 = raw("POST", &format!("{base}/@connections/{id}"), Some(API_KEY), &[b'c'; 1025]).await;
    assert_eq!(raw_413["status"], 413, "{raw_413}");
    assert_eq!(raw_413["headers"]["x-amzn-errortype"], "PayloadTooLargeException", "{raw_413}");
    assert!(raw_413["body"]["message"].is_string(), "{raw_413}");
    nothing_delivered(&base, &mut carol, &id).await;
}

#[tokio::test]
async fn the_default_max_post_size_is_128_kib() {
    let gw = gateway().await;
    let base = format!("http://{}", gw.addr);
    let mut dave = connect_as(&gw, "dave", "dave-agent").await;
    let id = dave.id();
    let mut driver = Driver::start(Sdk::Boto3, &base).await;
    let full = "d".repeat(128 * 1024);
    ok(&driver.post(&id, &full).await, 200);
    expect_text(&mut dave, &full).await;
    aws_error(&driver.post(&id, &"e".repeat(128 * 1024 + 1)).await, "PayloadTooLargeException", 413);
    nothing_delivered(&base, &mut dave, &id).await;
}

// --- authentication ----------------------------------------------------------------------------

#[tokio::test]
async fn forged_expired_replayed_and_missing_signatures_are_403() {
    let gw = gateway().await;
    let base = format!("http://{}", gw.addr);
    let mut erin = connect_as(&gw, "erin", "erin-agent").await;
    let mut frank = connect_as(&gw, "frank", "frank-agent").await;
    let (id, other) = (erin.id(), frank.id());

    for sdk in BOTH {
        let mut driver = Driver::start(sdk, &base).await;
        // Controls: both credential pairs (a rotation) sign accepted calls.
        ok(&driver.post(&id, "first pair").await, 200);
        expect_text(&mut erin, "first pair").await;
        let second = json!({"op": "post", "id": id, "data": "second pair", "key": KEY2, "secret": KEY2_SECRET});
        ok(&driver.call(second).await, 200);
        expect_text(&mut erin, "second pair").await;

        let wrong_secret = json!({"op": "post", "id": id, "data": "no", "secret": "not-the-secret"});
        aws_error(&driver.call(wrong_secret).await, "ForbiddenException", 403);
        let other_pairs_secret = json!({"op": "post", "id": id, "data": "no", "secret": KEY2_SECRET});
        aws_error(&driver.call(other_pairs_secret).await, "ForbiddenException", 403);
        let unknown_key = json!({"op": "get", "id": id, "key": "AKIDUNKNOWN", "secret": KEY_SECRET});
        aws_error(&driver.call(unknown_key).await, "ForbiddenException", 403);
        let unknown_key_delete = json!({"op": "delete", "id": id, "key": "AKIDUNKNOWN", "secret": KEY_SECRET});
        aws_error(&driver.call(unknown_key_delete).await, "ForbiddenException", 403);
        nothing_delivered(&base, &mut erin, &id).await;
    }

    // The JS SDK with a clock 20 minutes behind (SigV4 allows 15): refused; 10 minutes
    // behind: accepted.
    let mut js = Driver::start(Sdk::Js, &base).await;
    let late = json!({"op": "post", "id": id, "data": "late", "clock_offset_ms": -20 * 60 * 1000});
    aws_error(&js.call(late).await, "ForbiddenException", 403);
    let skewed = json!({"op": "post", "id": id, "data": "skewed", "clock_offset_ms": -10 * 60 * 1000});
    ok(&js.call(skewed).await, 200);
    expect_text(&mut erin, "skewed").await;

    // botocore's own signer, then the request broken: each is 403 with API Gateway's body.
    let mut boto3 = Driver::start(Sdk::Boto3, &base).await;
    let control = boto3.call(json!({"op": "signed-path", "id": id, "path": format!("/@connections/{id}")})).await;
    assert_eq!(control["status"], 200, "the unbroken signed request is accepted: {control}");
    expect_text(&mut erin, "signed body").await;
    forbidden(&boto3.call(json!({"op": "tampered-body", "id": id, "data": "signed text"})).await);
    forbidden(&boto3.call(json!({"op": "expired", "id": id})).await);
    // Signed for frank's path, sent to erin's (and the other way round).
    forbidden(&boto3.call(json!({"op": "replay-path", "id": other, "other": id})).await);
    forbidden(&boto3.call(json!({"op": "replay-path", "id": id, "other": other})).await);

    // No auth, a wrong API key, another scheme: 403 too. The right key: 200.
    let url = format!("{base}/@connections/{id}");
    forbidden(&raw("POST", &url, None, b"anonymous").await);
    forbidden(&raw("GET", &url, None, b"").await);
    forbidden(&raw("DELETE", &url, None, b"").await);
    forbidden(&raw("POST", &url, Some("not-a-key"), b"wrong key").await);
    let basic = reqwest::Client::new().post(&url).basic_auth(KEY, Some(KEY_SECRET)).body("basic").send().await.unwrap();
    assert_eq!(basic.status().as_u16(), 403);
    let keyed = raw("POST", &url, Some(API_KEY), b"api key").await;
    assert_eq!(keyed["status"], 200, "{keyed}");
    expect_text(&mut erin, "api key").await;

    // Nothing refused reached either client; both are still open.
    nothing_delivered(&base, &mut erin, &id).await;
    nothing_delivered(&base, &mut frank, &other).await;
    ok(&boto3.get(&id).await, 200);
    ok(&boto3.get(&other).await, 200);
}

// --- cluster -----------------------------------------------------------------------------------

#[tokio::test]
async fn calls_on_one_node_reach_a_connection_held_by_the_other() {
    let redis = Redis::start();
    let node = |url: String| {
        TestGateway::spawn_with(move |c| {
            c.broker = url;
            c.apigw.credentials = credentials();
        })
    };
    let a = node(redis.url()).await;
    let b = node(redis.url()).await;
    let base_b = format!("http://{}", b.addr);
    let mut grace = connect_as(&a, "grace", "grace-agent/2").await;
    let id = grace.id();

    // A registers its connections in the background: wait until B knows this one.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = raw("GET", &format!("{base_b}/@connections/{id}"), Some(API_KEY), b"").await;
        if got["status"] == 200 {
            break;
        }
        assert_eq!(got["status"], 410, "{got}");
        assert!(Instant::now() < deadline, "node B did not learn of A's connection within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut boto3 = Driver::start(Sdk::Boto3, &format!("{base_b}/prod")).await;
    ok(&boto3.post(&id, "from node B").await, 200);
    expect_text(&mut grace, "from node B").await;
    ok(&boto3.post_bytes(&id, &[0xde, 0xad, 0xbe, 0xef]).await, 200);
    expect_binary(&mut grace, &[0xde, 0xad, 0xbe, 0xef]).await;
    let got = ok(&boto3.get(&id).await, 200);
    assert_eq!(got["identity"], json!({"sourceIp": "127.0.0.1", "userAgent": "grace-agent/2"}), "{got}");
    parse_time(&got["connectedAt"]);
    parse_time(&got["lastActiveAt"]);

    let mut js = Driver::start(Sdk::Js, &base_b).await;
    ok(&js.post(&id, "from node B, JS").await, 200);
    expect_text(&mut grace, "from node B, JS").await;
    let js_got = ok(&js.get(&id).await, 200);
    assert_eq!(parse_time(&js_got["connectedAt"]), parse_time(&got["connectedAt"]));

    ok(&boto3.delete(&id).await, 204);
    assert_eq!(frames_until_close(&mut grace).await, (vec![], 1000));
    aws_error(&boto3.post(&id, "gone").await, "GoneException", 410);
    aws_error(&js.get(&id).await, "GoneException", 410);
    aws_error(&boto3.delete("conn_1_nope").await, "GoneException", 410);
}

// --- a full send queue -------------------------------------------------------------------------

/// A client that never reads, with a small receive buffer so that the server's socket
/// fills quickly and the connection's queue after it.
async fn connect_unread(gw: &TestGateway, sub: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(gw.addr).await.unwrap();
    let url = gw.ws_url(&format!("?token={}", gw.token(sub, json!({}))));
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut client = Client { ws, connected: Value::Null };
    client.connected = client.recv().await;
    assert_eq!(client.connected["type"], "connected", "{}", client.connected);
    client
}

#[tokio::test]
async fn posting_to_a_full_send_queue_is_429() {
    let gw = TestGateway::spawn_with(|c| {
        c.apigw.credentials = credentials();
        c.limits.send_queue_events = 8;
    })
    .await;
    let base = format!("http://{}", gw.addr);
    for sdk in BOTH {
        let mut slow = connect_unread(&gw, "slow").await;
        let id = slow.id();
        let mut driver = Driver::start(sdk, &base).await;
        const SIZE: usize = 64 * 1024;
        let flood = driver.call(json!({"op": "flood", "id": id, "size": SIZE, "count": 2000})).await;
        aws_error(&flood, "LimitExceededException", 429);
        let posted = flood["posted"].as_u64().unwrap();
        assert!(posted >= 8, "{flood}");
        // The client, reading at last, gets posts in order, then close 4008 (slow consumer).
        let (frames, code) = frames_until_close(&mut slow).await;
        assert_eq!(code, 4008, "{sdk:?}: {} frames", frames.len());
        assert!(frames.len() as u64 <= posted, "{} frames of {posted} posts", frames.len());
        for f in &frames {
            assert!(matches!(f, Message::Text(t) if t.len() == SIZE && t.bytes().all(|b| b == b'x')));
        }
        aws_error(&driver.post(&id, "after").await, "GoneException", 410);
    }
}

//! The Socket.IO v4 endpoint at `/socket.io/` (SPEC §9.2), end to end: a real gateway and
//! a real `socket.io-client` (tests/socketio/driver.js, run with node and spoken to in JSON
//! lines), plus raw Engine.IO packets over a plain WebSocket for what no well-behaved
//! client sends.
//!
//! The driver needs `node` and `tests/socketio/node_modules` (scripts/test runs `npm ci`
//! there); without them these tests fail with the command that installs them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::servers::webhook::{Behaviour, Webhook};
use crate::support::*;

// --- the socket.io-client driver --------------------------------------------------------

/// `tests/socketio`, where driver.js and its node_modules live.
fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("socketio")
}

/// A running `node tests/socketio/driver.js` (killed when dropped): send it commands, then
/// await its reports. Reports that arrive while another one is awaited are kept, in order,
/// for later awaits, so a test states what it expects without depending on how reports of
/// independent things interleave.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    backlog: VecDeque<Value>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
}

impl Driver {
    async fn start() -> Self {
        let dir = driver_dir();
        assert!(
            dir.join("node_modules").join("socket.io-client").is_dir(),
            "socket.io-client is not installed for the tests; run: (cd tests/socketio && npm ci) \
             (scripts/test does this; node and npm come with: apt-get install -y nodejs npm)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("driver.js"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e}; install it with: apt-get install -y nodejs npm"));
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
        let mut driver = Self { child, stdin, lines, backlog: VecDeque::new(), stderr, next_id: 0 };
        let ready = driver.expect("the driver's ready line", |r| r["kind"] == "ready").await;
        assert!(ready["version"].as_str().is_some_and(|v| v.starts_with("4.")), "{ready}");
        driver
    }

    async fn send(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            panic!("the driver does not take commands ({e}); its stderr:\n{}", self.stderr());
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first report (kept earlier or arriving within [`WAIT`]) that `matches`; it is
    /// taken out, the others stay for later awaits.
    async fn expect(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(at) = self.backlog.iter().position(&matches) {
            return self.backlog.remove(at).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "the driver ended ({status:?}) while awaiting {what}; reports not yet awaited: {:?}\nstderr:\n{}",
                        self.backlog,
                        self.stderr()
                    )
                }
                Err(_) => panic!(
                    "no {what} within {WAIT:?}; reports not yet awaited: {:?}\ndriver stderr:\n{}",
                    self.backlog,
                    self.stderr()
                ),
            };
            let report: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("the driver printed {line:?}: {e}"));
            assert_ne!(report["kind"], "driver_error", "the driver could not run a command: {report}");
            if matches(&report) {
                return report;
            }
            self.backlog.push_back(report);
        }
    }

    /// Reports kept so far and not awaited yet.
    fn pending(&self, socket: &str, kind: &str) -> Vec<Value> {
        self.backlog.iter().filter(|r| r["socket"] == socket && r["kind"] == kind).cloned().collect()
    }

    async fn connect(&mut self, socket: &str, url: &str, opts: Value) {
        self.send(json!({"cmd": "connect", "socket": socket, "url": url, "opts": opts})).await;
    }

    /// The `connect` report of `socket` (a `connect_error` instead fails the test).
    async fn connected(&mut self, socket: &str) -> Value {
        let what = format!("connect of socket {socket}");
        let r = self
            .expect(&what, |r| r["socket"] == socket && (r["kind"] == "connect" || r["kind"] == "connect_error"))
            .await;
        assert_eq!(r["kind"], "connect", "{what}: {r}");
        r
    }

    /// The `connect_error` report of `socket` (a `connect` instead fails the test).
    async fn connect_error(&mut self, socket: &str) -> Value {
        let what = format!("connect_error of socket {socket}");
        let r = self
            .expect(&what, |r| r["socket"] == socket && (r["kind"] == "connect" || r["kind"] == "connect_error"))
            .await;
        assert_eq!(r["kind"], "connect_error", "{what}: the server accepted the connection: {r}");
        r
    }

    /// The arguments of the next event `name` on `socket`.
    async fn event(&mut self, socket: &str, name: &str) -> Vec<Value> {
        let what = format!("event {name:?} on socket {socket}");
        let r = self.expect(&what, |r| r["socket"] == socket && r["kind"] == "event" && r["name"] == name).await;
        r["args"].as_array().unwrap().clone()
    }

    /// The only argument of the next event `name` on `socket`.
    async fn event_arg(&mut self, socket: &str, name: &str) -> Value {
        let args = self.event(socket, name).await;
        assert_eq!(args.len(), 1, "event {name}: the event object is the only argument: {args:?}");
        args.into_iter().next().unwrap()
    }

    /// Connects `socket` and returns the `data` of its `connection_established` event.
    async fn establish(&mut self, socket: &str, url: &str, opts: Value) -> Value {
        self.connect(socket, url, opts).await;
        self.connected(socket).await;
        let established = self.event_arg(socket, "connection_established").await;
        established["data"].clone()
    }

    /// Emits `event` with `data` and no ack callback.
    async fn emit(&mut self, socket: &str, event: &str, data: Value) {
        self.send(json!({"cmd": "emit", "socket": socket, "event": event, "data": data})).await;
    }

    /// Emits `event` with `data` and an ack callback; returns the ack's only argument.
    async fn emit_ack(&mut self, socket: &str, event: &str, data: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let timeout = u64::try_from(WAIT.as_millis()).unwrap();
        self.send(json!({"cmd": "emit", "socket": socket, "event": event, "data": data, "ack": true, "id": id, "timeout": timeout}))
            .await;
        let what = format!("ack {id} of {event} on socket {socket}");
        let r = self
            .expect(&what, |r| {
                r["socket"] == socket && r["id"] == id && (r["kind"] == "ack" || r["kind"] == "ack_timeout")
            })
            .await;
        assert_eq!(r["kind"], "ack", "{event} {data} was not acknowledged");
        let args = r["args"].as_array().unwrap();
        assert_eq!(args.len(), 1, "{event}: one ack argument: {r}");
        args[0].clone()
    }

    /// Subscribes `socket` to `topic` (as `{room}`) and returns the successful ack.
    async fn subscribe(&mut self, socket: &str, topic: &str) -> Value {
        let ack = self.emit_ack(socket, "subscribe", json!({"room": topic})).await;
        assert_eq!((&ack["status"], &ack["topic"]), (&json!("success"), &json!(topic)), "{ack}");
        ack
    }
}

/// What `io()` is given: the gateway's base URL plus the namespace (and query).
fn io_url(gw: &TestGateway, namespace_and_query: &str) -> String {
    format!("http://{}{namespace_and_query}", gw.addr)
}

/// WebSocket only, the token in `auth`, no reconnection.
fn ws_opts(token: &str) -> Value {
    json!({"auth": {"token": token}, "transports": ["websocket"], "reconnection": false})
}

/// `conn_<unix-ms>_<random>`, minted within the last minute.
fn assert_connection_id(id: &Value) {
    let id = id.as_str().unwrap_or_else(|| panic!("connection_id is not a string: {id}"));
    let mut parts = id.splitn(3, '_');
    let (conn, ms, random) = (parts.next(), parts.next(), parts.next());
    assert_eq!(conn, Some("conn"), "{id}");
    let ms: u64 = ms.and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("no unix-ms in {id}"));
    let now_ms = now() * 1000;
    assert!(ms + 60_000 >= now_ms && ms <= now_ms + 2_000, "{id}: not minted now ({now_ms})");
    assert!(random.is_some_and(|r| !r.is_empty()), "{id}: no random part");
}

// --- the client as users write it -------------------------------------------------------

#[tokio::test]
async fn a_websocket_client_is_established_subscribes_and_gets_published_events_by_type() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["project:*"]}));
    io.connect("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;
    let connect = io.connected("main").await;
    assert_eq!(connect["transport"], "websocket", "{connect}");
    assert!(connect["id"].as_str().is_some_and(|s| !s.is_empty()), "{connect}");
    let established = io.event_arg("main", "connection_established").await;
    assert_eq!(established["data"]["user_id"], "u1", "{established}");
    assert_connection_id(&established["data"]["connection_id"]);

    let ack = io.subscribe("main", "project:42").await;
    assert_eq!((ack["offset"].as_u64(), ack["recovered"].as_bool()), (Some(0), Some(false)), "{ack}");
    assert!(ack["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{ack}");
    let (_, topic) = gw.http().get("/api/topics/project:42").await;
    assert_eq!(topic["subscribers"], 1, "the hub counts the Socket.IO subscriber: {topic}");
    assert_eq!(topic["epoch"], ack["epoch"], "{topic}");

    let api = gw.http();
    let offset = api.publish("project:42", json!({"type": "task_update", "task": "t1", "progress": 40})).await;
    let event = io.event_arg("main", "task_update").await;
    assert_eq!(
        (&event["topic"], event["offset"].as_u64(), &event["type"], &event["task"], &event["progress"]),
        (&json!("project:42"), Some(offset), &json!("task_update"), &json!("t1"), &json!(40)),
        "{event}"
    );
    assert!(event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
    let second = api.publish("project:42", json!({"type": "task_update", "task": "t2"})).await;
    assert_eq!(second, offset + 1);
    let event = io.event_arg("main", "task_update").await;
    assert_eq!((event["offset"].as_u64(), &event["task"]), (Some(second), &json!("t2")), "{event}");

    // Subscribed automatically to user:<sub> and global.
    api.publish("user:u1", json!({"type": "notification", "text": "hi"})).await;
    let event = io.event_arg("main", "notification").await;
    assert_eq!((&event["topic"], &event["text"]), (&json!("user:u1"), &json!("hi")), "{event}");
    api.publish("global", json!({"type": "announcement", "text": "all"})).await;
    let event = io.event_arg("main", "announcement").await;
    assert_eq!(event["topic"], "global", "{event}");

    let ack = io.emit_ack("main", "unsubscribe", json!({"room": "project:42"})).await;
    assert_eq!((&ack["status"], &ack["topic"]), (&json!("success"), &json!("project:42")), "{ack}");
    let (_, topic) = gw.http().get("/api/topics/project:42").await;
    assert_eq!(topic["subscribers"], 0, "{topic}");

    // `{topic}` works as `{room}` does.
    let ack = io.emit_ack("main", "subscribe", json!({"topic": "project:43"})).await;
    assert_eq!((&ack["status"], &ack["topic"]), (&json!("success"), &json!("project:43")), "{ack}");
}

#[tokio::test]
async fn the_token_may_stand_in_the_query() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("query-user", json!({"topics": ["job:*"]}));
    let data = io
        .establish(
            "main",
            &io_url(&gw, &format!("/ws?token={token}")),
            json!({"transports": ["websocket"], "reconnection": false}),
        )
        .await;
    assert_eq!(data["user_id"], "query-user", "{data}");
    assert_connection_id(&data["connection_id"]);
    io.subscribe("main", "job:7").await;
    let offset = gw.http().publish("job:7", json!({"type": "progress_update", "pct": 10})).await;
    let event = io.event_arg("main", "progress_update").await;
    assert_eq!((&event["topic"], event["offset"].as_u64()), (&json!("job:7"), Some(offset)), "{event}");
}

#[tokio::test]
async fn a_refused_token_gets_connect_error_with_authentication_error() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let bad_signature = token_with("another-secret-0123456789abcdef", "u1", json!({}));
    let expired = gw.token("u1", json!({"exp": now() - 120}));
    let opts = |token: Option<&str>| {
        let mut opts = json!({"transports": ["websocket"], "reconnection": false});
        if let Some(token) = token {
            opts["auth"] = json!({"token": token});
        }
        opts
    };
    let cases = [
        ("bad_signature", opts(Some(&bad_signature))),
        ("expired", opts(Some(&expired))),
        ("garbage", opts(Some("not.a.jwt"))),
        ("missing", opts(None)),
    ];
    for (socket, opts) in &cases {
        io.connect(socket, &io_url(&gw, "/ws"), opts.clone()).await;
    }
    io.connect("bad_in_query", &io_url(&gw, &format!("/ws?token={expired}")), opts(None)).await;
    let sockets = cases.iter().map(|(s, _)| *s).chain(["bad_in_query"]);
    for socket in sockets.clone() {
        let error = io.connect_error(socket).await;
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{socket}: a human message: {error}");
        assert_eq!(error["data"]["code"], "AUTHENTICATION_ERROR", "{socket}: {error}");
        assert!(error["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{socket}: {error}");
    }
    // A good token next to them still connects, and none of the refused ones did.
    let token = gw.token("u1", json!({}));
    io.establish("good", &io_url(&gw, "/ws"), ws_opts(&token)).await;
    for socket in sockets {
        assert_eq!(io.pending(socket, "connect"), Vec::<Value>::new(), "{socket} connected");
        assert_eq!(io.pending(socket, "event"), Vec::<Value>::new(), "{socket} got events");
    }
}

#[tokio::test]
async fn a_room_the_token_does_not_allow_is_refused_with_authorization_error() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["project:42"]}));
    io.establish("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;
    for topic in ["project:43", "job:1", "user:someone-else"] {
        let ack = io.emit_ack("main", "subscribe", json!({"room": topic})).await;
        assert_eq!((&ack["status"], &ack["code"]), (&json!("error"), &json!("AUTHORIZATION_ERROR")), "{topic}: {ack}");
        assert!(ack["message"].as_str().is_some_and(|m| !m.is_empty()), "{ack}");
        let (_, state) = gw.http().get(&format!("/api/topics/{topic}")).await;
        assert_eq!(state["subscribers"], 0, "{topic}: {state}");
    }
    // Without an ack callback the refusal comes as an `error` event.
    io.emit("main", "subscribe", json!({"room": "project:44"})).await;
    let error = io.event_arg("main", "error").await;
    assert_eq!((&error["type"], &error["code"]), (&json!("error"), &json!("AUTHORIZATION_ERROR")), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    // The connection stays usable.
    io.subscribe("main", "project:42").await;
    assert_eq!(io.pending("main", "disconnect"), Vec::<Value>::new());
}

#[tokio::test]
async fn an_emit_with_no_route_is_unknown_action() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({}));
    io.establish("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;
    let ack = io.emit_ack("main", "launch_rockets", json!({"count": 3})).await;
    assert_eq!((&ack["status"], &ack["code"]), (&json!("error"), &json!("UNKNOWN_ACTION")), "{ack}");
    assert!(ack["message"].as_str().is_some_and(|m| !m.is_empty()), "{ack}");

    io.emit("main", "launch_rockets", json!({"count": 4})).await;
    let error = io.event_arg("main", "error").await;
    assert_eq!((&error["type"], &error["code"]), (&json!("error"), &json!("UNKNOWN_ACTION")), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    assert_eq!(io.pending("main", "disconnect"), Vec::<Value>::new(), "an error never closes the connection");
}

/// Adds a `pipeline` http sink at `url` and routes `cancel_job` to it.
fn pipeline_route(config: &mut signalbox::Config, url: &str) {
    let sink: toml::Table = toml::from_str(&format!("kind = \"http\"\nurl = \"{url}\"\ntimeout = \"2s\"")).unwrap();
    config.sinks.insert("pipeline".into(), sink.try_into().unwrap());
    config.routes.push(toml::from_str("action = \"cancel_job\"\nsink = \"pipeline\"").unwrap());
}

#[tokio::test]
async fn a_routed_emit_reaches_the_webhook_and_acks_accepted() {
    let webhook = Webhook::start().await;
    let gw = TestGateway::spawn_with(|c| pipeline_route(c, &webhook.url())).await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({}));
    let data = io.establish("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;

    let ack = io.emit_ack("main", "cancel_job", json!({"job_id": "j1", "reason": "user"})).await;
    assert_eq!((&ack["status"], &ack["type"]), (&json!("success"), &json!("accepted")), "{ack}");
    let message_id = ack["messageId"].as_str().unwrap_or_else(|| panic!("no messageId: {ack}")).to_owned();
    let requests = webhook.wait_for(1).await;
    let request = &requests[0];
    assert_eq!(request.header("x-signalbox-message-id"), Some(message_id.as_str()));
    let event = request.json();
    let context = &event["requestContext"];
    assert_eq!(
        (&context["routeKey"], &context["eventType"], &context["connectionId"], &context["authorizer"]["principalId"]),
        (&json!("cancel_job"), &json!("MESSAGE"), &data["connection_id"], &json!("u1")),
        "{event}"
    );
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["action"], "cancel_job", "routed as the native action of the same name: {body}");
    let job = if body["job_id"].is_null() { &body["data"]["job_id"] } else { &body["job_id"] };
    assert_eq!(job, "j1", "the emitted data reaches the webhook: {body}");

    // A webhook that refuses the message: the ack says so.
    webhook.set(Behaviour::Status(400));
    let ack = io.emit_ack("main", "cancel_job", json!({"job_id": "j2"})).await;
    assert_eq!((&ack["status"], &ack["code"]), (&json!("error"), &json!("SINK_UNAVAILABLE")), "{ack}");
    assert_eq!(webhook.wait_for(2).await.len(), 2);
}

#[tokio::test]
async fn presence_request_status_and_refresh_ack_the_native_reply() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["job:*", "project:*"]}));
    io.establish("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;

    let (status, _) = gw
        .http()
        .post(
            "/api/publish",
            json!({"topic": "job:9", "event": {"type": "progress_update", "pct": 50}, "retain": true}),
        )
        .await;
    assert_eq!(status, 200);
    let ack = io.emit_ack("main", "request_status", json!({"topic": "job:9"})).await;
    assert_eq!(
        (&ack["status"], &ack["type"], &ack["topic"], ack["offset"].as_u64(), &ack["state"]["pct"]),
        (&json!("success"), &json!("status"), &json!("job:9"), Some(1), &json!(50)),
        "{ack}"
    );
    // A fresh subscribe is followed by the retained event.
    io.subscribe("main", "job:9").await;
    let retained = io.event_arg("main", "progress_update").await;
    assert_eq!((&retained["retained"], &retained["pct"]), (&json!(true), &json!(50)), "{retained}");

    io.subscribe("main", "project:5").await;
    let ack = io.emit_ack("main", "presence", json!({"topic": "project:5"})).await;
    assert_eq!(
        (&ack["status"], &ack["type"], &ack["topic"], &ack["users"], &ack["connections"]),
        (&json!("success"), &json!("presence"), &json!("project:5"), &json!(["u1"]), &json!(1)),
        "{ack}"
    );

    let longer = gw.token("u1", json!({"topics": ["job:*"], "exp": now() + 7200}));
    let ack = io.emit_ack("main", "refresh", json!({"token": longer})).await;
    assert_eq!((&ack["status"], &ack["type"]), (&json!("success"), &json!("refreshed")), "{ack}");
    assert!(!ack["expiresAt"].is_null(), "{ack}");
    let ack = io.emit_ack("main", "refresh", json!({"token": "garbage"})).await;
    assert_eq!((&ack["status"], &ack["code"]), (&json!("error"), &json!("AUTHENTICATION_ERROR")), "{ack}");
}

#[tokio::test]
async fn subscribe_with_since_resumes_and_filters_select_events() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    for n in 1..=3 {
        api.publish("project:8", json!({"type": "step", "n": n})).await;
    }
    let (_, topic) = api.get("/api/topics/project:8").await;
    let epoch = topic["epoch"].clone();
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["project:*"]}));
    io.establish("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;

    let ack =
        io.emit_ack("main", "subscribe", json!({"room": "project:8", "since": {"offset": 1, "epoch": epoch}})).await;
    assert_eq!(
        (&ack["status"], &ack["recovered"], ack["offset"].as_u64()),
        (&json!("success"), &json!(true), Some(3)),
        "{ack}"
    );
    for n in 2..=3u64 {
        let event = io.event_arg("main", "step").await;
        assert_eq!((event["offset"].as_u64(), event["n"].as_u64()), (Some(n), Some(n)), "{event}");
    }
    let offset = api.publish("project:8", json!({"type": "step", "n": 4})).await;
    let event = io.event_arg("main", "step").await;
    assert_eq!(event["offset"].as_u64(), Some(offset), "live after the replay, no gap: {event}");

    let ack = io
        .emit_ack(
            "main",
            "subscribe",
            json!({"room": "project:shop", "filters": {"category": "electronics", "discount": {"gte": 20}}}),
        )
        .await;
    assert_eq!(ack["status"], "success", "{ack}");
    api.publish("project:shop", json!({"type": "deal", "category": "books", "discount": 50})).await;
    api.publish("project:shop", json!({"type": "deal", "category": "electronics", "discount": 10})).await;
    let wanted = api.publish("project:shop", json!({"type": "deal", "category": "electronics", "discount": 25})).await;
    let event = io.event_arg("main", "deal").await;
    assert_eq!(event["offset"].as_u64(), Some(wanted), "only the matching event: {event}");
}

#[tokio::test]
async fn a_native_client_and_a_socketio_client_see_the_same_offsets() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    api.publish("project:7", json!({"type": "before", "n": 0})).await;
    let mut native = gw.connect("u1", json!({"topics": ["project:*"]})).await;
    let subscribed = native.subscribe("project:7").await;
    let mut io = Driver::start().await;
    let token = gw.token("u2", json!({"topics": ["project:*"]}));
    io.establish("main", &io_url(&gw, "/ws"), ws_opts(&token)).await;
    let ack = io.subscribe("main", "project:7").await;
    assert_eq!((&ack["offset"], &ack["epoch"]), (&subscribed["offset"], &subscribed["epoch"]), "{ack} vs {subscribed}");

    let mut published = Vec::new();
    for n in 1..=5 {
        published.push(api.publish("project:7", json!({"type": "tick", "n": n})).await);
    }
    for (i, offset) in published.iter().enumerate() {
        let frame = native.recv().await;
        let event = io.event_arg("main", "tick").await;
        assert_eq!(frame["offset"].as_u64(), Some(*offset), "{frame}");
        assert_eq!(
            (&event["offset"], &event["topic"], &event["n"], &event["timestamp"]),
            (&frame["offset"], &frame["topic"], &frame["n"], &frame["timestamp"]),
            "event {i}: the same event on both protocols"
        );
    }
}

#[tokio::test]
async fn a_polling_first_client_connects_upgrades_and_receives_events() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["project:*"]}));
    // socket.io-client's defaults: HTTP long-polling first, then the upgrade to WebSocket.
    io.connect("main", &io_url(&gw, "/ws"), json!({"auth": {"token": token}, "reconnection": false})).await;
    let open = io.expect("the Engine.IO open", |r| r["kind"] == "open").await;
    assert_eq!(open["transport"], "polling", "{open}");
    io.connected("main").await;
    let established = io.event_arg("main", "connection_established").await;
    assert_eq!(established["data"]["user_id"], "u1", "{established}");
    io.subscribe("main", "project:1").await;
    let api = gw.http();
    let first = api.publish("project:1", json!({"type": "task_update", "n": 1})).await;
    let event = io.event_arg("main", "task_update").await;
    assert_eq!((event["offset"].as_u64(), &event["topic"]), (Some(first), &json!("project:1")), "{event}");

    let upgrade = io.expect("the upgrade to WebSocket", |r| r["kind"] == "upgrade").await;
    assert_eq!(upgrade["transport"], "websocket", "{upgrade}");
    let second = api.publish("project:1", json!({"type": "task_update", "n": 2})).await;
    let event = io.event_arg("main", "task_update").await;
    assert_eq!((event["offset"].as_u64(), &event["n"]), (Some(second), &json!(2)), "after the upgrade: {event}");
    let ack = io.emit_ack("main", "launch_rockets", json!({})).await;
    assert_eq!(ack["code"], "UNKNOWN_ACTION", "{ack}");
    assert_eq!(io.pending("main", "disconnect"), Vec::<Value>::new());
}

#[tokio::test]
async fn a_polling_only_client_emits_and_receives_events() {
    let gw = TestGateway::spawn().await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["project:*"]}));
    let opts = json!({"auth": {"token": token}, "transports": ["polling"], "reconnection": false});
    let data = io.establish("main", &io_url(&gw, "/ws"), opts).await;
    assert_connection_id(&data["connection_id"]);
    io.subscribe("main", "project:2").await;
    let api = gw.http();
    let mut published = Vec::new();
    for n in 1..=3 {
        published.push(api.publish("project:2", json!({"type": "tick", "n": n})).await);
    }
    for offset in published {
        let event = io.event_arg("main", "tick").await;
        assert_eq!(event["offset"].as_u64(), Some(offset), "{event}");
    }
    let ack = io.emit_ack("main", "launch_rockets", json!({})).await;
    assert_eq!(ack["code"], "UNKNOWN_ACTION", "{ack}");
    let state = {
        io.send(json!({"cmd": "state", "socket": "main"})).await;
        io.expect("state", |r| r["kind"] == "state").await
    };
    assert_eq!((&state["connected"], &state["transport"]), (&json!(true), &json!("polling")), "{state}");
}

// --- raw Engine.IO over a plain WebSocket ------------------------------------------------

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server did with a frame.
#[derive(Debug)]
enum Got {
    /// A text packet (Engine.IO pings are answered and skipped).
    Packet(String),
    /// The connection ended (a close frame, the end of the stream or an error).
    Closed(String),
}

/// An Engine.IO 4 connection over WebSocket with no client library in between.
struct Raw {
    ws: Socket,
    open: Value,
}

impl Raw {
    /// Opens `/socket.io/?EIO=4&transport=websocket` and reads the open packet.
    async fn open(gw: &TestGateway) -> Self {
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut raw = Self { ws, open: Value::Null };
        let packet = raw.packet().await;
        let body = packet.strip_prefix('0').unwrap_or_else(|| panic!("expected the open packet, got {packet:?}"));
        raw.open = serde_json::from_str(body).unwrap_or_else(|e| panic!("open packet {packet:?}: {e}"));
        let open = &raw.open;
        assert!(open["sid"].as_str().is_some_and(|s| !s.is_empty()), "{open}");
        assert_eq!(open["upgrades"], json!([]), "nothing to upgrade to from WebSocket: {open}");
        for field in ["pingInterval", "pingTimeout", "maxPayload"] {
            assert!(open[field].as_u64().is_some_and(|v| v > 0), "{field}: {open}");
        }
        raw
    }

    /// Opens and joins namespace `/ws` with `token`; returns the connection_established data.
    async fn joined(gw: &TestGateway, token: &str) -> (Self, Value) {
        let mut raw = Self::open(gw).await;
        raw.send(format!("40/ws,{}", json!({"token": token}))).await;
        let reply = raw.packet().await;
        let sid: Value = reply
            .strip_prefix("40/ws,")
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_else(|| panic!("expected the CONNECT reply 40/ws,{{sid}}, got {reply:?}"));
        assert!(sid["sid"].as_str().is_some_and(|s| !s.is_empty()), "{reply}");
        let (name, data) = raw.event().await;
        assert_eq!(name, "connection_established", "{data}");
        (raw, data["data"].clone())
    }

    async fn send(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.unwrap();
    }

    /// The next packet or the end of the connection, within [`WAIT`].
    async fn next(&mut self) -> Got {
        loop {
            let Ok(message) = tokio::time::timeout(WAIT, self.ws.next()).await else {
                panic!("the server said nothing within {WAIT:?}")
            };
            match message {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => self.send("3").await,
                Some(Ok(Message::Text(t))) => return Got::Packet(t.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(frame))) => return Got::Closed(format!("close frame {frame:?}")),
                Some(Ok(other)) => return Got::Packet(format!("<non-text frame {other:?}>")),
                Some(Err(e)) => return Got::Closed(format!("error {e}")),
                None => return Got::Closed("end of stream".into()),
            }
        }
    }

    async fn packet(&mut self) -> String {
        match self.next().await {
            Got::Packet(p) => p,
            Got::Closed(how) => panic!("expected a packet, the connection ended: {how}"),
        }
    }

    /// The next EVENT packet in `/ws` (no ack id): its name and only argument.
    async fn event(&mut self) -> (String, Value) {
        let packet = self.packet().await;
        let args: Vec<Value> = packet
            .strip_prefix("42/ws,")
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_else(|| panic!("expected 42/ws,[name, arg], got {packet:?}"));
        assert_eq!(args.len(), 2, "{packet}");
        (args[0].as_str().unwrap().to_owned(), args[1].clone())
    }

    /// Emits `event` with ack id `id` and returns the ack's only argument.
    async fn emit_ack(&mut self, id: u32, event: &str, data: Value) -> Value {
        self.send(format!("42/ws,{id}{}", json!([event, data]))).await;
        loop {
            let packet = self.packet().await;
            if packet.starts_with("42/ws,[") {
                continue; // an event (e.g. a retained one) before the ack
            }
            let prefix = format!("43/ws,{id}");
            let args: Vec<Value> = packet
                .strip_prefix(&prefix)
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or_else(|| panic!("expected the ack {prefix}[..], got {packet:?}"));
            assert_eq!(args.len(), 1, "{packet}");
            return args[0].clone();
        }
    }

    /// After a frame no client should send: a clean refusal (an `error` event, a
    /// CONNECT_ERROR, an Engine.IO close) or the end of the connection — not silence.
    async fn expect_refusal(&mut self, case: &str) -> String {
        match self.next().await {
            Got::Closed(how) => how,
            Got::Packet(p) if p == "1" => "Engine.IO close".into(),
            Got::Packet(p) if p.starts_with("44") => {
                let body = p.split_once(',').map_or(&p[2..], |(_, b)| b);
                let error: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{case}: {p:?}: {e}"));
                assert!(error["message"].as_str().is_some(), "{case}: {p}");
                p
            }
            Got::Packet(p) if p.starts_with("42") => {
                let body = &p[p.find('[').unwrap_or_else(|| panic!("{case}: {p:?}"))..];
                let args: Vec<Value> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{case}: {p:?}: {e}"));
                assert_eq!(args.first(), Some(&json!("error")), "{case}: {p}");
                let error = &args[1];
                assert_eq!(error["type"], "error", "{case}: {p}");
                assert!(error["code"].as_str().is_some_and(|c| !c.is_empty()), "{case}: {p}");
                p
            }
            Got::Packet(p) => panic!("{case}: expected an error or a close, got {p:?}"),
        }
    }
}

#[tokio::test]
async fn malformed_packets_are_refused_cleanly_and_the_server_is_unaffected() {
    let gw = TestGateway::spawn().await;
    let token = gw.token("u1", json!({"topics": ["project:*"]}));

    // Raw happy path first: the packets a client library would send.
    let (mut bystander, data) = Raw::joined(&gw, &token).await;
    assert_connection_id(&data["connection_id"]);
    assert_eq!(data["user_id"], "u1");
    let ack = bystander.emit_ack(1, "subscribe", json!({"room": "project:1"})).await;
    assert_eq!(ack["status"], "success", "{ack}");
    let max_payload = usize::try_from(bystander.open["maxPayload"].as_u64().unwrap()).unwrap();
    assert!(max_payload <= 32 << 20, "maxPayload {max_payload}");

    // A well-formed routed emit, one byte over the announced maxPayload (and the 64 KiB
    // message limit): refused for its size, not for its shape.
    let oversized = format!("42/ws,[\"big\",{{\"pad\":\"{}\"}}]", "a".repeat(max_payload.max(64 * 1024) + 1));
    let after_join: Vec<(&str, Message)> = vec![
        ("unknown Engine.IO type 9", Message::text("9")),
        ("unknown Socket.IO type 4x", Message::text("4x")),
        ("bad JSON", Message::text("42/ws,[oops")),
        ("an event that is not an array", Message::text("42/ws,{\"a\":1}")),
        ("an event without a name", Message::text("42/ws,[]")),
        ("binary attachments", Message::text("451-/ws,[\"x\",{\"_placeholder\":true,\"num\":0}]")),
        ("a binary WebSocket frame", Message::binary(vec![4u8, 0xff, 0x00, 0x7b])),
        ("an oversized frame", Message::text(oversized)),
        ("a 4 MiB frame", Message::text(format!("42/ws,[\"big\",{{\"pad\":\"{}\"}}]", "b".repeat(4 << 20)))),
    ];
    for (case, frame) in after_join {
        let (mut raw, _) = Raw::joined(&gw, &token).await;
        // The server may end the connection before it has read all of a huge frame.
        let how = match raw.ws.send(frame).await {
            Ok(()) => raw.expect_refusal(case).await,
            Err(e) => format!("closed while the frame was sent: {e}"),
        };
        eprintln!("{case}: {}", how.chars().take(200).collect::<String>());
        if case.ends_with("frame") && case != "a binary WebSocket frame" && how.starts_with("42") {
            assert!(how.contains("\"PAYLOAD_TOO_LARGE\""), "{case}: refused for its size: {how}");
        }
        still_serving(&gw, &token, case).await;
    }

    let before_join = [
        ("unknown Engine.IO type 9 before CONNECT", "9"),
        ("bad JSON in CONNECT", "40/ws,{oops"),
        ("an event before CONNECT", "42/ws,[\"subscribe\",{\"room\":\"project:1\"}]"),
    ];
    for (case, frame) in before_join {
        let mut raw = Raw::open(&gw).await;
        raw.send(frame).await;
        let how = raw.expect_refusal(case).await;
        eprintln!("{case}: {how}");
        still_serving(&gw, &token, case).await;
    }

    // The connection that sent nothing wrong never noticed.
    let offset = gw.http().publish("project:1", json!({"type": "after", "n": 1})).await;
    let (name, event) = bystander.event().await;
    assert_eq!((name.as_str(), event["offset"].as_u64()), ("after", Some(offset)), "{event}");
    let (status, _) = gw.http().get("/health").await;
    assert_eq!(status, 200);
}

/// A fresh connection still joins, subscribes and is acknowledged.
async fn still_serving(gw: &TestGateway, token: &str, case: &str) {
    let (mut fresh, data) = Raw::joined(gw, token).await;
    assert_eq!(data["user_id"], "u1", "after {case}");
    let ack = fresh.emit_ack(7, "subscribe", json!({"room": "project:2"})).await;
    assert_eq!(ack["status"], "success", "after {case}: {ack}");
}

// --- connection state recovery ----------------------------------------------------------

/// Reconnects at once (the tests lose the network on purpose), WebSocket only.
fn recovering_opts(token: &str) -> Value {
    json!({"auth": {"token": token}, "transports": ["websocket"], "reconnectionDelay": 20, "reconnectionDelayMax": 50})
}

/// The next event `name` on `socket` with recovery on: the event object, and the offset
/// argument appended after it.
async fn recovered_event(io: &mut Driver, socket: &str, name: &str) -> (Value, String) {
    let args = io.event(socket, name).await;
    assert_eq!(args.len(), 2, "with recovery on, the offset follows the event: {args:?}");
    let offset = args[1].as_str().unwrap_or_else(|| panic!("the offset argument is a string: {args:?}")).to_owned();
    (args[0].clone(), offset)
}

/// Loses the network of `socket`, waits for its reconnection and returns its `connect`.
async fn lose_network_and_reconnect(io: &mut Driver, socket: &str) -> Value {
    io.send(json!({"cmd": "close_engine", "socket": socket})).await;
    let gone = io.expect("the disconnect", |r| r["socket"] == socket && r["kind"] == "disconnect").await;
    assert_eq!(gone["reason"], "forced close", "engine.close() is how the client sees a lost network: {gone}");
    io.connected(socket).await
}

/// Publishes `(topic, n)` events, each `{type: "rec.event", n}`; returns their offsets.
async fn publish_all(api: &Api, events: &[(&str, u64)]) -> Vec<u64> {
    let mut offsets = Vec::new();
    for (topic, n) in events {
        offsets.push(api.publish(topic, json!({"type": "rec.event", "n": n})).await);
    }
    offsets
}

/// Receives `expected` `(topic, n)` events on `socket`, in order per topic, and then
/// nothing more: a sentinel on another topic arrives with no event left over before it.
async fn receive_exactly(io: &mut Driver, api: &Api, socket: &str, expected: &[(&str, u64)], sentinel_topic: &str) {
    let mut got: Vec<(String, u64)> = Vec::new();
    for _ in expected {
        let (event, offset) = recovered_event(io, socket, "rec.event").await;
        let topic = event["topic"].as_str().unwrap().to_owned();
        assert_eq!(offset, format!("{}@{topic}", event["offset"]), "{event}");
        got.push((topic, event["n"].as_u64().unwrap()));
    }
    for topic in expected.iter().map(|(t, _)| *t).collect::<std::collections::BTreeSet<_>>() {
        let want: Vec<u64> = expected.iter().filter(|(t, _)| *t == topic).map(|(_, n)| *n).collect();
        let have: Vec<u64> = got.iter().filter(|(t, _)| t == topic).map(|(_, n)| *n).collect();
        assert_eq!(have, want, "{topic}: every event once, in order (got {got:?})");
    }
    api.publish(sentinel_topic, json!({"type": "rec.sentinel"})).await;
    io.event(socket, "rec.sentinel").await;
    let extra = io.pending(socket, "event");
    assert!(extra.iter().all(|r| r["name"] != "rec.event"), "duplicates after the expected events: {extra:?}");
}

#[tokio::test]
async fn a_client_that_loses_its_network_recovers_every_missed_event_once() {
    let gw = TestGateway::spawn_with(|c| c.socketio.recovery = Duration::from_secs(120)).await;
    let api = gw.http();
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["job:*"]}));
    io.connect("main", &io_url(&gw, "/ws"), recovering_opts(&token)).await;
    let first = io.connected("main").await;
    assert_eq!(first["recovered"], false, "{first}");
    for topic in ["job:r1", "job:r2", "job:r3"] {
        io.subscribe("main", topic).await;
    }
    let before = [("job:r1", 1), ("job:r2", 1), ("job:r1", 2)];
    publish_all(&api, &before).await;
    receive_exactly(&mut io, &api, "main", &before, "user:u1").await;

    // Lost: the server notices the closed socket at once; these are published meanwhile.
    io.send(json!({"cmd": "close_engine", "socket": "main"})).await;
    io.expect("the disconnect", |r| r["socket"] == "main" && r["kind"] == "disconnect").await;
    let missed = [("job:r2", 2), ("job:r1", 3), ("job:r3", 1), ("job:r2", 3)];
    publish_all(&api, &missed).await;
    let again = io.connected("main").await;
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(again["id"], first["id"], "the socket id comes back too");
    receive_exactly(&mut io, &api, "main", &missed, "user:u1").await;

    // Its rooms are back: live events keep coming, and a second loss recovers as well.
    let live = [("job:r3", 2)];
    publish_all(&api, &live).await;
    receive_exactly(&mut io, &api, "main", &live, "user:u1").await;
    let again = lose_network_and_reconnect(&mut io, "main").await;
    assert_eq!(again["recovered"], true, "{again}");
    let after = [("job:r1", 4)];
    publish_all(&api, &after).await;
    receive_exactly(&mut io, &api, "main", &after, "user:u1").await;

    // socket.disconnect() ends the session: connecting again starts over.
    io.send(json!({"cmd": "disconnect", "socket": "main"})).await;
    io.expect("the disconnect", |r| r["socket"] == "main" && r["kind"] == "disconnect").await;
    io.send(json!({"cmd": "connect_again", "socket": "main"})).await;
    let fresh = io.connected("main").await;
    assert_eq!(fresh["recovered"], false, "{fresh}");
}

#[tokio::test]
async fn without_recovery_configured_there_is_no_offset_and_no_recovery() {
    let gw = TestGateway::spawn().await;
    let api = gw.http();
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["job:*"]}));
    io.connect("main", &io_url(&gw, "/ws"), recovering_opts(&token)).await;
    io.connected("main").await;
    io.subscribe("main", "job:n1").await;
    let again = lose_network_and_reconnect(&mut io, "main").await;
    assert_eq!(again["recovered"], false, "{again}");
    // Not recovered: the room is gone, as in Socket.IO.
    io.subscribe("main", "job:n1").await;
    api.publish("job:n1", json!({"type": "rec.event", "n": 1})).await;
    let args = io.event("main", "rec.event").await;
    assert_eq!(args.len(), 1, "no offset argument without recovery: {args:?}");
}

/// A TCP forwarder standing in for a load balancer: new connections go to whichever
/// backend is current.
struct Balancer {
    addr: std::net::SocketAddr,
    backend: Arc<Mutex<std::net::SocketAddr>>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Balancer {
    async fn start(backend: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(backend));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (current, tasks) = (backend.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *current.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, backend, live }
    }

    /// The network is lost: every connection through the balancer dies at once, with no
    /// goodbye from the client.
    fn cut(&self) {
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn switch_to(&self, backend: std::net::SocketAddr) {
        *self.backend.lock().unwrap() = backend;
    }
}

#[tokio::test]
async fn a_client_recovers_on_another_node_of_a_redis_cluster() {
    let redis = crate::servers::redis::Redis::start();
    let node = |url: String| {
        TestGateway::spawn_with(move |c| {
            c.broker = url;
            c.socketio.recovery = Duration::from_secs(120);
        })
    };
    let (a, b) = (node(redis.url()).await, node(redis.url()).await);
    let balancer = Balancer::start(a.addr).await;
    let (api_a, api_b) = (a.http(), b.http());
    let mut io = Driver::start().await;
    let token = a.token("u1", json!({"topics": ["job:*"]}));
    io.connect("main", &format!("http://{}/ws", balancer.addr), recovering_opts(&token)).await;
    let first = io.connected("main").await;
    for topic in ["job:c1", "job:c2"] {
        io.subscribe("main", topic).await;
    }
    let before = [("job:c1", 1), ("job:c2", 1)];
    publish_all(&api_b, &before).await;
    receive_exactly(&mut io, &api_a, "main", &before, "user:u1").await;

    // Node A's client loses its network; the balancer sends the reconnection to node B.
    balancer.switch_to(b.addr);
    io.send(json!({"cmd": "close_engine", "socket": "main"})).await;
    io.expect("the disconnect", |r| r["socket"] == "main" && r["kind"] == "disconnect").await;
    let missed = [("job:c2", 2), ("job:c1", 2), ("job:c2", 3)];
    publish_all(&api_a, &missed).await;
    let again = io.connected("main").await;
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    receive_exactly(&mut io, &api_b, "main", &missed, "user:u1").await;
    let (_, list) = api_b.get("/api/connections?user=u1").await;
    assert_eq!(list["connections"][0]["protocol"], "socketio", "{list}");
    assert_eq!(list["connections"][0]["connectionId"], first["id"], "{list}");
}

/// A polling client whose poll is cut off (a page reload, a proxy timeout) polls again on
/// the same session: not an "overlapping poll" that would close it.
#[tokio::test]
async fn a_poll_cut_off_by_the_client_does_not_break_the_session() {
    let gw = TestGateway::spawn().await;
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", gw.addr);
    let http = reqwest::Client::new();
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_owned();
    let session = format!("{base}&sid={sid}");
    let connect = format!("40/ws,{}", json!({"token": gw.token("u1", json!({}))}));
    assert_eq!(http.post(&session).body(connect).send().await.unwrap().status(), 200);
    let first = http.get(&session).send().await.unwrap().text().await.unwrap();
    assert!(first.starts_with("40/ws,{"), "{first}");
    // Nothing queued: this poll waits, and the client gives up on it.
    let cut = tokio::time::timeout(Duration::from_millis(300), http.get(&session).send()).await;
    assert!(cut.is_err(), "the poll should have been waiting");
    let polling = &gw.state.socketio.polling;
    let deadline = tokio::time::Instant::now() + WAIT;
    while polling.is_polling(&sid) != Some(false) {
        assert!(tokio::time::Instant::now() < deadline, "the server never noticed the cut poll");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let again = tokio::spawn({
        let (http, session) = (http.clone(), session.clone());
        async move { http.get(&session).send().await.unwrap() }
    });
    let offset = gw.http().publish("user:u1", json!({"type": "after.cut"})).await;
    let response = again.await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("after.cut") && body.contains(&format!("\"offset\":{offset}")), "{body}");
}

/// A long-polling client whose network dies silently leaves a session the server still
/// thinks alive (polling has no socket to see close): the client's recovering CONNECT
/// ends it, takes its session and gets everything it missed.
#[tokio::test]
async fn a_polling_client_whose_network_dies_silently_recovers() {
    let gw = TestGateway::spawn_with(|c| c.socketio.recovery = Duration::from_secs(120)).await;
    let api = gw.http();
    let balancer = Balancer::start(gw.addr).await;
    let mut io = Driver::start().await;
    let token = gw.token("u1", json!({"topics": ["job:*"]}));
    let opts = json!({"auth": {"token": token}, "transports": ["polling"], "reconnectionDelay": 20, "reconnectionDelayMax": 50});
    io.connect("main", &format!("http://{}/ws", balancer.addr), opts).await;
    let first = io.connected("main").await;
    assert_eq!(first["transport"], "polling", "{first}");
    io.subscribe("main", "job:p1").await;
    let before = [("job:p1", 1)];
    publish_all(&api, &before).await;
    receive_exactly(&mut io, &api, "main", &before, "user:u1").await;

    // The network goes down (new connections are refused, live ones die) and comes back.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    balancer.switch_to(nowhere);
    balancer.cut();
    let missed = [("job:p1", 2), ("job:p1", 3)];
    publish_all(&api, &missed).await;
    io.expect("the disconnect", |r| r["socket"] == "main" && r["kind"] == "disconnect").await;
    balancer.switch_to(gw.addr);
    let again = io.connected("main").await;
    assert_eq!(again["recovered"], true, "{again}");
    receive_exactly(&mut io, &api, "main", &missed, "user:u1").await;
    let (_, list) = api.get("/api/connections?user=u1").await;
    assert_eq!(list["connections"].as_array().map(Vec::len), Some(1), "the old session is gone: {list}");
}

/// Engine.IO requests that no client should send: an unknown or foreign session id, an
/// oversized polling body, another protocol version or transport. Each gets Engine.IO's
/// error answer; the server goes on serving.
#[tokio::test]
async fn bad_engine_requests_get_engine_errors_and_the_server_is_unaffected() {
    let gw = TestGateway::spawn_with(|c| c.limits.max_message_size = 1024).await;
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", gw.addr);
    let http = reqwest::Client::new();
    let handshake = |http: reqwest::Client| {
        let base = base.clone();
        async move {
            let open = http.get(&base).send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_owned()
        }
    };
    let engine_error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["code"].as_u64())
    };

    let sid = handshake(http.clone()).await;
    let unknown = http.get(format!("{base}&sid=eio_0_nope")).send().await.unwrap();
    assert_eq!(engine_error(unknown).await, (400, Some(1)), "unknown sid");
    // The same session id from another loopback address is not that session.
    let elsewhere =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let foreign = elsewhere.get(format!("{base}&sid={sid}")).send().await.unwrap();
    assert_eq!(engine_error(foreign).await, (400, Some(1)), "a sid used from another address");
    let foreign_post = elsewhere.post(format!("{base}&sid={sid}")).body("40/ws,{}").send().await.unwrap();
    assert_eq!(engine_error(foreign_post).await, (400, Some(1)));

    // More than the announced maxPayload allows (twice max_message_size): 413, and the
    // session is over.
    let huge = format!("42/ws,[\"x\",\"{}\"]", "a".repeat(4096));
    let response = http.post(format!("{base}&sid={sid}")).body(huge).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let after = http.get(format!("{base}&sid={sid}")).send().await.unwrap();
    let status = after.status().as_u16();
    let body = after.text().await.unwrap();
    assert!(status == 400 || body == "1", "the session ended: {status} {body}");

    let old = http.get(format!("http://{}/socket.io/?EIO=3&transport=polling", gw.addr)).send().await.unwrap();
    assert_eq!(engine_error(old).await, (400, Some(5)), "Engine.IO 3");
    let bogus = http.get(format!("http://{}/socket.io/?EIO=4&transport=carrier-pigeon", gw.addr)).send().await.unwrap();
    assert_eq!(engine_error(bogus).await, (400, Some(0)), "unknown transport");
    let put = http.put(format!("{base}&sid={sid}")).send().await.unwrap();
    assert_eq!(engine_error(put).await.0, 400, "polling takes GET and POST");

    // Unaffected: a new session connects and gets its CONNECT answer.
    let sid = handshake(http.clone()).await;
    let connect = format!("40/ws,{}", json!({"token": gw.token("u1", json!({}))}));
    assert_eq!(http.post(format!("{base}&sid={sid}")).body(connect).send().await.unwrap().status(), 200);
    let first = http.get(format!("{base}&sid={sid}")).send().await.unwrap().text().await.unwrap();
    assert!(first.starts_with("40/ws,{"), "{first}");
}

/// A recovering CONNECT whose pid names someone else's connection (ids are visible, e.g.
/// in presence) must not end that connection nor take its session.
#[tokio::test]
async fn a_forged_pid_naming_another_users_connection_changes_nothing() {
    let gw = TestGateway::spawn_with(|c| c.socketio.recovery = Duration::from_secs(120)).await;
    let (mut victim, data) = Raw::joined(&gw, &gw.token("victim", json!({}))).await;
    let victim_id = data["connection_id"].as_str().unwrap().to_owned();

    let mut attacker = Raw::open(&gw).await;
    let forged = format!("{}.{victim_id}", "0".repeat(32));
    let auth = json!({"token": gw.token("attacker", json!({})), "pid": forged, "offset": "1@user:victim"});
    attacker.send(format!("40/ws,{auth}")).await;
    let reply = attacker.packet().await;
    let answer: Value =
        serde_json::from_str(reply.strip_prefix("40/ws,").unwrap_or_else(|| panic!("{reply}"))).unwrap();
    assert_ne!(answer["pid"], json!(forged), "not recovered: {answer}");
    assert_ne!(answer["sid"], json!(victim_id), "{answer}");

    // The victim is still connected and still served.
    let (_, list) = gw.http().get("/api/connections?user=victim").await;
    assert_eq!(list["connections"][0]["connectionId"], json!(victim_id), "{list}");
    gw.http().publish("user:victim", json!({"type": "still.here"})).await;
    let packet = victim.packet().await;
    assert!(packet.starts_with("42/ws,[\"still.here\","), "{packet}");
}

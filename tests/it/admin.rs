//! The admin dashboard (SPEC §11, issue 17): off unless a password is set; the login
//! form, its signed `sb_admin` cookie and its throttle; every `/admin/api/*` route behind
//! the session; and the API's figures from a real cluster of two gateways sharing a real
//! redis-server, with real WebSocket (and Socket.IO) clients on both nodes: the overview,
//! topic search and details, the connection calls across nodes, the live SSE stream, and
//! a node's sinks.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use signalbox::Gateway;
use tokio_tungstenite::tungstenite::Message;

use crate::servers::free_port;
use crate::servers::redis::Redis;
use crate::support::{Client, TestGateway, test_config, until};

/// The dashboard's password in these tests (at least 12 characters).
const PASSWORD: &str = "admin-password-0123";
/// The policy every admin answer carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn admin_gateway(adjust: impl FnOnce(&mut signalbox::Config)) -> TestGateway {
    TestGateway::spawn_with(|c| {
        c.admin.password = PASSWORD.into();
        adjust(c);
    })
    .await
}

/// A browser-like HTTP client of one gateway: no redirects followed, the session cookie
/// (`sb_admin=…`) sent when it has one.
struct Dashboard {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

/// An answer: status, headers, body (JSON, or the text as a JSON string).
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// The `Set-Cookie` headers.
    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

impl Dashboard {
    fn new(gw: &TestGateway) -> Self {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: format!("http://{}", gw.addr), client, cookie: None }
    }

    /// The same client, logged in on `gw` (the cookie works on every node sharing the password).
    async fn logged_in(gw: &TestGateway) -> Self {
        Self::logged_in_with(gw, PASSWORD).await
    }

    async fn logged_in_with(gw: &TestGateway, password: &str) -> Self {
        let mut dashboard = Self::new(gw);
        let answer = dashboard.login(password, None).await;
        assert_eq!((answer.status, answer.location()), (303, Some("/admin")), "{:?}", answer.set_cookies());
        dashboard.cookie = Some(session_cookie(&answer));
        dashboard
    }

    fn with_cookie(&self, cookie: &str) -> Self {
        Self { base: self.base.clone(), client: self.client.clone(), cookie: Some(cookie.into()) }
    }

    fn on(&self, gw: &TestGateway) -> Self {
        Self { base: format!("http://{}", gw.addr), client: self.client.clone(), cookie: self.cookie.clone() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{}", self.base, path));
        match &self.cookie {
            Some(cookie) => request.header(header::COOKIE, cookie),
            None => request,
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    async fn get(&self, path: &str) -> Answer {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post_json(&self, path: &str, body: Value) -> Answer {
        let request = self
            .request(reqwest::Method::POST, path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        Self::send(request).await
    }

    async fn delete(&self, path: &str) -> Answer {
        Self::send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// `POST /admin/login` with the form, optionally as if behind TLS.
    async fn login(&self, password: &str, forwarded_proto: Option<&str>) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new()).append_pair("password", password).finish();
        let mut request = self
            .request(reqwest::Method::POST, "/admin/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(proto) = forwarded_proto {
            request = request.header("x-forwarded-proto", proto);
        }
        Self::send(request).await
    }

    /// `GET /admin/api/overview` (200 asserted).
    async fn overview(&self) -> Value {
        let answer = self.get("/admin/api/overview").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }
}

/// `sb_admin=<value>` from a login answer's `Set-Cookie`.
fn session_cookie(answer: &Answer) -> String {
    let cookies = answer.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let pair = cookies[0].split(';').next().unwrap().trim().to_owned();
    assert!(pair.starts_with("sb_admin=") && pair.len() > "sb_admin=".len() + 10, "{cookies:?}");
    pair
}

/// The attributes of a `Set-Cookie` value after the name=value pair, lower-cased.
fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect()
}

fn assert_unauthenticated(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], "AUTHENTICATION_ERROR", "{what}: {}", answer.body);
    assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {}", answer.body);
    assert!(answer.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{what}");
    assert_eq!(answer.header("content-security-policy"), Some(CSP), "{what}: the CSP on API answers too");
}

/// Every route of `/admin/api/` (method, path), plus one that does not exist.
fn api_routes(id: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/admin/api/overview".into()),
        (Method::GET, "/admin/api/nodes".into()),
        (Method::GET, "/admin/api/topics?search=job".into()),
        (Method::GET, "/admin/api/topics/job%3A1".into()),
        (Method::GET, "/admin/api/connections?user=alice".into()),
        (Method::GET, format!("/admin/api/connections/{id}")),
        (Method::POST, format!("/admin/api/connections/{id}/send")),
        (Method::DELETE, format!("/admin/api/connections/{id}")),
        (Method::POST, "/admin/api/publish".into()),
        (Method::GET, "/admin/api/sinks".into()),
        (Method::GET, "/admin/api/stream".into()),
        (Method::GET, "/admin/api/stream?tail=job%3A1".into()),
        (Method::GET, "/admin/api/no-such-route".into()),
        (Method::GET, "/admin/api/nodes/extra/segments".into()),
    ]
}

// ---------------------------------------------------------------------------------------
// Off by default, and the password's minimum length.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn without_a_password_every_admin_path_is_404_and_a_short_password_is_refused() {
    let gw = TestGateway::spawn().await;
    let dashboard = Dashboard::new(&gw);
    for path in
        ["/admin", "/admin/", "/admin/login", "/admin/assets/app.js", "/admin/api/overview", "/admin/api/stream"]
    {
        let answer = dashboard.get(path).await;
        assert_eq!(answer.status, 404, "GET {path}: {}", answer.body);
        assert_eq!(answer.header("content-security-policy"), None, "GET {path}: nothing admin is mounted");
    }
    let answer = dashboard.login(PASSWORD, None).await;
    assert_eq!((answer.status, answer.set_cookies()), (404, vec![]), "POST /admin/login: {}", answer.body);
    let answer = dashboard.post_json("/admin/api/publish", json!({"topic": "job:1", "event": {"type": "t"}})).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    // A real session cookie from a dashboard elsewhere does not switch it on either.
    let other = admin_gateway(|_| {}).await;
    let cookie = Dashboard::logged_in(&other).await.cookie.unwrap();
    assert_eq!(dashboard.with_cookie(&cookie).get("/admin/api/overview").await.status, 404);

    // Fewer than 12 characters: a configuration error naming the setting.
    for short in ["x", "eleven-char"] {
        let mut config = test_config();
        config.admin.password = short.into();
        let error = config.validate().expect_err("a short admin password is refused").to_string();
        assert!(error.contains("admin.password"), "{error}");
        let error = Gateway::build(config).await.err().expect("the gateway refuses to start").to_string();
        assert!(error.contains("admin.password"), "{error}");
    }
    let mut config = test_config();
    config.admin.password = "twelve-chars".into();
    config.validate().expect("12 characters are enough");
    config.admin.login_attempts_per_minute = 0;
    let error = config.validate().expect_err("no login attempts at all is refused").to_string();
    assert!(error.contains("admin.login_attempts_per_minute"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Sessions.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_api_route_answers_401_json_without_a_valid_session() {
    let gw = admin_gateway(|_| {}).await;
    const OTHER: &str = "another-password-456";
    let other = admin_gateway(|c| c.admin.password = OTHER.into()).await;
    let anonymous = Dashboard::new(&gw);
    let good = Dashboard::logged_in(&gw).await.cookie.unwrap();
    let foreign = Dashboard::logged_in_with(&other, OTHER).await.cookie.unwrap();
    // A real connection, so the per-connection routes would succeed with a session.
    let mut alice = gw.connect("alice", json!({"topics": ["job:*"]})).await;
    alice.subscribe("job:1").await;
    let id = alice.id();

    // The good cookie's parts, altered one way or another.
    let value = good.strip_prefix("sb_admin=").unwrap();
    let (expiry, rest) = value.split_once('.').unwrap();
    let later = expiry.parse::<u64>().unwrap() + 86_400;
    let mut flipped = value.to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    let (body, _mac) = value.rsplit_once('.').unwrap();
    let past = format!("{}.{}", crate::support::now() - 10, body.split_once('.').unwrap().1);
    let bad_cookies = [
        "sb_admin=forged".to_owned(),
        "sb_admin=".to_owned(),
        format!("sb_admin={later}.{rest}"),
        format!("sb_admin={flipped}"),
        format!("sb_admin={past}.{}", value.rsplit_once('.').unwrap().1),
        format!("sb_admin={body}."),
        foreign.clone(),
        // The right value under another name.
        format!("sb_admin2={value}"),
        format!("other={value}"),
    ];

    let body = json!({"topic": "job:1", "event": {"type": "forged"}});
    for (method, path) in api_routes(&id) {
        let what = format!("{method} {path}");
        let build = |d: &Dashboard| {
            let request = d.request(method.clone(), &path);
            if method == reqwest::Method::POST {
                request.header(header::CONTENT_TYPE, "application/json").body(body.to_string())
            } else {
                request
            }
        };
        assert_unauthenticated(&Dashboard::send(build(&anonymous)).await, &format!("{what} without a cookie"));
        for cookie in &bad_cookies {
            let answer = Dashboard::send(build(&anonymous.with_cookie(cookie))).await;
            assert_unauthenticated(&answer, &format!("{what} with cookie {cookie}"));
        }
        // With the good cookie the same request is let through (the stream is read
        // elsewhere; the mutating calls are checked by the cluster test).
        if method == reqwest::Method::GET && !path.contains("stream") {
            let answer = Dashboard::send(build(&anonymous.with_cookie(&good))).await;
            assert_ne!(answer.status, 401, "{what} with a session: {}", answer.body);
            assert_eq!(answer.header("content-security-policy"), Some(CSP), "{what}");
            let expected = if path.contains("no-such-route") || path.contains("extra") { 404 } else { 200 };
            assert_eq!(answer.status, expected, "{what} with a session: {}", answer.body);
        }
    }
    // Nothing was published, sent or closed by all of that.
    let dashboard = anonymous.with_cookie(&good);
    let topic = dashboard.get("/admin/api/topics/job%3A1").await;
    assert_eq!(topic.body["offset"], 0, "{}", topic.body);
    alice.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(dashboard.get(&format!("/admin/api/connections/{id}")).await.status, 200);
    // Several cookies in one header, the session among them, is a session.
    let answer = anonymous.with_cookie(&format!("theme=dark; {good}; lang=en")).get("/admin/api/nodes").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_clears_it() {
    let gw = admin_gateway(|_| {}).await;
    let anonymous = Dashboard::new(&gw);

    // Pages: no session → to the login form; the form and the assets need none.
    for path in ["/admin", "/admin/"] {
        let answer = anonymous.get(path).await;
        assert_eq!((answer.status, answer.location()), (303, Some("/admin/login")), "GET {path}");
        assert_eq!(answer.header("content-security-policy"), Some(CSP), "GET {path}");
    }
    let login_page = anonymous.get("/admin/login").await;
    assert_eq!(login_page.status, 200);
    assert!(login_page.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(login_page.header("content-security-policy"), Some(CSP));
    assert_eq!(login_page.body.as_str(), Some(include_str!("../../src/admin/assets/login.html")));
    for (asset, kind) in [("app.js", "text/javascript"), ("login.js", "text/javascript"), ("style.css", "text/css")] {
        let answer = anonymous.get(&format!("/admin/assets/{asset}")).await;
        assert_eq!(answer.status, 200, "{asset}");
        assert!(answer.header("content-type").unwrap().starts_with(kind), "{asset}");
        assert_eq!(answer.header("content-security-policy"), Some(CSP), "{asset}");
    }
    let missing = anonymous.get("/admin/assets/nope.js").await;
    assert_eq!(missing.status, 404);

    // A wrong (or missing) password: back to the form, no cookie.
    for wrong in ["admin-password-012", "", "admin-password-01234"] {
        let answer = anonymous.login(wrong, None).await;
        assert_eq!((answer.status, answer.location()), (303, Some("/admin/login?error=1")), "{wrong:?}");
        assert!(answer.set_cookies().is_empty(), "{wrong:?}: {:?}", answer.set_cookies());
    }

    // The right one: on to /admin with the session cookie, strict and script-proof.
    let answer = anonymous.login(PASSWORD, None).await;
    assert_eq!((answer.status, answer.location()), (303, Some("/admin")));
    assert_eq!(answer.header("content-security-policy"), Some(CSP));
    let set_cookie = answer.set_cookies().remove(0);
    let attributes = cookie_attributes(&set_cookie);
    for wanted in ["httponly", "samesite=strict", "path=/admin"] {
        assert!(attributes.iter().any(|a| a == wanted), "{wanted} in {set_cookie}");
    }
    assert!(!attributes.iter().any(|a| a == "secure"), "plain HTTP: no Secure in {set_cookie}");
    let session = anonymous.with_cookie(&session_cookie(&answer));
    let index = session.get("/admin").await;
    assert_eq!(index.status, 200, "{}", index.body);
    assert!(index.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(index.body.as_str(), Some(include_str!("../../src/admin/assets/index.html")));
    assert_eq!(index.header("content-security-policy"), Some(CSP));
    assert_eq!(session.get("/admin/").await.status, 200);
    let overview = session.overview().await;
    assert_eq!(overview["cluster"], false, "{overview}");

    // Behind TLS (a load balancer says so): Secure too.
    let answer = anonymous.login(PASSWORD, Some("https")).await;
    assert_eq!(answer.status, 303);
    let set_cookie = answer.set_cookies().remove(0);
    let attributes = cookie_attributes(&set_cookie);
    for wanted in ["secure", "httponly", "samesite=strict", "path=/admin"] {
        assert!(attributes.iter().any(|a| a == wanted), "{wanted} in {set_cookie}");
    }

    // Mutating API calls must be JSON.
    let event = json!({"topic": "job:1", "event": {"type": "t"}}).to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let mut request = session.request(reqwest::Method::POST, "/admin/api/publish").body(event.clone());
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        let answer = Dashboard::send(request).await;
        assert_eq!(answer.status, 415, "{content_type:?}: {}", answer.body);
        assert!(answer.body["error"]["code"].is_string(), "{}", answer.body);
        assert_eq!(answer.header("content-security-policy"), Some(CSP));
    }
    let answer =
        Dashboard::send(session.request(reqwest::Method::POST, "/admin/api/connections/conn_1_nope/send").body("{}"))
            .await;
    assert_eq!(answer.status, 415, "{}", answer.body);
    let topic = session.get("/admin/api/topics/job%3A1").await;
    assert_eq!(topic.body["offset"], 0, "none of them published: {}", topic.body);

    // Logout: the cookie is cleared (same name, path and flags, expired), back to the form.
    let answer = Dashboard::send(session.request(reqwest::Method::POST, "/admin/logout")).await;
    assert_eq!((answer.status, answer.location()), (303, Some("/admin/login")));
    assert_eq!(answer.header("content-security-policy"), Some(CSP));
    let cleared = answer.set_cookies().remove(0);
    assert!(cleared.starts_with("sb_admin=;"), "{cleared}");
    let attributes = cookie_attributes(&cleared);
    for wanted in ["max-age=0", "path=/admin", "httponly", "samesite=strict"] {
        assert!(attributes.iter().any(|a| a == wanted), "{wanted} in {cleared}");
    }
    // A browser then sends no cookie: back to the login form.
    assert_eq!(anonymous.get("/admin").await.location(), Some("/admin/login"));
}

#[tokio::test]
async fn after_too_many_failed_logins_even_the_right_password_is_refused() {
    let gw = admin_gateway(|c| c.admin.login_attempts_per_minute = 3).await;
    let dashboard = Dashboard::new(&gw);
    // A success does not count: log in once first.
    assert_eq!(dashboard.login(PASSWORD, None).await.location(), Some("/admin"));
    for n in 0..3 {
        let answer = dashboard.login("wrong-password-000", None).await;
        assert_eq!(answer.location(), Some("/admin/login?error=1"), "failure {n}");
    }
    for password in [PASSWORD, "wrong-password-000"] {
        let answer = dashboard.login(password, None).await;
        assert_eq!((answer.status, answer.location()), (303, Some("/admin/login?error=rate")), "{password}");
        assert!(answer.set_cookies().is_empty(), "throttled: no cookie {:?}", answer.set_cookies());
        assert_eq!(answer.header("content-security-policy"), Some(CSP));
    }
    // Another gateway (its own throttle) still lets the right password in.
    let fresh = admin_gateway(|c| c.admin.login_attempts_per_minute = 3).await;
    assert_eq!(Dashboard::new(&fresh).login(PASSWORD, None).await.location(), Some("/admin"));
}

// ---------------------------------------------------------------------------------------
// A cluster of two nodes on one redis-server.
// ---------------------------------------------------------------------------------------

/// The node entries of an overview or a stats event, by node id.
fn node_entry<'a>(nodes: &'a Value, id: &str) -> Option<&'a Value> {
    nodes.as_array()?.iter().find(|n| n["node"] == id)
}

/// Reads frames until one of `kind` (others, e.g. live events, are skipped).
async fn recv_type(client: &mut Client, kind: &str) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// A Socket.IO client in namespace `/ws` over a raw Engine.IO WebSocket (no library).
async fn socketio_client(
    gw: &TestGateway,
    sub: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let open = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");
    let token = gw.token(sub, json!({}));
    ws.send(Message::text(format!("40/ws,{}", json!({"token": token})))).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(reply.to_text().unwrap().starts_with("40/ws,"), "{reply:?}");
    ws
}

/// An SSE stream being read.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    async fn open(dashboard: &Dashboard, path: &str) -> Self {
        let response = dashboard.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let kind = response.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        assert_eq!(response.headers().get("content-security-policy").unwrap().to_str().unwrap(), CSP);
        Self { response, buffer: String::new() }
    }

    /// The next event (name, data); comments are skipped; fails after `limit`.
    async fn next(&mut self, limit: Duration) -> (String, String) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if !data.is_empty() {
                    return (name, data.join("\n"));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no complete SSE event within {limit:?}; have {:?}", self.buffer))
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event named `name` within `limit`, skipping others.
    async fn next_named(&mut self, name: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (event, data) = self.next(left).await;
            if event == name {
                return serde_json::from_str(&data).unwrap_or_else(|e| panic!("{name} data {data:?}: {e}"));
            }
        }
    }
}

#[tokio::test]
async fn a_two_node_cluster_is_seen_searched_and_driven_from_either_node() {
    let redis = Redis::start();
    let a = admin_gateway(|c| c.broker = redis.url()).await;
    let b = admin_gateway(|c| c.broker = redis.url()).await;
    let on_a = Dashboard::logged_in(&a).await;
    // One login is good on every node sharing the password.
    let on_b = on_a.on(&b);

    // 2 native clients on A; 2 native + 1 Socket.IO on B. `job:shared` held by 3 of them.
    let claims = json!({"topics": ["job:*"]});
    let mut alice = a.connect("alice", claims.clone()).await;
    alice.subscribe("job:shared").await;
    let _dave = a.connect("dave", claims.clone()).await;
    let mut bob = b.connect("bob", claims.clone()).await;
    bob.subscribe("job:shared").await;
    let mut carol = b.connect("carol", claims.clone()).await;
    carol.subscribe("job:shared").await;
    carol.subscribe("job:carol-only").await;
    let _erin = socketio_client(&b, "erin").await;

    // The overview on A: both nodes, their own counts once the 1 s samples caught up.
    let overview = until(Duration::from_secs(8), "A's overview shows both nodes' connections", || {
        let on_a = &on_a;
        async move {
            let o = on_a.overview().await;
            let counts: Vec<f64> = o["nodes"].as_array()?.iter().filter_map(|n| n["connections"].as_f64()).collect();
            let mut counts = counts;
            counts.sort_by(f64::total_cmp);
            (counts == [2.0, 3.0]).then_some(o)
        }
    })
    .await;
    assert_eq!(overview["cluster"], true, "{overview}");
    let node_a = overview["node"].as_str().unwrap().to_owned();
    let nodes = &overview["nodes"];
    assert_eq!(nodes.as_array().unwrap().len(), 2, "{overview}");
    let mine = node_entry(nodes, &node_a).unwrap_or_else(|| panic!("A itself in {overview}"));
    assert_eq!((mine["self"].as_bool(), mine["connections"].as_f64()), (Some(true), Some(2.0)), "{mine}");
    let theirs = nodes.as_array().unwrap().iter().find(|n| n["node"] != node_a.as_str()).unwrap();
    let node_b = theirs["node"].as_str().unwrap().to_owned();
    assert_eq!(theirs["self"], false, "{theirs}");
    assert_eq!(theirs["connections"].as_f64(), Some(3.0), "{theirs}");
    assert_eq!(theirs["socketioConnections"].as_f64(), Some(1.0), "{theirs}");
    assert_eq!(mine["socketioConnections"].as_f64(), Some(0.0), "{mine}");
    for node in [mine, theirs] {
        assert_eq!(node["broker"]["kind"], "redis", "{node}");
        assert_eq!(node["broker"]["up"], true, "{node}");
        assert!(node["startedAt"].as_str().unwrap().ends_with('Z'), "{node}");
        assert!(node["at"].as_str().unwrap().ends_with('Z'), "{node}");
        assert!(node["uptimeSeconds"].is_u64() && node["publishesPerSec"].is_number(), "{node}");
        assert!(node["subscriptions"].as_f64().unwrap() >= 1.0, "{node}");
        assert!(node["sinks"].is_array() && node["errorsPerSec"].is_object(), "{node}");
    }
    let totals = &overview["totals"];
    assert_eq!(totals["nodes"], 2, "{overview}");
    assert_eq!(totals["connections"].as_f64(), Some(5.0), "{overview}");
    assert_eq!(totals["socketioConnections"].as_f64(), Some(1.0), "{overview}");
    let subscriptions = mine["subscriptions"].as_f64().unwrap() + theirs["subscriptions"].as_f64().unwrap();
    assert_eq!(totals["subscriptions"].as_f64(), Some(subscriptions), "{overview}");
    // B answers for the same cluster, as itself.
    let from_b = on_b.get("/admin/api/nodes").await;
    assert_eq!(from_b.status, 200, "{}", from_b.body);
    assert_eq!(node_entry(&from_b.body["nodes"], &node_b).unwrap()["self"], true, "{}", from_b.body);
    assert_eq!(node_entry(&from_b.body["nodes"], &node_a).unwrap()["self"], false, "{}", from_b.body);

    // Topic search, across the cluster (the directory lists B's connections on A).
    let topics = until(Duration::from_secs(5), "job:shared held by 3 connections, seen from A", || {
        let on_a = &on_a;
        async move {
            let answer = on_a.get("/admin/api/topics?search=shared").await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            (answer.body["topics"][0]["subscribers"] == 3).then_some(answer.body)
        }
    })
    .await;
    assert_eq!(topics, json!({"topics": [{"topic": "job:shared", "subscribers": 3}]}));
    let all = on_a.get("/admin/api/topics?search=job:").await.body;
    assert_eq!(all["topics"][0], json!({"topic": "job:shared", "subscribers": 3}), "most subscribed first: {all}");
    assert!(all["topics"].as_array().unwrap().contains(&json!({"topic": "job:carol-only", "subscribers": 1})), "{all}");
    assert!(all["topics"].as_array().unwrap().iter().all(|t| t["topic"].as_str().unwrap().contains("job:")), "{all}");
    let one = on_a.get("/admin/api/topics?search=job:&limit=1").await.body;
    assert_eq!(one["topics"].as_array().unwrap().len(), 1, "{one}");
    let none = on_a.get("/admin/api/topics?search=no-such-topic").await.body;
    assert_eq!(none, json!({"topics": []}));
    assert_eq!(on_a.get("/admin/api/topics?limit=0").await.status, 400);

    // Publishes through the admin route (on A, then B), one retained.
    let first = on_a
        .post_json(
            "/admin/api/publish",
            json!({"topic": "job:shared", "event": {"type": "progress", "pct": 40}, "retain": true}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!((first.body["topic"].as_str(), first.body["offset"].as_u64()), (Some("job:shared"), Some(1)));
    let second = on_b.post_json("/admin/api/publish", json!({"topic": "job:shared", "event": {"type": "log"}})).await;
    assert_eq!((second.status, second.body["offset"].as_u64()), (200, Some(2)), "{}", second.body);
    // The clients on both nodes received them.
    assert_eq!(recv_type(&mut bob, "progress").await["offset"], 1);
    assert_eq!(recv_type(&mut alice, "log").await["offset"], 2);
    // Bad publishes: 400 with the API's error code, nothing published.
    let bad = on_a.post_json("/admin/api/publish", json!({"topic": "bad topic!", "event": {"type": "x"}})).await;
    assert_eq!((bad.status, bad.body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{}", bad.body);
    let bad = on_a.post_json("/admin/api/publish", json!({"topic": "job:shared", "event": {"no": "type"}})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // The topic's page (one percent-encoded path segment), from B.
    let detail = until(Duration::from_secs(5), "job:shared's page on B", || {
        let on_b = &on_b;
        async move {
            let answer = on_b.get("/admin/api/topics/job%3Ashared").await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            (answer.body["presence"]["connections"] == 3 && answer.body["subscribers"] == 3).then_some(answer.body)
        }
    })
    .await;
    assert_eq!(detail["topic"], "job:shared", "{detail}");
    assert_eq!(detail["offset"], 2, "{detail}");
    assert!(detail["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{detail}");
    assert_eq!(detail["state"]["type"], "progress", "{detail}");
    assert_eq!(detail["state"]["pct"], 40, "{detail}");
    assert_eq!(detail["presence"]["users"], json!(["alice", "bob", "carol"]), "{detail}");
    let history = detail["history"].as_array().unwrap();
    let offsets: Vec<u64> = history.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2], "oldest first: {detail}");
    assert_eq!((history[0]["type"].as_str(), history[1]["type"].as_str()), (Some("progress"), Some("log")));
    assert_eq!(history[0]["topic"], "job:shared", "{detail}");
    let same = on_a.get("/admin/api/topics/job:shared").await.body;
    assert_eq!((same["offset"].clone(), same["epoch"].clone()), (json!(2), detail["epoch"].clone()), "{same}");
    let empty = on_a.get("/admin/api/topics/job%3Anever").await.body;
    assert_eq!((empty["offset"].clone(), empty["state"].clone()), (json!(0), Value::Null), "{empty}");
    assert_eq!(empty["history"], json!([]), "{empty}");
    assert_eq!(on_a.get("/admin/api/topics/bad%20topic!").await.status, 400);

    // Connections: a user on the OTHER node, found from A, with its details.
    let listed = on_a.get("/admin/api/connections?user=bob").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let entries = listed.body["connections"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", listed.body);
    assert_eq!(entries[0]["connectionId"], bob.id().as_str(), "{}", listed.body);
    assert_eq!(entries[0]["userId"], "bob");
    assert_eq!(entries[0]["protocol"], "native");
    assert!(entries[0]["topics"].as_array().unwrap().contains(&json!("job:shared")), "{}", listed.body);
    let by_topic = on_a.get("/admin/api/connections?topic=job%3Ashared").await.body;
    assert_eq!(by_topic["connections"].as_array().unwrap().len(), 3, "{by_topic}");
    let sio = on_a.get("/admin/api/connections?user=erin").await.body;
    assert_eq!(sio["connections"][0]["protocol"], "socketio", "{sio}");
    let details = on_a.get(&format!("/admin/api/connections/{}", bob.id())).await;
    assert_eq!(details.status, 200, "{}", details.body);
    assert_eq!(details.body["connectionId"], bob.id().as_str());
    assert_eq!(details.body["userId"], "bob");
    assert!(details.body["connectedAt"].as_str().unwrap().ends_with('Z'), "{}", details.body);
    assert!(details.body["remoteAddr"].as_str().unwrap().starts_with("127.0.0.1:"), "{}", details.body);
    assert!(details.body["lastActiveAt"].as_str().unwrap().ends_with('Z'), "{}", details.body);
    let unknown = on_a.get("/admin/api/connections/conn_1_nope").await;
    assert_eq!((unknown.status, unknown.body["error"]["code"].as_str()), (404, Some("NOT_FOUND")), "{}", unknown.body);

    // Send from A to bob on B: delivered.
    let sent = on_a
        .post_json(&format!("/admin/api/connections/{}/send", bob.id()), json!({"event": {"type": "direct", "n": 7}}))
        .await;
    assert_eq!((sent.status, sent.body.clone()), (200, json!({"delivered": true})));
    assert_eq!(recv_type(&mut bob, "direct").await, json!({"type": "direct", "n": 7}));
    let gone = on_a.post_json("/admin/api/connections/conn_1_nope/send", json!({"event": {"type": "x"}})).await;
    assert_eq!(gone.status, 404, "{}", gone.body);

    // The live stream on A, tailing job:shared; a second one tails a topic never used yet.
    let mut stream = Sse::open(&on_a, "/admin/api/stream?tail=job%3Ashared").await;
    let mut fresh = Sse::open(&on_a, "/admin/api/stream?tail=job%3Afresh").await;
    let stats = stream.next_named("stats", Duration::from_secs(2)).await;
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(stats["totals"]["nodes"], 2, "{stats}");
    assert_eq!(stats["totals"]["connections"].as_f64(), Some(5.0), "{stats}");
    assert!(node_entry(&stats["nodes"], &node_b).is_some(), "{stats}");
    // A second stats event follows about a second later.
    stream.next_named("stats", Duration::from_secs(3)).await;
    // Published on B after the stream opened: followed on A from the topic's history.
    let third = on_b.post_json("/admin/api/publish", json!({"topic": "job:shared", "event": {"type": "tailed"}})).await;
    assert_eq!(third.body["offset"], 3, "{}", third.body);
    let tailed = stream.next_named("event", Duration::from_secs(3)).await;
    assert_eq!((tailed["type"].as_str(), tailed["offset"].as_u64()), (Some("tailed"), Some(3)), "{tailed}");
    assert_eq!(tailed["topic"], "job:shared", "{tailed}");
    assert!(tailed.get("timestamp").is_some(), "{tailed}");
    let fresh_publish =
        on_a.post_json("/admin/api/publish", json!({"topic": "job:fresh", "event": {"type": "first"}})).await;
    assert_eq!(fresh_publish.status, 200, "{}", fresh_publish.body);
    let first_fresh = fresh.next_named("event", Duration::from_secs(4)).await;
    assert_eq!((first_fresh["type"].as_str(), first_fresh["offset"].as_u64()), (Some("first"), Some(1)));
    drop((stream, fresh));

    // Close carol (on B) from A: she sees 1000, and is gone.
    let closed = on_a.delete(&format!("/admin/api/connections/{}", carol.id())).await;
    assert_eq!(closed.status, 204, "{}", closed.body);
    assert_eq!(carol.expect_close(&mut Vec::new()).await, 1000);
    let again = on_a.get(&format!("/admin/api/connections/{}", carol.id())).await;
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(on_a.delete("/admin/api/connections/conn_1_nope").await.status, 404);
    until(Duration::from_secs(5), "B's count drops to 2 in A's overview", || {
        let (on_a, node_b) = (&on_a, &node_b);
        async move {
            let o = on_a.overview().await;
            (node_entry(&o["nodes"], node_b)?["connections"] == 2.0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_stopped_node_leaves_the_overview_and_without_redis_a_node_still_shows_itself() {
    let mut redis = Redis::start();
    let a = admin_gateway(|c| c.broker = redis.url()).await;
    let b = admin_gateway(|c| c.broker = redis.url()).await;
    let on_a = Dashboard::logged_in(&a).await;
    let count = |o: &Value| o["nodes"].as_array().map_or(0, Vec::len);
    until(Duration::from_secs(5), "both nodes in A's overview", || {
        let on_a = &on_a;
        async move { (count(&on_a.overview().await) == 2).then_some(()) }
    })
    .await;
    // B stops: its last sample goes stale and it is left out (after 5 s).
    b.shutdown().await.unwrap();
    let overview = until(Duration::from_secs(10), "B leaves A's overview", || {
        let on_a = &on_a;
        async move {
            let o = on_a.overview().await;
            (count(&o) == 1).then_some(o)
        }
    })
    .await;
    assert_eq!(overview["nodes"][0]["node"], overview["node"], "{overview}");
    assert_eq!(overview["totals"]["nodes"], 1, "{overview}");

    // Redis goes away: A still answers, with itself and its broker down.
    redis.process.kill();
    let overview = until(Duration::from_secs(5), "A's sample shows the broker down", || {
        let on_a = &on_a;
        async move {
            let o = on_a.overview().await;
            (o["nodes"][0]["broker"]["up"] == false).then_some(o)
        }
    })
    .await;
    assert_eq!((count(&overview), overview["cluster"].as_bool()), (1, Some(true)), "{overview}");
    let mut stream = Sse::open(&on_a, "/admin/api/stream").await;
    let stats = stream.next_named("stats", Duration::from_secs(3)).await;
    assert_eq!(stats["totals"]["nodes"], 1, "{stats}");
    assert_eq!(stats["nodes"][0]["broker"]["up"], false, "{stats}");
}

// ---------------------------------------------------------------------------------------
// Sinks.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sinks_route_lists_a_down_http_sink() {
    let port = free_port(); // nothing listens there
    let gw = admin_gateway(|c| {
        let sink: toml::Table =
            toml::from_str(&format!("kind = \"http\"\nurl = \"http://127.0.0.1:{port}/hook\"\ntimeout = \"1s\""))
                .unwrap();
        c.sinks.insert("pipeline".into(), sink.try_into().unwrap());
        c.routes.push(toml::from_str("action = \"cancel_job\"\nsink = \"pipeline\"").unwrap());
    })
    .await;
    let dashboard = Dashboard::logged_in(&gw).await;
    let sinks = until(Duration::from_secs(5), "the unreachable sink reported down", || {
        let dashboard = &dashboard;
        async move {
            let answer = dashboard.get("/admin/api/sinks").await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            (answer.body["sinks"][0]["status"] == "down").then_some(answer.body)
        }
    })
    .await;
    let list = sinks["sinks"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{sinks}");
    assert_eq!((list[0]["name"].as_str(), list[0]["kind"].as_str()), (Some("pipeline"), Some("http")), "{sinks}");
    assert!(list[0]["error"].as_str().is_some_and(|e| !e.is_empty()), "why it is down: {sinks}");
    assert!(list[0]["outbox"].is_number(), "{sinks}");
    assert!(sinks.as_object().unwrap().contains_key("outbox"), "{sinks}");
    // The overview carries the same, for this single node on the memory broker.
    let overview = dashboard.overview().await;
    assert_eq!((overview["cluster"].as_bool(), overview["node"].as_str()), (Some(false), Some("local")));
    let node = &overview["nodes"][0];
    assert_eq!(node["broker"]["kind"], "memory", "{overview}");
    assert_eq!(node["sinks"][0]["name"], "pipeline", "{overview}");
    assert_eq!(node["sinks"][0]["status"], "down", "{overview}");
}

// ---------------------------------------------------------------------------------------
// Known deviations from the contract (ignored until src/admin is fixed; see the report).
// ---------------------------------------------------------------------------------------

#[tokio::test]

async fn the_api_root_with_a_trailing_slash_is_401_json_too() {
    let gw = admin_gateway(|_| {}).await;
    assert_unauthenticated(&Dashboard::new(&gw).get("/admin/api/").await, "GET /admin/api/");
}

#[tokio::test]

async fn a_wrong_method_on_an_api_route_is_a_json_error() {
    let gw = admin_gateway(|_| {}).await;
    let session = Dashboard::logged_in(&gw).await;
    for (method, path) in [
        (reqwest::Method::PUT, "/admin/api/overview"),
        (reqwest::Method::POST, "/admin/api/nodes"),
        (reqwest::Method::GET, "/admin/api/publish"),
    ] {
        let answer = Dashboard::send(
            session.request(method.clone(), path).header(header::CONTENT_TYPE, "application/json").body("{}"),
        )
        .await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert!(answer.body["error"]["code"].is_string(), "{method} {path}: {:?}", answer.body);
    }
}

#[tokio::test]

async fn topic_search_without_redis_is_503_broker_unavailable_like_the_connection_list() {
    let mut redis = Redis::start();
    let gw = admin_gateway(|c| c.broker = redis.url()).await;
    let session = Dashboard::logged_in(&gw).await;
    assert_eq!(session.get("/admin/api/topics").await.status, 200);
    redis.process.kill();
    let connections = session.get("/admin/api/connections").await;
    assert_eq!(connections.status, 503, "{}", connections.body);
    let topics = session.get("/admin/api/topics").await;
    assert_eq!((topics.status, topics.body["error"]["code"].clone()), (503, connections.body["error"]["code"].clone()));
}

#[tokio::test]
async fn bad_input_to_the_login_and_the_api_is_a_clear_refusal_and_the_server_stays_up() {
    let gw = admin_gateway(|_| {}).await;
    let session = Dashboard::logged_in(&gw).await;
    // Malformed, hostile or oversized login bodies: back to the form, never a session.
    let long = "p".repeat(200_000);
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", "password=%zz%"),
        ("application/x-www-form-urlencoded", "nopassword"),
        ("application/json", r#"{"password":"dashboard"}"#),
        ("text/plain", "\u{0}\u{1}garbage"),
        ("application/x-www-form-urlencoded", long.as_str()),
    ] {
        let request = session
            .with_cookie("")
            .request(reqwest::Method::POST, "/admin/login")
            .header(header::CONTENT_TYPE, content_type)
            .body(body.to_owned());
        let answer = Dashboard::send(request).await;
        assert_eq!(answer.status, 303, "{content_type}: {:?}", answer.body);
        assert!(answer.headers.get(header::SET_COOKIE).is_none(), "{content_type}: no session");
    }
    // Bad parameters: 400 with the SPEC code and a message naming the parameter.
    for path in [
        "/admin/api/stream?tail=bad%20topic!",
        "/admin/api/connections?limit=0",
        "/admin/api/connections?limit=x",
        "/admin/api/connections?topic=bad%20topic!",
        "/admin/api/topics?limit=100000",
    ] {
        let answer = session.get(path).await;
        assert_eq!(answer.status, 400, "{path}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], "VALIDATION_ERROR", "{path}: {:?}", answer.body);
        assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}");
    }
    let not_json = session.post_json("/admin/api/publish", json!("just a string")).await;
    assert_eq!(not_json.status, 400, "{:?}", not_json.body);
    let broken = Dashboard::send(
        session
            .request(reqwest::Method::POST, "/admin/api/publish")
            .header(header::CONTENT_TYPE, "application/json")
            .body("{\"topic\":"),
    )
    .await;
    assert_eq!((broken.status, broken.body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")));
    // The server is unaffected.
    assert_eq!(session.get("/admin/api/overview").await.status, 200);
}

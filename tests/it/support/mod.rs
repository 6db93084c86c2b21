//! Test harness: a real gateway on 127.0.0.1:0 and real WebSocket / HTTP clients.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use signalbox::Config;
use signalbox::Gateway;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key-1";
pub const WAIT: Duration = Duration::from_secs(10);

/// A gateway running in this process on a free port.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub state: signalbox::state::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn test_config() -> Config {
    let mut config = Config { listen: "127.0.0.1:0".into(), ..Config::default() };
    config.auth.jwt_secret = Some(SECRET.into());
    config.auth.api_keys = vec![API_KEY.into()];
    config
}

impl TestGateway {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        adjust(&mut config);
        let gateway = Gateway::build(config).await.expect("valid test config");
        let state = gateway.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        // `serve` marks itself started synchronously after spawning the accept loop.
        for _ in 0..100 {
            if state.is_accepting() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self { addr, state, stop: Some(stop), task: Some(task) }
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    /// A token for `sub` with extra claims merged in; expires in an hour by default.
    pub fn token(&self, sub: &str, extra: Value) -> String {
        token_with(SECRET, sub, extra)
    }

    pub async fn connect(&self, sub: &str, extra: Value) -> Client {
        let token = self.token(sub, extra);
        Client::connect(&self.ws_url(&format!("?token={token}"))).await
    }

    pub async fn connect_dev(&self, query: &str) -> Client {
        Client::connect(&self.ws_url(query)).await
    }

    pub fn http(&self) -> Api {
        Api { base: format!("http://{}", self.addr), client: reqwest::Client::new(), key: Some(API_KEY.into()) }
    }

    /// Starts shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("shutdown within 30 s").unwrap()
    }

    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub fn token_with(secret: &str, sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + 3600});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        c.extend(e);
    }
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// A backend HTTP client.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub key: Option<String>,
}

impl Api {
    pub fn without_key(mut self) -> Self {
        self.key = None;
        self
    }

    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self.auth(self.client.post(format!("{}{}", self.base, path)).json(&body)).send().await.unwrap();
        Self::decode(resp).await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let req =
            self.client.post(format!("{}{}", self.base, path)).header("content-type", "application/json").body(body);
        Self::decode(self.auth(req).send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        Self::decode(self.auth(self.client.get(format!("{}{}", self.base, path))).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        Self::decode(self.auth(self.client.delete(format!("{}{}", self.base, path))).send().await.unwrap()).await
    }

    pub async fn publish(&self, topic: &str, event: Value) -> u64 {
        let (status, body) = self.post("/api/publish", json!({"topic": topic, "event": event})).await;
        assert_eq!(status, 200, "{body}");
        body["offset"].as_u64().unwrap()
    }

    async fn decode(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A real WebSocket client.
pub struct Client {
    pub ws: Socket,
    pub connected: Value,
}

impl Client {
    /// Connects and reads the `connected` frame.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut client = Self { ws, connected: Value::Null };
        client.connected = client.recv().await;
        assert_eq!(client.connected["type"], "connected", "{}", client.connected);
        client
    }

    pub async fn connect_with_headers(url: &str, headers: &[(&'static str, &str)]) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut client = Self { ws, connected: Value::Null };
        client.connected = client.recv().await;
        Ok(client)
    }

    pub fn id(&self) -> String {
        self.connected["connectionId"].as_str().unwrap().to_owned()
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, t: impl Into<String>) {
        self.ws.send(Message::text(t.into())).await.unwrap();
    }

    /// The next JSON text frame (pings are answered by tungstenite and skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame within 10 s");
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `v` and returns the next frame.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    pub async fn subscribe(&mut self, topic: &str) -> Value {
        let reply = self.request(json!({"action": "subscribe", "topic": topic})).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// Reads until the server's close frame; returns its code (text frames before it are
    /// collected into `before`).
    pub async fn expect_close(&mut self, before: &mut Vec<Value>) -> u16 {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("close within 10 s");
            match msg {
                Some(Ok(Message::Text(t))) => before.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    // Keep reading, as a well-behaved client does: this sends the close
                    // reply and waits for the server to end the connection.
                    let _ = tokio::time::timeout(WAIT, async { while self.ws.next().await.is_some() {} }).await;
                    return frame.map_or(u16::from(CloseCode::Status), |f| u16::from(f.code));
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => {}
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

/// Tries an upgrade that should be refused; returns the HTTP status and JSON body.
pub async fn refused_upgrade(url: &str, headers: &[(&'static str, &str)]) -> (u16, Value) {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            (status, body)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade to {url} was accepted"),
    }
}

/// Metric value from a Prometheus text body (first sample line starting with `series`).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// Polls `check` every 10 ms until it returns `Some`, for at most `limit`; fails naming
/// `what` otherwise.
pub async fn until<T, F: Future<Output = Option<T>>>(limit: Duration, what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

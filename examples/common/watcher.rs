//! A WebSocket client that follows one job and resumes after a reconnect.
//!
//! It keeps the `epoch` from the `subscribed` reply and the offset of the last event it
//! handled; after a reconnect it subscribes with `since: {offset, epoch}` and checks that the
//! offsets go on with no gap and no duplicate.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::{Server, TERMINAL_TYPES, describe, is_terminal, job_topic, out};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the `connected` frame and for a close handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect attempts in a row, without a new event in between, before giving up.
const MAX_RECONNECTS: u32 = 8;

/// What the watcher needs to run.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The Signalbox server.
    pub server: Server,
    /// The client JWT; `None` against a `--dev` server.
    pub token: Option<String>,
    /// The job id; the watcher subscribes with the alias `job_id` (→ `job:<job>`).
    pub job: String,
    /// Close the connection after this many events on it, to show resume (0 = never).
    pub drop_after: u64,
    /// How many times to do that.
    pub drops: u32,
    /// How long to stay offline after a deliberate drop.
    pub offline: Duration,
    /// Subscribe with a filter on `type` (the terminal types are added); empty = every event.
    pub only: Vec<String>,
    /// Give up when no frame arrives for this long (`Duration::ZERO` = wait forever).
    pub idle_timeout: Duration,
    /// Prefix of each printed line.
    pub label: String,
}

/// How a watch ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The event that ended the job (`job_complete`, `job_failed` or `job_cancelled`).
    pub final_event: Value,
    /// True when the job was already over at subscribe time and the retained state said so.
    pub already_finished: bool,
    /// Events received in sequence (not counting retained state).
    pub events: u64,
    /// Of those, events replayed from history after a resume.
    pub replayed: u64,
    /// Successful resumes (`recovered: true`).
    pub resumes: u32,
}

/// The position of the watcher in the topic's offset sequence.
#[derive(Debug, Clone)]
struct Position {
    epoch: String,
    /// The last offset handled; the next event must have `last + 1` (or more, with filters).
    last: u64,
}

enum SessionEnd {
    /// The job is over.
    Done { event: Value, from_retained: bool },
    /// We close the connection on purpose, to show resume.
    Drop,
    /// The connection was lost; reconnect and resume.
    Lost(String),
}

/// The `filters` of the subscription for `--only`: the given types plus the terminal ones,
/// so the watcher still learns when the job ends.
pub fn type_filter(only: &[String]) -> Value {
    let mut types: Vec<&str> = only.iter().map(String::as_str).collect();
    for terminal in TERMINAL_TYPES {
        if !types.contains(&terminal) {
            types.push(terminal);
        }
    }
    json!({"type": {"in": types}})
}

/// Follows the job until it ends. `ready` fires once the first `subscribed` reply arrived.
pub async fn run(config: &WatchConfig, ready: Option<oneshot::Sender<()>>) -> Result<Outcome> {
    let mut watcher = Watcher {
        config,
        topic: job_topic(&config.job),
        position: None,
        ready,
        events: 0,
        replayed: 0,
        resumes: 0,
        drops_left: config.drops,
    };
    watcher.run().await
}

struct Watcher<'a> {
    config: &'a WatchConfig,
    topic: String,
    position: Option<Position>,
    ready: Option<oneshot::Sender<()>>,
    events: u64,
    replayed: u64,
    resumes: u32,
    drops_left: u32,
}

impl Watcher<'_> {
    fn say(&self, line: impl std::fmt::Display) {
        out(format!("[{}] {line}", self.config.label));
    }

    async fn run(&mut self) -> Result<Outcome> {
        let mut attempt: u32 = 0;
        let mut failures: u32 = 0;
        loop {
            attempt += 1;
            if failures > 0 {
                let backoff = Duration::from_millis(250 << failures.min(5));
                tokio::time::sleep(backoff).await;
            }
            let mut ws = match self.connect().await {
                Ok(ws) => ws,
                // Nothing to resume yet: a server that is not there is a plain error.
                Err(error) if attempt == 1 => return Err(error),
                Err(error) => {
                    failures += 1;
                    if failures > MAX_RECONNECTS {
                        return Err(error.context(format!("gave up after {MAX_RECONNECTS} reconnect attempts")));
                    }
                    self.say(format!("reconnect failed ({error:#}); retrying"));
                    continue;
                }
            };
            let events_before = self.events;
            let end = self.session(&mut ws, &format!("watch-{attempt}")).await;
            if self.events > events_before {
                failures = 0;
            }
            match end? {
                SessionEnd::Done { event, from_retained } => {
                    close(&mut ws, "job over").await;
                    return Ok(Outcome {
                        final_event: event,
                        already_finished: from_retained,
                        events: self.events,
                        replayed: self.replayed,
                        resumes: self.resumes,
                    });
                }
                SessionEnd::Drop => {
                    self.drops_left -= 1;
                    let (last, epoch) = self.position.as_ref().map(|p| (p.last, p.epoch.clone())).unwrap_or_default();
                    self.say(format!(
                        "-- closing the connection on purpose (last offset {last}, epoch {epoch}); \
                         offline for {} ms while the job goes on",
                        self.config.offline.as_millis()
                    ));
                    close(&mut ws, "job_watcher: simulated network drop").await;
                    tokio::time::sleep(self.config.offline).await;
                }
                SessionEnd::Lost(reason) => {
                    failures += 1;
                    if failures > MAX_RECONNECTS {
                        bail!("the connection keeps failing ({reason}); gave up after {MAX_RECONNECTS} reconnects");
                    }
                    self.say(format!("-- {reason}; reconnecting"));
                }
            }
        }
    }

    /// Opens the WebSocket and waits for the `connected` frame.
    async fn connect(&self) -> Result<Ws> {
        let url = self.config.server.ws_url();
        let mut request = url.as_str().into_client_request().with_context(|| format!("bad WebSocket URL {url}"))?;
        if let Some(token) = &self.config.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a valid header")?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let mut ws = match connect_async(request).await {
            Ok((ws, _response)) => ws,
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let hint = if response.status() == 401 {
                    " (pass a client token with --token / SIGNALBOX_TOKEN, or run the server with --dev)"
                } else {
                    ""
                };
                bail!("{url} refused the WebSocket with {}: {}{hint}", response.status(), body.trim());
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("cannot connect to {url}; start a server with `cargo run --release -- serve --dev`")
                });
            }
        };
        loop {
            let frame = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next())
                .await
                .context("no `connected` frame from the server")?
                .context("the connection closed before the `connected` frame")?
                .context("reading the `connected` frame")?;
            if let Message::Text(text) = frame {
                let value: Value = serde_json::from_str(&text).context("the server sent a frame that is not JSON")?;
                if value.get("type").and_then(Value::as_str) == Some("connected") {
                    let id = value.get("connectionId").and_then(Value::as_str).unwrap_or("?");
                    self.say(format!("connected as {id}"));
                    return Ok(ws);
                }
            }
        }
    }

    /// Reads the next frame as JSON; `Err(reason)` when the connection is gone.
    async fn next_json(&self, ws: &mut Ws) -> Result<std::result::Result<Value, String>> {
        loop {
            let next = if self.config.idle_timeout.is_zero() {
                ws.next().await
            } else {
                tokio::time::timeout(self.config.idle_timeout, ws.next()).await.with_context(|| {
                    format!("no frame from the server for {:?}; is the job still running?", self.config.idle_timeout)
                })?
            };
            match next {
                None => return Ok(Err("the connection ended".to_owned())),
                Some(Err(error)) => return Ok(Err(format!("connection error: {error}"))),
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .map(Ok)
                        .with_context(|| format!("the server sent a frame that is not JSON: {text}"));
                }
                Some(Ok(Message::Close(frame))) => {
                    let Some(frame) = frame else { return Ok(Err("the server closed the connection".to_owned())) };
                    if u16::from(frame.code) == 4001 {
                        bail!("the server closed the connection: token expired (4001); get a fresh token");
                    }
                    return Ok(Err(format!("the server closed the connection with {} ({})", frame.code, frame.reason)));
                }
                // Pings are answered by tungstenite itself; binary frames are not part of the protocol.
                Some(Ok(_)) => {}
            }
        }
    }

    /// Subscribes (resuming if there is a position) and handles frames until the job ends,
    /// a deliberate drop is due, or the connection is lost.
    async fn session(&mut self, ws: &mut Ws, request_id: &str) -> Result<SessionEnd> {
        let mut subscribe = json!({"action": "subscribe", "job_id": self.config.job, "requestId": request_id});
        let resuming = self.position.clone();
        if let Some(position) = &resuming {
            subscribe["since"] = json!({"offset": position.last, "epoch": position.epoch});
        }
        if !self.config.only.is_empty() {
            subscribe["filters"] = type_filter(&self.config.only);
        }
        self.say(format!("-> {subscribe}"));
        if let Err(error) = ws.send(Message::text(subscribe.to_string())).await {
            return Ok(SessionEnd::Lost(format!("sending subscribe failed: {error}")));
        }

        // The topic's last offset when this subscription was made: events up to it are replayed.
        let mut joined_at: Option<u64> = None;
        let mut on_this_connection: u64 = 0;
        loop {
            let frame = match self.next_json(ws).await? {
                Ok(frame) => frame,
                Err(reason) => return Ok(SessionEnd::Lost(reason)),
            };
            let kind = frame.get("type").and_then(Value::as_str).unwrap_or_default();
            if frame.get("requestId").and_then(Value::as_str) == Some(request_id) {
                match kind {
                    "subscribed" => {
                        self.say(format!("<- {frame}"));
                        joined_at = Some(self.on_subscribed(ws, &frame, resuming.as_ref()).await?);
                    }
                    "error" => {
                        let code = frame.get("code").and_then(Value::as_str).unwrap_or("?");
                        let message = frame.get("message").and_then(Value::as_str).unwrap_or_default();
                        bail!("subscribing to {} failed: {code}: {message}", self.topic);
                    }
                    _ => {}
                }
                continue;
            }
            // Events of other topics (the automatic `user:<sub>` and `global`) and other replies.
            if frame.get("topic").and_then(Value::as_str) != Some(self.topic.as_str()) {
                continue;
            }
            let (Some(joined_at), Some(offset)) = (joined_at, frame.get("offset").and_then(Value::as_u64)) else {
                continue;
            };
            if frame.get("retained").and_then(Value::as_bool) == Some(true) {
                self.say(format!("{} {} (retained state)", self.topic, describe(&frame)));
                if is_terminal(kind) {
                    return Ok(SessionEnd::Done { event: frame, from_retained: true });
                }
                continue;
            }
            self.accept(offset)?;
            on_this_connection += 1;
            self.events += 1;
            let replayed = resuming.is_some() && offset <= joined_at;
            if replayed {
                self.replayed += 1;
            }
            self.say(format!("{} {}{}", self.topic, describe(&frame), if replayed { "  (replayed)" } else { "" }));
            if is_terminal(kind) {
                return Ok(SessionEnd::Done { event: frame, from_retained: false });
            }
            if self.drops_left > 0 && self.config.drop_after > 0 && on_this_connection >= self.config.drop_after {
                return Ok(SessionEnd::Drop);
            }
        }
    }

    /// Checks a `subscribed` reply and records the position; returns its `offset`.
    async fn on_subscribed(&mut self, ws: &mut Ws, reply: &Value, resuming: Option<&Position>) -> Result<u64> {
        let offset = reply.get("offset").and_then(Value::as_u64).context("`subscribed` without an offset")?;
        let epoch = reply.get("epoch").and_then(Value::as_str).context("`subscribed` without an epoch")?.to_owned();
        let recovered = reply.get("recovered").and_then(Value::as_bool).unwrap_or(false);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        let Some(position) = resuming else {
            // A fresh subscription: the live events start after `offset`.
            self.position = Some(Position { epoch, last: offset });
            return Ok(offset);
        };
        if !recovered {
            // The retained state follows a `recovered: false`; show it before failing.
            if let Some(state) = self.retained_state(ws).await {
                self.say(format!("{} {} (retained state)", self.topic, describe(&state)));
            }
            let why = if epoch != position.epoch {
                format!(
                    "the epoch changed from {} to {epoch} (the server lost its history, e.g. a restart)",
                    position.epoch
                )
            } else {
                format!("events after offset {} are no longer in the topic's history", position.last)
            };
            bail!(
                "resume failed: the server answered recovered: false for {} since offset {}: {why}. \
                 A real client resynchronises now from the retained state (above) or its own backend. \
                 If this server predates history (SPEC §5), it cannot resume at all.",
                self.topic,
                position.last
            );
        }
        if epoch != position.epoch {
            bail!("the server said recovered: true but changed the epoch from {} to {epoch}", position.epoch);
        }
        self.resumes += 1;
        let missed = offset.saturating_sub(position.last);
        self.say(format!("resumed: recovered: true, {missed} event(s) to replay after offset {}", position.last));
        Ok(offset)
    }

    /// Waits briefly for the retained event that follows a `recovered: false` reply.
    async fn retained_state(&self, ws: &mut Ws) -> Option<Value> {
        let wait = async {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                if frame.get("topic").and_then(Value::as_str) == Some(self.topic.as_str())
                    && frame.get("retained").and_then(Value::as_bool) == Some(true)
                {
                    return Some(frame);
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(1), wait).await.ok().flatten()
    }

    /// Checks that `offset` continues the sequence: no duplicate, and no gap (without filters,
    /// every offset must come; with filters, only increasing ones).
    fn accept(&mut self, offset: u64) -> Result<()> {
        let filtered = !self.config.only.is_empty();
        let topic = &self.topic;
        let position = self.position.as_mut().context("an event arrived before the `subscribed` reply")?;
        let last = position.last;
        if offset <= last {
            bail!("duplicate on {topic}: offset {offset} arrived after offset {last} had already been handled");
        }
        if !filtered && offset != last + 1 {
            let missing = if offset - 1 == last + 1 {
                format!("event {} never arrived", last + 1)
            } else {
                format!("events {}..={} never arrived", last + 1, offset - 1)
            };
            bail!("gap on {topic}: expected offset {}, got {offset}; {missing}", last + 1);
        }
        position.last = offset;
        Ok(())
    }
}

/// Closes the WebSocket politely and waits (briefly) for the server's close reply.
async fn close(ws: &mut Ws, reason: &str) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: reason.to_owned().into() };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, drain).await;
}

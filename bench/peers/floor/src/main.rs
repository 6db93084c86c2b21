//! `floor`: the physical floor of this machine for the protocol subset `signalbox-bench`
//! uses, to compare Signalbox's latency and CPU per delivery against. It does the least a
//! correct server can do: parse what it must, encode each event once, and give each socket
//! one write (one `writev`) with every frame queued for it.
//!
//! ```text
//! floor [--port N] [--host H]      (PORT / HOST in the environment too; port 0: any free port)
//! ```
//!
//! Prints `listening on <host>:<port>` once it accepts connections; exits on SIGTERM/SIGINT.
//! Speaks exactly what `bench/peers/node-ws/server.js` speaks:
//!
//! - WebSocket at `GET /ws` (query ignored, no authentication): on open
//!   `{"type":"connected","connectionId":"conn_<ms>_<rand>"}`; `subscribe` → `subscribed`
//!   with the topic's last offset, `unsubscribe` → `unsubscribed`, `ping` → `pong`
//!   (parameters may stand inside `data`; `requestId` echoed); anything else an error frame.
//!   WebSocket pings are answered with pongs, closes with closes.
//! - HTTP/1.1 keep-alive: `POST /api/publish {"topic":T,"event":{…}}` → `200
//!   {"offset":n,"topic":T}`, and every subscriber of T gets
//!   `{"topic":T,"offset":n,"timestamp":"<RFC 3339 ms>",…event}`, framed once and shared
//!   (`Bytes`) by every subscriber. 400 / 404 / 405 / 413 as node-ws.
//!
//! Deliberately omitted, so that it stays a floor: server heartbeats (no pings every 25 s),
//! slow-consumer eviction (queues are unbounded), authentication, history and resume,
//! retained state, filters, metrics, logging, limits other than the 64 KiB client message
//! and the 1 MiB publish body, chunked request bodies, per-message compression, graceful
//! drain (on a signal it just exits). The topic table is one global mutex.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

const MAX_HEAD: usize = 16 << 10; // request line and headers
const MAX_BODY: usize = 1 << 20; // publish bodies, as node-ws
const MAX_MESSAGE: usize = 64 << 10; // client WebSocket messages, as node-ws
const IOV_MAX: usize = 1024; // iovecs per writev (Linux's UIO_MAXIOV)
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// One WebSocket connection as publishers see it: frames waiting for its single writer.
#[derive(Default)]
struct Peer {
    queue: Mutex<Vec<Bytes>>,
    notify: Notify,
}

impl Peer {
    /// Queues a ready frame; wakes the writer only when the queue was empty (otherwise a
    /// wake is already pending, and this frame goes out in the same write).
    fn push(&self, frame: Bytes) {
        let mut queue = lock(&self.queue);
        queue.push(frame);
        let was_empty = queue.len() == 1;
        drop(queue);
        if was_empty {
            self.notify.notify_one();
        }
    }

    fn push_json(&self, value: &Value) {
        self.push(frame(0x1, value.to_string().as_bytes()));
    }
}

/// A topic: its last offset and its subscribers.
#[derive(Default)]
struct Topic {
    offset: u64,
    subscribers: Vec<Arc<Peer>>,
}

type Topics = Mutex<HashMap<String, Topic>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn option(name: &str, env: &str, fallback: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    let prefixed = format!("--{name}=");
    if let Some(i) = args.iter().position(|a| *a == flag)
        && let Some(value) = args.get(i + 1)
    {
        return value.clone();
    }
    if let Some(value) = args.iter().find_map(|a| a.strip_prefix(&prefixed)) {
        return value.to_owned();
    }
    std::env::var(env).unwrap_or_else(|_| fallback.to_owned())
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let host = option("host", "HOST", "127.0.0.1");
    let port = option("port", "PORT", "0");
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("invalid port: {port}");
        std::process::exit(2);
    };
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?; // Signalbox's backlog
    println!("listening on {}", listener.local_addr()?);

    let topics: &'static Topics = Box::leak(Box::default());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, topics));
                }
                // Out of descriptors, most likely: let some close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// A request's head, parsed.
struct Head {
    len: usize,
    method: String,
    path: String,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    upgrade: bool,
    key: Option<String>,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut head = Head {
        len,
        method: req.method.unwrap_or("").to_owned(),
        path: req.path.unwrap_or("").split('?').next().unwrap_or("").to_owned(),
        content_length: None,
        chunked: false,
        close: req.version == Some(0),
        upgrade: false,
        key: None,
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().map_err(|_| ())?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close |= value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = value.eq_ignore_ascii_case("websocket");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            head.key = Some(value.to_owned());
        }
    }
    Ok(Some(head))
}

/// Reads more into `buf`; `Ok(false)` at end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.reserve(1024);
    Ok(stream.read_buf(buf).await? > 0)
}

/// An HTTP connection: publishes on keep-alive, or one upgrade to a WebSocket.
async fn connection(mut stream: TcpStream, topics: &'static Topics) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) if buf.len() < MAX_HEAD => {
                    if !fill(&mut stream, &mut buf).await? {
                        return Ok(());
                    }
                }
                _ => return respond(&mut stream, 400, "", &error_body("BAD_REQUEST", "bad request"), true).await,
            }
        };
        if head.upgrade {
            let Some(key) = head.key.filter(|_| head.path == "/ws" && head.method == "GET") else {
                return respond(&mut stream, 404, "", &error_body("NOT_FOUND", "no such route"), true).await;
            };
            let accept = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(format!("{key}{WS_GUID}")));
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            );
            stream.write_all(reply.as_bytes()).await?;
            buf.drain(..head.len);
            return websocket(stream, buf, topics).await;
        }
        let length = head.content_length.unwrap_or(0);
        if head.chunked {
            let body = error_body("LENGTH_REQUIRED", "send a content-length");
            return respond(&mut stream, 411, "", &body, true).await;
        }
        if length > MAX_BODY {
            let body = error_body("PAYLOAD_TOO_LARGE", &format!("body over {MAX_BODY} bytes"));
            return respond(&mut stream, 413, "", &body, true).await;
        }
        let end = head.len + length;
        while buf.len() < end {
            if !fill(&mut stream, &mut buf).await? {
                return Ok(());
            }
        }
        let (status, extra, body) = if head.path != "/api/publish" {
            (404, "", error_body("NOT_FOUND", "no such route"))
        } else if head.method != "POST" {
            (405, "allow: POST\r\n", error_body("METHOD_NOT_ALLOWED", "use POST"))
        } else {
            let (status, body) = publish(topics, &buf[head.len..end]);
            (status, "", body)
        };
        buf.drain(..end);
        let close = head.close;
        respond(&mut stream, status, extra, &body, close).await?;
        if close {
            return Ok(());
        }
    }
}

async fn respond(stream: &mut TcpStream, status: u16, extra: &str, body: &[u8], close: bool) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        _ => "Payload Too Large",
    };
    let connection = if close { "connection: close\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}{connection}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    json!({ "error": { "code": code, "message": message } }).to_string().into_bytes()
}

fn valid_topic(topic: Option<&Value>) -> Option<&str> {
    topic.and_then(Value::as_str).filter(|t| !t.is_empty() && t.chars().count() <= 256)
}

/// `POST /api/publish`: assigns the offset, frames the event once, queues it to every
/// subscriber; returns the status and the answer's body.
fn publish(topics: &Topics, body: &[u8]) -> (u16, Vec<u8>) {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (400, error_body("VALIDATION_ERROR", "malformed JSON"));
    };
    let Some(topic) = valid_topic(request.get("topic")) else {
        return (400, error_body("VALIDATION_ERROR", "missing or bad topic"));
    };
    let Some(event) = request.get("event").and_then(Value::as_object) else {
        return (400, error_body("VALIDATION_ERROR", "event must be an object"));
    };
    // Everything but the offset is encoded before taking the lock.
    let topic_json = Value::from(topic).to_string();
    let head = format!("{{\"topic\":{topic_json},\"offset\":");
    let tail = format!(",\"timestamp\":\"{}\"{}}}", timestamp(SystemTime::now()), event_fields(event));
    let offset = {
        let mut table = lock(topics);
        let entry = table.entry(topic.to_owned()).or_default();
        entry.offset += 1;
        if !entry.subscribers.is_empty() {
            let payload = format!("{head}{}{tail}", entry.offset);
            let shared = frame(0x1, payload.as_bytes());
            for peer in &entry.subscribers {
                peer.push(shared.clone());
            }
        }
        entry.offset
    };
    (200, format!("{{\"offset\":{offset},\"topic\":{topic_json}}}").into_bytes())
}

/// `,"k":v` for each of the event's fields, except those the frame sets itself.
fn event_fields(event: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (key, value) in event {
        if !matches!(key.as_str(), "topic" | "offset" | "timestamp") {
            out.push(',');
            out.push_str(&Value::from(key.as_str()).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
    }
    out
}

/// RFC 3339 UTC with milliseconds, as JavaScript's `toISOString()`.
fn timestamp(now: SystemTime) -> String {
    let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A server frame (FIN set, unmasked).
fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 10);
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// One parsed client frame: FIN, opcode, where its (unmasked) payload lies in the buffer.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: std::ops::Range<usize>,
}

/// Parses and unmasks the frame at the start of `buf`; `Ok(None)`: incomplete; `Err`:
/// the close code to fail the connection with.
fn parse_frame(buf: &mut [u8]) -> Result<Option<Frame>, u16> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        return Err(1002); // reserved bits, or an unmasked client frame
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= 0x8 && (!fin || len > 125) {
        return Err(1002);
    }
    if len > MAX_MESSAGE as u64 {
        return Err(1009);
    }
    let Some(mask) = buf.get(at..at + 4).and_then(|m| <[u8; 4]>::try_from(m).ok()) else { return Ok(None) };
    at += 4;
    let end = at + len as usize;
    let Some(payload) = buf.get_mut(at..end) else { return Ok(None) };
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Some(Frame { fin, opcode, payload: at..end }))
}

/// A WebSocket connection: one task reads client frames and writes everything queued for
/// the socket, all of it in one write each time it wakes.
async fn websocket(mut stream: TcpStream, mut buf: Vec<u8>, topics: &'static Topics) -> io::Result<()> {
    let peer = Arc::new(Peer::default());
    let mut held: Vec<String> = Vec::new();
    let mut message: Option<Vec<u8>> = None; // a fragmented message in progress
    let mut spare = Vec::new();
    peer.push_json(&json!({ "type": "connected", "connectionId": connection_id() }));
    let notified = peer.notify.notified();
    tokio::pin!(notified);
    let result = loop {
        let mut used = 0;
        let mut closing = false;
        while !closing {
            let f = match parse_frame(&mut buf[used..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(code) => {
                    peer.push(frame(0x8, &code.to_be_bytes()));
                    closing = true;
                    break;
                }
            };
            let payload = &buf[used + f.payload.start..used + f.payload.end];
            used += f.payload.end;
            match (f.opcode, message.as_mut()) {
                (0x8, _) => {
                    peer.push(frame(0x8, payload.get(..2).unwrap_or_default()));
                    closing = true;
                }
                (0x9, _) => peer.push(frame(0xA, payload)),
                (0xA, _) => {}
                (0x0, Some(data)) if data.len() + payload.len() <= MAX_MESSAGE => {
                    data.extend_from_slice(payload);
                    if f.fin
                        && let Some(data) = message.take()
                    {
                        on_message(topics, &peer, &mut held, &data);
                    }
                }
                (0x0, Some(_)) => {
                    peer.push(frame(0x8, &1009u16.to_be_bytes()));
                    closing = true;
                }
                (0x1 | 0x2, None) if f.fin => on_message(topics, &peer, &mut held, payload),
                (0x1 | 0x2, None) => message = Some(payload.to_vec()),
                _ => {
                    peer.push(frame(0x8, &1002u16.to_be_bytes()));
                    closing = true;
                }
            }
        }
        buf.drain(..used);
        if buf.is_empty() {
            buf = Vec::new(); // an idle connection holds no read buffer
        }
        if let Err(e) = flush(&mut stream, &peer, &mut spare).await {
            break Err(e);
        }
        if closing {
            break stream.shutdown().await;
        }
        tokio::select! {
            // poll_read_ready uses the stream's one reader waker: nothing to undo when the
            // other branch wins, as there is with `readable()`.
            ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                buf.reserve(1024);
                match ready.and_then(|()| stream.try_read_buf(&mut buf)) {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(e),
                }
            }
            () = &mut notified => notified.set(peer.notify.notified()),
        }
    };
    let mut table = lock(topics);
    for topic in &held {
        if let Some(entry) = table.get_mut(topic) {
            entry.subscribers.retain(|p| !Arc::ptr_eq(p, &peer));
        }
    }
    result
}

/// Writes every queued frame: one `write` for one frame, one `writev` for several.
async fn flush(stream: &mut TcpStream, peer: &Peer, frames: &mut Vec<Bytes>) -> io::Result<()> {
    std::mem::swap(frames, &mut *lock(&peer.queue));
    let result = match frames.as_slice() {
        [] => Ok(()),
        [one] => stream.write_all(one).await,
        many => write_vectored_all(stream, many).await,
    };
    frames.clear();
    result
}

async fn write_vectored_all(stream: &mut TcpStream, frames: &[Bytes]) -> io::Result<()> {
    for chunk in frames.chunks(IOV_MAX) {
        let mut slices: Vec<IoSlice<'_>> = chunk.iter().map(|f| IoSlice::new(f)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = stream.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    Ok(())
}

fn connection_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    // splitmix64 of a counter mixed with the clock: unique and random-looking enough.
    let mut x = NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ ms.rotate_left(32);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let rand: String =
        (0..8).map(|i| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[(x >> (i * 6)) as usize % 36])).collect();
    format!("conn_{ms}_{rand}")
}

fn error_frame(code: &str, message: &str, request_id: Option<&str>) -> Value {
    let mut frame = json!({ "type": "error", "code": code, "message": message });
    if let (Some(id), Some(map)) = (request_id, frame.as_object_mut()) {
        map.insert("requestId".into(), id.into());
    }
    frame
}

/// One client message: subscribe, unsubscribe, ping, or an error frame.
fn on_message(topics: &Topics, peer: &Arc<Peer>, held: &mut Vec<String>, data: &[u8]) {
    let Ok(msg) = serde_json::from_slice::<Value>(data) else {
        return peer.push_json(&error_frame("VALIDATION_ERROR", "malformed JSON", None));
    };
    let Some(obj) = msg.as_object() else {
        return peer.push_json(&error_frame("VALIDATION_ERROR", "a message is a JSON object", None));
    };
    let request_id = obj.get("requestId").and_then(Value::as_str);
    let reply = |mut frame: Value| {
        if let (Some(id), Some(map)) = (request_id, frame.as_object_mut()) {
            map.insert("requestId".into(), id.into());
        }
        peer.push_json(&frame);
    };
    let action = obj.get("action");
    let topic = || valid_topic(obj.get("topic").or_else(|| obj.get("data").and_then(|d| d.get("topic"))));
    match action.and_then(Value::as_str) {
        Some(action @ ("subscribe" | "unsubscribe")) => {
            let Some(topic) = topic() else {
                return peer.push_json(&error_frame("VALIDATION_ERROR", "missing or bad topic", request_id));
            };
            let mut table = lock(topics);
            if action == "subscribe" {
                let entry = table.entry(topic.to_owned()).or_default();
                if !held.iter().any(|t| t == topic) {
                    entry.subscribers.push(peer.clone());
                    held.push(topic.to_owned());
                }
                // Queued under the lock: no event after this offset can overtake the reply.
                reply(json!({ "type": "subscribed", "topic": topic, "offset": entry.offset }));
            } else {
                if let Some(entry) = table.get_mut(topic) {
                    entry.subscribers.retain(|p| !Arc::ptr_eq(p, peer));
                }
                held.retain(|t| t != topic);
                drop(table);
                reply(json!({ "type": "unsubscribed", "topic": topic }));
            }
        }
        Some("ping") => reply(json!({ "type": "pong" })),
        _ => {
            let shown = match action {
                None => "undefined".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            peer.push_json(&error_frame("UNKNOWN_ACTION", &format!("unknown action: {shown}"), request_id));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // 2024-02-29 12:34:56.789
        assert_eq!(timestamp(t), "2024-02-29T12:34:56.789Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn client_frames_are_unmasked_and_bounded() {
        let mask = [1, 2, 3, 4];
        let mut buf = vec![0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let f = parse_frame(&mut buf).unwrap().unwrap();
        assert_eq!((&buf[f.payload], f.fin, f.opcode), (&b"hi"[..], true, 1));
        assert!(parse_frame(&mut [0x81, 0x85, mask[0]]).unwrap().is_none());
        assert_eq!(parse_frame(&mut [0x81, 0x02, b'h', b'i']).err(), Some(1002));
        assert_eq!(parse_frame(&mut [0x82, 0xFF, 0, 0, 0, 0, 0, 2, 0, 0]).err(), Some(1009));
    }

    #[test]
    fn publishes_count_offsets_and_reach_subscribers() {
        let topics = Topics::default();
        let peer = Arc::new(Peer::default());
        let mut held = Vec::new();
        on_message(&topics, &peer, &mut held, br#"{"action":"subscribe","data":{"topic":"t"},"requestId":"r"}"#);
        let (status, body) = publish(&topics, br#"{"topic":"t","event":{"sent":5,"offset":9}}"#);
        assert_eq!((status, body), (200, br#"{"offset":1,"topic":"t"}"#.to_vec()));
        let queue = lock(&peer.queue);
        assert_eq!(&queue[0][2..], br#"{"offset":0,"requestId":"r","topic":"t","type":"subscribed"}"#);
        let event = std::str::from_utf8(&queue[1][2..]).unwrap();
        assert!(event.starts_with(r#"{"topic":"t","offset":1,"timestamp":""#) && event.ends_with(r#"Z","sent":5}"#));
        assert_eq!(publish(&topics, b"{").0, 400);
    }
}

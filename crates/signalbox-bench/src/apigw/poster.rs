//! The posting side of `apigw-post`: one closed-loop client on one keep-alive HTTP/1.1
//! connection, sending `POST /@connections/{id}` one request after another until the run
//! ends.
//!
//! Owns the request bodies (sequence number, target receiver, send time, padding), the
//! HTTP latency and the outcome of every request. It never retries a request and never
//! pipelines: one request in flight per client, as a backend's SDK call waits for its
//! answer. A broken or timed-out connection is counted and replaced by a new one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::receiver::Clock;
use super::sign::Auth;
use crate::client::latency_histogram;

/// What every client of a run shares.
pub struct PostPlan {
    /// Where the requests go.
    pub server: SocketAddr,
    /// The request path of each receiver, by index.
    pub paths: Vec<String>,
    /// How requests are authenticated.
    pub auth: Auth,
    /// Bytes of each body (padded up to this).
    pub body_size: usize,
    /// No request is started at or after this many ns since the epoch.
    pub end_ns: u64,
    /// A request unanswered for this long counts as a timeout.
    pub timeout: Duration,
}

/// What one client did.
#[derive(Debug)]
pub struct PosterTally {
    /// Sequence numbers answered 200 (warm-up included).
    pub ok_seqs: Vec<u64>,
    /// Requests started in the measured window, whatever their outcome.
    pub window_requests: u64,
    /// Of those, answered 200.
    pub window_ok: u64,
    /// HTTP latency of the window's 200s (ns): from building the request (signing
    /// included) to the end of the response.
    pub latency: Histogram<u64>,
    /// Failures over the whole run: `"<status> <x-amzn-ErrorType>"`, `timeout`,
    /// `connection error`, `connect error`, `signing error`.
    pub errors: BTreeMap<String, u64>,
}

impl PosterTally {
    /// Nothing done yet.
    pub fn new() -> Self {
        Self {
            ok_seqs: Vec::new(),
            window_requests: 0,
            window_ok: 0,
            latency: latency_histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }
}

/// The JSON body of request `seq` to receiver `to`, sent at `sent`: padded with `x` up to
/// `size` bytes when the fields alone are shorter.
pub fn body(seq: u64, to: usize, sent: u64, size: usize) -> Bytes {
    let head = format!(r#"{{"seq":{seq},"to":{to},"sent":{sent}"#);
    // `,"pad":""}` is 10 bytes.
    let pad = size.saturating_sub(head.len() + 10);
    let mut body = String::with_capacity(head.len() + 10 + pad);
    body.push_str(&head);
    if pad > 0 {
        body.push_str(r#","pad":""#);
        body.extend(std::iter::repeat_n('x', pad));
        body.push('"');
    }
    body.push('}');
    Bytes::from(body)
}

async fn open(server: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(server).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Posts until the plan's end; sequence numbers come from `next_seq`.
pub async fn post_loop(plan: Arc<PostPlan>, clock: Arc<Clock>, next_seq: Arc<AtomicU64>) -> PosterTally {
    let mut tally = PosterTally::new();
    let host = plan.server.to_string();
    let receivers = plan.paths.len().max(1);
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    while clock.now_ns() < plan.end_ns {
        let mut connection = match sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => match open(plan.server).await {
                Ok(s) => s,
                Err(_) => {
                    tally.error("connect error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let seq = next_seq.fetch_add(1, Ordering::Relaxed);
        let to = (seq % receivers as u64) as usize;
        let sent = clock.now_ns();
        let in_window = clock.in_window(sent);
        if in_window {
            tally.window_requests += 1;
        }
        let payload = body(seq, to, sent, plan.body_size);
        let path = plan.paths.get(to).map_or("/@connections/none", String::as_str);
        let request = Request::post(path)
            .header(HOST, &host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(payload.clone()));
        let mut request = match request {
            Ok(r) => r,
            Err(_) => {
                tally.error("signing error");
                continue;
            }
        };
        if plan.auth.apply(&mut request, &payload, SystemTime::now()).is_err() {
            tally.error("signing error");
            continue;
        }
        let exchange = async {
            connection.ready().await?;
            let response = connection.send_request(request).await?;
            let status = response.status();
            let error_type =
                response.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).map(str::to_owned);
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, error_type))
        };
        match tokio::time::timeout(plan.timeout, exchange).await {
            Ok(Ok((status, _))) if status == hyper::StatusCode::OK => {
                let elapsed = clock.now_ns().saturating_sub(sent).max(1);
                tally.ok_seqs.push(seq);
                if in_window {
                    tally.window_ok += 1;
                    let _ = tally.latency.record(elapsed);
                }
                sender = Some(connection);
            }
            Ok(Ok((status, error_type))) => {
                tally.error(format!("{} {}", status.as_u16(), error_type.as_deref().unwrap_or("-")));
                sender = Some(connection);
            }
            Ok(Err(_)) => tally.error("connection error"),
            Err(_) => tally.error("timeout"),
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_padded_to_size_and_parse() {
        for size in [0, 40, 100, 1000] {
            let b = body(123_456, 42, 9_876_543_210, size);
            assert_eq!(b.len(), size.max(b.len()), "size {size}: {}", String::from_utf8_lossy(&b));
            if size >= 100 {
                assert_eq!(b.len(), size);
            }
            let parsed: super::super::receiver::PostBody = serde_json::from_slice(&b).unwrap();
            assert_eq!((parsed.seq, parsed.to, parsed.sent), (123_456, 42, 9_876_543_210));
        }
    }
}

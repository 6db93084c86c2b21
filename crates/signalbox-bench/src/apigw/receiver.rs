//! The receiving side of `apigw-post`: plain WebSocket clients at `/ws` that learn their
//! `connectionId` from the `connected` frame, then read every frame the posts produce.
//!
//! Owns the receivers' connections, the parsing of the posted bodies (`{"seq","to","sent"}`)
//! and the end-to-end latency (post sent → frame read). It never sends anything after the
//! upgrade (no subscribe, no action: a post reaches a connection by its id alone) and never
//! decides what counts as lost; it reports the sequence numbers it read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};
use tokio_util::sync::CancellationToken;

use crate::client::latency_histogram;

type Socket = WebSocketStream<TcpStream>;

/// The body every `apigw-post` request carries: a sequence number unique in the run, the
/// receiver it is meant for, and when it was sent (ns since the run's epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PostBody {
    /// Unique per request of the run.
    pub seq: u64,
    /// Index of the receiver it was posted to.
    pub to: u32,
    /// ns since the run's epoch when the request was built.
    pub sent: u64,
}

/// Counters every receiver and client shares.
pub struct Clock {
    /// Time zero of the run: `sent` stamps are ns since this instant.
    pub epoch: Instant,
    /// Frames carrying a [`PostBody`] read by all receivers.
    pub received: AtomicU64,
    /// Latency is recorded for requests sent in [start, end) ns.
    pub window: (u64, u64),
}

impl Clock {
    /// ns since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether a request sent at `sent` ns falls in the measured window.
    pub fn in_window(&self, sent: u64) -> bool {
        (self.window.0..self.window.1).contains(&sent)
    }
}

/// What one receiver read.
#[derive(Debug)]
pub struct ReceiverTally {
    /// Sequence numbers read, in arrival order.
    pub seqs: Vec<u64>,
    /// End-to-end latency of the posts sent in the window (ns).
    pub latency: Histogram<u64>,
    /// Frames meant for another receiver (the `to` field names another index).
    pub misdelivered: u64,
    /// Frames that were not a posted body (other than the `connected` frame).
    pub other_frames: u64,
    /// Why the connection ended before the run did (e.g. a 4008 slow-consumer close).
    pub ended_early: Option<String>,
}

/// Opens a receiver at `ws://{server}/ws` (with `token`); returns the socket and the
/// `connectionId` from the `connected` frame.
pub async fn connect(server: SocketAddr, token: Option<&str>) -> Result<(Socket, String), String> {
    let url = match token {
        Some(token) => format!("ws://{server}/ws?token={token}"),
        None => format!("ws://{server}/ws"),
    };
    let stream = TcpStream::connect(server).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut ws, _) = client_async(url, stream).await.map_err(|e| e.to_string())?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| "no `connected` frame within 10 s".to_owned())?;
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if value.get("type").and_then(serde_json::Value::as_str) != Some("connected") {
                    continue;
                }
                let id = value.get("connectionId").and_then(serde_json::Value::as_str);
                return id.map(|id| (ws, id.to_owned())).ok_or_else(|| format!("no connectionId in {text}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before the `connected` frame".into()),
        }
    }
}

/// Reads frames until `stop` fires or the connection ends.
pub async fn receive(mut ws: Socket, index: u32, clock: Arc<Clock>, stop: CancellationToken) -> ReceiverTally {
    let mut tally = ReceiverTally {
        seqs: Vec::new(),
        latency: latency_histogram(),
        misdelivered: 0,
        other_frames: 0,
        ended_early: None,
    };
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = ws.next() => frame,
        };
        let parsed = match &frame {
            Some(Ok(Message::Text(text))) => serde_json::from_slice::<PostBody>(text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => serde_json::from_slice::<PostBody>(bytes),
            Some(Ok(Message::Close(close))) => {
                tally.ended_early =
                    Some(close.as_ref().map_or_else(|| "closed".to_owned(), |c| format!("closed {}", c.code)));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tally.ended_early = Some(e.to_string());
                break;
            }
            None => {
                tally.ended_early = Some("connection ended".into());
                break;
            }
        };
        let now = clock.now_ns();
        match parsed {
            Ok(body) => {
                clock.received.fetch_add(1, Ordering::Relaxed);
                tally.seqs.push(body.seq);
                if body.to != index {
                    tally.misdelivered += 1;
                }
                if clock.in_window(body.sent) {
                    let _ = tally.latency.record(now.saturating_sub(body.sent).max(1));
                }
            }
            Err(_) => tally.other_frames += 1,
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_padded_body_still_parses() {
        let body = br#"{"seq":7,"to":3,"sent":123,"pad":"xxxx"}"#;
        let parsed: PostBody = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed, PostBody { seq: 7, to: 3, sent: 123 });
    }

    #[test]
    fn the_window_is_half_open() {
        let clock = Clock { epoch: Instant::now(), received: AtomicU64::new(0), window: (10, 20) };
        assert!(!clock.in_window(9) && clock.in_window(10) && clock.in_window(19) && !clock.in_window(20));
    }
}

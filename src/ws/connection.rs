//! One connection's socket I/O: a reader and a writer running concurrently in one task.
//!
//! The writer drains every frame ready in the queue, feeds them to the socket and flushes
//! once, so frames queued together leave in one write. It also sends heartbeat pings.
//! On close it sends what was already queued, then the close frame; the reader then waits
//! (bounded) for the client's close reply before the socket is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep, timeout};

use super::close::close_code;
use super::session::Session;
use crate::hub::{CloseReason, ConnectionHandle, OutboundFrame, OutboundReceiver};
use crate::state::AppState;

const MAX_BATCH: usize = 256;
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Milliseconds since the connection opened when the client was last heard from.
struct LastHeard {
    opened: Instant,
    millis: AtomicU64,
}

impl LastHeard {
    fn touch(&self) {
        self.millis.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since(&self, at: Instant) -> bool {
        let at = at.saturating_duration_since(self.opened).as_millis() as u64;
        self.millis.load(Ordering::Relaxed) >= at
    }
}

/// Runs the connection until it closes.
pub async fn run(
    state: AppState,
    socket: WebSocket,
    conn: Arc<ConnectionHandle>,
    queue: OutboundReceiver,
    session: Session,
) {
    let (sink, stream) = socket.split();
    let heard = LastHeard { opened: Instant::now(), millis: AtomicU64::new(0) };
    let close_timeout = state.config.websocket.close_timeout;
    let write = async {
        // A writer blocked on a socket the client no longer reads never sees the close;
        // once closing, it gets `close_timeout` to finish, then the socket is dropped.
        tokio::select! {
            () = write_loop(&state, sink, &conn, queue, &heard) => {}
            () = async { conn.closing().await; sleep(close_timeout).await } => {
                tracing::debug!(connectionId = %conn.id, "writer still blocked after the close timeout; dropping the socket");
            }
        }
    };
    tokio::join!(read_loop(stream, &conn, session, &heard, close_timeout), write);
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    conn: &ConnectionHandle,
    mut session: Session,
    heard: &LastHeard,
    close_timeout: Duration,
) {
    let expiry = sleep(session.time_to_expiry().unwrap_or(FAR_FUTURE));
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            () = conn.closing() => break,
            () = &mut expiry => {
                tracing::info!(connectionId = %conn.id, userId = %conn.user, "token expired; closing with 4001");
                conn.close(CloseReason::TokenExpired);
                break;
            }
            frame = stream.next() => {
                heard.touch();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        session.on_text(text.as_str()).await;
                        // `refresh` may have moved the expiry.
                        let left = session.time_to_expiry().unwrap_or(FAR_FUTURE);
                        expiry.as_mut().reset(Instant::now() + left);
                    }
                    Some(Ok(Message::Binary(_))) => session.on_binary(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => {
                        conn.close(CloseReason::ClientGone);
                        return;
                    }
                    Some(Err(e)) => {
                        let reason = if is_capacity_error(&e) { CloseReason::MessageTooBig } else { CloseReason::ClientGone };
                        tracing::debug!(connectionId = %conn.id, error = %e, "read failed");
                        conn.close(reason);
                        if reason == CloseReason::ClientGone {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }
    if close_code(conn.close_reason()).is_some() {
        // Wait for the client's close reply (or the socket's end), bounded.
        let _ = timeout(close_timeout, async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

fn is_capacity_error(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Message too big")
}

async fn write_loop(
    state: &AppState,
    mut sink: SplitSink<WebSocket, Message>,
    conn: &ConnectionHandle,
    mut queue: OutboundReceiver,
    heard: &LastHeard,
) {
    let ws = &state.config.websocket;
    let mut batch: Vec<OutboundFrame> = Vec::new();
    let mut ping = tokio::time::interval_at(Instant::now() + ws.ping_interval, ws.ping_interval);
    let mut ping_sent: Option<Instant> = None;
    let pong_deadline = sleep(FAR_FUTURE);
    tokio::pin!(pong_deadline);
    loop {
        tokio::select! {
            biased;
            () = conn.closing() => break,
            n = queue.recv_batch(&mut batch, MAX_BATCH) => {
                if n == 0 || write_batch(state, &mut sink, conn, &mut batch).await.is_err() {
                    conn.close(CloseReason::ClientGone);
                    break;
                }
            }
            _ = ping.tick() => {
                if ping_sent.is_none() {
                    let now = Instant::now();
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        conn.close(CloseReason::ClientGone);
                        break;
                    }
                    ping_sent = Some(now);
                    pong_deadline.as_mut().reset(now + ws.pong_timeout);
                }
            }
            () = &mut pong_deadline, if ping_sent.is_some() => {
                if ping_sent.is_some_and(|sent| heard.since(sent)) {
                    ping_sent = None;
                    pong_deadline.as_mut().reset(Instant::now() + FAR_FUTURE);
                } else {
                    tracing::info!(connectionId = %conn.id, userId = %conn.user, "no pong within the timeout; dropping the connection");
                    conn.close(CloseReason::HeartbeatTimeout);
                    break;
                }
            }
        }
    }
    finish(state, sink, conn, queue, batch).await;
}

/// Sends what is already queued, then the close frame for the connection's close reason.
async fn finish(
    state: &AppState,
    mut sink: SplitSink<WebSocket, Message>,
    conn: &ConnectionHandle,
    mut queue: OutboundReceiver,
    mut batch: Vec<OutboundFrame>,
) {
    let reason = conn.close_reason();
    let Some((code, text)) = close_code(reason) else {
        if reason == CloseReason::ClientGone {
            // Flush tungstenite's reply to the client's close frame, if any.
            let _ = timeout(state.config.websocket.close_timeout, sink.close()).await;
        }
        return;
    };
    let _ = timeout(state.config.websocket.close_timeout, async {
        while let Some(frame) = queue.try_recv() {
            batch.push(frame);
            if batch.len() >= MAX_BATCH && write_batch(state, &mut sink, conn, &mut batch).await.is_err() {
                return;
            }
        }
        if write_batch(state, &mut sink, conn, &mut batch).await.is_err() {
            return;
        }
        let frame = CloseFrame { code, reason: text.into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
    })
    .await;
}

async fn write_batch(
    state: &AppState,
    sink: &mut SplitSink<WebSocket, Message>,
    conn: &ConnectionHandle,
    batch: &mut Vec<OutboundFrame>,
) -> Result<(), axum::Error> {
    if batch.is_empty() {
        return Ok(());
    }
    // Publish times are kept in the batch until the flush, so latency is measured to
    // "written to the socket" without a second buffer.
    for frame in batch.iter() {
        conn.mark_written(frame.text.len());
        sink.feed(Message::Text(frame.text.clone())).await?;
    }
    sink.flush().await?;
    let now = std::time::Instant::now();
    let mut events = 0u64;
    for at in batch.drain(..).filter_map(|f| f.published_at) {
        events += 1;
        state.metrics.delivery_latency.record(now.saturating_duration_since(at).as_secs_f64());
    }
    if events > 0 {
        state.metrics.deliveries.increment(events);
    }
    Ok(())
}

//! One connection's socket I/O: the reader runs in the connection's task, the writer in
//! a task of its own.
//!
//! Separate tasks keep each wake-up cheap: a delivery wakes only the writer, which never
//! polls the socket's read side, and a client message wakes only the reader. The writer
//! takes every frame queued so far in one swap, feeds them to the socket and flushes
//! once, so frames queued together leave in one write. On close it sends what was already
//! queued, then the close frame; the reader waits (bounded) for the client's close reply.
//! Heartbeat pings and token expiry are driven by the liveness sweep (`ws::liveness`), so
//! a connection carries no timers of its own.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;

use super::close::close_code;
use super::session::Session;
use crate::hub::{CloseReason, ConnectionHandle, SharedFrame};
use crate::state::AppState;

/// The connection's write half.
pub type Sink = SplitSink<WebSocket, Message>;
/// The connection's read half.
pub type Stream = SplitStream<WebSocket>;

/// Runs the connection until it closes and both halves are done.
pub async fn run(state: AppState, sink: Sink, stream: Stream, conn: Arc<ConnectionHandle>, session: Box<Session>) {
    let close_timeout = state.config.websocket.close_timeout;
    let mut writer = tokio::spawn(write_loop(state, sink, conn.clone()));
    read_loop(stream, &conn, session, close_timeout).await;
    // A writer blocked on a socket the client no longer reads never finishes; once closing
    // it gets `close_timeout`, then it is dropped with the socket.
    if timeout(close_timeout, &mut writer).await.is_err() {
        tracing::debug!(connectionId = %conn.id, "writer still blocked after the close timeout; dropping the socket");
        writer.abort();
    }
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    conn: &ConnectionHandle,
    mut session: Box<Session>,
    close_timeout: Duration,
) {
    loop {
        tokio::select! {
            biased;
            () = conn.closing() => break,
            frame = stream.next() => {
                conn.heard();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        // Boxed: request handling is large and rare, and an idle connection
                        // should not carry its state inline.
                        Box::pin(session.on_text(text.as_str())).await;
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

async fn write_loop(state: AppState, mut sink: Sink, conn: Arc<ConnectionHandle>) {
    let mut batch = VecDeque::new();
    loop {
        let work = conn.next_outbound(&mut batch).await;
        if work.closing {
            // Boxed: runs once, and would otherwise size the writer for its whole life.
            Box::pin(finish(&state, sink, &conn, batch)).await;
            return;
        }
        if write_batch(&state, &mut sink, &mut batch, work.ping).await.is_err() {
            conn.close(CloseReason::ClientGone);
            return;
        }
    }
}

/// Sends the last queued frames, then the close frame for the connection's close reason.
async fn finish(state: &AppState, mut sink: Sink, conn: &ConnectionHandle, mut batch: VecDeque<SharedFrame>) {
    let close_timeout = state.config.websocket.close_timeout;
    let reason = conn.close_reason();
    let Some((code, text)) = close_code(reason) else {
        if reason == CloseReason::ClientGone {
            // Flush tungstenite's reply to the client's close frame, if any.
            let _ = timeout(close_timeout, sink.close()).await;
        }
        return;
    };
    let _ = timeout(close_timeout, async {
        if write_batch(state, &mut sink, &mut batch, false).await.is_ok() {
            let frame = CloseFrame { code, reason: text.into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    })
    .await;
}

async fn write_batch(
    state: &AppState,
    sink: &mut Sink,
    batch: &mut VecDeque<SharedFrame>,
    ping: bool,
) -> Result<(), axum::Error> {
    if batch.is_empty() && !ping {
        return Ok(());
    }
    if ping {
        sink.feed(Message::Ping(Default::default())).await?;
    }
    // Publish times stay in the batch until the flush, so latency is measured to
    // "written to the socket".
    for frame in batch.iter() {
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

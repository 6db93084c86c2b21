//! The deadline clock of one connection that has not upgraded: which phase it is in
//! (waiting for a request head, serving a request, idle between requests), since when,
//! and whether the listener asked for it to be closed (evicted).
//!
//! Shared by three parties in the connection's own task: the I/O wrapper (a first byte
//! after an idle spell starts a new head), the service wrapper (a request begins and is
//! answered) and the guard that enforces the deadline. It must never decide a deadline's
//! length (that is [`super::HttpLimits`]) and never touch the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Where a connection is in its HTTP life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for (the rest of) a request line and headers.
    Head = 0,
    /// A request is being read or answered.
    Busy = 1,
    /// Keep-alive: the last answer is out, no new request has started.
    Idle = 2,
    /// Upgraded or closed: no deadline any more.
    Done = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Head,
            1 => Self::Busy,
            2 => Self::Idle,
            _ => Self::Done,
        }
    }
}

/// One connection's phase, the time it entered it, and the eviction flag.
pub struct Clock {
    phase: AtomicU8,
    /// Milliseconds since `origin` when the phase began.
    since_ms: AtomicU64,
    origin: Instant,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

impl Clock {
    /// A clock for a connection accepted now: waiting for its first request head.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            origin: Instant::now(),
            evicted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// When the current phase began.
    pub fn since(&self) -> Instant {
        self.origin + Duration::from_millis(self.since_ms.load(Ordering::Acquire))
    }

    fn enter(&self, phase: Phase) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(elapsed, Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// A request's head arrived: it is being served.
    pub fn request_started(&self) {
        self.enter(Phase::Busy);
    }

    /// The answer is handed to hyper: the connection idles until the next request.
    pub fn request_answered(&self) {
        if self.phase() == Phase::Busy {
            self.enter(Phase::Idle);
        }
    }

    /// Bytes arrived: after an idle spell they are the start of the next request head,
    /// which must then arrive within the handshake timeout (not the longer idle one).
    fn bytes_arrived(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    /// The connection upgraded or closed.
    pub fn finish(&self) {
        self.phase.store(Phase::Done as u8, Ordering::Release);
    }

    /// Asks the connection's guard to close it, if it has sat in its current phase since
    /// before `cutoff`; false if it is serving a request, done, younger, or evicted already.
    pub fn evict(&self, cutoff: Instant) -> bool {
        if matches!(self.phase(), Phase::Busy | Phase::Done)
            || self.since() > cutoff
            || self.evicted.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        self.waker.wake();
        true
    }

    /// Whether [`Self::evict`] was called; registers `cx` to be woken when it is.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.evicted.load(Ordering::Acquire)
    }
}

/// The accepted TCP stream, telling its clock when bytes arrive. Once the clock is done
/// (the connection upgraded), the stream lets go of it at the next read, so an open
/// WebSocket carries one pointer more, not the clock.
pub struct WatchedStream {
    stream: TcpStream,
    clock: Option<Arc<Clock>>,
}

impl WatchedStream {
    /// Wraps `stream`, reporting arriving bytes to `clock`.
    pub fn new(stream: TcpStream, clock: Arc<Clock>) -> Self {
        Self { stream, clock: Some(clock) }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(clock) = &this.clock {
            match clock.phase() {
                Phase::Done => this.clock = None,
                _ if buf.filled().len() > before => clock.bytes_arrived(),
                _ => {}
            }
        }
        result
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_move_with_requests_and_bytes() {
        let clock = Clock::new();
        assert_eq!(clock.phase(), Phase::Head);
        clock.request_started();
        assert_eq!(clock.phase(), Phase::Busy);
        let later = Instant::now() + Duration::from_secs(1);
        assert!(!clock.evict(later), "a connection serving a request is never evicted");
        clock.request_answered();
        assert_eq!(clock.phase(), Phase::Idle);
        clock.bytes_arrived();
        assert_eq!(clock.phase(), Phase::Head);
        assert!(!clock.evict(Instant::now() - Duration::from_secs(1)), "too young to be evicted");
        assert!(clock.evict(later));
        assert!(!clock.evict(later), "evicted once");
        clock.finish();
        assert_eq!(clock.phase(), Phase::Done);
    }
}

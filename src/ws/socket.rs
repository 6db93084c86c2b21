//! A WebSocket driven by hand: tungstenite's protocol state next to hyper's upgraded
//! connection, polled with whatever waker the caller passes.
//!
//! Owns the socket of one connection and the bridge between tungstenite's blocking-style
//! `Read`/`Write` calls and tokio's polled I/O: each call borrows the caller's `Context`
//! for its duration, so the socket stores no waker of its own (tokio-tungstenite keeps two
//! reference-counted waker proxies per socket for that). `WouldBlock` means "registered
//! with the context's waker, try again when woken". It must never wait, spawn, or decide
//! anything about the protocol: that is `connection`'s job.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error, Message};

/// One connection's WebSocket: protocol state and the upgraded connection.
pub struct Socket {
    protocol: WebSocketContext,
    io: TokioIo<Upgraded>,
}

/// The upgraded connection seen through `Read`/`Write`, for one call, with the waker to
/// register when it would block.
struct Io<'a, 'b> {
    io: &'a mut TokioIo<Upgraded>,
    cx: &'a mut Context<'b>,
}

fn would_block<T>(poll: Poll<io::Result<T>>) -> io::Result<T> {
    match poll {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl Read for Io<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        would_block(Pin::new(&mut *self.io).poll_read(self.cx, &mut buf))?;
        Ok(buf.filled().len())
    }
}

impl Write for Io<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        would_block(Pin::new(&mut *self.io).poll_write(self.cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        would_block(Pin::new(&mut *self.io).poll_flush(self.cx))
    }
}

/// `Pending` for tungstenite's "would block" (the waker is registered by then).
fn pending_on_block<T>(result: Result<T, Error>) -> Poll<Result<T, Error>> {
    match result {
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// What [`Socket::write`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Buffered or sent.
    Done,
    /// Buffered, but the socket would block: flush before writing more, so the write
    /// buffer stays within `write_buffer_size` plus one frame.
    Blocked,
}

impl Socket {
    /// The server side of an upgraded connection.
    pub fn new(io: TokioIo<Upgraded>, config: WebSocketConfig) -> Self {
        Self { protocol: WebSocketContext::new(Role::Server, Some(config)), io }
    }

    /// Reads the next message; `Pending` when none is complete yet. Also sends replies
    /// tungstenite owes the peer (pongs, the close reply). `Err(ConnectionClosed)` once
    /// the close handshake is over.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        pending_on_block(self.protocol.read(&mut Io { io: &mut self.io, cx }))
    }

    /// Hands a message to tungstenite, which buffers it and writes once the buffer passes
    /// `write_buffer_size`.
    pub fn write(&mut self, cx: &mut Context<'_>, message: Message) -> Result<Written, Error> {
        match self.protocol.write(&mut Io { io: &mut self.io, cx }, message) {
            Ok(()) => Ok(Written::Done),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(Written::Blocked),
            Err(e) => Err(e),
        }
    }

    /// Writes out everything buffered. `Err(ConnectionClosed)` counts as done: the close
    /// handshake finished and there is nothing left to send.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match pending_on_block(self.protocol.flush(&mut Io { io: &mut self.io, cx })) {
            Poll::Ready(Err(Error::ConnectionClosed)) => Poll::Ready(Ok(())),
            other => other,
        }
    }

    /// Queues the close frame (once; later calls only flush) and writes it out.
    pub fn poll_close(&mut self, cx: &mut Context<'_>, frame: Option<CloseFrame>) -> Poll<Result<(), Error>> {
        match pending_on_block(self.protocol.close(&mut Io { io: &mut self.io, cx }, frame)) {
            Poll::Ready(Err(Error::ConnectionClosed)) => Poll::Ready(Ok(())),
            other => other,
        }
    }

    /// Whether data frames may still be written: not once a close frame was sent or
    /// received (tungstenite refuses them then).
    pub fn can_write(&self) -> bool {
        self.protocol.can_write()
    }

    /// Shuts the write side of the TCP connection (sends FIN), after the close frame.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Reads raw bytes past tungstenite and throws them away, for when its frame reader
    /// cannot be trusted any more (after a read error). Ready with the bytes discarded by
    /// this call, `0` at the end of the stream or on an error.
    ///
    /// Why read at all: closing a socket whose receive buffer still holds data makes the
    /// kernel send RST instead of FIN, and a RST can make the client lose the close frame
    /// that was just sent (RFC 6455 §7.1.1 asks the server to close cleanly).
    pub fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        let mut scratch = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(buf.filled().len()),
            Poll::Ready(Err(_)) => Poll::Ready(0),
            Poll::Pending => Poll::Pending,
        }
    }
}

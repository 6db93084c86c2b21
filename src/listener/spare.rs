//! Running out of file descriptors without going deaf: a descriptor held in reserve, the
//! classification of `accept` errors, and a log line at most once per interval.
//!
//! At the process's file limit `accept` fails with `EMFILE` and the pending connection
//! stays in the kernel's queue, so a naive loop spins and `/health` never answers. The
//! accept loop uses this module to give the reserve back for one accept (a priority
//! connection that may only reach the ops routes) and to log without flooding. It must
//! never accept or serve a connection itself.

use std::fs::File;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// What a failed `accept` means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The peer gave up before we took it: try the next one at once.
    ConnectionGone,
    /// Out of file descriptors (`EMFILE`, `ENFILE`): free one, then back off.
    FileLimit,
    /// Anything else (e.g. out of memory for socket buffers): back off.
    Other,
}

impl AcceptFailure {
    /// Classifies an `accept` error.
    pub fn of(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused => {
                Self::ConnectionGone
            }
            _ if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => Self::FileLimit,
            _ => Self::Other,
        }
    }

    /// The label of `signalbox_accept_errors_total`, if this failure is counted.
    pub fn metric_kind(self) -> Option<&'static str> {
        match self {
            Self::ConnectionGone => None,
            Self::FileLimit => Some("file_limit"),
            Self::Other => Some("other"),
        }
    }
}

/// One file descriptor kept open so that it can be closed when the process hits its
/// file limit, making room for exactly one priority connection.
pub struct SpareDescriptor {
    file: Option<File>,
}

impl SpareDescriptor {
    /// Opens the reserve (`/dev/null`); without one, the loop still survives the file
    /// limit by evicting idle connections and backing off.
    pub fn open() -> Self {
        Self { file: File::open("/dev/null").ok() }
    }

    /// Whether the reserve is held.
    pub fn is_held(&self) -> bool {
        self.file.is_some()
    }

    /// Closes the reserve so the next `accept` can succeed. True if there was one.
    pub fn release(&mut self) -> bool {
        self.file.take().is_some()
    }

    /// Takes the reserve again if it was released; fails quietly while the process is
    /// still at its limit (tried again later).
    pub fn restore(&mut self) {
        if self.file.is_none() {
            self.file = File::open("/dev/null").ok();
        }
    }
}

/// A warning at most once per interval, with how many were left out in between.
pub struct Throttled {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last: None, suppressed: 0 }
    }

    /// Logs `error` unless a line went out less than an interval ago.
    pub fn warn(&mut self, failure: AcceptFailure, error: &io::Error) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.interval) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            error = %error,
            kind = ?failure,
            suppressed = self.suppressed,
            "accept failed; backing off and serving the connections already open"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Exponential backoff for a failing `accept`: 5 ms doubling to 200 ms, reset by a success.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_millis(200);

    /// A backoff at its first step.
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay to wait now; the next one is twice as long (up to the cap).
    pub fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Back to the first step after a successful accept.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(AcceptFailure::of(&emfile), AcceptFailure::FileLimit);
        assert_eq!(AcceptFailure::of(&io::Error::from_raw_os_error(libc::ENFILE)), AcceptFailure::FileLimit);
        assert_eq!(
            AcceptFailure::of(&io::Error::from(io::ErrorKind::ConnectionAborted)),
            AcceptFailure::ConnectionGone
        );
        assert_eq!(AcceptFailure::of(&io::Error::from_raw_os_error(libc::ENOBUFS)), AcceptFailure::Other);
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut backoff = Backoff::new();
        let steps: Vec<_> = (0..8).map(|_| backoff.step().as_millis()).collect();
        assert_eq!(steps, [5, 10, 20, 40, 80, 160, 200, 200]);
        backoff.reset();
        assert_eq!(backoff.step().as_millis(), 5);
    }

    #[test]
    fn the_spare_is_released_and_restored() {
        let mut spare = SpareDescriptor::open();
        assert!(spare.is_held());
        assert!(spare.release());
        assert!(!spare.release());
        spare.restore();
        assert!(spare.is_held());
    }
}

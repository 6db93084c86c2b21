//! Connections accepted and not upgraded: how many, from where, and which is the oldest
//! that may be closed to make room.
//!
//! Touched once when a connection is accepted and once when it upgrades or closes, never
//! on the delivery path, so one mutex is enough. It must never close a socket itself: it
//! asks the connection's guard through its [`Clock`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use super::clock::Clock;
use crate::metrics::Metrics;

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PendingRefusal {
    /// Its IP already holds `http.max_pending_connections_per_ip`.
    #[error("too many unfinished connections from this address; finish or close them and retry")]
    PerIp,
    /// `http.max_pending_connections` are held and every one is serving a request.
    #[error("server is at its pending-connection limit; retry shortly")]
    Full,
}

/// A connection younger than this in its phase is never evicted: a real client's request
/// head arrives within a round trip of its accept, while a slowloris's sockets grow old.
/// Without it, a connection accepted a moment ago would be the first to go.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Book {
    /// By admission order: the first entry not serving a request is the one to evict.
    by_age: BTreeMap<u64, Arc<Clock>>,
    per_ip: HashMap<IpAddr, usize>,
    next: u64,
}

/// The registry of pending connections.
pub struct PendingConnections {
    book: Mutex<Book>,
    max_total: usize,
    max_per_ip: usize,
    metrics: Metrics,
}

/// A pending connection's place in the registry; leaves it when dropped.
pub struct PendingSlot {
    registry: Arc<PendingConnections>,
    key: u64,
    ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut book = self.registry.book.lock();
        book.by_age.remove(&self.key);
        if let Some(n) = book.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                book.per_ip.remove(&self.ip);
            }
        }
        self.registry.metrics.pending_connections.set(book.by_age.len() as f64);
    }
}

impl PendingConnections {
    /// An empty registry with the given bounds.
    pub fn new(max_total: usize, max_per_ip: usize, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self { book: Mutex::new(Book::default()), max_total, max_per_ip, metrics })
    }

    /// Admits a connection from `ip` with `clock`. When the registry is full, the oldest
    /// connection with no request in progress is evicted to make room (a slow or idle
    /// client must not keep a new one out).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, clock: Arc<Clock>) -> Result<PendingSlot, PendingRefusal> {
        let mut book = self.book.lock();
        if book.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(PendingRefusal::PerIp);
        }
        // Evicted connections stay in the book until their guard has closed them: count
        // only those still alive against the bound.
        if book.by_age.len() >= self.max_total && !Self::evict_oldest_in(&book, &self.metrics) {
            return Err(PendingRefusal::Full);
        }
        let key = book.next;
        book.next += 1;
        book.by_age.insert(key, clock);
        *book.per_ip.entry(ip).or_insert(0) += 1;
        self.metrics.pending_connections.set(book.by_age.len() as f64);
        Ok(PendingSlot { registry: self.clone(), key, ip })
    }

    /// Evicts the oldest connection that is not serving a request (to free a file
    /// descriptor); false if there is none.
    pub fn evict_oldest(&self) -> bool {
        Self::evict_oldest_in(&self.book.lock(), &self.metrics)
    }

    fn evict_oldest_in(book: &Book, metrics: &Metrics) -> bool {
        let cutoff = Instant::now().checked_sub(EVICTABLE_AFTER);
        let evicted = cutoff.is_some_and(|cutoff| book.by_age.values().any(|clock| clock.evict(cutoff)));
        if evicted {
            metrics.shed("evicted");
        }
        evicted
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.book.lock().by_age.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[tokio::test]
    async fn per_ip_bound_refuses_and_frees_on_drop() {
        let registry = PendingConnections::new(10, 2, Metrics::new());
        let a = registry.admit(ip(1), Clock::new()).unwrap();
        let _b = registry.admit(ip(1), Clock::new()).unwrap();
        assert_eq!(registry.admit(ip(1), Clock::new()).err(), Some(PendingRefusal::PerIp));
        assert!(registry.admit(ip(2), Clock::new()).is_ok(), "another address is not affected");
        drop(a);
        assert!(registry.admit(ip(1), Clock::new()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn full_evicts_the_oldest_idle_never_a_busy_one() {
        let registry = PendingConnections::new(2, 10, Metrics::new());
        let (busy, idle) = (Clock::new(), Clock::new());
        busy.request_started();
        let _busy = registry.admit(ip(1), busy.clone()).unwrap();
        let _idle = registry.admit(ip(1), idle.clone()).unwrap();
        assert_eq!(registry.admit(ip(1), Clock::new()).err(), Some(PendingRefusal::Full), "none old enough yet");
        tokio::time::advance(EVICTABLE_AFTER).await;
        let _new = registry.admit(ip(1), Clock::new()).unwrap();
        assert!(!busy.poll_evicted(&mut std::task::Context::from_waker(std::task::Waker::noop())));
        assert!(idle.poll_evicted(&mut std::task::Context::from_waker(std::task::Waker::noop())));
        // Everything left is busy or already evicted: nothing more to evict.
        let registry = PendingConnections::new(1, 10, Metrics::new());
        let only = Clock::new();
        only.request_started();
        let _only = registry.admit(ip(1), only).unwrap();
        tokio::time::advance(EVICTABLE_AFTER).await;
        assert_eq!(registry.admit(ip(1), Clock::new()).err(), Some(PendingRefusal::Full));
    }
}

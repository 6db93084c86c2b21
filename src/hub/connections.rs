//! Open connections: lookup by id, listing, and admission limits (total and per IP).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use super::ConnectionHandle;
use crate::domain::{ConnectionId, Topic};

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The server holds `max_connections`.
    #[error("server is at its connection limit")]
    ServerFull,
    /// This client IP holds `max_connections_per_ip`.
    #[error("too many connections from this address")]
    TooManyFromIp,
}

/// A reserved connection slot; released when dropped.
pub struct Admission {
    registry: Arc<ConnectionRegistry>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.total.fetch_sub(1, Ordering::AcqRel);
        self.registry.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// All open connections.
pub struct ConnectionRegistry {
    by_id: DashMap<ConnectionId, Arc<ConnectionHandle>>,
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    max_total: usize,
    max_per_ip: usize,
}

impl ConnectionRegistry {
    /// An empty registry with the given limits.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self { by_id: DashMap::new(), per_ip: DashMap::new(), total: AtomicUsize::new(0), max_total, max_per_ip }
    }

    /// Reserves a slot for a connection from `ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, AdmissionError> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmissionError::ServerFull);
        }
        {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(n);
                self.total.fetch_sub(1, Ordering::AcqRel);
                self.per_ip.remove_if(&ip, |_, n| *n == 0);
                return Err(AdmissionError::TooManyFromIp);
            }
            *n += 1;
        }
        Ok(Admission { registry: self.clone(), ip })
    }

    /// Registers an open connection.
    pub fn insert(&self, handle: Arc<ConnectionHandle>) {
        self.by_id.insert(handle.id.clone(), handle);
    }

    /// Forgets a closed connection.
    pub fn remove(&self, id: &ConnectionId) {
        self.by_id.remove(id);
    }

    /// Looks a connection up by id.
    pub fn get(&self, id: &ConnectionId) -> Option<Arc<ConnectionHandle>> {
        self.by_id.get(id).map(|e| e.value().clone())
    }

    /// Open connections (not those already closing), optionally only a user's and/or only
    /// those holding a topic.
    pub fn list(&self, user: Option<&str>, topic: Option<&Topic>) -> Vec<Arc<ConnectionHandle>> {
        let mut out: Vec<_> = self
            .by_id
            .iter()
            .map(|e| e.value().clone())
            .filter(|c| !c.is_closing())
            .filter(|c| user.is_none_or(|u| c.user.as_str() == u))
            .filter(|c| topic.is_none_or(|t| c.holds(t)))
            .collect();
        out.sort_by_key(|c| c.connected_at);
        out
    }

    /// Calls `f` for every registered connection. Holds one shard's read lock at a time,
    /// so `f` must be quick and must not touch the registry.
    pub fn for_each(&self, mut f: impl FnMut(&ConnectionHandle)) {
        for entry in self.by_id.iter() {
            f(entry.value());
        }
    }

    /// Starts closing every registered connection for `reason`.
    pub fn close_all(&self, reason: super::CloseReason) {
        self.for_each(|c| c.close(reason));
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

//! The global memory bound of history: an account of stored bytes and a queue of
//! eviction tickets, one per stored event, in the order events were stored.
//!
//! When the account exceeds the bound, tickets are taken from the front and their events
//! (the oldest across all topics) leave history. A ticket whose event already left (by
//! size or TTL) is stale and costs only its own bytes, which the account includes, so
//! stale tickets are bounded by the same limit; the sweeper also drops them in bulk.
//! The queue's lock is held only to push or pop, never while a stream is locked by the
//! evictor, so it adds no lock-order constraint beyond "stream, then queue".

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::stream::Stream;

/// Bytes one queued ticket costs.
pub const TICKET_COST: usize = std::mem::size_of::<Ticket>();

/// One stored event, by stream and offset.
pub struct Ticket {
    stream: Weak<Mutex<Stream>>,
    offset: u64,
}

/// Byte account and eviction queue.
pub struct Eviction {
    max_bytes: usize,
    bytes: AtomicUsize,
    tickets: Mutex<VecDeque<Ticket>>,
    /// Held by the one thread evicting; others carry on publishing.
    evicting: Mutex<()>,
}

impl Eviction {
    /// An empty account bounded by `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, bytes: AtomicUsize::new(0), tickets: Mutex::new(VecDeque::new()), evicting: Mutex::new(()) }
    }

    /// Bytes currently accounted.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Tickets queued, stale ones included.
    pub fn tickets(&self) -> usize {
        self.tickets.lock().len()
    }

    /// Records a change of stored bytes.
    pub fn account(&self, added: usize, freed: usize) {
        if added >= freed {
            self.bytes.fetch_add(added - freed, Ordering::Relaxed);
        } else {
            self.sub(freed - added);
        }
    }

    /// Queues the ticket of an event just stored and accounts for it (called under the
    /// stream's lock, so a stream's tickets are queued in offset order).
    pub fn push(&self, stream: &Arc<Mutex<Stream>>, offset: u64) {
        self.tickets.lock().push_back(Ticket { stream: Arc::downgrade(stream), offset });
        self.bytes.fetch_add(TICKET_COST, Ordering::Relaxed);
    }

    /// Whether the account is over the bound.
    pub fn over_limit(&self) -> bool {
        self.bytes() > self.max_bytes
    }

    /// Evicts the oldest events until the account is within the bound. Must be called
    /// with no stream locked. Returns the number of events evicted.
    pub fn evict(&self) -> usize {
        let Some(_evicting) = self.evicting.try_lock() else {
            return 0;
        };
        let mut evicted = 0;
        while self.over_limit() {
            // One ticket per lock: the queue is never held while a stream is locked.
            let Some(ticket) = self.tickets.lock().pop_front() else {
                break;
            };
            let mut freed = TICKET_COST;
            if let Some(stream) = ticket.stream.upgrade() {
                let from_history = stream.lock().evict_through(ticket.offset);
                evicted += usize::from(from_history > 0);
                freed += from_history;
            }
            self.sub(freed);
        }
        evicted
    }

    /// Drops stale tickets (their event already left history). Called by the sweeper when
    /// stale tickets outnumber live events; the queue is locked only to take it and to put
    /// the kept tickets back in front of those queued meanwhile.
    pub fn compact(&self) {
        let old = std::mem::take(&mut *self.tickets.lock());
        let before = old.len();
        let kept: VecDeque<Ticket> =
            old.into_iter().filter(|t| t.stream.upgrade().is_some_and(|s| s.lock().holds(t.offset))).collect();
        let dropped = before - kept.len();
        let mut tickets = self.tickets.lock();
        let newer = std::mem::replace(&mut *tickets, kept);
        tickets.extend(newer);
        drop(tickets);
        self.sub(dropped * TICKET_COST);
    }

    fn sub(&self, n: usize) {
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n)));
    }
}

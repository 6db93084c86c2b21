//! One topic's stream in memory: its offset counter, epoch, history and retained state.
//!
//! Pure bookkeeping under the caller's lock: times are milliseconds on the broker's clock,
//! and every change reports the bytes it added or freed so the broker can keep the global
//! account. It never locks, awaits or allocates beyond the events it stores.

use std::collections::VecDeque;

use super::super::{HistoryPolicy, ReadFrom, ReadRequest, StoredEvent, TopicRead};
use crate::codec::FrameText;
use crate::domain::{Epoch, StreamPosition};

/// Bytes one event in history costs beyond its frame text: the history slot, and the
/// shared buffer's header and allocator overhead. Its eviction ticket is accounted apart,
/// since it can outlive the event (see `eviction`).
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<HistoryEntry>() + 48;

/// One event in history. Its offset is implicit: history holds consecutive offsets from
/// `Stream::first_offset`, which saves 8 bytes per event.
pub struct HistoryEntry {
    frame: FrameText,
    stored_ms: u64,
}

/// Retained state: the delivered frame of the last event published with `retain`.
pub struct Retained {
    frame: FrameText,
    set_ms: u64,
}

/// A topic's stream.
pub struct Stream {
    pub(super) epoch: Epoch,
    pub(super) last_offset: u64,
    history: VecDeque<HistoryEntry>,
    /// Offset of the event at the front of `history`.
    first_offset: u64,
    retained: Option<Retained>,
    pub(super) policy: HistoryPolicy,
    /// Set when the sweeper dropped the stream from the broker's map; a publisher or
    /// reader that finds it set looks the topic up again.
    pub(super) removed: bool,
}

impl Stream {
    /// A new stream with a fresh epoch.
    pub fn new(policy: HistoryPolicy) -> Self {
        Self {
            epoch: Epoch::generate(),
            last_offset: 0,
            history: VecDeque::new(),
            first_offset: 1,
            retained: None,
            policy,
            removed: false,
        }
    }

    /// The last assigned position.
    pub fn position(&self) -> StreamPosition {
        StreamPosition { offset: self.last_offset, epoch: self.epoch.clone() }
    }

    /// Assigns the next offset.
    pub fn next_position(&mut self) -> StreamPosition {
        self.last_offset += 1;
        self.position()
    }

    /// Appends the frame of the event at `offset`; returns (bytes added, bytes freed,
    /// whether it was stored, in which case the caller queues its eviction ticket). The oldest events beyond the size limit leave history.
    pub fn append(&mut self, offset: u64, frame: &FrameText, now_ms: u64) -> (usize, usize, bool) {
        let mut freed = self.expire(now_ms);
        if !self.policy.keeps_history() {
            return (0, freed, false);
        }
        if self.history.is_empty() {
            self.first_offset = offset;
        }
        if self.history.len() == self.history.capacity() && self.history.capacity() < self.policy.size {
            // Grow by doubling, but never past the size limit: a full topic's history then
            // has no unused slots (VecDeque alone would round 100 up to 128).
            let target = (self.history.capacity() * 2).max(4).min(self.policy.size);
            self.history.reserve_exact(target - self.history.len());
        }
        self.history.push_back(HistoryEntry { frame: frame.clone(), stored_ms: now_ms });
        while self.history.len() > self.policy.size {
            freed += self.pop_front_bytes();
        }
        (frame.len() + ENTRY_OVERHEAD, freed, true)
    }

    /// Stores `frame` as the retained state; returns (bytes added, bytes freed).
    pub fn retain(&mut self, frame: &FrameText, now_ms: u64) -> (usize, usize) {
        let freed = self.retained.take().map_or(0, |r| retained_bytes(&r));
        let retained = Retained { frame: frame.clone(), set_ms: now_ms };
        let added = retained_bytes(&retained);
        self.retained = Some(retained);
        (added, freed)
    }

    /// Drops expired history and retained state; returns the bytes freed.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let ttl = duration_ms(self.policy.ttl);
        let mut freed = 0;
        while self.history.front().is_some_and(|e| now_ms.saturating_sub(e.stored_ms) >= ttl) {
            freed += self.pop_front_bytes();
        }
        let retained_ttl = duration_ms(self.policy.retained_ttl);
        if self.retained.as_ref().is_some_and(|r| now_ms.saturating_sub(r.set_ms) >= retained_ttl) {
            freed += self.retained.take().map_or(0, |r| retained_bytes(&r));
        }
        freed
    }

    /// Drops history events up to and including `offset` (eviction under the memory
    /// bound); returns the bytes freed.
    pub fn evict_through(&mut self, offset: u64) -> usize {
        let mut freed = 0;
        while !self.history.is_empty() && self.first_offset <= offset {
            freed += self.pop_front_bytes();
        }
        freed
    }

    /// Whether the event at `offset` is still in history.
    pub fn holds(&self, offset: u64) -> bool {
        offset >= self.first_offset && offset - self.first_offset < self.history.len() as u64
    }

    /// Whether nothing but the counter is left (the stream may be forgotten).
    pub fn is_empty(&self) -> bool {
        self.history.is_empty() && self.retained.is_none()
    }

    /// Answers `request` from this stream (expired entries must be dropped first).
    pub fn read(&self, request: &ReadRequest) -> TopicRead {
        let position = self.position();
        let (events, recovered) = match &request.from {
            ReadFrom::Nothing => (Vec::new(), false),
            ReadFrom::After { offset, epoch } => {
                let same_epoch = epoch.as_ref().is_none_or(|e| *e == self.epoch);
                let after = if same_epoch { *offset } else { 0 };
                let in_range = after <= self.last_offset;
                // Recovered when the next event the reader needs is still here (or there is
                // none yet).
                let first_kept = if self.history.is_empty() { self.last_offset + 1 } else { self.first_offset };
                let recovered = same_epoch && in_range && first_kept <= after + 1;
                let events = if in_range && (recovered || request.partial) {
                    self.events_after(after, request.limit)
                } else {
                    Vec::new()
                };
                (events, recovered)
            }
        };
        let retained = if request.retained { self.retained.as_ref().map(|r| r.frame.clone()) } else { None };
        TopicRead { position, events, recovered, retained }
    }

    /// Events in history.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    fn events_after(&self, offset: u64, limit: usize) -> Vec<StoredEvent> {
        // Offsets in history are consecutive, so the first wanted index is arithmetic.
        let skip = offset.saturating_sub(self.first_offset - 1);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        (self.first_offset..)
            .zip(&self.history)
            .skip(skip)
            .take(limit)
            .map(|(offset, e)| StoredEvent { offset, frame: e.frame.clone() })
            .collect()
    }

    fn pop_front_bytes(&mut self) -> usize {
        let Some(entry) = self.history.pop_front() else {
            return 0;
        };
        self.first_offset += 1;
        entry.frame.len() + ENTRY_OVERHEAD
    }
}

fn retained_bytes(retained: &Retained) -> usize {
    retained.frame.len() + 48
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(size: usize, ttl_ms: u64) -> HistoryPolicy {
        HistoryPolicy { size, ttl: Duration::from_millis(ttl_ms), retained_ttl: Duration::from_secs(3600) }
    }

    fn publish(s: &mut Stream, now_ms: u64) -> u64 {
        let position = s.next_position();
        let frame = FrameText::from(format!("{{\"offset\":{}}}", position.offset));
        s.append(position.offset, &frame, now_ms);
        position.offset
    }

    fn after(offset: u64, epoch: Option<Epoch>) -> ReadRequest {
        ReadRequest { from: ReadFrom::After { offset, epoch }, limit: usize::MAX, partial: false, retained: false }
    }

    fn offsets(read: &TopicRead) -> Vec<u64> {
        read.events.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn keeps_the_last_size_events() {
        let mut s = Stream::new(policy(3, 60_000));
        for _ in 0..5 {
            publish(&mut s, 0);
        }
        let epoch = Some(s.epoch.clone());
        assert_eq!(offsets(&s.read(&after(2, epoch.clone()))), vec![3, 4, 5]);
        assert!(s.read(&after(2, epoch.clone())).recovered);
        let lost = s.read(&after(1, epoch.clone()));
        assert!(!lost.recovered, "event 2 was evicted");
        assert!(lost.events.is_empty(), "no partial replay unless asked");
        let partial = s.read(&ReadRequest { partial: true, ..after(1, epoch.clone()) });
        assert_eq!(offsets(&partial), vec![3, 4, 5]);
        assert!(s.read(&after(5, epoch.clone())).recovered, "up to date");
        assert!(!s.read(&after(6, epoch)).recovered, "a future offset is not recoverable");
    }

    #[test]
    fn epochs_must_match() {
        let mut s = Stream::new(policy(10, 60_000));
        publish(&mut s, 0);
        let other = s.read(&after(0, Some(Epoch::new("other"))));
        assert!(!other.recovered);
        assert!(other.events.is_empty());
        assert!(s.read(&after(0, None)).recovered, "no epoch: the current one");
    }

    #[test]
    fn expires_by_ttl() {
        let mut s = Stream::new(policy(10, 1_000));
        publish(&mut s, 0);
        publish(&mut s, 500);
        assert!(s.expire(999) == 0);
        assert!(s.expire(1_000) > 0);
        assert_eq!(offsets(&s.read(&after(0, None))), Vec::<u64>::new());
        assert_eq!(offsets(&s.read(&after(1, None))), vec![2]);
        s.expire(1_500);
        assert!(s.history.is_empty());
        assert!(s.read(&after(2, None)).recovered, "nothing after 2 was ever published");
    }

    #[test]
    fn size_zero_or_ttl_zero_keeps_nothing() {
        for p in [policy(0, 60_000), policy(10, 0)] {
            let mut s = Stream::new(p);
            publish(&mut s, 0);
            assert!(s.is_empty());
            assert!(!s.read(&after(0, None)).recovered);
        }
    }

    #[test]
    fn limit_and_eviction() {
        let mut s = Stream::new(policy(100, 60_000));
        for _ in 0..10 {
            publish(&mut s, 0);
        }
        assert_eq!(offsets(&s.read(&ReadRequest { limit: 3, ..after(4, None) })), vec![5, 6, 7]);
        assert!(s.evict_through(6) > 0);
        assert!(!s.holds(6));
        assert!(s.holds(7));
        assert_eq!(offsets(&s.read(&after(6, None))), vec![7, 8, 9, 10]);
    }

    #[test]
    fn retained_state_expires() {
        let mut s = Stream::new(HistoryPolicy { retained_ttl: Duration::from_secs(1), ..policy(10, 60_000) });
        s.retain(&FrameText::from("{\"type\":\"a\"}"), 0);
        let read = s.read(&ReadRequest { retained: true, ..Default::default() });
        assert_eq!(read.retained.as_deref(), Some("{\"type\":\"a\"}"));
        s.expire(1_000);
        assert!(s.is_empty());
    }
}

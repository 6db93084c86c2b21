//! The order of one watched topic on this node: events reach the fan-out strictly in
//! offset order, each once, whichever way they came (this node's own publish, a pub/sub
//! message, a read of the stream).
//!
//! A [`Sequencer`] knows the last offset handed to the fan-out and its epoch (the
//! baseline, read from Redis once the topic's SUBSCRIBE is confirmed). What arrives ahead
//! of the next expected offset is held until the gap before it is filled, by pub/sub or
//! from the stream; what arrives at or below it is dropped. It only decides: it never
//! awaits, reads Redis or closes a connection (the broker does, on what it answers).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::broker::StoredEvent;
use crate::codec::FrameText;
use crate::domain::{Epoch, Event};

/// At most this many events are held behind a gap; beyond it the topic is resynchronised
/// (a gap that large is not a race between two connections any more).
pub const MAX_HELD: usize = 10_000;

/// One event on its way to the fan-out.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The delivered frame.
    pub frame: FrameText,
    /// The event's fields, for subscription filters.
    pub event: Event,
    /// When it reached this node (or was published here).
    pub published_at: Instant,
}

impl Arrival {
    /// An arrival from a frame (pub/sub or the stream); `None` if it is not an event
    /// object (never for frames this gateway encoded).
    pub fn from_frame(frame: FrameText, published_at: Instant) -> Option<Self> {
        let value = serde_json::from_str(frame.as_str()).ok()?;
        let event = Event::from_value(value).ok()?;
        Some(Self { frame, event, published_at })
    }
}

/// What became of an offered event.
#[derive(Debug)]
pub enum Offer {
    /// Delivered, with any held events it unblocked.
    Delivered,
    /// At or below the last delivered offset: dropped.
    Duplicate,
    /// Ahead of the next expected offset (or before the baseline): held.
    Held,
    /// Held, and the topic holds more than [`MAX_HELD`] events: resynchronise it.
    Overflow,
    /// Its epoch is not the topic's: the caller resynchronises the topic, sets the
    /// baseline to the new epoch, and offers it again.
    EpochChanged(Epoch, u64, Arrival),
}

/// Where a topic stands on this node.
#[derive(Debug, Default)]
pub struct Sequencer {
    /// The epoch and the last offset handed to the fan-out; `None` before the baseline.
    position: Option<(Epoch, u64)>,
    /// Events ahead of the next expected offset, by offset, with their epoch.
    held: BTreeMap<u64, (Epoch, Arrival)>,
}

impl Sequencer {
    /// The epoch and last delivered offset, once the baseline is set.
    pub fn position(&self) -> Option<(Epoch, u64)> {
        self.position.clone()
    }

    /// The missing range's start, when events are held behind a gap: the epoch and the
    /// last delivered offset (read the stream after it).
    pub fn gap(&self) -> Option<(Epoch, u64)> {
        if self.held.is_empty() { None } else { self.position.clone() }
    }

    /// Sets the baseline: `offset` in `epoch` is delivered (or was before this node
    /// watched). Returns what was held, oldest first, to be offered again.
    pub fn set_baseline(&mut self, epoch: Epoch, offset: u64) -> Vec<(Epoch, u64, Arrival)> {
        self.position = Some((epoch, offset));
        std::mem::take(&mut self.held).into_iter().map(|(offset, (epoch, arrival))| (epoch, offset, arrival)).collect()
    }

    /// Offers one event; `deliver` is called for it and every held event it unblocks, in
    /// offset order.
    pub fn offer(
        &mut self,
        epoch: Epoch,
        offset: u64,
        arrival: Arrival,
        deliver: &mut impl FnMut(&Epoch, u64, &Arrival),
    ) -> Offer {
        let Some((current, delivered)) = &mut self.position else {
            self.held.insert(offset, (epoch, arrival));
            return Offer::Held;
        };
        if *current != epoch {
            return Offer::EpochChanged(epoch, offset, arrival);
        }
        if offset <= *delivered {
            return Offer::Duplicate;
        }
        if offset > *delivered + 1 {
            self.held.insert(offset, (epoch, arrival));
            return if self.held.len() > MAX_HELD { Offer::Overflow } else { Offer::Held };
        }
        deliver(current, offset, &arrival);
        *delivered = offset;
        self.drain(deliver);
        Offer::Delivered
    }

    /// Fills the gap with `events` read from the stream after the last delivered offset
    /// (a read that recovered, oldest first). Returns how many were delivered, held ones
    /// included.
    pub fn fill(
        &mut self,
        events: Vec<StoredEvent>,
        now: Instant,
        deliver: &mut impl FnMut(&Epoch, u64, &Arrival),
    ) -> usize {
        let mut count = 0;
        for stored in events {
            let Some((epoch, delivered)) = &mut self.position else { return count };
            if stored.offset <= *delivered {
                continue;
            }
            if stored.offset > *delivered + 1 {
                break;
            }
            // The held copy, when there is one, carries the publisher's time.
            let arrival = match self.held.remove(&stored.offset) {
                Some((_, held)) => held,
                None => match Arrival::from_frame(stored.frame, now) {
                    Some(arrival) => arrival,
                    None => break,
                },
            };
            deliver(epoch, stored.offset, &arrival);
            *delivered = stored.offset;
            count += 1 + self.drain(deliver);
        }
        count
    }

    /// Delivers held events that now follow the last delivered offset; drops held events
    /// at or below it, or of another epoch (they belong to a sequence already left).
    fn drain(&mut self, deliver: &mut impl FnMut(&Epoch, u64, &Arrival)) -> usize {
        let Some((epoch, delivered)) = &mut self.position else { return 0 };
        let mut count = 0;
        while let Some(entry) = self.held.first_entry() {
            let offset = *entry.key();
            if offset <= *delivered || entry.get().0 != *epoch {
                entry.remove();
                continue;
            }
            if offset != *delivered + 1 {
                break;
            }
            let (_, arrival) = entry.remove();
            deliver(epoch, offset, &arrival);
            *delivered = offset;
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order and repetition events arrive in, what is delivered is exactly
        /// the offsets after the baseline, in order, each once, up to the first one that
        /// never arrived; the rest stays held behind that gap.
        #[test]
        fn delivery_is_in_order_and_once_for_any_arrival_order(
            baseline in 0u64..5,
            arrivals in proptest::collection::vec(0u64..40, 0..120),
        ) {
            let epoch = Epoch::new("e");
            let mut seq = Sequencer::default();
            seq.set_baseline(epoch.clone(), baseline);
            let out = offer_all(&mut seq, &epoch, &arrivals);
            let seen: std::collections::BTreeSet<u64> = arrivals.iter().copied().collect();
            let expected: Vec<u64> = (baseline + 1..).take_while(|o| seen.contains(o)).collect();
            prop_assert_eq!(&out, &expected);
            let last = expected.last().copied().unwrap_or(baseline);
            prop_assert_eq!(seq.gap().is_some(), seen.iter().any(|&o| o > last + 1));
        }
    }

    fn arrival(n: u64) -> Arrival {
        let frame = FrameText::from(format!(r#"{{"type":"t","n":{n}}}"#));
        Arrival::from_frame(frame, Instant::now()).unwrap()
    }

    fn offer_all(seq: &mut Sequencer, epoch: &Epoch, offsets: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        for &offset in offsets {
            seq.offer(epoch.clone(), offset, arrival(offset), &mut |_, o, _| out.push(o));
        }
        out
    }

    #[test]
    fn delivers_in_order_once_whatever_the_arrival_order() {
        let epoch = Epoch::new("e1");
        let mut seq = Sequencer::default();
        assert!(seq.set_baseline(epoch.clone(), 3).is_empty());
        let out = offer_all(&mut seq, &epoch, &[5, 4, 4, 3, 7, 6, 8, 2]);
        assert_eq!(out, vec![4, 5, 6, 7, 8]);
        assert_eq!(seq.position(), Some((epoch, 8)));
        assert!(seq.gap().is_none());
    }

    #[test]
    fn holds_until_the_baseline_then_drops_what_it_covers() {
        let epoch = Epoch::new("e1");
        let mut seq = Sequencer::default();
        assert!(offer_all(&mut seq, &epoch, &[4, 5, 6]).is_empty());
        let mut out = Vec::new();
        for (e, offset, a) in seq.set_baseline(epoch.clone(), 4) {
            seq.offer(e, offset, a, &mut |_, o, _| out.push(o));
        }
        assert_eq!(out, vec![5, 6]);
    }

    #[test]
    fn a_gap_is_reported_and_filled_from_the_stream() {
        let epoch = Epoch::new("e1");
        let mut seq = Sequencer::default();
        seq.set_baseline(epoch.clone(), 0);
        assert!(offer_all(&mut seq, &epoch, &[1, 4, 5]) == vec![1]);
        assert_eq!(seq.gap(), Some((epoch.clone(), 1)));
        let stored = (2..=4).map(|o| StoredEvent { offset: o, frame: arrival(o).frame }).collect();
        let mut out = Vec::new();
        assert_eq!(seq.fill(stored, Instant::now(), &mut |_, o, _| out.push(o)), 4);
        assert_eq!(out, vec![2, 3, 4, 5]);
        assert!(seq.gap().is_none());
    }

    #[test]
    fn another_epoch_is_reported_not_delivered() {
        let mut seq = Sequencer::default();
        seq.set_baseline(Epoch::new("e1"), 10);
        let offer = seq.offer(Epoch::new("e2"), 1, arrival(1), &mut |_, _, _| panic!("delivered"));
        assert!(matches!(offer, Offer::EpochChanged(ref e, 1, _) if e.as_str() == "e2"));
    }

    #[test]
    fn too_much_held_asks_for_a_resync() {
        let epoch = Epoch::new("e1");
        let mut seq = Sequencer::default();
        seq.set_baseline(epoch.clone(), 0);
        let mut last = None;
        for offset in 2..=(MAX_HELD as u64 + 2) {
            last = Some(seq.offer(epoch.clone(), offset, arrival(offset), &mut |_, _, _| {}));
        }
        assert!(matches!(last, Some(Offer::Overflow)));
    }
}

//! Where an event sits in its topic's stream.

use std::fmt;
use std::sync::Arc;

/// Identifies one offset sequence of a topic; changes when history is lost.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// A fresh random epoch.
    pub fn generate() -> Self {
        // 64 random bits: a forgotten topic that comes back must not draw its old epoch,
        // or a resuming client would take the new offsets for the old ones.
        let random: u64 = rand::random();
        Self(Arc::from(format!("{random:016x}")))
    }

    /// Wraps an epoch string received from a client or a broker.
    pub fn new(raw: &str) -> Self {
        Self(Arc::from(raw))
    }

    /// The epoch as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", &self.0)
    }
}

/// An event's place in its topic: offset (1, 2, …) within an epoch. Offset 0 means
/// "before the first event".
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StreamPosition {
    /// Per-topic counter, starting at 1.
    pub offset: u64,
    /// The offset sequence this position belongs to.
    pub epoch: Epoch,
}

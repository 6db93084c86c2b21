//! Each configured sink with what the rest of the gateway observes of it: its metrics and
//! whether it is up (from health checks and from real sends).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;

use super::{Sink, SinkError};
use crate::metrics::SinkMetrics;

/// A sink's health as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet (start-up).
    Unknown,
    /// The last check or send reached it.
    Up,
    /// The last check or send could not reach it.
    Down,
}

/// One configured sink: the sink, its name, metrics and observed health.
pub struct SinkHandle {
    /// `[sinks.NAME]`.
    pub name: String,
    /// `sqs`, `http` or `redis_stream`.
    pub kind: &'static str,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// Its metric handles.
    pub metrics: SinkMetrics,
    health: AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl SinkHandle {
    /// Wraps a built sink.
    pub fn new(name: String, kind: &'static str, sink: Arc<dyn Sink>, metrics: SinkMetrics) -> Self {
        Self { name, kind, sink, metrics, health: AtomicU8::new(0), last_error: Mutex::new(None) }
    }

    /// The last observed health.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Acquire) {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    /// Why it was last seen down, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Records the outcome of a check or a send: reaching the sink (even to have a
    /// message refused) means it is up; [`SinkError::Unavailable`] means it is down.
    pub fn observe<T>(&self, result: &Result<T, SinkError>) {
        let down = match result {
            Err(SinkError::Unavailable(reason)) => Some(reason),
            _ => None,
        };
        let (code, gauge) = if down.is_some() { (2, 0.0) } else { (1, 1.0) };
        let before = self.health.swap(code, Ordering::AcqRel);
        self.metrics.up.set(gauge);
        if let Some(reason) = down {
            *self.last_error.lock() = Some(reason.clone());
            if before != 2 {
                tracing::warn!(sink = %self.name, kind = self.kind, error = %reason, "sink is down");
            }
        } else if before == 2 {
            tracing::info!(sink = %self.name, kind = self.kind, "sink is up again");
        }
    }

    /// Runs the sink's health check and records it.
    pub async fn check(&self) -> Health {
        let result = self.sink.check().await;
        self.observe(&result);
        self.health()
    }
}

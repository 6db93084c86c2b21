//! The on-disk table and the in-memory bookkeeping that mirrors it: one redb table keyed
//! by `(sink, sequence)`, per-sink queues (wake-up, visibility, count) and the bound.
//!
//! Everything here is blocking and is called either from the writer thread, from
//! `spawn_blocking`, or once at start-up; never from async code directly.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::Gauge;
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use super::{OutboxError, OutboxLimits};
use crate::sinks::RoutedMessage;

/// The outbox table: `(sink name, sequence)` → the message's JSON. The tuple key sorts
/// by sink then sequence, so a range scan over one sink yields its messages in order.
pub(super) const TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");

/// The store's file name inside the data directory.
pub(super) const FILE_NAME: &str = "outbox.redb";

/// Any storage failure, as the outbox reports it.
pub(super) fn io_error(error: impl std::fmt::Display) -> OutboxError {
    OutboxError::Io(error.to_string())
}

/// One sink's queue as the drainer and the writer see it.
#[derive(Default)]
pub(super) struct SinkQueue {
    /// Wakes the sink's drainer after a commit added messages for it. `notify_one`
    /// stores a permit when the drainer is busy, so no wake-up is lost.
    pub notify: Notify,
    /// One past the highest sequence a drainer may read. The writer raises it only after
    /// calling `accepted` for the committed messages, so a drainer can never deliver (and
    /// relay a reply for) a message whose client has not heard `accepted` yet.
    pub visible_end: AtomicU64,
    /// Messages of this sink on disk.
    pub pending: AtomicU64,
    /// The sink's `signalbox_outbox_messages` gauge, once its drainer started; the writer
    /// sets it on every change of `pending`, so it is exact even while the drainer waits.
    pub gauge: OnceLock<Gauge>,
}

impl SinkQueue {
    /// One past the highest sequence a drainer may read now.
    pub fn readable_end(&self) -> u64 {
        self.visible_end.load(Ordering::Acquire)
    }

    /// Sets the gauge (if any) to `pending`.
    pub fn update_gauge(&self) {
        if let Some(gauge) = self.gauge.get() {
            gauge.set(self.pending.load(Ordering::Acquire) as f64);
        }
    }
}

/// Every sink's queue, created lazily for a sink name first seen at append or open.
#[derive(Default)]
pub(super) struct Queues {
    map: RwLock<HashMap<String, Arc<SinkQueue>>>,
    /// Set once drainers run: a sink name first seen after that has no drainer.
    drainers_started: AtomicBool,
}

impl Queues {
    /// The queue of `sink`, created if new.
    pub fn get_or_create(&self, sink: &str) -> Arc<SinkQueue> {
        if let Some(queue) = self.map.read().get(sink) {
            return Arc::clone(queue);
        }
        let mut map = self.map.write();
        if !map.contains_key(sink) && self.drainers_started.load(Ordering::Acquire) {
            // Routes are validated against the sinks, so this is a bug upstream; the
            // messages are kept and dead-lettered at the next start, not lost.
            tracing::error!(sink, "outbox: message for a sink without a drainer; it waits for the next start");
        }
        Arc::clone(map.entry(sink.to_owned()).or_default())
    }

    /// Records that drainers run for the sinks known now.
    pub fn mark_drainers_started(&self) {
        self.drainers_started.store(true, Ordering::Release);
    }

    /// Every sink name with its queue.
    pub fn snapshot(&self) -> Vec<(String, Arc<SinkQueue>)> {
        self.map.read().iter().map(|(name, queue)| (name.clone(), Arc::clone(queue))).collect()
    }

    /// Messages on disk, all sinks.
    pub fn pending(&self) -> u64 {
        self.map.read().values().map(|q| q.pending.load(Ordering::Acquire)).sum()
    }
}

/// What the bound counts: messages and bytes on disk plus appends on their way there.
pub(super) struct Usage {
    limits: OutboxLimits,
    held: Mutex<(u64, u64)>,
}

impl Usage {
    /// Starts from what was found on disk.
    pub fn new(limits: OutboxLimits, messages: u64, bytes: u64) -> Self {
        Self { limits, held: Mutex::new((messages, bytes)) }
    }

    /// Reserves room for one message of `bytes`, or refuses it: the check happens before
    /// anything is written, so a full outbox never grows past its bound.
    pub fn reserve(&self, bytes: u64) -> Result<(), OutboxError> {
        let mut held = self.held.lock();
        let (messages, total) = *held;
        if messages.saturating_add(1) > self.limits.max_messages || total.saturating_add(bytes) > self.limits.max_bytes
        {
            return Err(OutboxError::Full { messages, bytes: total });
        }
        *held = (messages + 1, total + bytes);
        Ok(())
    }

    /// Messages and bytes held.
    #[cfg(test)]
    pub fn held(&self) -> (u64, u64) {
        *self.held.lock()
    }

    /// Gives back room: messages deleted, or appends that failed.
    pub fn release(&self, messages: u64, bytes: u64) {
        let mut held = self.held.lock();
        *held = (held.0.saturating_sub(messages), held.1.saturating_sub(bytes));
    }
}

/// What was on disk at open.
pub(super) struct Recovered {
    /// The next sequence to assign: one past the highest found.
    pub next_seq: u64,
    /// Messages per sink.
    pub per_sink: HashMap<String, u64>,
    /// Messages, all sinks.
    pub messages: u64,
    /// Bytes of stored messages, all sinks.
    pub bytes: u64,
}

/// Opens or creates `<dir>/outbox.redb` and counts what it holds. One full scan: the
/// count per sink and the byte total must be exact for the bound and the gauge.
pub(super) fn open(dir: &Path) -> Result<(Database, Recovered), OutboxError> {
    fs::create_dir_all(dir).map_err(|e| io_error(format_args!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(FILE_NAME);
    let db = Database::create(&path).map_err(|e| io_error(format_args!("cannot open {}: {e}", path.display())))?;
    // A read transaction cannot open a table that was never created.
    let txn = db.begin_write().map_err(io_error)?;
    txn.open_table(TABLE).map_err(io_error)?;
    txn.commit().map_err(io_error)?;

    let mut recovered = Recovered { next_seq: 0, per_sink: HashMap::new(), messages: 0, bytes: 0 };
    let read = db.begin_read().map_err(io_error)?;
    let table = read.open_table(TABLE).map_err(io_error)?;
    for row in table.iter().map_err(io_error)? {
        let (key, value) = row.map_err(io_error)?;
        let (sink, seq) = key.value();
        *recovered.per_sink.entry(sink.to_owned()).or_default() += 1;
        recovered.messages += 1;
        recovered.bytes += value.value().len() as u64;
        recovered.next_seq = recovered.next_seq.max(seq.saturating_add(1));
    }
    drop(table);
    drop(read);
    Ok((db, recovered))
}

/// One stored message read back. A value that no longer parses as a [`RoutedMessage`]
/// (a format change gone wrong) keeps its raw text so it can be dead-lettered, not lost.
pub(super) struct Entry {
    /// Its sequence.
    pub seq: u64,
    /// The message, or the raw stored text if it does not parse.
    pub message: Result<RoutedMessage, Undecodable>,
}

/// A stored value that does not parse as a message.
pub(super) struct Undecodable {
    /// Why it does not parse.
    pub error: String,
    /// The stored bytes, as text (lossy if not UTF-8).
    pub raw: String,
}

/// Reads up to `max` messages of `sink` with sequence in `from..end`, in order.
pub(super) fn read_batch(
    db: &Database,
    sink: &str,
    from: u64,
    end: u64,
    max: usize,
) -> Result<Vec<Entry>, OutboxError> {
    if from >= end {
        return Ok(Vec::new());
    }
    let read = db.begin_read().map_err(io_error)?;
    let table = read.open_table(TABLE).map_err(io_error)?;
    let mut entries = Vec::new();
    for row in table.range((sink, from)..(sink, end)).map_err(io_error)?.take(max) {
        let (key, value) = row.map_err(io_error)?;
        let bytes = value.value();
        let message = serde_json::from_slice(bytes)
            .map_err(|e| Undecodable { error: e.to_string(), raw: String::from_utf8_lossy(bytes).into_owned() });
        entries.push(Entry { seq: key.value().1, message });
    }
    Ok(entries)
}

//! The durable outbox (SPEC §7): with `[storage] data_dir` set, a routed message is
//! `accepted` once it is on disk here, and a drainer per sink delivers it from here.
//!
//! This module owns `<data_dir>/outbox.redb` and `<data_dir>/dead-letters.jsonl`: the
//! durable append (group commit by one writer thread, `writer`), the bound, the
//! in-order drain per sink with the shared [`RetryPolicy`] (`drain`), and the dead
//! letters (`dead_letter`). It must never drop a message silently (every message is
//! delivered, or dead-lettered with a log line and the sink's `dead_lettered` count; a
//! sink no longer configured has no metrics, so its messages get an error log), never
//! reorder one sink's messages, never let one sink's outage hold up another, and never
//! block async code on disk I/O (the writer is a thread, reads and dead letters go
//! through `spawn_blocking`).
//!
//! Delivery is at least once: a message whose delete was lost (a crash after delivery) or
//! whose batch was in flight at shutdown is sent again; its `messageId` lets the backend
//! de-duplicate. A message's attempts are counted in memory and start again at zero after
//! a restart, so a message may use up to `max_attempts` more attempts per process run.

mod dead_letter;
mod drain;
mod store;
mod writer;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use parking_lot::Mutex;
use redb::Database;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::dead_letter::DeadLetters;
use self::store::{Entry, Queues, Usage};
use self::writer::{Append, Op, Writer};
use super::config::RoutingConfig;
use super::retry::RetryPolicy;
use super::{ClientReplies, RoutedMessage, SinkHandle};

/// How long `close` waits for the last handle on the store (a read finishing on a
/// blocking thread, the writer thread ending).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the outbox did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// Taking the message would exceed `outbox_max_messages` or `outbox_max_bytes`; the
    /// caller answers `SINK_UNAVAILABLE`.
    #[error("outbox full ({messages} messages, {bytes} bytes held)")]
    Full {
        /// Messages held when it was refused (on disk or being written).
        messages: u64,
        /// Bytes held when it was refused.
        bytes: u64,
    },
    /// The store could not be opened, read or written.
    #[error("outbox storage: {0}")]
    Io(String),
    /// The outbox is closed (shutting down).
    #[error("outbox closed")]
    Closed,
}

/// The outbox's bound, across sinks (`[routing] outbox_max_messages`, `outbox_max_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Messages held at most.
    pub max_messages: u64,
    /// Bytes of stored message JSON held at most.
    pub max_bytes: u64,
}

impl OutboxLimits {
    /// The limits configured in `[routing]`.
    pub fn from_routing(routing: &RoutingConfig) -> Self {
        Self { max_messages: routing.outbox_max_messages, max_bytes: routing.outbox_max_bytes }
    }
}

/// The durable outbox. Cheap to clone; every clone is the same outbox.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Op>,
    closed: AtomicBool,
    /// The store for readers; `None` once closed. The writer thread holds its own handle.
    db: Mutex<Option<Arc<Database>>>,
    queues: Arc<Queues>,
    usage: Arc<Usage>,
    replies: Arc<dyn ClientReplies>,
    dead_letters: Arc<DeadLetters>,
}

impl Outbox {
    /// Opens or creates `<dir>/outbox.redb` (creating `dir`), counts pending messages per
    /// sink and starts the writer thread. Blocking; called once at start-up.
    pub fn open(dir: &Path, limits: OutboxLimits, replies: Arc<dyn ClientReplies>) -> Result<Self, OutboxError> {
        let (db, recovered) = store::open(dir)?;
        let db = Arc::new(db);
        let queues = Arc::new(Queues::default());
        for (sink, count) in &recovered.per_sink {
            let queue = queues.get_or_create(sink);
            queue.pending.store(*count, Ordering::Release);
            queue.visible_end.store(recovered.next_seq, Ordering::Release);
        }
        let usage = Arc::new(Usage::new(limits, recovered.messages, recovered.bytes));
        if recovered.messages > 0 {
            tracing::info!(messages = recovered.messages, bytes = recovered.bytes, dir = %dir.display(), "outbox: messages to deliver from before the restart");
        }
        let (tx, rx) = mpsc::channel();
        Writer::new(
            Arc::clone(&db),
            rx,
            Arc::clone(&queues),
            Arc::clone(&usage),
            Arc::clone(&replies),
            recovered.next_seq,
        )
        .spawn()
        .map_err(|e| store::io_error(format_args!("cannot start the outbox writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                closed: AtomicBool::new(false),
                db: Mutex::new(Some(db)),
                queues,
                usage,
                replies,
                dead_letters: Arc::new(DeadLetters::new(dir)),
            }),
        })
    }

    /// Durably appends `message` to its sink's queue. Resolves once it is committed with
    /// fsync (together with every other append queued meanwhile: group commit) and
    /// [`ClientReplies::accepted`] was called for it, before any drainer can see it.
    /// [`OutboxError::Full`] when a bound would be exceeded; nothing is written then.
    pub async fn append(&self, message: RoutedMessage) -> Result<(), OutboxError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(OutboxError::Closed);
        }
        let json = serde_json::to_vec(&message).map_err(store::io_error)?;
        let bytes = json.len() as u64;
        self.inner.usage.reserve(bytes)?;
        let (done, answer) = oneshot::channel();
        if self.inner.tx.send(Op::Append(Append { message, json, done })).is_err() {
            self.inner.usage.release(1, bytes);
            return Err(OutboxError::Closed);
        }
        // A dropped answer means the writer stopped before taking it: closed.
        answer.await.unwrap_or(Err(OutboxError::Closed))
    }

    /// Starts one drainer task per sink on `tracker`, each stopping when `stop` is
    /// cancelled. Call once, inside the runtime. Messages held for a sink name not in
    /// `sinks` (the configuration changed) are moved to the dead-letter file at once, with
    /// reason "sink no longer configured" and an error log. Appends for a sink name never
    /// seen before and not in `sinks` are kept (with an error log) and dead-lettered at the
    /// next start.
    pub fn start_drainers(
        &self,
        sinks: &[Arc<SinkHandle>],
        policy: RetryPolicy,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) {
        for handle in sinks {
            let queue = self.inner.queues.get_or_create(&handle.name);
            let _ = queue.gauge.set(handle.metrics.outbox_messages.clone());
            queue.update_gauge();
            let drainer = drain::Drainer::new(self.clone(), Arc::clone(handle), queue, policy, stop.clone());
            tracker.spawn(drainer.run());
        }
        self.inner.queues.mark_drainers_started();
        for (name, queue) in self.inner.queues.snapshot() {
            if sinks.iter().all(|h| h.name != name) {
                tracker.spawn(dead_letter::drain_unconfigured(self.clone(), name, queue, stop.clone()));
            }
        }
    }

    /// Messages waiting, all sinks.
    pub fn pending(&self) -> u64 {
        self.inner.queues.pending()
    }

    /// Finishes queued writes, persists the deletes made without fsync and closes the
    /// store; later appends get [`OutboxError::Closed`]. Called at shutdown after the
    /// drainers stopped. The file is released when this returns.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let (done, closed) = oneshot::channel();
        if self.inner.tx.send(Op::Close(done)).is_ok() {
            let _ = closed.await;
        }
        let db = self.inner.db.lock().take();
        // The writer thread drops its handle just after answering, and a read started by a
        // drainer may still hold one on a blocking thread: the file stays locked until the
        // last handle goes, so wait for it (bounded) to keep "released when this returns".
        if let Some(mut db) = db {
            let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if tokio::time::Instant::now() < deadline => {
                        db = shared;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(_) => {
                        tracing::warn!("outbox store still in use at close; the file is released when that ends");
                        break;
                    }
                }
            }
        }
    }

    /// Reads up to `max` visible messages of `sink` from sequence `from` on, off the
    /// async threads.
    async fn read(&self, sink: &str, from: u64, end: u64, max: usize) -> Result<Vec<Entry>, OutboxError> {
        let db = self.inner.db.lock().clone().ok_or(OutboxError::Closed)?;
        let sink = sink.to_owned();
        tokio::task::spawn_blocking(move || store::read_batch(&db, &sink, from, end, max))
            .await
            .map_err(store::io_error)?
    }

    /// Messages and bytes the bound holds now.
    #[cfg(test)]
    fn usage_for_tests(&self) -> (u64, u64) {
        self.inner.usage.held()
    }

    /// Removes messages of `sink` (delivered or dead-lettered). Not awaited: the drainer
    /// moves its head in memory, and a delete lost to a crash only means a redelivery.
    fn delete(&self, sink: &str, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        if self.inner.tx.send(Op::Delete { sink: sink.to_owned(), seqs }).is_err() {
            tracing::debug!(sink, "outbox closed; delivered messages stay until the next start");
        }
    }
}

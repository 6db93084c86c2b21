//! The outbox's only writer: a dedicated thread doing group commit.
//!
//! redb allows one write transaction at a time, and an fsync costs milliseconds, so the
//! thread takes every operation queued while it was busy and writes them all in ONE
//! transaction: many concurrent appends share one fsync. Deletes (delivered or
//! dead-lettered messages) ride along in the same transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::OutboxError;
use super::store::{Queues, SinkQueue, TABLE, Usage, io_error};
use crate::sinks::{ClientReplies, RoutedMessage};

/// Operations queued in one transaction at most; bounds the latency of the first one.
const MAX_GROUP: usize = 4096;

/// Delete-only transactions committed without fsync before one is made durable. A lost
/// delete only means a redelivery, so deletes skip the fsync; but redb reclaims the pages
/// they free only after a durable commit, so an idle-append, busy-drain outbox must still
/// make one now and then or its file would grow.
const LAZY_COMMITS_MAX: u32 = 64;

/// An operation for the writer.
pub(super) enum Op {
    /// Store a message durably.
    Append(Append),
    /// Remove messages of `sink` (delivered or dead-lettered).
    Delete {
        /// The sink.
        sink: String,
        /// Their sequences.
        seqs: Vec<u64>,
    },
    /// Persist everything, close the store and answer.
    Close(oneshot::Sender<()>),
}

/// One append on its way to disk.
pub(super) struct Append {
    /// The message.
    pub message: RoutedMessage,
    /// Its JSON, serialized by the caller (in parallel, off this thread).
    pub json: Vec<u8>,
    /// Resolved after the commit.
    pub done: oneshot::Sender<Result<(), OutboxError>>,
}

/// The writer thread's state.
pub(super) struct Writer {
    /// The store.
    pub db: Arc<Database>,
    /// Its operations.
    pub rx: Receiver<Op>,
    /// Per-sink queues to publish to after a commit.
    pub queues: Arc<Queues>,
    /// The bound's accounting.
    pub usage: Arc<Usage>,
    /// Told of each message once it is durable.
    pub replies: Arc<dyn ClientReplies>,
    /// The next sequence to assign.
    pub next_seq: u64,
    /// Delete-only commits made without fsync since the last durable one.
    pub lazy_commits: u32,
    /// Deletes whose transaction failed, tried again with the next one.
    pub deferred: Vec<(String, Vec<u64>)>,
}

impl Writer {
    /// Starts the thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("outbox-writer".into()).spawn(move || self.run())
    }

    fn run(mut self) {
        // `recv` fails once every sender is gone: the outbox was dropped without close.
        while let Ok(first) = self.rx.recv() {
            let mut appends = Vec::new();
            let mut deletes = std::mem::take(&mut self.deferred);
            let mut close = None;
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    Op::Append(append) => appends.push(append),
                    Op::Delete { sink, seqs } => deletes.push((sink, seqs)),
                    Op::Close(done) => close = Some(done),
                }
                if close.is_none() && appends.len() + deletes.len() < MAX_GROUP {
                    next = self.rx.try_recv().ok();
                }
            }
            self.commit(appends, deletes);
            if let Some(done) = close {
                self.finish();
                // Answer only after the store is closed, so it can be reopened at once.
                drop(self);
                let _ = done.send(());
                return;
            }
        }
        self.finish();
    }

    /// Writes one group in one transaction and publishes the result.
    fn commit(&mut self, appends: Vec<Append>, deletes: Vec<(String, Vec<u64>)>) {
        if appends.is_empty() && deletes.is_empty() {
            return;
        }
        let durable = !appends.is_empty() || self.lazy_commits >= LAZY_COMMITS_MAX;
        let first_seq = self.next_seq;
        // Sequences are spent even if the commit fails: gaps are harmless, reuse is not
        // worth reasoning about.
        self.next_seq += appends.len() as u64;
        match self.write(&appends, first_seq, &deletes, durable) {
            Ok(freed) => {
                self.lazy_commits = if durable { 0 } else { self.lazy_commits + 1 };
                self.publish(appends, first_seq);
                for (sink, (messages, bytes)) in freed {
                    let queue = self.queues.get_or_create(&sink);
                    queue.pending.fetch_sub(messages, Ordering::AcqRel);
                    queue.update_gauge();
                    self.usage.release(messages, bytes);
                }
            }
            Err(error) => {
                tracing::error!(%error, appends = appends.len(), deletes = deletes.len(), "outbox write failed");
                for append in appends {
                    self.usage.release(1, append.json.len() as u64);
                    let _ = append.done.send(Err(error.clone()));
                }
                self.deferred = deletes;
            }
        }
    }

    /// The transaction itself; returns what the deletes freed, per sink.
    fn write(
        &self,
        appends: &[Append],
        first_seq: u64,
        deletes: &[(String, Vec<u64>)],
        durable: bool,
    ) -> Result<HashMap<String, (u64, u64)>, OutboxError> {
        let mut txn = self.db.begin_write().map_err(io_error)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(io_error)?;
        }
        let mut freed: HashMap<String, (u64, u64)> = HashMap::new();
        {
            let mut table = txn.open_table(TABLE).map_err(io_error)?;
            for (seq, append) in (first_seq..).zip(appends) {
                table.insert((append.message.sink.as_str(), seq), append.json.as_slice()).map_err(io_error)?;
            }
            for (sink, seqs) in deletes {
                for &seq in seqs {
                    // A delete may repeat (deferred after a failure): count only real removals.
                    if let Some(value) = table.remove((sink.as_str(), seq)).map_err(io_error)? {
                        let entry = freed.entry(sink.clone()).or_default();
                        entry.0 += 1;
                        entry.1 += value.value().len() as u64;
                    }
                }
            }
        }
        txn.commit().map_err(io_error)?;
        Ok(freed)
    }

    /// After a commit: `accepted` for each message in commit order, then make them
    /// visible to their drainers, wake those, and resolve the callers.
    fn publish(&self, appends: Vec<Append>, first_seq: u64) {
        for append in &appends {
            self.replies.accepted(&append.message);
        }
        let mut touched: HashMap<&str, Arc<SinkQueue>> = HashMap::new();
        for (seq, append) in (first_seq..).zip(&appends) {
            let sink = append.message.sink.as_str();
            let queue = touched.entry(sink).or_insert_with(|| self.queues.get_or_create(sink));
            // `pending` before `visible_end`: a drainer that sees the message also counts it.
            queue.pending.fetch_add(1, Ordering::AcqRel);
            queue.visible_end.fetch_max(seq + 1, Ordering::AcqRel);
        }
        for queue in touched.values() {
            queue.update_gauge();
            queue.notify.notify_one();
        }
        drop(touched);
        for append in appends {
            // The caller may have gone away (its client disconnected): the message is
            // durable and will be delivered all the same.
            let _ = append.done.send(Ok(()));
        }
    }

    /// Before closing: deferred deletes, and one durable commit so the deletes made
    /// without fsync survive (a clean restart then redelivers nothing).
    fn finish(&mut self) {
        let deletes = std::mem::take(&mut self.deferred);
        if deletes.is_empty() && self.lazy_commits == 0 {
            return;
        }
        let first_seq = self.next_seq;
        if let Err(error) = self.write(&[], first_seq, &deletes, true) {
            tracing::warn!(%error, "outbox: final commit failed; delivered messages may be delivered again after restart");
        }
    }
}

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
use std::time::{Duration, Instant};

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

/// The longest a group waits for stragglers (see [`Writer::gather`]).
const MAX_LINGER: Duration = Duration::from_millis(1);

/// What one transaction writes.
struct Group {
    appends: Vec<Append>,
    deletes: Vec<(String, Vec<u64>)>,
    close: Option<oneshot::Sender<()>>,
}

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
    db: Arc<Database>,
    rx: Receiver<Op>,
    /// Per-sink queues to publish to after a commit.
    queues: Arc<Queues>,
    /// The bound's accounting.
    usage: Arc<Usage>,
    /// Told of each message once it is durable.
    replies: Arc<dyn ClientReplies>,
    /// The next sequence to assign.
    next_seq: u64,
    /// Delete-only commits made without fsync since the last durable one.
    lazy_commits: u32,
    /// Deletes whose transaction failed, tried again with the next one.
    deferred: Vec<(String, Vec<u64>)>,
    /// Appends in the last group, and how long its commit took: they size the next wait.
    last_group: usize,
    last_commit: Duration,
}

impl Writer {
    /// A writer for `db`, taking operations from `rx`; `next_seq` is the first sequence
    /// it assigns.
    pub fn new(
        db: Arc<Database>,
        rx: Receiver<Op>,
        queues: Arc<Queues>,
        usage: Arc<Usage>,
        replies: Arc<dyn ClientReplies>,
        next_seq: u64,
    ) -> Self {
        Self {
            db,
            rx,
            queues,
            usage,
            replies,
            next_seq,
            lazy_commits: 0,
            deferred: Vec::new(),
            last_group: 0,
            last_commit: Duration::ZERO,
        }
    }

    /// Starts the thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("outbox-writer".into()).spawn(move || self.run())
    }

    fn run(mut self) {
        // `recv` fails once every sender is gone: the outbox was dropped without close.
        while let Ok(first) = self.rx.recv() {
            let mut group = Group { appends: Vec::new(), deletes: std::mem::take(&mut self.deferred), close: None };
            self.gather(first, &mut group);
            self.last_group = group.appends.len();
            let started = Instant::now();
            self.commit(group.appends, group.deletes);
            self.last_commit = started.elapsed();
            if let Some(done) = group.close {
                self.finish();
                // Answer only after the store is closed, so it can be reopened at once.
                drop(self);
                let _ = done.send(());
                return;
            }
        }
        self.finish();
    }

    /// Takes `first` and whatever else is queued into `group`. Without care, group commit
    /// convoys: the callers resolved by one commit come back one by one, the first alone
    /// gets the next fsync, and groups alternate big and tiny, halving throughput. So
    /// while the group has fewer appends than the last one, it waits a little for the
    /// stragglers: at most a quarter of the last commit's time, bounding the latency
    /// added while letting steady concurrent appenders share every fsync.
    fn gather(&self, first: Op, group: &mut Group) {
        let linger = (self.last_commit / 4).min(MAX_LINGER);
        let deadline = Instant::now() + linger;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Append(append) => group.appends.push(append),
                Op::Delete { sink, seqs } => group.deletes.push((sink, seqs)),
                Op::Close(done) => group.close = Some(done),
            }
            if group.close.is_some() || group.appends.len() + group.deletes.len() >= MAX_GROUP {
                break;
            }
            next = match self.rx.try_recv() {
                Ok(op) => Some(op),
                Err(_) if group.appends.is_empty() || group.appends.len() >= self.last_group => None,
                Err(_) => {
                    deadline.checked_duration_since(Instant::now()).and_then(|left| self.rx.recv_timeout(left).ok())
                }
            };
        }
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

//! One sink's drainer: delivers the sink's messages from the outbox in order, with the
//! shared retry policy, and dead-letters those it gives up on.
//!
//! The drainer keeps its head (the next sequence to read) in memory and removes delivered
//! messages through the writer without waiting, so reading the next batch overlaps the
//! delete. It never skips a message: the head only moves past one that was delivered or
//! durably dead-lettered.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::dead_letter::DeadLetter;
use super::store::{Entry, SinkQueue};
use super::{Outbox, OutboxError};
use crate::sinks::retry::{Next, RetryPolicy};
use crate::sinks::{RoutedMessage, SinkError, SinkHandle};

/// Messages sent to the sink in one `send_batch`.
pub(super) const BATCH: usize = 64;

/// Retry state of the head message. Attempts live in memory only: they start again at
/// zero after a restart (documented in the module).
#[derive(Default)]
struct HeadRetries {
    /// The sequence they belong to.
    seq: u64,
    /// Attempts used (failures of a reachable sink).
    attempts: u32,
    /// Retries so far, outages included: drives the backoff.
    retry: u32,
}

/// One sink's drainer task.
pub(super) struct Drainer {
    outbox: Outbox,
    handle: Arc<SinkHandle>,
    queue: Arc<SinkQueue>,
    policy: RetryPolicy,
    stop: CancellationToken,
    /// The next sequence to read.
    head: u64,
    retries: HeadRetries,
}

impl Drainer {
    /// A drainer for `handle`'s sink, reading `queue`.
    pub fn new(
        outbox: Outbox,
        handle: Arc<SinkHandle>,
        queue: Arc<SinkQueue>,
        policy: RetryPolicy,
        stop: CancellationToken,
    ) -> Self {
        Self { outbox, handle, queue, policy, stop, head: 0, retries: HeadRetries::default() }
    }

    /// Runs until `stop` is cancelled or the outbox is closed.
    pub async fn run(mut self) {
        let mut read_failures = 0;
        loop {
            let end = self.queue.readable_end();
            let batch = tokio::select! {
                batch = self.outbox.read(&self.handle.name, self.head, end, BATCH) => batch,
                () = self.stop.cancelled() => return,
            };
            let proceed = match batch {
                Ok(batch) if batch.is_empty() => {
                    read_failures = 0;
                    // A permit stored by a commit since the read makes this return at once.
                    tokio::select! {
                        () = self.queue.notify.notified() => true,
                        () = self.stop.cancelled() => false,
                    }
                }
                Ok(batch) => {
                    read_failures = 0;
                    self.deliver(batch).await
                }
                Err(OutboxError::Closed) => false,
                Err(error) => {
                    read_failures += 1;
                    tracing::error!(sink = %self.handle.name, %error, "outbox read failed");
                    self.sleep(self.policy.backoff(read_failures)).await
                }
            };
            if !proceed {
                return;
            }
        }
    }

    /// Sends one batch from the head and acts on the outcome. False when stopping.
    async fn deliver(&mut self, batch: Vec<Entry>) -> bool {
        let mut seqs = Vec::with_capacity(batch.len());
        let mut sendable = Vec::with_capacity(batch.len());
        let mut undecodable = None;
        for entry in batch {
            match entry.message {
                Ok(message) => {
                    seqs.push(entry.seq);
                    sendable.push(message);
                }
                Err(raw) => {
                    undecodable = Some((entry.seq, raw));
                    break;
                }
            }
        }
        if sendable.is_empty() {
            // The head does not parse: no sink can take it.
            let Some((seq, raw)) = undecodable else { return true };
            let letter = DeadLetter::new(&self.handle.name, Err(&raw), 0, &format!("undecodable: {}", raw.error));
            return self.dead_letter(seq, letter).await;
        }
        let outcome = tokio::select! {
            outcome = self.handle.sink.send_batch(&sendable) => outcome,
            // A batch in flight at stop is sent again after the restart.
            () = self.stop.cancelled() => return false,
        };
        // A sink reporting more than it was given, or an error after the last message,
        // is read as having delivered the whole batch.
        let delivered = outcome.delivered.len().min(sendable.len());
        let error = outcome.error.filter(|_| delivered < sendable.len());
        match &error {
            Some(error) => self.handle.observe::<()>(&Err(error.clone())),
            None => self.handle.observe(&Ok(())),
        }
        if delivered > 0 {
            self.head = seqs[delivered - 1] + 1;
            self.outbox.delete(&self.handle.name, seqs[..delivered].to_vec());
            self.handle.metrics.delivered.increment(delivered as u64);
            for (message, reply) in sendable.iter().zip(outcome.delivered) {
                if let Some(body) = reply.reply {
                    self.outbox.inner.replies.relay(message, body);
                }
            }
        }
        match error {
            Some(error) => self.failed(seqs[delivered], &sendable[delivered], error).await,
            None => true,
        }
    }

    /// The message at the head failed with `error`: retry it or give up on it.
    async fn failed(&mut self, seq: u64, message: &RoutedMessage, error: SinkError) -> bool {
        if self.retries.seq != seq {
            self.retries = HeadRetries { seq, ..HeadRetries::default() };
        }
        if RetryPolicy::counts_attempt(&error) {
            self.retries.attempts += 1;
        }
        self.retries.retry += 1;
        match self.policy.next(&error, self.retries.attempts, self.retries.retry) {
            Next::GiveUp => {
                let letter = DeadLetter::new(&self.handle.name, Ok(message), self.retries.attempts, &error.to_string());
                self.dead_letter(seq, letter).await
            }
            Next::RetryAfter(backoff) => {
                self.handle.metrics.retries.increment(1);
                tracing::debug!(sink = %self.handle.name, %error, ?backoff, attempts = self.retries.attempts, "retrying the outbox head");
                self.sleep(backoff).await
            }
        }
    }

    /// Moves the head message to the dead-letter file, then out of the outbox. If the
    /// file cannot be written, the message stays and is tried again after a backoff.
    async fn dead_letter(&mut self, seq: u64, letter: DeadLetter) -> bool {
        let summary = letter.summary().to_owned();
        match self.outbox.inner.dead_letters.write(vec![letter]).await {
            Ok(()) => {
                self.head = seq + 1;
                self.outbox.delete(&self.handle.name, vec![seq]);
                self.handle.metrics.dead_lettered.increment(1);
                tracing::warn!(sink = %self.handle.name, message = %summary, "outbox: message dead-lettered");
                true
            }
            Err(error) => {
                tracing::error!(sink = %self.handle.name, %error, "cannot write the dead-letter file; keeping the message");
                self.retries.retry += 1;
                self.sleep(self.policy.backoff(self.retries.retry)).await
            }
        }
    }

    /// Sleeps unless stopped first. False when stopping.
    async fn sleep(&self, duration: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.stop.cancelled() => false,
        }
    }
}

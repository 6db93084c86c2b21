//! The dead-letter file, `<data_dir>/dead-letters.jsonl`: one JSON line per message the
//! outbox gave up on, `{"deadLetteredAt","sink","attempts","error","message"}`, written
//! and fsynced before the message leaves the outbox, so a given-up message is always in
//! one of the two. Also the task that empties the queue of a sink no longer configured.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::store::{SinkQueue, Undecodable, io_error};
use super::{Outbox, OutboxError};
use crate::domain::unix_millis;
use crate::sinks::{RoutedMessage, rfc3339_millis};

/// The file's name inside the data directory.
pub(super) const FILE_NAME: &str = "dead-letters.jsonl";

/// Why messages of an unconfigured sink are dead-lettered.
pub(super) const UNCONFIGURED: &str = "sink no longer configured";

/// Messages moved per batch (one fsync each) for an unconfigured sink.
const UNCONFIGURED_BATCH: usize = 1024;

/// How long to wait before trying the file or the store again after a failure.
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// One dead-letter line, ready to write.
pub(super) struct DeadLetter {
    line: String,
    summary: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    dead_lettered_at: String,
    sink: &'a str,
    attempts: u32,
    error: &'a str,
    message: Option<&'a RoutedMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<&'a str>,
}

impl DeadLetter {
    /// The line for `message` of `sink` given up after `attempts` with `error`. A stored
    /// value that does not parse is kept as `"raw"` text with `"message": null`.
    pub fn new(sink: &str, message: Result<&RoutedMessage, &Undecodable>, attempts: u32, error: &str) -> Self {
        let line = Line {
            dead_lettered_at: rfc3339_millis(unix_millis(SystemTime::now())),
            sink,
            attempts,
            error,
            message: message.ok(),
            raw: message.err().map(|u| u.raw.as_str()),
        };
        // Serializing strings and integers cannot fail; the fallback keeps the raw facts.
        let line = serde_json::to_string(&line)
            .unwrap_or_else(|e| format!(r#"{{"sink":{sink:?},"error":"cannot serialize dead letter: {e}"}}"#));
        let summary = message.map_or_else(|_| "undecodable".to_owned(), |m| m.message_id.to_string());
        Self { line, summary }
    }

    /// The message id, for logs.
    pub fn summary(&self) -> &str {
        &self.summary
    }
}

/// The dead-letter file, opened on first use.
pub(super) struct DeadLetters {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetters {
    /// The file in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { path: dir.join(FILE_NAME), file: Mutex::new(None) }
    }

    /// Appends `letters` and fsyncs, off the async threads.
    pub async fn write(self: &Arc<Self>, letters: Vec<DeadLetter>) -> Result<(), OutboxError> {
        let this = Arc::clone(self);
        let written = tokio::task::spawn_blocking(move || this.write_blocking(&letters)).await.map_err(io_error)?;
        written.map_err(|e| io_error(format_args!("dead-letter file {}: {e}", self.path.display())))
    }

    fn write_blocking(&self, letters: &[DeadLetter]) -> std::io::Result<()> {
        let mut buffer = String::new();
        for letter in letters {
            buffer.push_str(&letter.line);
            buffer.push('\n');
        }
        let mut guard = self.file.lock();
        let file = match guard.as_mut() {
            Some(file) => file,
            None => {
                let created = !self.path.exists();
                let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
                if created {
                    // The new file's directory entry must be durable too.
                    if let Some(dir) = self.path.parent() {
                        File::open(dir)?.sync_all()?;
                    }
                }
                guard.insert(file)
            }
        };
        let written = file.write_all(buffer.as_bytes()).and_then(|()| file.sync_data());
        if written.is_err() {
            // Reopen next time rather than trust a handle that failed.
            *guard = None;
        }
        written
    }
}

/// Moves every message held for `sink`, which no sink of the configuration has any more,
/// to the dead-letter file, and keeps doing so for any that still arrive, until `stop`.
pub(super) async fn drain_unconfigured(outbox: Outbox, sink: String, queue: Arc<SinkQueue>, stop: CancellationToken) {
    let mut head = 0;
    loop {
        let end = queue.readable_end();
        let batch = tokio::select! {
            batch = outbox.read(&sink, head, end, UNCONFIGURED_BATCH) => batch,
            () = stop.cancelled() => return,
        };
        let pause = match batch {
            Ok(batch) if batch.is_empty() => {
                tokio::select! {
                    () = queue.notify.notified() => continue,
                    () = stop.cancelled() => return,
                }
            }
            Ok(batch) => {
                let seqs: Vec<u64> = batch.iter().map(|e| e.seq).collect();
                let letters =
                    batch.iter().map(|e| DeadLetter::new(&sink, e.message.as_ref(), 0, UNCONFIGURED)).collect();
                match outbox.inner.dead_letters.write(letters).await {
                    Ok(()) => {
                        tracing::error!(
                            sink,
                            messages = seqs.len(),
                            left = queue.pending.load(Ordering::Acquire).saturating_sub(seqs.len() as u64),
                            "outbox: messages for a sink that is no longer configured moved to the dead-letter file"
                        );
                        head = seqs.last().map_or(head, |s| s + 1);
                        outbox.delete(&sink, seqs);
                        continue;
                    }
                    Err(error) => error,
                }
            }
            Err(OutboxError::Closed) => return,
            Err(error) => error,
        };
        tracing::error!(sink, error = %pause, "outbox: cannot dead-letter messages of an unconfigured sink; trying again");
        tokio::select! {
            () = tokio::time::sleep(FAILURE_PAUSE) => {}
            () = stop.cancelled() => return,
        }
    }
}

//! [`RedisStreamSink`]: `XADD` over one lazily made, shared connection.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, RedisResult, Value};

use super::RedisStreamConfig;
use super::classify::{breaks_connection, classify};
use crate::sinks::{BatchOutcome, Delivered, RoutedMessage, Sink, SinkBuildError, SinkError};

/// A Redis stream sink.
pub struct RedisStreamSink {
    name: String,
    client: Client,
    stream: String,
    max_len: u64,
    timeout: Duration,
    connection: Mutex<Slot>,
}

/// The connection in use, if any, and a generation that tells a stale "drop it" (from a
/// command that ran on an older connection) from a current one.
#[derive(Default)]
struct Slot {
    generation: u64,
    manager: Option<ConnectionManager>,
}

impl std::fmt::Debug for RedisStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info holds the password.
        f.debug_struct("RedisStreamSink")
            .field("name", &self.name)
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds the `[sinks.NAME]` Redis stream sink from its (validated) configuration.
///
/// Does not connect, so it succeeds while Redis is down: the first command connects, and a
/// Redis that is down is reported by [`Sink::check`] and by sends.
pub async fn build(name: &str, config: &RedisStreamConfig) -> Result<RedisStreamSink, SinkBuildError> {
    // Only parses the URL: `Client::open` makes no connection.
    let client = Client::open(config.url.as_str())
        .map_err(|e| SinkBuildError { name: name.to_owned(), message: format!("url: {e}") })?;
    Ok(RedisStreamSink {
        name: name.to_owned(),
        client,
        stream: config.stream.clone(),
        max_len: config.max_len,
        timeout: config.timeout,
        connection: Mutex::new(Slot::default()),
    })
}

impl RedisStreamSink {
    /// The name of the sink (`[sinks.NAME]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `XADD <stream> MAXLEN ~ <max_len> * messageId … data <envelope>` (the entry's fields
    /// are the contract in the module docs).
    fn xadd(&self, message: &RoutedMessage) -> Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("messageId")
            .arg(message.message_id.as_str())
            .arg("action")
            .arg(&message.action)
            .arg("connectionId")
            .arg(&message.connection_id)
            .arg("userId")
            .arg(&message.user_id)
            .arg("requestId")
            .arg(message.request_id.as_deref().unwrap_or_default())
            .arg("receivedAt")
            .arg(message.received_at())
            .arg("data")
            .arg(message.envelope());
        cmd
    }

    /// The current connection (made lazily: the manager connects on its first command, and
    /// concurrent first commands share that one connect), with its generation.
    fn connection(&self) -> Result<(u64, ConnectionManager), SinkError> {
        let mut slot = self.connection.lock();
        if let Some(manager) = &slot.manager {
            return Ok((slot.generation, manager.clone()));
        }
        let config = ConnectionManagerConfig::new()
            // One connect attempt per command: reconnect loops with backoff are the shared
            // retry policy's job, and a hidden one would eat the command's timeout.
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.timeout))
            // The default (500 ms) would cut a large pipeline short of the configured timeout.
            .set_response_timeout(Some(self.timeout));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| SinkError::Unavailable(format!("cannot set up a connection: {e}")))?;
        slot.manager = Some(manager.clone());
        Ok((slot.generation, manager))
    }

    /// Drops the connection of `generation` (if it is still the current one), so the next
    /// command makes a new one. The manager reconnects by itself after a dropped
    /// connection, but not after a failed handshake (it keeps answering the cached error)
    /// nor from a half-open connection that only times out; a fresh one always recovers.
    fn drop_connection(&self, generation: u64) {
        let mut slot = self.connection.lock();
        if slot.generation == generation {
            slot.manager = None;
            slot.generation += 1;
        }
    }

    /// Runs `command` on the connection, bounded by the configured timeout, classifying a
    /// failure and dropping a connection it broke.
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, SinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, manager) = self.connection()?;
        match tokio::time::timeout(self.timeout, command(manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if breaks_connection(&error) {
                    self.drop_connection(generation);
                }
                Err(classify(&error))
            }
            Err(_) => {
                // The command's outcome is unknown (it may have been applied): at-least-once.
                self.drop_connection(generation);
                Err(SinkError::Unavailable(format!("no answer within {:?}", self.timeout)))
            }
        }
    }
}

#[async_trait]
impl Sink for RedisStreamSink {
    async fn send(&self, message: &RoutedMessage) -> Result<Delivered, SinkError> {
        let xadd = self.xadd(message);
        self.run(|mut connection| async move { xadd.query_async::<Value>(&mut connection).await }).await?;
        Ok(Delivered::default())
    }

    /// All `XADD`s of the batch in one pipeline: one round trip, applied in order.
    ///
    /// The pipeline is not a transaction: Redis runs every command even if one fails. So
    /// the outcome reports the prefix before the first failed `XADD` as delivered and that
    /// failure as the error; entries after it were added too and will be added again when
    /// the rest is retried (at-least-once; consumers de-duplicate on `messageId`). If the
    /// round trip itself fails (I/O, timeout), which entries Redis applied is unknown, so
    /// none is reported delivered.
    async fn send_batch(&self, messages: &[RoutedMessage]) -> BatchOutcome {
        if messages.is_empty() {
            return BatchOutcome::default();
        }
        let mut pipeline = redis::pipe();
        for message in messages {
            pipeline.add_command(self.xadd(message));
        }
        // Per-command results instead of one error for the whole pipeline: the delivered
        // prefix is then exact.
        pipeline.ignore_errors();
        let answers = self
            .run(|mut connection| async move { pipeline.query_async::<Vec<RedisResult<Value>>>(&mut connection).await })
            .await;
        let mut outcome = BatchOutcome::default();
        match answers {
            Ok(answers) => {
                for answer in answers {
                    if let Err(error) = answer {
                        outcome.error = Some(classify(&error));
                        break;
                    }
                    outcome.delivered.push(Delivered::default());
                }
                if outcome.error.is_none() && outcome.delivered.len() < messages.len() {
                    // Fewer answers than commands: never seen, but never report more
                    // delivered than confirmed.
                    outcome.error = Some(SinkError::Failed(format!(
                        "{} answers to {} XADDs",
                        outcome.delivered.len(),
                        messages.len()
                    )));
                }
                outcome.delivered.truncate(messages.len());
            }
            Err(error) => outcome.error = Some(error),
        }
        outcome
    }

    /// `PING`.
    async fn check(&self) -> Result<(), SinkError> {
        self.run(|mut connection| async move { redis::cmd("PING").query_async::<Value>(&mut connection).await })
            .await
            .map(drop)
    }
}

//! `[sinks.NAME] kind = "redis_stream"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sinks::config::{SinkConfigError, check_url};

/// A Redis stream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// The stream's key.
    pub stream: String,
    /// Approximate length the stream is trimmed to on each `XADD` (`MAXLEN ~`).
    #[serde(default = "default_max_len")]
    pub max_len: u64,
    /// How long one command may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_max_len() -> u64 {
    1_000_000
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl RedisStreamConfig {
    /// Checks the settings without touching the network.
    pub fn validate(&self, name: &str) -> Result<(), SinkConfigError> {
        check_url(&format!("sinks.{name}.url"), &self.url, &["redis"])?;
        if self.stream.is_empty() {
            return Err(SinkConfigError::invalid(format!("sinks.{name}.stream"), "must not be empty"));
        }
        if self.max_len == 0 {
            return Err(SinkConfigError::invalid(format!("sinks.{name}.max_len"), "must be more than 0"));
        }
        if self.timeout.is_zero() {
            return Err(SinkConfigError::invalid(format!("sinks.{name}.timeout"), "must be more than 0"));
        }
        Ok(())
    }
}

//! `[sinks.NAME] kind = "sqs"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sinks::config::{SinkConfigError, check_url};

/// An SQS queue.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// The queue's URL; a name ending in `.fifo` is a FIFO queue.
    pub queue_url: String,
    /// An SQS-compatible endpoint instead of AWS's (e.g. `http://127.0.0.1:4566`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The AWS region; default: the one an AWS queue URL names (`sqs.REGION.amazonaws.com`),
    /// else the standard chain (`AWS_REGION`, profile, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// FIFO queues: what a message's `MessageGroupId` is (ordering holds per group).
    #[serde(default)]
    pub message_group_id: MessageGroup,
    /// How long one SQS call may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// FIFO `MessageGroupId` choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum MessageGroup {
    /// One group per connection: a connection's messages stay in order (the default).
    #[default]
    #[serde(rename = "connectionId")]
    ConnectionId,
    /// One group per user.
    #[serde(rename = "userId")]
    UserId,
    /// One group per action.
    #[serde(rename = "action")]
    Action,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SqsConfig {
    /// Whether the queue is FIFO (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.queue_url.trim_end_matches('/').ends_with(".fifo")
    }

    /// Checks the settings without touching the network.
    pub fn validate(&self, name: &str) -> Result<(), SinkConfigError> {
        check_url(&format!("sinks.{name}.queue_url"), &self.queue_url, &["https", "http"])?;
        if let Some(endpoint) = &self.endpoint_url {
            check_url(&format!("sinks.{name}.endpoint_url"), endpoint, &["https", "http"])?;
        }
        if self.timeout.is_zero() {
            return Err(SinkConfigError::invalid(format!("sinks.{name}.timeout"), "must be more than 0"));
        }
        Ok(())
    }
}

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
    /// An SQS-compatible endpoint instead of AWS's (e.g. `http://127.0.0.1:4566`); unset,
    /// a queue URL outside AWS (moto, LocalStack, ElasticMQ) is its own endpoint.
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

    /// Where SQS calls go: `endpoint_url` when set; else, for a queue URL whose host is
    /// not AWS's (`*.amazonaws.com`), that URL's scheme, host and port — so one config
    /// file serves a local moto and AWS, with the queue URLs from the environment; else
    /// `None`: the SDK's endpoint for the region.
    pub fn endpoint(&self) -> Option<String> {
        if let Some(endpoint) = &self.endpoint_url {
            return Some(endpoint.clone());
        }
        let url = url::Url::parse(&self.queue_url).ok()?;
        let host = url.host_str()?;
        let aws = [".amazonaws.com", ".amazonaws.com.cn", ".api.aws"].iter().any(|suffix| host.ends_with(suffix));
        if aws {
            return None;
        }
        Some(url.origin().ascii_serialization())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sqs(queue_url: &str, endpoint_url: Option<&str>) -> SqsConfig {
        SqsConfig {
            queue_url: queue_url.into(),
            endpoint_url: endpoint_url.map(String::from),
            region: None,
            message_group_id: MessageGroup::default(),
            timeout: default_timeout(),
        }
    }

    #[test]
    fn a_queue_url_outside_aws_is_its_own_endpoint() {
        let local = sqs("http://127.0.0.1:5000/123456789012/pm-agents", None);
        assert_eq!(local.endpoint().as_deref(), Some("http://127.0.0.1:5000"));
        let aws = sqs("https://sqs.us-east-1.amazonaws.com/123456789012/pm-agents", None);
        assert_eq!(aws.endpoint(), None, "AWS queues use the SDK's regional endpoint");
        let vpc =
            sqs("https://sqs.us-east-1.amazonaws.com/1/q", Some("https://vpce-1.sqs.us-east-1.vpce.amazonaws.com"));
        assert_eq!(vpc.endpoint().as_deref(), Some("https://vpce-1.sqs.us-east-1.vpce.amazonaws.com"), "explicit wins");
    }
}

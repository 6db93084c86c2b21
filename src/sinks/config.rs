//! The routing part of the configuration: `[[routes]]`, `[sinks.NAME]`, `[routing]` and
//! `[storage]` (SPEC §7). Pure data and validation; building sinks is the composition
//! root's job.
//!
//! This module sits below `crate::config`, which embeds these types: it must never import
//! `crate::config`. Validation reports a [`SinkConfigError`] naming the setting, and
//! `crate::config` maps it into its own error unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;
use super::{http, redis_stream, sqs};

/// An invalid sink or routing setting, naming it (`sinks.NAME.timeout`, …).
///
/// The same text as `crate::config::ConfigError::Invalid`, into which it converts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct SinkConfigError {
    /// The setting, as TOML path.
    pub setting: String,
    /// What is wrong and what to set.
    pub message: String,
}

impl SinkConfigError {
    pub(crate) fn invalid(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self { setting: setting.into(), message: message.into() }
    }
}

/// `[[routes]]`: an action (and optional field equalities) → a sink.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The client message's `action`.
    pub action: String,
    /// Fields the message must have with exactly these values (at the top level or
    /// inside `data`), e.g. `when = { type = "dev" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, toml::Value>,
    /// The sink's name (`[sinks.NAME]`).
    pub sink: String,
}

/// `[sinks.NAME]`: one backend, by `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// An AWS SQS queue (standard or FIFO).
    Sqs(sqs::SqsConfig),
    /// An HTTP webhook receiving API Gateway Lambda-proxy events.
    Http(http::HttpConfig),
    /// A Redis stream (`XADD`).
    RedisStream(redis_stream::RedisStreamConfig),
}

impl SinkConfig {
    /// The `kind` as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqs(_) => "sqs",
            Self::Http(_) => "http",
            Self::RedisStream(_) => "redis_stream",
        }
    }

    /// Where the sink delivers, for `check-config`: the queue URL, the webhook URL, or the
    /// Redis URL (password hidden) and stream.
    pub fn target(&self) -> String {
        match self {
            Self::Sqs(c) => match c.endpoint() {
                Some(endpoint) => format!("{} via {}", c.queue_url, hide_password(&endpoint)),
                None => c.queue_url.clone(),
            },
            Self::Http(c) => hide_password(&c.url),
            Self::RedisStream(c) => format!("{} stream {}", hide_password(&c.url), c.stream),
        }
    }

    /// Checks the sink's settings without touching the network.
    pub fn validate(&self, name: &str) -> Result<(), SinkConfigError> {
        match self {
            Self::Sqs(c) => c.validate(name),
            Self::Http(c) => c.validate(name),
            Self::RedisStream(c) => c.validate(name),
        }
    }
}

/// `[routing]`: how messages reach sinks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Without an outbox: how long a client waits for `accepted` before it gets
    /// `SINK_UNAVAILABLE` (retries included).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// How often sinks are health-checked (at start-up, then at this interval).
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// The shared retry policy (`[routing.retry]`).
    pub retry: RetryPolicy,
    /// The outbox's bound in messages, across sinks; full → `SINK_UNAVAILABLE`.
    pub outbox_max_messages: u64,
    /// The outbox's bound in bytes of stored messages, across sinks.
    pub outbox_max_bytes: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            outbox_max_messages: 1_000_000,
            outbox_max_bytes: 1 << 30,
        }
    }
}

/// `[storage]`: local state on disk.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the outbox (and dead letters) live; unset = no outbox, inline delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// Checks that `url` is an absolute URL with a host and one of `schemes`, naming
/// `setting` if not.
pub(crate) fn check_url(setting: &str, url: &str, schemes: &[&str]) -> Result<url::Url, SinkConfigError> {
    let expected = || format!("expected {}://host…", schemes.join("|"));
    let parsed =
        url::Url::parse(url).map_err(|e| SinkConfigError::invalid(setting, format!("{url:?}: {e}; {}", expected())))?;
    if !schemes.contains(&parsed.scheme()) || parsed.host_str().is_none_or(str::is_empty) {
        return Err(SinkConfigError::invalid(setting, format!("{url:?}: {}", expected())));
    }
    Ok(parsed)
}

/// `scheme://user:***@host…` for a URL that carries a password (anything else as it is),
/// for output an operator reads.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", path.map(|p| format!("/{p}")).unwrap_or_default())
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod target_tests {
    use super::hide_password;

    #[test]
    fn targets_never_show_a_password() {
        assert_eq!(hide_password("redis://u:secret@h:6379/0"), "redis://u:***@h:6379/0");
        assert_eq!(hide_password("https://hooks.example.com/a?b=c"), "https://hooks.example.com/a?b=c");
        assert_eq!(hide_password("https://user@h/x"), "https://user@h/x");
        assert_eq!(hide_password("not a url"), "not a url");
    }
}

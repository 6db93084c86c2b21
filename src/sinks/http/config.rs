//! `[sinks.NAME] kind = "http"`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sinks::config::{SinkConfigError, check_url};

/// A webhook.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where each message is POSTed.
    pub url: String,
    /// Extra request headers (e.g. an `Authorization` the webhook checks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long one request may take, answer included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `requestContext.stage` in the event.
    #[serde(default = "default_stage")]
    pub stage: String,
    /// `requestContext.domainName` in the event; default: the `url`'s host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_stage() -> String {
    "signalbox".into()
}

impl HttpConfig {
    /// Checks the settings without touching the network.
    pub fn validate(&self, name: &str) -> Result<(), SinkConfigError> {
        check_url(&format!("sinks.{name}.url"), &self.url, &["https", "http"])?;
        for (header, value) in &self.headers {
            let valid = axum::http::HeaderName::from_bytes(header.as_bytes()).is_ok()
                && axum::http::HeaderValue::from_str(value).is_ok();
            if !valid {
                return Err(SinkConfigError::invalid(
                    format!("sinks.{name}.headers.{header}"),
                    "not a valid HTTP header name and value",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(SinkConfigError::invalid(format!("sinks.{name}.timeout"), "must be more than 0"));
        }
        Ok(())
    }
}

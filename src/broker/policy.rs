//! How much history each topic keeps, and how much all topics may keep together.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Config;
use crate::domain::Topic;

/// History kept for the topics of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Events kept per topic; 0 keeps none.
    pub size: usize,
    /// How long an event stays in history; zero keeps none.
    pub ttl: Duration,
    /// How long retained state is kept after it was last set.
    pub retained_ttl: Duration,
}

impl HistoryPolicy {
    /// Whether this policy keeps any history at all.
    pub fn keeps_history(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// Per-namespace policies and the global memory bound of all history.
#[derive(Debug, Clone)]
pub struct HistoryLimits {
    default: HistoryPolicy,
    namespaces: HashMap<String, HistoryPolicy>,
    /// Bytes all topics' history and retained state may take; beyond it the oldest events
    /// (across all topics) are evicted first.
    pub max_bytes: usize,
}

impl HistoryLimits {
    /// `default` for every namespace, bounded by `max_bytes` in all.
    pub fn new(default: HistoryPolicy, max_bytes: usize) -> Self {
        Self { default, namespaces: HashMap::new(), max_bytes }
    }

    /// Uses `policy` for the topics of `namespace`.
    pub fn with_namespace(mut self, namespace: &str, policy: HistoryPolicy) -> Self {
        self.namespaces.insert(namespace.to_owned(), policy);
        self
    }

    /// The limits the configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        let of = |n: &crate::config::NamespaceConfig| HistoryPolicy {
            size: n.history_size,
            ttl: n.history_ttl,
            retained_ttl: n.retained_ttl,
        };
        let mut limits = Self::new(of(&crate::config::NamespaceConfig::default()), config.history.max_bytes);
        for (name, namespace) in &config.namespaces {
            limits = limits.with_namespace(name, of(namespace));
        }
        limits
    }

    /// The policy of `topic`'s namespace.
    pub fn policy(&self, topic: &Topic) -> HistoryPolicy {
        self.namespaces.get(topic.namespace()).copied().unwrap_or(self.default)
    }
}

//! Environment variables onto the configuration tree: one naming rule for every setting.
//!
//! The rule: `SIGNALBOX_` + the setting's TOML path, keys joined by `__`, upper-case, with
//! `-` and `.` inside a key written `_`. So `limits.rate_per_second` is
//! `SIGNALBOX_LIMITS__RATE_PER_SECOND`, `namespaces.job.history_size` is
//! `SIGNALBOX_NAMESPACES__JOB__HISTORY_SIZE`, `sinks.dev-agents.queue_url` is
//! `SIGNALBOX_SINKS__DEV_AGENTS__QUEUE_URL` and `routes[0].sink` is
//! `SIGNALBOX_ROUTES__0__SINK`. Top-level settings have a single segment
//! (`SIGNALBOX_LISTEN`, `SIGNALBOX_BROKER`), which is why SPEC's pinned names fit the rule.
//!
//! A value takes the type the setting has in the tree it lands on (defaults < file):
//! numbers and booleans are parsed, lists of strings are comma-separated, durations stay
//! strings for the typed parse that follows. A setting absent from the tree (an unset
//! optional one, a key of a new namespace) is a string; a namespace that only the
//! environment names starts from the namespace defaults.
//!
//! SPEC pins a few shorter names (`SIGNALBOX_JWT_SECRET`, `SIGNALBOX_API_KEYS`,
//! `SIGNALBOX_LOG`, …); they are aliases applied first, so the rule's name wins when both
//! are set. A name with `__` that matches no setting is an error — a typo must never leave
//! a default silently in place. A single-segment name that is no setting
//! (`SIGNALBOX_CONFIG`, a client's `SIGNALBOX_URL`) is not ours to judge and is ignored.
//!
//! This module owns the naming rule and the coercion of text to a setting's type. It must
//! never read the process environment directly (it takes an [`Environment`]) nor decide
//! precedence against the file or flags (the loader does).

use super::{Config, ConfigError, Environment, NamespaceConfig};

/// The prefix of every variable the gateway reads.
pub const PREFIX: &str = "SIGNALBOX_";

/// Names pinned by SPEC §2 that predate the rule, with the path each one sets.
pub const ALIASES: &[(&str, &[&str])] = &[
    ("SIGNALBOX_JWT_SECRET", &["auth", "jwt_secret"]),
    ("SIGNALBOX_JWT_PUBLIC_KEY_FILE", &["auth", "jwt_public_key_file"]),
    ("SIGNALBOX_JWT_ISSUER", &["auth", "jwt_issuer"]),
    ("SIGNALBOX_JWT_AUDIENCE", &["auth", "jwt_audience"]),
    ("SIGNALBOX_API_KEYS", &["auth", "api_keys"]),
    ("SIGNALBOX_APIGW_CREDENTIALS", &["apigw", "credentials"]),
    ("SIGNALBOX_ADMIN_PASSWORD", &["admin", "password"]),
    ("SIGNALBOX_LOG", &["log", "level"]),
    ("SIGNALBOX_LOG_FORMAT", &["log", "format"]),
];

/// The variable that names a setting's path under the rule.
pub fn env_name(path: &[&str]) -> String {
    let mut name = String::from(PREFIX);
    for (i, key) in path.iter().enumerate() {
        if i > 0 {
            name.push_str("__");
        }
        name.push_str(&normalize(key));
    }
    name
}

fn normalize(key: &str) -> String {
    key.chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_uppercase() }).collect()
}

/// Applies every `SIGNALBOX_*` variable of `env` to `tree` (the serialized configuration),
/// checking after each one that the tree still reads as a [`Config`], so an error names
/// the variable at fault.
pub fn apply(tree: &mut toml::Value, env: &dyn Environment) -> Result<(), ConfigError> {
    for (name, path) in ALIASES {
        if let Some(raw) = env.var(name) {
            let path: Vec<String> = path.iter().map(|k| normalize(k)).collect();
            set(tree, name, &path, &raw)?;
        }
    }
    let mut names: Vec<(String, String)> = env.vars_with_prefix(PREFIX);
    names.sort();
    for (name, raw) in names {
        if ALIASES.iter().any(|(alias, _)| *alias == name) {
            continue;
        }
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let segments: Vec<String> = rest.split("__").map(str::to_owned).collect();
        if segments.len() == 1 && !has_key(tree, &segments[0]) {
            continue;
        }
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(&name, "has an empty segment; the rule is SIGNALBOX_SECTION__KEY"));
        }
        set(tree, &name, &segments, &raw)?;
    }
    Ok(())
}

fn has_key(tree: &toml::Value, segment: &str) -> bool {
    tree.as_table().is_some_and(|t| t.keys().any(|k| normalize(k) == segment))
}

/// Sets one variable's value at `segments` (already in the rule's upper-case form).
fn set(tree: &mut toml::Value, name: &str, segments: &[String], raw: &str) -> Result<(), ConfigError> {
    let mut path = String::new();
    let mut node = &mut *tree;
    for (depth, segment) in segments.iter().enumerate() {
        let last = depth + 1 == segments.len();
        let in_namespaces = depth == 1 && path == "namespaces";
        node = match node {
            toml::Value::Table(table) => {
                let key = match table.keys().find(|k| normalize(k) == *segment) {
                    Some(key) => key.clone(),
                    None => {
                        let key = segment.to_ascii_lowercase();
                        let fresh = if last {
                            toml::Value::String(String::new())
                        } else if in_namespaces {
                            namespace_defaults(name)?
                        } else {
                            toml::Value::Table(toml::Table::new())
                        };
                        table.insert(key.clone(), fresh);
                        key
                    }
                };
                push_key(&mut path, &key);
                match table.get_mut(&key) {
                    Some(next) => next,
                    None => return Err(ConfigError::invalid(name, "could not be placed in the configuration")),
                }
            }
            toml::Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| {
                    ConfigError::invalid(
                        name,
                        format!("`{path}` is a list: the segment after it is an index, got {segment:?}"),
                    )
                })?;
                let len = items.len();
                path.push_str(&format!("[{index}]"));
                items.get_mut(index).ok_or_else(|| {
                    ConfigError::invalid(name, format!("`{path}` does not exist: the list has {len} item(s)"))
                })?
            }
            _ => {
                return Err(ConfigError::invalid(name, format!("`{path}` is a single setting, not a section")));
            }
        };
    }
    let setting = format!("{path} ({name})");
    *node = coerce(node, raw).map_err(|message| ConfigError::invalid(&setting, message))?;
    tree.clone().try_into::<Config>().map(drop).map_err(|e| {
        let mut message = e.to_string().trim_end().to_owned();
        if message.contains("expected a duration") {
            message.push_str(" (write it with a unit: 30s, 500ms, 2m, 1h)");
        }
        ConfigError::invalid(&setting, message)
    })
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn namespace_defaults(name: &str) -> Result<toml::Value, ConfigError> {
    toml::Value::try_from(NamespaceConfig::default()).map_err(|e| ConfigError::invalid(name, e.to_string()))
}

/// `raw` as a value of the type `current` has.
fn coerce(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match current {
        toml::Value::String(_) | toml::Value::Datetime(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.parse().map_err(|_| format!("expected a whole number, got {raw:?}"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.parse().map_err(|_| format!("expected a number, got {raw:?}"))?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(
            parse_bool(raw).ok_or_else(|| format!("expected 1/0/true/false/yes/no/on/off, got {raw:?}"))?,
        ),
        toml::Value::Array(items) => {
            let items_are_tables = items.iter().any(toml::Value::is_table);
            if items_are_tables {
                return Err("is a list of sections: set one item's key, e.g. NAME__0__KEY".to_owned());
            }
            let element = items.first().cloned().unwrap_or_else(|| toml::Value::String(String::new()));
            let values: Result<Vec<_>, _> = split_list(raw).iter().map(|item| coerce(&element, item)).collect();
            toml::Value::Array(values?)
        }
        toml::Value::Table(_) => return Err("is a section: set one of its keys, e.g. NAME__KEY".to_owned()),
    })
}

/// A comma-separated list, blanks dropped.
pub fn split_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Booleans as people write them in environment files.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Every optional setting given, a namespace, one sink of each kind and routes, so
    /// the walk below reaches every setting there is.
    const FULL: &str = r#"
        [auth]
        jwt_secret = "file-secret-0123456789"
        jwt_public_key_file = "/etc/signalbox/jwt.pem"
        jwt_issuer = "https://auth.example.com"
        jwt_audience = "signalbox"
        api_keys = ["file-key"]
        [storage]
        data_dir = "/var/lib/signalbox"
        [namespaces.job]
        client_publish = true
        [sinks.dev-agents]
        kind = "sqs"
        queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/dev-agents"
        endpoint_url = "http://127.0.0.1:5000"
        region = "us-east-1"
        [sinks.jobs]
        kind = "http"
        url = "http://127.0.0.1:9000/ws-events"
        headers = { x-team = "jobs" }
        domain_name = "ws.example.com"
        [sinks.chat]
        kind = "redis_stream"
        url = "redis://127.0.0.1:6379"
        stream = "chat-in"
        [[routes]]
        action = "forward"
        when = { type = "dev" }
        sink = "dev-agents"
        [actions]
        subscribeToDeals = "subscribe"
        [apigw]
        credentials = ["AKIDEXAMPLE:file-secret"]
        connect_url = "http://127.0.0.1:9000/connect"
        disconnect_url = "http://127.0.0.1:9000/disconnect"
    "#;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn full() -> Config {
        Config::from_toml(FULL).unwrap()
    }

    fn with_env(base: &Config, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut config = base.clone();
        config.apply_env(&env(pairs))?;
        Ok(config)
    }

    fn tree(config: &Config) -> toml::Value {
        toml::Value::try_from(config).unwrap()
    }

    fn leaves(value: &toml::Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, toml::Value)>) {
        match value {
            toml::Value::Table(table) => {
                for (key, item) in table {
                    path.push(key.clone());
                    leaves(item, path, out);
                    path.pop();
                }
            }
            toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    leaves(item, path, out);
                    path.pop();
                }
            }
            leaf => out.push((path.clone(), leaf.clone())),
        }
    }

    fn at<'a>(value: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
        path.iter().try_fold(value, |node, key| match node {
            toml::Value::Array(items) => items.get(key.parse::<usize>().ok()?),
            other => other.get(key),
        })
    }

    /// Text for the environment and the value it must become, different from `current`;
    /// strings try a few shapes until one is valid for the setting (durations, enums).
    fn candidates(current: &toml::Value) -> Vec<(String, toml::Value)> {
        match current {
            toml::Value::Boolean(b) => vec![((!b).to_string(), toml::Value::Boolean(!b))],
            toml::Value::Integer(n) => vec![((n + 1).to_string(), toml::Value::Integer(n + 1))],
            toml::Value::Float(f) => vec![((f + 0.5).to_string(), toml::Value::Float(f + 0.5))],
            toml::Value::Array(_) => {
                let list = ["env-a", "env-b"].map(|s| toml::Value::String(s.to_owned())).to_vec();
                vec![("env-a, env-b".to_owned(), toml::Value::Array(list))]
            }
            _ => ["17s", "text", "owner", "userId", "env-value", "https://env.example.com/queue"]
                .iter()
                .filter(|s| current.as_str() != Some(**s))
                .map(|s| ((*s).to_owned(), toml::Value::String((*s).to_owned())))
                .collect(),
        }
    }

    #[test]
    fn every_setting_is_reachable_through_the_environment_by_the_rule() {
        let base = full();
        let mut all = Vec::new();
        leaves(&tree(&base), &mut Vec::new(), &mut all);
        let defaults = tree(&Config::default());
        let mut default_leaves = Vec::new();
        leaves(&defaults, &mut Vec::new(), &mut default_leaves);
        for (path, _) in &default_leaves {
            assert!(all.iter().any(|(p, _)| p.starts_with(path)), "the walk misses default setting {path:?}");
        }
        let mut walked = 0;
        for (path, current) in all {
            if path.first().map(String::as_str) == Some("sinks") && path.last().map(String::as_str) == Some("kind") {
                continue; // the kind picks the sink's type; changing it needs the other kind's keys
            }
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            let name = env_name(&keys);
            let set = candidates(&current).into_iter().find_map(|(raw, expected)| {
                let config = with_env(&base, &[(&name, &raw)]).ok()?;
                Some((config, expected))
            });
            let Some((config, expected)) = set else {
                panic!("no value set through {name} was accepted for {path:?} (currently {current})");
            };
            assert_eq!(at(&tree(&config), &path), Some(&expected), "{name} did not set {path:?}");
            walked += 1;
        }
        assert!(walked >= 60, "walked only {walked} settings");
    }

    #[test]
    fn the_names_follow_one_rule() {
        assert_eq!(env_name(&["limits", "rate_per_second"]), "SIGNALBOX_LIMITS__RATE_PER_SECOND");
        assert_eq!(env_name(&["sinks", "dev-agents", "queue_url"]), "SIGNALBOX_SINKS__DEV_AGENTS__QUEUE_URL");
        assert_eq!(env_name(&["listen"]), "SIGNALBOX_LISTEN", "SPEC's pinned top-level names fit the rule");
        assert_eq!(env_name(&["routes", "0", "sink"]), "SIGNALBOX_ROUTES__0__SINK");
    }

    #[test]
    fn unset_optional_settings_and_new_namespaces_can_be_set() {
        let c = with_env(
            &Config::default(),
            &[
                ("SIGNALBOX_AUTH__JWT_ISSUER", "https://auth.example.com"),
                ("SIGNALBOX_STORAGE__DATA_DIR", "/data"),
                ("SIGNALBOX_NAMESPACES__JOB__HISTORY_SIZE", "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.auth.jwt_issuer.as_deref(), Some("https://auth.example.com"));
        assert_eq!(c.storage.data_dir, Some("/data".into()));
        let job = c.namespace("job");
        assert_eq!(job.history_size, 5);
        assert_eq!(job.history_ttl, NamespaceConfig::default().history_ttl, "the rest keeps the namespace defaults");
    }

    #[test]
    fn the_rule_wins_over_the_pinned_aliases_and_the_file() {
        let c = with_env(
            &full(),
            &[
                ("SIGNALBOX_JWT_SECRET", "alias-secret-0123456789"),
                ("SIGNALBOX_AUTH__JWT_SECRET", "rule-secret-0123456789"),
            ],
        )
        .unwrap();
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("rule-secret-0123456789"));
        let c = with_env(&full(), &[("SIGNALBOX_API_KEYS", "k1,k2"), ("SIGNALBOX_LOG_FORMAT", "text")]).unwrap();
        assert_eq!(c.auth.api_keys, ["k1", "k2"], "the alias wins over the file");
        assert_eq!(c.log.format, super::super::LogFormat::Text);
    }

    #[test]
    fn typos_and_bad_values_are_errors_naming_the_variable() {
        let cases = [
            ("SIGNALBOX_LIMITS__RATE_PER_SECONDS", "10", "rate_per_seconds"),
            ("SIGNALBOX_LIMTS__RATE_PER_SECOND", "10", "limts"),
            ("SIGNALBOX_LIMITS__RATE_PER_SECOND", "fast", "whole number"),
            ("SIGNALBOX_LIMITS", "10", "section"),
            ("SIGNALBOX_DEV__MODE", "1", "not a section"),
            ("SIGNALBOX_ROUTES__5__SINK", "x", "1 item"),
            ("SIGNALBOX_ROUTES__FIRST__SINK", "x", "index"),
            ("SIGNALBOX_SHUTDOWN__GRACE_PERIOD", "30", "with a unit"),
            ("SIGNALBOX_LOG_FORMAT", "xml", "xml"),
            ("SIGNALBOX_LIMITS____X", "1", "empty segment"),
        ];
        for (name, value, expected) in cases {
            let message = with_env(&full(), &[(name, value)]).unwrap_err().to_string();
            assert!(message.contains(name), "{name}: {message}");
            assert!(message.contains(expected), "{name}: {message}");
        }
    }

    #[test]
    fn single_segment_names_that_are_no_setting_belong_to_someone_else() {
        let c = with_env(&full(), &[("SIGNALBOX_CONFIG", "/etc/x.toml"), ("SIGNALBOX_URL", "ws://x")]).unwrap();
        assert_eq!(c, full());
    }
}

//! Checks run before any port is bound; each error names its setting.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, ConfigError};

impl Config {
    /// Rejects invalid or unsafe settings. Outside dev mode a server needs at least one
    /// credential (a JWT key or an API key), or it would either accept nobody or everybody.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                "listen (SIGNALBOX_LISTEN, --listen)",
                format!("{:?} is not an ip:port address: {e}", self.listen),
            )
        })?;
        let auth = &self.auth;
        let has_jwt = auth.jwt_secret.is_some() || auth.jwt_public_key_file.is_some();
        if !self.dev && !has_jwt && auth.api_keys.is_empty() {
            return Err(ConfigError::invalid(
                "auth",
                "no credentials configured: set SIGNALBOX_JWT_SECRET (or SIGNALBOX_JWT_PUBLIC_KEY_FILE) for client \
                 tokens and SIGNALBOX_API_KEYS for the backend API, or run with --dev for local development",
            ));
        }
        if let Some(secret) = &auth.jwt_secret
            && secret.len() < 16
            && !self.dev
        {
            return Err(ConfigError::invalid(
                "auth.jwt_secret (SIGNALBOX_JWT_SECRET)",
                "must be at least 16 bytes; use a long random string",
            ));
        }
        if auth.api_keys.iter().any(|k| k.len() < 8) {
            return Err(ConfigError::invalid(
                "auth.api_keys (SIGNALBOX_API_KEYS)",
                "every API key must be at least 8 characters",
            ));
        }
        if self.cluster.presence_ttl < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid("cluster.presence_ttl", "must be at least 1s"));
        }
        // The URL itself is parsed when the broker is built (same setting named).
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"];
        if self.broker != "memory" && !SCHEMES.iter().any(|s| self.broker.starts_with(s)) {
            return Err(ConfigError::invalid(
                "broker (SIGNALBOX_BROKER)",
                "expected `memory`, redis://[user:password@]host:port[/db], rediss://…, redis+cluster://host:port[,host:port…] or rediss+cluster://…",
            ));
        }
        for origin in &self.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(ConfigError::invalid(
                    "allowed_origins (SIGNALBOX_ALLOWED_ORIGINS)",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::invalid("log.level (SIGNALBOX_LOG)", e.to_string()))?;
        self.validate_limits()?;
        self.validate_http()?;
        self.validate_timing()?;
        if self.history.max_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid("history.max_bytes", "must be at least 1048576 (1 MiB)"));
        }
        for (name, namespace) in &self.namespaces {
            if name.is_empty() || name.contains(':') || crate::domain::Topic::parse(name).is_err() {
                return Err(ConfigError::invalid(format!("namespaces.{name}"), "not a valid namespace name"));
            }
            if namespace.retained_ttl < std::time::Duration::from_secs(1) {
                return Err(ConfigError::invalid(format!("namespaces.{name}.retained_ttl"), "must be at least 1s"));
            }
        }
        self.validate_apigw()?;
        self.validate_admin()?;
        self.validate_routing()
    }

    /// `[admin]`: a password long enough to face the network, a session that lasts.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        if a.enabled() && a.password.chars().count() < 12 {
            return Err(ConfigError::invalid(
                "admin.password (SIGNALBOX_ADMIN_PASSWORD)",
                "must be at least 12 characters",
            ));
        }
        if a.session_ttl < Duration::from_secs(60) {
            return Err(ConfigError::invalid("admin.session_ttl", "must be at least 1m"));
        }
        if a.login_attempts_per_minute == 0 {
            return Err(ConfigError::invalid("admin.login_attempts_per_minute", "must be more than 0"));
        }
        Ok(())
    }

    /// `[apigw]`: the webhook URLs, the timeout and the POST bound.
    fn validate_apigw(&self) -> Result<(), ConfigError> {
        let a = &self.apigw;
        for (key, url) in [("connect_url", &a.connect_url), ("disconnect_url", &a.disconnect_url)] {
            if let Some(url) = url {
                crate::sinks::config::check_url(&format!("apigw.{key}"), url, &["https", "http"])?;
            }
        }
        if a.timeout.is_zero() {
            return Err(ConfigError::invalid("apigw.timeout", "must be more than 0"));
        }
        // The `$connect` call runs inside the upgrade request, which must be answered
        // within `http.request_timeout`: a longer webhook timeout could never take effect.
        if a.connect_url.is_some() && a.timeout >= self.http.request_timeout {
            return Err(ConfigError::invalid(
                "apigw.timeout",
                format!(
                    "must be shorter than http.request_timeout ({}): the $connect call runs inside the upgrade request",
                    humantime::format_duration(self.http.request_timeout)
                ),
            ));
        }
        if a.max_post_size == 0 {
            return Err(ConfigError::invalid("apigw.max_post_size", "must be more than 0"));
        }
        if a.stage.is_empty() {
            return Err(ConfigError::invalid("apigw.stage", "must not be empty"));
        }
        crate::auth::SigV4Verifier::from_pairs(&a.credentials)
            .map_err(|e| ConfigError::invalid("apigw.credentials (SIGNALBOX_APIGW_CREDENTIALS)", e.to_string()))?;
        Ok(())
    }

    /// Sinks are well-formed, every route names a configured sink, no route shadows a
    /// built-in action, and `when` compares with plain values.
    fn validate_routing(&self) -> Result<(), ConfigError> {
        for (name, sink) in &self.sinks {
            let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid_name {
                return Err(ConfigError::invalid(
                    format!("sinks.{name}"),
                    "a sink name uses only letters, digits, '-', '_' and '.'",
                ));
            }
            sink.validate(name)?;
        }
        for (alias, target) in &self.actions {
            let setting = format!("actions.{alias}");
            let built_in = crate::domain::BUILT_IN_ACTIONS;
            if alias.is_empty() {
                return Err(ConfigError::invalid(setting, "an alias must not be empty"));
            }
            if built_in.contains(&alias.as_str()) {
                return Err(ConfigError::invalid(
                    setting,
                    format!("{alias:?} is a built-in action; an alias cannot shadow it"),
                ));
            }
            if self.routes.iter().any(|r| r.action == *alias) {
                return Err(ConfigError::invalid(
                    setting,
                    format!("{alias:?} is also a routed action ([[routes]]); a name is either an alias or routed"),
                ));
            }
            if !built_in.contains(&target.as_str()) {
                return Err(ConfigError::invalid(
                    setting,
                    format!("{target:?} is not a built-in action (one of {built_in:?})"),
                ));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            let setting = |key: &str| format!("routes[{i}].{key} (action {:?})", route.action);
            if route.action.is_empty() {
                return Err(ConfigError::invalid(setting("action"), "must not be empty"));
            }
            if crate::domain::BUILT_IN_ACTIONS.contains(&route.action.as_str()) {
                return Err(ConfigError::invalid(
                    setting("action"),
                    format!("{:?} is a built-in action and cannot be routed", route.action),
                ));
            }
            if !self.sinks.contains_key(&route.sink) {
                let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
                return Err(ConfigError::invalid(
                    setting("sink"),
                    format!("no sink named {:?} is configured (configured: {known:?})", route.sink),
                ));
            }
            for (field, value) in &route.when {
                if matches!(value, toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)) {
                    return Err(ConfigError::invalid(
                        setting(&format!("when.{field}")),
                        "compare with a string, number or boolean",
                    ));
                }
            }
        }
        let r = &self.routing;
        if r.deadline.is_zero() {
            return Err(ConfigError::invalid("routing.deadline", "must be more than 0"));
        }
        if r.health_check_interval < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid("routing.health_check_interval", "must be at least 1s"));
        }
        if r.retry.max_attempts == 0 {
            return Err(ConfigError::invalid("routing.retry.max_attempts", "must be at least 1"));
        }
        if r.retry.initial_backoff.is_zero() || r.retry.max_backoff < r.retry.initial_backoff {
            return Err(ConfigError::invalid(
                "routing.retry.initial_backoff / max_backoff",
                "initial_backoff must be more than 0 and at most max_backoff",
            ));
        }
        if r.outbox_max_messages == 0 || r.outbox_max_bytes < 1024 * 1024 {
            return Err(ConfigError::invalid(
                "routing.outbox_max_messages / outbox_max_bytes",
                "the outbox needs room for at least 1 message and 1 MiB",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let at_least = |name: &str, value: usize, min: usize| {
            if value < min {
                Err(ConfigError::invalid(format!("limits.{name}"), format!("must be at least {min}, got {value}")))
            } else {
                Ok(())
            }
        };
        at_least("max_message_size", l.max_message_size, 256)?;
        at_least("rate_per_second", l.rate_per_second as usize, 1)?;
        at_least("rate_burst", l.rate_burst as usize, 1)?;
        at_least("max_subscriptions", l.max_subscriptions, 2)?;
        at_least("max_connections", l.max_connections, 1)?;
        at_least("max_connections_per_ip", l.max_connections_per_ip, 1)?;
        at_least("send_queue_events", l.send_queue_events, 8)?;
        at_least("send_queue_bytes", l.send_queue_bytes, 1024)?;
        at_least("max_api_body_size", l.max_api_body_size, 1024)?;
        if l.max_message_size > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid("limits.max_message_size", "must be at most 16 MiB"));
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        for (name, value) in [
            ("handshake_timeout", h.handshake_timeout),
            ("idle_timeout", h.idle_timeout),
            ("request_timeout", h.request_timeout),
        ] {
            if value < std::time::Duration::from_millis(10) {
                return Err(ConfigError::invalid(format!("http.{name}"), "must be at least 10ms"));
            }
        }
        if !(1024..=1024 * 1024).contains(&h.max_header_bytes) {
            return Err(ConfigError::invalid(
                "http.max_header_bytes",
                format!("must be between 1024 and 1048576, got {}", h.max_header_bytes),
            ));
        }
        if h.max_pending_connections == 0 || h.max_pending_connections_per_ip == 0 {
            return Err(ConfigError::invalid(
                "http.max_pending_connections / http.max_pending_connections_per_ip",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), ConfigError> {
        let w = &self.websocket;
        if w.ping_interval.is_zero() || w.pong_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "websocket.ping_interval / websocket.pong_timeout",
                "must be greater than zero",
            ));
        }
        if w.read_buffer_size < 256 {
            return Err(ConfigError::invalid("websocket.read_buffer_size", "must be at least 256"));
        }
        if self.shutdown.grace_period.is_zero() {
            return Err(ConfigError::invalid("shutdown.grace_period", "must be greater than zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(config: &Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn action_aliases_name_a_built_in_and_shadow_nothing() {
        let with = |toml: &str| {
            let mut config = Config::from_toml(toml).unwrap();
            config.dev = true;
            config.validate().map_err(|e| e.to_string())
        };
        assert!(with("[actions]\nsubscribeToDeals = \"subscribe\"\nleaveDeals = \"unsubscribe\"").is_ok());
        let err = with("[actions]\nsubscribe = \"unsubscribe\"").unwrap_err();
        assert!(err.contains("actions.subscribe") && err.contains("shadow"), "{err}");
        let err = with("[actions]\nsubscribeToDeals = \"frobnicate\"").unwrap_err();
        assert!(err.contains("actions.subscribeToDeals") && err.contains("not a built-in"), "{err}");
        let routed = "[actions]\nsendMessage = \"publish\"\n[[routes]]\naction = \"sendMessage\"\nsink = \"s\"\n[sinks.s]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"";
        let err = with(routed).unwrap_err();
        assert!(err.contains("actions.sendMessage") && err.contains("routed"), "{err}");
    }

    #[test]
    fn apigw_settings_are_checked() {
        let with = |toml: &str| {
            let mut config = Config::from_toml(toml).unwrap();
            config.dev = true;
            config.validate().map_err(|e| e.to_string())
        };
        assert!(
            with("[apigw]\ncredentials = [\"AKID:s:with:colons\"]\nconnect_url = \"http://127.0.0.1:9/c\"").is_ok()
        );
        for (toml, named) in [
            ("[apigw]\ncredentials = [\"AKID\"]", "apigw.credentials"),
            ("[apigw]\nconnect_url = \"not a url\"", "apigw.connect_url"),
            ("[apigw]\ndisconnect_url = \"ftp://h/x\"", "apigw.disconnect_url"),
            ("[apigw]\ntimeout = \"0s\"", "apigw.timeout"),
            ("[apigw]\nconnect_url = \"http://h/c\"\ntimeout = \"30s\"", "http.request_timeout"),
            ("[apigw]\nmax_post_size = 0", "apigw.max_post_size"),
            ("[apigw]\nstage = \"\"", "apigw.stage"),
        ] {
            let err = with(toml).unwrap_err();
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    #[test]
    fn refuses_to_run_without_credentials() {
        let err = named(&Config::default());
        assert!(err.contains("SIGNALBOX_JWT_SECRET") && err.contains("--dev"), "{err}");
        let dev = Config { dev: true, ..Config::default() };
        assert!(dev.validate().is_ok());
    }

    #[test]
    fn errors_name_the_setting() {
        let mut c = Config { dev: true, ..Config::default() };
        c.listen = "nope".into();
        assert!(named(&c).contains("SIGNALBOX_LISTEN"));
        let mut c = Config { dev: true, ..Config::default() };
        c.limits.max_message_size = 1;
        assert!(named(&c).contains("limits.max_message_size"));
        let mut c = Config { dev: true, ..Config::default() };
        c.broker = "kafka://x".into();
        assert!(named(&c).contains("SIGNALBOX_BROKER"));
        let mut c = Config { dev: true, ..Config::default() };
        c.log.level = "[[".into();
        assert!(named(&c).contains("SIGNALBOX_LOG"));
        let mut c = Config { dev: true, ..Config::default() };
        c.allowed_origins = vec!["example.com".into()];
        assert!(named(&c).contains("SIGNALBOX_ALLOWED_ORIGINS"));
        let mut c = Config { dev: true, ..Config::default() };
        c.websocket.read_buffer_size = 255;
        let err = named(&c);
        assert!(err.contains("websocket.read_buffer_size") && err.contains("256"), "{err}");
        c.websocket.read_buffer_size = 256;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn history_bounds_are_checked() {
        let mut c = Config { dev: true, ..Config::default() };
        c.history.max_bytes = 1000;
        let err = named(&c);
        assert!(err.contains("history.max_bytes") && err.contains("1 MiB"), "{err}");
        let mut c = Config { dev: true, ..Config::default() };
        c.namespaces.entry("job".into()).or_default().retained_ttl = std::time::Duration::ZERO;
        let err = named(&c);
        assert!(err.contains("namespaces.job.retained_ttl") && err.contains("1s"), "{err}");
        let mut c = Config { dev: true, ..Config::default() };
        c.namespaces.entry("job".into()).or_default().history_size = 0;
        c.namespaces.entry("chat".into()).or_default().history_ttl = std::time::Duration::ZERO;
        assert!(c.validate().is_ok(), "0 turns history off; it is not an error");
    }
}

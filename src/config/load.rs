//! Layering: defaults < TOML file < environment < flags.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Environment};

/// Settings given as command-line flags (they win over everything else).
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--dev`.
    pub dev: bool,
}

/// Where configuration comes from.
pub struct ConfigSources<'a> {
    /// `--config FILE` (falls back to `SIGNALBOX_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// The environment.
    pub env: &'a dyn Environment,
    /// Command-line flags.
    pub flags: FlagOverrides,
}

impl Config {
    /// Builds and validates the configuration from all sources.
    pub fn load(sources: &ConfigSources<'_>) -> Result<Self, ConfigError> {
        let file = sources.config_file.clone().or_else(|| sources.env.var("SIGNALBOX_CONFIG").map(PathBuf::from));
        let mut config = match file {
            Some(path) => Self::from_file_with(&path, sources.env)?,
            None => Self::default(),
        };
        config.apply_env(sources.env)?;
        if let Some(listen) = &sources.flags.listen {
            config.listen.clone_from(listen);
        }
        if sources.flags.dev {
            config.dev = true;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file (unknown keys are errors), expanding `${VAR}` in its strings
    /// from the process environment.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_with(path, &super::ProcessEnvironment)
    }

    /// Parses a TOML file, expanding `${VAR}` and `${VAR:-default}` in its strings from
    /// `env` (see [`super::interpolate`]).
    pub fn from_file_with(path: &Path, env: &dyn Environment) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
        let parse = |message: String| ConfigError::Parse { path: path.to_owned(), message };
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| parse(e.to_string().trim_end().to_owned()))?;
        super::interpolate::expand_value(&mut value, env)
            .map_err(|(setting, error)| ConfigError::invalid(setting, error.to_string()))?;
        value.try_into().map_err(|e: toml::de::Error| parse(e.to_string().trim_end().to_owned()))
    }

    /// Parses TOML text, expanding `${VAR}` in its strings from the process environment.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        super::interpolate::expand_value(&mut value, &super::ProcessEnvironment)
            .map_err(|(setting, error)| format!("invalid setting {setting}: {error}"))?;
        value.try_into().map_err(|e: toml::de::Error| e.to_string().trim_end().to_owned())
    }

    /// The environment on top of this configuration: first the names existing
    /// deployments use (`WEBSOCKET_HOST`/`WEBSOCKET_PORT`), then every `SIGNALBOX_*`
    /// variable by the naming rule of [`super::overlay`], which therefore wins over them.
    pub(super) fn apply_env(&mut self, env: &dyn Environment) -> Result<(), ConfigError> {
        self.apply_websocket_host_port(env)?;
        let mut tree = toml::Value::try_from(&*self).map_err(|e| {
            ConfigError::invalid("configuration", format!("cannot be laid out for the environment: {e}"))
        })?;
        super::overlay::apply(&mut tree, env)?;
        *self = tree
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::invalid("environment", e.to_string().trim_end().to_owned()))?;
        Ok(())
    }

    fn apply_websocket_host_port(&mut self, env: &dyn Environment) -> Result<(), ConfigError> {
        let (host, port) = (env.var("WEBSOCKET_HOST"), env.var("WEBSOCKET_PORT"));
        if host.is_none() && port.is_none() {
            return Ok(());
        }
        let (current_host, current_port) = self.listen.rsplit_once(':').unwrap_or((self.listen.as_str(), "8080"));
        let host = host.unwrap_or_else(|| current_host.to_owned());
        let port = port.unwrap_or_else(|| current_port.to_owned());
        if port.parse::<u16>().is_err() {
            return Err(ConfigError::invalid("listen (WEBSOCKET_PORT)", format!("{port:?} is not a port number")));
        }
        self.listen = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn layers_toml_then_env_then_flags() {
        let mut file = tempfile();
        writeln!(
            file.1,
            "listen = \"127.0.0.1:1\"\ndev = true\n[auth]\napi_keys = [\"file-key-1\"]\n[limits]\nrate_burst = 7"
        )
        .unwrap();
        let e = env(&[("SIGNALBOX_LISTEN", "127.0.0.1:2"), ("SIGNALBOX_API_KEYS", "key-aaaa, key-bbbb,,key-cccc")]);
        let sources = ConfigSources { config_file: Some(file.0.clone()), env: &e, flags: FlagOverrides::default() };
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.auth.api_keys, ["key-aaaa", "key-bbbb", "key-cccc"]);
        assert_eq!(c.limits.rate_burst, 7);
        let flags = FlagOverrides { listen: Some("127.0.0.1:3".into()), dev: false };
        let c = Config::load(&ConfigSources { flags, ..sources }).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
        assert!(c.dev, "a flag that is absent does not undo the file's setting");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::from_toml("[limits]\nmax_mesage_size = 1").unwrap_err();
        assert!(err.contains("max_mesage_size"), "{err}");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let e = env(&[("SIGNALBOX_DEV", "maybe")]);
        let sources = ConfigSources { config_file: None, env: &e, flags: FlagOverrides::default() };
        let err = Config::load(&sources).unwrap_err().to_string();
        assert!(err.contains("SIGNALBOX_DEV"), "{err}");
    }

    #[test]
    fn default_config_text_is_the_default() {
        assert_eq!(Config::from_toml(super::super::DEFAULT_CONFIG_TOML).unwrap(), Config::default());
    }

    #[test]
    fn the_file_interpolates_the_environment_and_names_what_is_missing() {
        let mut file = tempfile();
        writeln!(
            file.1,
            "dev = true\nbroker = \"redis://${{REDIS_HOST}}:${{REDIS_PORT:-6379}}\"\n[auth]\napi_keys = [\"${{KEY}}\", \"$$literal-key\"]"
        )
        .unwrap();
        let e = env(&[("REDIS_HOST", "cache.internal"), ("KEY", "key-from-env")]);
        let sources = ConfigSources { config_file: Some(file.0.clone()), env: &e, flags: FlagOverrides::default() };
        let c = Config::load(&sources).unwrap();
        assert_eq!(c.broker, "redis://cache.internal:6379");
        assert_eq!(c.auth.api_keys, vec!["key-from-env".to_owned(), "$literal-key".to_owned()]);
        let e = env(&[("REDIS_HOST", "cache.internal")]);
        let sources = ConfigSources { config_file: Some(file.0.clone()), env: &e, flags: FlagOverrides::default() };
        let message = Config::load(&sources).unwrap_err().to_string();
        assert!(message.contains("auth.api_keys[0]") && message.contains("${KEY}"), "{message}");
        let _ = std::fs::remove_file(file.0);
    }

    #[test]
    fn websocket_host_and_port_set_the_listen_address_below_signalbox_listen() {
        let load = |pairs: &[(&str, &str)]| {
            let e = env(pairs);
            Config::load(&ConfigSources {
                config_file: None,
                env: &e,
                flags: FlagOverrides { listen: None, dev: true },
            })
        };
        assert_eq!(load(&[("WEBSOCKET_HOST", "0.0.0.0"), ("WEBSOCKET_PORT", "9000")]).unwrap().listen, "0.0.0.0:9000");
        assert_eq!(load(&[("WEBSOCKET_PORT", "9001")]).unwrap().listen, "127.0.0.1:9001");
        assert_eq!(load(&[("WEBSOCKET_HOST", "::")]).unwrap().listen, "[::]:8080");
        let both = load(&[("WEBSOCKET_PORT", "9002"), ("SIGNALBOX_LISTEN", "127.0.0.1:9003")]).unwrap();
        assert_eq!(both.listen, "127.0.0.1:9003", "SIGNALBOX_LISTEN wins");
        let message = load(&[("WEBSOCKET_PORT", "http")]).unwrap_err().to_string();
        assert!(message.contains("WEBSOCKET_PORT"), "{message}");
    }

    fn tempfile() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("signalbox-test-{}.toml", rand::random::<u64>()));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }
}

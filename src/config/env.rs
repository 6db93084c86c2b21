//! Reading the process environment through a trait, so tests never call `set_var`.

use std::collections::HashMap;

/// A source of environment variables.
pub trait Environment {
    /// The variable's value, if set (empty values count as unset).
    fn var(&self, name: &str) -> Option<String>;

    /// Every set variable whose name starts with `prefix` (empty values count as unset),
    /// so the loader can find settings and typos it does not know by name.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        // vars_os: a variable that is not UTF-8 is skipped here instead of panicking;
        // none of ours can be such.
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .collect()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

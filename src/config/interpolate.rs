//! `${VAR}` and `${VAR:-default}` in the configuration file's string values (SPEC §10).
//!
//! The file is parsed as TOML first and only then are its strings (at any depth, in tables
//! and arrays) expanded, so a value can never break the file's syntax or reach another
//! setting. `$$` is a literal `$`; any other `$` is kept as it is. `${VAR:-default}` takes
//! the default when `VAR` is unset or empty (as the shell does); `${VAR}` with `VAR` unset
//! is an error naming the setting and the variable. Numbers and booleans are never
//! expanded: a setting that takes one is set from the environment instead.
//!
//! This module owns the syntax only; it never reads the process environment directly.

use super::Environment;

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// `${VAR}` with `VAR` unset and no default.
    #[error("uses ${{{0}}}, which is not set; set it, or give a default: ${{{0}:-…}}")]
    Unset(String),
    /// `${` without its `}`.
    #[error("has `${{` without a closing `}}`; write `$$` for a literal `$`")]
    Unterminated,
    /// `${…}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("has `${{{0}}}`: a variable name is letters, digits and `_`, not starting with a digit")]
    BadName(String),
}

/// Expands every string in `value` (recursively); the error names the setting's path
/// (`sinks.pm.queue_url`, `auth.api_keys[1]`).
pub fn expand_value(value: &mut toml::Value, env: &dyn Environment) -> Result<(), (String, InterpolationError)> {
    expand_at(value, env, &mut String::new())
}

fn expand_at(
    value: &mut toml::Value,
    env: &dyn Environment,
    path: &mut String,
) -> Result<(), (String, InterpolationError)> {
    match value {
        toml::Value::String(text) if text.contains('$') => {
            *text = expand(text, env).map_err(|e| (path.clone(), e))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_at(item, env, path)?;
                path.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_at(item, env, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands one string.
pub fn expand(text: &str, env: &dyn Environment) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or(InterpolationError::Unterminated)?;
            let expression = &inner[..end];
            let (name, default) = match expression.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expression, None),
            };
            if !is_name(name) {
                return Err(InterpolationError::BadName(expression.to_owned()));
            }
            match (env.var(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(InterpolationError::Unset(name.to_owned())),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        let e = env(&[("HOST", "redis.internal"), ("EMPTY", ""), ("Q", "https://sqs/q?a=1&b=\"x\"")]);
        assert_eq!(expand("redis://${HOST}:6379", &e).unwrap(), "redis://redis.internal:6379");
        assert_eq!(expand("${PORT:-6379}", &e).unwrap(), "6379");
        assert_eq!(expand("${EMPTY:-fallback}", &e).unwrap(), "fallback", "empty counts as unset");
        assert_eq!(expand("${HOST:-unused}", &e).unwrap(), "redis.internal");
        assert_eq!(expand("${NOPE:-}", &e).unwrap(), "");
        assert_eq!(expand("cost: $$5 and $HOME and a lone $", &e).unwrap(), "cost: $5 and $HOME and a lone $");
        assert_eq!(expand("$${HOST}", &e).unwrap(), "${HOST}");
        assert_eq!(expand("${Q}", &e).unwrap(), "https://sqs/q?a=1&b=\"x\"");
        assert_eq!(expand("${A:-x:-y}", &e).unwrap(), "x:-y");
    }

    #[test]
    fn refuses_unset_unterminated_and_bad_names() {
        let e = env(&[]);
        assert_eq!(expand("x${MISSING}", &e), Err(InterpolationError::Unset("MISSING".into())));
        assert_eq!(expand("${OPEN", &e), Err(InterpolationError::Unterminated));
        assert_eq!(expand("${1X}", &e), Err(InterpolationError::BadName("1X".into())));
        assert_eq!(expand("${}", &e), Err(InterpolationError::BadName(String::new())));
        assert!(InterpolationError::Unset("SQS_QUEUE_URL_PM".into()).to_string().contains("${SQS_QUEUE_URL_PM}"));
    }

    #[test]
    fn walks_nested_tables_and_arrays_and_names_the_setting() {
        let e = env(&[("URL", "https://q"), ("K", "key-1")]);
        let mut value: toml::Value =
            toml::from_str("n = 5\n[auth]\napi_keys = [\"${K}\", \"plain\"]\n[sinks.pm]\nqueue_url = \"${URL}/pm\"\n")
                .unwrap();
        expand_value(&mut value, &e).unwrap();
        assert_eq!(value["auth"]["api_keys"][0].as_str(), Some("key-1"));
        assert_eq!(value["sinks"]["pm"]["queue_url"].as_str(), Some("https://q/pm"));
        assert_eq!(value["n"].as_integer(), Some(5));
        let mut bad: toml::Value = toml::from_str("[auth]\napi_keys = [\"ok\", \"${NOPE}\"]\n").unwrap();
        let (path, error) = expand_value(&mut bad, &e).unwrap_err();
        assert_eq!((path.as_str(), error), ("auth.api_keys[1]", InterpolationError::Unset("NOPE".into())));
    }

    proptest! {
        /// Text without `$` is unchanged, `$$` always gives `$`, and nothing panics.
        #[test]
        fn plain_text_is_untouched_and_nothing_panics(text in "[^$]{0,40}", any in ".{0,60}") {
            let e = env(&[("X", "y")]);
            prop_assert_eq!(expand(&text, &e).unwrap(), text.clone());
            prop_assert_eq!(expand(&format!("$${text}"), &e).unwrap(), format!("${text}"));
            let _ = expand(&any, &e);
        }
    }
}

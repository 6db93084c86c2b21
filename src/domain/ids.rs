//! Connection and user identifiers.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh id `<prefix>_<unix-ms>_<16 hex random>`: sortable by creation time at a glance,
/// unguessable, and unique without coordination (64 random bits per millisecond).
pub fn unique_id(prefix: &str) -> String {
    let random: u64 = rand::random();
    format!("{prefix}_{}_{random:016x}", unix_millis(SystemTime::now()))
}

/// `at` as Unix milliseconds (0 before the epoch, saturating far after it).
pub fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A connection id, `conn_<unix-ms>_<random>` (SPEC §1).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// Mints a fresh, unguessable id.
    pub fn generate() -> Self {
        Self(Arc::from(unique_id("conn")))
    }

    /// Wraps an id received from outside (e.g. an API path). Unknown ids simply match nothing.
    pub fn from_external(raw: &str) -> Self {
        Self(Arc::from(raw))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the connection was created, in Unix milliseconds of the clock of the node that
    /// minted the id; `None` for an id not in the `conn_<unix-ms>_<random>` form.
    pub fn created_at_ms(&self) -> Option<i64> {
        let rest = self.0.strip_prefix("conn_")?;
        let (millis, _) = rest.split_once('_')?;
        millis.parse().ok()
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: the `sub` claim of the connection's token, or `anonymous` in dev mode.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct UserId(Arc<str>);

impl UserId {
    /// The user id dev mode gives to connections without a token.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// Wraps a subject claim.
    pub fn new(sub: &str) -> Self {
        Self(Arc::from(sub))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_id_has_spec_shape() {
        let id = ConnectionId::generate();
        let parts: Vec<&str> = id.as_str().split('_').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "conn");
        assert!(parts[1].parse::<u128>().is_ok());
        assert!(!parts[2].is_empty());
        assert_ne!(id, ConnectionId::generate());
    }

    #[test]
    fn connection_ids_tell_when_they_were_minted() {
        let before = unix_millis(SystemTime::now());
        let id = ConnectionId::generate();
        let at = id.created_at_ms().unwrap();
        assert!(at >= before && at <= unix_millis(SystemTime::now()), "{id}");
        for other in ["conn_x_1", "conn_12", "user_12_a", ""] {
            assert_eq!(ConnectionId::from_external(other).created_at_ms(), None, "{other}");
        }
    }
}

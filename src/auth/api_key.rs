//! Backend API keys (several at once, for rotation), compared in constant time.

use subtle::ConstantTimeEq;

/// The configured API keys.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<Vec<u8>>);

impl ApiKeys {
    /// Wraps the configured keys.
    pub fn new(keys: &[String]) -> Self {
        Self(keys.iter().map(|k| k.as_bytes().to_vec()).collect())
    }

    /// Whether `presented` equals one of the keys. Every key is compared, so timing does
    /// not reveal which one matched or how much of it.
    pub fn verify(&self, presented: &str) -> bool {
        let presented = presented.as_bytes();
        self.0.iter().fold(false, |found, key| found | bool::from(key.as_slice().ct_eq(presented)))
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_verifies() {
        let keys = ApiKeys::new(&["old-key-123".into(), "new-key-456".into()]);
        assert!(keys.verify("old-key-123"));
        assert!(keys.verify("new-key-456"));
        assert!(!keys.verify("new-key-45"));
        assert!(!keys.verify(""));
        assert!(!ApiKeys::default().verify(""));
    }
}

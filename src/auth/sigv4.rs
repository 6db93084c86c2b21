//! AWS Signature V4 verification for the API Gateway management API (service
//! `execute-api`).
//!
//! Placeholder until the verifier lands: it parses the credential pairs and refuses every
//! signature, so `/@connections` accepts only API key bearers (and dev mode) for now.

use std::time::SystemTime;

use axum::http::HeaderMap;

/// Credentials and verifier for SigV4-signed requests to service `execute-api`.
#[derive(Clone, Default)]
pub struct SigV4Verifier {
    key_ids: Vec<String>,
}

impl std::fmt::Debug for SigV4Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Verifier").field("key_ids", &self.key_ids).finish_non_exhaustive()
    }
}

/// A request as it arrived, for verification.
pub struct SignedRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The raw path as sent.
    pub path: &'a str,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// Why a request's signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    /// No signature verification yet.
    #[error("SigV4 signatures are not verified yet")]
    Unsupported,
}

/// A bad credential entry.
#[derive(Debug, thiserror::Error)]
pub enum SigV4ConfigError {
    /// Not `ACCESS_KEY_ID:SECRET`.
    #[error("apigw.credentials[{0}]: expected ACCESS_KEY_ID:SECRET")]
    Malformed(usize),
}

impl SigV4Verifier {
    /// From `ACCESS_KEY_ID:SECRET` entries.
    pub fn from_pairs(pairs: &[String]) -> Result<Self, SigV4ConfigError> {
        let mut key_ids = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            match pair.split_once(':') {
                Some((id, secret)) if !id.is_empty() && !secret.is_empty() => key_ids.push(id.to_owned()),
                _ => return Err(SigV4ConfigError::Malformed(i)),
            }
        }
        Ok(Self { key_ids })
    }

    /// Whether no pairs are configured.
    pub fn is_empty(&self) -> bool {
        self.key_ids.is_empty()
    }

    /// Refuses every request (placeholder).
    pub fn verify(&self, _request: &SignedRequest<'_>, _now: SystemTime) -> Result<String, SigV4Error> {
        Err(SigV4Error::Unsupported)
    }
}

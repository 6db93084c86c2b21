//! Who a client is and what it may do.
//!
//! This module owns token verification (behind the [`Authenticator`] trait), backend API
//! keys, AWS SigV4 verification for `/@connections` and topic access rules. It must never
//! hand-roll cryptography (`jsonwebtoken`, `subtle`, `aws-sigv4` and `sha2` do that) and never
//! depends on the transport: callers pass token strings and request parts in.

mod acl;
mod api_key;
mod jwt;
mod sigv4;

pub use acl::AccessPolicy;
pub use api_key::ApiKeys;
pub use jwt::{JwtAuthenticator, JwtKeyError};
pub use sigv4::{SigV4ConfigError, SigV4Error, SigV4Verifier, SignedRequest};

use crate::domain::{TopicPattern, UserId};

/// The latest `exp` a token may carry: 9999-12-31T23:59:59Z, the last second RFC 3339 (four
/// digit years) can write, so the `expiresAt` of a `refreshed` reply is always valid.
/// Tokens expiring later are refused as invalid.
pub const MAX_EXPIRY_UNIX_S: u64 = 253_402_300_799;

/// A verified client identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The `sub` claim (or `anonymous` in dev mode).
    pub user: UserId,
    /// `role: admin` may subscribe to anything.
    pub admin: bool,
    /// The token's `topics` claim.
    pub topics: Vec<TopicPattern>,
    /// `exp` as unix seconds, at most [`MAX_EXPIRY_UNIX_S`]; `None` only for dev-mode
    /// anonymous connections.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The identity dev mode gives to a client without a token.
    pub fn anonymous() -> Self {
        Self { user: UserId::new(UserId::ANONYMOUS), admin: false, topics: Vec::new(), expires_at: None }
    }
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("a token is required: pass ?token=… or Authorization: Bearer …")]
    Missing,
    /// The token is past its `exp`.
    #[error("token expired")]
    Expired,
    /// Bad signature, algorithm, claims or shape.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies client tokens.
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `token` and returns the identity it carries.
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Refuses every token: used when no JWT key is configured (API-key-only servers).
#[derive(Debug, Default)]
pub struct NoTokens;

impl Authenticator for NoTokens {
    fn authenticate(&self, _token: &str) -> Result<Identity, AuthError> {
        Err(AuthError::Invalid("this server has no JWT key configured".into()))
    }
}

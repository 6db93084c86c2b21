//! `signalbox token`: mint an HS256 client token (for development and tests).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::cli::TokenArgs;

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No secret to sign with.
    #[error("SIGNALBOX_JWT_SECRET is not set; it is the HS256 secret the token is signed with")]
    NoSecret,
    /// A `--claim` without `=`.
    #[error("--claim {0:?} must look like key=value")]
    BadClaim(String),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Builds and signs the token described by `args` (`signalbox token`; `signalbox-bench`
/// mints its clients' token with it too).
pub fn mint(args: &TokenArgs, secret: Option<&str>) -> Result<String, TokenError> {
    let secret = secret.filter(|s| !s.is_empty()).ok_or(TokenError::NoSecret)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut claims = Map::new();
    for claim in &args.claims {
        let (key, value) = claim.split_once('=').ok_or_else(|| TokenError::BadClaim(claim.clone()))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        claims.insert(key.to_owned(), value);
    }
    claims.insert("sub".into(), Value::from(args.sub.as_str()));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + args.ttl.as_secs()));
    if let Some(topics) = &args.topics {
        let list: Vec<Value> = topics.split(',').map(str::trim).filter(|t| !t.is_empty()).map(Value::from).collect();
        claims.insert("topics".into(), Value::Array(list));
    }
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

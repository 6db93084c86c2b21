//! JWT verification: HS256 with a shared secret, RS256/ES256 with a PEM public key.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{AuthError, Authenticator, Identity, MAX_EXPIRY_UNIX_S};
use crate::config::AuthConfig;
use crate::domain::{TopicPattern, UserId};

/// Why the configured JWT key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    /// The PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an RSA or EC public key in PEM.
    #[error("{0} is not an RSA or EC (P-256) public key in PEM format")]
    NotAKey(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: f64,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
}

/// Verifies tokens with the configured keys. `none` and every algorithm not configured
/// are refused.
pub struct JwtAuthenticator {
    secret: Option<(DecodingKey, Validation)>,
    public: Option<(DecodingKey, Validation)>,
}

impl JwtAuthenticator {
    /// Builds the verifier from configuration, reading the PEM file if one is set.
    pub fn from_config(config: &AuthConfig) -> Result<Self, JwtKeyError> {
        let validation = |algorithms: Vec<Algorithm>| {
            let mut v = Validation::new(algorithms[0]);
            v.algorithms = algorithms;
            v.leeway = config.jwt_leeway.as_secs();
            v.validate_nbf = true;
            let mut required = vec!["exp", "sub"];
            if let Some(iss) = &config.jwt_issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            match &config.jwt_audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    required.push("aud");
                }
                None => v.validate_aud = false,
            }
            v.set_required_spec_claims(&required);
            v
        };
        let secret = config
            .jwt_secret
            .as_ref()
            .map(|s| (DecodingKey::from_secret(s.as_bytes()), validation(vec![Algorithm::HS256])));
        let public = match &config.jwt_public_key_file {
            None => None,
            Some(path) => {
                let (key, algorithm) = read_public_key(path)?;
                Some((key, validation(vec![algorithm])))
            }
        };
        Ok(Self { secret, public })
    }
}

fn read_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), JwtKeyError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| JwtKeyError::Read { path: shown.clone(), source })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(JwtKeyError::NotAKey(shown))
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(describe(e.kind())))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            Algorithm::RS256 | Algorithm::ES256 => {
                self.public.as_ref().filter(|(_, v)| v.algorithms.contains(&header.alg))
            }
            _ => None,
        }
        .ok_or_else(|| AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            kind => AuthError::Invalid(describe(kind)),
        })?;
        let claims = data.claims;
        if claims.token_type.as_deref().is_some_and(|t| t != "access") {
            return Err(AuthError::Invalid("token_type must be `access`".into()));
        }
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("`sub` must not be empty".into()));
        }
        // `is_nan` too, though JSON cannot write one.
        if claims.exp.is_nan() || claims.exp > MAX_EXPIRY_UNIX_S as f64 {
            return Err(AuthError::Invalid("`exp` is after 9999-12-31T23:59:59Z".into()));
        }
        Ok(Identity {
            user: UserId::new(&claims.sub),
            admin: claims.role.as_deref() == Some("admin"),
            topics: claims.topics.iter().map(|p| TopicPattern::new(p)).collect(),
            expires_at: Some(claims.exp.max(0.0) as u64),
        })
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing claim `{c}`"),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted".into(),
        ErrorKind::Json(_) => "malformed claims".into(),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "test-secret-0123456789";

    fn auth() -> JwtAuthenticator {
        let config = AuthConfig { jwt_secret: Some(SECRET.into()), ..AuthConfig::default() };
        JwtAuthenticator::from_config(&config).unwrap()
    }

    fn sign(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn accepts_valid_and_reads_claims() {
        let id = auth()
            .authenticate(&sign(json!({"sub": "u1", "exp": now() + 60, "topics": ["job:*"], "role": "admin"})))
            .unwrap();
        assert_eq!(id.user.as_str(), "u1");
        assert!(id.admin);
        assert_eq!(id.topics.len(), 1);
    }

    #[test]
    fn refuses_bad_tokens() {
        let a = auth();
        assert_eq!(a.authenticate(&sign(json!({"sub": "u", "exp": now() - 5}))).unwrap_err(), AuthError::Expired);
        assert!(a.authenticate(&sign(json!({"sub": "u"}))).is_err(), "exp is required");
        assert!(a.authenticate(&sign(json!({"exp": now() + 60}))).is_err(), "sub is required");
        assert!(a.authenticate(&sign(json!({"sub": "u", "exp": now() + 60, "token_type": "refresh"}))).is_err());
        assert!(a.authenticate(&sign(json!({"sub": "u", "exp": now() + 60, "nbf": now() + 600}))).is_err());
        assert!(a.authenticate("garbage").is_err());
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-entirely"),
        )
        .unwrap();
        assert!(a.authenticate(&other).is_err());
    }

    #[test]
    fn exp_up_to_the_end_of_year_9999_is_accepted_and_later_refused() {
        let a = auth();
        let id = a.authenticate(&sign(json!({"sub": "u", "exp": MAX_EXPIRY_UNIX_S}))).unwrap();
        assert_eq!(id.expires_at, Some(MAX_EXPIRY_UNIX_S));
        for exp in [json!(MAX_EXPIRY_UNIX_S + 1), json!(253_402_300_800_u64 * 1000)] {
            let e = a.authenticate(&sign(json!({"sub": "u", "exp": exp}))).unwrap_err();
            assert!(matches!(&e, AuthError::Invalid(m) if m.contains("9999")), "{exp}: {e:?}");
        }
        // Beyond u64, jsonwebtoken itself cannot read the claim.
        assert!(a.authenticate(&sign(json!({"sub": "u", "exp": 1e300}))).is_err());
    }

    #[test]
    fn refuses_alg_none() {
        // {"alg":"none","typ":"JWT"} . {"sub":"u","exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(auth().authenticate(token).is_err());
    }
}

//! How the `apigw-post` clients authenticate a `/@connections/{id}` call: AWS Signature V4
//! for service `execute-api` (what boto3 and the AWS SDKs send), an API key bearer, or
//! nothing (a server in `--dev` mode).
//!
//! Owns the choice of credentials and the signing of one request. Signing goes through
//! the `aws-sigv4` crate with the settings the AWS SDKs use for API Gateway (double
//! percent-encoded path, payload hash not sent as a header, signature in the
//! `Authorization` header). It must never compute a signature by hand, never log a secret,
//! and never change a request's method, path or body after signing it.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use hyper::Request;
use hyper::header::{AUTHORIZATION, HeaderValue};

/// The service name API Gateway's management API signs for.
pub const SERVICE: &str = "execute-api";

/// How every request of a run is authenticated.
#[derive(Clone)]
pub enum Auth {
    /// No credentials (the server runs with `--dev`).
    None,
    /// `Authorization: Bearer <api key>`.
    Bearer(HeaderValue),
    /// AWS Signature V4, service `execute-api`.
    SigV4 {
        /// The key pair (as `aws-credential-types` holds it for the SDKs).
        credentials: Credentials,
        /// The signing region, e.g. `us-east-1`.
        region: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the secret.
        f.write_str(self.name())
    }
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The API key is not a valid header value.
    #[error("the API key cannot be sent in a header")]
    BadApiKey,
    /// `aws-sigv4` refused the request or the parameters.
    #[error("cannot sign the request: {0}")]
    SigV4(String),
}

impl Auth {
    /// SigV4 with one access key pair, in `region`.
    pub fn sigv4(access_key_id: &str, secret: &str, region: &str) -> Self {
        let credentials = Credentials::new(access_key_id, secret, None, None, "signalbox-bench");
        Self::SigV4 { credentials, region: region.to_owned() }
    }

    /// An API key bearer.
    pub fn bearer(api_key: &str) -> Result<Self, SignError> {
        let mut value = HeaderValue::try_from(format!("Bearer {api_key}")).map_err(|_| SignError::BadApiKey)?;
        value.set_sensitive(true);
        Ok(Self::Bearer(value))
    }

    /// The mode's name in the report: `sigv4`, `bearer` or `none`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bearer(_) => "bearer",
            Self::SigV4 { .. } => "sigv4",
        }
    }

    /// Adds the credentials to `request`, whose URI is a path (`/@connections/…`, already
    /// percent-encoded) and whose `Host` header is set; `body` is the request's body and
    /// `now` the signing time. SigV4 signs every header already on the request (as the SDKs
    /// sign theirs), then adds `x-amz-date` and `authorization`.
    pub fn apply<B>(&self, request: &mut Request<B>, body: &[u8], now: SystemTime) -> Result<(), SignError> {
        match self {
            Self::None => Ok(()),
            Self::Bearer(value) => {
                request.headers_mut().insert(AUTHORIZATION, value.clone());
                Ok(())
            }
            Self::SigV4 { credentials, region } => {
                let host = request.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
                let url = format!("http://{host}{}", request.uri());
                let identity = credentials.clone().into();
                let params = v4::SigningParams::builder()
                    .identity(&identity)
                    .region(region)
                    .name(SERVICE)
                    .time(now)
                    .settings(SigningSettings::default())
                    .build()
                    .map_err(|e| SignError::SigV4(e.to_string()))?
                    .into();
                let headers =
                    request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
                let signable = SignableRequest::new(request.method().as_str(), url, headers, SignableBody::Bytes(body))
                    .map_err(|e| SignError::SigV4(e.to_string()))?;
                let (instructions, _signature) =
                    sign(signable, &params).map_err(|e| SignError::SigV4(e.to_string()))?.into_parts();
                instructions.apply_to_request_http1x(request);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn request(body: &'static [u8]) -> Request<&'static [u8]> {
        Request::post("/@connections/conn_1765000000000_abc")
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    }

    /// The same request signed by botocore 1.43 (`SigV4Auth(Credentials("AKIDEXAMPLE",
    /// "secret-1"), "execute-api", "us-east-1")` on an `AWSRequest` with the same URL,
    /// headers and body at 2026-12-06T01:00:00Z): the signer here must agree with what
    /// boto3 sends, byte for byte.
    #[test]
    fn signs_as_botocore_does() {
        let body = br#"{"seq":1}"#;
        let mut r = request(body);
        let at = UNIX_EPOCH + Duration::from_secs(1_796_518_800);
        Auth::sigv4("AKIDEXAMPLE", "secret-1", "us-east-1").apply(&mut r, body, at).unwrap();
        assert_eq!(r.headers()["x-amz-date"], "20261206T010000Z");
        assert_eq!(r.headers()["authorization"], BOTOCORE_AUTHORIZATION);
        assert!(
            r.headers().get("x-amz-content-sha256").is_none(),
            "the SDKs send no payload hash header for execute-api"
        );
    }

    const BOTOCORE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/execute-api/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, \
         Signature=237b4ade3d6f8879956f33053ea6dc6be335b4fa43653a0b603f5e9acc17cb41";

    #[test]
    fn bearer_and_none() {
        let mut r = request(b"");
        Auth::bearer("k1").unwrap().apply(&mut r, b"", SystemTime::now()).unwrap();
        assert_eq!(r.headers()["authorization"], "Bearer k1");
        let mut r = request(b"");
        Auth::None.apply(&mut r, b"", SystemTime::now()).unwrap();
        assert!(r.headers().get("authorization").is_none());
        assert!(Auth::bearer("bad\nkey").is_err());
        let debug = format!("{:?}", Auth::sigv4("AKID", "very-secret", "us-east-1"));
        assert_eq!(debug, "sigv4");
    }
}

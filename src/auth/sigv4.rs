//! AWS Signature Version 4 verification for the API Gateway compatible `/@connections` API
//! (SPEC §9.3).
//!
//! This module owns the configured `ACCESS_KEY_ID:SECRET` pairs and the one check made with
//! them: that a request was signed with one of those secrets for service `execute-api`,
//! exactly as boto3 (botocore `SigV4Auth`) and the AWS JS SDK v3 (`@smithy/signature-v4`) sign
//! it. It rebuilds the canonical request from what arrived on the wire and lets `aws-sigv4`
//! derive the signing key and compute the signature.
//!
//! It must never hand-roll HMAC or SHA-256 (`aws-sigv4` and `sha2` do that), never trust a
//! payload hash the client sends instead of hashing the body itself (so a changed body fails),
//! never compare signatures in variable time (`subtle` does that), and never put a secret or
//! text chosen by the client in an error or a `Debug` output. It knows nothing of HTTP routing
//! or status codes: the handler passes the pieces of the request in and maps every error to 403.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only algorithm both SDKs use for SigV4 with a secret key.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service API Gateway's management API is signed for.
const SERVICE: &str = "execute-api";
/// The last element of every SigV4 credential scope.
const TERMINATOR: &str = "aws4_request";
/// How far `x-amz-date` may be from our clock, either way; AWS allows the same.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

/// Credentials and verifier for SigV4-signed requests to service `execute-api`.
///
/// Cloning is cheap (the credentials are shared). `Debug` shows the access key ids only.
#[derive(Clone)]
pub struct SigV4Verifier {
    /// Access key id → secret.
    secrets: Arc<HashMap<String, String>>,
    /// Always [`SERVICE`] outside tests; the AWS test-suite vectors are signed for `service`.
    service: &'static str,
}

/// The parts of one request that its signature covers, as they arrived. Not `Debug`: the
/// headers may carry cookies or session tokens and the body is the client's, none of which
/// belongs in a log.
#[derive(Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The method, as sent (`GET`, `POST`, `DELETE`).
    pub method: &'a str,
    /// The raw path exactly as sent on the wire, percent-encoding untouched (e.g.
    /// `/prod/@connections/conn_1_abc%3D`): both SDKs sign the encoded path encoded once more.
    pub path: &'a str,
    /// The raw query string without the `?`, if there was one.
    pub query: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The whole body as received.
    pub body: &'a [u8],
}

/// Why a request's signature was refused. The text names no secret and repeats nothing the
/// client chose, so it is safe to log; the handler answers every variant with 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The request has no `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// The `Authorization` or `x-amz-date` header, or the signed header list, is not shaped
    /// as SigV4 requires; the text says which part.
    #[error("malformed SigV4 request: {0}")]
    Malformed(&'static str),
    /// The credential names an access key id that is not configured.
    #[error("unknown access key id")]
    UnknownAccessKey,
    /// The credential scope is for another service than `execute-api`.
    #[error("the credential scope is not for service execute-api")]
    WrongService,
    /// The credential scope does not end in `aws4_request`.
    #[error("the credential scope does not end in aws4_request")]
    WrongScope,
    /// `x-amz-date` is more than 15 minutes away from the server's clock, either way.
    #[error("x-amz-date is more than 15 minutes away from the server's clock")]
    DateSkew,
    /// The credential scope's date is not the date of `x-amz-date`.
    #[error("the credential scope date is not the date of x-amz-date")]
    ScopeDateMismatch,
    /// A header named in `SignedHeaders` is not in the request.
    #[error("a header named in SignedHeaders is missing from the request")]
    SignedHeaderMissing,
    /// `x-amz-content-sha256` asks to leave the body unsigned (`UNSIGNED-PAYLOAD`, streaming).
    #[error("unsigned payloads are not accepted")]
    UnsignedPayload,
    /// `x-amz-content-sha256` is not the SHA-256 of the body received.
    #[error("x-amz-content-sha256 is not the SHA-256 of the body")]
    PayloadHashMismatch,
    /// The signature is not the one the named secret gives for this request.
    #[error("the signature does not match")]
    SignatureMismatch,
}

/// Why the configured credential pairs were refused. Entries are named by their 0-based
/// index in the list; the secret is never repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4ConfigError {
    /// The entry has no `:` between access key id and secret.
    #[error("credentials[{index}]: expected ACCESS_KEY_ID:SECRET, found no ':'")]
    MissingColon {
        /// 0-based index of the entry.
        index: usize,
    },
    /// Nothing before the first `:`.
    #[error("credentials[{index}]: the access key id is empty")]
    EmptyAccessKeyId {
        /// 0-based index of the entry.
        index: usize,
    },
    /// Nothing after the first `:`.
    #[error("credentials[{index}]: the secret is empty")]
    EmptySecret {
        /// 0-based index of the entry.
        index: usize,
    },
    /// The access key id holds a character other than ASCII letters, digits, `-`, `_`, `.`
    /// (a `/` or a space could never appear in a credential scope as sent).
    #[error("credentials[{index}]: the access key id may hold only ASCII letters, digits, '-', '_' and '.'")]
    InvalidAccessKeyId {
        /// 0-based index of the entry.
        index: usize,
    },
    /// The access key id was already given by an earlier entry.
    #[error("credentials[{index}]: the access key id repeats credentials[{first}]")]
    DuplicateAccessKeyId {
        /// 0-based index of the entry.
        index: usize,
        /// 0-based index of the earlier entry with the same access key id.
        first: usize,
    },
}

/// No credentials: every signed request is refused.
impl Default for SigV4Verifier {
    fn default() -> Self {
        Self { secrets: Arc::default(), service: SERVICE }
    }
}

impl SigV4Verifier {
    /// From `ACCESS_KEY_ID:SECRET` entries (config `[apigw] credentials`, or the environment's
    /// `SIGNALBOX_APIGW_CREDENTIALS` split on commas). Each entry is split at its first `:`,
    /// so a secret may contain `:`; surrounding whitespace is ignored and blank entries are
    /// skipped (a trailing comma is harmless). Empty input gives an empty verifier.
    pub fn from_pairs(pairs: &[String]) -> Result<Self, SigV4ConfigError> {
        let mut secrets = HashMap::with_capacity(pairs.len());
        let mut first_index: HashMap<&str, usize> = HashMap::with_capacity(pairs.len());
        for (index, pair) in pairs.iter().enumerate() {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (id, secret) = pair.split_once(':').ok_or(SigV4ConfigError::MissingColon { index })?;
            if id.is_empty() {
                return Err(SigV4ConfigError::EmptyAccessKeyId { index });
            }
            if secret.is_empty() {
                return Err(SigV4ConfigError::EmptySecret { index });
            }
            if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return Err(SigV4ConfigError::InvalidAccessKeyId { index });
            }
            if let Some(&first) = first_index.get(id) {
                return Err(SigV4ConfigError::DuplicateAccessKeyId { index, first });
            }
            first_index.insert(id, index);
            secrets.insert(id.to_owned(), secret.to_owned());
        }
        Ok(Self { secrets: Arc::new(secrets), service: SERVICE })
    }

    /// Whether no credentials are configured (then no signed request can verify).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Whether the request carries a SigV4 `Authorization` header (one starting with
    /// `AWS4-HMAC-SHA256 `), so the handler knows to verify it rather than look for an API key.
    pub fn is_signed(headers: &HeaderMap) -> bool {
        headers.get(AUTHORIZATION).is_some_and(|value| value.as_bytes().starts_with(b"AWS4-HMAC-SHA256 "))
    }

    /// Verifies one request against the configured secrets at time `now`; `Ok` holds the
    /// access key id that signed it.
    ///
    /// The canonical request is rebuilt from what arrived: the path as sent encoded once more
    /// (after removing dot segments and empty segments, as both SDKs do for non-S3 services),
    /// the query decoded and re-encoded and sorted, the headers named in `SignedHeaders` with
    /// their values trimmed, and the SHA-256 of the body received, never a hash the client
    /// claims. Any region is accepted (the secret is what authenticates).
    pub fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<String, SigV4Error> {
        let authorization = single_header(request.headers, AUTHORIZATION.as_str())?.ok_or(SigV4Error::Missing)?;
        let authorization = std::str::from_utf8(authorization)
            .map_err(|_| SigV4Error::Malformed("the Authorization header is not UTF-8"))?;
        let auth = Authorization::parse(authorization)?;
        if auth.service != self.service {
            return Err(SigV4Error::WrongService);
        }
        if auth.terminator != TERMINATOR {
            return Err(SigV4Error::WrongScope);
        }

        let amz_date = single_header(request.headers, X_AMZ_DATE)?
            .ok_or(SigV4Error::Malformed("the x-amz-date header is required"))?;
        let signed_at = parse_amz_date(amz_date)?;
        // `parse_amz_date` accepted only ASCII, so the first eight bytes are the date.
        if auth.scope_date.as_bytes() != &amz_date[..8] {
            return Err(SigV4Error::ScopeDateMismatch);
        }
        let skew = match now.duration_since(signed_at) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > MAX_SKEW {
            return Err(SigV4Error::DateSkew);
        }

        let (access_key_id, secret) =
            self.secrets.get_key_value(auth.access_key_id).ok_or(SigV4Error::UnknownAccessKey)?;

        let payload_hash = hex::encode(Sha256::digest(request.body));
        if let Some(claimed) = single_header(request.headers, X_AMZ_CONTENT_SHA256)? {
            if claimed == b"UNSIGNED-PAYLOAD" || claimed.starts_with(b"STREAMING-") {
                return Err(SigV4Error::UnsignedPayload);
            }
            if claimed != payload_hash.as_bytes() {
                return Err(SigV4Error::PayloadHashMismatch);
            }
        }

        let canonical = canonical_request(request, auth.signed_headers, &payload_hash)?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{date}\n{scope_date}/{region}/{service}/{TERMINATOR}\n{hash}",
            // ASCII, checked by `parse_amz_date`.
            date = String::from_utf8_lossy(amz_date),
            scope_date = auth.scope_date,
            region = auth.region,
            service = auth.service,
            hash = hex::encode(Sha256::digest(&canonical)),
        );
        // `generate_signing_key` formats the scope date from `signed_at`, which is the scope
        // date (checked above).
        let signing_key = aws_sigv4::sign::v4::generate_signing_key(secret, signed_at, auth.region, auth.service);
        let expected = aws_sigv4::sign::v4::calculate_signature(signing_key, string_to_sign.as_bytes());
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(access_key_id.clone())
        } else {
            Err(SigV4Error::SignatureMismatch)
        }
    }

    /// The same verifier for another service name: the AWS SigV4 test-suite vectors are
    /// signed for service `service`.
    #[cfg(test)]
    fn for_service(mut self, service: &'static str) -> Self {
        self.service = service;
        self
    }
}

impl fmt::Debug for SigV4Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("SigV4Verifier").field("access_key_ids", &ids).field("service", &self.service).finish()
    }
}

/// The parts of `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
struct Authorization<'a> {
    access_key_id: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

impl<'a> Authorization<'a> {
    fn parse(value: &'a str) -> Result<Self, SigV4Error> {
        let rest = value
            .strip_prefix(ALGORITHM)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(SigV4Error::Malformed("the Authorization scheme is not AWS4-HMAC-SHA256"))?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        // Both SDKs join the three parts with ", "; accept any order and spacing, each once.
        for part in rest.split(',') {
            let (name, value) = part
                .trim_matches(|c| c == ' ' || c == '\t')
                .split_once('=')
                .ok_or(SigV4Error::Malformed("an Authorization part is not name=value"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(SigV4Error::Malformed("unknown Authorization part")),
            };
            if slot.replace(value).is_some() {
                return Err(SigV4Error::Malformed("an Authorization part is repeated"));
            }
        }
        let credential = credential.ok_or(SigV4Error::Malformed("the Authorization has no Credential"))?;
        let signed_headers = signed_headers.ok_or(SigV4Error::Malformed("the Authorization has no SignedHeaders"))?;
        let signature = signature.ok_or(SigV4Error::Malformed("the Authorization has no Signature"))?;

        let mut scope = credential.split('/');
        let (Some(access_key_id), Some(scope_date), Some(region), Some(service), Some(terminator), None) =
            (scope.next(), scope.next(), scope.next(), scope.next(), scope.next(), scope.next())
        else {
            return Err(SigV4Error::Malformed("the Credential is not AKID/DATE/REGION/SERVICE/aws4_request"));
        };
        if access_key_id.is_empty() || region.is_empty() {
            return Err(SigV4Error::Malformed("the Credential has an empty access key id or region"));
        }
        if scope_date.len() != 8 || !scope_date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SigV4Error::Malformed("the Credential date is not YYYYMMDD"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(SigV4Error::Malformed("the Signature is not 64 lowercase hex digits"));
        }
        check_signed_headers(signed_headers)?;
        Ok(Self { access_key_id, scope_date, region, service, terminator, signed_headers, signature })
    }
}

/// `SignedHeaders` must be lowercase header names, sorted, each once (both SDKs write it so
/// and the canonical headers follow its order), and must cover `host` and `x-amz-date`: a
/// signature that does not bind the date could be replayed forever.
fn check_signed_headers(signed_headers: &str) -> Result<(), SigV4Error> {
    let (mut host, mut date) = (false, false);
    let mut previous: Option<&str> = None;
    for name in signed_headers.split(';') {
        if name.is_empty() || !name.bytes().all(is_lowercase_token_byte) {
            return Err(SigV4Error::Malformed("SignedHeaders holds an empty or invalid header name"));
        }
        if previous.is_some_and(|previous| previous >= name) {
            return Err(SigV4Error::Malformed("SignedHeaders is not sorted or repeats a name"));
        }
        previous = Some(name);
        host |= name == "host";
        date |= name == X_AMZ_DATE;
    }
    if !(host && date) {
        return Err(SigV4Error::Malformed("SignedHeaders must include host and x-amz-date"));
    }
    Ok(())
}

/// An RFC 9110 token character other than an uppercase letter.
fn is_lowercase_token_byte(b: u8) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// The header's value if it occurs once, `None` if absent; several are refused, as which one
/// was meant is ambiguous.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h [u8]>, SigV4Error> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => Ok(Some(value.as_bytes())),
        (Some(_), Some(_)) => Err(SigV4Error::Malformed("Authorization, x-amz-date or x-amz-content-sha256 repeats")),
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'` (UTC), the only form both SDKs send.
fn parse_amz_date(value: &[u8]) -> Result<SystemTime, SigV4Error> {
    const WHY: SigV4Error = SigV4Error::Malformed("x-amz-date is not a valid YYYYMMDDTHHMMSSZ");
    let [y0, y1, y2, y3, mo0, mo1, d0, d1, b'T', h0, h1, mi0, mi1, s0, s1, b'Z'] = *value else {
        return Err(WHY);
    };
    let digits = [y0, y1, y2, y3, mo0, mo1, d0, d1, h0, h1, mi0, mi1, s0, s1];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(WHY);
    }
    let number = |digits: &[u8]| digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let year = i32::from(number(&[y0, y1, y2, y3]));
    let month = time::Month::try_from(number(&[mo0, mo1]) as u8).map_err(|_| WHY)?;
    let date = time::Date::from_calendar_date(year, month, number(&[d0, d1]) as u8).map_err(|_| WHY)?;
    let clock = time::Time::from_hms(number(&[h0, h1]) as u8, number(&[mi0, mi1]) as u8, number(&[s0, s1]) as u8)
        .map_err(|_| WHY)?;
    Ok(SystemTime::from(time::PrimitiveDateTime::new(date, clock).assume_utc()))
}

/// The canonical request: method, URI, query, headers, signed header names, payload hash,
/// one per line. Bytes, not text: a header value may hold non-UTF-8 bytes, and they are
/// signed as they are.
fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &str,
    payload_hash: &str,
) -> Result<Vec<u8>, SigV4Error> {
    let mut out = Vec::with_capacity(256 + request.path.len() * 2 + request.query.map_or(0, str::len) * 2);
    out.extend_from_slice(request.method.as_bytes());
    out.push(b'\n');
    canonical_uri(request.path, &mut out);
    out.push(b'\n');
    canonical_query(request.query.unwrap_or(""), &mut out);
    out.push(b'\n');
    for name in signed_headers.split(';') {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = request.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            return Err(SigV4Error::SignedHeaderMissing);
        }
        // Several values of one name are joined with ',' in the order received, as the
        // signer saw them.
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(value.as_bytes(), &mut out);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

/// A header value without leading and trailing whitespace and with each inner run of
/// whitespace made one space (SigV4's Trimall; botocore and the JS SDK both collapse tabs too).
fn push_trimmed(value: &[u8], out: &mut Vec<u8>) {
    let mut pending_space = false;
    let start = out.len();
    for &b in value {
        if b == b' ' || b == b'\t' {
            pending_space = out.len() > start;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
        }
    }
}

/// The canonical URI for a non-S3 service, as botocore (`quote(normalize_url_path(path),
/// safe='/~')`) and the JS SDK (`getCanonicalPath` with `uriEscapePath`) make it: dot
/// segments and empty segments removed, then every byte of the path *as sent* percent-encoded
/// except unreserved characters and `/`, so a `%3D` on the wire is signed as `%253D`.
fn canonical_uri(path: &str, out: &mut Vec<u8>) {
    if path.is_empty() {
        out.push(b'/');
        return;
    }
    let mut segments: Vec<&str> = Vec::with_capacity(8);
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    // Both SDKs keep a leading slash if there was one, and a trailing one only if a segment
    // is left (so `/a/b/..` is `/a` and `/a/..` is `/`).
    if path.starts_with('/') {
        out.push(b'/');
    }
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        percent_encode(segment.as_bytes(), out);
    }
    if !segments.is_empty() && path.ends_with('/') {
        out.push(b'/');
    }
}

/// The canonical query: each `name=value` pair decoded and re-encoded with SigV4's encoding,
/// sorted by name then value; a pair without `=` has an empty value (`name=`), and empty pairs
/// (`a=1&&b=2`) are dropped. `+` is a literal plus (RFC 3986), not a space: neither SDK ever
/// sends one unencoded, as both encode every reserved character.
fn canonical_query(query: &str, out: &mut Vec<u8>) {
    if query.is_empty() {
        return;
    }
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut encoded_name = Vec::with_capacity(name.len());
            percent_encode(&percent_decode(name.as_bytes()), &mut encoded_name);
            let mut encoded_value = Vec::with_capacity(value.len());
            percent_encode(&percent_decode(value.as_bytes()), &mut encoded_value);
            (encoded_name, encoded_value)
        })
        .collect();
    pairs.sort_unstable();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(value);
    }
}

/// Appends `bytes` with every byte but the unreserved `A-Za-z0-9-_.~` as `%XX` (uppercase).
fn percent_encode(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits stays a literal `%` (and is
/// then signed as `%25`), as no SDK sends one and refusing it would gain nothing.
fn percent_decode(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !bytes.contains(&b'%') {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((hi << 4) | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningParams, SigningSettings, sign,
    };
    use aws_sigv4::sign::v4;
    use axum::http::{HeaderName, HeaderValue, Request};
    use proptest::prelude::*;

    use super::*;

    const KEY_ID: &str = "AKIDSIGNALBOX";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const HOST: &str = "gw.example.com";
    /// When the requests below are signed.
    const SIGNED_AT: &str = "20261206T003823Z";

    fn verifier() -> SigV4Verifier {
        SigV4Verifier::from_pairs(&[format!("{KEY_ID}:{SECRET}"), "AKIDOTHER:other-secret".into()]).unwrap()
    }

    fn at(amz_date: &str) -> SystemTime {
        parse_amz_date(amz_date.as_bytes()).unwrap()
    }

    fn minutes(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    /// How one test request is signed.
    struct Signer<'a> {
        secret: &'a str,
        region: &'a str,
        service: &'a str,
        time: SystemTime,
        settings: SigningSettings,
        body: SignableBody<'a>,
    }

    impl Default for Signer<'_> {
        fn default() -> Self {
            Self {
                secret: SECRET,
                region: "eu-west-1",
                service: SERVICE,
                time: at(SIGNED_AT),
                // The defaults are those of a non-S3 service: the path normalized and encoded
                // once more, no x-amz-content-sha256, user-agent left unsigned.
                settings: SigningSettings::default(),
                body: SignableBody::Bytes(&[]),
            }
        }
    }

    /// A request to `HOST` with `headers`, signed by the real AWS signer (`aws-sigv4`).
    /// `target` is the path and query as sent, already percent-encoded.
    fn signed(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        signer: Signer<'_>,
    ) -> Request<Vec<u8>> {
        let mut request = Request::builder().method(method).uri(target).body(body.to_vec()).unwrap();
        request.headers_mut().insert("host", HeaderValue::from_static(HOST));
        for (name, value) in headers {
            request.headers_mut().append(HeaderName::try_from(*name).unwrap(), HeaderValue::try_from(*value).unwrap());
        }
        let identity = Credentials::new(KEY_ID, signer.secret, None, None, "test").into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(signer.region)
            .name(signer.service)
            .time(signer.time)
            .settings(signer.settings)
            .build()
            .unwrap()
            .into();
        let body = match signer.body {
            SignableBody::Bytes(&[]) => SignableBody::Bytes(body),
            other => other,
        };
        let uri = format!("https://{HOST}{target}");
        let pairs: Vec<(&str, &str)> =
            request.headers().iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
        let signable = SignableRequest::new(method, uri, pairs.into_iter(), body).unwrap();
        let (instructions, _signature) = sign(signable, &params).unwrap().into_parts();
        let mut signed_request = Request::builder().method(method).uri(target).body(request.body().clone()).unwrap();
        *signed_request.headers_mut() = request.headers().clone();
        instructions.apply_to_request_http1x(&mut signed_request);
        signed_request
    }

    fn check(verifier: &SigV4Verifier, request: &Request<Vec<u8>>, now: SystemTime) -> Result<String, SigV4Error> {
        verifier.verify(
            &SignedRequest {
                method: request.method().as_str(),
                path: request.uri().path(),
                query: request.uri().query(),
                headers: request.headers(),
                body: request.body(),
            },
            now,
        )
    }

    const CONTENT_TYPE: (&str, &str) = ("content-type", "application/json");
    const USER_AGENT: (&str, &str) = ("user-agent", "Botocore/1.43.11 ua/2.1");

    fn post() -> Request<Vec<u8>> {
        signed(
            "POST",
            "/prod/@connections/conn_1_a%3Db",
            &[CONTENT_TYPE, USER_AGENT],
            br#"{"hello":"world"}"#,
            Signer::default(),
        )
    }

    #[test]
    fn requests_signed_by_the_aws_signer_verify() {
        let binary: Vec<u8> = (0..=255u8).rev().chain([0, 13, 10, 0]).collect();
        let cases: [(&str, &str, &[u8]); 10] = [
            ("GET", "/@connections/conn_1_abc", b""),
            ("GET", "/prod/@connections/conn_1_a%3Db", b""),
            ("DELETE", "/prod/@connections/conn_1_a%3Db", b""),
            ("DELETE", "/@connections/conn_1_a%2Fb%20c", b""),
            ("POST", "/prod/@connections/conn_1_a%3Db", br#"{"hello":"world"}"#),
            ("POST", "/@connections/conn_1_a%3Db", b""),
            ("POST", "/prod/@connections/conn_1_%E2%9C%93", &binary),
            ("GET", "/prod/@connections/conn_1_x?b=2&a=1&a=0&empty=&flag&k%20y=v%2Fw%3D", b""),
            ("POST", "/@connections/conn_1_x?%E1%88%B4=%E1%88%B4&z=-._~", b"x"),
            ("GET", "/", b""),
        ];
        let verifier = verifier();
        for (method, target, body) in cases {
            let request = signed(method, target, &[CONTENT_TYPE, USER_AGENT], body, Signer::default());
            for now in [at(SIGNED_AT), at(SIGNED_AT) + minutes(15), at(SIGNED_AT) - minutes(15)] {
                assert_eq!(check(&verifier, &request, now), Ok(KEY_ID.to_owned()), "{method} {target}");
            }
        }
    }

    #[test]
    fn any_region_and_a_matching_x_amz_content_sha256_verify() {
        let verifier = verifier();
        let request =
            signed("GET", "/@connections/c", &[], b"", Signer { region: "ap-southeast-2", ..Signer::default() });
        assert_eq!(check(&verifier, &request, at(SIGNED_AT)), Ok(KEY_ID.to_owned()));

        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let request = signed("POST", "/@connections/c", &[], b"body", Signer { settings, ..Signer::default() });
        assert!(request.headers().contains_key(X_AMZ_CONTENT_SHA256));
        assert_eq!(check(&verifier, &request, at(SIGNED_AT)), Ok(KEY_ID.to_owned()));
    }

    /// Requests boto3 (botocore 1.43.11, `apigatewaymanagementapi` client, endpoint
    /// `https://gw.example.com/prod`, region eu-west-1) sent at 2026-12-06T00:38:23Z: it signs
    /// only `host;x-amz-date` and adds `amz-sdk-*` and `Content-Length` after signing.
    #[test]
    fn boto3_requests_verify() {
        let verifier = SigV4Verifier::from_pairs(&["AKIDSIGNALBOX:secret/with:colon+x".into()]).unwrap();
        let cases: [(&str, &str, &[u8], &str); 3] = [
            (
                "POST",
                "/prod/@connections/conn_1_a%3Db%2Fc%20d",
                br#"{"hello":"world"}"#,
                "af7fb5af4876e5b49b5ab9f54b448185fa2b0f91a2686e1453951f5ae3520d09",
            ),
            (
                "GET",
                "/prod/@connections/conn_1_x",
                b"",
                "3b5d31de7b53868c267c5427cda93d3e40d6ccc5b64c9750d57f5eb975bc2ed0",
            ),
            (
                "DELETE",
                "/prod/@connections/conn_1_x",
                b"",
                "5280ffe923bc0624cc94c2d4fa955dea511a1249aeeb547a6cf8ccde5bebc617",
            ),
        ];
        for (method, path, body, signature) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("host", HeaderValue::from_static(HOST));
            headers.insert("user-agent", HeaderValue::from_static("Botocore/1.43.11 ua/2.1 os/linux md/arch#x86_64"));
            headers.insert("x-amz-date", HeaderValue::from_static(SIGNED_AT));
            headers.insert("amz-sdk-invocation-id", HeaderValue::from_static("fe21e503-81d2-4a26-a12f-88c17eadcebe"));
            headers.insert("amz-sdk-request", HeaderValue::from_static("attempt=1"));
            headers.insert("content-length", HeaderValue::from(body.len()));
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDSIGNALBOX/20261206/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature={signature}"
            );
            headers.insert("authorization", HeaderValue::try_from(authorization).unwrap());
            let request = SignedRequest { method, path, query: None, headers: &headers, body };
            assert_eq!(verifier.verify(&request, at(SIGNED_AT)), Ok(KEY_ID.to_owned()), "{method} {path}");
        }
    }

    /// The same calls made with the AWS JS SDK v3 (`@aws-sdk/client-apigatewaymanagementapi`
    /// 3.1177.0): it signs every header but `user-agent`, `x-amz-content-sha256` included.
    #[test]
    fn js_sdk_v3_requests_verify() {
        let verifier = SigV4Verifier::from_pairs(&["AKIDSIGNALBOX:secret/with:colon+x".into()]).unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        // method, path, body, amz-sdk-invocation-id, x-amz-content-sha256, signature
        type Case = (&'static str, &'static str, &'static [u8], &'static str, &'static str, &'static str);
        let cases: [Case; 3] = [
            (
                "POST",
                "/prod/@connections/conn_1_a%3Db%2Fc%20d",
                br#"{"hello":"world"}"#,
                "25d65b38-4960-484b-a553-c7fef23cf7b6",
                "93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588",
                "1d30fa9c8424a66541b5b79efe9bcbc769c38b5ac837fec15097d13607390a8e",
            ),
            (
                "GET",
                "/prod/@connections/conn_1_x",
                b"",
                "9b576f3e-1da3-4de9-a759-89af8dc4aa60",
                empty,
                "35bad1baafdf2fd86a626ae15392ca8b3398d0a1750c1c87a348fce5b1f16d97",
            ),
            (
                "DELETE",
                "/prod/@connections/conn_1_x",
                b"",
                "fcce5fac-2e81-44c4-85d7-6f7c52d9935d",
                empty,
                "84ce74feb0ae76189e2fe8201085854efd51409702581b81a5332a19d7f72163",
            ),
        ];
        for (method, path, body, invocation, content_sha256, signature) in cases {
            let mut headers = HeaderMap::new();
            let mut signed_headers = "amz-sdk-invocation-id;amz-sdk-request;";
            if !body.is_empty() {
                headers.insert("content-type", HeaderValue::from_static("application/octet-stream"));
                headers.insert("content-length", HeaderValue::from(body.len()));
                signed_headers = "amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;";
            }
            headers.insert("x-amz-user-agent", HeaderValue::from_static("aws-sdk-js/3.1177.0"));
            headers.insert("user-agent", HeaderValue::from_static("aws-sdk-js/3.1177.0 ua/2.1 lang/js"));
            headers.insert("host", HeaderValue::from_static(HOST));
            headers.insert("amz-sdk-invocation-id", HeaderValue::from_static(invocation));
            headers.insert("amz-sdk-request", HeaderValue::from_static("attempt=1; max=3"));
            headers.insert("x-amz-date", HeaderValue::from_static(SIGNED_AT));
            headers.insert("x-amz-content-sha256", HeaderValue::from_static(content_sha256));
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDSIGNALBOX/20261206/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders={signed_headers}host;x-amz-content-sha256;x-amz-date;x-amz-user-agent, \
                 Signature={signature}"
            );
            headers.insert("authorization", HeaderValue::try_from(authorization).unwrap());
            let request = SignedRequest { method, path, query: None, headers: &headers, body };
            assert_eq!(verifier.verify(&request, at(SIGNED_AT)), Ok(KEY_ID.to_owned()), "{method} {path}");
        }
    }

    /// A vector of the AWS SigV4 test suite (as shipped in `aws-sigv4`'s
    /// `aws-signing-test-suite/v4`): key `AKIDEXAMPLE`, region us-east-1, service `service`,
    /// signed at 20150830T123600Z.
    struct Vector {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        headers: &'static [(&'static str, &'static str)],
        body: &'static [u8],
        signed_headers: &'static str,
        signature: &'static str,
    }

    const fn vector(
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: Option<&'static str>,
        headers: &'static [(&'static str, &'static str)],
        signed_headers: &'static str,
        signature: &'static str,
    ) -> Vector {
        Vector { name, method, path, query, headers, body: b"", signed_headers, signature }
    }

    const H: &[(&str, &str)] = &[("Host", "example.amazonaws.com")];
    const HD: &str = "host;x-amz-date";

    const VECTORS: &[Vector] = &[
        vector(
            "get-vanilla",
            "GET",
            "/",
            None,
            H,
            HD,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        vector(
            "post-vanilla",
            "POST",
            "/",
            None,
            H,
            HD,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        vector(
            "get-vanilla-empty-query-key",
            "GET",
            "/",
            Some("Param1=value1"),
            H,
            HD,
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        ),
        vector(
            "post-vanilla-query",
            "POST",
            "/",
            Some("Param1=value1"),
            H,
            HD,
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        vector(
            "get-vanilla-query-order-key-case",
            "GET",
            "/",
            Some("Param2=value2&Param1=value1"),
            H,
            HD,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        vector(
            "get-vanilla-query-order-encoded",
            "GET",
            "/",
            Some("Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
            H,
            HD,
            "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        ),
        vector(
            "get-vanilla-query-unreserved",
            "GET",
            "/",
            Some(
                "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=\
                 -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            ),
            H,
            HD,
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
        // The request line holds raw UTF-8; on the wire that is these bytes.
        vector(
            "get-vanilla-utf8-query",
            "GET",
            "/",
            Some("ሴ=bar"),
            H,
            HD,
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        ),
        vector(
            "get-utf8",
            "GET",
            "/ሴ",
            None,
            H,
            HD,
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        vector(
            "get-unreserved",
            "GET",
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            None,
            H,
            HD,
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        ),
        vector(
            "get-slashes-normalized",
            "GET",
            "//example//",
            None,
            H,
            HD,
            "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        ),
        vector(
            "get-relative-relative-normalized",
            "GET",
            "/example1/example2/../..",
            None,
            H,
            HD,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        vector(
            "get-slash-dot-slash-normalized",
            "GET",
            "/./",
            None,
            H,
            HD,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        vector(
            "get-header-key-duplicate",
            "GET",
            "/",
            None,
            &[
                ("Host", "example.amazonaws.com"),
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            "host;my-header1;x-amz-date",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        ),
        vector(
            "get-header-value-order",
            "GET",
            "/",
            None,
            &[
                ("Host", "example.amazonaws.com"),
                ("My-Header1", "value4"),
                ("My-Header1", "value1"),
                ("My-Header1", "value3"),
                ("My-Header1", "value2"),
            ],
            "host;my-header1;x-amz-date",
            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        ),
        vector(
            "get-header-value-trim",
            "GET",
            "/",
            None,
            &[("Host", "example.amazonaws.com"), ("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            "host;my-header1;my-header2;x-amz-date",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        ),
        vector(
            "post-header-key-sort",
            "POST",
            "/",
            None,
            &[("Host", "example.amazonaws.com"), ("My-Header1", "value1")],
            "host;my-header1;x-amz-date",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
        vector(
            "post-header-value-case",
            "POST",
            "/",
            None,
            &[("Host", "example.amazonaws.com"), ("My-Header1", "VALUE1")],
            "host;my-header1;x-amz-date",
            "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
        ),
        Vector {
            name: "post-x-www-form-urlencoded",
            method: "POST",
            path: "/",
            query: None,
            headers: &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Host", "example.amazonaws.com"),
                ("Content-Length", "13"),
                ("x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
            ],
            body: b"Param1=value1",
            signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        },
    ];

    #[test]
    fn aws_test_suite_vectors_verify() {
        let verifier = SigV4Verifier::from_pairs(&["AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()])
            .unwrap()
            .for_service("service");
        for vector in VECTORS {
            let mut headers = HeaderMap::new();
            for (name, value) in vector.headers {
                headers.append(HeaderName::try_from(*name).unwrap(), HeaderValue::from_static(value));
            }
            headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders={}, Signature={}",
                vector.signed_headers, vector.signature
            );
            headers.insert("authorization", HeaderValue::try_from(authorization).unwrap());
            let request = SignedRequest {
                method: vector.method,
                path: vector.path,
                query: vector.query,
                headers: &headers,
                body: vector.body,
            };
            assert_eq!(
                verifier.verify(&request, at("20150830T123600Z")),
                Ok("AKIDEXAMPLE".to_owned()),
                "{}",
                vector.name
            );
            // The suite's secret is what makes them verify.
            let other = SigV4Verifier::from_pairs(&["AKIDEXAMPLE:another".into()]).unwrap().for_service("service");
            assert_eq!(other.verify(&request, at("20150830T123600Z")), Err(SigV4Error::SignatureMismatch));
        }
    }

    /// The suite's `double-encode-path` case is the `/@connections` one; it has no signature,
    /// only the canonical request.
    #[test]
    fn a_percent_encoded_connection_id_is_encoded_once_more() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("tj9n5r0m12.execute-api.us-east-1.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20210511T154045Z"));
        let request = SignedRequest {
            method: "POST",
            path: "/test/@connections/JBDvjfGEIAMCERw%3D",
            query: None,
            headers: &headers,
            body: b"",
        };
        let empty = hex::encode(Sha256::digest(b""));
        let canonical = canonical_request(&request, "host;x-amz-date", &empty).unwrap();
        assert_eq!(
            String::from_utf8(canonical).unwrap(),
            "POST\n/test/%40connections/JBDvjfGEIAMCERw%253D\n\n\
             host:tj9n5r0m12.execute-api.us-east-1.amazonaws.com\nx-amz-date:20210511T154045Z\n\n\
             host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn paths_are_normalized_as_botocore_and_the_js_sdk_do() {
        let uri = |path: &str| {
            let mut out = Vec::new();
            canonical_uri(path, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/"), "/");
        assert_eq!(uri("//"), "/");
        assert_eq!(uri("/a/b/.."), "/a");
        assert_eq!(uri("/a/b/../"), "/a/");
        assert_eq!(uri("/a/./b/"), "/a/b/");
        assert_eq!(uri("/../a"), "/a");
        assert_eq!(uri("/a/%2E%2E/b"), "/a/%252E%252E/b");
        assert_eq!(uri("/prod/@connections/a%3Db"), "/prod/%40connections/a%253Db");
        assert_eq!(uri("/a b+c!'()*"), "/a%20b%2Bc%21%27%28%29%2A");
    }

    #[test]
    fn queries_are_decoded_reencoded_and_sorted() {
        let query = |q: &str| {
            let mut out = Vec::new();
            canonical_query(q, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(query(""), "");
        assert_eq!(query("b=2&a=2&a=1"), "a=1&a=2&b=2");
        assert_eq!(query("flag&x="), "flag=&x=");
        assert_eq!(query("a=1&&b=2&"), "a=1&b=2");
        assert_eq!(query("k%20y=v%2fw"), "k%20y=v%2Fw");
        assert_eq!(query("a=b+c&p=%zz%"), "a=b%2Bc&p=%25zz%25");
        assert_eq!(query("e=a=b"), "e=a%3Db");
    }

    #[test]
    fn a_wrong_secret_or_unknown_key_is_refused() {
        let request =
            signed("POST", "/@connections/c", &[], b"x", Signer { secret: "not-the-secret", ..Signer::default() });
        assert_eq!(check(&verifier(), &request, at(SIGNED_AT)), Err(SigV4Error::SignatureMismatch));

        let only_other = SigV4Verifier::from_pairs(&["AKIDOTHER:other-secret".into()]).unwrap();
        assert_eq!(check(&only_other, &post(), at(SIGNED_AT)), Err(SigV4Error::UnknownAccessKey));
        for empty in [SigV4Verifier::from_pairs(&[]).unwrap(), SigV4Verifier::default()] {
            assert!(empty.is_empty());
            assert_eq!(check(&empty, &post(), at(SIGNED_AT)), Err(SigV4Error::UnknownAccessKey));
        }
    }

    #[test]
    fn a_date_more_than_15_minutes_away_is_refused() {
        let verifier = verifier();
        let request = post();
        let signed_at = at(SIGNED_AT);
        assert_eq!(check(&verifier, &request, signed_at + minutes(16)), Err(SigV4Error::DateSkew));
        assert_eq!(check(&verifier, &request, signed_at - minutes(16)), Err(SigV4Error::DateSkew));
        assert_eq!(
            check(&verifier, &request, signed_at + minutes(15) + Duration::from_secs(1)),
            Err(SigV4Error::DateSkew)
        );
        assert_eq!(check(&verifier, &request, signed_at + minutes(15)), Ok(KEY_ID.to_owned()));
    }

    #[test]
    fn any_change_to_what_was_signed_is_refused() {
        let verifier = verifier();
        let now = at(SIGNED_AT);
        let original = post();
        assert_eq!(check(&verifier, &original, now), Ok(KEY_ID.to_owned()));

        let mut request = original.clone();
        request.body_mut().push(b' ');
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "body");

        for target in ["/prod/@connections/conn_1_a%3Dc", "/prod/@connections/conn_1_a=b", "/@connections/conn_1_a%3Db"]
        {
            let mut request = original.clone();
            *request.uri_mut() = target.parse().unwrap();
            assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "{target}");
        }

        let mut request = original.clone();
        *request.uri_mut() = "/prod/@connections/conn_1_a%3Db?x=1".parse().unwrap();
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "query");

        let mut request = original.clone();
        *request.method_mut() = axum::http::Method::DELETE;
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "method");

        for (name, value) in [("content-type", "text/plain"), ("host", "evil.example.com")] {
            let mut request = original.clone();
            request.headers_mut().insert(name, HeaderValue::from_static(value));
            assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "{name}");
        }
        // A second value of a signed header changes its canonical value too.
        let mut request = original.clone();
        request.headers_mut().append("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "appended");

        // A header that was not signed may change.
        let mut request = original.clone();
        request.headers_mut().insert("user-agent", HeaderValue::from_static("curl"));
        assert_eq!(check(&verifier, &request, now), Ok(KEY_ID.to_owned()));

        let mut request = original.clone();
        request.headers_mut().remove("content-type");
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignedHeaderMissing));

        // Another time within the window, with the same signature.
        let mut request = original.clone();
        request.headers_mut().insert("x-amz-date", HeaderValue::from_static("20261206T003824Z"));
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::SignatureMismatch), "x-amz-date");
    }

    #[test]
    fn the_body_hash_is_computed_never_taken_from_the_client() {
        let verifier = verifier();
        let now = at(SIGNED_AT);
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let request = signed(
            "POST",
            "/@connections/c",
            &[],
            b"body",
            Signer { settings: settings.clone(), body: SignableBody::UnsignedPayload, ..Signer::default() },
        );
        assert_eq!(request.headers()[X_AMZ_CONTENT_SHA256], "UNSIGNED-PAYLOAD");
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::UnsignedPayload));

        // A signature over a claimed hash, with another body sent.
        let claimed = hex::encode(Sha256::digest(b"the body that was signed"));
        let request = signed(
            "POST",
            "/@connections/c",
            &[],
            b"another body",
            Signer { settings, body: SignableBody::Precomputed(claimed), ..Signer::default() },
        );
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::PayloadHashMismatch));
    }

    /// Rewrites the signed `post()`'s Authorization header.
    fn with_authorization(edit: impl Fn(&str) -> String) -> Request<Vec<u8>> {
        let mut request = post();
        let authorization = edit(request.headers()["authorization"].to_str().unwrap());
        request.headers_mut().insert("authorization", HeaderValue::try_from(authorization).unwrap());
        request
    }

    #[test]
    fn scope_service_and_terminator_are_checked() {
        let verifier = verifier();
        let now = at(SIGNED_AT);
        let request =
            signed("GET", "/@connections/c", &[], b"", Signer { service: "execute-apis", ..Signer::default() });
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::WrongService));
        let request = with_authorization(|a| a.replace("/execute-api/", "/s3/"));
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::WrongService));
        let request = with_authorization(|a| a.replace("aws4_request", "aws4_requesT"));
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::WrongScope));
        let request = with_authorization(|a| a.replace("/20261206/", "/20261205/"));
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::ScopeDateMismatch));

        // Signed just before midnight, x-amz-date moved past it: the dates differ.
        let request =
            signed("GET", "/@connections/c", &[], b"", Signer { time: at("20261205T235930Z"), ..Signer::default() });
        let mut moved = request.clone();
        moved.headers_mut().insert("x-amz-date", HeaderValue::from_static("20261206T000010Z"));
        assert_eq!(check(&verifier, &moved, at("20261206T000000Z")), Err(SigV4Error::ScopeDateMismatch));
        assert_eq!(check(&verifier, &request, at("20261206T000000Z")), Ok(KEY_ID.to_owned()));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let verifier = verifier();
        let now = at(SIGNED_AT);
        let malformed =
            |request: &Request<Vec<u8>>| matches!(check(&verifier, request, now), Err(SigV4Error::Malformed(_)));

        let mut request = post();
        request.headers_mut().remove("authorization");
        assert_eq!(check(&verifier, &request, now), Err(SigV4Error::Missing));

        let mut request = post();
        request.headers_mut().remove("x-amz-date");
        assert!(malformed(&request));
        for date in
            ["20261206T003823", "2026-12-06T00:38:23Z", "20261306T003823Z", "20261206T243823Z", "2026120xT003823Z"]
        {
            let mut request = post();
            request.headers_mut().insert("x-amz-date", HeaderValue::from_static(date));
            assert!(malformed(&request), "{date}");
        }
        let mut request = post();
        request.headers_mut().append("x-amz-date", HeaderValue::from_static(SIGNED_AT));
        assert!(malformed(&request), "two dates");
        let mut request = post();
        let authorization = request.headers()["authorization"].clone();
        request.headers_mut().append("authorization", authorization);
        assert!(malformed(&request), "two Authorization headers");

        type Edit = (&'static str, fn(&str) -> String);
        let edits: [Edit; 11] = [
            ("bearer", |_| "Bearer abc".into()),
            ("sigv2", |a| a.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")),
            ("no date or host", |a| {
                a.replace("SignedHeaders=content-type;host;x-amz-date", "SignedHeaders=content-type")
            }),
            ("no date", |a| a.replace(";x-amz-date", "")),
            ("unsorted", |a| a.replace("content-type;host", "host;content-type")),
            ("uppercase", |a| a.replace("content-type", "Content-Type")),
            ("repeated part", |a| format!("{a}, Signature=00")),
            ("short signature", |a| a[..a.len() - 1].to_owned()),
            ("uppercase signature", |a| {
                let (head, signature) = a.split_once("Signature=").unwrap();
                format!("{head}Signature={}", signature.to_uppercase())
            }),
            ("six scope parts", |a| a.replace("/aws4_request", "/x/aws4_request")),
            ("unknown part", |a| format!("{a}, Extra=1")),
        ];
        for (why, edit) in edits {
            assert!(malformed(&with_authorization(edit)), "{why}");
        }
        // The parts may come in any order and with any spacing.
        let request = with_authorization(|a| {
            let rest = a.strip_prefix("AWS4-HMAC-SHA256 ").unwrap();
            let parts: Vec<&str> = rest.split(", ").collect();
            format!("AWS4-HMAC-SHA256 {},{} ,  {}", parts[2], parts[0], parts[1])
        });
        assert_eq!(check(&verifier, &request, now), Ok(KEY_ID.to_owned()));
    }

    #[test]
    fn is_signed_looks_at_the_scheme_only() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_static(value));
            headers
        };
        assert!(SigV4Verifier::is_signed(post().headers()));
        assert!(SigV4Verifier::is_signed(&headers("AWS4-HMAC-SHA256 Credential=x")));
        assert!(!SigV4Verifier::is_signed(&headers("Bearer AWS4-HMAC-SHA256 ")));
        assert!(!SigV4Verifier::is_signed(&headers("AWS4-HMAC-SHA256")));
        assert!(!SigV4Verifier::is_signed(&HeaderMap::new()));
    }

    #[test]
    fn credential_pairs_are_parsed() {
        let verifier = SigV4Verifier::from_pairs(&[
            " AKID1:secret1 ".into(),
            "AKID2:se:cr:et".into(),
            "".into(),
            "key.id_3-x:s".into(),
        ])
        .unwrap();
        assert!(!verifier.is_empty());
        assert_eq!(
            format!("{verifier:?}"),
            r#"SigV4Verifier { access_key_ids: ["AKID1", "AKID2", "key.id_3-x"], service: "execute-api" }"#
        );
        assert!(SigV4Verifier::from_pairs(&[]).unwrap().is_empty());
        assert!(SigV4Verifier::from_pairs(&[" ".into()]).unwrap().is_empty());

        // A secret holding ':' is split at the first one and verifies.
        let request = signed("GET", "/@connections/c", &[], b"", Signer { secret: "se:cr:et", ..Signer::default() });
        let colon = SigV4Verifier::from_pairs(&[format!("{KEY_ID}:se:cr:et")]).unwrap();
        assert_eq!(check(&colon, &request, at(SIGNED_AT)), Ok(KEY_ID.to_owned()));

        let error = |pairs: &[&str]| {
            let pairs: Vec<String> = pairs.iter().map(|p| p.to_string()).collect();
            SigV4Verifier::from_pairs(&pairs).unwrap_err()
        };
        assert_eq!(error(&["A:b", "no-colon-secret"]), SigV4ConfigError::MissingColon { index: 1 });
        assert_eq!(error(&[":secret"]), SigV4ConfigError::EmptyAccessKeyId { index: 0 });
        assert_eq!(error(&["A:"]), SigV4ConfigError::EmptySecret { index: 0 });
        assert_eq!(error(&["A/B:secret"]), SigV4ConfigError::InvalidAccessKeyId { index: 0 });
        assert_eq!(error(&["A B:secret"]), SigV4ConfigError::InvalidAccessKeyId { index: 0 });
        let duplicate = error(&["A:topsecret1", "B:x", "A:topsecret2"]);
        assert_eq!(duplicate, SigV4ConfigError::DuplicateAccessKeyId { index: 2, first: 0 });
        assert_eq!(duplicate.to_string(), "credentials[2]: the access key id repeats credentials[0]");
        for error in [error(&["nocolon-topsecret"]), error(&["A:"]), duplicate] {
            assert!(!error.to_string().contains("topsecret"), "{error}");
        }
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let verifier = verifier();
        assert!(!format!("{verifier:?}").contains(SECRET));
        assert!(!format!("{verifier:?}").contains("other-secret"));
        let request =
            signed("POST", "/@connections/c", &[], b"x", Signer { secret: "not-the-secret", ..Signer::default() });
        let error = check(&verifier, &request, at(SIGNED_AT)).unwrap_err();
        assert!(!error.to_string().contains(SECRET));
    }

    proptest! {
        /// Whatever the Authorization header says, nothing panics and nothing verifies.
        #[test]
        fn arbitrary_authorization_never_panics_nor_verifies(
            any in "[ -~\t]{0,300}",
            credential in "[ -~]{0,80}",
            signed_headers in "[a-z;\\-]{0,40}",
            signature in "[0-9a-f]{60,68}",
        ) {
            let verifier = verifier();
            let structured = format!(
                "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed_headers}, Signature={signature}"
            );
            let prefixed = format!("AWS4-HMAC-SHA256 {any}");
            for authorization in [any.clone(), prefixed, structured] {
                let Ok(value) = HeaderValue::try_from(authorization) else { continue };
                let mut request = post();
                request.headers_mut().insert("authorization", value);
                prop_assert!(check(&verifier, &request, at(SIGNED_AT)).is_err());
            }
        }

        /// Arbitrary paths, queries and dates never panic, and a signed request moved to
        /// another path or query does not verify.
        #[test]
        fn arbitrary_paths_queries_and_dates_never_panic(
            path in "/[ -~]{0,60}",
            query in proptest::option::of("[ -~]{0,60}"),
            date in "[0-9TZ]{0,18}",
        ) {
            let verifier = verifier();
            let mut request = post();
            if let Ok(value) = HeaderValue::try_from(date.as_str()) {
                request.headers_mut().insert("x-amz-date", value);
            }
            let signed = SignedRequest {
                method: "POST",
                path: &path,
                query: query.as_deref(),
                headers: request.headers(),
                body: request.body(),
            };
            if verifier.verify(&signed, at(SIGNED_AT)).is_ok() {
                // Only a path and query both SDKs would sign the same way may verify.
                let (mut canonical, mut original) = (Vec::new(), Vec::new());
                canonical_uri(&path, &mut canonical);
                canonical_uri("/prod/@connections/conn_1_a%3Db", &mut original);
                canonical_query(query.as_deref().unwrap_or(""), &mut canonical);
                prop_assert_eq!(canonical, original);
            }
        }
    }
}

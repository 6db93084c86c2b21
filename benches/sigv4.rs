//! Criterion benches for SigV4 verification of `/@connections` requests
//! (`signalbox::auth::SigV4Verifier`, SPEC §9.3).
//!
//! Run them with `cargo bench --bench sigv4`. The requests are signed once, untimed, by the
//! real AWS signer (`aws-sigv4`); each iteration is one [`SigV4Verifier::verify`] with the
//! signing time as `now`, through the crate's public API only. The target is ≤ 20 µs.
//!
//! Groups:
//!
//! - `sigv4/verify/boto3_post`: a `PostToConnection` shaped as boto3 sends it behind a stage
//!   (`POST /prod/@connections/conn_…%3D`, a percent-encoded id so the path is encoded once
//!   more), signed headers `content-type;host;x-amz-date`, an unsigned `user-agent`, and a
//!   200-byte body. Throughput is requests.
//! - `sigv4/verify/js_sdk_post`: the same call shaped as the AWS JS SDK v3 sends it, eight
//!   signed headers (`amz-sdk-*`, `content-length`, `x-amz-content-sha256`,
//!   `x-amz-user-agent`, …), so the canonical headers cost more.
//! - `sigv4/verify/bad_signature`: the boto3 request with a wrong signature (the whole
//!   computation still runs; only the comparison fails).

// Benches are not test code to clippy, so `allow-expect-in-tests` does not reach them; a
// failed setup here should just stop the bench with a message.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signalbox::auth::{SigV4Verifier, SignedRequest};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const HOST: &str = "abcdef1234.execute-api.eu-west-1.amazonaws.com";
const PATH: &str = "/prod/@connections/conn_7_Yk3mQ9pL2xV8rT4w%3D";

/// Headers of `headers` plus what the signer adds (`x-amz-date`, `authorization`, and
/// `x-amz-content-sha256` when `settings` ask for it), signed at `now`.
fn signed_headers(headers: &[(&str, &str)], body: &[u8], settings: SigningSettings, now: SystemTime) -> HeaderMap {
    let identity = Credentials::new(KEY_ID, SECRET, None, None, "bench").into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("execute-api")
        .time(now)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("https://{HOST}{PATH}"),
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("signed").into_parts();
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        map.append(HeaderName::try_from(name).expect("header name"), HeaderValue::try_from(value).expect("value"));
    }
    map
}

fn bench_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("sigv4/verify");
    group.throughput(Throughput::Elements(1));
    let verifier =
        SigV4Verifier::from_pairs(&["AKIDOTHERKEY0000:another-secret".to_owned(), format!("{KEY_ID}:{SECRET}")])
            .expect("credentials");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_517_503);
    let body: Vec<u8> =
        format!(r#"{{"type":"deal.updated","dealId":"d_42","price":129.99,"note":"{}"}}"#, "x".repeat(136))
            .into_bytes();
    assert_eq!(body.len(), 200);
    let length = body.len().to_string();

    let boto3 = signed_headers(
        &[
            ("host", HOST),
            ("content-type", "application/json"),
            (
                "user-agent",
                "Botocore/1.43.11 ua/2.1 os/linux#6.18 md/arch#x86_64 lang/python#3.11.7 cfg/retry-mode#legacy",
            ),
        ],
        &body,
        SigningSettings::default(),
        now,
    );
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let js_sdk = signed_headers(
        &[
            ("host", HOST),
            ("content-type", "application/octet-stream"),
            ("content-length", &length),
            ("x-amz-user-agent", "aws-sdk-js/3.1177.0"),
            ("user-agent", "aws-sdk-js/3.1177.0 ua/2.1 os/linux lang/js md/nodejs#20.20.2"),
            ("amz-sdk-invocation-id", "25d65b38-4960-484b-a553-c7fef23cf7b6"),
            ("amz-sdk-request", "attempt=1; max=3"),
        ],
        &body,
        settings,
        now,
    );
    let mut bad = boto3.clone();
    let authorization = bad.get("authorization").expect("signed").to_str().expect("ASCII").to_owned();
    let flipped = format!("{}0", &authorization[..authorization.len() - 1]);
    let flipped =
        if flipped == authorization { format!("{}1", &authorization[..authorization.len() - 1]) } else { flipped };
    bad.insert("authorization", HeaderValue::try_from(flipped).expect("value"));

    for (name, headers, ok) in
        [("boto3_post", &boto3, true), ("js_sdk_post", &js_sdk, true), ("bad_signature", &bad, false)]
    {
        let request = SignedRequest { method: "POST", path: PATH, query: None, headers, body: &body };
        assert_eq!(verifier.verify(&request, now).is_ok(), ok, "{name}");
        group.bench_function(name, |b| b.iter(|| black_box(&verifier).verify(black_box(&request), now)));
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);

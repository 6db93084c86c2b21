//! Feeds arbitrary bytes to the WebSocket handshake checks: parsed as an HTTP request
//! (`httparse`, as hyper does) and run through `check_upgrade`, which must never panic and
//! must accept only what RFC 6455 §4.2.1 allows. The same bytes, taken as a
//! `Sec-WebSocket-Key`, check the hand-written key validation against the `base64` crate.
#![no_main]

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version, header};
use libfuzzer_sys::fuzz_target;
use signalbox::ws::{check_upgrade, is_valid_key};

fuzz_target!(|data: &[u8]| {
    // A key is valid exactly when it is canonical, padded base64 of 16 bytes.
    let reference = base64::engine::general_purpose::STANDARD.decode(data).is_ok_and(|bytes| bytes.len() == 16);
    assert_eq!(is_valid_key(data), reference, "{data:?}");

    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut slots);
    if request.parse(data).is_err() {
        return;
    }
    let method = request.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()).unwrap_or(Method::GET);
    let version = if request.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut headers = HeaderMap::new();
    for h in request.headers.iter() {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
            headers.append(name, value);
        }
    }
    match check_upgrade(&method, version, &headers) {
        Ok(accept) => {
            assert_eq!(method, Method::GET);
            assert_eq!(version, Version::HTTP_11);
            assert_eq!(accept.len(), 28, "base64 of a SHA-1 digest");
            let keys: Vec<_> = headers.get_all(header::SEC_WEBSOCKET_KEY).iter().collect();
            assert!(keys.len() == 1 && is_valid_key(keys[0].as_bytes()));
            let versions: Vec<_> = headers.get_all(header::SEC_WEBSOCKET_VERSION).iter().collect();
            assert!(versions.len() == 1 && versions[0] == "13");
        }
        Err(rejection) => {
            assert!(rejection.status().is_client_error(), "{rejection:?}");
            assert!(!rejection.message().is_empty());
        }
    }
});

//! The dashboard's pages, scripts and styles, compiled into the binary (no CDN: it works
//! offline, inside a VPC), served with a strict Content-Security-Policy.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every file of `src/admin/assets/`, by name (a unit test checks the list is complete).
const FILES: &[(&str, &[u8])] = &[
    ("api.js", include_bytes!("assets/api.js")),
    ("app.js", include_bytes!("assets/app.js")),
    ("chart.js", include_bytes!("assets/chart.js")),
    ("dom.js", include_bytes!("assets/dom.js")),
    ("index.html", include_bytes!("assets/index.html")),
    ("login.html", include_bytes!("assets/login.html")),
    ("login.js", include_bytes!("assets/login.js")),
    ("page_connections.js", include_bytes!("assets/page_connections.js")),
    ("page_nodes.js", include_bytes!("assets/page_nodes.js")),
    ("page_overview.js", include_bytes!("assets/page_overview.js")),
    ("page_publish.js", include_bytes!("assets/page_publish.js")),
    ("page_sinks.js", include_bytes!("assets/page_sinks.js")),
    ("page_topics.js", include_bytes!("assets/page_topics.js")),
    ("style.css", include_bytes!("assets/style.css")),
];

/// The policy on every admin response: only our own scripts, styles and connections, no
/// inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A file's bytes, by name.
pub fn file(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// A file's ETag: a digest of its bytes, computed once.
fn etag(name: &str) -> Option<HeaderValue> {
    static TAGS: std::sync::OnceLock<Vec<(&'static str, HeaderValue)>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        FILES
            .iter()
            .filter_map(|(name, bytes)| {
                let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
                let tag = format!("\"{}\"", hex::encode(&digest[..8]));
                HeaderValue::from_str(&tag).ok().map(|v| (*name, v))
            })
            .collect()
    });
    tags.iter().find(|(n, _)| *n == name).map(|(_, tag)| tag.clone())
}

/// `GET /admin/assets/{name}`: cached, but revalidated (an ETag per content), so a new
/// binary's assets are never mixed with an old page.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let (Some(bytes), Some(tag)) = (file(&name), etag(&name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(&name))),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, tag),
        ],
        bytes,
    )
        .into_response()
}

/// A page (never cached: it depends on the session).
pub fn page(name: &str) -> Response {
    match file(name) {
        Some(bytes) => {
            ([(header::CONTENT_TYPE, content_type(name)), (header::CACHE_CONTROL, "no-store")], bytes).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_compiled_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/assets");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(file(&name).is_some(), "src/admin/assets/{name} is not in assets::FILES");
        }
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
    }
}

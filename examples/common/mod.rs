//! Code shared by the job examples (`job_pipeline`, `job_watcher`, `job_demo`).
//!
//! The conventions they follow are described in `docs/jobs.md`: every job event goes to the
//! topic `job:<id>` with `"retain": true`, and its `type` is one of [`PROGRESS_UPDATE`],
//! [`STAGE_COMPLETE`] or one of the [`TERMINAL_TYPES`].

pub mod pipeline;
pub mod watcher;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// `type` of an event that reports progress inside a stage.
pub const PROGRESS_UPDATE: &str = "progress_update";
/// `type` of the event that closes a stage, with its results.
pub const STAGE_COMPLETE: &str = "stage_complete";
/// `type`s after which a job publishes nothing more.
pub const TERMINAL_TYPES: [&str; 3] = ["job_complete", "job_failed", "job_cancelled"];

/// The default server, as `signalbox serve` listens out of the box.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Prints one line to standard output; unlike `println!`, a closed pipe (`| head`) is not a panic.
pub fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The topic of a job.
pub fn job_topic(job: &str) -> String {
    format!("job:{job}")
}

/// Whether an event with this `type` ends its job.
pub fn is_terminal(event_type: &str) -> bool {
    TERMINAL_TYPES.contains(&event_type)
}

/// A job id that is unique enough for a demo, e.g. `build-19b2f6c1a3e`.
pub fn random_job_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("build-{:x}", mixed & 0xff_ffff_ffff)
}

/// A server base URL such as `http://127.0.0.1:8080`: a missing scheme means `http://`,
/// a trailing `/` is dropped.
#[derive(Debug, Clone)]
pub struct Server {
    http: String,
}

impl Server {
    /// Parses `http://host:port`, `https://host:port` or `host:port`.
    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim().trim_end_matches('/');
        if raw.is_empty() {
            bail!("the server URL is empty (expected e.g. {DEFAULT_SERVER})");
        }
        let http = if raw.starts_with("http://") || raw.starts_with("https://") {
            raw.to_owned()
        } else if raw.contains("://") {
            bail!("unsupported server URL {raw:?}: expected http://host:port");
        } else {
            format!("http://{raw}")
        };
        Ok(Self { http })
    }

    /// `http://host:port/<path>`; `path` starts with `/`.
    pub fn http_url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// `ws://host:port/ws` (or `wss://` for an `https://` server).
    pub fn ws_url(&self) -> String {
        let rest = self.http.strip_prefix("https://").map(|r| format!("wss://{r}"));
        rest.unwrap_or_else(|| self.http.replacen("http://", "ws://", 1)) + "/ws"
    }
}

/// Fails unless `credential` is set or `dev` says the server runs with `--dev`.
pub fn require_credential(credential: Option<String>, dev: bool, what: &str) -> Result<Option<String>> {
    match credential {
        Some(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
        _ if dev => Ok(None),
        _ => bail!("{what} is required (or pass --dev for a server started with `signalbox serve --dev`)"),
    }
}

/// An HTTP client with a request timeout.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("building the HTTP client")
}

/// `GET /health`, with an error that says how to start a server.
pub async fn check_health(client: &reqwest::Client, server: &Server) -> Result<()> {
    let url = server.http_url("/health");
    let response = client.get(&url).send().await.with_context(|| {
        format!("cannot reach Signalbox at {url}; start one with `cargo run --release -- serve --dev`")
    })?;
    if !response.status().is_success() {
        bail!("{url} answered {}; is this a Signalbox server?", response.status());
    }
    Ok(())
}

/// Sends an `/api/*` request (with the API key if there is one) and returns the JSON answer,
/// or an error built from the API's `{"error":{"code","message"}}` body.
pub async fn api_call(request: reqwest::RequestBuilder, api_key: Option<&str>) -> Result<Value> {
    let request = match api_key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let response = request.send().await.context("HTTP request to the Signalbox API failed")?;
    let status = response.status();
    let body = response.text().await.context("reading the API answer")?;
    if status.is_success() {
        return serde_json::from_str(&body).with_context(|| format!("the API answered {status} with non-JSON: {body}"));
    }
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str).unwrap_or("?");
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or(body.as_str());
    let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
        " (pass the server's API key with --api-key / SIGNALBOX_API_KEY, or run the server with --dev)"
    } else {
        ""
    };
    bail!("the API answered {status} {code}: {message}{hint}")
}

/// Percent-encodes a topic for use in a URL path (`/` inside a topic becomes `%2F`).
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.:@=".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn field<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event.get(name).filter(|v| !v.is_null())
}

fn text(event: &Value, name: &str) -> String {
    match field(event, name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// One readable line for a job event, e.g.
/// `#3  progress_update  build     45%  Compiling (~12 s left)`.
pub fn describe(event: &Value) -> String {
    let offset = field(event, "offset").map(|o| format!("#{o}")).unwrap_or_default();
    let kind = text(event, "type");
    let detail = match kind.as_str() {
        PROGRESS_UPDATE => {
            let progress = field(event, "progress").map(|p| format!("{:>3}%", p.to_string())).unwrap_or_default();
            let eta =
                field(event, "estimated_seconds_remaining").map(|s| format!(" (~{s} s left)")).unwrap_or_default();
            format!("{:<8} {progress}  {}{eta}", text(event, "stage"), text(event, "message"))
        }
        STAGE_COMPLETE => format!("{:<8} results {}", text(event, "stage"), text(event, "results")),
        "job_complete" => format!("results {}", text(event, "results")),
        "job_failed" => format!("error: {}", text(event, "error")),
        "job_cancelled" => "cancelled".to_owned(),
        _ => event.to_string(),
    };
    format!("{offset:<4} {kind:<15}  {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let s = Server::parse("127.0.0.1:8080/").unwrap();
        assert_eq!(s.http_url("/api/publish"), "http://127.0.0.1:8080/api/publish");
        assert_eq!(s.ws_url(), "ws://127.0.0.1:8080/ws");
        assert_eq!(Server::parse("https://rt.example.com").unwrap().ws_url(), "wss://rt.example.com/ws");
        assert!(Server::parse("ftp://x").is_err());
    }

    #[test]
    fn path_encoding() {
        assert_eq!(encode_path_segment("job:a/b"), "job:a%2Fb");
    }
}

//! The `$connect` and `$disconnect` lifecycle webhooks (`[apigw] connect_url`,
//! `disconnect_url`): API Gateway's Lambda-proxy events, POSTed as JSON, so the handlers
//! users wrote for API Gateway's `$connect`/`$disconnect` routes run unchanged behind a
//! plain HTTP endpoint.
//!
//! `$connect` is asked before an upgrade completes and its answer decides it; `$disconnect`
//! is told after a connection closed, best effort, from a task nothing waits for. This
//! module owns the events' shapes and the calls. It must never hold a connection open
//! while a `$disconnect` call runs, nor retry a call (a `$connect` client retries by
//! reconnecting; a lost `$disconnect` is what API Gateway's own contract allows).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use reqwest::{Client, Url};
use serde_json::{Map, Value, json};

use super::event::{API_ID, header_maps, query_maps, request_time, unix_ms};
use crate::auth::Identity;
use crate::config::ApiGatewayConfig;
use crate::metrics::Metrics;
use crate::sinks::http::{describe_error, read_prefix};

/// Bytes of a `$connect` answer read for a Lambda-proxy `statusCode`; a larger answer is
/// judged by its HTTP status alone.
const ANSWER_LIMIT: usize = 64 * 1024;

/// The lifecycle webhooks of this node.
pub struct Lifecycle {
    client: Client,
    connect_url: Option<Url>,
    disconnect_url: Option<Url>,
    stage: String,
    metrics: Metrics,
}

/// Why the `$connect` webhook refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    /// It answered this non-2xx status (or a 2xx Lambda-proxy result carrying it).
    #[error("refused by the $connect webhook (status {0})")]
    Refused(StatusCode),
    /// It could not be reached or did not answer in time.
    #[error("the $connect webhook is unavailable: {0}")]
    Unavailable(String),
}

impl ConnectRefusal {
    /// The HTTP status the upgrade is refused with: the webhook's own 4xx/5xx, else 502.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Refused(status) if status.is_client_error() || status.is_server_error() => *status,
            Self::Refused(_) | Self::Unavailable(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// What the `$connect` event tells about an upgrade request.
pub struct ConnectRequest<'a> {
    /// The id the connection will have.
    pub connection_id: &'a str,
    /// The upgrade request's headers.
    pub headers: &'a HeaderMap,
    /// Its raw query string.
    pub query: Option<&'a str>,
    /// The client's address.
    pub remote: SocketAddr,
    /// Who the token says the client is.
    pub identity: &'a Identity,
    /// When the connection started: its `connectedAt` in every later event and API answer.
    pub connected_at: SystemTime,
}

/// What the `$disconnect` event tells about a closed connection.
pub struct DisconnectNotice {
    /// The connection id.
    pub connection_id: String,
    /// The user.
    pub user: String,
    /// The client's address.
    pub remote: SocketAddr,
    /// The upgrade request's `User-Agent`.
    pub user_agent: String,
    /// When it connected.
    pub connected_at: SystemTime,
    /// The WebSocket close code (1005: a close frame without one; 1006: no close frame).
    pub status_code: u16,
    /// Why, in words.
    pub reason: String,
}

impl Lifecycle {
    /// The webhooks `config` names; `None` when it names neither.
    pub fn new(config: &ApiGatewayConfig, metrics: Metrics) -> Result<Option<Self>, String> {
        if config.connect_url.is_none() && config.disconnect_url.is_none() {
            return Ok(None);
        }
        let parse = |key: &str, url: &Option<String>| {
            url.as_deref().map(|u| Url::parse(u).map_err(|e| format!("apigw.{key} {u:?}: {e}"))).transpose()
        };
        let connect_url = parse("connect_url", &config.connect_url)?;
        let disconnect_url = parse("disconnect_url", &config.disconnect_url)?;
        let client = Client::builder()
            .user_agent(concat!("signalbox/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            // A redirect is an answer, not a place to re-send the event to.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the lifecycle webhooks' HTTP client: {}", describe_error(&e)))?;
        Ok(Some(Self { client, connect_url, disconnect_url, stage: config.stage.clone(), metrics }))
    }

    /// Whether a `$connect` webhook decides upgrades.
    pub fn has_connect(&self) -> bool {
        self.connect_url.is_some()
    }

    /// Asks the `$connect` webhook whether the connection may open. `Ok` also when no
    /// `connect_url` is configured.
    pub async fn on_connect(&self, request: &ConnectRequest<'_>) -> Result<(), ConnectRefusal> {
        let Some(url) = &self.connect_url else { return Ok(()) };
        let event = self.connect_event(request, SystemTime::now());
        let answer = match self.post(url.clone(), &event).await {
            Ok(answer) => answer,
            Err(e) => {
                self.metrics.apigw_webhook_failure("connect");
                let why = describe_error(&e);
                tracing::warn!(connectionId = %request.connection_id, error = %why, "$connect webhook unavailable; connection refused");
                return Err(ConnectRefusal::Unavailable(why));
            }
        };
        let status = answer.status();
        if !status.is_success() {
            return Err(ConnectRefusal::Refused(status));
        }
        // A handler behind a plain HTTP adapter may answer 200 with the Lambda-proxy
        // result it returns to API Gateway: its `statusCode` decides then.
        let body = read_prefix(answer, ANSWER_LIMIT + 1).await;
        if body.len() <= ANSWER_LIMIT
            && let Some(code) = lambda_status(&body)
            && !code.is_success()
        {
            return Err(ConnectRefusal::Refused(code));
        }
        Ok(())
    }

    /// Tells the `$disconnect` webhook, from a task of its own that nothing waits for.
    pub fn on_disconnect(self: &std::sync::Arc<Self>, notice: DisconnectNotice) {
        let Some(url) = self.disconnect_url.clone() else { return };
        let this = self.clone();
        tokio::spawn(async move {
            let event = this.disconnect_event(&notice, SystemTime::now());
            let outcome = this.post(url, &event).await;
            let failure = match outcome {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) => format!("status {}", answer.status()),
                Err(e) => describe_error(&e),
            };
            this.metrics.apigw_webhook_failure("disconnect");
            tracing::warn!(connectionId = %notice.connection_id, error = %failure, "$disconnect webhook failed (not retried)");
        });
    }

    /// POSTs `event` as JSON.
    async fn post(&self, url: Url, event: &Value) -> Result<reqwest::Response, reqwest::Error> {
        let body = event.to_string();
        self.client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await
    }

    fn connect_event(&self, request: &ConnectRequest<'_>, now: SystemTime) -> Value {
        let (headers, multi_headers) = header_maps(request.headers);
        let host = request.headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let user_agent =
            request.headers.get(axum::http::header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let now_ms = unix_ms(now);
        let connected_at_ms = unix_ms(request.connected_at);
        let mut authorizer = Map::new();
        authorizer.insert("principalId".into(), Value::from(request.identity.user.as_str()));
        if request.identity.admin {
            authorizer.insert("role".into(), Value::from("admin"));
        }
        if let Some(exp) = request.identity.expires_at {
            authorizer.insert("exp".into(), Value::from(exp));
        }
        let context = self.request_context(RequestContext {
            route_key: "$connect",
            event_type: "CONNECT",
            connection_id: request.connection_id,
            now_ms,
            connected_at_ms,
            source_ip: request.remote.ip().to_string(),
            user_agent,
            domain_name: host,
            authorizer: Value::Object(authorizer),
        });
        let mut event = json!({"headers": headers, "multiValueHeaders": multi_headers});
        if let Some((query, multi_query)) = query_maps(request.query) {
            event["queryStringParameters"] = query;
            event["multiValueQueryStringParameters"] = multi_query;
        }
        event["requestContext"] = context;
        event["isBase64Encoded"] = Value::Bool(false);
        event
    }

    fn disconnect_event(&self, notice: &DisconnectNotice, now: SystemTime) -> Value {
        let mut context = self.request_context(RequestContext {
            route_key: "$disconnect",
            event_type: "DISCONNECT",
            connection_id: &notice.connection_id,
            now_ms: unix_ms(now),
            connected_at_ms: unix_ms(notice.connected_at),
            source_ip: notice.remote.ip().to_string(),
            user_agent: &notice.user_agent,
            domain_name: "",
            authorizer: json!({"principalId": notice.user}),
        });
        context["disconnectStatusCode"] = Value::from(notice.status_code);
        context["disconnectReason"] = Value::from(notice.reason.as_str());
        let headers = json!({"User-Agent": notice.user_agent});
        let multi_headers = json!({"User-Agent": [notice.user_agent]});
        json!({"headers": headers, "multiValueHeaders": multi_headers, "requestContext": context, "isBase64Encoded": false})
    }

    fn request_context(&self, c: RequestContext<'_>) -> Value {
        // One id per event, as API Gateway gives each event its own request id.
        let request_id = format!("{}-{}", c.connection_id, c.now_ms);
        json!({
            "routeKey": c.route_key,
            "eventType": c.event_type,
            "extendedRequestId": request_id,
            "requestTime": request_time(c.now_ms),
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": c.connected_at_ms,
            "requestTimeEpoch": c.now_ms,
            "identity": {"sourceIp": c.source_ip, "userAgent": c.user_agent},
            "requestId": request_id,
            "domainName": c.domain_name,
            "connectionId": c.connection_id,
            "apiId": API_ID,
            "authorizer": c.authorizer,
        })
    }
}

/// The parts of a `requestContext` that differ between events.
struct RequestContext<'a> {
    route_key: &'static str,
    event_type: &'static str,
    connection_id: &'a str,
    now_ms: i64,
    connected_at_ms: i64,
    source_ip: String,
    user_agent: &'a str,
    domain_name: &'a str,
    authorizer: Value,
}

/// The `statusCode` of a Lambda-proxy result (`{"statusCode": 401, "body": …}`), if the
/// answer is one.
fn lambda_status(body: &[u8]) -> Option<StatusCode> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = value.as_object()?.get("statusCode")?.as_u64()?;
    StatusCode::from_u16(u16::try_from(code).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::domain::UserId;

    fn lifecycle() -> Lifecycle {
        let config = ApiGatewayConfig {
            connect_url: Some("http://127.0.0.1:9/connect".into()),
            disconnect_url: Some("http://127.0.0.1:9/disconnect".into()),
            stage: "prod".into(),
            ..ApiGatewayConfig::default()
        };
        Lifecycle::new(&config, Metrics::new()).unwrap().unwrap()
    }

    #[test]
    fn no_urls_no_webhooks() {
        assert!(Lifecycle::new(&ApiGatewayConfig::default(), Metrics::new()).unwrap().is_none());
    }

    #[test]
    fn the_connect_event_has_the_lambda_proxy_shape() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("gw.example.com"));
        headers.insert("user-agent", HeaderValue::from_static("Mozilla/5.0"));
        let identity =
            Identity { user: UserId::new("user-7"), admin: false, topics: Vec::new(), expires_at: Some(1_900_000_000) };
        let request = ConnectRequest {
            connection_id: "conn_1_a",
            headers: &headers,
            query: Some("token=abc&x=1&x=2"),
            remote: "203.0.113.9:5000".parse().unwrap(),
            identity: &identity,
            connected_at: std::time::UNIX_EPOCH + Duration::from_millis(1_795_341_600_100),
        };
        let at = std::time::UNIX_EPOCH + Duration::from_millis(1_795_341_600_123);
        let event = lifecycle().connect_event(&request, at);
        assert_eq!(event["headers"]["Host"], "gw.example.com");
        assert_eq!(event["multiValueHeaders"]["User-Agent"], json!(["Mozilla/5.0"]));
        assert_eq!(event["queryStringParameters"], json!({"token": "abc", "x": "2"}));
        assert_eq!(event["multiValueQueryStringParameters"]["x"], json!(["1", "2"]));
        let c = &event["requestContext"];
        assert_eq!(c["routeKey"], "$connect");
        assert_eq!(c["eventType"], "CONNECT");
        assert_eq!(c["connectionId"], "conn_1_a");
        assert_eq!(c["stage"], "prod");
        assert_eq!(c["domainName"], "gw.example.com");
        assert_eq!(c["requestTime"], "22/Nov/2026:10:00:00 +0000");
        assert_eq!(c["requestTimeEpoch"], 1_795_341_600_123_i64);
        assert_eq!(c["connectedAt"], 1_795_341_600_100_i64);
        assert_eq!(c["identity"], json!({"sourceIp": "203.0.113.9", "userAgent": "Mozilla/5.0"}));
        assert_eq!(c["authorizer"], json!({"principalId": "user-7", "exp": 1_900_000_000}));
        assert_eq!(event["isBase64Encoded"], false);
    }

    #[test]
    fn the_disconnect_event_carries_the_close() {
        let notice = DisconnectNotice {
            connection_id: "conn_1_a".into(),
            user: "user-7".into(),
            remote: "127.0.0.1:1".parse().unwrap(),
            user_agent: "ua".into(),
            connected_at: std::time::UNIX_EPOCH + Duration::from_millis(1_000),
            status_code: 1001,
            reason: "server shutting down".into(),
        };
        let event = lifecycle().disconnect_event(&notice, SystemTime::now());
        let c = &event["requestContext"];
        assert_eq!((c["routeKey"].as_str(), c["eventType"].as_str()), (Some("$disconnect"), Some("DISCONNECT")));
        assert_eq!(c["disconnectStatusCode"], 1001);
        assert_eq!(c["disconnectReason"], "server shutting down");
        assert_eq!(c["connectedAt"], 1_000);
        assert!(event.get("queryStringParameters").is_none());
    }

    #[test]
    fn lambda_results_and_statuses() {
        assert_eq!(lambda_status(br#"{"statusCode":401,"body":"\"no\""}"#), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(lambda_status(br#"{"statusCode":200}"#), Some(StatusCode::OK));
        for other in [&b"ok"[..], b"{}", br#"{"statusCode":"401"}"#, br#"{"statusCode":70000}"#, b"[401]"] {
            assert_eq!(lambda_status(other), None);
        }
        assert_eq!(ConnectRefusal::Refused(StatusCode::UNAUTHORIZED).status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ConnectRefusal::Refused(StatusCode::FOUND).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(ConnectRefusal::Unavailable("down".into()).status(), StatusCode::BAD_GATEWAY);
    }
}

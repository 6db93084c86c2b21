//! [`HttpSink`]: one pooled HTTP client POSTing each message to the configured URL.

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Response, Url};

use super::answer::{self, MAX_REPLY_BYTES};
use super::{HttpConfig, event};
use crate::sinks::{Delivered, RoutedMessage, Sink, SinkBuildError, SinkError};

/// The header carrying the message id, so a webhook can de-duplicate a redelivery without
/// parsing the body.
pub const MESSAGE_ID_HEADER: &str = "x-signalbox-message-id";

/// The longest a TCP (and TLS) connect may take, even under a generous request timeout: a
/// webhook that is down should be reported down in seconds, while a reachable one may
/// legitimately take the whole `timeout` to answer.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of an error answer's body is read to explain the failure (the rest is not
/// read: the connection is then closed instead of reused, which is fine for an error).
const ERROR_DETAIL_BYTES: usize = 1024;

/// A webhook sink: POSTs each message as an API Gateway WebSocket `MESSAGE` event.
#[derive(Debug)]
pub struct HttpSink {
    name: String,
    client: Client,
    url: Url,
    stage: String,
    domain_name: String,
    timeout: Duration,
}

/// Builds the `[sinks.NAME]` webhook sink from its (validated) configuration. Does not touch
/// the network: an unreachable webhook is found by [`Sink::check`] and by sends.
pub fn build(name: &str, config: &HttpConfig) -> Result<HttpSink, SinkBuildError> {
    let error = |message: String| SinkBuildError { name: name.to_owned(), message };
    let url = Url::parse(&config.url).map_err(|e| error(format!("url {:?}: {e}", config.url)))?;
    let domain_name = match &config.domain_name {
        Some(domain_name) => domain_name.clone(),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut headers = HeaderMap::with_capacity(config.headers.len());
    for (header, value) in &config.headers {
        let header_name =
            HeaderName::from_bytes(header.as_bytes()).map_err(|e| error(format!("header {header}: {e}")))?;
        let mut value = HeaderValue::from_str(value).map_err(|e| error(format!("header {header}: {e}")))?;
        // Configured headers are typically credentials: keep them out of debug output.
        value.set_sensitive(true);
        headers.insert(header_name, value);
    }
    let client = Client::builder()
        .user_agent(concat!("signalbox/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        // Bounds connect + request + the whole answer body.
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
        // A redirect is answered as-is and rejected: following it would re-send the message
        // (possibly as a GET, without its body) somewhere the operator did not configure.
        .redirect(reqwest::redirect::Policy::none())
        // reqwest's default retries only protocol-level refusals (a request the server
        // provably did not process, e.g. an HTTP/2 REFUSED_STREAM); those are not message
        // retries, which stay with the shared retry policy.
        .build()
        .map_err(|e| error(describe(&e)))?;
    Ok(HttpSink {
        name: name.to_owned(),
        client,
        url,
        stage: config.stage.clone(),
        domain_name,
        timeout: config.timeout,
    })
}

impl HttpSink {
    /// The name of the sink (`[sinks.NAME]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `requestContext.domainName` in every event: the configured one, else the URL's host.
    pub fn domain_name(&self) -> &str {
        &self.domain_name
    }

    /// Classifies a request that got no HTTP answer.
    fn transport_error(&self, error: &reqwest::Error) -> SinkError {
        let detail = describe(error);
        if error.is_timeout() {
            SinkError::Unavailable(format!("no answer within {:?}: {detail}", self.timeout))
        } else if error.is_connect() {
            SinkError::Unavailable(detail)
        } else if error.is_builder() {
            // The request could not even be formed (e.g. a message id that is not a valid
            // header value): this message can never be sent.
            SinkError::Rejected(detail)
        } else {
            // Connected and sent, then the connection broke without an answer. The webhook
            // was reached, so this uses one of the message's attempts: a message that crashes
            // its handler is dead-lettered in the end instead of retried forever, while a
            // real outage shows up as connect errors on the next attempt.
            SinkError::Failed(detail)
        }
    }
}

#[async_trait]
impl Sink for HttpSink {
    async fn send(&self, message: &RoutedMessage) -> Result<Delivered, SinkError> {
        let event = event::encode(message, &self.stage, &self.domain_name)
            .map_err(|e| SinkError::Rejected(format!("cannot encode the event: {e}")))?;
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(MESSAGE_ID_HEADER, message.message_id.as_str())
            .body(event)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if let Err(error) = answer::classify_status(response.status()) {
            let detail = read_prefix(response, ERROR_DETAIL_BYTES).await;
            return Err(answer::with_detail(error, &detail));
        }
        // The webhook took the message: whatever happens to its answer body now, the
        // message is delivered and must not be re-sent.
        let reply = match read_bounded(response, MAX_REPLY_BYTES).await {
            Ok(Some(body)) => {
                let reply = answer::reply(body);
                if reply.is_none() {
                    tracing::debug!(sink = %self.name, message_id = %message.message_id, "2xx answer without a JSON body: nothing to relay");
                }
                reply
            }
            Ok(None) => {
                tracing::warn!(sink = %self.name, message_id = %message.message_id, limit = MAX_REPLY_BYTES, "webhook reply too large: not relayed");
                None
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, message_id = %message.message_id, error = %describe(&e), "cannot read the webhook's reply: not relayed");
                None
            }
        };
        Ok(Delivered { reply })
    }

    /// A `HEAD` of the URL: any HTTP answer (a 404 or 405 included) proves the webhook's
    /// server is there; only a request that gets no answer means it is down.
    async fn check(&self) -> Result<(), SinkError> {
        match self.client.head(self.url.clone()).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_timeout() => {
                Err(SinkError::Unavailable(format!("no answer within {:?}: {}", self.timeout, describe(&e))))
            }
            Err(e) => Err(SinkError::Unavailable(describe(&e))),
        }
    }
}

/// Reads the answer's body if it is at most `limit` bytes; `None` if it is larger (stops
/// reading as soon as it knows, so memory stays bounded whatever the webhook sends).
async fn read_bounded(mut response: Response, limit: usize) -> Result<Option<Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// The first `limit` bytes of the answer's body (fewer if it is shorter or breaks off).
pub(crate) async fn read_prefix(mut response: Response, limit: usize) -> Bytes {
    let mut body = BytesMut::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    body.freeze()
}

/// An error with its chain of causes: reqwest's own message alone ("error sending request")
/// does not say whether the connection was refused, reset or timed out.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

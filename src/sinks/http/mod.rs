//! The `http` sink: a webhook receiving each message as an AWS API Gateway WebSocket
//! Lambda-proxy event, so handlers written for API Gateway run unchanged.
//!
//! This module owns the HTTP exchange with one webhook: the event's shape (`event.rs`), the
//! meaning of an answer (`answer.rs`: status → [`SinkError`](crate::sinks::SinkError), which
//! bodies become a reply to the client) and the pooled client ([`HttpSink`]). It must never
//! retry a message (the shared retry policy does), follow a redirect, read an unbounded
//! answer, or wait longer than the configured `timeout`.
//!
//! The request: `POST <url>` with `Content-Type: application/json`, the configured
//! `headers`, `X-Signalbox-Message-Id: <message id>` and the body
//! `{"requestContext":{"routeKey","eventType":"MESSAGE","messageId","extendedRequestId",
//! "requestTime","messageDirection":"IN","stage","connectedAt","requestTimeEpoch",
//! "identity":{"sourceIp"},"requestId","domainName","connectionId","apiId":"signalbox",
//! "authorizer":{"principalId"}},"body":"<the client's frame text>","isBase64Encoded":false}`.
//! A 2xx answer whose body is one JSON value is relayed to the client unchanged.

mod answer;
mod config;
mod event;
mod sink;

pub use config::HttpConfig;
pub use sink::{HttpSink, MESSAGE_ID_HEADER, build};
pub(crate) use sink::{describe as describe_error, read_prefix};

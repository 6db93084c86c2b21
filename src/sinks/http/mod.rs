//! The `http` sink: a webhook receiving each message as an AWS API Gateway WebSocket
//! Lambda-proxy event, so handlers written for API Gateway run unchanged.

mod config;

pub use config::HttpConfig;

//! The one integration-test binary: every test starts the real gateway on 127.0.0.1:0
//! and talks to it with real WebSocket and HTTP clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod admin;
mod agents;
mod api;
mod apigw;
mod apigw_webhooks;
mod auth;
mod batch;
mod bench;
mod binary;
mod cluster_directory;
mod delivery;
mod edge_api;
mod edge_http;
mod handshake;
mod history;
mod limits;
mod measure;
mod ops;
mod presence;
mod protocol;
mod redis_broker;
mod redis_cluster_harness;
mod redis_presence;
mod redis_store;
mod redis_tls;
mod rfc6455;
mod routing;
mod servers;
mod sink_http;
mod sink_redis;
mod sink_sqs;
mod socketio;
mod support;

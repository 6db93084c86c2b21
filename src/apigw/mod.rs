//! AWS API Gateway compatibility (SPEC §9.3): what lets code written for API Gateway
//! WebSocket APIs run unchanged against Signalbox.
//!
//! - [`management`]: the management API, `POST|GET|DELETE /@connections/{id}` (also under
//!   a stage prefix), authenticated with SigV4 or an API key, for a connection on any node.
//! - [`lifecycle`]: the `$connect` and `$disconnect` webhooks, in the Lambda-proxy shape.
//! - [`event`]: the parts of API Gateway's events that the webhooks and the `http` sink's
//!   `MESSAGE` events share.
//!
//! It reaches connections only through the [`ConnectionDirectory`](crate::hub::ConnectionDirectory)
//! and must never name a broker or hold a connection's lock across an await.

pub mod event;
pub mod lifecycle;
pub mod management;

pub use lifecycle::{ConnectRefusal, ConnectRequest, DisconnectNotice, Lifecycle};

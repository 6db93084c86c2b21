//! The `redis_stream` sink: `XADD` to a Redis stream, trimmed with `MAXLEN ~`.
//!
//! This module owns the exchange with one Redis server for one stream key: the entry's
//! fields, the (lazy, replaceable) connection and what a Redis failure means
//! (`classify.rs`). It must never retry a command (the shared retry policy does), wait
//! longer than the configured `timeout` for any command, or fail to build because Redis is
//! down at start (health checks and sends report that).
//!
//! # The entry (the contract for consumers)
//!
//! Each message is one entry, `XADD <stream> MAXLEN ~ <max_len> * <field> <value>…`, with
//! an id chosen by Redis and these fields, all strings, in this order:
//!
//! | field          | value                                                              |
//! |----------------|--------------------------------------------------------------------|
//! | `messageId`    | `msg_<unix-ms>_<16 hex>`, unique per message; the same on a redelivery, so de-duplicate on it |
//! | `action`       | the message's `action` (the route key)                             |
//! | `connectionId` | the sending connection; reply with `POST /api/connections/{id}/send`|
//! | `userId`       | the sender (`sub` of its token, `anonymous` in dev mode)           |
//! | `requestId`    | the client's `requestId`, or empty if it gave none                 |
//! | `receivedAt`   | when the gateway received it, RFC 3339 UTC with milliseconds       |
//! | `data`         | the JSON envelope every sink kind shares (SPEC §7): `{"action","connectionId","userId","requestId","messageId","receivedAt","message"}`, `message` being the client's whole message as sent |
//!
//! Delivery is at-least-once: after a timeout or a failed pipeline an entry may be added
//! twice (same `messageId`). `MAXLEN ~` trims at Redis's convenience (whole macro nodes),
//! so the stream may run somewhat past `max_len`; it never falls below it by trimming.

mod classify;
mod config;
mod sink;

pub use config::RedisStreamConfig;
pub use sink::{RedisStreamSink, build};

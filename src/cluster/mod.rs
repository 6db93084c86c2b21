//! Cross-node services built on the Redis broker: what one gateway node needs to know
//! about, or do to, what another node holds.
//!
//! It owns the cluster-wide connection directory ([`RedisDirectory`]): each node's open
//! connections registered in Redis under a TTL, and the request/reply protocol over the
//! nodes' channels that carries a `get`, `send` or `close` to the node holding the
//! connection.
//!
//! It reaches Redis only through [`crate::broker::redis::RedisBroker`] (its command
//! connection and its node channels) and connections only through the hub's
//! [`crate::hub::LocalDirectory`] and [`crate::hub::ConnectionRegistry`]. It must never
//! put a Redis round trip on a client's connect path or on fan-out, never wait for a
//! client, never touch two Redis hash tags in one command (so it runs on Redis Cluster),
//! and never hold a lock across an await.

pub mod directory;
pub mod stats;

pub use directory::{DirectoryOptions, RedisDirectory};
pub use stats::RedisClusterStats;

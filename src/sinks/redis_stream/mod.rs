//! The `redis_stream` sink: `XADD` to a Redis stream, trimmed with `MAXLEN ~`.

mod config;

pub use config::RedisStreamConfig;

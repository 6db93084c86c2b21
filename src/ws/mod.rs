//! The native WebSocket endpoint (`GET /ws`, SPEC §3).
//!
//! Owns the upgrade (authentication, origin, admission), the per-connection reader and
//! writer, the wire protocol and the close codes. It talks to the hub and the auth
//! traits only; it must never name a broker, sink or JWT library.

mod close;
pub(crate) mod connection;
pub(crate) mod handshake;
pub mod liveness;
pub mod protocol;
pub mod replies;
pub(crate) mod session;
pub(crate) mod socket;
pub(crate) mod upgrade;

pub use close::close_code;
pub use handshake::{UpgradeRejection, check_upgrade, is_valid_key};
pub use upgrade::ws_handler;

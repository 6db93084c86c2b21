//! The names of the client actions the gateway answers itself (SPEC §7).
//!
//! Lives in `domain` because both the protocol parser (`ws::protocol`) and the
//! configuration check (`config`, routes may not take these names over) need it, and
//! `config` must never depend on `ws`.

/// The actions the gateway answers itself; routes cannot take them over (SPEC §7).
pub const BUILT_IN_ACTIONS: &[&str] =
    &["subscribe", "unsubscribe", "publish", "request_status", "presence", "ping", "subscriptions", "refresh"];

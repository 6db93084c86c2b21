//! What a Redis failure means for the message: the [`RedisError`] → [`SinkError`] table.
//!
//! A pure function, so every row is unit-tested with errors parsed from real RESP replies.
//! The rule behind the table: a refusal that every message would get alike (the server is
//! loading, out of memory, read-only after a failover, our credentials or ACL are wrong, the
//! stream key holds another type) is a problem of the *sink*, not of the message, so it is
//! [`SinkError::Unavailable`]: messages stay queued (an outage uses no attempts), the sink
//! is reported down with the reason, and everything flows again once an operator fixes it.
//! Classifying those `Rejected` would dead-letter every message until then.
//!
//! No Redis answer is [`SinkError::Rejected`]: `XADD key MAXLEN ~ n * field value…` has no
//! argument a message could get wrong. Anything unexpected is [`SinkError::Failed`] (the
//! server was reached; retried, using attempts, so it ends in the dead letters if it lasts).

use redis::{ErrorKind, RedisError};

use crate::sinks::SinkError;

/// Server error codes that mean "not now" or "not with this setup", never "not this message".
const UNAVAILABLE_CODES: &[&str] = &[
    // Transient server states: retry later.
    "LOADING",     // loading the dataset after a restart
    "BUSY",        // a script or function is running past its time limit
    "TRYAGAIN",    // cluster resharding
    "CLUSTERDOWN", // cluster cannot serve
    "MASTERDOWN",  // replica lost its master
    "READONLY",    // we are talking to a replica (after a failover)
    "OOM",         // maxmemory reached: consumers must catch up or the stream be trimmed
    "MISCONF",     // persistence failing: the server refuses writes
    // The sink's configuration: the same for every message until an operator fixes it.
    "NOAUTH",    // the server wants a password the URL does not give
    "WRONGPASS", // wrong user or password
    "NOPERM",    // the ACL user may not XADD to this key
    "WRONGTYPE", // the stream key holds another type
    "MOVED",     // a cluster node: the key lives elsewhere (cluster mode is not supported)
    "ASK",
];

/// Classifies a failed command or connection.
pub(super) fn classify(error: &RedisError) -> SinkError {
    let reason = error.to_string();
    if error.is_io_error() || error.is_timeout() {
        // Refused, reset, broken pipe, EOF, DNS, connect or response timeout.
        return SinkError::Unavailable(reason);
    }
    match error.kind() {
        // The handshake failed (AUTH, SELECT, HELLO) or the peer does not speak RESP (the URL
        // points at something else): the connection, not the message.
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig | ErrorKind::Parse => {
            return SinkError::Unavailable(reason);
        }
        _ => {}
    }
    match error.code() {
        Some(code) if UNAVAILABLE_CODES.contains(&code) => SinkError::Unavailable(reason),
        _ => SinkError::Failed(reason),
    }
}

/// Whether the connection that produced `error` should be dropped and a new one made for
/// the next command. A server's error *reply* leaves the connection fine; anything else
/// (I/O, a failed handshake, a garbled reply) may have left it broken or stuck.
pub(super) fn breaks_connection(error: &RedisError) -> bool {
    error.code().is_none()
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// The error a server reply `-<line>` becomes, parsed as on a real connection.
    fn reply(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    fn class(error: &RedisError) -> &'static str {
        match classify(error) {
            SinkError::Unavailable(_) => "unavailable",
            SinkError::Failed(_) => "failed",
            SinkError::Rejected(_) => "rejected",
        }
    }

    #[test]
    fn io_failures_are_unavailable_and_break_the_connection() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Other,
        ] {
            let error = RedisError::from(io::Error::from(kind));
            assert_eq!(class(&error), "unavailable", "{kind:?}");
            assert!(breaks_connection(&error), "{kind:?}");
        }
    }

    #[test]
    fn transient_server_states_are_unavailable() {
        for line in [
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        ] {
            let error = reply(line);
            assert_eq!(class(&error), "unavailable", "{line}");
            assert!(!breaks_connection(&error), "a reply leaves the connection fine: {line}");
        }
    }

    #[test]
    fn configuration_problems_are_unavailable_so_messages_are_kept() {
        for line in [
            "NOAUTH Authentication required.",
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOPERM User signalbox has no permissions to run the 'xadd' command",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "MOVED 3999 127.0.0.1:6381",
        ] {
            assert_eq!(class(&reply(line)), "unavailable", "{line}");
        }
        let handshake = RedisError::from((ErrorKind::AuthenticationFailed, "Password authentication failed"));
        assert_eq!(class(&handshake), "unavailable");
        assert!(breaks_connection(&handshake), "a failed handshake is retried on a new connection");
    }

    #[test]
    fn other_errors_are_failed_and_nothing_is_rejected() {
        for line in [
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
            "ERR unknown command 'XADD'",
            "EXECABORT Transaction discarded because of previous errors.",
            "SOMENEWCODE something Redis adds later",
        ] {
            assert_eq!(class(&reply(line)), "failed", "{line}");
        }
        let unexpected = RedisError::from((ErrorKind::UnexpectedReturnType, "not a string"));
        assert_eq!(class(&unexpected), "failed");
    }

    #[test]
    fn the_reason_keeps_the_server_message() {
        let SinkError::Unavailable(reason) = classify(&reply("WRONGTYPE Operation against a key")) else {
            unreachable!()
        };
        assert!(reason.contains("WRONGTYPE") && reason.contains("Operation against a key"), "{reason}");
    }
}

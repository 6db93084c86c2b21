//! Close reasons → WebSocket close codes, in one place.

use crate::hub::CloseReason;

/// The close code and reason text sent for `reason`, or `None` when no close frame is
/// sent (the peer is gone or stopped answering).
pub fn close_code(reason: CloseReason) -> Option<(u16, &'static str)> {
    match reason {
        CloseReason::Shutdown => Some((1001, "server shutting down")),
        CloseReason::PolicyViolation => Some((1008, "rate limit abuse")),
        CloseReason::MessageTooBig => Some((1009, "message too big")),
        CloseReason::TokenExpired => Some((4001, "token expired")),
        CloseReason::SlowConsumer => Some((4008, "slow consumer")),
        CloseReason::ClosedByBackend => Some((1000, "closed by backend")),
        CloseReason::HeartbeatTimeout | CloseReason::ClientGone => None,
    }
}

//! The liveness sweep: one task that, for every connection, asks for heartbeat pings,
//! drops connections whose ping went unanswered, and closes those whose token expired.
//!
//! One periodic sweep replaces three timers per connection (ping interval, pong deadline,
//! token expiry): idle connections then cost no timer memory and their tasks are never
//! polled for a timer. Precision is one sweep period (at most a second). The sweep only
//! reads atomics and queues pings; it must never wait on a connection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hub::monotonic_ms;
use crate::state::AppState;

/// Longest time between sweeps (so token expiry is enforced within a second).
const MAX_PERIOD: Duration = Duration::from_secs(1);
/// Shortest time between sweeps (for the short intervals tests configure).
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// The sweep period for the configured heartbeat: a quarter of the shorter interval.
pub fn sweep_period(ping_interval: Duration, pong_timeout: Duration) -> Duration {
    (ping_interval.min(pong_timeout) / 4).clamp(MIN_PERIOD, MAX_PERIOD)
}

/// Sweeps every connection periodically until the server shuts down.
pub async fn run(state: AppState) {
    let ws = &state.config.websocket;
    let ping_ms = ws.ping_interval.as_millis() as u64;
    let pong_ms = ws.pong_timeout.as_millis() as u64;
    let mut tick = tokio::time::interval(sweep_period(ws.ping_interval, ws.pong_timeout));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now_ms = monotonic_ms();
        let now_unix_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        state.hub.connections.for_each(|conn| conn.check_liveness(now_ms, now_unix_s, ping_ms, pong_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_period_is_bounded() {
        assert_eq!(sweep_period(Duration::from_secs(25), Duration::from_secs(20)), MAX_PERIOD);
        assert_eq!(sweep_period(Duration::from_millis(200), Duration::from_millis(400)), Duration::from_millis(50));
        assert_eq!(sweep_period(Duration::from_millis(1), Duration::from_millis(1)), MIN_PERIOD);
    }
}

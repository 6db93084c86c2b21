//! The one retry policy every sink shares: exponential backoff with jitter, and a bound
//! on the attempts a message may use.
//!
//! Sinks never retry by themselves; they classify a failure ([`SinkError`]) and the
//! inline dispatcher and the outbox drainer ask this policy what to do next.

use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::SinkError;

/// `[routing.retry]`: backoff and attempts, for every sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts a message may use before it is given up on (inline: `SINK_UNAVAILABLE`;
    /// outbox: dead-lettered). In the outbox, only failures of a reachable sink
    /// ([`SinkError::Failed`]) use attempts; an outage does not.
    pub max_attempts: u32,
    /// The first backoff.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The longest backoff.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 10, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(30) }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop: the message is rejected or out of attempts.
    GiveUp,
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1 for the first retry): the exponential
    /// step `initial × 2^(retry-1)`, capped at `max_backoff`, with "equal jitter" (a
    /// uniform pick in the upper half of the step). Jitter spreads the retries of many
    /// messages and nodes after an outage; the floor keeps a retry from firing at once.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let step = self.initial_backoff.saturating_mul(1 << exponent).min(self.max_backoff);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_micros(jitter)
    }

    /// What to do after `error`, for a message that has now used `attempts` attempts
    /// (counted as [`Self::counts_attempt`] says) on retry number `retry`.
    pub fn next(&self, error: &SinkError, attempts: u32, retry: u32) -> Next {
        match error {
            SinkError::Rejected(_) => Next::GiveUp,
            SinkError::Failed(_) if attempts >= self.max_attempts => Next::GiveUp,
            SinkError::Failed(_) | SinkError::Unavailable(_) => Next::RetryAfter(self.backoff(retry)),
        }
    }

    /// Whether `error` uses up one of the message's attempts in the outbox. An outage
    /// ([`SinkError::Unavailable`]) does not: a sink that is down for an hour must not
    /// dead-letter the messages queued for it, it must deliver them when it is back.
    pub fn counts_attempt(error: &SinkError) -> bool {
        !matches!(error, SinkError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..200 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400), "{third:?}");
            let late = policy.backoff(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1), "{late:?}");
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let policy = RetryPolicy::default();
        let picks: std::collections::BTreeSet<_> = (0..50).map(|_| policy.backoff(4)).collect();
        assert!(picks.len() > 10, "backoffs should differ: {picks:?}");
    }

    #[test]
    fn rejected_gives_up_at_once_and_failures_after_max_attempts() {
        let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        assert_eq!(policy.next(&SinkError::Rejected("400".into()), 1, 1), Next::GiveUp);
        assert!(matches!(policy.next(&SinkError::Failed("500".into()), 2, 2), Next::RetryAfter(_)));
        assert_eq!(policy.next(&SinkError::Failed("500".into()), 3, 3), Next::GiveUp);
        assert!(matches!(policy.next(&SinkError::Unavailable("down".into()), 0, 50), Next::RetryAfter(_)));
    }

    #[test]
    fn only_an_outage_keeps_the_attempts() {
        assert!(!RetryPolicy::counts_attempt(&SinkError::Unavailable("refused".into())));
        assert!(RetryPolicy::counts_attempt(&SinkError::Failed("500".into())));
        assert!(RetryPolicy::counts_attempt(&SinkError::Rejected("400".into())));
    }
}

//! Who is logged in: the password check, signed session cookies, and login throttling.
//!
//! A session is a cookie `sb_admin=<expiry>.<nonce>.<mac>`, the MAC an HMAC-SHA256 under a
//! key derived from the password, so every node sharing the password accepts it (a load
//! balancer may send the next request anywhere) and changing the password ends every
//! session. Nothing is stored per session. This module never logs a password or a cookie.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "sb_admin";

/// Checks passwords and issues and verifies session cookies.
pub struct Sessions {
    password_digest: [u8; 32],
    key: [u8; 32],
    ttl: Duration,
}

impl Sessions {
    /// Sessions for `password`, each lasting `ttl`.
    pub fn new(password: &str, ttl: Duration) -> Self {
        let password_digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"signalbox admin session key\0")
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        Self { password_digest, key, ttl }
    }

    /// Whether `attempt` is the password, in time independent of where they differ
    /// (both sides are hashed first, so not even the length leaks).
    pub fn password_matches(&self, attempt: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(attempt.as_bytes()).into();
        digest.ct_eq(&self.password_digest).into()
    }

    /// A new session cookie value and how long it lasts.
    pub fn issue(&self) -> (String, Duration) {
        let expiry = unix_now().saturating_add(self.ttl.as_secs());
        let nonce: [u8; 16] = rand::random();
        let body = format!("{expiry}.{}", hex::encode(nonce));
        let mac = hex::encode(self.mac(&body));
        (format!("{body}.{mac}"), self.ttl)
    }

    /// Whether a cookie value is a session this password issued and it has not expired.
    pub fn verify(&self, value: &str) -> bool {
        let Some((body, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let Some((expiry, _nonce)) = body.split_once('.') else {
            return false;
        };
        let (Ok(expiry), Ok(mac)) = (expiry.parse::<u64>(), hex::decode(mac)) else {
            return false;
        };
        let expected = self.mac(body);
        bool::from(expected.as_slice().ct_eq(mac.as_slice())) && expiry > unix_now()
    }

    fn mac(&self, body: &str) -> [u8; 32] {
        // The key is 32 bytes; HMAC takes a key of any length, so this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            return [0; 32];
        };
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Failed logins per client IP per minute, and from all IPs together (ten times the
/// per-IP bound), so neither one address nor a botnet can guess at speed.
pub struct LoginThrottle {
    per_ip: u32,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    window_start: Instant,
    total: u32,
    by_ip: HashMap<IpAddr, u32>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl LoginThrottle {
    /// At most `per_ip` failures per IP per minute.
    pub fn new(per_ip: u32) -> Self {
        Self {
            per_ip,
            state: Mutex::new(ThrottleState { window_start: Instant::now(), total: 0, by_ip: HashMap::new() }),
        }
    }

    /// Whether `ip` may try now.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let mut state = self.state.lock();
        state.roll();
        state.by_ip.get(&ip).copied().unwrap_or(0) < self.per_ip && state.total < self.per_ip.saturating_mul(10)
    }

    /// Records a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut state = self.state.lock();
        state.roll();
        state.total = state.total.saturating_add(1);
        let count = state.by_ip.entry(ip).or_insert(0);
        *count = count.saturating_add(1);
    }
}

impl ThrottleState {
    /// A fixed one-minute window: simple, and the map never outgrows one minute of failures.
    fn roll(&mut self) {
        if self.window_start.elapsed() >= WINDOW {
            self.window_start = Instant::now();
            self.total = 0;
            self.by_ip.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_and_cookies() {
        let sessions = Sessions::new("correct horse battery", Duration::from_secs(60));
        assert!(sessions.password_matches("correct horse battery"));
        assert!(!sessions.password_matches("correct horse batter"));
        assert!(!sessions.password_matches(""));
        let (cookie, ttl) = sessions.issue();
        assert_eq!(ttl, Duration::from_secs(60));
        assert!(sessions.verify(&cookie));
        // Another password's sessions, a tampered expiry or MAC, garbage: refused.
        assert!(!Sessions::new("another password!", Duration::from_secs(60)).verify(&cookie));
        let (expiry, rest) = cookie.split_once('.').unwrap();
        let later = expiry.parse::<u64>().unwrap() + 3600;
        assert!(!sessions.verify(&format!("{later}.{rest}")));
        let mut flipped = cookie.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert!(!sessions.verify(&flipped));
        for garbage in ["", ".", "..", "1.2.3", "x.y.z", "99999999999.00.zz", &"a".repeat(10_000)] {
            assert!(!sessions.verify(garbage), "{garbage}");
        }
        // Expired.
        let body = format!("{}.{}", unix_now() - 1, "00");
        let mac = hex::encode(sessions.mac(&body));
        assert!(!sessions.verify(&format!("{body}.{mac}")));
    }

    #[test]
    fn throttle_counts_failures_per_ip_and_in_all() {
        let throttle = LoginThrottle::new(3);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(throttle.allows(a));
            throttle.failed(a);
        }
        assert!(!throttle.allows(a));
        assert!(throttle.allows(b));
        for i in 0..30u8 {
            throttle.failed(IpAddr::from([10, 0, 0, i]));
        }
        assert!(!throttle.allows(b), "all IPs together are bounded too");
    }
}

//! Reading the few numbers the load generator needs from a delivered frame, in place:
//! no JSON parse and no allocation per message, so the client is never the bottleneck.

use memchr::memmem::Finder;

/// Finds integer fields in frames.
pub struct FrameScanner {
    offset: Finder<'static>,
    sent: Finder<'static>,
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// The event's offset.
    pub offset: u64,
    /// The publisher's send time, ns since the run's start (bench events only).
    pub sent_ns: Option<u64>,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self { offset: Finder::new(b"\"offset\":"), sent: Finder::new(b"\"sent\":") }
    }
}

impl FrameScanner {
    /// Reads `offset` and `sent` from an event frame; `None` for frames without `offset`.
    pub fn scan(&self, frame: &[u8]) -> Option<Scanned> {
        let offset = read_u64(frame, self.offset.find(frame)? + 9)?;
        let sent_ns = self.sent.find(frame).and_then(|i| read_u64(frame, i + 7));
        Some(Scanned { offset, sent_ns })
    }
}

fn read_u64(bytes: &[u8], mut at: usize) -> Option<u64> {
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    let mut value: u64 = 0;
    let mut digits = 0;
    while let Some(d) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        at += 1;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_server_frames() {
        let s = FrameScanner::default();
        let frame = br#"{"topic":"bench:3","offset":42,"timestamp":"x","sent":123456789,"type":"bench"}"#;
        assert_eq!(s.scan(frame), Some(Scanned { offset: 42, sent_ns: Some(123456789) }));
        assert_eq!(s.scan(br#"{"type":"pong"}"#), None);
        assert_eq!(s.scan(br#"{"offset": 7}"#), Some(Scanned { offset: 7, sent_ns: None }));
        assert_eq!(s.scan(br#"{"offset":"x"}"#), None);
    }
}

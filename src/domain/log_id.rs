//! Client-supplied ids as they may appear in log lines.

/// Longest client-supplied id (`sub`, `requestId`) written whole into a log line, in bytes.
pub const LOG_ID_MAX_BYTES: usize = 64;

/// A client-supplied id as written into log lines: at most [`LOG_ID_MAX_BYTES`] bytes, cut
/// on a character boundary and followed by `…` when longer, so a client cannot make the
/// server's log lines arbitrarily long (a token's `sub` has no length limit).
#[derive(Debug, Clone, Copy)]
pub struct LogId<'a>(pub &'a str);

impl std::fmt::Display for LogId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() <= LOG_ID_MAX_BYTES {
            return f.write_str(self.0);
        }
        let mut end = LOG_ID_MAX_BYTES;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…", &self.0[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ids_are_cut_at_64_bytes_on_a_char_boundary() {
        assert_eq!(LogId("u1").to_string(), "u1");
        let exact = "a".repeat(64);
        assert_eq!(LogId(&exact).to_string(), exact);
        assert_eq!(LogId(&"b".repeat(10_000)).to_string(), format!("{}…", "b".repeat(64)));
        // 63 ASCII bytes then a 2-byte character across the 64-byte mark.
        let split = format!("{}é{}", "c".repeat(63), "d".repeat(100));
        assert_eq!(LogId(&split).to_string(), format!("{}…", "c".repeat(63)));
    }
}

//! Resource use of a process from `/proc/<pid>`: resident memory and CPU time.

use std::time::Duration;

/// A snapshot of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` if the process is gone or
/// `/proc` is unavailable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ProcSample {
        rss_bytes: rss_kib * 1024,
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()),
    })
}

/// The kernel's USER_HZ: 100 on every Linux configuration that exposes `/proc` to us.
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 1024 * 1024);
    }
}

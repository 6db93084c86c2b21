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

/// One sample per pid, in order (`None` for a process that cannot be read).
pub fn sample_all(pids: &[u32]) -> Vec<Option<ProcSample>> {
    pids.iter().map(|&pid| sample(pid)).collect()
}

/// The sum of every sample: the cost of a server made of several processes (nodes of a
/// cluster, its Redis). `None` when there is none, or when one process could not be read
/// (a partial sum would look cheaper than the server is).
pub fn total(samples: &[Option<ProcSample>]) -> Option<ProcSample> {
    if samples.is_empty() {
        return None;
    }
    samples.iter().try_fold(ProcSample::default(), |sum, s| {
        let s = (*s)?;
        Some(ProcSample { rss_bytes: sum.rss_bytes + s.rss_bytes, cpu: sum.cpu + s.cpu })
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

    #[test]
    fn totals_add_up_every_process_or_nothing() {
        let a = ProcSample { rss_bytes: 10, cpu: Duration::from_millis(5) };
        let b = ProcSample { rss_bytes: 32, cpu: Duration::from_millis(7) };
        let sum = total(&[Some(a), Some(b)]).unwrap();
        assert_eq!((sum.rss_bytes, sum.cpu), (42, Duration::from_millis(12)));
        assert!(total(&[Some(a), None]).is_none());
        assert!(total(&[]).is_none());
        assert_eq!(total(&[Some(a)]).map(|s| s.rss_bytes), Some(10));
        let own = sample_all(&[std::process::id(), u32::MAX]);
        assert!(own[0].is_some() && own[1].is_none());
    }
}

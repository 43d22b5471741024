//! The process's CPU time and resident memory, read from the operating system.

use std::time::Duration;

/// One reading.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
    /// Resident memory now, in bytes (0 where `/proc` is not available).
    pub rss_bytes: u64,
}

/// Reads the process's CPU time (`getrusage`) and resident memory (`VmRSS` in
/// `/proc/self/status`).
pub fn sample() -> Resources {
    Resources {
        cpu: cpu_time(),
        rss_bytes: resident_bytes().unwrap_or(0),
    }
}

fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let micros = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            micros(usage.user_time()) + micros(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The peak resident memory of the process so far (`VmHWM`), in bytes.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

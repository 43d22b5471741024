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
    vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Linux's user-visible clock tick (`USER_HZ`), the unit of CPU times in `/proc/<pid>/stat`.
const USER_HZ: u64 = 100;

/// Reads other processes' CPU time and resident memory, summed (`/proc/<pid>/stat` and
/// `/proc/<pid>/status`); `None` where `/proc` cannot be read for one of them.
pub fn sample_processes(pids: &[u32]) -> Option<Resources> {
    let mut ticks = 0;
    let mut rss_bytes = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count fields from
        // after it. utime and stime are fields 14 and 15, so 11 and 12 from there.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let mut fields = rest.split_whitespace().skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        ticks += user + system;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        rss_bytes += vm_rss(&status)?;
    }
    Some(Resources {
        cpu: Duration::from_millis(ticks * 1000 / USER_HZ),
        rss_bytes,
    })
}

fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The peak resident memory of the process so far (`VmHWM`), in bytes.
pub fn peak_resident_bytes() -> Option<u64> {
    status_kib("/proc/self/status", "VmHWM:")
}

/// Another process's resident memory now (`VmRSS`), in bytes.
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Another process's peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_resident_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// A field of a `/proc/<pid>/status` file given in KiB, in bytes.
fn status_kib(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

//! Waiting for a quiet machine before each part of a full run. The parts before leave the
//! kernel work to do in the background — dismantling thousands of removed namespaces, writing
//! back and freeing tens of thousands of deleted lease files — for anywhere from seconds to
//! minutes; a part that starts meanwhile measures it (every side's ADD was 2–3 ms slower in the
//! first minute after the host-local part, which now runs last). A fixed pause was too short
//! after some parts.

use std::time::{Duration, Instant};

/// Busy share of the CPUs (steal time left out: that is the hypervisor's other guests) under
/// which a one-second window counts as quiet.
const QUIET_BUSY: f64 = 0.10;
/// Quiet windows in a row that make a quiet machine.
const QUIET_WINDOWS: u32 = 3;

/// (busy, total) jiffies of all CPUs, steal left out, from the first line of /proc/stat.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let (idle, steal) = (*v.get(3)?, v.get(7).copied().unwrap_or(0));
    let total: u64 = v.iter().take(8).sum::<u64>() - steal;
    Some((total - idle, total))
}

/// Wait until the machine has been quiet for [`QUIET_WINDOWS`] seconds, at most `max`; how long
/// it took, and whether it got quiet.
pub fn wait(max: Duration) -> (Duration, bool) {
    let start = Instant::now();
    // Dirty file data (a build just before, the lease files of a part) is written back now
    // rather than during the measurements.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let mut quiet = 0;
    let Some(mut last) = cpu_jiffies() else {
        return (Duration::ZERO, false);
    };
    while start.elapsed() < max {
        std::thread::sleep(Duration::from_secs(1));
        let Some(now) = cpu_jiffies() else {
            return (start.elapsed(), false);
        };
        let (busy, total) = (now.0.saturating_sub(last.0), now.1.saturating_sub(last.1));
        last = now;
        let share = if total == 0 {
            1.0
        } else {
            busy as f64 / total as f64
        };
        quiet = if share <= QUIET_BUSY { quiet + 1 } else { 0 };
        if quiet >= QUIET_WINDOWS {
            return (start.elapsed(), true);
        }
    }
    (start.elapsed(), false)
}

/// [`wait`] before the part `what`, said on stderr.
pub fn before(what: &str) {
    let (took, quiet) = wait(Duration::from_secs(300));
    if quiet {
        eprintln!(
            "  machine quiet after {:.0} s; {what} ...",
            took.as_secs_f64()
        );
    } else {
        eprintln!(
            "  the machine did not get quiet in {:.0} s; {what} anyway ...",
            took.as_secs_f64()
        );
    }
}

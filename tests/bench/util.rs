//! Measuring helpers shared by the benchmarks.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Wall time of `f`.
pub fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The median and the 95th percentile of `samples` (sorted in place).
pub fn median_p95(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

/// Runs `cmd` to completion and returns its wall time and its own peak resident set in KiB,
/// read with wait4(2) so that no other child of this process counts. The figure includes this
/// process's own peak at spawn time (the child shares its address space until exec), so a
/// benchmark must keep its own memory small.
pub fn run_measured(cmd: &mut std::process::Command) -> (Duration, i64) {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn benchmark command");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes into the two locals we pass; the child is ours and not yet reaped.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let reaped = libc::wait4(pid, &mut status, 0, &mut usage);
        assert_eq!(reaped, pid, "wait4");
        usage
    };
    let elapsed = start.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "benchmark command failed: {cmd:?}"
    );
    std::mem::forget(child);
    (elapsed, usage.ru_maxrss)
}

/// User + system CPU time of the children waited for so far.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

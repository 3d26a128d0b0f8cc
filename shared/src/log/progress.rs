//! Progress figures for long steps: sizes, rates, and what a child process has moved so far.
//!
//! A docker save, load or export of a multi-gigabyte image and a zero-fill of a whole disk take
//! minutes under emulation; the originals printed nothing meanwhile, so a slow step and a hung
//! one looked the same. The tools report every few seconds instead. The byte counts of another
//! process come from `/proc/PID/io` (`rchar`/`wchar`: bytes it asked the kernel to read or
//! write, through any descriptor), which needs no cooperation from the process and no copy of
//! its data through ours; where that file cannot be read, the figure is simply left out.

use std::time::Duration;

/// Bytes in a mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Which counter of `/proc/PID/io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// Bytes read (`rchar`).
    Read,
    /// Bytes written (`wchar`).
    Written,
}

/// The bytes process `pid` has read or written so far, if the kernel says.
pub fn io_bytes(pid: u32, which: Io) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    parse_io(&text, which)
}

fn parse_io(text: &str, which: Io) -> Option<u64> {
    let key = match which {
        Io::Read => "rchar:",
        Io::Written => "wchar:",
    };
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.trim().parse().ok())
}

/// `512 MiB` (whole mebibytes, rounded down).
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / MIB)
}

/// `205 MiB/s`; `-` when no time has passed.
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "-".to_string();
    }
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters() {
        let text = "rchar: 1234\nwchar: 99\nsyscr: 1\n";
        assert_eq!(parse_io(text, Io::Read), Some(1234));
        assert_eq!(parse_io(text, Io::Written), Some(99));
        assert_eq!(parse_io("", Io::Read), None);
        assert!(io_bytes(std::process::id(), Io::Read).is_some());
    }

    #[test]
    fn formats() {
        assert_eq!(mib(3 * MIB + 5), "3 MiB");
        assert_eq!(rate(100 * MIB, Duration::from_secs(4)), "25 MiB/s");
        assert_eq!(rate(1, Duration::ZERO), "-");
    }
}

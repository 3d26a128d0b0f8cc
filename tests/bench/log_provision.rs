//! log-provision and log-provision-stream, beside the commands they compete with.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::tool_path;
use crate::util::{run_measured, time};

const CALLS: usize = 2000;

/// Cost per call over 2,000 sequential calls, beside `/bin/true` called the same way.
pub fn per_call() {
    let dir = crate::common::scratch();
    let log = dir.path().join("provision.log");
    let tool = tool_path("log-provision");
    let run = |program: &std::path::Path| {
        time(|| {
            for i in 0..CALLS {
                let status = Command::new(program)
                    .arg(format!("message number {i}"))
                    .env("STACK_PROVISION_LOG_FILE", &log)
                    .stdout(Stdio::null())
                    .status()
                    .expect("run");
                assert!(status.success());
            }
        })
    };
    // Interleave to spread the machine's noise over both.
    let (mut ours, mut base) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for _ in 0..2 {
        base += run(std::path::Path::new("/bin/true"));
        ours += run(&tool);
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / (2 * CALLS) as f64;
    println!(
        "log-provision: {:.0} us/call, /bin/true: {:.0} us/call, ratio {:.2}x",
        per(ours),
        per(base),
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

const LINES: usize = 1_000_000;

/// Lines per second on 1,000,000 lines of 80 bytes, to a log file and to /dev/null, beside
/// `sed 's/^/PREFIX: /' | tee -a FILE`.
pub fn stream_throughput() {
    let dir = crate::common::scratch();
    let input_path = dir.path().join("input");
    let line = format!("{}\n", "x".repeat(79));
    // Written in pieces: this process's own peak RSS is inherited by the children it spawns
    // (posix_spawn shares the address space until exec), so it must stay small.
    let mut input = std::io::BufWriter::new(std::fs::File::create(&input_path).expect("input"));
    for _ in 0..LINES {
        input.write_all(line.as_bytes()).expect("write input");
    }
    input.flush().expect("write input");
    drop(input);
    let tool = tool_path("log-provision-stream");

    let ours = |log: &str| {
        let input = std::fs::File::open(&input_path).expect("input");
        let mut cmd = Command::new(&tool);
        cmd.arg("bench").stdin(input).stdout(Stdio::null());
        cmd.env("STACK_PROVISION_LOG_FILE", log);
        run_measured(&mut cmd)
    };
    let baseline = |log: &str| {
        time(|| {
            let input = std::fs::File::open(&input_path).expect("input");
            let status = Command::new("sh")
                .args([
                    "-c",
                    "sed 's/^/PREFIX: /' | tee -a \"$1\" >/dev/null",
                    "sh",
                    log,
                ])
                .stdin(input)
                .status()
                .expect("run baseline");
            assert!(status.success());
        })
    };
    let file_log = dir.path().join("stream.log");
    let file_log = file_log.to_str().expect("utf-8 temp path");
    let rate = |d: std::time::Duration| LINES as f64 / d.as_secs_f64();
    for (label, log) in [("log file", file_log), ("/dev/null", "/dev/null")] {
        let base = baseline(log);
        let _ = std::fs::remove_file(file_log);
        let (t, rss) = ours(log);
        let _ = std::fs::remove_file(file_log);
        println!(
            "log-provision-stream to {label}: {:.0} lines/s; sed|tee: {:.0} lines/s; ratio {:.2}x; peak RSS {} KiB",
            rate(t),
            rate(base),
            base.as_secs_f64() / t.as_secs_f64(),
            rss
        );
    }
}

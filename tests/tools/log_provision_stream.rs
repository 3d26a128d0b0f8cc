//! log-provision-stream: every byte of every line, bounded memory, live output.
//!
//! Replaces the original's `while IFS= read -r line; do log-provision …; done`, which trimmed
//! nothing but dropped a last line without newline, lost NUL bytes and forked once per line.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;

#[test]
fn keeps_every_byte_and_the_last_line() {
    let dir = scratch();
    let log = dir.path().join("provision.log");
    let input: &[u8] =
        b"  lead and trail  \nback\\slash \\n\n\ncr\r\nbad \xff\xfe utf8\nnul\0byte\nno newline";
    tool("log-provision-stream")
        .arg("migrate")
        .env("STACK_PROVISION_LOG_FILE", &log)
        .stdin(input)
        .run()
        .success()
        .stderr_is("")
        .stdout_is(
            b"STACK_PROVISION: migrate:   lead and trail  \n\
              STACK_PROVISION: migrate: back\\slash \\n\n\
              STACK_PROVISION: migrate: \n\
              STACK_PROVISION: migrate: cr\r\n\
              STACK_PROVISION: migrate: bad \xff\xfe utf8\n\
              STACK_PROVISION: migrate: nul\0byte\n\
              STACK_PROVISION: migrate: no newline\n"
                .as_slice(),
        );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"migrate:   lead and trail  \nmigrate: back\\slash \\n\nmigrate: \nmigrate: cr\r\n\
          migrate: bad \xff\xfe utf8\nmigrate: nul\0byte\nmigrate: no newline\n"
    );
}

#[test]
fn empty_input_logs_nothing() {
    tool("log-provision-stream")
        .arg("p")
        .run()
        .success()
        .stdout_is("");
}

#[test]
fn empty_and_missing_prefix() {
    tool("log-provision-stream")
        .arg("")
        .stdin("x\n")
        .run()
        .success()
        .stdout_is("STACK_PROVISION: : x\n");
    tool("log-provision-stream")
        .stdin("y")
        .run()
        .success()
        .stdout_is("STACK_PROVISION: : y\n");
}

#[test]
fn prefix_may_start_with_a_dash() {
    tool("log-provision-stream")
        .arg("-x")
        .stdin("z\n")
        .run()
        .success()
        .stdout_is("STACK_PROVISION: -x: z\n");
}

#[test]
fn overlong_line_is_split_at_the_cap() {
    const CAP: usize = 65536;
    let mut input = vec![b'a'; CAP];
    input.extend(vec![b'b'; CAP]);
    input.extend(b"cc\nshort\n");
    let run = tool("log-provision-stream").arg("p").stdin(&input).run();
    run.success();
    let mut expected = Vec::new();
    for piece in [
        vec![b'a'; CAP],
        vec![b'b'; CAP],
        b"cc".to_vec(),
        b"short".to_vec(),
    ] {
        expected.extend(b"STACK_PROVISION: p: ");
        expected.extend(piece);
        expected.push(b'\n');
    }
    assert!(run.stdout() == expected, "split lines differ");
}

#[test]
fn a_64_mib_line_runs_in_bounded_memory() {
    let mut child = tool("log-provision-stream")
        .arg("big")
        .cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            match stdout.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        stdin.write_all(&chunk).unwrap();
    }
    // All but at most a pipe's worth has been read: the peak so far is the peak of the run.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let lines = 64 * (1 << 20) / 65536;
    assert_eq!(
        counter.join().unwrap(),
        64 * (1 << 20) + lines * "STACK_PROVISION: big: \n".len()
    );
    assert!(
        hwm_kib < 16 * 1024,
        "peak RSS {hwm_kib} KiB for a 64 MiB line"
    );
}

#[test]
fn a_slow_producer_is_seen_before_eof() {
    let mut child = tool("log-provision-stream")
        .arg("slow")
        .cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    for i in 0..3 {
        stdin.write_all(format!("line {i}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("line not forwarded while stdin stays open");
        assert_eq!(got, format!("STACK_PROVISION: slow: line {i}"));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn unwritable_log_file_still_streams_stdout() {
    let dir = scratch();
    let log = dir.path().join("no/such/dir.log");
    tool("log-provision-stream")
        .arg("p")
        .env("STACK_PROVISION_LOG_FILE", &log)
        .stdin("a\nb\n")
        .run()
        .code_is(1)
        .stdout_is("STACK_PROVISION: p: a\nSTACK_PROVISION: p: b\n")
        .stderr_contains("log-provision-stream: opening ");
}

#[test]
fn help_states_the_cap() {
    let run = tool("log-provision-stream").arg("--help").run();
    run.success();
    assert!(
        run.stdout_str().contains("65536 bytes"),
        "{}",
        run.stdout_str()
    );
}

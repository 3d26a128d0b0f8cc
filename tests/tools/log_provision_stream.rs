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

/// Issue 10, S1: a stop signal logs the partial line held so far, then exits 128+N.
#[test]
fn a_stop_signal_logs_the_partial_line_first() {
    for (signal, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
    ] {
        let dir = scratch();
        let log = dir.path().join("provision.log");
        let mut child = tool("log-provision-stream")
            .arg("p")
            .env("STACK_PROVISION_LOG_FILE", &log)
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"line1\npartial").unwrap();
        stdin.flush().unwrap();
        wait_until(Duration::from_secs(10), || {
            std::fs::read(&log).is_ok_and(|l| l == b"p: line1\n")
        });
        // The partial line has reached the tool (it is read in the same chunk or the next).
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill(2) on our own unreaped child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(code), "signal {signal}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "STACK_PROVISION: p: line1\nSTACK_PROVISION: p: partial\n"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "p: line1\np: partial\n"
        );
    }
}

/// Issue 10, S2: on a full file system the log keeps whole lines only, so the next line
/// appended (a failure marker) starts a line of its own.
#[test]
fn a_full_file_system_never_leaves_a_partial_line() {
    require!(
        crate::common::sandbox::available(),
        "root, unshare and nsenter (util-linux)"
    );
    let s = crate::common::sandbox::Sandbox::new();
    let small = s.path("small");
    std::fs::create_dir(&small).unwrap();
    s.ok(
        "mount",
        [
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            "size=16k".as_ref(),
            "hexclave-small".as_ref(),
            small.as_os_str(),
        ],
    );
    let log = small.join("provision.log");
    let input: String = (1..=5000).map(|n| format!("{n}\n")).collect();
    let run = s
        .tool("log-provision-stream")
        .arg("p")
        .env("STACK_PROVISION_LOG_FILE", &log)
        .stdin(input)
        .run();
    run.code_is(1).stderr_contains(&format!(
        "log-provision-stream: writing to {}: ",
        log.display()
    ));
    // Every line reached stdout.
    assert_eq!(run.stdout_str().lines().count(), 5000);
    let text = String::from_utf8(s.ok("cat", [&log]).into_bytes()).unwrap();
    assert!(!text.is_empty());
    assert!(
        text.ends_with('\n'),
        "a partial last line: {:?}",
        &text[text.len() - 20..]
    );
    for (i, line) in text.lines().enumerate() {
        assert_eq!(line, format!("p: {}", i + 1));
    }
}

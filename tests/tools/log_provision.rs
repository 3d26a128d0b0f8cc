//! log-provision: the exact bytes on stdout and in the log file.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::time::Duration;

use crate::common::*;

#[test]
fn prints_tagged_message_without_a_log_file() {
    tool("log-provision")
        .args(["hello", "  two  spaces", "-n", "--", "a\\b"])
        .run()
        .success()
        .stdout_is("STACK_PROVISION: hello   two  spaces -n -- a\\b\n")
        .stderr_is("");
}

#[test]
fn no_arguments_logs_an_empty_message() {
    tool("log-provision")
        .run()
        .success()
        .stdout_is("STACK_PROVISION: \n");
}

#[test]
fn invalid_utf8_is_kept_byte_for_byte() {
    let dir = scratch();
    let log = dir.path().join("provision.log");
    tool("log-provision")
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .env("STACK_PROVISION_LOG_FILE", &log)
        .run()
        .success()
        .stdout_is(b"STACK_PROVISION: caf\xe9\n");
    assert_eq!(std::fs::read(&log).unwrap(), b"caf\xe9\n");
}

#[test]
fn appends_the_bare_message_to_the_log_file() {
    let dir = scratch();
    let log = dir.path().join("provision.log");
    std::fs::write(&log, "earlier\n").unwrap();
    for msg in ["first", "second line"] {
        tool("log-provision")
            .arg(msg)
            .env("STACK_PROVISION_LOG_FILE", &log)
            .run()
            .success()
            .stdout_is(format!("STACK_PROVISION: {msg}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "earlier\nfirst\nsecond line\n"
    );
}

#[test]
fn empty_log_file_variable_means_no_file() {
    let dir = scratch();
    tool("log-provision")
        .arg("x")
        .env("STACK_PROVISION_LOG_FILE", "")
        .current_dir(dir.path())
        .run()
        .success()
        .stdout_is("STACK_PROVISION: x\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn hexclave_spelling_wins() {
    let dir = scratch();
    let old = dir.path().join("old.log");
    let new = dir.path().join("new.log");
    tool("log-provision")
        .arg("m")
        .env("STACK_PROVISION_LOG_FILE", &old)
        .env("HEXCLAVE_PROVISION_LOG_FILE", &new)
        .run()
        .success();
    assert!(!old.exists());
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "m\n");
}

#[test]
fn unwritable_log_file_fails_after_stdout() {
    let dir = scratch();
    let log = dir.path().join("missing-dir/provision.log");
    tool("log-provision")
        .arg("still shown")
        .env("STACK_PROVISION_LOG_FILE", &log)
        .run()
        .code_is(1)
        .stdout_is("STACK_PROVISION: still shown\n")
        .stderr_is(format!(
            "log-provision: opening {}: No such file or directory (os error 2)\n",
            log.display()
        ));
}

#[test]
fn lone_help_and_version_are_not_logged() {
    let help = tool("log-provision").arg("--help").run();
    help.success();
    assert!(
        help.stdout_str().contains("Usage: log-provision"),
        "{}",
        help.stdout_str()
    );
    tool("log-provision")
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("log-provision"));
    tool("log-provision")
        .args(["--help", "me"])
        .run()
        .success()
        .stdout_is("STACK_PROVISION: --help me\n");
}

#[test]
fn concurrent_writers_never_interleave_inside_a_line() {
    const WRITERS: usize = 8;
    const LINES: usize = 2000;
    let dir = scratch();
    let log = dir.path().join("provision.log");
    // Each writer is a log-provision-stream fed its lines at once: many processes, many writes,
    // one file. Lines are long enough that a torn write would show.
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log = log.clone();
            std::thread::spawn(move || {
                let filler = char::from(b'a' + w as u8).to_string().repeat(200);
                let input: String = (0..LINES).map(|i| format!("{i:05} {filler}\n")).collect();
                tool("log-provision-stream")
                    .arg(format!("w{w}"))
                    .env("STACK_PROVISION_LOG_FILE", &log)
                    .stdin(input)
                    .run()
                    .success();
            })
        })
        .collect();
    // And single-message writers alongside them.
    for i in 0..50 {
        tool("log-provision")
            .arg(format!("single {i:05} {}", "z".repeat(200)))
            .env("STACK_PROVISION_LOG_FILE", &log)
            .run()
            .success();
    }
    handles.into_iter().for_each(|h| h.join().unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut seen = vec![0usize; WRITERS];
    let mut singles = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("single ") {
            assert_eq!(rest.len(), 206, "torn line {line:?}");
            singles += 1;
            continue;
        }
        let (tag, body) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("torn line {line:?}"));
        let w: usize = tag[1..]
            .parse()
            .unwrap_or_else(|_| panic!("torn line {line:?}"));
        let filler = char::from(b'a' + w as u8).to_string().repeat(200);
        assert_eq!(
            body,
            format!("{:05} {filler}", seen[w]),
            "line out of order or torn"
        );
        seen[w] += 1;
    }
    assert_eq!(seen, vec![LINES; WRITERS]);
    assert_eq!(singles, 50);
}

/// `mkfifo` at `path`, mode 0600.
pub(super) fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Issue 10, L1: an empty HEXCLAVE_* leaves the STACK_* spelling in force.
#[test]
fn an_empty_hexclave_log_file_variable_counts_as_unset() {
    let dir = scratch();
    let log = dir.path().join("a.log");
    tool("log-provision")
        .arg("x")
        .env("STACK_PROVISION_LOG_FILE", &log)
        .env("HEXCLAVE_PROVISION_LOG_FILE", "")
        .run()
        .success()
        .stdout_is("STACK_PROVISION: x\n")
        .stderr_is("");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "x\n");
}

/// Issue 10, L2: a FIFO (or any file that is not a regular file) never blocks; stdout comes
/// first, then the error and exit 1. The FIFO is left as it was.
#[test]
fn a_log_path_that_is_not_a_regular_file_is_an_error_after_stdout() {
    let dir = scratch();
    let fifo = dir.path().join("f");
    mkfifo(&fifo);
    for log in [
        fifo.as_path(),
        std::path::Path::new("/dev/null"),
        dir.path(),
    ] {
        let kind = if log == fifo {
            "a FIFO"
        } else if log == dir.path() {
            "a directory"
        } else {
            "a character device"
        };
        let run = tool("log-provision")
            .arg("marker")
            .env("STACK_PROVISION_LOG_FILE", log)
            .run_within(Duration::from_secs(10));
        run.code_is(1)
            .stdout_is("STACK_PROVISION: marker\n")
            .stderr_is(format!(
                "log-provision: opening {}: it is {kind}, not a regular file; \
                 STACK_PROVISION_LOG_FILE must name a regular file (or be empty)\n",
                log.display()
            ));
    }
    // With a reader on the FIFO, opening it succeeds: still refused, nothing written into it.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    tool("log-provision")
        .arg("marker")
        .env("STACK_PROVISION_LOG_FILE", &fifo)
        .run_within(Duration::from_secs(10))
        .code_is(1)
        .stdout_is("STACK_PROVISION: marker\n")
        .stderr_contains("it is a FIFO, not a regular file");
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut got);
    assert_eq!(got, b"");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

//! Diagnostics: run a command and stream what it prints into the provision log.
//!
//! When a wait gives up, the tools dump what an operator needs to see (`docker ps -a`, a
//! container's last log lines, `systemctl status`, …). The originals piped each command's
//! `2>&1` into `log-provision-stream PREFIX`, one fork per line, and a hung `docker` hung the
//! dump. Here one function does it: the command runs from its argv (never a shell), its stdout
//! and stderr share one pipe as `2>&1` did, every line reaches the log as `PREFIX: line` as it
//! arrives, and a command still running after its time limit is killed with everything it
//! started. A missing program is one line with the prefix — `PREFIX: docker: command not
//! found`, as bash reported it inside the same pipe — and the caller goes on to the next
//! command: diagnostics are best effort and never fail the tool.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::duration::seconds;
use crate::log::ProvisionLog;
use crate::os::signal;
use crate::process::{self, Registry};

/// How long one diagnostics command may run before it is killed.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// Runs `argv`, logging every line of its combined output as `PREFIX: line`. Returns whether the
/// command ran to completion and exited 0; failures are logged, never raised.
pub fn stream_command<W: Write>(
    log: &mut ProvisionLog<W>,
    prefix: &str,
    argv: &[OsString],
    limit: Duration,
) -> bool {
    let program = argv
        .first()
        .map(OsString::as_os_str)
        .unwrap_or(OsStr::new(""));
    let registry = Arc::new(Registry::default());
    // A SIGTERM or SIGINT now ends the tool as it would without a subscriber, but takes the
    // command (in its own process group, out of reach of a terminal's ^C) along.
    let _subscription = {
        let registry = Arc::clone(&registry);
        signal::subscribe(move |sig| {
            registry.close();
            std::process::exit(i32::from(signal::exit_status(sig)));
        })
    };
    let (mut child, output) = match registry.spawn(argv) {
        Ok(spawned) => spawned,
        Err(err) => {
            let why = process::describe_spawn_error(program, &err);
            log.message(format!("{prefix}: {why}").as_bytes());
            return false;
        }
    };
    let pid = child.id();
    let (done, done_rx) = mpsc::channel::<()>();
    let (status, killed) = std::thread::scope(|scope| {
        let registry = &*registry;
        let watchdog = scope.spawn(move || match done_rx.recv_timeout(limit) {
            Err(RecvTimeoutError::Timeout) => registry.kill(pid),
            _ => false,
        });
        // A read error ends the stream early; the command is still waited for.
        let _ = log.stream(output, prefix.as_bytes());
        let status = registry.wait(&mut child);
        drop(done);
        (status, watchdog.join().unwrap_or(false))
    });
    if killed {
        log.message(
            format!(
                "{prefix}: {}: still running after {}; killed",
                program.to_string_lossy(),
                seconds(limit)
            )
            .as_bytes(),
        );
    }
    matches!(status, Ok(s) if s.success()) && !killed
}

/// `argv` from string slices.
pub fn argv<I, S>(program: &OsStr, args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    std::iter::once(program.to_os_string())
        .chain(args.into_iter().map(|a| a.as_ref().to_os_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], limit: Duration) -> (bool, String) {
        let mut out = Vec::new();
        let mut log = ProvisionLog::new(&mut out, None);
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let ok = stream_command(&mut log, "t: p", &argv, limit);
        drop(log);
        (ok, String::from_utf8(out).unwrap())
    }

    #[test]
    fn streams_stdout_and_stderr_with_the_prefix() {
        let (ok, out) = run(
            &["sh", "-c", "echo one; echo two >&2; printf three"],
            DEFAULT_LIMIT,
        );
        assert!(ok);
        assert_eq!(
            out,
            "STACK_PROVISION: t: p: one\nSTACK_PROVISION: t: p: two\nSTACK_PROVISION: t: p: three\n"
        );
    }

    #[test]
    fn a_missing_program_is_one_line() {
        let (ok, out) = run(&["/nonexistent/docker", "ps"], DEFAULT_LIMIT);
        assert!(!ok);
        assert_eq!(
            out,
            "STACK_PROVISION: t: p: /nonexistent/docker: command not found\n"
        );
    }

    #[test]
    fn a_hung_command_is_killed_at_its_limit() {
        let start = std::time::Instant::now();
        let (ok, out) = run(
            &["sh", "-c", "echo before; sleep 30 & wait"],
            Duration::from_millis(300),
        );
        assert!(!ok);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            out,
            "STACK_PROVISION: t: p: before\nSTACK_PROVISION: t: p: sh: still running after 0.3s; killed\n"
        );
    }
}

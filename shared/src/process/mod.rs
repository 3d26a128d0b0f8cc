//! Layer 2: the one way the tools start a program.
//!
//! Every child process of every tool is made by a [`Program`], so what each of them needs is
//! done once, here, and cannot be forgotten at a call site:
//!
//! - **Signals unblocked.** The tools block SIGTERM, SIGINT and SIGHUP in every thread and take
//!   them on one signal thread ([`crate::os::signal`]). A new process inherits its parent's
//!   signal mask, so a child that did not empty it could be stopped by nothing but SIGKILL:
//!   [`Program::new`] empties it in the child before the program runs.
//! - **Argv only.** A program and its arguments go to `execve`; no shell ever parses them, so
//!   nothing read from a file, stdin or the network can become a command.
//! - **Output as the caller needs it:** captured ([`Program::capture`]), stdout and stderr into
//!   one pipe as `2>&1` gave the originals ([`Program::spawn_merged`]), inherited
//!   ([`Program::status`]), or two programs joined by a pipe as `a | b` ([`Program::pipe_into`]).
//! - **One reading of an exit status:** [`exit_code`] (the status a shell reports: the code, or
//!   128 + the signal), [`describe_status`], [`not_started_code`] and [`describe_spawn_error`].
//! - **Bounded children** ([`Registry`]: killed on time, with whatever they started) and
//!   **detached ones** ([`spawn_detached`]: run after a delay, whether or not we still live).
//!
//! Why std and not `duct`: the tools need five shapes of child, and two of them (a detached,
//! delayed command and a registry of killable process groups) are outside what duct does, so
//! std was needed anyway; with std alone every shape goes through this one builder. Measured on
//! the static x86_64 multicall binary, the change that dropped duct (and its `shared_child`,
//! `os_pipe` and `sigchld`) took it from 1,487,280 to 1,450,352 bytes.

mod detached;
mod registry;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use detached::spawn_detached;
pub use registry::Registry;

/// A program to start: its arguments, environment and standard streams.
#[derive(Debug)]
pub struct Program {
    cmd: Command,
}

impl Program {
    /// `program` (a name looked up on PATH, or a path), to start with no signal blocked.
    pub fn new(program: impl AsRef<OsStr>) -> Program {
        let mut cmd = Command::new(program);
        unblock_signals_in_child(&mut cmd);
        Program { cmd }
    }

    /// The program `argv[0]` with the arguments `argv[1..]`; an empty argv is an error.
    pub fn from_argv<S: AsRef<OsStr>>(argv: &[S]) -> io::Result<Program> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut program = Program::new(program);
        program.args(args);
        Ok(program)
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Program {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Program
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets `name=value` in the child's environment (never in its argv).
    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Program {
        self.cmd.env(name, value);
        self
    }

    pub fn stdin(&mut self, stdin: impl Into<Stdio>) -> &mut Program {
        self.cmd.stdin(stdin);
        self
    }

    pub fn stdout(&mut self, stdout: impl Into<Stdio>) -> &mut Program {
        self.cmd.stdout(stdout);
        self
    }

    pub fn stderr(&mut self, stderr: impl Into<Stdio>) -> &mut Program {
        self.cmd.stderr(stderr);
        self
    }

    /// Starts the child in a process group of its own, so that it and everything it starts can
    /// be signalled together (`killpg`).
    pub fn own_process_group(&mut self) -> &mut Program {
        self.cmd.process_group(0);
        self
    }

    /// Starts the program with the streams as set (inherited where not).
    pub fn spawn(mut self) -> io::Result<Child> {
        self.cmd.spawn()
    }

    /// Starts the program with its stdout and stderr into one pipe, as `2>&1 |` gives a shell
    /// pipeline; returns the child and the pipe's read end, which reaches end-of-file when the
    /// child and everything it started have closed it.
    pub fn spawn_merged(mut self) -> io::Result<(Child, File)> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        self.cmd.stdout(write.try_clone()?).stderr(write);
        let child = self.cmd.spawn()?;
        // `self` holds the pipe's write ends until it drops, here: only the child keeps them.
        Ok((child, File::from(read)))
    }

    /// Runs the program with the streams as set (inherited where not) and returns its exit
    /// status, whatever it is; only failing to start is an error.
    pub fn status(mut self) -> io::Result<ExitStatus> {
        self.cmd.status()
    }

    /// Replaces this process with the program (its exit status becomes ours). Returns only when
    /// that failed.
    pub fn exec(mut self) -> io::Error {
        self.cmd.exec()
    }

    /// Runs the program to its end with stdout and stderr captured and `input` on its stdin
    /// (closed when `None`).
    pub fn output(self, input: Option<Vec<u8>>) -> io::Result<Output> {
        self.run_captured(input, None)
    }

    /// As [`Program::output`], for a program that may run long: every `every` while it runs, `tick` is called with the time so far
    /// and the child's process id, so that a caller can report progress of a long command.
    pub fn capture(
        self,
        input: Option<Vec<u8>>,
        every: Duration,
        mut tick: impl FnMut(Duration, u32),
    ) -> io::Result<Output> {
        self.run_captured(input, Some((every, &mut tick)))
    }

    fn run_captured(
        mut self,
        input: Option<Vec<u8>>,
        ticks: Option<Ticks<'_>>,
    ) -> io::Result<Output> {
        let stdin = if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        self.cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.cmd.spawn()?;
        let writer = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A program that exits without reading all of its input is its own business.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let stdout = read_to_end(child.stdout.take());
        let stderr = read_to_end(child.stderr.take());
        let status = match ticks {
            Some((every, tick)) => wait_ticking(child, every, tick)?,
            None => child.wait()?,
        };
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        Ok(Output {
            status,
            stdout: joined(stdout),
            stderr: joined(stderr),
        })
    }

    /// `self | next`: two programs joined by a pipe, no shell. Returns `next`'s stdout, both
    /// stderrs (this one's first) and the pipeline's status: `next`'s, unless it succeeded and
    /// this one failed (as `set -o pipefail` has it). `tick` is called every `every` with the
    /// time so far and this program's process id.
    pub fn pipe_into(
        mut self,
        mut next: Program,
        every: Duration,
        mut tick: impl FnMut(Duration, u32),
    ) -> io::Result<Output> {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut left = self.cmd.spawn()?;
        let Some(between) = left.stdout.take() else {
            return Err(io::Error::other("the left side of the pipe has no stdout"));
        };
        next.cmd
            .stdin(between)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut right = match next.cmd.spawn() {
            Ok(child) => child,
            Err(err) => {
                let _ = left.kill();
                let _ = left.wait();
                return Err(err);
            }
        };
        drop(next);
        let left_err = read_to_end(left.stderr.take());
        let right_out = read_to_end(right.stdout.take());
        let right_err = read_to_end(right.stderr.take());
        let left_status = wait_ticking(left, every, &mut tick)?;
        let right_status = right.wait()?;
        let mut stderr = joined(left_err);
        stderr.extend(joined(right_err));
        let status = if right_status.success() && !left_status.success() {
            left_status
        } else {
            right_status
        };
        Ok(Output {
            status,
            stdout: joined(right_out),
            stderr,
        })
    }
}

/// How often to call back while a child runs, and the callback (time so far, process id).
type Ticks<'a> = (Duration, &'a mut dyn FnMut(Duration, u32));

/// The exit status a shell reports for `status`: the program's code, or 128 + N when signal N
/// killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
        (None, None) => 1,
    }
}

/// The status a shell reports for a program it could not start: 127 when it was not found,
/// else 126.
pub fn not_started_code(err: &io::Error) -> u8 {
    if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// `program: command not found` for a program that does not exist, else `program: why`.
pub fn describe_spawn_error(program: &OsStr, err: &io::Error) -> String {
    let program = program.to_string_lossy();
    match err.kind() {
        io::ErrorKind::NotFound => format!("{program}: command not found"),
        io::ErrorKind::PermissionDenied => format!("{program}: permission denied"),
        _ => format!("{program}: cannot run: {err}"),
    }
}

/// How a child ended: `exit status 3`, `killed by signal 9 (SIGKILL)`.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => describe_signal(signal),
        (None, None) => "ended".to_string(),
    }
}

/// `killed by signal 9 (SIGKILL)`, or without the name for a number that names no signal.
pub fn describe_signal(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(name) => format!("killed by signal {signal} ({name})"),
        Err(_) => format!("killed by signal {signal}"),
    }
}

/// Makes `cmd`'s child start with no signal blocked, whatever this process blocks.
fn unblock_signals_in_child(cmd: &mut Command) {
    // SAFETY: an all-zero sigset_t is valid storage, and sigemptyset initialises it.
    let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `none` is valid, writable storage.
    unsafe { libc::sigemptyset(&mut none) };
    // SAFETY: the closure runs between fork and exec and only calls pthread_sigmask, which is
    // async-signal-safe, on a set prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            match libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) {
                0 => Ok(()),
                err => Err(io::Error::from_raw_os_error(err)),
            }
        });
    }
}

/// Reads `stream` to its end on a thread of its own.
fn read_to_end(stream: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    stream.map(|mut stream| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    })
}

fn joined(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default()
}

/// Waits for `child`, calling `tick` every `every` with the time so far and its process id.
fn wait_ticking(
    mut child: Child,
    every: Duration,
    tick: &mut dyn FnMut(Duration, u32),
) -> io::Result<ExitStatus> {
    let start = Instant::now();
    let pid = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let every = every.max(Duration::from_millis(10));
    loop {
        match exited.recv_timeout(every) {
            Ok(status) => return status,
            Err(mpsc::RecvTimeoutError::Timeout) => tick(start.elapsed(), pid),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the thread waiting for the child ended"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::signal::stop_signals;

    #[test]
    fn children_start_with_no_signal_blocked() {
        stop_signals().thread_block().unwrap();
        let out = Program::from_argv(&["grep", "SigBlk", "/proc/self/status"])
            .unwrap()
            .output(None);
        stop_signals().thread_unblock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.unwrap().stdout),
            "SigBlk:\t0000000000000000\n"
        );
    }

    #[test]
    fn capture_feeds_stdin_and_keeps_both_streams() {
        let out = Program::from_argv(&["sh", "-c", "cat; echo oops >&2; exit 3"])
            .unwrap()
            .capture(Some(b"in\n".to_vec()), Duration::from_secs(60), |_, _| {})
            .unwrap();
        assert_eq!(out.stdout, b"in\n");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(exit_code(out.status), 3);
    }

    #[test]
    fn a_pipe_fails_when_either_side_fails() {
        let pipe = |left: &str, right: &str| {
            let left = Program::from_argv(&["sh", "-c", left]).unwrap();
            let right = Program::from_argv(&["sh", "-c", right]).unwrap();
            left.pipe_into(right, Duration::from_secs(60), |_, _| {})
                .unwrap()
        };
        let ok = pipe("echo a; echo e1 >&2", "tr a b; echo e2 >&2");
        assert_eq!(
            (ok.stdout.as_slice(), exit_code(ok.status)),
            (&b"b\n"[..], 0)
        );
        assert_eq!(ok.stderr, b"e1\ne2\n");
        assert_eq!(exit_code(pipe("exit 4", "cat").status), 4);
        assert_eq!(exit_code(pipe("echo a", "exit 5").status), 5);
    }

    #[test]
    fn ticks_come_while_the_child_runs() {
        let mut ticks = 0;
        let out = Program::from_argv(&["sleep", "0.2"])
            .unwrap()
            .capture(None, Duration::from_millis(20), |_, pid| {
                assert!(pid > 0);
                ticks += 1;
            })
            .unwrap();
        assert!(out.status.success());
        assert!(ticks >= 2, "{ticks}");
    }

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        let status = |raw| ExitStatus::from_raw(raw);
        assert_eq!(exit_code(status(3 << 8)), 3);
        assert_eq!(exit_code(status(9)), 137);
        assert_eq!(exit_code(status(15)), 143);
        let not_found = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(not_started_code(&not_found), 127);
        assert_eq!(
            not_started_code(&io::Error::from(io::ErrorKind::PermissionDenied)),
            126
        );
    }
}

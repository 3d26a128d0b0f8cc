//! Children that can be killed on time, without ever signalling a stranger.
//!
//! A command probe and a diagnostics command are bounded: when one runs past its time, it is
//! killed, together with whatever it started (each runs in its own process group). The hazard
//! of killing by pid is a pid that was already reaped and reused; here a pid leaves the
//! [`Registry`] — under the same lock that every kill takes — after the child has exited but
//! before it is reaped (`waitid(WNOWAIT)` first, `wait` after), so a kill only ever reaches a
//! live child or its zombie.
//!
//! Output is one pipe for stdout and stderr together, as `2>&1` gave the originals.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

/// The children that may still need killing; closed once its owner stops.
#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    closed: bool,
    pids: Vec<u32>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `argv` in its own process group with stdin from /dev/null and stdout and stderr
    /// into one pipe, returning the child and the pipe's read end. Fails with
    /// `ErrorKind::Interrupted` once the registry is closed.
    pub fn spawn(&self, argv: &[OsString]) -> io::Result<(Child, File)> {
        let mut program = super::Program::from_argv(argv)?;
        program.stdin(Stdio::null()).own_process_group();
        let mut state = self.lock();
        if state.closed {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "wait stopped"));
        }
        let (child, read) = program.spawn_merged()?;
        state.pids.push(child.id());
        Ok((child, read))
    }

    /// Kills `pid`'s process group, if that child has not exited yet. Returns whether it did.
    pub fn kill(&self, pid: u32) -> bool {
        let state = self.lock();
        state.pids.contains(&pid) && kill_group(pid)
    }

    /// Kills every child still running and refuses new ones.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for pid in state.pids.drain(..) {
            kill_group(pid);
        }
    }

    /// Blocks until `child` exits, takes it out of the registry, then reaps it.
    pub fn wait(&self, child: &mut Child) -> io::Result<ExitStatus> {
        let pid = child.id();
        let raw = i32::try_from(pid).map_err(io::Error::other)?;
        // EINTR retries; any other error (there should be none: the child is ours and not yet
        // reaped) falls through to `wait`, which reports it.
        while let Err(nix::errno::Errno::EINTR) = waitid(
            Id::Pid(Pid::from_raw(raw)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {}
        self.lock().pids.retain(|&p| p != pid);
        child.wait()
    }
}

fn kill_group(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|raw| killpg(Pid::from_raw(raw), Signal::SIGKILL).is_ok())
}

//! Power-off commands that run later, after provision-build has exited.
//!
//! The original's failure block ended with `(sleep 2 && shutdown -P now) &` and
//! `(sleep 15 && poweroff -f) &`: two background subshells that outlive the script, the second a
//! forced fallback in case a clean shutdown hangs. Here each is a detached process
//! ([`shared::process::spawn_detached`]) that leaves our session, sleeps, and executes the
//! command, holding none of our pipes open after we exit.

use std::ffi::OsString;
use std::time::Duration;

use shared::error::{Error, Result};

/// A command to run after a delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delayed {
    pub delay: Duration,
    /// The program and its arguments; the program is looked up on `PATH` unless it holds a `/`.
    pub argv: Vec<OsString>,
}

impl Delayed {
    /// The command, for messages.
    pub fn display(&self) -> String {
        display_command(&self.argv)
    }
}

/// A command's words joined with spaces, for messages.
pub fn display_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `command` detached: it runs after its delay whether or not we are still alive.
pub fn spawn_detached(command: &Delayed) -> Result<()> {
    shared::process::spawn_detached(&command.argv, command.delay)
        .map_err(|err| Error::new(format!("scheduling `{}`", command.display()), err))
}

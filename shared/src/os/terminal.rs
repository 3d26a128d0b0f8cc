//! Terminals: whether a stream is one, and whether two streams show on the same one.
//!
//! The logged tools print an error both as a log line on stdout and as `tool: error` on stderr,
//! since the two usually go to different places (the serial console, cloud-init's log). When
//! both are the same terminal, an operator would read it twice; [`stdout_is_stderr`] lets the
//! second copy be left out.

use std::io::IsTerminal;

/// Whether stdout and stderr are both terminals, and the same one (same device).
pub fn stdout_is_stderr() -> bool {
    let (out, err) = (std::io::stdout(), std::io::stderr());
    if !out.is_terminal() || !err.is_terminal() {
        return false;
    }
    match (nix::sys::stat::fstat(&out), nix::sys::stat::fstat(&err)) {
        (Ok(a), Ok(b)) => a.st_rdev == b.st_rdev,
        _ => false,
    }
}

/// Whether stdin is a terminal (a tool that reads stdin then says it is waiting for it).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

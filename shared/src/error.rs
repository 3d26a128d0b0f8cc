//! One error type that knows its exit status.
//!
//! Only [`crate::cli::run`] prints an error and chooses the process's exit status; everything
//! below it returns [`Error`]. An error reads `<what failed>: <why>`, so that the top level can
//! print `<tool>: <what failed>: <why>` and the operator learns which file, line, value or
//! command to look at.

use std::fmt;

/// The exit status of a tool that failed for a reason other than bad usage.
pub const FAILURE: u8 = 1;
/// The exit status of a usage error (bad flag, bad value), as clap and the coreutils use it.
pub const USAGE: u8 = 2;

/// A failure with a description of what failed, why, and the exit status it maps to.
#[derive(Debug)]
pub struct Error {
    what: String,
    why: String,
    code: u8,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `what` names the operation and its object (`reading /mnt/stack-runtime/base.env`), `why`
    /// says what went wrong (`No such file or directory`).
    pub fn new(what: impl Into<String>, why: impl fmt::Display) -> Self {
        Error {
            what: what.into(),
            why: why.to_string(),
            code: FAILURE,
        }
    }

    /// A usage error: exit status 2.
    pub fn usage(what: impl Into<String>, why: impl fmt::Display) -> Self {
        Error::new(what, why).with_code(USAGE)
    }

    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    pub fn code(&self) -> u8 {
        self.code
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn why(&self) -> &str {
        &self.why
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.why.is_empty() {
            f.write_str(&self.what)
        } else {
            write!(f, "{}: {}", self.what, self.why)
        }
    }
}

impl std::error::Error for Error {}

/// Attaches "what failed" to any error that can be displayed.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(what(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_joins_what_and_why() {
        let e = Error::new("reading base.env", "No such file or directory");
        assert_eq!(e.to_string(), "reading base.env: No such file or directory");
        assert_eq!(e.code(), FAILURE);
        assert_eq!(Error::usage("--timeout", "not a number").code(), USAGE);
    }
}

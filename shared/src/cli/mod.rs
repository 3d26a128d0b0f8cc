//! The top level every tool shares: parse, run, report.
//!
//! A tool's `main` is `cli::run::<Args>("tool", args, body)`. Parsing goes through clap with the
//! knob aliases of [`crate::knob`] applied; a usage error exits 2 with clap's message, `--help`
//! and `--version` exit 0. The body returns the exit status it wants, or an [`Error`] that is
//! printed once, here, as `<tool>: <what failed>: <why>`.

pub mod args;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::error::{Error, USAGE};
use crate::knob;
use crate::log::ProvisionLog;

/// Parses `args` (program name first) into `P`, runs `body`, and maps the outcome to an exit
/// status.
///
/// Only what depends on `P` is generic (building its command, reading its matches, the body);
/// parsing, reporting and the exit status are shared by every tool, so a binary that holds all
/// the tools holds that code once.
pub fn run<P: Parser>(
    tool: &str,
    args: impl IntoIterator<Item = OsString>,
    body: impl FnOnce(P) -> Result<u8, Error>,
) -> ExitCode {
    let parsed = matches(P::command(), args.into_iter().collect())
        .and_then(|matches| P::from_arg_matches(&matches));
    match parsed {
        Ok(parsed) => finish(tool, body(parsed)),
        Err(err) => usage(&err),
    }
}

/// `cmd`, with the knob aliases applied, parsing `args`.
fn matches(cmd: clap::Command, args: Vec<OsString>) -> Result<clap::ArgMatches, clap::Error> {
    knob::with_hexclave_env(cmd).try_get_matches_from(args)
}

/// Prints a parse outcome that ends the run: a usage error (on stderr, exit 2) or the output of
/// --help or --version (on stdout, exit 0).
fn usage(err: &clap::Error) -> ExitCode {
    let _ = err.print();
    ExitCode::from(if err.use_stderr() { USAGE } else { 0 })
}

/// The exit status of a body's outcome; an error is reported first.
fn finish(tool: &str, outcome: Result<u8, Error>) -> ExitCode {
    let status = match outcome {
        Ok(status) => status,
        Err(err) => {
            report(tool, &err);
            err.code()
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(status)
}

/// [`run`] for the tools that log like log-provision, whose operator reads the provision log
/// rather than stderr: the body logs through `log`; an error is also logged there, as
/// `<tool>: ERROR: <error>` (a usage error, the caller's own mistake, only on stderr); a log
/// file that could not be written is reported on stderr without changing the tool's status.
pub fn run_logged<P: Parser>(
    tool: &str,
    args: impl IntoIterator<Item = OsString>,
    body: impl FnOnce(P, &mut ProvisionLog<std::io::Stdout>) -> Result<u8, Error>,
) -> ExitCode {
    run(tool, args, |parsed: P| {
        logged(tool, |log| body(parsed, log))
    })
}

/// Runs `body` with the provision log: an error (other than bad usage) is also logged as
/// `<tool>: ERROR: …`, and a log file that could not be written is reported. For a tool that
/// logs only on some paths (run_logged's body, for one that always does).
pub fn logged(
    tool: &str,
    body: impl FnOnce(&mut ProvisionLog<std::io::Stdout>) -> Result<u8, Error>,
) -> Result<u8, Error> {
    let mut log = ProvisionLog::from_env();
    let status = body(&mut log);
    match &status {
        Err(err) if err.code() != USAGE => {
            log.message(format!("{tool}: ERROR: {err}").as_bytes());
        }
        _ => {}
    }
    if let Err(err) = log.finish() {
        report(tool, &err);
    }
    status
}

/// Prints `<tool>: <error>` on stderr.
pub fn report(tool: &str, err: &Error) {
    let _ = writeln!(std::io::stderr().lock(), "{tool}: {err}");
}

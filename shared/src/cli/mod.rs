//! The top level every tool shares: parse, run, report.
//!
//! A tool's `main` is `cli::run(command(), args, body)`, where `command()` is the tool's clap
//! command in the common layout ([`help::command`]). Parsing goes through clap with the knob
//! aliases of [`crate::knob`] applied; `--help` and `--version` print on stdout and exit 0. Every
//! usage error, clap's or the tool's own, is printed on stderr as `<tool>: <message>` followed by
//! the same hint, `Try '<tool> --help' for more information.`, and exits 2. The body returns the
//! exit status it wants, or an [`Error`] that is printed once, here, as
//! `<tool>: <what failed>: <why>`.

pub mod args;
pub mod help;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::FromArgMatches;
use clap::error::ErrorKind;

use crate::error::{Error, USAGE};
use crate::knob;
use crate::log::ProvisionLog;

/// Parses `args` (program name first) with `cmd` into `P`, runs `body`, and maps the outcome to
/// an exit status. The tool's name is `cmd`'s.
///
/// Only what depends on `P` is generic (reading its matches, the body); parsing, reporting and
/// the exit status are shared by every tool, so a binary that holds all the tools holds that
/// code once.
pub fn run<P: FromArgMatches>(
    cmd: clap::Command,
    args: impl IntoIterator<Item = OsString>,
    body: impl FnOnce(P) -> Result<u8, Error>,
) -> ExitCode {
    let tool = cmd.get_name().to_string();
    let parsed =
        matches(cmd, args.into_iter().collect()).and_then(|matches| P::from_arg_matches(&matches));
    match parsed {
        Ok(parsed) => finish(&tool, body(parsed)),
        Err(err) => usage(&tool, &err),
    }
}

/// `cmd`, with the build's identity and the knob aliases applied, parsing `args`.
fn matches(cmd: clap::Command, args: Vec<OsString>) -> Result<clap::ArgMatches, clap::Error> {
    knob::with_hexclave_env(help::version(cmd)).try_get_matches_from(args)
}

/// Prints a parse outcome that ends the run: the output of --help or --version (on stdout,
/// exit 0), or a usage error (on stderr, exit 2).
fn usage(tool: &str, err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let text = match err.kind() {
        // No arguments where some are needed: the help itself, as it is.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => rendered,
        _ => usage_text(tool, &rendered),
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    ExitCode::from(USAGE)
}

/// clap's rendering of a usage error as `<tool>: <message>`, its own "For more information" line
/// replaced by [`hint`], so every tool's usage errors read alike.
pub fn usage_text(tool: &str, rendered: &str) -> String {
    let body = rendered.strip_prefix("error: ").unwrap_or(rendered);
    let lines: Vec<&str> = body
        .lines()
        .filter(|line| !line.starts_with("For more information, try "))
        .collect();
    let mut out = format!("{tool}: {}", lines.join("\n").trim_end());
    out.push('\n');
    out.push_str(&hint(tool));
    out
}

/// The line after every usage error.
pub fn hint(tool: &str) -> String {
    format!("Try '{tool} --help' for more information.\n")
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
/// `<tool>: ERROR: <error>` (a usage error, the caller's own mistake, only on stderr), and
/// reported on stderr unless stderr is the terminal stdout already showed it on; a log file that
/// could not be written is reported on stderr without changing the tool's status.
pub fn run_logged<P: FromArgMatches>(
    cmd: clap::Command,
    args: impl IntoIterator<Item = OsString>,
    body: impl FnOnce(P, &mut ProvisionLog<std::io::Stdout>) -> Result<u8, Error>,
) -> ExitCode {
    let tool = cmd.get_name().to_string();
    run(cmd, args, |parsed: P| {
        logged(&tool, |log| body(parsed, log))
    })
}

/// Runs `body` with the provision log: an error (other than bad usage) is also logged as
/// `<tool>: ERROR: …`, and a log file that could not be written is reported. For a tool that
/// logs only on some paths ([`run_logged`] is this for one that always does).
pub fn logged(
    tool: &str,
    body: impl FnOnce(&mut ProvisionLog<std::io::Stdout>) -> Result<u8, Error>,
) -> Result<u8, Error> {
    let mut log = ProvisionLog::from_env();
    let status = match body(&mut log) {
        Err(err) if err.code() != USAGE => {
            log.message(format!("{tool}: ERROR: {err}").as_bytes());
            if !crate::os::terminal::stdout_is_stderr() {
                report(tool, &err);
            }
            Ok(err.code())
        }
        other => other,
    };
    if let Err(err) = log.finish() {
        report(tool, &err);
    }
    status
}

/// Prints `<tool>: <error>` on stderr, and the [`hint`] after a usage error.
pub fn report(tool: &str, err: &Error) {
    let mut text = format!("{tool}: {err}\n");
    if err.code() == USAGE {
        text.push_str(&hint(tool));
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

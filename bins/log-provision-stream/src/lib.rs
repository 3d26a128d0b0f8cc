//! `log-provision-stream PREFIX`: log every line of stdin as `PREFIX: line`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shared::cli::help::{self, Help};
use shared::log::{MAX_LINE, ProvisionLog};

const TOOL: &str = "log-provision-stream";

/// Log every line of stdin as `PREFIX: line`, exactly as `log-provision "PREFIX: line"` would:
/// `STACK_PROVISION: PREFIX: line` on stdout and `PREFIX: line` appended to
/// STACK_PROVISION_LOG_FILE when that is set and not empty.
///
/// Every byte of every line is kept: leading and trailing blanks, backslashes, carriage returns
/// and invalid UTF-8. A last line without a trailing newline is logged too. A line longer than
/// 65536 bytes is logged as several lines of at most 65536 bytes, each with the prefix, so memory
/// stays bounded whatever the input. Output is flushed as input arrives, in whole lines.
///
/// SIGTERM, SIGINT or SIGHUP end the stream: a last line read so far without its newline is
/// logged first, then the tool exits 128+N (143, 130, 129). The log file only ever receives
/// whole lines: a line that does not fit (a full file system) is cut back out of the file, so
/// the next line appended starts on a line of its own.
#[derive(Parser)]
#[command(name = TOOL)]
pub struct Args {
    /// The prefix of every line; empty when omitted (lines then read `: line`).
    #[arg(value_name = "PREFIX", default_value = "", allow_hyphen_values = true)]
    pub prefix: OsString,
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE],
    exit: &[
        ("0", "stdin read to its end and every line logged"),
        (
            "1",
            "stdin, stdout or the log file failed (every line still went to the others)",
        ),
    ],
    notes: "",
    long_notes: "",
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    debug_assert_eq!(MAX_LINE, 65536, "the --help text states the cap");
    shared::cli::run(command(), args, |args: Args| {
        let mut log = ProvisionLog::from_env();
        let streamed = log.stream_stdin_until_signal(args.prefix.as_bytes());
        let stopped_by = log.finish().and(streamed)?;
        Ok(stopped_by.map_or(0, shared::os::signal::exit_status))
    })
}

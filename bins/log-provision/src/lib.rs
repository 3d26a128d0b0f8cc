//! `log-provision MSG...`: print `STACK_PROVISION: MSG` and append `MSG` to the provision log.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shared::cli::help::{self, Help};
use shared::log::ProvisionLog;

const TOOL: &str = "log-provision";

/// Print `STACK_PROVISION: MSG` on stdout and, when STACK_PROVISION_LOG_FILE is set and not
/// empty, append `MSG` and a newline to that file.
///
/// The arguments are joined with single spaces and written byte for byte: no option is parsed
/// in them, so `log-provision -n --x` logs `-n --x`. Only a lone `--help`/`-h` or
/// `--version`/`-V` is taken as a request for this text or the version.
///
/// The file is opened with O_APPEND and each message is one write(2), so concurrent writers
/// never interleave inside a line. A file that cannot be written is reported on stderr and gives
/// exit status 1, after stdout was written.
#[derive(Parser)]
#[command(name = TOOL, disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    /// The message words.
    #[arg(value_name = "MSG", num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub msg: Vec<OsString>,
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE],
    exit: &[
        ("0", "logged"),
        (
            "1",
            "stdout or the log file could not be written (stdout was tried first)",
        ),
    ],
    notes: "",
    long_notes: "",
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    if let [_, only] = args.as_slice() {
        match only.to_str() {
            Some("--help") => return print(command().render_long_help().to_string()),
            Some("-h") => return print(command().render_help().to_string()),
            Some("--version") => return print(command().render_long_version()),
            Some("-V") => return print(command().render_version()),
            _ => {}
        }
    }
    let words: Vec<&[u8]> = args.iter().skip(1).map(|a| a.as_bytes()).collect();
    let mut log = ProvisionLog::from_env();
    log.message(&words.join(&b' '));
    match log.finish() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            shared::cli::report(TOOL, &err);
            ExitCode::from(err.code())
        }
    }
}

fn print(text: String) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

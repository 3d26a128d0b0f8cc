//! `emulator-tools`: every tool in one static binary.
//!
//! The tools reach a guest only inside its cloud-init user-data, so they travel as one file: one
//! copy of clap, the standard library and `shared` instead of one per tool, one payload to
//! encode, one digest to check. Installed, the binary sits under `/usr/local/lib/` and each tool
//! name in `/usr/local/bin/` is a symbolic link to it (`--install`); the binary runs the tool
//! whose name it was called by. Called by any other name, its first argument names the tool.
//!
//! Which tools exist is the table in [`tools`]; nothing else lists them.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shared::error::{Context, Error, FAILURE};

pub mod install;
pub mod tools;

const MULTICALL: &str = "emulator-tools";

/// Every emulator tool in one binary.
///
/// Called by the name of a tool (a link named `wait-for-deps` that points at this binary), it
/// runs that tool. The name must match exactly: `my-wait-for-deps` or `wait-for-deps.sh` run no
/// tool. Called by any other name, the first argument names the tool:
/// `emulator-tools wait-for-deps --help`.
///
/// --install DIR creates one symbolic link per tool in DIR, pointing at this binary (DIR is
/// created when missing). It can be run again: a link already pointing here is kept, a link
/// pointing elsewhere is replaced, and a file that is not a link is left alone and reported
/// (exit status 1). Each name is reported on stdout as created, kept or replaced, after every
/// link was made: a report that cannot be written (a full disk, a closed pipe) is an error, but
/// costs no link. DIR must be a directory or missing; a file, a dangling symbolic link or a loop
/// of links in its place is named as such.
#[derive(Parser)]
#[command(name = MULTICALL, version, arg_required_else_help = true)]
#[command(override_usage = "emulator-tools TOOL [ARGS]...\n       \
                            emulator-tools --list\n       \
                            emulator-tools --install DIR")]
#[command(after_help = tools_help())]
pub struct Args {
    /// Print the name of every tool, one per line.
    #[arg(long, conflicts_with = "install")]
    pub list: bool,

    /// Link every tool name in DIR to this binary.
    #[arg(long, value_name = "DIR")]
    pub install: Option<PathBuf>,
}

fn tools_help() -> String {
    let mut help = String::from("Tools:\n");
    for tool in tools::TOOLS {
        help.push_str("  ");
        help.push_str(tool.name);
        help.push('\n');
    }
    help.push_str("\nRun `emulator-tools TOOL --help` for a tool's own help.");
    help
}

pub fn command() -> clap::Command {
    Args::command()
}

/// Runs the tool named by `args[0]`'s file name, else the one named by `args[1]`, else the
/// multicall front end (`--list`, `--install`, `--help`, `--version`).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let called_as = args.first().and_then(|arg0| Path::new(arg0).file_name());
    if let Some(tool) = called_as.and_then(tools::find) {
        return (tool.main)(args);
    }
    if let Some(arg1) = args.get(1) {
        if let Some(tool) = tools::find(arg1) {
            // The tool sees its own name first, as if it had been called by it.
            args.remove(0);
            return (tool.main)(args);
        }
        if !arg1.as_bytes().starts_with(b"-") {
            let err = Error::usage(
                format!("unknown tool {:?}", arg1.to_string_lossy()),
                format!("`{MULTICALL} --list` prints the tools"),
            );
            shared::cli::report(MULTICALL, &err);
            return ExitCode::from(err.code());
        }
    }
    shared::cli::run(MULTICALL, args, front)
}

fn front(args: Args) -> Result<u8, Error> {
    if args.list {
        let mut out = std::io::stdout().lock();
        for tool in tools::TOOLS {
            writeln!(out, "{}", tool.name).context(|| "writing the list".to_string())?;
        }
        out.flush().context(|| "writing the list".to_string())?;
        return Ok(0);
    }
    if let Some(dir) = args.install {
        let target = std::env::current_exe()
            .context(|| "finding the path of this binary (is /proc mounted?)".to_string())?;
        let outcomes = install::install(
            &dir,
            &target,
            tools::TOOLS.iter().map(|tool| tool.name),
            MULTICALL,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )?;
        let refused = outcomes.contains(&install::Outcome::Refused);
        return Ok(if refused { FAILURE } else { 0 });
    }
    Err(Error::usage(
        "no tool named",
        format!("`{MULTICALL} --help` shows the usage"),
    ))
}

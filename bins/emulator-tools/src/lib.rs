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
use shared::cli::help::{self, Help};
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
/// --install DIR creates one symbolic link per tool in DIR, and one named emulator-tools,
/// pointing at this binary (DIR is created when missing). It can be run again: a link already
/// pointing here is kept, a link pointing elsewhere is replaced, and a file that is not a link is
/// left alone and reported (exit status 1). Each name is reported on stdout as created, kept or
/// replaced, after every link was made: a report that cannot be written (a full disk, a closed
/// pipe) is an error, but costs no link. DIR must be a directory or missing; a file, a dangling
/// symbolic link or a loop of links in its place is named as such.
#[derive(Parser)]
#[command(name = MULTICALL, arg_required_else_help = true)]
#[command(override_usage = "emulator-tools TOOL [ARGS]...\n       \
                            emulator-tools --list\n       \
                            emulator-tools --install DIR")]
pub struct Args {
    /// Print the name of every tool, one per line (for scripts; --help says what each does).
    #[arg(long, conflicts_with = "install")]
    pub list: bool,

    /// Link every tool name, and emulator-tools, in DIR to this binary.
    #[arg(long, value_name = "DIR")]
    pub install: Option<PathBuf>,
}

/// The tools, each with its one-line description, and where to read more.
fn tools_help() -> String {
    let rows: Vec<(String, String)> = tools::TOOLS
        .iter()
        .map(|tool| {
            let about = (tool.command)()
                .get_about()
                .map(|about| about.to_string())
                .unwrap_or_default();
            (tool.name.to_string(), about)
        })
        .collect();
    format!(
        "Tools:\n{}\nRun `emulator-tools TOOL --help` for a tool's own help.",
        help::rows(&rows)
    )
}

pub fn command() -> clap::Command {
    let tools = tools_help();
    help::command(
        Args::command(),
        &Help {
            about: env!("CARGO_PKG_DESCRIPTION"),
            exit: &[
                ("N", "the tool's own status, when a tool runs"),
                ("0", "--list or --install done"),
                ("1", "--install found a file in the way, or could not link"),
            ],
            notes: &tools,
            ..Help::default()
        },
    )
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
            let name = arg1.to_string_lossy();
            let why = match tools::similar(&name) {
                Some(near) => format!("did you mean {near}? `{MULTICALL} --list` prints the tools"),
                None => format!("`{MULTICALL} --list` prints the tools"),
            };
            let err = Error::usage(format!("unknown tool {name:?}"), why);
            shared::cli::report(MULTICALL, &err);
            return ExitCode::from(err.code());
        }
    }
    shared::cli::run(command(), args, front)
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
            tools::TOOLS.iter().map(|tool| tool.name).chain([MULTICALL]),
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

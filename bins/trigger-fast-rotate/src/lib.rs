//! `trigger-fast-rotate`: fresh secrets from stdin to `rotate-secrets` in the stack container.

pub mod rotate;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::rotate::DEFAULT_CONTAINER;
use clap::{CommandFactory, Parser};
use shared::cli::args::{self, Checked};
use shared::cli::help::{self, Help};
use shared::docker::{DEFAULT_PROGRAM, Docker};
use shared::os::terminal;

const TOOL: &str = "trigger-fast-rotate";

/// Pass fresh secrets from stdin to rotate-secrets in the stack container.
///
/// Reads exactly these four lines from stdin, in any order, each once:
///
///   STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY=<64 hex>
///   STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY=<64 hex>
///   STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY=<64 hex>
///   CRON_SECRET=<64 hex>
///
/// The first two keys may also be named as the released Stack Auth host names
/// them, STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY and
/// STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY. A key may come under both of
/// its names only with the same value; different values are refused, naming
/// both lines.
///
/// Each value is exactly 64 characters 0-9, a-f, A-F. Nothing else is allowed on
/// a line: no spaces, quotes, `export` or comments. Lines end with LF or CRLF,
/// the last may have no line end, blank lines are ignored; at most 64 KiB are
/// read. Input is data only: nothing in it is executed, and the values are never
/// written to disk or shown in a message. When stdin is a terminal, a note on
/// stderr says that the tool is reading it (end the input with Ctrl-D).
///
/// Then replaces itself with
///
///   docker exec -e STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
///       -e STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY \
///       -e STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY \
///       -e CRON_SECRET \
///       -e STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
///       -e STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY \
///       stack /usr/local/bin/rotate-secrets
///
/// with the values in docker's environment, never in its arguments: the
/// original's four names, then the Stack Auth names of the two renamed keys with
/// the same values, so that rotate-secrets of either generation finds them.
/// rotate-secrets' exit status is this tool's.
// The comment above is the --help text, printed verbatim (laid out for an 80-column console),
// not rustdoc Markdown.
#[allow(clippy::doc_overindented_list_items, clippy::doc_lazy_continuation)]
#[derive(Parser)]
#[command(name = TOOL, verbatim_doc_comment)]
pub struct Args {
    /// The container to run rotate-secrets in (a letter or digit, then letters, digits, '_',
    /// '.' and '-', as docker requires).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CONTAINER, value_parser = Checked(args::container))]
    pub container: String,

    /// The docker client program.
    #[arg(long, value_name = "PROGRAM", default_value = DEFAULT_PROGRAM)]
    pub docker: OsString,
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::DOCKER_HOST],
    exit: &[
        (
            "N",
            "rotate-secrets' (or docker exec's) status once docker runs",
        ),
        (
            "2",
            "bad usage, or stdin rejected (nothing was run; the message names the line and key)",
        ),
        ("126", "docker could not be started"),
        ("127", "docker was not found"),
    ],
    notes: "",
    long_notes: "",
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run(command(), args, |args: Args| {
        if terminal::stdin_is_terminal() {
            eprintln!(
                "{TOOL}: reading the four KEY=value lines from stdin (the terminal); end with \
                 Ctrl-D"
            );
        }
        let secrets = rotate::read(std::io::stdin().lock())?;
        let docker = Docker::new(args.docker);
        Err(rotate::command(&docker, args.container.as_ref(), &secrets).exec())
    })
}

//! `render-man-pages`: one man page per tool, section 1, from the tools' own clap commands.
//!
//! The pages say what `--help` says, rendered by `clap_mangen` from the same commands (the
//! table of tools in `emulator-tools`, each in the common help layout), so they cannot drift
//! apart. This runs on the build host only (`make man`); the guest binary stays without it. The
//! pages carry no date, so the same commit renders the same pages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use shared::error::{Context, Error};

/// Render one man page per emulator tool, and one for emulator-tools, into DIR as NAME.1.
#[derive(Parser)]
#[command(name = "render-man-pages")]
struct Args {
    /// The folder to write the pages to (created when missing).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
}

fn main() -> ExitCode {
    shared::cli::run(Args::command(), std::env::args_os(), run)
}

fn run(args: Args) -> Result<u8, Error> {
    std::fs::create_dir_all(&args.output)
        .context(|| format!("creating {}", args.output.display()))?;
    let commands = emulator_tools::tools::TOOLS
        .iter()
        .map(|tool| (tool.command)())
        .chain([emulator_tools::command()]);
    let mut out = std::io::stdout().lock();
    for cmd in commands {
        let page = render(&args.output, cmd)?;
        writeln!(out, "{}", page.display()).context(|| "writing to stdout".to_string())?;
    }
    Ok(0)
}

/// Writes `cmd`'s page into `dir`; returns its path.
///
/// The sections clap_mangen renders, except that the text after the options (notes,
/// Environment, Exit status) goes in a NOTES section without filling, since it is laid out in
/// columns, and VERSION gives the version and commit of the source.
fn render(dir: &Path, cmd: clap::Command) -> Result<PathBuf, Error> {
    let path = dir.join(format!("{}.1", cmd.get_name()));
    let notes = cmd
        .get_after_long_help()
        .or(cmd.get_after_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    let rendered = man
        .render_title(&mut page)
        .and_then(|()| man.render_name_section(&mut page))
        .and_then(|()| man.render_synopsis_section(&mut page))
        .and_then(|()| man.render_description_section(&mut page))
        .and_then(|()| man.render_options_section(&mut page));
    rendered.context(|| format!("rendering {}", path.display()))?;
    page.extend_from_slice(no_fill("NOTES", &notes).as_bytes());
    // The source's version and commit; the target and profile are the guest build's own, which
    // its --version prints.
    let version = format!(
        "{} (commit {})",
        shared::stamp::VERSION,
        shared::stamp::COMMIT
    );
    page.extend_from_slice(no_fill("VERSION", &version).as_bytes());
    std::fs::write(&path, page).context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A section whose lines are kept as they are (roff's no-fill mode), so that columns laid out
/// with spaces stay lined up.
fn no_fill(heading: &str, text: &str) -> String {
    if text.trim().is_empty() {
        return String::new();
    }
    let mut out = format!(".SH {heading}\n.nf\n");
    for line in text.lines() {
        // A backslash is roff's escape; a line starting with `.` or `'` would be a request.
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(".fi\n");
    out
}

//! One help layout for every tool, built here from what each tool declares.
//!
//! An operator reads `--help` on a serial console, 80 columns wide, and moves from tool to tool:
//! every tool's help has the same parts in the same order — the description, the usage, the
//! options (each default as `[default: …]`, durations with their unit), the tool's notes (value
//! syntax), then an `Environment:` section and an `Exit status:` section, in `-h` and `--help`
//! alike. The two sections are generated here: the variables come from the options that read one
//! (clap's `env`, whose `[env: …]` tag is hidden so a variable is listed once, in the section)
//! and from the tool's list; `2  bad usage` is added to every tool's statuses.
//!
//! Everything is at most [`WIDTH`] columns: clap wraps the descriptions and option texts to the
//! terminal and never wider than [`WIDTH`] (80 when the output is not a terminal), and the rows
//! of the sections are wrapped here with a hanging indent.

use clap::Command;

use crate::knob;
use crate::stamp;

/// The widest line of any help text: QEMU's serial console.
pub const WIDTH: usize = 80;

/// What a tool adds to the common layout.
#[derive(Clone, Copy, Default)]
pub struct Help<'a> {
    /// The one-line description: the first line of `-h`, the tool's line in `emulator-tools
    /// --help` and the man page's NAME (the crate's `description`); the command's own
    /// description then shows in `--help` only.
    pub about: &'a str,
    /// Variables the tool reads besides those its options declare, with what each does.
    pub env: &'a [(&'a str, &'a str)],
    /// Exit statuses and their meanings, in the order shown; `2  bad usage` is added unless
    /// listed.
    pub exit: &'a [(&'a str, &'a str)],
    /// Shown after the options in `-h` and `--help` (value syntax, the rules an operator needs).
    pub notes: &'a str,
    /// Shown before the notes in `--help` only (long reference text).
    pub long_notes: &'a str,
}

/// The provision log file, read by every tool that logs like log-provision.
pub const LOG_FILE: (&str, &str) = (
    "STACK_PROVISION_LOG_FILE",
    "the provision log file, appended to as log-provision does; unset or empty: stdout only",
);
/// The docker client's engine address.
pub const DOCKER_HOST: (&str, &str) = (
    "DOCKER_HOST",
    "the docker engine the docker client talks to (docker's own variable)",
);

/// `cmd` in the common layout: the build's identity as its version, the sections after the
/// options, help at most [`WIDTH`] columns.
pub fn command(cmd: Command, help: &Help) -> Command {
    let sections = sections(&cmd, help);
    let short = join(&[help.notes, &sections]);
    let long = join(&[help.long_notes, help.notes, &sections]);
    let cmd = if help.about.is_empty() {
        cmd
    } else {
        match cmd.get_long_about().or(cmd.get_about()).cloned() {
            Some(described) => cmd.about(help.about.to_string()).long_about(described),
            None => cmd.about(help.about.to_string()),
        }
    };
    version(cmd)
        .max_term_width(WIDTH)
        .mut_args(|arg| arg.hide_env(true))
        .after_help(short)
        .after_long_help(long)
}

/// `cmd` with the build's identity as its version: `-V` prints `NAME VERSION (COMMIT)`,
/// `--version` the version, commit, target and profile on lines of their own.
pub fn version(cmd: Command) -> Command {
    cmd.version(stamp::short_version())
        .long_version(stamp::long_version())
}

/// The `Environment:` and `Exit status:` sections.
fn sections(cmd: &Command, help: &Help) -> String {
    let mut env: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| {
            let var = arg.get_env()?.to_str()?;
            let flag = arg.get_long().map(|l| format!("--{l}")).unwrap_or_default();
            Some((var.to_string(), format!("the default of {flag}")))
        })
        .collect();
    env.extend(help.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut out = String::from("Environment:\n");
    if env.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&rows(&env));
        if env
            .iter()
            .any(|(var, _)| knob::hexclave_name(var).is_some())
        {
            out.push_str(&paragraph(
                "Each STACK_* variable is also read as HEXCLAVE_* (the product's new name), \
                 which wins when both are set; an empty one counts as unset.",
                2,
            ));
        }
    }
    let mut exit: Vec<(String, String)> = help
        .exit
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !exit.iter().any(|(code, _)| code == "2") {
        exit.push(("2".into(), "bad usage".into()));
    }
    out.push_str("\nExit status:\n");
    out.push_str(&rows(&exit));
    out.trim_end().to_string()
}

/// The non-empty parts, a blank line between two.
fn join(parts: &[&str]) -> String {
    let parts: Vec<&str> = parts
        .iter()
        .map(|p| p.trim_end())
        .filter(|p| !p.is_empty())
        .collect();
    parts.join("\n\n")
}

/// Two columns, indented by 2: each key, then its text wrapped to [`WIDTH`] under the text
/// column (on the next line when the key is wider than the column).
pub fn rows(rows: &[(String, String)]) -> String {
    let column = rows
        .iter()
        .map(|(key, _)| key.len())
        .filter(|&len| len <= 28)
        .max()
        .unwrap_or(0)
        + 4;
    let mut out = String::new();
    for (key, text) in rows {
        let mut line = format!("  {key}");
        if line.len() + 2 > column {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        let lines = wrap(text, WIDTH - column);
        for (i, text) in lines.iter().enumerate() {
            if i > 0 || line.is_empty() {
                line = " ".repeat(column);
            } else {
                line.push_str(&" ".repeat(column - line.len()));
            }
            out.push_str(&line);
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// `text` wrapped to [`WIDTH`], every line indented by `indent`.
pub fn paragraph(text: &str, indent: usize) -> String {
    wrap(text, WIDTH - indent)
        .iter()
        .map(|line| format!("{}{line}\n", " ".repeat(indent)))
        .collect()
}

/// Greedy word wrap at `width` columns; a word longer than that stays whole on its line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_wrap_under_their_column() {
        let text = "word ".repeat(30);
        let out = rows(&[
            ("0".into(), text.trim().into()),
            ("128+N".into(), "x".into()),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.iter().all(|l| l.len() <= WIDTH), "{out}");
        assert!(lines[0].starts_with("  0      word"), "{out}");
        assert!(lines[1].starts_with("         word"), "{out}");
        assert_eq!(*lines.last().unwrap(), "  128+N  x");
    }

    #[test]
    fn a_key_wider_than_the_column_puts_its_text_below() {
        let key = "K".repeat(40);
        let out = rows(&[(key.clone(), "text".into())]);
        assert_eq!(out, format!("  {key}\n    text\n"));
    }

    #[test]
    fn sections_are_generated_for_every_command() {
        let cmd = command(Command::new("t"), &Help::default());
        let help = cmd.get_after_help().unwrap().to_string();
        assert_eq!(help, "Environment:\n  none\n\nExit status:\n  2  bad usage");
    }
}

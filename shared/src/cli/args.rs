//! What the tools' flag values are: one definition each of a command line, a name and a
//! positive duration, used by every tool's clap value parsers.
//!
//! Commands that stand in for `systemctl …` or `shutdown -P now` are given as one string and
//! split into words as a POSIX shell would split them (quotes, backslashes) by `shell-words`,
//! with nothing expanded and no shell ever run. Names of units are refused when empty or when
//! they start with `-`, since systemctl would read them as a flag; container names must follow
//! docker's own rule, which also keeps them from being read as a flag; filesystem labels must be
//! something `/dev/disk/by-label/LABEL` can name.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;

use crate::{duration, wait};

/// A command line split into words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Words(pub Vec<OsString>);

/// Splits `text` into words; an empty text gives no words.
pub fn words(text: &str) -> Result<Words, String> {
    let split =
        shell_words::split(text).map_err(|err| format!("cannot split into words: {err}"))?;
    Ok(Words(split.into_iter().map(OsString::from).collect()))
}

/// Splits `text` into words, at least one: the program.
pub fn command(text: &str) -> Result<Words, String> {
    let words = words(text)?;
    if words.0.is_empty() {
        return Err("must name a command".into());
    }
    Ok(words)
}

/// A container or unit name: not empty, and not something a program would take for a flag.
pub fn name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('-') {
        Err("not a name".into())
    } else {
        Ok(text.to_string())
    }
}

/// What docker accepts as a container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub const CONTAINER_RULE: &str = "a container name is a letter or digit followed by letters, \
    digits, '_', '.' and '-' (docker's rule)";

/// A docker container name (see [`CONTAINER_RULE`]): nothing docker would take for a flag or
/// refuse.
pub fn container(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("not a container name: {CONTAINER_RULE}"))
    }
}

/// A filesystem label: not empty, no `/`, not `.` or `..`, at most 255 bytes. Anything else
/// would make `<by-label dir>/<LABEL>` name another file (the directory itself, its parent).
pub fn label(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(['/', '\0']) || text == "." || text == ".." {
        Err("not a filesystem label: it must not be empty, '.', '..' or hold a '/'".into())
    } else if text.len() > 255 {
        Err("not a filesystem label: longer than 255 bytes".into())
    } else {
        Ok(text.to_string())
    }
}

/// A duration greater than zero (`3`, `1.5s`, `2m`: see [`duration::parse`]).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration::parse(text)? {
        d if d.is_zero() => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

/// A clap value parser built from a plain `&str -> Result<T, String>` function. Its error names
/// the flag, the value and, when the value came from the environment, the variable — so a bad
/// `STACK_DEPS_TIMEOUT` is reported as such, not as a bad `--timeout` the user never typed. An
/// empty variable counts as unset (the argument's default applies), as in the originals.
#[derive(Clone, Copy)]
pub struct Checked<T>(pub fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<T, clap::Error> {
        // Only the call of the parser depends on T: the rest is shared by every instance.
        let (value, source) = effective(arg, value, source);
        let parsed = match value.to_str() {
            Some(text) => (self.0)(text),
            None => Err("not valid UTF-8".to_string()),
        };
        parsed.map_err(|why| invalid(cmd, arg, value, source, &why))
    }
}

/// The value to parse: an empty variable counts as unset, as `${STACK_DEPS_TIMEOUT:-1500}` had
/// it, so the argument's default applies.
fn effective<'a>(
    arg: Option<&'a clap::Arg>,
    value: &'a OsStr,
    source: ValueSource,
) -> (&'a OsStr, ValueSource) {
    if source == ValueSource::EnvVariable && value.is_empty() {
        if let Some(default) = arg.and_then(|a| a.get_default_values().first()) {
            return (default, ValueSource::DefaultValue);
        }
    }
    (value, source)
}

/// The usage error for `value`, rejected because `why`.
fn invalid(
    cmd: &clap::Command,
    arg: Option<&clap::Arg>,
    value: &OsStr,
    source: ValueSource,
    why: &str,
) -> clap::Error {
    let text = value.to_string_lossy();
    let name = arg.map(ToString::to_string).unwrap_or_default();
    let from = match (source, arg.and_then(clap::Arg::get_env)) {
        (ValueSource::EnvVariable, Some(var)) => {
            format!(" (from the environment variable {})", var.to_string_lossy())
        }
        _ => String::new(),
    };
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("invalid value '{text}' for '{name}'{from}: {why}\n"),
    )
    .with_cmd(cmd)
}

/// The polling flags every wait tool takes: how often to try and how often to report.
#[derive(clap::Args, Clone, Debug)]
pub struct Polling {
    /// The first pause between two attempts at one target.
    #[arg(long, value_name = "DURATION", default_value = duration::text(wait::DEFAULT_INTERVAL), allow_negative_numbers = true, value_parser = Checked(duration::parse))]
    pub interval: Duration,

    /// The longest pause between two attempts at one target.
    #[arg(long, value_name = "DURATION", default_value = duration::text(wait::DEFAULT_MAX_INTERVAL), allow_negative_numbers = true, value_parser = Checked(duration::parse))]
    pub max_interval: Duration,

    /// How often to log what is still not ready (0: never).
    #[arg(long, value_name = "DURATION", default_value = duration::text(wait::DEFAULT_HEARTBEAT), allow_negative_numbers = true, value_parser = Checked(duration::parse))]
    pub heartbeat: Duration,
}

impl Polling {
    /// The wait's options: these intervals, the whole wait's `timeout` and the per-attempt cap.
    pub fn options(&self, timeout: Duration, attempt_timeout: Duration) -> wait::Options {
        wait::Options {
            timeout,
            interval: self.interval,
            max_interval: self.max_interval,
            heartbeat: Some(self.heartbeat).filter(|h| !h.is_zero()),
            attempt_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_without_a_shell() {
        assert_eq!(
            command("'/opt/my tools/off' \"$HOME\" -P").unwrap(),
            Words(vec![
                "/opt/my tools/off".into(),
                "$HOME".into(),
                "-P".into()
            ])
        );
        assert_eq!(words("  ").unwrap(), Words(vec![]));
        assert!(command("  ").is_err());
        assert!(command("a 'b").is_err());
    }

    #[test]
    fn names_and_durations() {
        assert_eq!(name("stack").unwrap(), "stack");
        assert!(name("").is_err());
        assert!(name("-x").is_err());
        assert_eq!(
            positive_duration("1.5").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(positive_duration("0").is_err());
    }

    #[test]
    fn container_names_follow_dockers_rule() {
        for ok in ["stack", "stack-build-init", "a", "0x_y.z-1"] {
            assert_eq!(container(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "--privileged",
            "-x",
            "_a",
            ".a",
            "a b",
            "a/b",
            "a:b",
            "caf\u{e9}",
        ] {
            assert!(container(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(label("STACKCFG").as_deref(), Ok("STACKCFG"));
        assert_eq!(label("MY DISK").as_deref(), Ok("MY DISK"));
        for bad in ["", ".", "..", "a/b", "/"] {
            assert!(label(bad).is_err(), "{bad:?}");
        }
    }
}

//! The project's env-file parser: a strict, documented subset of shell assignments.
//!
//! The original scripts `source`d these files as root, so any `$(…)` in them ran, and then `cat`
//! them into `docker --env-file`, which reads them differently: docker takes the raw text after
//! the first `=` (quotes kept literally, trailing blanks kept, no `export`, last duplicate wins).
//! Here a file is parsed once, nothing in it is ever executed or expanded, and the result is
//! written back as a clean docker env file ([`EnvFile::to_docker_env`]), so the values the tools
//! compute with and the values the container sees are the same.
//!
//! The accepted subset ([`SYNTAX`] says the same for `--help`):
//! - blank lines and lines whose first non-blank character is `#` are ignored;
//! - `KEY=value` or `export KEY=value`, with optional blanks before; `KEY` is
//!   `[A-Za-z_][A-Za-z0-9_]*`;
//! - an unquoted value is the rest of the line, taken literally, with trailing blanks removed.
//!   This is exactly what docker saw for the lines the host writes (`KEY=value`, no blanks, no
//!   `$`). Anything on which a shell and docker disagree is refused: a blank inside the value or
//!   right after `=` (so no inline `# comment`), a quote, a backslash, `$` and backticks;
//! - `'…'` is taken literally, `$` and backslashes included;
//! - `"…"` may hold `\"`, `\\`, `\$` and `` \` ``, which stand for the character; any other
//!   backslash is kept as it is (as in a shell); an unescaped `$` or backtick is refused;
//! - after a closing quote only blanks and a `# comment` may follow; a value never spans lines
//!   (docker's format cannot carry a newline);
//! - CRLF line ends are accepted (the CR is dropped, as docker does); a UTF-8 byte-order mark at
//!   the very start is skipped (docker skips it too); NUL, a CR elsewhere and invalid UTF-8 are
//!   refused.
//!
//! Every other line is an error `file:line: why`. Errors never quote a value: these files hold
//! secrets. Entries keep file order, duplicates included; lookups take the last one, as both
//! the shell and docker do. A variable the product renamed counts as one variable under either
//! of its names ([`crate::emulator::names`]).

use std::fmt::Write as _;
use std::path::Path;

use crate::emulator::names;
use crate::error::{Error, Result};
use crate::os::small_file;

/// The accepted syntax, for `--help` texts.
pub const SYNTAX: &str = "\
Env-file syntax (runtime.env, base.env, the build env file). Nothing is executed
or expanded. The output holds each value bare, without quotes or 'export'
(docker takes the text after the first '=' literally), so the container sees
exactly the value parsed here.
  KEY=value         the rest of the line, literally; trailing blanks are
                    dropped. Refused in an unquoted value: blanks inside it or
                    right after '=' (so no inline '# comment'), quotes,
                    backslashes, '$' and backticks: quote such values.
  KEY='value'       literal, '$' and '\\' included.
  KEY=\"value\"       \\\" \\\\ \\$ \\` stand for the character, other backslashes
                    are kept; an unescaped '$' or backtick is refused.
  export KEY=value  the same as KEY=value.
  # comment         and blank lines are ignored. After a closing quote only
                    blanks and a '# comment' may follow. A value never spans
                    lines.
KEY is letters, digits and '_', not starting with a digit. CRLF line ends are
accepted; a UTF-8 byte-order mark at the start of the file is skipped. NUL
bytes, stray carriage returns and invalid UTF-8 are refused. Any other line is
an error naming the file and line. A key defined twice keeps both entries in the
output (docker uses the last) and the last one counts. An env file must be a
regular file of at most 1 MiB: a device, FIFO or directory is refused before
anything is read from it.";

/// One `KEY=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The 1-based line number in the file.
    pub line: usize,
}

/// A parsed env file: its entries in file order, and the name errors use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    name: String,
    entries: Vec<Entry>,
}

impl EnvFile {
    /// The name this file is reported under (its path as given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every entry, in file order, duplicates included.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The last entry for `key`: the one a shell and docker both end up with. A variable the
    /// product renamed is found under either of its names, the later definition winning
    /// ([`crate::emulator::names`]).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| names::same(&e.key, key))
    }

    /// The value of `key` (its last definition).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// Whether the last definition of `key` is exactly `value`.
    ///
    /// The original asked `grep -q '^KEY=1'`, a prefix match on any line; this asks what the
    /// file means instead: `KEY=10` is not `1`, while `export KEY=1` and `KEY="1"` are, and a
    /// later `KEY=0` overrides an earlier `KEY=1`.
    pub fn is_set_to(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }

    /// The entries as a docker `--env-file`: `KEY=value` lines, in order.
    pub fn to_docker_env(&self) -> Result<String> {
        let mut out = String::new();
        for entry in &self.entries {
            push_docker_line(&mut out, &entry.key, &entry.value)
                .map_err(|why| Error::new(format!("{}:{}", self.name, entry.line), why))?;
        }
        Ok(out)
    }
}

/// Appends `KEY=value\n` to `out`, refusing what docker's env-file format cannot carry: docker
/// takes the raw text after the first `=` up to the end of the line and drops one trailing CR.
pub fn push_docker_line(out: &mut String, key: &str, value: &str) -> Result<(), String> {
    if !is_valid_key(key) {
        return Err(format!("invalid variable name {key:?}"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "the value of {key} holds a newline, carriage return or NUL, which a docker env \
             file cannot carry"
        ));
    }
    let _ = writeln!(out, "{key}={value}");
    Ok(())
}

/// Whether `key` is a variable name a shell and docker both accept.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads and parses `path`; errors name the path as given. The file must be a regular file of
/// at most [`small_file::ENV_FILE_CAP`] bytes (see [`crate::os::small_file`]).
pub fn read(path: &Path) -> Result<EnvFile> {
    let bytes = small_file::read(path, small_file::ENV_FILE_CAP)?;
    parse(&path.display().to_string(), &bytes)
}

/// Like [`read`], but a file that does not exist is `None` (the original's `[ -f FILE ] &&`).
pub fn read_optional(path: &Path) -> Result<Option<EnvFile>> {
    match small_file::read_optional(path, small_file::ENV_FILE_CAP)? {
        Some(bytes) => parse(&path.display().to_string(), &bytes).map(Some),
        None => Ok(None),
    }
}

/// Whether the file at `path` exists and the last definition of `key` in it is exactly
/// `value` (see [`EnvFile::is_set_to`]): the build-env checks such as
/// `STACK_EMULATOR_BUILD_SNAPSHOT=1`. A malformed file is an error, not a "no".
pub fn is_set_in(path: &Path, key: &str, value: &str) -> Result<bool> {
    Ok(read_optional(path)?.is_some_and(|file| file.is_set_to(key, value)))
}

/// The value of `key` in the file at `path`: `None` when the file or the key is missing.
pub fn value_in(path: &Path, key: &str) -> Result<Option<String>> {
    Ok(read_optional(path)?.and_then(|file| file.get(key).map(str::to_string)))
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses the bytes of an env file; `name` is what errors call it.
pub fn parse(name: &str, bytes: &[u8]) -> Result<EnvFile> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut entries = Vec::new();
    let mut lines = bytes.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        // A final newline leaves an empty last piece that is not a line.
        if raw.is_empty() && lines.peek().is_none() {
            break;
        }
        let number = index + 1;
        let at = |why: String| Error::new(format!("{name}:{number}"), why);
        let line = check_line(raw).map_err(at)?;
        if let Some(entry) = parse_line(line).map_err(at)? {
            let (key, value) = entry;
            entries.push(Entry {
                key,
                value,
                line: number,
            });
        }
    }
    Ok(EnvFile {
        name: name.to_string(),
        entries,
    })
}

/// The checks on raw bytes: NUL, CR, UTF-8. Returns the line without its CR.
fn check_line(raw: &[u8]) -> Result<&str, String> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.contains(&0) {
        return Err("NUL byte".to_string());
    }
    if raw.contains(&b'\r') {
        return Err("carriage return inside a line".to_string());
    }
    std::str::from_utf8(raw).map_err(|_| "invalid UTF-8".to_string())
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// One line: `None` for a blank or comment line, else `(key, value)`.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim_start_matches(is_blank);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with(is_blank) => rest.trim_start_matches(is_blank),
        _ => line,
    };
    let Some((key, value)) = line.split_once('=') else {
        return Err("missing '=' (expected KEY=value)".to_string());
    };
    if !is_valid_key(key) {
        return Err(format!(
            "invalid variable name {key:?} (letters, digits and '_', not starting with a digit)"
        ));
    }
    let value = match value.chars().next() {
        Some('\'') => single_quoted(&value[1..])?,
        Some('"') => double_quoted(&value[1..])?,
        _ => unquoted(value)?,
    };
    Ok(Some((key.to_string(), value)))
}

fn unquoted(value: &str) -> Result<String, String> {
    let value = value.trim_end_matches(is_blank);
    if value.starts_with(is_blank) {
        return Err("blank after '=' (quote the value if it starts with a blank)".to_string());
    }
    if let Some(i) = value.find(['$', '`']) {
        return Err(dollar_or_backtick(&value[i..]));
    }
    if value.contains(is_blank) {
        return Err(
            "blank inside an unquoted value (quote the value; an inline '# comment' \
                    is not supported)"
                .to_string(),
        );
    }
    if value.contains(['\'', '"']) {
        return Err("quote inside an unquoted value (quote the whole value)".to_string());
    }
    if value.contains('\\') {
        return Err(
            "backslash in an unquoted value (use single quotes for a literal backslash)"
                .to_string(),
        );
    }
    Ok(value.to_string())
}

/// The error for an unescaped `$` or backtick at the start of `rest`.
fn dollar_or_backtick(rest: &str) -> String {
    if rest.starts_with("$(") {
        "command substitution $(...) is not allowed (nothing in an env file is executed)"
            .to_string()
    } else if rest.starts_with('`') {
        "command substitution with backticks is not allowed (nothing in an env file is executed)"
            .to_string()
    } else {
        "'$' expansion is not supported (write the value literally; single quotes keep a '$')"
            .to_string()
    }
}

fn single_quoted(body: &str) -> Result<String, String> {
    let Some(end) = body.find('\'') else {
        return Err("unterminated single quote".to_string());
    };
    after_closing_quote(&body[end + 1..])?;
    Ok(body[..end].to_string())
}

fn double_quoted(body: &str) -> Result<String, String> {
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                after_closing_quote(&body[i + 1..])?;
                return Ok(value);
            }
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => value.push('\\'),
            },
            '$' | '`' => return Err(dollar_or_backtick(&body[i..])),
            _ => value.push(c),
        }
    }
    Err("unterminated double quote (a value cannot span lines)".to_string())
}

fn after_closing_quote(rest: &str) -> Result<(), String> {
    let trimmed = rest.trim_start_matches(is_blank);
    // A comment needs a blank before it, as in a shell: `"a"#b` is the text `a#b` there.
    if trimmed.is_empty() || (trimmed.len() < rest.len() && trimmed.starts_with('#')) {
        return Ok(());
    }
    Err("text after the closing quote".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<(String, String), String> {
        match parse("f", line.as_bytes()) {
            Ok(file) => {
                let e = &file.entries()[0];
                Ok((e.key.clone(), e.value.clone()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn value(line: &str) -> String {
        one(line).unwrap().1
    }

    fn error(line: &str) -> String {
        one(line).unwrap_err()
    }

    #[test]
    fn unquoted_values_are_literal() {
        assert_eq!(
            value("URL=postgres://u:p@h:5432/db?ssl=1&x=y"),
            "postgres://u:p@h:5432/db?ssl=1&x=y"
        );
        assert_eq!(value("A=b=c"), "b=c");
        assert_eq!(value("A=#not-a-comment"), "#not-a-comment");
        assert_eq!(value("A="), "");
        assert_eq!(value("A=trailing  \t"), "trailing");
        assert_eq!(value("  export   A=x"), "x");
        assert_eq!(one("exportA=1").unwrap().0, "exportA");
    }

    #[test]
    fn quoted_values() {
        assert_eq!(value("A='$x `y` \\n'"), "$x `y` \\n");
        assert_eq!(value(r#"A="a \"b\" \\ \$ \` \n""#), "a \"b\" \\ $ ` \\n");
        assert_eq!(value("A=\" padded \"  # comment"), " padded ");
        assert_eq!(value("A=''"), "");
        assert_eq!(error("A='x'y"), "f:1: text after the closing quote");
        assert_eq!(
            error("A=\"x\"#y"),
            "f:1: text after the closing quote".to_string()
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(error("A='x"), "f:1: unterminated single quote");
        assert_eq!(
            error("A=\"x"),
            "f:1: unterminated double quote (a value cannot span lines)"
        );
        assert!(error("A=$(id)").contains("command substitution $(...)"));
        assert!(error("A=\"a$(id)\"").contains("command substitution $(...)"));
        assert!(error("A=`id`").contains("backticks"));
        assert!(error("A=$HOME").contains("'$' expansion"));
        assert!(error("A=\"${HOME}\"").contains("'$' expansion"));
        assert!(error("A=a b").contains("blank inside"));
        assert!(error("A=a # c").contains("blank inside"));
        assert!(error("A= a").contains("blank after '='"));
        assert!(error("A=a\"b\"").contains("quote inside"));
        assert!(error("A=a\\b").contains("backslash"));
        assert!(error("1A=x").contains("invalid variable name \"1A\""));
        assert!(error("A B=x").contains("invalid variable name"));
        assert!(error("export").contains("missing '='"));
        assert!(error("A").contains("missing '='"));
        assert_eq!(error("A=a\0b"), "f:1: NUL byte");
        assert_eq!(error("A=a\rb"), "f:1: carriage return inside a line");
        assert_eq!(
            parse("f", b"A=1\nB=\xff\n").unwrap_err().to_string(),
            "f:2: invalid UTF-8"
        );
    }

    #[test]
    fn file_structure() {
        let text = "\u{feff}# head\r\n\r\nA=1\r\n  # indented comment\nB='two'\nA=3";
        let file = parse("f", text.as_bytes()).unwrap();
        let got: Vec<_> = file
            .entries()
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(got, vec![("A", "1", 3), ("B", "two", 5), ("A", "3", 6)]);
        assert_eq!(file.get("A"), Some("3"));
        assert_eq!(file.to_docker_env().unwrap(), "A=1\nB=two\nA=3\n");
        // A BOM anywhere but the start is not skipped.
        assert!(
            parse("f", "A=1\n\u{feff}B=2\n".as_bytes())
                .unwrap_err()
                .to_string()
                .starts_with("f:2: invalid variable name")
        );
    }

    #[test]
    fn is_set_to_takes_the_last_exact_value() {
        let file = parse("f", b"S=1\nT=10\nU=1\nU=0\nexport V=\"1\"\n").unwrap();
        assert!(file.is_set_to("S", "1"));
        assert!(!file.is_set_to("T", "1"));
        assert!(!file.is_set_to("U", "1"));
        assert!(file.is_set_to("V", "1"));
        assert!(!file.is_set_to("W", "1"));
    }

    #[test]
    fn a_renamed_variable_is_found_under_either_name() {
        let file = parse(
            "f",
            b"NEXT_PUBLIC_STACK_PORT_PREFIX=70\nNEXT_PUBLIC_HEXCLAVE_PORT_PREFIX=81\n\
              STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY=k\n",
        )
        .unwrap();
        for name in [
            "NEXT_PUBLIC_STACK_PORT_PREFIX",
            "NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX",
        ] {
            assert_eq!(file.get(name), Some("81"), "{name}");
        }
        let entry = file
            .entry("STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY")
            .unwrap();
        assert_eq!(
            (entry.key.as_str(), entry.value.as_str(), entry.line),
            ("STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY", "k", 3)
        );
        assert_eq!(
            file.get("STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY"),
            None
        );
    }

    #[test]
    fn file_helpers() {
        let dir = std::env::temp_dir().join(format!("envfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("build-arch.env");
        std::fs::write(&path, "STACK_EMULATOR_BUILD_ARCH=arm64\n").unwrap();
        assert!(is_set_in(&path, "STACK_EMULATOR_BUILD_ARCH", "arm64").unwrap());
        assert_eq!(
            value_in(&path, "STACK_EMULATOR_BUILD_ARCH")
                .unwrap()
                .as_deref(),
            Some("arm64")
        );
        assert_eq!(value_in(&path, "OTHER").unwrap(), None);
        let missing = dir.join("missing.env");
        assert!(!is_set_in(&missing, "X", "1").unwrap());
        assert_eq!(value_in(&missing, "X").unwrap(), None);
        std::fs::write(&path, "X=$(id)\n").unwrap();
        assert!(is_set_in(&path, "X", "1").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn docker_lines_refuse_newlines() {
        let mut out = String::new();
        assert!(push_docker_line(&mut out, "A", "x\ny").is_err());
        assert!(push_docker_line(&mut out, "A B", "x").is_err());
        push_docker_line(&mut out, "A", " x ").unwrap();
        assert_eq!(out, "A= x \n");
    }
}

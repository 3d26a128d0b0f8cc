//! Fresh secrets after a snapshot resume: parse them strictly, hand them to `rotate-secrets`.
//!
//! On every resume the host runs `trigger-fast-rotate` through qemu-guest-agent and writes four
//! `KEY=<64 hex>` lines to its stdin, without a trailing newline. The original saved stdin to a
//! file under `/var/run` and `source`d it as root, so whatever the host (or anything able to talk
//! to the agent) wrote was executed, and the secrets sat on disk meanwhile. Here stdin is data:
//! exactly the four known keys, each once, each with exactly 64 hexadecimal characters, checked
//! before anything runs. The values stay in memory and reach the container only through docker's
//! environment (`-e NAME` in argv), as the original's `docker exec` line did.
//!
//! Two of the keys were renamed with the product ([`shared::emulator::names`]): the released Stack Auth host
//! sends `STACK_SEED_INTERNAL_PROJECT_{PUBLISHABLE_CLIENT,SECRET_SERVER}_KEY`, the Hexclave
//! user-data names them `STACK_INTERNAL_PROJECT_…`. Either name is accepted, and both together
//! when their values are equal. `rotate-secrets` gets each under both names (the original's four
//! `-e`, then the Stack Auth names), so an image of either generation finds what it reads.
//!
//! An error names the line and the key, never the value: the messages end up in the host's logs.

use std::ffi::OsStr;
use std::io::Read;

use shared::docker::{Docker, DockerCommand};
use shared::emulator::names::{
    self, PUBLISHABLE_CLIENT_KEY, SECRET_SERVER_KEY, SUPER_SECRET_ADMIN_KEY,
};
use shared::error::{Context, Error, Result};

/// The four keys, in the order the original passed them to `docker exec`, under the Hexclave
/// names. A renamed key is also accepted, and passed, under its Stack Auth name.
pub const KEYS: [&str; 4] = [
    PUBLISHABLE_CLIENT_KEY.hexclave,
    SECRET_SERVER_KEY.hexclave,
    SUPER_SECRET_ADMIN_KEY,
    "CRON_SECRET",
];

/// The length of every value, in hexadecimal characters.
pub const VALUE_LEN: usize = 64;

/// The container and the program in it that the original called.
pub const DEFAULT_CONTAINER: &str = shared::emulator::CONTAINER;
pub const ROTATE_PROGRAM: &str = "/usr/local/bin/rotate-secrets";

/// The most stdin read: four lines are about 300 bytes; anything far larger is not the host.
pub const MAX_INPUT: usize = 64 * 1024;

/// The exit status of rejected input (nothing was run).
pub const INPUT_ERROR: u8 = 2;

/// The four values, in the order of [`KEYS`]. `Debug` never shows them.
pub struct Secrets([String; 4]);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    /// `(name, value)` in the order of [`KEYS`].
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        KEYS.iter().copied().zip(self.0.iter().map(String::as_str))
    }

    /// Every name `rotate-secrets` gets, with its value: [`KEYS`], then the Stack Auth names of
    /// the renamed keys.
    pub fn under_both_names(&self) -> Vec<(&'static str, String)> {
        let mut all: Vec<(&'static str, String)> = self
            .iter()
            .map(|(name, value)| (name, value.to_string()))
            .collect();
        all.extend(names::aliases(self.iter()));
        all
    }
}

/// One accepted line of a key.
struct Seen {
    line: usize,
    name: &'static str,
    value: String,
}

fn reject(line: usize, why: impl std::fmt::Display) -> Error {
    Error::new(format!("stdin line {line}"), why).with_code(INPUT_ERROR)
}

/// The accepted names, for messages: `A (or B), C (or D), E, F`.
fn accepted() -> String {
    KEYS.map(names::either).join(", ")
}

/// The name in the input that stands for `key` of [`KEYS`], if any.
fn name_of(key: &[u8]) -> Option<(usize, &'static str)> {
    let key = std::str::from_utf8(key).ok()?;
    let slot = KEYS.iter().position(|k| names::same(k, key))?;
    let name = names::renamed(key).map_or(KEYS[slot], |pair| {
        if pair.hexclave == key {
            pair.hexclave
        } else {
            pair.stack_auth
        }
    });
    Some((slot, name))
}

/// Parses the host's input: `KEY=VALUE` lines separated by LF or CRLF, a final newline
/// optional, blank lines ignored; every key of [`KEYS`] exactly once, a renamed key under
/// either name or under both with equal values; every value 64 hex digits.
pub fn parse(input: &[u8]) -> Result<Secrets> {
    let mut found: [Vec<Seen>; 4] = Default::default();
    for (index, line) in input.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            accept(&mut found, index + 1, line)?;
        }
    }
    let missing: Vec<String> = KEYS
        .iter()
        .zip(&found)
        .filter(|(_, seen)| seen.is_empty())
        .map(|(key, _)| names::either(key))
        .collect();
    if !missing.is_empty() {
        return Err(Error::new(
            "stdin",
            format!(
                "missing {} (expected one line for each of {})",
                missing.join(", "),
                accepted()
            ),
        )
        .with_code(INPUT_ERROR));
    }
    let [a, b, c, d] = found.map(|seen| {
        seen.into_iter()
            .next()
            .map(|first| first.value)
            .unwrap_or_default()
    });
    Ok(Secrets([a, b, c, d]))
}

/// Checks line `number` (`KEY=VALUE`, not empty) against what `found` holds, and records it.
fn accept(found: &mut [Vec<Seen>; 4], number: usize, line: &[u8]) -> Result<()> {
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        return Err(reject(
            number,
            "expected KEY=VALUE, found no `=` (the line is not shown: it may hold a secret)",
        ));
    };
    let (key, value) = (&line[..eq], &line[eq + 1..]);
    let Some((slot, name)) = name_of(key) else {
        return Err(reject(number, unknown_key(key)));
    };
    let seen = &mut found[slot];
    if let Some(first) = seen.iter().find(|s| s.name == name) {
        return Err(reject(
            number,
            format!(
                "{name} is given a second time (first on line {})",
                first.line
            ),
        ));
    }
    check_value(value).map_err(|why| reject(number, format!("{name}: {why}")))?;
    // check_value accepted only ASCII hex digits, so this cannot fail.
    let value = String::from_utf8_lossy(value).into_owned();
    if let Some(other) = seen.first().filter(|other| other.value != value) {
        return Err(reject(
            number,
            format!(
                "{name} has a different value than {} on line {}; they are the Hexclave \
                 and the Stack Auth name of one key: send one of them, or both with the \
                 same value (the values are not shown)",
                other.name, other.line
            ),
        ));
    }
    seen.push(Seen {
        line: number,
        name,
        value,
    });
    Ok(())
}

/// Why a key is refused. The key is shown only when it looks like a variable name and not like
/// a value: a secret pasted in the wrong place must not end up in a log.
fn unknown_key(key: &[u8]) -> String {
    let expected = format!("expected one of {}", accepted());
    let is_name = !key.is_empty()
        && key.len() <= 64
        && !key[0].is_ascii_digit()
        && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
    let looks_like_a_value = key.iter().all(u8::is_ascii_hexdigit);
    if is_name && !looks_like_a_value {
        format!("unknown key `{}`; {expected}", String::from_utf8_lossy(key))
    } else {
        format!("the text before `=` is not a known key and is not shown; {expected}")
    }
}

/// Checks a value without ever quoting it.
fn check_value(value: &[u8]) -> std::result::Result<(), String> {
    if let Some(at) = value.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "value must be {VALUE_LEN} hexadecimal characters; character {} is not one \
             (the value is not shown)",
            at + 1
        ));
    }
    if value.len() != VALUE_LEN {
        return Err(format!(
            "value must be {VALUE_LEN} hexadecimal characters, found {}",
            value.len()
        ));
    }
    Ok(())
}

/// Reads at most [`MAX_INPUT`] bytes of `reader` and parses them.
pub fn read(reader: impl Read) -> Result<Secrets> {
    let mut input = Vec::new();
    reader
        .take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut input)
        .context(|| "reading stdin".to_string())?;
    if input.len() > MAX_INPUT {
        return Err(Error::new(
            "stdin",
            format!("more than {MAX_INPUT} bytes; expected four KEY=VALUE lines"),
        )
        .with_code(INPUT_ERROR));
    }
    parse(&input)
}

/// `docker exec -e KEY… CONTAINER /usr/local/bin/rotate-secrets` with the values in docker's
/// environment: the original's command, argument for argument, with a `-e` for the Stack Auth
/// name of each renamed key after the original's four.
pub fn command(docker: &Docker, container: &OsStr, secrets: &Secrets) -> DockerCommand {
    secrets
        .under_both_names()
        .into_iter()
        .fold(docker.command(["exec"]), |cmd, (name, value)| {
            cmd.secret_env(name, value)
        })
        .arg(container)
        .arg(ROTATE_PROGRAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(c: char) -> String {
        c.to_string().repeat(VALUE_LEN)
    }

    fn host_input() -> String {
        // As the host writes it: no trailing newline.
        format!(
            "{}={}\n{}={}\n{}={}\n{}={}",
            KEYS[0],
            hex('a'),
            KEYS[1],
            hex('B'),
            KEYS[2],
            hex('0'),
            KEYS[3],
            hex('9')
        )
    }

    fn values(s: &Secrets) -> Vec<(&str, &str)> {
        s.iter().collect()
    }

    #[test]
    fn accepts_the_hosts_input_in_any_order_and_line_ending() {
        let expected = [hex('a'), hex('B'), hex('0'), hex('9')];
        let expected: Vec<(&str, &str)> = KEYS
            .iter()
            .copied()
            .zip(expected.iter().map(String::as_str))
            .collect();
        let plain = host_input();
        let newline = format!("{plain}\n");
        let crlf = plain.replace('\n', "\r\n") + "\r\n";
        let mut lines: Vec<&str> = plain.lines().collect();
        lines.reverse();
        let reversed = lines.join("\n");
        let blank = format!("\n{plain}\n\n");
        for input in [&plain, &newline, &crlf, &reversed, &blank] {
            assert_eq!(
                values(&parse(input.as_bytes()).unwrap()),
                expected,
                "{input:?}"
            );
        }
    }

    fn error(input: &str) -> Error {
        let err = parse(input.as_bytes()).unwrap_err();
        assert_eq!(err.code(), INPUT_ERROR);
        err
    }

    #[test]
    fn rejects_injection_without_echoing_it() {
        let input = host_input() + "\nX=$(touch /tmp/pwned)";
        let err = error(&input);
        assert_eq!(err.what(), "stdin line 5");
        assert!(
            err.why()
                .starts_with("unknown key `X`; expected one of STACK_INTERNAL")
        );
        assert!(!err.to_string().contains("pwned"));

        let input = host_input().replace(&hex('9'), "$(touch /tmp/pwned)");
        let err = error(&input);
        assert_eq!(err.what(), "stdin line 4");
        assert_eq!(
            err.why(),
            "CRON_SECRET: value must be 64 hexadecimal characters; character 1 is not one \
             (the value is not shown)"
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = error(&format!("{}\nnot a pair", host_input()));
        assert_eq!(err.what(), "stdin line 5");
        assert!(err.why().starts_with("expected KEY=VALUE, found no `=`"));

        let err = error(&format!("export {}", host_input()));
        assert_eq!(err.what(), "stdin line 1");
        assert!(
            err.why()
                .starts_with("the text before `=` is not a known key and is not shown;")
        );

        // A value where the key belongs is not echoed.
        let err = error(&format!("{}={}\n{}", hex('e'), hex('f'), host_input()));
        assert_eq!(err.what(), "stdin line 1");
        assert!(!err.to_string().contains(&hex('e')));
    }

    #[test]
    fn rejects_a_duplicate() {
        let input = format!("{}\n{}={}", host_input(), KEYS[1], hex('c'));
        let err = error(&input);
        assert_eq!(err.what(), "stdin line 5");
        assert_eq!(
            err.why(),
            "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY is given a second time (first on line 2)"
        );
    }

    #[test]
    fn rejects_missing_keys_naming_them() {
        let two = host_input().lines().skip(2).collect::<Vec<_>>().join("\n");
        let err = error(&two);
        assert_eq!(err.what(), "stdin");
        assert!(
            err.why().starts_with(
                "missing STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY (or \
                 STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY), \
                 STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY (or \
                 STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY) (expected"
            ),
            "{err}"
        );
        assert_eq!(error("").why(), error("\n").why());
    }

    #[test]
    fn rejects_bad_values_without_showing_them() {
        for (value, why) in [
            (
                hex('a')[1..].to_string(),
                "value must be 64 hexadecimal characters, found 63",
            ),
            (
                hex('a') + "a",
                "value must be 64 hexadecimal characters, found 65",
            ),
            (
                String::new(),
                "value must be 64 hexadecimal characters, found 0",
            ),
            (
                format!("{} ", hex('a')),
                "value must be 64 hexadecimal characters; character 65 is not one \
                 (the value is not shown)",
            ),
            (
                format!("\"{}\"", &hex('a')[2..]),
                "value must be 64 hexadecimal characters; character 1 is not one \
                 (the value is not shown)",
            ),
        ] {
            let input = host_input().replace(&hex('0'), &value);
            let err = error(&input);
            assert_eq!(err.what(), "stdin line 3");
            assert_eq!(
                err.why(),
                format!("STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY: {why}")
            );
        }
    }

    #[test]
    fn non_utf8_is_refused_not_shown() {
        let mut input = host_input().into_bytes();
        input.extend_from_slice(b"\n\xff\xfe=1");
        let err = parse(&input).unwrap_err();
        assert_eq!(err.what(), "stdin line 5");
        assert!(err.why().contains("not a known key and is not shown"));
    }

    #[test]
    fn oversized_input_is_refused() {
        let input = vec![b'\n'; MAX_INPUT + 1];
        let err = read(input.as_slice()).unwrap_err();
        assert_eq!(err.code(), INPUT_ERROR);
        assert!(err.why().starts_with("more than 65536 bytes"));
    }

    #[test]
    fn builds_the_originals_command() {
        let secrets = parse(host_input().as_bytes()).unwrap();
        let cmd = command(&Docker::default(), OsStr::new("stack"), &secrets);
        assert_eq!(
            cmd.to_string(),
            "docker exec -e STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
             -e STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY \
             -e STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY \
             -e CRON_SECRET \
             -e STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
             -e STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY \
             stack /usr/local/bin/rotate-secrets"
        );
        let mut names = KEYS.to_vec();
        names.extend([
            PUBLISHABLE_CLIENT_KEY.stack_auth,
            SECRET_SERVER_KEY.stack_auth,
        ]);
        assert_eq!(cmd.env_names().collect::<Vec<_>>(), names);
        assert!(!format!("{cmd:?}{secrets:?}").contains(&hex('a')));
    }

    /// The released Stack Auth host's input: its names for the renamed keys.
    fn released_host_input() -> String {
        host_input()
            .replace(
                PUBLISHABLE_CLIENT_KEY.hexclave,
                PUBLISHABLE_CLIENT_KEY.stack_auth,
            )
            .replace(SECRET_SERVER_KEY.hexclave, SECRET_SERVER_KEY.stack_auth)
    }

    #[test]
    fn either_name_of_a_renamed_key_gives_the_same_secrets() {
        let hexclave = parse(host_input().as_bytes()).unwrap();
        let released = released_host_input();
        assert!(released.starts_with("STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY="));
        let stack_auth = parse(released.as_bytes()).unwrap();
        assert_eq!(values(&stack_auth), values(&hexclave));
        let both = format!(
            "{}\n{}",
            host_input(),
            released.lines().take(2).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(values(&parse(both.as_bytes()).unwrap()), values(&hexclave));
        assert_eq!(
            stack_auth.under_both_names(),
            vec![
                (KEYS[0], hex('a')),
                (KEYS[1], hex('B')),
                (KEYS[2], hex('0')),
                (KEYS[3], hex('9')),
                (PUBLISHABLE_CLIENT_KEY.stack_auth, hex('a')),
                (SECRET_SERVER_KEY.stack_auth, hex('B')),
            ]
        );
    }

    #[test]
    fn both_names_with_different_values_are_refused_naming_both_lines() {
        let input = format!(
            "{}\n{}={}",
            released_host_input(),
            SECRET_SERVER_KEY.hexclave,
            hex('b')
        );
        let err = error(&input);
        assert_eq!(err.what(), "stdin line 5");
        assert_eq!(
            err.why(),
            "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY has a different value than \
             STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY on line 2; they are the Hexclave and \
             the Stack Auth name of one key: send one of them, or both with the same value (the \
             values are not shown)"
        );
        // The same name twice stays a duplicate, whatever the other name did.
        let input = format!(
            "{}\n{}={}\n{}={}",
            released_host_input(),
            SECRET_SERVER_KEY.hexclave,
            hex('B'),
            SECRET_SERVER_KEY.stack_auth,
            hex('B')
        );
        assert_eq!(
            error(&input).to_string(),
            "stdin line 6: STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY is given a second time \
             (first on line 2)"
        );
    }
}

//! Property tests of the parsers that take outside input: the env-file parser, the host's
//! rotate input, durations, wait target specs and mount-table lines. They call the parsers as
//! libraries (no process is started), so they live in a test binary of their own.
//!
//! For each: a valid input generated from a value parses back to that value
//! (`parse(render(x)) == x`); arbitrary bytes or text never panic; and a large pathological
//! input parses in about linear time (its time is compared with that of an input 16 times
//! smaller, with a bound far below what a quadratic parser would take).

use std::time::{Duration, Instant};

use proptest::prelude::*;

use shared::duration::seconds;
use shared::emulator::envfile;
use shared::os::mounts;
use shared::wait::spec;
use trigger_fast_rotate::rotate;

// ---------------------------------------------------------------------------------------------
// Linear time.

/// The fastest of three runs of `f`.
fn fastest(f: &dyn Fn()) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Checks that `parse` of an input 16 times larger (1 MiB against 64 KiB) takes at most about 16
/// times as long: the bound (64 times, plus 250 ms of noise) is generous for a loaded machine
/// and a debug build, and far below the 256 times a quadratic parser would take. Measured in a
/// debug build: 10 to 46 times, with every test running at once. `PROPTEST_SHOW_TIMES=1` prints
/// the times.
#[track_caller]
fn assert_linear(make: impl Fn(usize) -> Vec<u8>, parse: impl Fn(&[u8])) {
    let small = make(64 << 10);
    let large = make(1 << 20);
    let t_small = fastest(&|| parse(&small));
    let t_large = fastest(&|| parse(&large));
    assert!(
        t_large < t_small * 64 + Duration::from_millis(250),
        "16 times the input took {t_large:?} against {t_small:?}"
    );
    if std::env::var_os("PROPTEST_SHOW_TIMES").is_some() {
        eprintln!("linear check: {t_small:?} -> {t_large:?}");
    }
}

/// `unit` repeated to about `len` bytes, between `head` and `tail`.
fn repeat(head: &str, unit: &str, len: usize, tail: &str) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    while out.len() < len {
        out.extend_from_slice(unit.as_bytes());
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Env files.

/// How one entry is written.
#[derive(Debug, Clone)]
enum Form {
    Unquoted,
    Single,
    Double,
}

#[derive(Debug, Clone)]
struct Line {
    key: String,
    value: String,
    form: Form,
    export: bool,
    indent: &'static str,
    comment: bool,
}

fn key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,20}"
}

/// A value and a form that can carry it.
fn value_and_form() -> impl Strategy<Value = (String, Form)> {
    prop_oneof![
        // Unquoted: no blank, quote, backslash, `$` or backtick (and no newline).
        "[A-Za-z0-9_./:@%+=,#!?~-]{0,30}".prop_map(|v| (v, Form::Unquoted)),
        // Single-quoted: anything but the quote and line breaks.
        "[^'\n\r\u{0}]{0,30}".prop_map(|v| (v, Form::Single)),
        // Double-quoted: anything but line breaks (escaped as needed).
        "[^\n\r\u{0}]{0,30}".prop_map(|v| (v, Form::Double)),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (
        key(),
        value_and_form(),
        any::<bool>(),
        prop_oneof![Just(""), Just("  "), Just("\t")],
        any::<bool>(),
    )
        .prop_map(|(key, (value, form), export, indent, comment)| Line {
            key,
            value,
            form,
            export,
            indent,
            comment,
        })
}

fn render_line(line: &Line) -> String {
    let value = match line.form {
        Form::Unquoted => line.value.clone(),
        Form::Single => format!("'{}'", line.value),
        Form::Double => {
            let mut out = String::from("\"");
            for c in line.value.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
    };
    let export = if line.export { "export " } else { "" };
    // A comment may follow a closing quote after a blank.
    let comment = match (&line.form, line.comment) {
        (Form::Single | Form::Double, true) => " # note",
        _ => "",
    };
    format!("{}{export}{}={value}{comment}", line.indent, line.key)
}

proptest! {
    #[test]
    fn env_files_round_trip(
        lines in proptest::collection::vec(line(), 0..12),
        crlf in any::<bool>(),
        bom in any::<bool>(),
        final_newline in any::<bool>(),
        blank_every in 1usize..5,
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        if bom {
            text.push('\u{feff}');
        }
        for (i, line) in lines.iter().enumerate() {
            if i % blank_every == 0 {
                text.push_str("# a comment");
                text.push_str(end);
                text.push_str(end);
            }
            text.push_str(&render_line(line));
            text.push_str(end);
        }
        if !final_newline && text.ends_with(end) && !lines.is_empty() {
            text.truncate(text.len() - end.len());
        }
        let file = envfile::parse("f", text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text:?}")))?;
        let got: Vec<(&str, &str)> = file
            .entries()
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        let want: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.key.as_str(), l.value.as_str()))
            .collect();
        prop_assert_eq!(got, want);
        // What the container gets says the same.
        let docker = file.to_docker_env().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again: String = lines.iter().map(|l| format!("{}={}\n", l.key, l.value)).collect();
        prop_assert_eq!(docker, again);
    }

    #[test]
    fn env_files_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = envfile::parse("f", &bytes);
    }

    #[test]
    fn env_files_never_panic_on_near_misses(text in "[A-Za-z_= '\"\\\\$`#\t\r\n(){}a-z0-9-]{0,80}") {
        let _ = envfile::parse("f", text.as_bytes());
    }
}

#[test]
fn env_file_parsing_is_linear() {
    let parse = |bytes: &[u8]| {
        let _ = envfile::parse("f", bytes);
    };
    // One long double-quoted line full of escapes.
    assert_linear(|n| repeat("A=\"", "\\\\\\\"", n, "\"\n"), parse);
    // One long unquoted value that fails only at its end.
    assert_linear(|n| repeat("A=", "a", n, " b\n"), parse);
    // Very many short lines.
    assert_linear(|n| repeat("", "A=1\n", n, ""), parse);
    // Very many comment and blank lines.
    assert_linear(|n| repeat("", "  # c\n\n", n, ""), parse);
}

// ---------------------------------------------------------------------------------------------
// The host's rotate input.

fn hex64() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{64}"
}

proptest! {
    #[test]
    fn rotate_input_round_trips(
        values in proptest::array::uniform4(hex64()),
        order in Just([0usize, 1, 2, 3]).prop_shuffle(),
        crlf in any::<bool>(),
        blank_lines in proptest::collection::vec(0usize..3, 5),
        final_newline in any::<bool>(),
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        for (slot, &i) in order.iter().enumerate() {
            text.push_str(&end.repeat(blank_lines[slot]));
            text.push_str(&format!("{}={}", rotate::KEYS[i], values[i]));
            if slot < 3 || final_newline {
                text.push_str(end);
            }
        }
        let secrets = rotate::parse(text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text:?}")))?;
        let got: Vec<(&str, &str)> = secrets.iter().collect();
        let want: Vec<(&str, &str)> = rotate::KEYS
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn rotate_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = rotate::parse(&bytes);
    }

    #[test]
    fn rotate_input_near_misses_never_panic(
        lines in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(rotate::KEYS.to_vec()).prop_map(str::to_string),
                "[A-Z_]{0,12}",
            ].prop_flat_map(|k| ("[0-9a-fA-F= g]{0,70}", Just(k)))
                .prop_map(|(v, k)| format!("{k}={v}")),
            0..8,
        ),
    ) {
        let _ = rotate::parse(lines.join("\n").as_bytes());
    }
}

#[test]
fn rotate_input_parsing_is_linear() {
    let parse = |bytes: &[u8]| {
        let _ = rotate::parse(bytes);
    };
    assert_linear(|n| repeat("", "\n", n, ""), parse);
    assert_linear(|n| repeat("X=", "a", n, "\n"), parse);
    let key = format!("{}=", rotate::KEYS[0]);
    assert_linear(|n| repeat(&key, "0", n, "\n"), parse);
}

// ---------------------------------------------------------------------------------------------
// Durations.

/// A duration as text and its exact length in milliseconds, within the parser's limit of a
/// year (a whole number below it plus a fraction stays below it).
fn duration_text() -> impl Strategy<Value = (String, u64)> {
    prop_oneof![
        (0u64..=1_000_000_000).prop_map(|n| (format!("{n}ms"), n)),
        (0u64..31_536_000, 0u64..1000, any::<bool>(), 0usize..4).prop_map(
            |(secs, frac, with_s, digits)| {
                let (text, ms) = decimal(secs, frac, digits);
                (format!("{text}{}", if with_s { "s" } else { "" }), ms)
            }
        ),
        (0u64..525_600, 0u64..1000, 0usize..4).prop_map(|(mins, frac, digits)| {
            let (text, ms) = decimal(mins, frac, digits);
            (format!("{text}m"), ms * 60)
        }),
        (0u64..8_760, 0u64..1000, 0usize..4).prop_map(|(hours, frac, digits)| {
            let (text, ms) = decimal(hours, frac, digits);
            (format!("{text}h"), ms * 3600)
        }),
    ]
}

/// `whole.frac` with `digits` decimals (0: none), and its value in thousandths.
fn decimal(whole: u64, frac: u64, digits: usize) -> (String, u64) {
    match digits {
        0 => (whole.to_string(), whole * 1000),
        _ => {
            let frac = frac % 10u64.pow(digits as u32);
            let thousandths = frac * 10u64.pow(3 - digits as u32);
            (
                format!("{whole}.{frac:0digits$}"),
                whole * 1000 + thousandths,
            )
        }
    }
}

proptest! {
    #[test]
    fn durations_round_trip((text, ms) in duration_text()) {
        prop_assert_eq!(shared::duration::parse(&text), Ok(Duration::from_millis(ms)));
    }

    #[test]
    fn rendered_durations_parse_back(ms in 0u64..=31_536_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(shared::duration::parse(&seconds(d)), Ok(d));
    }

    #[test]
    fn durations_never_panic(text in any::<String>()) {
        let _ = shared::duration::parse(&text);
    }

    #[test]
    fn duration_near_misses_never_panic(text in "[0-9.,eE+ -]{0,20}(ms|s|m|h|x|)") {
        let _ = shared::duration::parse(&text);
    }
}

#[test]
fn duration_parsing_is_linear() {
    let parse = |bytes: &[u8]| {
        let _ = shared::duration::parse(&String::from_utf8_lossy(bytes));
    };
    assert_linear(|n| repeat("", "9", n, "s"), parse);
    assert_linear(|n| repeat("1.", "0", n, "ms"), parse);
    assert_linear(|n| repeat("", ".", n, ""), parse);
}

// ---------------------------------------------------------------------------------------------
// Target specs.

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4)
            .prop_map(|labels| labels.join(".")),
    ]
}

fn rule() -> impl Strategy<Value = String> {
    prop_oneof![
        (100u16..1000).prop_map(|n| format!("status<{n}")),
        proptest::collection::vec(100u16..1000, 1..4).prop_map(|codes| {
            let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
            format!("status={}", codes.join(","))
        }),
    ]
}

/// A target spec in the form the probe prints it.
fn probe_text() -> impl Strategy<Value = String> {
    (
        0usize..3,
        host(),
        1u16..=65535,
        "(/[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,12}){1,3}(\\?[A-Za-z0-9=&/?`{}|-]{0,12})?",
        rule(),
    )
        .prop_map(|(scheme, host, port, path, rule)| match scheme {
            0 => format!("tcp://{host}:{port}"),
            1 => format!("pg://{host}:{port}"),
            _ => format!("http://{host}:{port}{path} {rule}"),
        })
}

proptest! {
    #[test]
    fn target_specs_round_trip(
        name in "[A-Za-z0-9._-]{1,20}",
        text in probe_text(),
    ) {
        let probe = spec::probe(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(probe.to_string(), text.clone());
        let target = spec::target(&format!("{name}={text}"))
            .map_err(|e| TestCaseError::fail(format!("{e}: {name}={text}")))?;
        prop_assert_eq!(target.to_string(), format!("{name}={text}"));
    }

    #[test]
    fn target_specs_never_panic(text in any::<String>()) {
        let _ = spec::target(&text);
        let _ = spec::probe(&text);
    }

    #[test]
    fn target_spec_near_misses_never_panic(
        text in "[a-z]{0,5}(://)?[\\[\\]0-9a-f:.@]{0,24}(/[ -~]{0,16})?( status[<=,0-9]{0,8})?",
    ) {
        let _ = spec::probe(&text);
    }
}

#[test]
fn target_spec_parsing_is_linear() {
    let parse = |bytes: &[u8]| {
        let _ = spec::probe(&String::from_utf8_lossy(bytes));
    };
    assert_linear(
        |n| repeat("http://127.0.0.1:1/", "a/", n, " status=200"),
        parse,
    );
    assert_linear(
        |n| repeat("http://127.0.0.1:1/", "a", n, " status=200,"),
        parse,
    );
    assert_linear(|n| repeat("tcp://", "a.", n, "a:1"), parse);
    assert_linear(|n| repeat("http://[", ":", n, "]:1/"), parse);
    assert_linear(
        |n| repeat("http://127.0.0.1:1/ status=", "200,", n, "200"),
        parse,
    );
}

// ---------------------------------------------------------------------------------------------
// The mount table (not outside input, but parsed from text all the same).

proptest! {
    #[test]
    fn mountinfo_lines_never_panic(
        root in "[/a-z\\\\0-9]{0,12}",
        point in "[/a-z\\\\0-9]{0,12}",
        tail in "[ -~]{0,30}",
    ) {
        let _ = mounts::parse(&format!("1 2 0:1 {root} {point} rw - {tail}\n"));
    }
}

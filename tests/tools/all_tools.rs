//! What every tool shares, checked over all of them: the help layout and its width, the build
//! identity in `--version`, and the form of usage errors.

use crate::common::*;

const MULTICALL: &str = "emulator-tools";
const WIDTH: usize = 80;

/// Every tool, as the multicall binary lists it, and the multicall binary itself.
fn every_tool() -> Vec<String> {
    let run = tool(MULTICALL).arg("--list").run();
    run.success();
    let mut tools: Vec<String> = run.stdout_str().lines().map(str::to_string).collect();
    assert_eq!(tools.len(), 12, "{tools:?}");
    tools.push(MULTICALL.to_string());
    tools
}

/// No line of `-h` or `--help` is wider than a serial console, whatever the terminal: the
/// tests run without one, where the help is wrapped at 80.
#[test]
fn no_help_line_is_wider_than_80_columns() {
    for name in every_tool() {
        for flag in ["-h", "--help"] {
            let run = tool(&name).arg(flag).run();
            run.success().stderr_is("");
            let text = run.stdout_str();
            for (number, line) in text.lines().enumerate() {
                assert!(
                    line.chars().count() <= WIDTH,
                    "{name} {flag}, line {}: {} columns:\n{line}",
                    number + 1,
                    line.chars().count()
                );
            }
        }
    }
}

/// One layout: the one-line description, the usage, the options, then the Environment and
/// Exit status sections, in that order, in `-h` and `--help` alike.
#[test]
fn every_help_has_the_same_sections_in_the_same_order() {
    for name in every_tool() {
        for flag in ["-h", "--help"] {
            let run = tool(&name).arg(flag).run();
            run.success();
            let text = run.stdout_str();
            let at = |heading: &str| {
                text.find(heading)
                    .unwrap_or_else(|| panic!("{name} {flag}: no {heading:?}:\n{text}"))
            };
            // log-provision takes no option: every argument is its message.
            let options = if name == "log-provision" {
                "\nArguments:\n"
            } else {
                "\nOptions:\n"
            };
            let order = [
                at("\nUsage: "),
                at(options),
                at("\nEnvironment:\n"),
                at("\nExit status:\n"),
            ];
            assert!(
                order.is_sorted(),
                "{name} {flag}: sections out of order:\n{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with("  2 ") && l.contains("bad usage")),
                "{name} {flag}: exit status 2:\n{text}"
            );
            assert!(
                !text.contains("[env: "),
                "{name} {flag}: variables go in Environment"
            );
            let first = text.lines().next().unwrap_or_default();
            assert!(
                !first.is_empty() && first.len() <= WIDTH,
                "{name} {flag}: the description first:\n{text}"
            );
        }
    }
}

/// The variables an option reads are listed under Environment, with the other spelling.
#[test]
fn environment_lists_the_knobs_of_the_options() {
    let text = tool("wait-for-deps").arg("--help").run().stdout_str();
    let env = &text[text.find("\nEnvironment:\n").unwrap()..];
    for needle in [
        "STACK_DEPS_TIMEOUT",
        "STACK_DEPS_CONTAINER",
        "STACK_PROVISION_LOG_FILE",
        "DOCKER_HOST",
        "HEXCLAVE_*",
    ] {
        assert!(env.contains(needle), "{needle}:\n{env}");
    }
    let text = tool("mount-host-fs").arg("-h").run().stdout_str();
    assert!(text.contains("\nEnvironment:\n  none\n"), "{text}");
}

/// Durations show their default with a unit, all in the same form.
#[test]
fn duration_defaults_carry_their_unit() {
    for name in every_tool() {
        let text = tool(&name).arg("--help").run().stdout_str();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("<DURATION>") {
            rest = &rest[at + 1..];
            let next_flag = rest.find("\n  -").unwrap_or(rest.len());
            let option = &rest[..next_flag];
            if let Some(d) = option.find("[default: ") {
                let value = &option[d + 10..option[d..].find(']').map_or(option.len(), |e| d + e)];
                assert!(
                    value.ends_with('s') || value.ends_with('m') || value.ends_with('h'),
                    "{name}: default {value:?} without a unit"
                );
            }
        }
    }
}

/// `--version` names the commit the binary was built from, with `-dirty` when the tree
/// differed; `-V` the version and commit on one line.
#[test]
fn version_shows_the_commit_target_and_profile() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let head = match head {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => {
            eprintln!("skipped the commit check: not a git checkout, or no git");
            String::new()
        }
    };
    for name in every_tool() {
        let run = tool(&name).arg("--version").run();
        run.success().stderr_is("");
        let text = run.stdout_str();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], format!("{name} {}", env!("CARGO_PKG_VERSION")));
        let commit = lines[1].strip_prefix("commit:  ").expect("commit line");
        if !head.is_empty() {
            assert_eq!(commit.trim_end_matches("-dirty"), head, "{name}: {text}");
        }
        assert!(lines[2].starts_with("target:  "), "{text}");
        assert!(lines[3].starts_with("profile: "), "{text}");
        tool(&name)
            .arg("-V")
            .run()
            .success()
            .stdout_is(format!("{name} {} ({commit})\n", env!("CARGO_PKG_VERSION")));
    }
}

/// Every usage error starts with the tool's name and ends with the same hint; exit 2.
#[test]
fn usage_errors_name_the_tool_and_end_with_one_hint() {
    for name in every_tool() {
        if name == "log-provision" || name == "log-provision-stream" {
            continue; // every argument is the message, or the prefix
        }
        let run = tool(&name).arg("--no-such-flag").run();
        run.code_is(2).stdout_is("");
        let text = run.stderr_str();
        assert!(
            text.starts_with(&format!("{name}: unexpected argument '--no-such-flag'")),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("Try '{name} --help' for more information.\n")),
            "{text}"
        );
        assert!(!text.contains("For more information, try"), "{text}");
    }
}

/// A bad value from the environment names the tool, the flag and the variable.
#[test]
fn a_bad_variable_is_a_usage_error_of_the_tool() {
    tool("run-build-migrations")
        .env("STACK_DEPS_TIMEOUT", "25min")
        .run()
        .code_is(2)
        .stdout_is("")
        .stderr_is(
            "run-build-migrations: invalid value '25min' for '--deps-timeout <DURATION>' (from \
             the environment variable STACK_DEPS_TIMEOUT): unknown unit 'min' (use ms, s, m or \
             h)\nTry 'run-build-migrations --help' for more information.\n",
        );
}

/// A mistyped flag or tool name gets a suggestion.
#[test]
fn typos_get_suggestions() {
    tool("wait-for-deps")
        .args(["--timout", "3"])
        .run()
        .code_is(2)
        .stderr_contains("a similar argument exists: '--timeout'");
    tool(MULTICALL)
        .arg("wait-for-dep")
        .run()
        .code_is(2)
        .stdout_is("")
        .stderr_is(
            "emulator-tools: unknown tool \"wait-for-dep\": did you mean wait-for-deps? \
             `emulator-tools --list` prints the tools\n\
             Try 'emulator-tools --help' for more information.\n",
        );
}

/// A logged tool's error shows once on a terminal that is both stdout and stderr (as the log
/// line on stdout), and on both streams when they go elsewhere (a pipe each, as under
/// cloud-init), with the log line unchanged.
#[test]
fn a_logged_error_shows_once_on_a_terminal() {
    use std::io::Read;
    let args = ["--docker", "/nonexistent/docker"];
    let piped = tool("run-build-migrations").args(args).run();
    piped.code_is(1);
    assert!(
        piped
            .stdout_str()
            .contains("STACK_PROVISION: run-build-migrations: ERROR: running `/nonexistent/docker"),
        "{}",
        piped.stdout_str()
    );
    piped.stderr_contains("run-build-migrations: running `/nonexistent/docker");

    let (mut master, slave) = pty();
    let mut cmd = std::process::Command::new(tool_path("run-build-migrations"));
    cmd.args(args)
        .env_remove("STACK_PROVISION_LOG_FILE")
        .env_remove("HEXCLAVE_PROVISION_LOG_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let status = cmd.status().unwrap();
    drop(cmd);
    assert_eq!(status.code(), Some(1));
    let mut screen = Vec::new();
    // Reading the master after the slave's last holder closed it ends with EIO on Linux.
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        screen.extend_from_slice(&buf[..n]);
    }
    let screen = String::from_utf8_lossy(&screen);
    assert_eq!(
        screen.matches("/nonexistent/docker ps").count(),
        1,
        "once on the terminal:\n{screen}"
    );
}

/// `make man` renders one page per tool (and emulator-tools) with the help's sections, and
/// man(1) reads them.
#[test]
fn man_pages_render_for_every_tool() {
    let dir = scratch();
    let run = tool("render-man-pages")
        .arg("--output")
        .arg(dir.path())
        .run();
    run.success().stderr_is("");
    for name in every_tool() {
        let page = dir.path().join(format!("{name}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH "),
            "{name}"
        );
        assert!(text.contains("Exit status:"), "{name}");
        if has_program("man") {
            let shown = std::process::Command::new("man")
                .arg("-l")
                .arg(&page)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(shown.status.success(), "man -l {}", page.display());
            let shown = String::from_utf8_lossy(&shown.stdout);
            assert!(shown.contains("Environment:"), "{name}:\n{shown}");
        }
    }
}

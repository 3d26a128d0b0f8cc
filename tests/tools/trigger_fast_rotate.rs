//! trigger-fast-rotate: strict stdin, docker's exact arguments, values only in its environment.
//!
//! Input handling is checked against a stand-in docker client (a fixture script that records its
//! arguments and environment), so it needs no engine; the whole path is checked against the
//! machine's engine with a busybox container whose rotate-secrets records what it received.
//! These replace the original's `cat > "$tmp"` + `source "$tmp"`, which ran stdin as root and
//! left the secrets in a file under /var/run while doing so.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::docker::{self, Container, ImageBuilder};
use crate::common::*;

const TOOL: &str = "trigger-fast-rotate";
/// The line after every usage error (stdin rejected is one: exit 2).
const HINT: &str = "Try 'trigger-fast-rotate --help' for more information.\n";
const KEYS: [&str; 4] = [
    "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
    "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY",
    "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY",
    "CRON_SECRET",
];
const ROTATE: &str = "/usr/local/bin/rotate-secrets";
/// Where the rotate-secrets double records its environment, inside the container.
const RECORD: &str = "/tmp/rotate-secrets.env";
/// Every accepted name, as the messages list them.
const ACCEPTED: &str = "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY (or \
    STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY), STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY \
    (or STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY), \
    STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY, CRON_SECRET";
const EXPECTED_ONE_OF: &str = "expected one of STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY (or \
    STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY), STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY \
    (or STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY), \
    STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY, CRON_SECRET";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/trigger-fast-rotate")
        .join(name)
}

/// 64 random hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Four fresh values, one per key.
struct Secrets([String; 4]);

impl Secrets {
    fn new() -> Secrets {
        Secrets([random_hex(), random_hex(), random_hex(), random_hex()])
    }

    /// `KEY=value` lines in the order of [`KEYS`].
    fn lines(&self) -> Vec<String> {
        KEYS.iter()
            .zip(&self.0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// What the host writes: four lines, no trailing newline.
    fn input(&self) -> String {
        self.lines().join("\n")
    }

    fn values(&self) -> &[String; 4] {
        &self.0
    }

    /// No value appears in any word of `argv`.
    fn assert_not_in(&self, argv: &[String]) {
        for value in self.values() {
            assert!(
                !argv.iter().any(|a| a.contains(value.as_str())),
                "a secret value in argv {argv:?}"
            );
        }
    }
}

/// The tool with the stand-in docker client, recording into a scratch directory.
struct FakeDocker {
    out: tempfile::TempDir,
}

impl FakeDocker {
    fn new() -> FakeDocker {
        FakeDocker { out: scratch() }
    }

    fn tool(&self) -> Cmd {
        tool(TOOL)
            .arg("--docker")
            .arg(fixture("fake-docker"))
            .env("FAKE_DOCKER_OUT", self.out.path())
    }

    /// The arguments docker got, or `None` when it never ran.
    fn argv(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(self.out.path().join("argv")).ok()?;
        Some(text.lines().map(str::to_string).collect())
    }

    fn env(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.out.path().join("env")).unwrap();
        text.lines().map(str::to_string).collect()
    }
}

#[test]
fn execs_the_originals_command_with_the_values_in_its_environment() {
    let fake = FakeDocker::new();
    let secrets = Secrets::new();
    fake.tool()
        .stdin(secrets.input())
        .run()
        .success()
        .stdout_is("")
        .stderr_is("");
    let argv = fake.argv().expect("docker ran");
    // The original's arguments, then the Stack Auth names of the renamed keys.
    assert_eq!(argv[..9], argv_with_both_names("stack")[..9]);
    assert_eq!(argv, argv_with_both_names("stack"));
    let env = fake.env();
    for line in secrets.lines() {
        assert!(env.contains(&line), "{line} in docker's environment");
    }
    secrets.assert_not_in(&argv);
}

#[test]
fn status_of_docker_is_ours_and_container_is_configurable() {
    for status in [0, 3, 125] {
        let fake = FakeDocker::new();
        fake.tool()
            .args(["--container", "other-stack"])
            .env("FAKE_DOCKER_STATUS", status.to_string())
            .stdin(Secrets::new().input())
            .run()
            .code_is(status)
            .stderr_is("");
        assert_eq!(fake.argv().unwrap(), argv_with_both_names("other-stack"));
    }
}

#[test]
fn trailing_newline_crlf_blank_lines_and_any_order_are_accepted() {
    let secrets = Secrets::new();
    let mut reversed = secrets.lines();
    reversed.reverse();
    for input in [
        secrets.input() + "\n",
        secrets.input().replace('\n', "\r\n") + "\r\n",
        format!("\n{}\n\n", reversed.join("\n")),
    ] {
        let fake = FakeDocker::new();
        fake.tool().stdin(&input).run().success().stderr_is("");
        let env = fake.env();
        for line in secrets.lines() {
            assert!(env.contains(&line), "{line} for input {input:?}");
        }
    }
}

/// Each case: the input, and the exact message. Docker must not run, the exit status is 2, and
/// no value appears in the message.
#[test]
fn bad_input_is_refused_before_docker_runs() {
    let s = Secrets::new();
    let [pck, ssk, sak, cron] = s.values();
    let lines = s.lines();
    let pwned = format!("/tmp/{}", docker::unique_name("pwned"));
    let with_line4 = |line4: &str| format!("{}\n{}\n{}\n{line4}", lines[0], lines[1], lines[2]);
    let prefix = "trigger-fast-rotate: ";
    let cases: Vec<(String, String)> = vec![
        (
            String::new(),
            format!("stdin: missing {ACCEPTED} (expected one line for each of {ACCEPTED})"),
        ),
        (
            lines[..3].join("\n"),
            format!("stdin: missing CRON_SECRET (expected one line for each of {ACCEPTED})"),
        ),
        (
            lines[1..].join("\n"),
            format!(
                "stdin: missing STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY (or \
                 STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY) (expected one line for each \
                 of {ACCEPTED})"
            ),
        ),
        (
            format!("{}\n{}={pck}", s.input(), KEYS[1]),
            "stdin line 5: STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY is given a second time \
             (first on line 2)"
                .to_string(),
        ),
        (
            format!("{}\nFOO={ssk}", s.input()),
            format!("stdin line 5: unknown key `FOO`; {EXPECTED_ONE_OF}"),
        ),
        (
            with_line4(&format!("cron_secret={cron}")),
            format!("stdin line 4: unknown key `cron_secret`; {EXPECTED_ONE_OF}"),
        ),
        (
            format!("{}\nX=$(touch {pwned})", s.input()),
            format!("stdin line 5: unknown key `X`; {EXPECTED_ONE_OF}"),
        ),
        (
            with_line4(&format!("CRON_SECRET=$(touch {pwned})")),
            "stdin line 4: CRON_SECRET: value must be 64 hexadecimal characters; character 1 \
             is not one (the value is not shown)"
                .to_string(),
        ),
        (
            with_line4(&format!("CRON_SECRET=`touch {pwned}`")),
            "stdin line 4: CRON_SECRET: value must be 64 hexadecimal characters; character 1 \
             is not one (the value is not shown)"
                .to_string(),
        ),
        (
            with_line4(&format!("export CRON_SECRET={cron}")),
            format!(
                "stdin line 4: the text before `=` is not a known key and is not shown; \
                 {EXPECTED_ONE_OF}"
            ),
        ),
        (
            with_line4(&format!("{sak}={cron}")),
            format!(
                "stdin line 4: the text before `=` is not a known key and is not shown; \
                 {EXPECTED_ONE_OF}"
            ),
        ),
        (
            with_line4(cron),
            "stdin line 4: expected KEY=VALUE, found no `=` (the line is not shown: it may \
             hold a secret)"
                .to_string(),
        ),
        (
            with_line4(&format!("CRON_SECRET={}", &cron[1..])),
            "stdin line 4: CRON_SECRET: value must be 64 hexadecimal characters, found 63"
                .to_string(),
        ),
        (
            with_line4(&format!("CRON_SECRET={}g{}", &cron[..9], &cron[10..])),
            "stdin line 4: CRON_SECRET: value must be 64 hexadecimal characters; character 10 \
             is not one (the value is not shown)"
                .to_string(),
        ),
        (
            with_line4(&format!("CRON_SECRET=\"{cron}\"")),
            "stdin line 4: CRON_SECRET: value must be 64 hexadecimal characters; character 1 \
             is not one (the value is not shown)"
                .to_string(),
        ),
        (
            with_line4(&format!("CRON_SECRET = {cron}")),
            format!(
                "stdin line 4: the text before `=` is not a known key and is not shown; \
                 {EXPECTED_ONE_OF}"
            ),
        ),
    ];
    for (input, message) in cases {
        let fake = FakeDocker::new();
        let run = fake.tool().stdin(&input).run();
        run.code_is(2)
            .stdout_is("")
            .stderr_is(format!("{prefix}{message}\n{HINT}"));
        assert_eq!(fake.argv(), None, "docker ran for {input:?}");
        for value in s.values() {
            assert!(
                !run.stderr_str().contains(value.as_str()),
                "value shown for {input:?}"
            );
        }
    }
    assert!(!Path::new(&pwned).exists(), "input was executed");
}

#[test]
fn oversized_input_is_refused() {
    let fake = FakeDocker::new();
    fake.tool()
        .stdin(vec![b'\n'; 64 * 1024 + 1])
        .run()
        .code_is(2)
        .stderr_is(
            "trigger-fast-rotate: stdin: more than 65536 bytes; expected four KEY=VALUE lines\n\
             Try 'trigger-fast-rotate --help' for more information.\n",
        );
    assert_eq!(fake.argv(), None);
}

#[test]
fn missing_docker_program_is_a_clear_error() {
    tool(TOOL)
        .args(["--docker", "/nonexistent/docker"])
        .stdin(Secrets::new().input())
        .run()
        .code_is(127)
        .stdout_is("")
        .stderr_is(
            "trigger-fast-rotate: running `/nonexistent/docker exec \
             -e STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
             -e STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY \
             -e STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY \
             -e CRON_SECRET -e STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
             -e STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY stack /usr/local/bin/rotate-secrets`: \
             No such file or directory (os error 2) (is `/nonexistent/docker` installed and on \
             PATH?)\n",
        );
}

/// `K=V` lines of an `env` dump.
fn env_lines(dump: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(dump)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Where a secret could have been written: every regular file under `trees` (not crossing into
/// other filesystems, not following links), and the regular files directly in `dirs` changed
/// since `since` (the shared `/tmp` and `/run` are not ours to read whole). Returns those holding
/// any of `needles`.
fn files_containing(
    trees: &[&Path],
    dirs: &[&Path],
    since: std::time::SystemTime,
    needles: &[&str],
) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut candidates = Vec::new();
    for root in trees {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let device = meta.dev();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) if meta.dev() == device && meta.is_dir() => pending.push(path),
                    Ok(meta) if meta.dev() == device && meta.is_file() => candidates.push(path),
                    _ => {}
                }
            }
        }
    }
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let changed = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified >= since);
            if changed && entry.file_type().is_ok_and(|t| t.is_file()) {
                candidates.push(entry.path());
            }
        }
    }
    candidates.retain(|path| {
        std::fs::read(path).is_ok_and(|data| {
            needles
                .iter()
                .any(|n| memchr::memmem::find(&data, n.as_bytes()).is_some())
        })
    });
    candidates
}

#[test]
fn rotates_secrets_in_a_real_container() {
    require!(docker::ready(), docker::READY);
    let image = ImageBuilder::new("rotate")
        .file(
            ROTATE,
            include_bytes!("../fixtures/trigger-fast-rotate/rotate-secrets"),
            0o755,
        )
        .line(r#"CMD ["sleep", "86400"]"#)
        .build();
    let stack = Container::run("stack", &image, &[], &[]);

    // What rotate-secrets sees without us: the container's own environment.
    assert!(stack.exec(&[ROTATE]).status.success());
    let baseline = env_lines(&stack.read_file(RECORD).expect("baseline record"));
    stack.remove_file(RECORD);
    let arrived = || -> Vec<String> {
        let mut lines = env_lines(&stack.read_file(RECORD).expect("rotate-secrets ran"));
        lines.retain(|l| !baseline.contains(l));
        lines.sort();
        lines
    };
    let sorted = Secrets::under_both_names;

    let started = std::time::SystemTime::now();
    let work = scratch();
    let tmpdir = scratch();
    let rotate = |input: &str| {
        tool(TOOL)
            .args(["--container", &stack.name])
            .current_dir(work.path())
            .env("TMPDIR", tmpdir.path())
            .env("HEXCLAVE_TEST_NOT_FOR_THE_CONTAINER", "leaked")
            .env("DOCKER_HOST", docker::host())
            .stdin(input)
            .run()
    };

    let first = Secrets::new();
    rotate(&first.input()).success().stdout_is("").stderr_is("");
    assert_eq!(
        arrived(),
        sorted(&first),
        "exactly the four, with their values, the renamed ones under both names"
    );

    // The status of rotate-secrets is ours.
    stack.write_file("/rotate-status", b"3\n");
    let second = Secrets::new();
    rotate(&(second.input().replace('\n', "\r\n") + "\r\n"))
        .code_is(3)
        .stderr_is("");
    assert_eq!(arrived(), sorted(&second));
    stack.remove_file("/rotate-status");

    // An injection attempt is refused and nothing runs.
    stack.remove_file(RECORD);
    let pwned = format!("/tmp/{}", docker::unique_name("pwned"));
    let third = Secrets::new();
    rotate(&format!("{}\nX=$(touch {pwned})", third.input()))
        .code_is(2)
        .stderr_is(format!(
            "trigger-fast-rotate: stdin line 5: unknown key `X`; {EXPECTED_ONE_OF}\n{HINT}"
        ));
    let injected = third
        .input()
        .replace(&third.values()[3], &format!("$(touch {pwned})"));
    rotate(&injected).code_is(2);
    assert_eq!(stack.read_file(RECORD), None, "rotate-secrets must not run");
    assert!(!Path::new(&pwned).exists());
    assert!(!stack.exec(&["test", "-e", &pwned]).status.success());

    // No secret on disk: not in the tool's working directory or TMPDIR, nor directly in /tmp or
    // /run and /var/run (where the original wrote them).
    let mut needles: Vec<&str> = Vec::new();
    for secrets in [&first, &second, &third] {
        needles.extend(secrets.values().iter().map(String::as_str));
    }
    let leaks = files_containing(
        &[work.path(), tmpdir.path()],
        &[Path::new("/tmp"), Path::new("/run"), Path::new("/var/run")],
        started,
        &needles,
    );
    assert!(leaks.is_empty(), "files holding a secret: {leaks:?}");
}

#[test]
fn help_and_version() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    for text in [
        "Usage: trigger-fast-rotate [OPTIONS]",
        "\n  CRON_SECRET=<64 hex>\n",
        "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY and\n",
        "      -e STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY \\\n      stack /usr/local/bin/rotate-secrets\n",
        "different values are refused, naming both lines",
        "[default: stack]",
        "[default: docker]",
        "127  docker was not found",
    ] {
        assert!(help_contains(&run.stdout_str(), text), "{text}");
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("trigger-fast-rotate"));
}

#[test]
fn bad_flag_is_a_usage_error_and_nothing_runs() {
    let fake = FakeDocker::new();
    fake.tool()
        .arg("--contaner")
        .stdin(Secrets::new().input())
        .run()
        .code_is(2)
        .stdout_is("")
        .stderr_contains("unexpected argument '--contaner'");
    assert_eq!(fake.argv(), None);
}

// ---------------------------------------------------------------------------------------------
// Both generations of names. The released Stack Auth host sends the publishable client key and
// the secret server key as STACK_SEED_INTERNAL_PROJECT_*, the Hexclave user-data names them
// STACK_INTERNAL_PROJECT_*; rotate-secrets of either generation must find them.

/// The renamed keys: (Hexclave name, Stack Auth name), in the order of [`KEYS`].
const RENAMED: [(&str, &str); 2] = [
    (
        "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
        "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
    ),
    (
        "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY",
        "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
    ),
];

impl Secrets {
    /// What the released host writes: its names, four lines, no trailing newline.
    fn released_host_input(&self) -> String {
        let [pck, ssk, sak, cron] = self.values();
        format!(
            "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={pck}\n\
             STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY={ssk}\n\
             STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY={sak}\n\
             CRON_SECRET={cron}"
        )
    }

    /// Every value under every name it goes by, sorted: what rotate-secrets must receive.
    fn under_both_names(&self) -> Vec<String> {
        let [pck, ssk, sak, cron] = self.values();
        let mut lines = vec![
            format!("{}={pck}", RENAMED[0].0),
            format!("{}={pck}", RENAMED[0].1),
            format!("{}={ssk}", RENAMED[1].0),
            format!("{}={ssk}", RENAMED[1].1),
            format!("{}={sak}", KEYS[2]),
            format!("{}={cron}", KEYS[3]),
        ];
        lines.sort();
        lines
    }
}

/// docker's arguments: the original's four names, then the two Stack Auth names.
fn argv_with_both_names(container: &str) -> Vec<String> {
    let mut argv = vec!["exec".to_string()];
    for key in KEYS.iter().chain(RENAMED.iter().map(|(_, old)| old)) {
        argv.extend(["-e".to_string(), key.to_string()]);
    }
    argv.extend([container.to_string(), ROTATE.to_string()]);
    argv
}

/// The lines of `env` naming one of the six, sorted.
fn secret_lines(env: &[String]) -> Vec<String> {
    let names: Vec<&str> = KEYS
        .iter()
        .copied()
        .chain(RENAMED.iter().map(|(_, old)| *old))
        .collect();
    let mut lines: Vec<String> = env
        .iter()
        .filter(|l| {
            l.split_once('=')
                .is_some_and(|(name, _)| names.contains(&name))
        })
        .cloned()
        .collect();
    lines.sort();
    lines
}

#[test]
fn the_released_hosts_payload_reaches_docker_under_both_names() {
    let secrets = Secrets::new();
    let input = secrets.released_host_input();
    assert!(!input.ends_with('\n') && input.lines().count() == 4);
    for status in [0, 3] {
        let fake = FakeDocker::new();
        let run = fake
            .tool()
            .env("FAKE_DOCKER_STATUS", status.to_string())
            .stdin(&input)
            .run();
        run.code_is(status).stdout_is("").stderr_is("");
        let argv = fake.argv().expect("docker ran");
        assert_eq!(argv, argv_with_both_names("stack"));
        assert_eq!(secret_lines(&fake.env()), secrets.under_both_names());
        secrets.assert_not_in(&argv);
    }
}

#[test]
fn the_renamed_spellings_reach_docker_under_both_names() {
    let secrets = Secrets::new();
    let fake = FakeDocker::new();
    fake.tool()
        .stdin(secrets.input())
        .run()
        .success()
        .stdout_is("")
        .stderr_is("");
    let argv = fake.argv().expect("docker ran");
    assert_eq!(argv, argv_with_both_names("stack"));
    assert_eq!(secret_lines(&fake.env()), secrets.under_both_names());
}

#[test]
fn both_names_of_a_key_with_equal_values_are_accepted() {
    let secrets = Secrets::new();
    let [pck, ssk, ..] = secrets.values();
    let input = format!(
        "{}\n{}={pck}\n{}={ssk}\n",
        secrets.input(),
        RENAMED[0].1,
        RENAMED[1].1
    );
    let fake = FakeDocker::new();
    fake.tool().stdin(&input).run().success().stderr_is("");
    assert_eq!(fake.argv().unwrap(), argv_with_both_names("stack"));
    assert_eq!(secret_lines(&fake.env()), secrets.under_both_names());
}

#[test]
fn both_names_of_a_key_with_different_values_are_refused_naming_both_lines() {
    let s = Secrets::new();
    let other = Secrets::new();
    let [pck, ssk, sak, cron] = s.values();
    let cases = [
        (
            format!(
                "{}={pck}\n{}={ssk}\n{}={sak}\nCRON_SECRET={cron}\n{}={}",
                RENAMED[0].1,
                RENAMED[1].0,
                KEYS[2],
                RENAMED[0].0,
                other.values()[0]
            ),
            "stdin line 5: STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY has a different value \
             than STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY on line 1; they are the \
             Hexclave and the Stack Auth name of one key: send one of them, or both with the \
             same value (the values are not shown)",
        ),
        (
            format!(
                "{}={ssk}\n{}\n{}={}",
                RENAMED[1].0,
                s.released_host_input()
                    .lines()
                    .filter(|l| !l.starts_with(RENAMED[1].1))
                    .collect::<Vec<_>>()
                    .join("\n"),
                RENAMED[1].1,
                other.values()[1]
            ),
            "stdin line 5: STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY has a different value \
             than STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY on line 1; they are the Hexclave and \
             the Stack Auth name of one key: send one of them, or both with the same value (the \
             values are not shown)",
        ),
    ];
    for (input, message) in cases {
        let fake = FakeDocker::new();
        let run = fake.tool().stdin(&input).run();
        run.code_is(2)
            .stdout_is("")
            .stderr_is(format!("trigger-fast-rotate: {message}\n{HINT}"));
        assert_eq!(fake.argv(), None, "docker ran for {input:?}");
        for value in s.values().iter().chain(other.values()) {
            assert!(!run.stderr_str().contains(value.as_str()), "value shown");
        }
    }
}

/// The fake emulator's rotate-secrets, in a running `stack` container of a throwaway engine,
/// receives every value under both names, from the released host's payload and from the
/// Hexclave one, and its status is ours.
#[test]
fn both_spellings_reach_the_fake_emulators_rotate_secrets() {
    use crate::common::fake_emulator;
    use crate::common::sandbox::{self, Sandbox};

    require!(
        sandbox::engine_available(),
        "a sandbox with a docker engine"
    );
    let mut sb = Sandbox::with_network();
    sb.start_engine();
    fake_emulator::build(|a| sb.docker(a), fake_emulator::IMAGE, &[]);
    sb.docker_ok([
        "run",
        "-d",
        "--name",
        "stack",
        "--network",
        "host",
        fake_emulator::IMAGE,
    ]);
    const RECORD: &str = "/var/run/rotate-secrets.env";
    let record = || -> Vec<String> {
        let text = sb.docker_ok(["exec", "stack", "cat", RECORD]);
        text.lines().map(str::to_string).collect()
    };
    for label in ["released host", "hexclave"] {
        let secrets = Secrets::new();
        let input = match label {
            "released host" => secrets.released_host_input(),
            _ => secrets.input(),
        };
        sb.tool(TOOL)
            .stdin(&input)
            .run()
            .success()
            .stdout_is("")
            .stderr_is("");
        assert_eq!(
            secret_lines(&record()),
            secrets.under_both_names(),
            "{label}"
        );
    }
    // rotate-secrets' own status is ours.
    sb.docker_ok([
        "exec",
        "stack",
        "sh",
        "-c",
        "echo 3 > /var/run/rotate-secrets.status",
    ]);
    let secrets = Secrets::new();
    sb.tool(TOOL)
        .stdin(secrets.released_host_input())
        .run()
        .code_is(3)
        .stderr_is("");
    assert_eq!(secret_lines(&record()), secrets.under_both_names());
}

/// Issue 10, T1: a container name is checked against docker's rule before docker runs, so it
/// can never reach docker as an option.
#[test]
fn a_container_name_that_is_no_name_is_a_usage_error_and_nothing_runs() {
    let fake = FakeDocker::new();
    for name in ["--privileged", "", "-it", "a b", "_x", "stack;id"] {
        fake.tool()
            .arg(format!("--container={name}"))
            .stdin(Secrets::new().input())
            .run()
            .code_is(2)
            .stdout_is("")
            .stderr_contains(&format!(
                "invalid value '{name}' for '--container <NAME>': not a container name: a \
                 container name is a letter or digit followed by letters, digits, '_', '.' and \
                 '-' (docker's rule)"
            ));
        assert_eq!(fake.argv(), None, "{name:?}");
    }
    // Every name docker accepts still works.
    fake.tool()
        .arg("--container=stack-2.b_c")
        .stdin(Secrets::new().input())
        .run()
        .success();
    assert_eq!(fake.argv(), Some(argv_with_both_names("stack-2.b_c")));
}

/// On a terminal, the tool says it is reading stdin (on stderr) instead of waiting silently;
/// from a pipe, as the host feeds it, it says nothing.
#[test]
fn says_it_reads_stdin_when_stdin_is_a_terminal() {
    let (master, slave) = pty();
    let child = std::process::Command::new(tool_path(TOOL))
        .args(["--docker", "/nonexistent/docker"])
        .stdin(slave)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // End of input on the terminal: Ctrl-D at the start of a line.
    let mut input = master;
    std::io::Write::write_all(&mut input, b"\x04").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "trigger-fast-rotate: reading the four KEY=value lines from stdin (the terminal); \
             end with Ctrl-D\n"
        ),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // From a pipe: only the error about the (empty) input.
    let run = tool(TOOL).args(["--docker", "/nonexistent/docker"]).run();
    run.code_is(2);
    assert!(
        !run.stderr_str().contains("reading the four"),
        "{}",
        run.stderr_str()
    );
}

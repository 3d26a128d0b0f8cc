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
const KEYS: [&str; 4] = [
    "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
    "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY",
    "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY",
    "CRON_SECRET",
];
const ROTATE: &str = "/usr/local/bin/rotate-secrets";
/// Where the rotate-secrets double records its environment, inside the container.
const RECORD: &str = "/tmp/rotate-secrets.env";
const EXPECTED_ONE_OF: &str = "expected one of STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY, \
    STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY, STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY, \
    CRON_SECRET";

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

fn originals_argv(container: &str) -> Vec<String> {
    let mut argv = vec!["exec".to_string()];
    for key in KEYS {
        argv.extend(["-e".to_string(), key.to_string()]);
    }
    argv.extend([container.to_string(), ROTATE.to_string()]);
    argv
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
    assert_eq!(argv, originals_argv("stack"));
    let env = fake.env();
    for line in secrets.lines() {
        assert!(env.contains(&line), "{line} in docker's environment");
    }
    for value in secrets.values() {
        assert!(
            !argv.iter().any(|a| a.contains(value.as_str())),
            "no value in argv"
        );
    }
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
        assert_eq!(fake.argv().unwrap(), originals_argv("other-stack"));
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
            format!(
                "stdin: missing {} (expected one line for each of {})",
                KEYS.join(", "),
                KEYS.join(", ")
            ),
        ),
        (
            lines[..3].join("\n"),
            format!(
                "stdin: missing CRON_SECRET (expected one line for each of {})",
                KEYS.join(", ")
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
            .stderr_is(format!("{prefix}{message}\n"));
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
            "trigger-fast-rotate: stdin: more than 65536 bytes; expected four KEY=VALUE lines\n",
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
             -e CRON_SECRET stack /usr/local/bin/rotate-secrets`: \
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

/// Regular files under `roots` (not crossing into other filesystems, not following links) that
/// contain any of `needles`.
fn files_containing(roots: &[&Path], needles: &[&str]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for root in roots {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let device = meta.dev();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.dev() != device {
                    continue;
                }
                if meta.is_dir() {
                    pending.push(path);
                } else if meta.is_file() && meta.len() <= 64 << 20 {
                    let Ok(data) = std::fs::read(&path) else {
                        continue;
                    };
                    if needles
                        .iter()
                        .any(|n| memchr::memmem::find(&data, n.as_bytes()).is_some())
                    {
                        found.push(path);
                    }
                }
            }
        }
    }
    found
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
    let sorted = |secrets: &Secrets| {
        let mut lines = secrets.lines();
        lines.sort();
        lines
    };

    let work = scratch();
    let rotate = |input: &str| {
        tool(TOOL)
            .args(["--container", &stack.name])
            .current_dir(work.path())
            .env("HEXCLAVE_TEST_NOT_FOR_THE_CONTAINER", "leaked")
            .stdin(input)
            .run()
    };

    let first = Secrets::new();
    rotate(&first.input()).success().stdout_is("").stderr_is("");
    assert_eq!(
        arrived(),
        sorted(&first),
        "exactly the four, with their values"
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
            "trigger-fast-rotate: stdin line 5: unknown key `X`; {EXPECTED_ONE_OF}\n"
        ));
    let injected = third
        .input()
        .replace(&third.values()[3], &format!("$(touch {pwned})"));
    rotate(&injected).code_is(2);
    assert_eq!(stack.read_file(RECORD), None, "rotate-secrets must not run");
    assert!(!Path::new(&pwned).exists());
    assert!(!stack.exec(&["test", "-e", &pwned]).status.success());

    // No secret on disk: not in /tmp, /run (where the original wrote them), our working
    // directory or the tool's.
    let mut needles: Vec<&str> = Vec::new();
    for secrets in [&first, &second, &third] {
        needles.extend(secrets.values().iter().map(String::as_str));
    }
    let cwd = std::env::current_dir().unwrap();
    let leaks = files_containing(
        &[Path::new("/tmp"), Path::new("/run"), work.path(), &cwd],
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
        "-e CRON_SECRET stack /usr/local/bin/rotate-secrets\n",
        "[default: stack]",
        "[default: docker]",
        "127  docker was not found",
    ] {
        assert!(run.stdout_str().contains(text), "{text}");
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(format!(
            "trigger-fast-rotate {}\n",
            env!("CARGO_PKG_VERSION")
        ));
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
    assert_eq!(fake.argv(), Some(originals_argv("stack-2.b_c")));
}

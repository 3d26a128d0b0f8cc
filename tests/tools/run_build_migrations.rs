//! run-build-migrations against a throwaway engine and the fake emulator image.
//!
//! Each test runs in a sandbox (private mount and network namespaces) with its own dockerd, so
//! the deps' fixed ports are the sandbox's own and nothing touches the machine's engine. The
//! docker client is a recorder that logs every call's arguments before running the real one, so
//! the tests can check the original's exact `docker run` and `docker exec` arguments. The fixes
//! tested here replace the original's `docker run … stack-build-init` (which failed on a stale
//! container), its `mktemp` + `tail -200`, and its `set -e` exits that left the container
//! running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::sandbox::{self, Sandbox};
use crate::common::*;

const TOOL: &str = "run-build-migrations";
const CONTAINER: &str = "stack-build-init";
const NODE_FLAGS: &str = "--no-opt --no-wasm-tier-up --no-wasm-dynamic-tiering --no-wasm-code-gc";

/// The lines of a successful run that are the original's, in order (`init-services done` with
/// its seconds blanked).
const SUCCESS: [&str; 9] = [
    "Starting deps container...",
    "Waiting for deps (postgres, redis, clickhouse, minio, qstash)...",
    "Deps ready.",
    "Waiting for init-services.sh...",
    "init-services done (Ns).",
    "Running migrations...",
    "Migrations + seed complete.",
    "Stopping deps container...",
    "run-build-migrations done.",
];

fn recorder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/run-build-migrations/docker-recorder")
}

/// A sandbox with an engine, the fake emulator built as `stack-local-emulator` (plus `extra`
/// Dockerfile lines), env files, a log file and a docker recorder.
struct Setup {
    sb: Sandbox,
}

impl Setup {
    fn new(extra: &[&str], build_env: &str) -> Setup {
        let mut sb = Sandbox::with_network();
        sb.start_engine();
        crate::common::fake_emulator::build(|a| sb.docker(a), "stack-local-emulator", extra);
        std::fs::write(sb.path("build.env"), build_env).unwrap();
        std::fs::write(
            sb.path("computed.env"),
            "USE_INLINE_ENV_VARS=true\nBACKEND_PORT=8102\n",
        )
        .unwrap();
        Setup { sb }
    }

    fn log_path(&self) -> PathBuf {
        self.sb.path("provision.log")
    }

    fn tool(&self) -> Cmd {
        self.sb
            .tool(TOOL)
            .arg("--docker")
            .arg(recorder())
            .arg("--build-env")
            .arg(self.sb.path("build.env"))
            .arg("--computed-env")
            .arg(self.sb.path("computed.env"))
            .env("STACK_PROVISION_LOG_FILE", self.log_path())
            .env("RECORD_DOCKER_ARGV", self.sb.path("argv"))
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines that are the original's: not wait-for-deps' and not our additions.
    fn original_lines(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| {
                !l.starts_with("wait-for-deps: ") && !l.starts_with("run-build-migrations: ")
            })
            .map(|l| blank_seconds(&l))
            .collect()
    }

    /// Every docker call the tool made, as argument lists.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.sb.path("argv")).unwrap_or_default();
        text.split("---\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().map(str::to_string).collect())
            .collect()
    }

    fn containers(&self) -> Vec<String> {
        self.sb.containers()
    }

    #[track_caller]
    fn assert_container_gone(&self) {
        assert!(
            !self.containers().contains(&CONTAINER.to_string()),
            "{CONTAINER} left behind: {:?}",
            self.containers()
        );
    }
}

/// `init-services done (3s).` -> `init-services done (Ns).`
fn blank_seconds(line: &str) -> String {
    match line.strip_prefix("init-services done (") {
        Some(rest) if rest.ends_with("s).") => "init-services done (Ns).".to_string(),
        _ => line.to_string(),
    }
}

fn engine() -> bool {
    sandbox::engine_available()
}

#[test]
fn success_logs_the_originals_lines_in_order_and_removes_the_container() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(
        &[],
        "STACK_EMULATOR_BUILD_SNAPSHOT=1\nFAKE_NODE_ARGS_FILE=/data/postgres/node.args\n",
    );
    s.tool().run().success();
    assert_eq!(s.original_lines(), SUCCESS);

    // wait-for-deps' block sits between the deps lines, with every service in it once.
    let log = s.log();
    let start = log
        .iter()
        .position(|l| l.starts_with("Waiting for deps"))
        .unwrap();
    let end = log.iter().position(|l| l == "Deps ready.").unwrap();
    let block = &log[start + 1..end];
    assert_eq!(block[0], "wait-for-deps: starting dep wait (timeout=1500s)");
    assert!(
        block
            .last()
            .unwrap()
            .starts_with("wait-for-deps: all deps ready (")
    );
    let mut ready: Vec<&str> = block[1..block.len() - 1]
        .iter()
        .map(|l| {
            l.strip_prefix("wait-for-deps: ")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    ready.sort();
    assert_eq!(ready, ["clickhouse", "minio", "postgres", "qstash", "svix"]);
    assert!(
        !log.iter().any(|l| l.starts_with("run-build-migrations: ")),
        "{log:#?}"
    );

    // The original's docker arguments, word for word.
    let calls = s.calls();
    let run: Vec<&Vec<String>> = calls.iter().filter(|c| c[0] == "run").collect();
    assert_eq!(
        run,
        [&[
            "run",
            "--rm",
            "--name",
            CONTAINER,
            "--network",
            "host",
            "-e",
            "STACK_DEPS_ONLY=true",
            "-v",
            "stack-postgres-data:/data/postgres",
            "-v",
            "stack-redis-data:/data/redis",
            "-v",
            "stack-clickhouse-data:/data/clickhouse",
            "-v",
            "stack-minio-data:/data/minio",
            "-v",
            "stack-inbucket-data:/data/inbucket",
            "-d",
            "stack-local-emulator",
        ]
        .map(String::from)
        .to_vec()]
    );
    let migrate: Vec<&Vec<String>> = calls
        .iter()
        .filter(|c| c[0] == "exec" && c.iter().any(|a| a == "sh"))
        .collect();
    let script = format!(
        "cd /app/apps/backend && node {NODE_FLAGS} dist/db-migrations.mjs migrate && node \
         {NODE_FLAGS} dist/db-migrations.mjs seed"
    );
    assert_eq!(
        migrate,
        [&vec![
            "exec".to_string(),
            "--env-file".into(),
            s.sb.path("build.env").display().to_string(),
            "--env-file".into(),
            s.sb.path("computed.env").display().to_string(),
            CONTAINER.into(),
            "sh".into(),
            "-c".into(),
            script,
        ]]
    );
    let probes = calls
        .iter()
        .filter(|c| {
            c[..]
                == [
                    "exec",
                    CONTAINER,
                    "test",
                    "-f",
                    "/var/run/stack-local-init-services.done",
                ]
        })
        .count();
    assert!(probes >= 1, "{calls:?}");

    // The fake node ran migrate, then seed, with the node flags, in the container's volume.
    let args = s.sb.docker_ok([
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "-v",
        "stack-postgres-data:/d",
        "stack-local-emulator",
        "/d/node.args",
    ]);
    assert_eq!(
        args,
        format!(
            "{NODE_FLAGS} dist/db-migrations.mjs migrate\n{NODE_FLAGS} dist/db-migrations.mjs seed\n"
        )
    );
    s.assert_container_gone();
}

#[test]
fn failed_migrations_log_exactly_the_last_200_lines_and_exit_with_their_status() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&[], "FAKE_MIGRATE_LINES=500\nFAKE_MIGRATE_EXIT=7\n");
    s.tool().run().code_is(7);
    let log = s.log();
    let failed = log
        .iter()
        .position(|l| l == "MIGRATIONS FAILED (exit 7) — last 200 lines of migration output:")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(log[failed - 1], "Running migrations...");
    let expected: Vec<String> = (301..=500)
        .map(|i| {
            format!("migrate: node {NODE_FLAGS} dist/db-migrations.mjs migrate: output line {i}")
        })
        .collect();
    assert_eq!(log[failed + 1..failed + 201], expected[..]);
    assert_eq!(log[failed + 201..], ["Stopping deps container..."]);
    s.assert_container_gone();
}

#[test]
fn init_marker_never_written_times_out_and_removes_the_container() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&["ENV FAKE_INIT_NEVER=1"], "");
    let started = Instant::now();
    s.tool().args(["--init-timeout", "2"]).run().code_is(1);
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = s.log();
    let at = log
        .iter()
        .position(|l| l == "ERROR: init-services.sh did not finish within 2s")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(log[at - 1], "Waiting for init-services.sh...");
    // The last attempt either answered (`exit status 1`) or, on a loaded machine, was cut by
    // the deadline (`… killed`): both name the probe and its last answer.
    let (probe, answer) = log[at + 1]
        .split_once("`): ")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(
        probe,
        format!(
            "run-build-migrations: init-services still not ready (command `{} exec {CONTAINER} \
             test -f /var/run/stack-local-init-services.done",
            recorder().display()
        )
    );
    assert!(
        answer == "exit status 1" || answer.ends_with("; killed"),
        "last answer: {answer}"
    );
    assert_eq!(log[at + 2..], ["Stopping deps container..."]);
    s.assert_container_gone();
}

#[test]
fn a_stale_container_is_replaced() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&[], "");
    // A deps container left over from a crashed run, holding the deps' ports.
    s.sb.docker_ok([
        "run",
        "-d",
        "--name",
        CONTAINER,
        "--network",
        "host",
        "-e",
        "STACK_DEPS_ONLY=true",
        "stack-local-emulator",
    ]);
    s.tool().run().success();
    let log = s.log();
    assert_eq!(log[0], "Starting deps container...");
    assert_eq!(
        log[1],
        "run-build-migrations: removing stale container stack-build-init"
    );
    assert_eq!(s.original_lines(), SUCCESS);
    s.assert_container_gone();
}

#[test]
fn sigterm_during_the_init_wait_removes_the_container() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&["ENV FAKE_INIT_NEVER=1"], "");
    let mut child = s
        .tool()
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s
        .log()
        .iter()
        .any(|l| l == "Waiting for init-services.sh...")
    {
        assert!(
            Instant::now() < deadline,
            "never reached the init wait: {:#?}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = terminate(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(143));
    let log = s.log();
    assert_eq!(
        log[log.len() - 2..],
        [
            "run-build-migrations: interrupted by SIGTERM",
            "Stopping deps container..."
        ]
    );
    s.assert_container_gone();
}

#[test]
fn help_version_and_bad_arguments() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    let help = run.stdout_str();
    for text in [
        "Usage: run-build-migrations [OPTIONS]",
        "[default: stack-build-init]",
        "[default: stack-local-emulator]",
        "[default: /etc/stack-build.env]",
        "[default: /etc/stack-build-computed.env]",
        "[default: /var/run/stack-local-init-services.done]",
        "STACK_DEPS_TIMEOUT",
        "128+N  stopped by signal N",
    ] {
        assert!(help_contains(&help, text), "--help lacks {text:?}:\n{help}");
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text(TOOL));
    tool(TOOL)
        .arg("--init-timeout=soon")
        .run()
        .code_is(2)
        .stdout_is("")
        .stderr_contains("invalid value 'soon' for '--init-timeout <DURATION>'");
    tool(TOOL)
        .args(["--target", "postgres"])
        .run()
        .code_is(2)
        .stderr_contains("expected NAME=SPEC");
    tool(TOOL)
        .env("STACK_DEPS_TIMEOUT", "15O0")
        .run()
        .code_is(2)
        .stderr_contains("(from the environment variable STACK_DEPS_TIMEOUT)");
}

#[test]
fn a_docker_that_cannot_run_is_an_error_naming_it() {
    let dir = scratch();
    let log = dir.path().join("provision.log");
    tool(TOOL)
        .args(["--docker", "/nonexistent/docker"])
        .env("STACK_PROVISION_LOG_FILE", &log)
        .run()
        .code_is(1)
        .stderr_contains("run-build-migrations: running `/nonexistent/docker ps --all");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with(
            "Starting deps container...\nrun-build-migrations: ERROR: running `/nonexistent/docker"
        ),
        "{text}"
    );
}

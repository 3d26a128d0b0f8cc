//! run-stack-container: the original's docker arguments, the host log, the published key,
//! signals and exit statuses. A stub docker (a fixed script of the test's own) records what it
//! was given and behaves as each test asks; one test runs the fake emulator on a throwaway
//! engine with the host folder shared into the container.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::fake_emulator;
use crate::common::sandbox::{self, Sandbox};
use crate::common::*;

const TOOL: &str = "run-stack-container";
const PCK: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const VM_DIR: &str = "/Users/dev/.stack/emulator/vm-3f2a";

/// The stub: `rm` and `ps` record and succeed; `run` records its arguments, prints its pid and
/// then does what `STUB_MODE` says.
const STUB: &str = r#"#!/bin/sh
case "$1" in
rm) printf '%s\n' "$@" > "$STUB_DIR/rm.argv" ;;
ps) ;;
run)
  printf '%s\n' "$@" > "$STUB_DIR/run.argv"
  echo "pid $$"
  case "$STUB_MODE" in
  exit) echo "to stdout"; echo "to stderr" >&2; exit "$STUB_STATUS" ;;
  term)
    trap 'echo "got TERM"; exit 42' TERM
    echo ready
    while :; do sleep 0.05; done ;;
  linger) sleep 20 & echo "left a child holding the pipe"; exit 3 ;;
  esac ;;
*) exit 64 ;;
esac
"#;

/// A scratch layout: `cfg/` for the mounted STACKCFG disk, `keys/`, `host/` for the host's
/// folder (not mounted: `--no-host-mount`), `run/` for the env file, and the stub docker.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// With runtime.env's VM folder set to `vm_dir` (empty: none).
    fn new(vm_dir: &str) -> Setup {
        let setup = Setup { dir: scratch() };
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/render-stack-env");
        std::fs::create_dir_all(setup.path("cfg")).unwrap();
        let runtime = std::fs::read_to_string(fixtures.join("runtime.env")).unwrap();
        let runtime = runtime.replace(
            &format!("STACK_EMULATOR_VM_DIR_HOST={VM_DIR}"),
            &format!("STACK_EMULATOR_VM_DIR_HOST={vm_dir}"),
        );
        assert!(runtime.contains(&format!("STACK_EMULATOR_VM_DIR_HOST={vm_dir}\n")));
        std::fs::write(setup.path("cfg/runtime.env"), runtime).unwrap();
        std::fs::copy(fixtures.join("base.env"), setup.path("cfg/base.env")).unwrap();
        std::fs::create_dir_all(setup.path("keys")).unwrap();
        std::fs::write(setup.path("keys/internal-pck"), format!("{PCK}\n")).unwrap();
        std::fs::create_dir_all(setup.path("host")).unwrap();
        std::fs::create_dir_all(setup.path("stub")).unwrap();
        let stub = setup.path("docker");
        std::fs::write(&stub, STUB).unwrap();
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        setup
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The VM folder under the host folder.
    fn vm(&self) -> PathBuf {
        PathBuf::from(format!("{}{VM_DIR}", self.path("host").display()))
    }

    fn env_file(&self) -> PathBuf {
        self.path("run/local-emulator.env")
    }

    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--no-host-mount".into(), "--host-dir".into()];
        args.push(self.path("host").into());
        args.extend(["--no-cfg-mount".into(), "--cfg-mount-point".into()]);
        args.push(self.path("cfg").into());
        args.push("--key-dir".into());
        args.push(self.path("keys").into());
        args.push("--build-env".into());
        args.push(self.path("no-build.env").into());
        args.push("--env-file".into());
        args.push(self.env_file().into());
        args.push("--docker".into());
        args.push(self.path("docker").into());
        args
    }

    /// The tool with the stub in `mode`.
    fn command(&self, mode: &str, status: i32) -> Command {
        let mut cmd = Command::new(tool_path(TOOL));
        cmd.args(self.args())
            .env("STUB_DIR", self.path("stub"))
            .env("STUB_MODE", mode)
            .env("STUB_STATUS", status.to_string())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, mode: &str, status: i32) -> (Run, u32) {
        let child = self
            .command(mode, status)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        (Run(child.wait_with_output().unwrap()), pid)
    }

    fn recorded(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path("stub").join(name))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// The original's `docker run` arguments, with the env file and host folder given.
fn original_run_args(env_file: &Path, host: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--name",
        "stack",
        "--network",
        "host",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--env-file",
    ]
    .map(String::from)
    .to_vec();
    args.push(env_file.display().to_string());
    for volume in [
        "stack-postgres-data:/data/postgres",
        "stack-redis-data:/data/redis",
        "stack-clickhouse-data:/data/clickhouse",
        "stack-minio-data:/data/minio",
        "stack-inbucket-data:/data/inbucket",
    ] {
        args.push("-v".into());
        args.push(volume.into());
    }
    args.push("-v".into());
    args.push(format!("{}:/host:rshared", host.display()));
    args.push("stack-local-emulator".into());
    args
}

#[test]
fn without_a_host_folder_it_becomes_docker_with_the_original_arguments() {
    let setup = Setup::new("");
    let (run, pid) = setup.run("exit", 7);
    run.code_is(7)
        .stdout_is(format!("pid {pid}\nto stdout\n"))
        .stderr_is("to stderr\n");
    assert_eq!(setup.recorded("rm.argv"), ["rm", "-f", "stack"]);
    assert_eq!(
        setup.recorded("run.argv"),
        original_run_args(&setup.env_file(), &setup.path("host"))
    );
    let env = std::fs::read_to_string(setup.env_file()).unwrap();
    assert!(env.contains("\nSTACK_EMULATOR_PORT_PREFIX=81\n"), "{env}");
    assert!(env.contains(&format!(
        "\nSTACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={PCK}\n"
    )));
    assert_eq!(mode(&setup.env_file()), 0o600);
    assert!(!setup.path("host/internal-pck").exists());
}

#[test]
fn with_a_host_folder_output_is_mirrored_and_the_key_published() {
    let setup = Setup::new(VM_DIR);
    std::fs::create_dir_all(setup.vm()).unwrap();
    std::fs::write(setup.vm().join("stack.log"), "a previous run's output\n").unwrap();
    let (run, pid) = setup.run("exit", 5);
    run.code_is(5).stderr_is("");
    let stdout = run.stdout_str();
    let (first, rest) = stdout.split_once('\n').unwrap();
    let docker_pid: u32 = first.strip_prefix("pid ").unwrap().parse().unwrap();
    assert_ne!(docker_pid, pid, "docker runs as a child here");
    // stdout and stderr through one pipe, in order, as `2>&1 | tee -a` gave.
    assert_eq!(rest, "to stdout\nto stderr\n");
    assert_eq!(
        std::fs::read_to_string(setup.vm().join("stack.log")).unwrap(),
        stdout
    );
    let published = setup.vm().join("internal-pck");
    assert_eq!(
        std::fs::read_to_string(&published).unwrap(),
        format!("{PCK}\n")
    );
    assert_eq!(mode(&published), 0o600);
    assert_eq!(
        setup.recorded("run.argv"),
        original_run_args(&setup.env_file(), &setup.path("host"))
    );
}

#[test]
fn an_unwritable_host_folder_is_a_warning_and_output_still_flows() {
    // The original: `install` failed under `set -e` and systemd restarted the service forever.
    let setup = Setup::new(VM_DIR);
    let vm = setup.vm();
    let (run, _) = setup.run("exit", 4);
    run.code_is(4);
    assert!(
        run.stdout_str().ends_with("\nto stdout\nto stderr\n"),
        "{}",
        run.stdout_str()
    );
    run.stderr_is(format!(
        "{TOOL}: warning: publishing the key to the host: writing {vm}/internal-pck: No such \
         file or directory (os error 2)\n\
         {TOOL}: warning: cannot write the host log {vm}/stack.log: No such file or directory \
         (os error 2); the output goes to stdout only\n",
        vm = vm.display()
    ));
    assert!(!vm.exists());

    // A VM folder that would leave the host folder is not used at all.
    let setup = Setup::new("/../../etc");
    let (run, _) = setup.run("exit", 0);
    run.success().stderr_is(format!(
        "{TOOL}: warning: STACK_EMULATOR_VM_DIR_HOST=\"/../../etc\" is not an absolute path \
         without `..`; not using the host folder\nto stderr\n"
    ));
}

#[test]
fn sigterm_reaches_docker_and_its_status_is_returned() {
    let setup = Setup::new(VM_DIR);
    std::fs::create_dir_all(setup.vm()).unwrap();
    let mut child = setup
        .command("term", 0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while line != "ready\n" {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    // SAFETY: kill(2) on our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tool did not end after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(42));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(
        std::fs::read_to_string(setup.vm().join("stack.log")).unwrap(),
        format!("{seen}got TERM\n")
    );
}

#[test]
fn a_process_left_holding_the_pipe_does_not_keep_the_tool_running() {
    let setup = Setup::new(VM_DIR);
    std::fs::create_dir_all(setup.vm()).unwrap();
    let started = Instant::now();
    let mut child = setup
        .command("linger", 0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the tool waited for the lingering process");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
    let log = std::fs::read_to_string(setup.vm().join("stack.log")).unwrap();
    assert!(log.ends_with("left a child holding the pipe\n"), "{log}");
}

#[test]
fn a_render_failure_stops_before_docker() {
    let setup = Setup::new("");
    std::fs::remove_file(setup.path("cfg/runtime.env")).unwrap();
    let (run, _) = setup.run("exit", 0);
    run.code_is(1).stdout_is("").stderr_is(format!(
        "{TOOL}: reading {}: No such file or directory (os error 2)\n",
        setup.path("cfg/runtime.env").display()
    ));
    assert!(!setup.path("stub/run.argv").exists());
}

#[test]
fn runs_the_fake_emulator_on_a_real_engine() {
    require!(
        sandbox::engine_available(),
        "a sandbox with a docker engine"
    );
    let setup = Setup::new("/vm");
    let mut sb = Sandbox::with_network();
    sb.start_engine();
    // App mode, then the container's view written to the host folder, output on both streams
    // and a chosen exit status.
    fake_emulator::build(
        |a| sb.docker(a),
        "stack-local-emulator",
        &[
            r#"ENTRYPOINT ["/bin/sh", "-c", "env | sort > /host/vm/app.env; echo app-stdout; sleep 0.2; echo app-stderr >&2; exit 3"]"#,
        ],
    );
    // A stale container of the same name, as a crash would leave.
    sb.docker_ok(["create", "--name", "stack", "stack-local-emulator"]);
    // The host folder: a shared tmpfs with source `hostfs` stands in for the 9p mount, which
    // mount-host-fs (in-process) then finds already on top.
    let host = sb.path("host9p");
    let prepared = sb.sh(&format!(
        "mkdir -p '{h}' && mount -t tmpfs hostfs '{h}' && mount --make-shared '{h}' && \
         mkdir '{h}/vm' && echo stale > '{h}/vm/stack.log'",
        h = host.display()
    ));
    Run(prepared).success();
    let mut args = setup.args();
    args.truncate(args.len() - 2); // the real docker
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| {
            if a == "--no-host-mount" {
                "--host-fs-type=tmpfs".into()
            } else if a == setup.path("host").as_os_str() {
                host.clone().into_os_string()
            } else {
                a
            }
        })
        .collect();
    let run = sb.tool(TOOL).args(args).run();
    run.code_is(3).stderr_is("");
    assert_eq!(run.stdout_str(), "app-stdout\napp-stderr\n");
    let cat = |name: &str| sb.ok("cat", [host.join(name)]);
    assert_eq!(cat("vm/stack.log"), "app-stdout\napp-stderr\n");
    assert_eq!(cat("vm/internal-pck"), format!("{PCK}\n"));
    assert_eq!(
        sb.ok(
            "stat",
            [
                std::ffi::OsString::from("-c"),
                "%a".into(),
                host.join("vm/internal-pck").into()
            ]
        ),
        "600\n"
    );
    let app_env = cat("vm/app.env");
    for expected in [
        "STACK_EMULATOR_PORT_PREFIX=81".to_string(),
        "NEXT_PUBLIC_STACK_API_URL=http://localhost:26702".to_string(),
        "STACK_LOCAL_EMULATOR_HOST_MOUNT_ROOT=/host".to_string(),
        "NODE_ENV=production".to_string(),
        format!("STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={PCK}"),
    ] {
        assert!(
            app_env.lines().any(|l| l == expected),
            "{expected} not in the container's environment:\n{app_env}"
        );
    }
    // --rm took the container away, and the stale one was replaced, not kept.
    assert_eq!(sb.docker_ok(["ps", "--all", "--format", "{{.Names}}"]), "");
}

#[test]
fn help_version_and_bad_flag() {
    let run = tool(TOOL).arg("--help").run();
    run.success();
    let help = run.stdout_str();
    for needle in [
        "[default: /host]",
        "[default: hostfs]",
        "[default: 9p]",
        "[default: STACKCFG]",
        "[default: /mnt/stack-runtime]",
        "[default: /var/lib/stack-auth]",
        "[default: /etc/stack-build.env]",
        "[default: /run/stack-auth/local-emulator.env]",
        "[default: stack]",
        "[default: stack-local-emulator]",
        "-v /host:/host:rshared stack-local-emulator",
    ] {
        assert!(
            help_contains(&help, needle),
            "--help lacks {needle}:\n{help}"
        );
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text(TOOL));
    tool(TOOL)
        .arg("--bogus")
        .run()
        .code_is(2)
        .stderr_contains("unexpected argument '--bogus'");
}

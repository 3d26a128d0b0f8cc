//! provision-build: the whole pipeline, driven as a real process, with recording stand-ins.
//!
//! Every program it runs (the tools, systemctl, shutdown, poweroff) is a symbolic link to the
//! fixed script `tests/fixtures/provision-build/stand-in`, which records its name, arguments and
//! log-file variables, prints a line on stdout and on stderr, and then does what the test asked
//! for in a control file (exit N, get killed, sleep, …). The consoles and the serial device are
//! plain files (or a FIFO); the host folder is a scratch directory. The real `log-provision` sits
//! beside the stand-ins, so a child can log through the log file it inherited. The real
//! `mount-host-fs` runs in one test, in a private mount namespace.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::sandbox::Sandbox;
use crate::common::*;

const TOOL: &str = "provision-build";
const TOOLS: [&str; 5] = [
    "mount-host-fs",
    "install-emulator-containers",
    "run-build-migrations",
    "slim-docker-image",
    "wait-for-stack-ready",
];

/// A scratch world for one run: tools, consoles, host folder, records.
struct Rig {
    dir: tempfile::TempDir,
    /// Failure-block delays: short, so the tests wait little for the records.
    delays: (&'static str, &'static str),
}

impl Rig {
    fn new() -> Rig {
        let rig = Rig {
            dir: scratch(),
            delays: ("0", "0.2"),
        };
        for sub in ["bin", "sbin", "do", "host", "dev"] {
            std::fs::create_dir(rig.path(sub)).unwrap();
        }
        for name in TOOLS {
            symlink(provision_stand_in(), rig.tools().join(name)).unwrap();
        }
        symlink(
            tool_path("log-provision"),
            rig.tools().join("log-provision"),
        )
        .unwrap();
        for name in ["systemctl", "shutdown", "poweroff"] {
            symlink(provision_stand_in(), rig.path("sbin").join(name)).unwrap();
        }
        // The consoles: /dev/console and ttyS0 exist (ttyS0 is also the serial device),
        // ttyAMA0 does not.
        std::fs::write(rig.console(), "").unwrap();
        std::fs::write(rig.serial(), "").unwrap();
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tools(&self) -> PathBuf {
        self.path("bin")
    }

    fn host(&self) -> PathBuf {
        self.path("host")
    }

    fn log_path(&self) -> PathBuf {
        self.host().join("provision.log")
    }

    fn console(&self) -> PathBuf {
        self.path("dev/console")
    }

    fn serial(&self) -> PathBuf {
        self.path("dev/ttyS0")
    }

    fn missing_tty(&self) -> PathBuf {
        self.path("dev/ttyAMA0")
    }

    fn build_env(&self) -> PathBuf {
        self.path("stack-build.env")
    }

    /// Makes the stand-in called `key` (`NAME` or `NAME.ARG1`) do `what`.
    fn make(&self, key: &str, what: &str) -> &Rig {
        std::fs::write(self.path("do").join(key), format!("{what}\n")).unwrap();
        self
    }

    /// The flags pointing everything at this rig, with `extra` flags (`--flag=value`) in place
    /// of the rig's own.
    fn args_with(&self, extra: &[&str]) -> Vec<String> {
        let replaced = |arg: &String| {
            extra.iter().any(|e| {
                e.split_once('=')
                    .is_some_and(|(flag, _)| arg.starts_with(&format!("{flag}=")))
            })
        };
        let mut args: Vec<String> = self.args().into_iter().filter(|a| !replaced(a)).collect();
        args.extend(extra.iter().map(|e| e.to_string()));
        args
    }

    /// The flags pointing everything at this rig.
    fn args(&self) -> Vec<String> {
        let s = |p: PathBuf| p.display().to_string();
        let sbin = self.path("sbin");
        vec![
            format!("--tools-dir={}", s(self.tools())),
            format!("--host={}", s(self.host())),
            format!("--build-env={}", s(self.build_env())),
            format!("--serial={},{}", s(self.missing_tty()), s(self.serial())),
            format!(
                "--console={},{},{}",
                s(self.console()),
                s(self.missing_tty()),
                s(self.serial())
            ),
            format!("--systemctl={}", s(sbin.join("systemctl"))),
            format!("--shutdown={} -P now", s(sbin.join("shutdown"))),
            format!("--force-poweroff={} -f", s(sbin.join("poweroff"))),
            format!("--shutdown-delay={}", self.delays.0),
            format!("--force-poweroff-delay={}", self.delays.1),
            "--qga-settle=0".into(),
            "--stop-grace=5".into(),
        ]
    }

    fn cmd(&self) -> Cmd {
        self.cmd_with(&[])
    }

    fn cmd_with(&self, extra: &[&str]) -> Cmd {
        tool(TOOL)
            .args(self.args_with(extra))
            .env("STAND_IN_DIR", self.dir.path())
    }

    /// Starts provision-build in the background, output to files.
    fn spawn(&self, extra: &[&str]) -> Child {
        let mut cmd = self.cmd_with(extra).cmd;
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path("stdout")).unwrap())
            .stderr(std::fs::File::create(self.path("stderr")).unwrap());
        cmd.spawn().expect("start provision-build")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
    }

    fn read(&self, path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every call, as `NAME|ARGS|STACK_PROVISION_LOG_FILE|HEXCLAVE_PROVISION_LOG_FILE`, with the
    /// rig's directory shown as `R`.
    fn calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("calls")).unwrap_or_default();
        let root = self.dir.path().display().to_string();
        text.lines().map(|l| l.replace(&root, "R")).collect()
    }

    /// The calls of the stand-in `name`, without the variables.
    fn calls_of(&self, name: &str) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.split('|').next() == Some(name))
            .map(|c| c.split('|').take(2).collect::<Vec<_>>().join("|"))
            .collect()
    }

    /// Waits until `name` was called `count` times (the detached power-off runs after we exit).
    #[track_caller]
    fn wait_for_calls(&self, name: &str, count: usize) -> Vec<String> {
        wait_until(Duration::from_secs(20), || {
            self.calls_of(name).len() >= count
        });
        self.calls_of(name)
    }
}

fn is_duration(word: &str) -> bool {
    word.strip_suffix('s').is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit())
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || "hm.".contains(c))
    })
}

/// The log's lines with every duration shown as `T` and runs of blanks as one space (a leading
/// indent is kept as two spaces).
fn normalized(log: &str) -> Vec<String> {
    log.lines()
        .map(|line| {
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|w| if is_duration(w) { "T" } else { w })
                .collect();
            let indent = if line.starts_with("  ") { "  " } else { "" };
            format!("{indent}{}", words.join(" "))
        })
        .collect()
}

/// The log lines of the build steps, all successful, in order.
fn build_lines() -> Vec<String> {
    [
        "step mount-host-fs: ok in T",
        "runcmd starting",
        "step disable ssh: ok in T",
        "step mask ssh: ok in T",
        "step enable qemu-guest-agent: ok in T",
        "step start qemu-guest-agent: ok in T",
        "installing emulator containers",
        "step install-emulator-containers: ok in T",
        "step daemon-reload: ok in T",
        "step enable stack.service: ok in T",
        "starting build migrations",
        "step run-build-migrations: ok in T",
        "starting slim-docker-image",
        "step slim-docker-image: ok in T",
    ]
    .map(String::from)
    .to_vec()
}

/// The summary table for `rows` (name, outcome), normalized.
fn summary(rows: &[(&str, &str)]) -> Vec<String> {
    let mut lines = vec!["step durations:".to_string()];
    lines.extend(
        rows.iter()
            .map(|(name, outcome)| format!("  {name} T {outcome}")),
    );
    lines.push("  total T".into());
    lines
}

const BUILD_ROWS: [(&str, &str); 10] = [
    ("mount-host-fs", "ok"),
    ("disable ssh", "ok"),
    ("mask ssh", "ok"),
    ("enable qemu-guest-agent", "ok"),
    ("start qemu-guest-agent", "ok"),
    ("install-emulator-containers", "ok"),
    ("daemon-reload", "ok"),
    ("enable stack.service", "ok"),
    ("run-build-migrations", "ok"),
    ("slim-docker-image", "ok"),
];

/// The calls of a full, successful build, in order, with the log file each child inherited.
fn build_calls() -> Vec<String> {
    let log = "R/host/provision.log";
    let mut calls = vec![format!("mount-host-fs|--mount-point R/host||")];
    for (name, args) in [
        ("systemctl", "disable --now ssh"),
        ("systemctl", "mask ssh"),
        ("systemctl", "enable qemu-guest-agent"),
        ("systemctl", "start qemu-guest-agent"),
        ("install-emulator-containers", ""),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable stack.service"),
        ("run-build-migrations", ""),
        ("slim-docker-image", ""),
    ] {
        calls.push(format!("{name}|{args}|{log}|{log}"));
    }
    calls
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn success_logs_every_line_in_order_marks_done_and_powers_off_once() {
    let rig = Rig::new();
    rig.make("install-emulator-containers", "log");
    let run = rig.cmd().run();
    run.success();

    let mut expected = build_lines();
    expected.insert(7, "install-emulator-containers: logged by the child".into());
    expected.push("build pipeline complete".into());
    expected.extend(summary(&BUILD_ROWS));
    expected.push("STACK_CLOUD_INIT_DONE".into());
    assert_eq!(normalized(&rig.log()), expected);
    assert!(rig.log().ends_with("\nSTACK_CLOUD_INIT_DONE\n"));

    let mut calls = build_calls();
    calls.push("shutdown|-P now|R/host/provision.log|R/host/provision.log".into());
    assert_eq!(rig.calls(), calls);
    // Power-off was requested once: no failure-block stage follows.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.calls_of("shutdown").len(), 1);
    assert_eq!(rig.calls_of("poweroff"), Vec::<String>::new());

    // The consoles that exist got the marker, alone on its line; none was created.
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_DONE\n");
    assert!(!rig.missing_tty().exists());

    // stdout: our lines tagged, the children's output as it came; stderr: theirs.
    let stdout = run.stdout_str();
    for needle in [
        "STACK_PROVISION: runcmd starting\n",
        "STACK_PROVISION: install-emulator-containers: logged by the child\n",
        "install-emulator-containers: out \n",
        "systemctl: out disable --now ssh\n",
        "STACK_PROVISION: build pipeline complete\n",
        "STACK_PROVISION: step durations:\n",
    ] {
        assert!(
            stdout.contains(needle),
            "stdout lacks {needle:?}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("STACK_CLOUD_INIT_DONE"));
    let stderr = run.stderr_str();
    assert!(stderr.contains("run-build-migrations: err \n"), "{stderr}");

    // The serial device got everything, in order, then the marker.
    let serial = rig.read(rig.serial());
    let mut at = 0;
    for needle in [
        "mount-host-fs: out --mount-point",
        "STACK_PROVISION: runcmd starting\n",
        "install-emulator-containers: out \n",
        "STACK_PROVISION: install-emulator-containers: logged by the child\n",
        "STACK_PROVISION: step install-emulator-containers: ok in ",
        "slim-docker-image: out \n",
        "STACK_PROVISION: build pipeline complete\n",
        "\nSTACK_CLOUD_INIT_DONE\n",
    ] {
        let found = serial[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("serial lacks {needle:?} after byte {at}:\n{serial}"));
        at += found + needle.len();
    }
    // A child's stderr and stdout are read by two threads: each in order, not with each other.
    assert!(serial.contains("install-emulator-containers: err \n"));
    // After the marker, only the output of the power-off command.
    let mut after: Vec<&str> = serial[at..].lines().collect();
    after.sort_unstable();
    assert_eq!(after, ["shutdown: err -P now", "shutdown: out -P now"]);
}

#[test]
fn each_fatal_step_failing_runs_the_failure_block_with_its_status() {
    // (stand-in key, step name, calls made before the pipeline stopped)
    let cases = [
        (
            "install-emulator-containers",
            "install-emulator-containers",
            6,
        ),
        ("systemctl.daemon-reload", "daemon-reload", 7),
        ("systemctl.enable", "enable stack.service", 8),
        ("run-build-migrations", "run-build-migrations", 9),
        ("slim-docker-image", "slim-docker-image", 10),
    ];
    for (key, step, made) in cases {
        let rig = Rig::new();
        // `systemctl enable …` also enables qemu-guest-agent, whose failure is ignored.
        rig.make(key, "exit 7");
        let run = rig.cmd().run();
        run.code_is(7);
        // The failure block's two lines end stdout too, as they end the log file.
        assert!(
            run.stdout_str().ends_with(
                "\nERROR: provision-build exited with code 7\nSTACK_CLOUD_INIT_FAILED\n"
            ),
            "{step}: {}",
            run.stdout_str()
        );
        let steps: Vec<String> = rig
            .calls()
            .into_iter()
            .filter(|c| !c.starts_with("shutdown|") && !c.starts_with("poweroff|"))
            .collect();
        assert_eq!(
            steps[..],
            build_calls()[..made],
            "{step}: the steps after it did not run"
        );
        let log = normalized(&rig.log());
        let tail = lines(&[
            &format!("step {step}: exit status 7 in T"),
            "step durations:",
        ]);
        let at = log
            .iter()
            .position(|l| l.starts_with(&format!("step {step}:")))
            .unwrap_or_else(|| panic!("{step}: no step line in {log:#?}"));
        assert_eq!(log[at..at + 2], tail[..], "{step}");
        assert_eq!(
            log[log.len() - 4..],
            lines(&[
                &format!("  {step} T exit status 7"),
                "  total T",
                "ERROR: provision-build exited with code 7",
                "STACK_CLOUD_INIT_FAILED",
            ])[..],
            "{step}"
        );
        assert_eq!(
            rig.read(rig.console()),
            "STACK_CLOUD_INIT_FAILED\n",
            "{step}"
        );
        assert!(
            rig.read(rig.serial())
                .ends_with("\nSTACK_CLOUD_INIT_FAILED\n"),
            "{step}"
        );
        assert!(!rig.missing_tty().exists());
        assert_eq!(
            rig.wait_for_calls("poweroff", 1),
            ["poweroff|-f"],
            "{step}: the second stage"
        );
        assert_eq!(rig.calls_of("shutdown"), ["shutdown|-P now"], "{step}");
    }
}

/// The original's `|| true` steps: a failure is logged and the build goes on.
#[test]
fn ignored_failures_do_not_stop_the_build() {
    let rig = Rig::new();
    rig.make("systemctl.mask", "exit 1")
        .make("systemctl.disable", "kill");
    rig.cmd().run().success();
    let log = normalized(&rig.log());
    assert!(log.contains(&"step disable ssh: killed by signal 9 (SIGKILL) (ignored) in T".into()));
    assert!(log.contains(&"step mask ssh: exit status 1 (ignored) in T".into()));
    assert!(log.contains(&"  mask ssh T exit status 1 (ignored)".into()));
    assert_eq!(
        log.last().map(String::as_str),
        Some("STACK_CLOUD_INIT_DONE")
    );
}

/// mount-host-fs failing (the original's `if bash mount-host-fs`): no log file, the children get
/// STACK_PROVISION_LOG_FILE set empty, and the build goes on; the markers still reach the consoles.
#[test]
fn without_the_host_folder_there_is_no_log_file() {
    let rig = Rig::new();
    rig.make("mount-host-fs", "exit 1");
    let run = rig.cmd().run();
    run.success();
    assert!(!rig.log_path().exists());
    let calls = rig.calls();
    assert_eq!(calls[0], "mount-host-fs|--mount-point R/host||");
    assert_eq!(calls[5], "install-emulator-containers|||");
    assert!(run.stdout_str().contains(
        "STACK_PROVISION: step mount-host-fs: exit status 1 (continuing without a log file) in "
    ));
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_DONE\n");
}

#[test]
fn a_step_killed_by_a_signal_fails_with_128_plus_the_signal() {
    let rig = Rig::new();
    rig.make("run-build-migrations", "kill");
    rig.cmd().run().code_is(137);
    let log = normalized(&rig.log());
    assert!(log.contains(&"step run-build-migrations: killed by signal 9 (SIGKILL) in T".into()));
    assert_eq!(
        log[log.len() - 2..],
        lines(&[
            "ERROR: provision-build exited with code 137",
            "STACK_CLOUD_INIT_FAILED"
        ])[..]
    );
    assert!(rig.calls_of("slim-docker-image").is_empty());
    rig.wait_for_calls("poweroff", 1);
}

#[test]
fn a_missing_tool_fails_with_127() {
    let rig = Rig::new();
    std::fs::remove_file(rig.tools().join("slim-docker-image")).unwrap();
    let run = rig.cmd().run();
    run.code_is(127);
    let log = normalized(&rig.log());
    assert!(
        log.contains(
            &"step slim-docker-image: could not start: No such file or directory (os error 2) in T"
                .into()
        ),
        "{log:#?}"
    );
    assert_eq!(
        log[log.len() - 2..],
        lines(&[
            "ERROR: provision-build exited with code 127",
            "STACK_CLOUD_INIT_FAILED"
        ])[..]
    );
    rig.wait_for_calls("poweroff", 1);
}

/// The detached power-off runs after provision-build exited, in order, with its own delays.
#[test]
fn failure_power_off_is_two_stage_and_outlives_the_tool() {
    let mut rig = Rig::new();
    rig.delays = ("1", "2");
    rig.make("install-emulator-containers", "exit 3");
    rig.cmd().run().code_is(3);
    // Exit does not wait for power-off: its first stage comes 1 s later.
    assert!(rig.calls_of("shutdown").is_empty(), "not before its delay");
    rig.wait_for_calls("poweroff", 1);
    let calls: Vec<String> = rig
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("shutdown|") || c.starts_with("poweroff|"))
        .collect();
    assert_eq!(
        calls,
        ["shutdown|-P now|unset|unset", "poweroff|-f|unset|unset"]
    );
}

fn check_panic_run(rig: &Rig, run: &Run) {
    run.code_is(101).stderr_contains(
        "panicking before step run-build-migrations as asked (--test-panic-before)",
    );
    let log = normalized(&rig.log());
    assert_eq!(
        log[log.len() - 3..],
        lines(&[
            "step enable stack.service: ok in T",
            "ERROR: provision-build exited with code 101",
            "STACK_CLOUD_INIT_FAILED",
        ])[..]
    );
    assert!(rig.calls_of("run-build-migrations").is_empty());
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_FAILED\n");
    assert_eq!(rig.wait_for_calls("poweroff", 1), ["poweroff|-f"]);
}

#[test]
fn a_panic_runs_the_failure_block() {
    let rig = Rig::new();
    let run = rig
        .cmd_with(&["--test-panic-before=run-build-migrations"])
        .run();
    check_panic_run(&rig, &run);
}

/// The release build has `panic = "abort"`: the hook must still run the failure block. The
/// release build holds no test hook, so this runs the `abort-hooks` build, which aborts on a
/// panic as the release build does.
#[test]
fn a_panic_runs_the_failure_block_in_the_abort_build_too() {
    let binary = bin_dir()
        .parent()
        .expect("the binaries are in target/<profile>")
        .join("abort-hooks/emulator-tools");
    // Built here (a no-op after `make test`), so the test never runs an older build.
    let built = cargo_build(&[
        "--profile",
        "abort-hooks",
        "-p",
        "emulator-tools",
        "--features",
        TOOL_FEATURES,
    ]);
    require!(
        built.is_ok() && binary.is_file(),
        &format!("{} ({built:?})", binary.display())
    );
    let rig = Rig::new();
    let mut cmd = Command::new(binary);
    cmd.arg(TOOL)
        .args(rig.args())
        .arg("--test-panic-before=run-build-migrations")
        .env("STAND_IN_DIR", rig.dir.path())
        .env_remove("STACK_PROVISION_LOG_FILE")
        .env_remove("HEXCLAVE_PROVISION_LOG_FILE");
    let run = Cmd::from_command(cmd).run();
    check_panic_run(&rig, &run);
}

#[test]
fn sigterm_mid_step_stops_the_step_and_runs_the_failure_block() {
    let rig = Rig::new();
    rig.make("run-build-migrations", "sleep");
    // A grace period longer than the test: the step must end on SIGTERM, not SIGKILL.
    let mut child = rig.spawn(&["--stop-grace=60"]);
    let pidfile = rig.path("run-build-migrations.pid");
    wait_until(Duration::from_secs(20), || pidfile.exists());
    let step_pid: i32 = rig.read(pidfile).trim().parse().unwrap();
    let started = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the step was stopped by SIGTERM"
    );
    assert!(
        !Path::new(&format!("/proc/{step_pid}")).exists(),
        "the step was stopped with us"
    );
    let log = normalized(&rig.log());
    assert!(
        log.contains(
            &"step run-build-migrations: stopped: provision-build received SIGTERM in T".into()
        ),
        "{log:#?}"
    );
    assert_eq!(
        log[log.len() - 2..],
        lines(&[
            "ERROR: provision-build exited with code 143",
            "STACK_CLOUD_INIT_FAILED"
        ])[..]
    );
    assert!(rig.calls_of("slim-docker-image").is_empty());
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_FAILED\n");
    assert_eq!(rig.wait_for_calls("poweroff", 1), ["poweroff|-f"]);
}

/// A step that ignores SIGTERM gets SIGKILL after the grace period.
#[test]
fn a_step_ignoring_sigterm_is_killed_after_the_grace_period() {
    let rig = Rig::new();
    rig.make("install-emulator-containers", "stubborn");
    let mut child = rig.spawn(&["--stop-grace=0.5"]);
    let pidfile = rig.path("install-emulator-containers.pid");
    wait_until(Duration::from_secs(20), || pidfile.exists());
    let started = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(started.elapsed() >= Duration::from_millis(500));
    let log = rig.log();
    assert!(
        log.ends_with("ERROR: provision-build exited with code 130\nSTACK_CLOUD_INIT_FAILED\n")
    );
    rig.wait_for_calls("poweroff", 1);
}

fn capture_lines() -> Vec<String> {
    lines(&[
        "capture mode: starting stack.service",
        "step start stack.service: ok in T",
        "waiting for backend + dashboard to be ready",
        "step wait-for-stack-ready: ok in T",
        "ensuring qemu-guest-agent is up",
        "step restart qemu-guest-agent: ok in T",
        "step settle: ok in T",
        "step check qemu-guest-agent: ok in T",
        "qemu-guest-agent active",
        "services ready; signalling STACK_SERVICES_READY",
    ])
}

#[test]
fn capture_mode_signals_ready_then_keeps_running() {
    let rig = Rig::new();
    std::fs::write(
        rig.build_env(),
        "# generated\nSTACK_EMULATOR_BUILD_SNAPSHOT=1\nSTACK_EMULATOR_CAPTURE_SAVEVM=1\n",
    )
    .unwrap();
    let mut child = rig.spawn(&[]);
    wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(rig.log_path()).is_ok_and(|l| l.contains("STACK_SERVICES_READY"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "it waits for the host");

    let mut expected = build_lines();
    expected.extend(capture_lines());
    let mut rows = BUILD_ROWS.to_vec();
    rows.extend([
        ("start stack.service", "ok"),
        ("wait-for-stack-ready", "ok"),
        ("restart qemu-guest-agent", "ok"),
        ("settle", "ok"),
        ("check qemu-guest-agent", "ok"),
    ]);
    expected.extend(summary(&rows));
    expected.push("STACK_SERVICES_READY".into());
    assert_eq!(normalized(&rig.log()), expected);
    let mut calls = build_calls();
    let log = "R/host/provision.log";
    for (name, args) in [
        ("systemctl", "start stack.service"),
        ("wait-for-stack-ready", ""),
        ("systemctl", "restart qemu-guest-agent"),
        ("systemctl", "is-active --quiet qemu-guest-agent"),
    ] {
        calls.push(format!("{name}|{args}|{log}|{log}"));
    }
    assert_eq!(rig.calls(), calls, "no power-off");
    assert_eq!(rig.read(rig.console()), "STACK_SERVICES_READY\n");
    assert!(rig.read(rig.serial()).ends_with("\nSTACK_SERVICES_READY\n"));

    // Stopping it now is no failure: the host takes the snapshot and quits the VM.
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(143));
    std::thread::sleep(Duration::from_millis(300));
    assert!(rig.log().ends_with("\nSTACK_SERVICES_READY\n"));
    assert!(rig.calls_of("shutdown").is_empty());
    assert_eq!(rig.read(rig.console()), "STACK_SERVICES_READY\n");
}

#[test]
fn capture_mode_with_qemu_guest_agent_inactive_fails() {
    let rig = Rig::new();
    std::fs::write(rig.build_env(), "STACK_EMULATOR_CAPTURE_SAVEVM=1\n").unwrap();
    rig.make("systemctl.is-active", "exit 3")
        .make("systemctl.status", "status");
    rig.cmd().run().code_is(1);
    let log = normalized(&rig.log());
    let at = log
        .iter()
        .position(|l| l == "step check qemu-guest-agent: exit status 3 in T")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(
        log[at..at + 7],
        lines(&[
            "step check qemu-guest-agent: exit status 3 in T",
            "ERROR: qemu-guest-agent failed to start",
            "qga: systemctl: out status qemu-guest-agent --no-pager -l",
            "qga: systemctl: err status qemu-guest-agent --no-pager -l",
            "qga: * qemu-guest-agent.service - QEMU Guest Agent",
            "qga: Active: failed",
            "step durations:",
        ])[..]
    );
    assert_eq!(
        log[log.len() - 2..],
        lines(&[
            "ERROR: provision-build exited with code 1",
            "STACK_CLOUD_INIT_FAILED"
        ])[..]
    );
    assert!(!rig.log().contains("qemu-guest-agent active"));
    assert!(!rig.log().contains("STACK_SERVICES_READY"));
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_FAILED\n");
    rig.wait_for_calls("poweroff", 1);
}

#[test]
fn capture_mode_when_the_stack_never_gets_ready_fails_with_1() {
    let rig = Rig::new();
    std::fs::write(rig.build_env(), "STACK_EMULATOR_CAPTURE_SAVEVM=1\n").unwrap();
    rig.make("wait-for-stack-ready", "exit 4");
    rig.cmd().run().code_is(1);
    let log = normalized(&rig.log());
    let at = log
        .iter()
        .position(|l| l == "step wait-for-stack-ready: exit status 4 in T")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(log[at + 1], "ERROR: stack services did not become ready");
    assert_eq!(
        log[log.len() - 2..],
        lines(&[
            "ERROR: provision-build exited with code 1",
            "STACK_CLOUD_INIT_FAILED"
        ])[..]
    );
    assert!(
        rig.calls_of("systemctl")
            .iter()
            .all(|c| !c.contains("restart"))
    );
    rig.wait_for_calls("poweroff", 1);
}

/// The original matched `^STACK_EMULATOR_CAPTURE_SAVEVM=1`, so `=10` turned capture on; ours
/// reads the value. A file that is not a valid env file is an error naming its line.
#[test]
fn capture_mode_reads_the_value_not_a_prefix() {
    let rig = Rig::new();
    std::fs::write(rig.build_env(), "STACK_EMULATOR_CAPTURE_SAVEVM=10\n").unwrap();
    rig.cmd().run().success();
    assert!(rig.log().ends_with("\nSTACK_CLOUD_INIT_DONE\n"));
    assert!(rig.calls_of("wait-for-stack-ready").is_empty());

    let rig = Rig::new();
    std::fs::write(
        rig.build_env(),
        "STACK_EMULATOR_CAPTURE_SAVEVM=1\nnot an assignment\n",
    )
    .unwrap();
    rig.cmd().run().code_is(1).stderr_contains(&format!(
        "provision-build: {}:2: missing '=' (expected KEY=value)\n",
        rig.build_env().display()
    ));
    assert!(
        rig.log()
            .ends_with("ERROR: provision-build exited with code 1\nSTACK_CLOUD_INIT_FAILED\n")
    );
}

/// The serial device is the first present one: a FIFO nobody reads is not present, a FIFO with
/// a reader is.
#[test]
fn serial_device_may_be_a_fifo_with_a_reader() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let rig = Rig::new();
    let unread = rig.path("dev/unread");
    let read = rig.path("dev/read");
    for fifo in [&unread, &read] {
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    // A reader that never blocks: the output stays in the pipe's buffer until read below.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&read)
        .unwrap();
    let serial = format!("--serial={},{}", unread.display(), read.display());
    rig.cmd_with(&[&serial]).run().success();
    let mut mirrored = Vec::new();
    let err = reader.read_to_end(&mut mirrored).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let mirrored = String::from_utf8(mirrored).unwrap();
    assert!(
        mirrored.contains("STACK_PROVISION: runcmd starting\n"),
        "{mirrored}"
    );
    assert!(mirrored.contains("slim-docker-image: out \n"));
    assert!(mirrored.contains("shutdown: out -P now\n"), "{mirrored}");
    assert_eq!(
        rig.read(rig.serial()),
        "STACK_CLOUD_INIT_DONE\n",
        "only a console now"
    );
}

/// With the real mount-host-fs, in a private mount namespace: this kernel has no 9p, so the
/// cold boot goes on with an empty host folder, which is bound on itself and shared, and the
/// log file is in it.
#[test]
fn with_the_real_mount_host_fs_the_log_is_in_the_host_folder() {
    require!(crate::common::sandbox::available(), "a sandbox");
    let rig = Rig::new();
    std::fs::remove_file(rig.tools().join("mount-host-fs")).unwrap();
    symlink(
        tool_path("mount-host-fs"),
        rig.tools().join("mount-host-fs"),
    )
    .unwrap();
    let sandbox = Sandbox::new();
    let run = sandbox
        .tool(TOOL)
        .args(rig.args())
        .env("STAND_IN_DIR", rig.dir.path())
        .run();
    run.success().stderr_contains(&format!(
        "host filesystem unavailable; continuing with empty {}\n",
        rig.host().display()
    ));
    assert!(rig.log().ends_with("\nSTACK_CLOUD_INIT_DONE\n"));
    assert_eq!(normalized(&rig.log())[0], "step mount-host-fs: ok in T");
    let mountinfo = sandbox.ok("cat", ["/proc/self/mountinfo"]);
    let host = rig.host().canonicalize().unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(host.to_str().unwrap()) && l.contains(" shared:")),
        "{mountinfo}"
    );
}

#[test]
fn help_lists_the_steps() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    let help = run.stdout_str();
    for needle in [
        "Usage: provision-build [OPTIONS]",
        "--tools-dir <DIR>",
        "[default: /usr/local/bin]",
        "[default: /dev/console,/dev/ttyAMA0,/dev/ttyS0]",
        "[default: \"shutdown -P now\"]",
        "Steps, in order",
        "  install-emulator-containers TOOLS/install-emulator-containers; fail with its status",
        "Exit status:",
    ] {
        assert!(
            help_contains(&help, needle),
            "--help lacks {needle:?}:\n{help}"
        );
    }
    assert!(!help.contains("test-panic"), "the test knob stays hidden");
}

#[test]
fn version() {
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("provision-build"))
        .stderr_is("");
}

#[test]
fn bad_arguments_are_usage_errors_and_run_nothing() {
    let rig = Rig::new();
    for (args, message) in [
        (&["--bogus=1"][..], "unexpected argument '--bogus'"),
        (
            &["--tools-dir=x", "extra"][..],
            "unexpected argument 'extra'",
        ),
        (
            &["--shutdown-delay=soon"][..],
            "invalid value 'soon' for '--shutdown-delay <DURATION>': expected a number of seconds",
        ),
        (&["--force-poweroff="][..], "must name a command"),
        (&["--shutdown=shutdown 'now"][..], "missing closing quote"),
    ] {
        rig.cmd_with(args)
            .run()
            .code_is(2)
            .stdout_is("")
            .stderr_contains(message);
    }
    assert!(rig.calls().is_empty());
    assert!(!rig.log_path().exists());
}

/// Once STACK_CLOUD_INIT_DONE is written, a stop signal during the power-off is the power-off
/// under way, not a failure to report after the marker.
#[test]
fn a_stop_signal_during_the_final_power_off_is_not_a_failure() {
    let rig = Rig::new();
    rig.make("shutdown", "sleep");
    let mut child = rig.spawn(&["--stop-grace=60"]);
    let pidfile = rig.path("shutdown.pid");
    wait_until(Duration::from_secs(20), || pidfile.exists());
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(143));
    std::thread::sleep(Duration::from_millis(500));
    assert!(rig.log().ends_with("\nSTACK_CLOUD_INIT_DONE\n"));
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_DONE\n");
    assert!(rig.calls_of("poweroff").is_empty());
}

/// As in the original (`shutdown -P now` under `set -e`), a failing power-off command is a
/// failure: the failure block's two stages then get their turn.
#[test]
fn a_failing_final_power_off_runs_the_failure_block() {
    let rig = Rig::new();
    rig.make("shutdown", "exit 5");
    rig.cmd().run().code_is(5).stderr_contains(&format!(
        "provision-build: powering off with `{} -P now`: exit status 5\n",
        rig.path("sbin/shutdown").display()
    ));
    assert!(rig.log().ends_with(
        "\nSTACK_CLOUD_INIT_DONE\nERROR: provision-build exited with code 5\nSTACK_CLOUD_INIT_FAILED\n"
    ));
    assert_eq!(
        rig.read(rig.console()),
        "STACK_CLOUD_INIT_DONE\nSTACK_CLOUD_INIT_FAILED\n"
    );
    assert_eq!(
        rig.wait_for_calls("poweroff", 1),
        ["poweroff|-f"],
        "the second stage"
    );
    assert_eq!(
        rig.calls_of("shutdown").len(),
        2,
        "the final one, then the first stage"
    );
}

/// A log file that cannot be truncated fails the build, as the original's `: > FILE` did under
/// `set -e`; the consoles still get the marker and the power-off is requested.
#[test]
fn a_log_file_that_cannot_be_written_fails_the_build() {
    let rig = Rig::new();
    std::fs::create_dir(rig.log_path()).unwrap();
    rig.cmd().run().code_is(1).stderr_contains(&format!(
        "provision-build: truncating {}: Is a directory (os error 21)\n",
        rig.log_path().display()
    ));
    assert_eq!(rig.calls_of("mount-host-fs").len(), 1);
    assert!(rig.calls_of("systemctl").is_empty(), "nothing after it ran");
    assert_eq!(rig.read(rig.console()), "STACK_CLOUD_INIT_FAILED\n");
    assert_eq!(rig.wait_for_calls("poweroff", 1), ["poweroff|-f"]);
}

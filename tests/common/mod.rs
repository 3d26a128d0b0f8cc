//! The harness: locate the built tools, run them, assert on what they did.
//!
//! Tools are run from `target/<profile>/` next to this test binary, built by the harness before
//! the first test uses one ([`bin_dir`]), or from `HEXCLAVE_TEST_BIN_DIR` when set (to test a
//! musl or cross build as it is).
//!
//! Prerequisites (root, docker, loop devices, …) are checked with [`require`]: outside CI a
//! missing one skips the test with a note on stderr; under `CI=true` it fails the test, so a
//! missing install step can never pass unnoticed.

#![allow(dead_code)]

pub mod docker;
pub mod fake_emulator;
pub mod listeners;
pub mod sandbox;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the built tools.
///
/// Unless `HEXCLAVE_TEST_BIN_DIR` names prebuilt binaries, the first call builds the tools with
/// cargo (a no-op when `make test` has just done so), so that a plain `cargo test` never runs
/// binaries older than the source.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEXCLAVE_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_tools).clone()
}

/// The cargo features the suite's tool builds have on (`make test` builds with the same).
pub const TOOL_FEATURES: &str = "test-hooks";

/// Builds every tool of the workspace, with [`TOOL_FEATURES`], into the profile folder this test
/// binary came from; returns that folder.
fn build_tools() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/tools-<hash> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    let profile = match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("no profile folder above {}", exe.display()),
    };
    let built = cargo_build(&[
        "--workspace",
        "--bins",
        "--profile",
        profile,
        "--features",
        TOOL_FEATURES,
    ]);
    if let Err(why) = built {
        panic!("{why}; run `make test` to see why");
    }
    dir
}

/// `cargo build --quiet ARGS…` in this workspace and its target directory, as `make test` runs
/// the same builds (a no-op right after it). The error says which build failed.
pub fn cargo_build(args: &[&str]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("the test binary's path: {e}"))?;
    // target/<profile>/deps/tools-<hash> -> target
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace");
    let status = Command::new(&cargo)
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", Path::new(&cargo).display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build {}` failed ({status})",
            args.join(" ")
        ))
    }
}

/// The path of a built tool; panics with the command to run when it is missing.
pub fn tool_path(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `make test` (or `cargo build --workspace --bins --features test-hooks`) first",
        path.display()
    );
    path
}

/// A command for a built tool, with the provision-log knobs cleared so the caller's
/// environment cannot leak into a test.
pub fn tool(name: &str) -> Cmd {
    let mut cmd = Command::new(tool_path(name));
    for knob in ["STACK_PROVISION_LOG_FILE", "HEXCLAVE_PROVISION_LOG_FILE"] {
        cmd.env_remove(knob);
    }
    Cmd {
        cmd,
        stdin: Vec::new(),
    }
}

pub struct Cmd {
    pub cmd: Command,
    stdin: Vec<u8>,
}

impl Cmd {
    /// Wraps a prepared command (e.g. one that enters a sandbox first).
    pub fn from_command(cmd: Command) -> Self {
        Cmd {
            cmd,
            stdin: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(mut self, input: impl AsRef<[u8]>) -> Self {
        self.stdin = input.as_ref().to_vec();
        self
    }

    /// Runs to completion, feeding stdin and capturing stdout and stderr.
    pub fn run(self) -> Run {
        let (child, feeder) = self.spawn_fed();
        let output = child.wait_with_output().expect("wait for tool");
        feeder.join().expect("stdin feeder");
        Run(output)
    }

    /// Starts the tool with its three streams piped, stdin fed from a thread of its own.
    fn spawn_fed(mut self) -> (std::process::Child, std::thread::JoinHandle<()>) {
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tool");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = std::mem::take(&mut self.stdin);
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        (child, feeder)
    }
}

impl Cmd {
    /// Like [`Cmd::run`], but a tool still running after `limit` is killed and the test fails:
    /// a hang must fail its test, not stall the suite.
    #[track_caller]
    pub fn run_within(self, limit: Duration) -> Run {
        use std::io::Read;
        // The feeder is not joined: a hung tool may never read its stdin.
        let (mut child, _feeder) = self.spawn_fed();
        let reader = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
        let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for tool") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.join().unwrap_or_default();
                panic!(
                    "the tool did not finish within {limit:?} (killed); stdout so far:\n{}",
                    String::from_utf8_lossy(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run(Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        })
    }
}

/// A finished run.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }

    pub fn stdout(&self) -> &[u8] {
        &self.0.stdout
    }

    pub fn stderr(&self) -> &[u8] {
        &self.0.stderr
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    #[track_caller]
    pub fn code_is(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "exit status\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout_str(),
            self.stderr_str()
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code_is(0)
    }

    #[track_caller]
    pub fn stdout_is(&self, expected: impl AsRef<[u8]>) -> &Self {
        assert_eq!(
            String::from_utf8_lossy(self.stdout()),
            String::from_utf8_lossy(expected.as_ref()),
            "stdout"
        );
        assert_eq!(self.stdout(), expected.as_ref(), "stdout bytes");
        self
    }

    #[track_caller]
    pub fn stderr_is(&self, expected: impl AsRef<[u8]>) -> &Self {
        assert_eq!(
            self.stderr_str(),
            String::from_utf8_lossy(expected.as_ref()),
            "stderr"
        );
        self
    }

    #[track_caller]
    pub fn stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr_str().contains(needle),
            "stderr does not contain {needle:?}:\n{}",
            self.stderr_str()
        );
        self
    }
}

/// What `NAME --version` prints: the build's identity, as the tools were built with the same
/// `shared` as this test binary (the same commit, target and profile).
pub fn version_text(name: &str) -> String {
    use shared::stamp::{COMMIT, PROFILE, TARGET, VERSION};
    format!("{name} {VERSION}\ncommit:  {COMMIT}\ntarget:  {TARGET}\nprofile: {PROFILE}\n")
}

/// Whether a help text holds `needle`, wherever the help's wrapping broke its lines: runs of
/// blanks and line breaks count as one blank on both sides.
pub fn help_contains(help: &str, needle: &str) -> bool {
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    help.contains(needle) || flat(help).contains(&flat(needle))
}

/// A fresh temporary directory, removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hexclave-test-")
        .tempdir()
        .expect("create scratch directory")
}

/// Writes a fixed script of the test's own at `path`, mode 0755.
///
/// Write it well before it runs: a child forked by another test thread while the file is open
/// for writing holds that descriptor until it executes, and running the script then fails with
/// ETXTBSY.
pub fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Polls `done` every 20 ms; panics when it is still false after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `child` (a tool run directly, or under nsenter, which execs it without
/// forking) and waits for it; fails unless it exits within `within`.
#[track_caller]
pub fn terminate(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let signalled = Instant::now();
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait for the tool");
    assert!(
        signalled.elapsed() < within,
        "SIGTERM took {:?} to end the tool",
        signalled.elapsed()
    );
    status
}

/// provision-build's recording stand-in (`tests/fixtures/provision-build/stand-in`), reached
/// through symbolic links named like the programs it replaces.
pub fn provision_stand_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/provision-build/stand-in")
}

/// Whether this run is CI's, where no test may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks a prerequisite. When `ok` is false: panics under CI, else notes the skip and returns
/// false so the test can return early.
#[track_caller]
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("prerequisite missing under CI=true: {what} (make test installs it)");
    }
    eprintln!("skipped: prerequisite missing: {what} (run `make test` to install it)");
    false
}

/// Whether we are root (mount namespaces, loop devices and dockerd need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is found on PATH.
pub fn has_program(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Expands to an early `return` from the test when a prerequisite is missing (outside CI).
#[allow(unused_macros)]
macro_rules! require {
    ($ok:expr, $what:expr) => {
        if !$crate::common::require($ok, $what) {
            return;
        }
    };
}

/// A pseudo-terminal: the master for the test, the slave to give a tool as a stream.
pub fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the two ints; the name, termios and
    // window size arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

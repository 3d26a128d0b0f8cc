//! The one way the tools drive docker: its command-line client, with argv only.
//!
//! Why the CLI and not the engine's API socket: the original scripts' exact `docker` arguments
//! are the contract (CONTRACT.md quotes them; `docker run … stack-local-emulator` and
//! `docker exec -e … stack /usr/local/bin/rotate-secrets` must stay as they are), the CLI already
//! honours `DOCKER_HOST`, contexts and the config file the way an operator expects, and running
//! the same program with the same arguments lets an operator replay any step by hand. An HTTP
//! client for the socket would re-implement `run`, `exec` and `load` and still have to be proven
//! to match.
//!
//! Every command is a program and a list of arguments started by [`crate::process::Program`] (or
//! `exec`ed when the tool hands its process over), never a string a shell parses, so nothing read
//! from a file, stdin or the network can become a command. Secrets never go into argv, where
//! every user of the machine can read them in `/proc/*/cmdline`: [`DockerCommand::secret_env`]
//! puts `-e NAME` in argv and the value in the client's environment, from which docker copies it
//! into the container. Values are redacted in `Debug` and never part of a displayed command.
//!
//! Errors name the whole command as an operator would type it, its exit status and the last lines
//! of its stderr, so that "docker failed" always says which call and why.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::process::{Child, ChildStdin, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{self, Program};

/// The program run when no other is configured; `DOCKER_HOST` is honoured by the program itself.
pub const DEFAULT_PROGRAM: &str = "docker";

/// How many of the last stderr lines an error quotes, and at most how many bytes of them.
const STDERR_TAIL_LINES: usize = 5;
const STDERR_TAIL_BYTES: usize = 1000;

/// The docker client program to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Docker {
    program: OsString,
}

impl Default for Docker {
    fn default() -> Self {
        Docker::new(DEFAULT_PROGRAM)
    }
}

impl Docker {
    /// A client run as `program` (a name looked up on PATH, or a path).
    pub fn new(program: impl Into<OsString>) -> Self {
        Docker {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// `docker ARGS…`, to be extended and then run.
    pub fn command<I, S>(&self, args: I) -> DockerCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        DockerCommand {
            program: self.program.clone(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            input: None,
        }
    }

    /// Whether the engine answers `docker info`.
    pub fn answers(&self) -> bool {
        self.command(["info"]).read().is_ok()
    }

    /// The ID (`sha256:…`) of the image `reference` (`name` means `name:latest`), or `None` when
    /// the engine has no such image. An engine that does not answer is an error.
    pub fn image_id(&self, reference: &str) -> Result<Option<String>> {
        let listing = self
            .command([
                "image",
                "ls",
                "--no-trunc",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
            ])
            .read()?;
        Ok(image_id_in(&listing, reference))
    }

    /// The names of the engine's volumes.
    pub fn volume_names(&self) -> Result<Vec<String>> {
        let names = self.command(["volume", "ls", "--quiet"]).read()?;
        Ok(names.lines().map(str::to_string).collect())
    }

    /// Stops the container `name` with `docker stop --time GRACE` (its processes get SIGTERM and
    /// `grace` to exit, then SIGKILL) and makes sure it is gone: a container started with `--rm`
    /// removes itself once stopped, and any other is removed here. A container that does not
    /// exist is not an error; one still there after all that is.
    ///
    /// The stop is not preceded by a look: every caller has just seen or started the container,
    /// and each docker call costs a second in a TCG guest. Whether the container is gone is
    /// asked after it.
    pub fn stop_and_remove(&self, name: &str, grace: Duration) -> Result<()> {
        // Fails harmlessly when the container does not exist, already stopped or is being
        // removed: the loop below tells those apart.
        let _ = self
            .command(["stop", "--time", &grace.as_secs().to_string(), name])
            .read();
        // `--rm` removal runs in the engine after the stop returns; `rm -f` meanwhile may be
        // refused ("removal already in progress"), so ask again until it is gone.
        let deadline = Instant::now() + REMOVAL_WAIT;
        loop {
            if !self.container_exists(name)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return self.remove_container(name);
            }
            let _ = self.command(["rm", "--force", name]).read();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether a container (running or not) is named exactly `name`.
    pub fn container_exists(&self, name: &str) -> Result<bool> {
        // The name filter is a regular expression and matches substrings, so the names it
        // returns are compared exactly here rather than trusting the filter.
        let names = self
            .command(["ps", "--all", "--no-trunc", "--format", "{{.Names}}"])
            .args(["--filter", &format!("name={name}")])
            .read()?;
        Ok(names_include(&names, name))
    }

    /// `docker rm -f NAME`; a container that does not exist is not an error.
    pub fn remove_container(&self, name: &str) -> Result<()> {
        match self.command(["rm", "-f", name]).read() {
            Ok(_) => Ok(()),
            // Older engines fail `rm -f` on a missing container; asking again tells that apart
            // from a real failure without parsing their wording.
            Err(err) => match self.container_exists(name) {
                Ok(false) => Ok(()),
                _ => Err(err),
            },
        }
    }
}

/// How long [`Docker::stop_and_remove`] waits for a stopped container to disappear.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);

/// The ID of `reference` in lines of `REPOSITORY:TAG ID`; `name` stands for `name:latest`.
fn image_id_in(listing: &str, reference: &str) -> Option<String> {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let wanted = if last.contains(':') || last.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    };
    listing.lines().find_map(|line| {
        let (name, id) = line.trim_end_matches('\r').rsplit_once(' ')?;
        (name == wanted).then(|| id.to_string())
    })
}

/// Whether `name` is one of the lines of `docker ps --format {{.Names}}` output.
fn names_include(output: &str, name: &str) -> bool {
    output
        .lines()
        .any(|line| line.trim_end_matches('\r') == name)
}

/// A value passed to the client's environment only; never printed.
#[derive(Clone)]
struct Secret(OsString);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One docker invocation: the program, its arguments, and values for its environment.
#[derive(Debug, Clone)]
pub struct DockerCommand {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(String, Secret)>,
    /// What its stdin reads, when not closed or inherited.
    input: Option<Vec<u8>>,
}

impl DockerCommand {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends `-e NAME` to the arguments and gives the client `NAME=value` in its environment,
    /// from which `docker run`/`docker exec` copy it into the container. The value never appears
    /// in argv, in `Debug` or in [`fmt::Display`].
    pub fn secret_env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.args.push("-e".into());
        self.args.push(name.into());
        self.env.push((name.to_string(), Secret(value.into())));
        self
    }

    /// Feeds `bytes` to the command's stdin (`docker build -`, a Dockerfile).
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.input = Some(bytes.into());
        self
    }

    /// The program and arguments, for a runner of its own (the diagnostics streamer). Only for
    /// commands that carry no secret: the environment is not part of an argv.
    pub fn into_argv(self) -> Vec<OsString> {
        debug_assert!(
            self.env.is_empty(),
            "a command with secrets needs its environment"
        );
        std::iter::once(self.program).chain(self.args).collect()
    }

    /// The program and its arguments, as `execve` receives them.
    pub fn argv(&self) -> Vec<&OsStr> {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .collect()
    }

    /// The names this command sets in the client's environment, in order.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env.iter().map(|(name, _)| name.as_str())
    }

    /// The command as a [`Program`], secret values in its environment.
    fn program(&self) -> Program {
        let mut program = Program::new(&self.program);
        program.args(&self.args);
        for (name, Secret(value)) in &self.env {
            program.env(name, value);
        }
        program
    }

    /// Runs to completion with stdin closed (or fed the given bytes), stdout and stderr
    /// captured; returns stdout (lossy UTF-8, trailing newlines removed). A non-zero exit is an
    /// error naming the command, its status and the tail of its stderr.
    pub fn read(&self) -> Result<String> {
        let output = self
            .program()
            .output(self.input.clone())
            .map_err(|err| self.start_error(&err))?;
        checked_stdout(&self.to_string(), &output)
    }

    /// As [`DockerCommand::read`], for a command that may run long: every `every` while it runs,
    /// `tick` is called with the time so far and the client's process id, so that the caller
    /// can report progress (e.g. from `/proc/PID/io`).
    pub fn read_with_progress(
        &self,
        every: Duration,
        tick: impl FnMut(Duration, u32),
    ) -> Result<String> {
        let output = self
            .program()
            .capture(self.input.clone(), every, tick)
            .map_err(|err| self.start_error(&err))?;
        checked_stdout(&self.to_string(), &output)
    }

    /// `self | next`: two processes joined by a pipe, no shell; stdout of `next` is returned,
    /// both stderrs are captured for the error. The pipeline fails when either side fails (the
    /// right side's status wins, as with `set -o pipefail`). `tick` is called every `every` with
    /// the time so far and the left side's process id.
    pub fn pipe_with_progress(
        &self,
        next: &DockerCommand,
        every: Duration,
        tick: impl FnMut(Duration, u32),
    ) -> Result<String> {
        let shown = format!("{self} | {next}");
        let output = self
            .program()
            .pipe_into(next.program(), every, tick)
            .map_err(|err| Error::new(format!("running `{shown}`"), err))?;
        checked_stdout(&shown, &output)
    }

    /// Runs to completion with stdin, stdout and stderr inherited and returns its exit status,
    /// whatever it is; only failing to start is an error.
    pub fn status(&self) -> Result<ExitStatus> {
        self.program()
            .status()
            .map_err(|err| self.start_error(&err))
    }

    /// Replaces this process with the command (its exit status becomes ours). Returns only when
    /// that failed: the error's code is 127 when the program was not found, else 126, as a
    /// shell's `exec` would exit.
    pub fn exec(self) -> Error {
        let err = self.program().exec();
        self.start_error(&err)
            .with_code(process::not_started_code(&err))
    }

    /// Starts the command with a pipe on its stdin for this process to write (`… | docker
    /// load`), stdout inherited and stderr captured for [`Feeding::finish`]'s error.
    pub fn feed(&self) -> Result<Feeding> {
        let mut program = self.program();
        program.stdin(Stdio::piped()).stderr(Stdio::piped());
        let mut child = program.spawn().map_err(|err| self.start_error(&err))?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                text
            })
        });
        Ok(Feeding {
            command: self.to_string(),
            child,
            stdin,
            stderr,
        })
    }

    /// Starts the command with stdin inherited and its stdout and stderr into one pipe, as
    /// `2>&1 |` gives a shell pipeline; returns the child and the pipe's read end.
    pub fn spawn_merged(&self) -> Result<(Child, File)> {
        self.program()
            .spawn_merged()
            .map_err(|err| self.start_error(&err))
    }

    fn start_error(&self, err: &io::Error) -> Error {
        let why = if err.kind() == io::ErrorKind::NotFound {
            format!(
                "{err} (is `{}` installed and on PATH?)",
                self.program.to_string_lossy()
            )
        } else {
            err.to_string()
        };
        Error::new(format!("running `{self}`"), why)
    }
}

/// A running command this process feeds on stdin: see [`DockerCommand::feed`].
pub struct Feeding {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Feeding {
    /// The command's stdin; `None` once [`Feeding::close_stdin`] was called.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// Closes the command's stdin: it sees the end of its input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Closes stdin and waits for the command. Returns what it wrote on stderr when it exited
    /// 0; otherwise an error naming the command, its status and the tail of its stderr.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.close_stdin();
        let status = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let what = || format!("running `{}`", self.command);
        let status = status.map_err(|err| Error::new(what(), err))?;
        if status.success() {
            Ok(stderr)
        } else {
            Err(Error::new(
                what(),
                format!(
                    "{}: {}",
                    process::describe_status(status),
                    stderr_tail(&stderr)
                ),
            ))
        }
    }

    /// Kills the command (SIGKILL: it cannot finish what it was given) and reaps it. Its
    /// stderr reader is left to end on its own, should something the command started still
    /// hold the pipe.
    pub fn abort(mut self) {
        self.close_stdin();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command as an operator would type it (arguments quoted for a POSIX shell where needed).
/// Holds no secret value: those are only ever in the environment.
impl fmt::Display for DockerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .argv()
            .iter()
            .map(|word| shell_words::quote(&word.to_string_lossy()).into_owned())
            .collect();
        f.write_str(&words.join(" "))
    }
}

/// The stdout of a finished command (lossy UTF-8, trailing newlines removed), or an error
/// naming `shown`, its status and the tail of its stderr.
fn checked_stdout(shown: &str, output: &Output) -> Result<String> {
    if !output.status.success() {
        return Err(Error::new(
            format!("running `{shown}`"),
            format!(
                "{}: {}",
                process::describe_status(output.status),
                stderr_tail(&output.stderr)
            ),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// The last few non-blank lines of `stderr`, joined with `; `, at most a fixed number of bytes.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return "no output on stderr".to_string();
    }
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("; ");
    if tail.len() <= STDERR_TAIL_BYTES {
        return tail;
    }
    let mut start = tail.len() - STDERR_TAIL_BYTES;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &tail[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate_like() -> DockerCommand {
        Docker::default()
            .command(["exec"])
            .secret_env("A_KEY", "s3cr3t-value")
            .secret_env("B_KEY", "other-secret")
            .args(["stack", "/usr/local/bin/rotate-secrets"])
    }

    #[test]
    fn secrets_are_names_in_argv_and_values_in_env() {
        let cmd = rotate_like();
        assert_eq!(
            cmd.argv(),
            [
                "docker",
                "exec",
                "-e",
                "A_KEY",
                "-e",
                "B_KEY",
                "stack",
                "/usr/local/bin/rotate-secrets"
            ]
        );
        assert_eq!(cmd.env_names().collect::<Vec<_>>(), ["A_KEY", "B_KEY"]);
        for shown in [cmd.to_string(), format!("{cmd:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(!shown.contains("other-secret"), "{shown}");
        }
    }

    #[test]
    fn display_quotes_like_a_shell() {
        let cmd = Docker::new("/opt/my docker").command(["ps", "--format", "{{.Names}}", "a'b"]);
        assert_eq!(
            cmd.to_string(),
            r#"'/opt/my docker' ps --format {{.Names}} 'a'\''b'"#
        );
    }

    #[test]
    fn secret_reaches_the_child_environment_only() {
        let out = Docker::new("sh")
            .command(["-c", "printf %s \"$A_KEY\""])
            .secret_env("A_KEY", "v4lue")
            .read()
            .unwrap();
        // `-e A_KEY` follows the script as positional parameters; only the value matters here.
        assert_eq!(out, "v4lue");
    }

    #[test]
    fn failure_names_command_status_and_stderr_tail() {
        let err = Docker::new("sh")
            .command([
                "-c",
                "for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3",
            ])
            .read()
            .unwrap_err();
        assert_eq!(
            err.what(),
            "running `sh -c 'for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3'`"
        );
        assert_eq!(
            err.why(),
            "exit status 3: line3; line4; line5; line6; line7"
        );
    }

    #[test]
    fn silent_failure_says_so() {
        let err = Docker::new("false").command(["x"]).read().unwrap_err();
        assert_eq!(
            err.to_string(),
            "running `false x`: exit status 1: no output on stderr"
        );
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let err = Docker::new("/nonexistent/docker")
            .command(["ps"])
            .read()
            .unwrap_err();
        assert_eq!(err.what(), "running `/nonexistent/docker ps`");
        assert!(
            err.why().contains("is `/nonexistent/docker` installed"),
            "{err}"
        );
        let err = Docker::new("/nonexistent/docker").command(["ps"]).exec();
        assert_eq!(err.code(), 127);
    }

    #[test]
    fn status_is_returned_not_an_error() {
        let status = Docker::new("sh")
            .command(["-c", "exit 4"])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(4));
    }

    #[test]
    fn long_stderr_is_cut_from_the_front() {
        let tail = stderr_tail("é".repeat(2000).as_bytes());
        assert!(tail.starts_with('…'));
        assert!(tail.len() <= STDERR_TAIL_BYTES + '…'.len_utf8());
    }

    #[test]
    fn remove_fails_when_the_engine_does_not_answer() {
        // `false` fails both the removal and the question whether the container exists.
        let err = Docker::new("false").remove_container("x").unwrap_err();
        assert_eq!(err.what(), "running `false rm -f x`");
        assert!(Docker::new("false").container_exists("x").is_err());
    }

    #[test]
    fn image_ids_are_found_by_exact_reference() {
        let listing = "stack-local-emulator:final sha256:aaa\n\
                       stack-local-emulator:latest sha256:bbb\n\
                       registry:5000/x:latest sha256:ccc\n\
                       <none>:<none> sha256:ddd\n";
        let id = |r: &str| image_id_in(listing, r);
        assert_eq!(id("stack-local-emulator").as_deref(), Some("sha256:bbb"));
        assert_eq!(
            id("stack-local-emulator:final").as_deref(),
            Some("sha256:aaa")
        );
        assert_eq!(id("registry:5000/x").as_deref(), Some("sha256:ccc"));
        assert_eq!(id("stack-local-emulator-slim"), None);
        assert_eq!(id("stack"), None);
    }

    #[test]
    fn stdin_bytes_reach_the_command() {
        let out = Docker::new("cat")
            .command(Vec::<String>::new())
            .stdin_bytes("FROM x\n")
            .read()
            .unwrap();
        assert_eq!(out, "FROM x");
    }

    #[test]
    fn a_pipe_joins_two_processes_and_fails_when_either_side_does() {
        let sh = Docker::new("sh");
        let upper = sh.command(["-c", "tr a-z A-Z"]);
        let out = sh
            .command(["-c", "echo hello"])
            .pipe_with_progress(&upper, Duration::from_secs(5), |_, _| {})
            .unwrap();
        assert_eq!(out, "HELLO");
        let err = sh
            .command(["-c", "echo broken >&2; exit 3"])
            .pipe_with_progress(&upper, Duration::from_secs(5), |_, _| {})
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "running `sh -c 'echo broken >&2; exit 3' | sh -c 'tr a-z A-Z'`: exit status 3: broken"
        );
        let err = sh
            .command(["-c", "echo fine"])
            .pipe_with_progress(
                &sh.command(["-c", "cat >/dev/null; exit 4"]),
                Duration::from_secs(5),
                |_, _| {},
            )
            .unwrap_err();
        assert!(err.why().starts_with("exit status 4"), "{err}");
    }

    #[test]
    fn progress_ticks_while_a_command_runs() {
        let mut ticks = Vec::new();
        let out = Docker::new("sh")
            .command(["-c", "sleep 0.35; echo done"])
            .read_with_progress(Duration::from_millis(100), |elapsed, pid| {
                ticks.push((elapsed, pid));
            })
            .unwrap();
        assert_eq!(out, "done");
        assert!((2..=4).contains(&ticks.len()), "{ticks:?}");
        assert!(ticks.iter().all(|&(_, pid)| pid > 0));
    }

    #[test]
    fn feed_writes_stdin_and_reports_failure_with_stderr() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("docker-feed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("fed");
        let mut feeding = Docker::new("sh")
            .command(["-c", "cat > \"$1\"; echo warned >&2", "sh"])
            .arg(&out)
            .feed()
            .unwrap();
        feeding.stdin().unwrap().write_all(b"payload").unwrap();
        assert_eq!(feeding.finish().unwrap(), b"warned\n");
        assert_eq!(std::fs::read(&out).unwrap(), b"payload");

        let feeding = Docker::new("sh")
            .command(["-c", "cat >/dev/null; echo 'no space left' >&2; exit 1"])
            .feed()
            .unwrap();
        let err = feeding.finish().unwrap_err();
        assert_eq!(err.why(), "exit status 1: no space left");

        // An aborted command is killed even while it waits for more input.
        let mut feeding = Docker::new("sh")
            .command(["-c", "sleep 30"])
            .feed()
            .unwrap();
        assert!(feeding.stdin().is_some());
        let started = std::time::Instant::now();
        feeding.abort();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn spawn_merged_keeps_the_order_of_both_streams() {
        use std::io::Read;
        let (mut child, mut pipe) = Docker::new("sh")
            .command(["-c", "echo one; echo two >&2; echo three; exit 6"])
            .spawn_merged()
            .unwrap();
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        assert_eq!(text, "one\ntwo\nthree\n");
        assert_eq!(child.wait().unwrap().code(), Some(6));
    }

    #[test]
    fn container_names_match_exactly() {
        let output = "stack-build-init\nmy.stack\r\n";
        assert!(names_include(output, "stack-build-init"));
        assert!(names_include(output, "my.stack"));
        assert!(!names_include(output, "stack"));
        assert!(!names_include("", "stack"));
    }
}

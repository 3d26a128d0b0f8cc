//! `run-build-migrations`: migrate and seed the databases once, at image build time.
//!
//! The steps and log lines are the original's: start the deps-only container
//! (`stack-build-init`), wait for its five services (the wait-for-deps logic, run in-process with
//! its own lines), wait for `init-services.sh` to leave its marker, run the migrate-and-seed
//! command exactly as the original did, stop the container.
//!
//! What changed: the original left the deps container running on every failure and could not
//! start at all while a stale `stack-build-init` existed. Here a stale container is removed
//! first, and once started the container is stopped and removed on every way out — success,
//! failed deps, init timeout, failed migrations, an error, SIGTERM or SIGINT ([`Interrupt`]).
//! The migrations' output is kept in a bounded ring of its last 200 lines ([`LastLines`]), not
//! in a temporary file, and on failure goes through the provision log with the prefix `migrate`.
//! The init wait is a command probe of the [wait engine](shared::wait), bounded per attempt, with
//! a heartbeat line every 30 s (new).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use shared::docker::Docker;
use shared::duration::seconds;
use shared::emulator::volumes::volume_args;
use shared::error::Result;
use shared::log::ProvisionLog;
use shared::log::diagnostics;
use shared::log::tail::LastLines;
use shared::os::interrupt::Interrupt;
use shared::os::signal::exit_status;
use shared::wait::{self, Event, Options, Outcome, Probe, Target};
use wait_for_deps::deps;

pub const TOOL: &str = "run-build-migrations";
/// The image the deps container runs.
pub const DEFAULT_IMAGE: &str = shared::emulator::IMAGE;
/// The deps container's name.
pub const DEFAULT_CONTAINER: &str = shared::emulator::DEPS_CONTAINER;
/// The file `init-services.sh` creates inside the container when it is done.
pub const DEFAULT_INIT_MARKER: &str = "/var/run/stack-local-init-services.done";
/// How long `init-services.sh` may take once the deps answer.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The cap on one `docker exec … test -f` of the init wait.
pub const INIT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `docker stop` lets the container's processes exit before it kills them (docker's
/// own default).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many lines of the migrations' output a failure shows.
pub const TAIL_LINES: usize = 200;
/// The most bytes of those lines kept in memory.
pub const TAIL_BYTES: usize = 1024 * 1024;
/// How often a long migration run is reported.
pub const MIGRATION_HEARTBEAT: Duration = Duration::from_secs(60);

/// The command run inside the container: the original's, word for word. The node flags keep V8
/// off its optimising tiers, which cross-architecture TCG mistranslates; they are no-ops under
/// KVM and must be on node's command line (NODE_OPTIONS rejects them). This string is fixed
/// here, never built from input.
pub const MIGRATE_AND_SEED: &str = "cd /app/apps/backend && node --no-opt --no-wasm-tier-up \
    --no-wasm-dynamic-tiering --no-wasm-code-gc dist/db-migrations.mjs migrate && node --no-opt \
    --no-wasm-tier-up --no-wasm-dynamic-tiering --no-wasm-code-gc dist/db-migrations.mjs seed";

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub docker: OsString,
    pub image: String,
    pub container: String,
    pub build_env: PathBuf,
    pub computed_env: PathBuf,
    pub init_marker: String,
    pub init_timeout: Duration,
    pub stop_timeout: Duration,
    /// The wait-for-deps targets (the defaults with any `--target` overrides merged in).
    pub deps_targets: Vec<Target>,
    /// The wait-for-deps timing (its whole-wait timeout is `STACK_DEPS_TIMEOUT`).
    pub deps_options: Options,
}

fn say<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(text.as_bytes());
}

/// A line of ours (not the original's): prefixed with the tool's name.
fn note<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(format!("{TOOL}: {text}").as_bytes());
}

/// Runs the whole tool; returns its exit status. The container is gone whatever happens once
/// this returns, unless removing it failed, which is then the error.
pub fn run<W: Write>(
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<u8> {
    let docker = Docker::new(&config.docker);
    say(log, "Starting deps container...");
    if docker.container_exists(&config.container)? {
        note(
            log,
            &format!("removing stale container {}", config.container),
        );
        docker.stop_and_remove(&config.container, config.stop_timeout)?;
    }
    let outcome = match interrupt.signal() {
        Some(sig) => Ok(interrupted(log, sig)),
        None => {
            start_container(&docker, config).and_then(|()| steps(&docker, config, interrupt, log))
        }
    };
    interrupt.acknowledge();
    say(log, "Stopping deps container...");
    let stopped = docker.stop_and_remove(&config.container, config.stop_timeout);
    let code = outcome?;
    stopped?;
    if code == 0 {
        say(log, "run-build-migrations done.");
    }
    Ok(code)
}

/// The original's `docker run`, argument for argument.
fn start_container(docker: &Docker, config: &Config) -> Result<()> {
    docker
        .command(["run", "--rm", "--name", config.container.as_str()])
        .args(["--network", "host", "-e", "STACK_DEPS_ONLY=true"])
        .args(volume_args())
        .args(["-d", config.image.as_str()])
        .read()
        .map(drop)
}

fn interrupted<W: Write>(log: &mut ProvisionLog<W>, sig: nix::sys::signal::Signal) -> u8 {
    note(log, &format!("interrupted by {}", sig.as_str()));
    exit_status(sig)
}

/// Everything between starting and stopping the container: the deps, the init marker, the
/// migrations, each ending the run early with its status. Returns the exit status.
fn steps<W: Write>(
    docker: &Docker,
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<u8> {
    let code = wait_for_deps(docker, config, log);
    if code != 0 {
        return Ok(code);
    }
    if let Some(sig) = interrupt.signal() {
        return Ok(interrupted(log, sig));
    }
    say(log, "Deps ready.");
    let code = wait_for_init(docker, config, log);
    if code != 0 {
        return Ok(code);
    }
    run_migrations(docker, config, interrupt, log)
}

/// The deps wait, as wait-for-deps runs it, against the deps container.
fn wait_for_deps<W: Write>(docker: &Docker, config: &Config, log: &mut ProvisionLog<W>) -> u8 {
    say(
        log,
        "Waiting for deps (postgres, redis, clickhouse, minio, qstash)...",
    );
    let deps_config = deps::Config {
        targets: config.deps_targets.clone(),
        options: config.deps_options.clone(),
        container: config.container.clone(),
        docker: docker.clone(),
        probe_timeout: deps::DEFAULT_PROBE_TIMEOUT,
        command_timeout: diagnostics::DEFAULT_LIMIT,
    };
    deps::run(&deps_config, log)
}

/// Waits until `init-services.sh` has left its marker in the container (`docker exec … test
/// -f`), with a heartbeat; returns 0 when it did, else the exit status.
fn wait_for_init<W: Write>(docker: &Docker, config: &Config, log: &mut ProvisionLog<W>) -> u8 {
    say(log, "Waiting for init-services.sh...");
    let probe = Probe::Command(
        [
            docker.program(),
            "exec".as_ref(),
            config.container.as_ref(),
            "test".as_ref(),
            "-f".as_ref(),
            config.init_marker.as_ref(),
        ]
        .iter()
        .map(|s| s.to_os_string())
        .collect(),
    );
    let targets = [Target::new("init-services", probe)];
    let options = Options::new(config.init_timeout, INIT_ATTEMPT_TIMEOUT);
    let report = wait::run(&targets, &options, |event| {
        if let Event::Heartbeat { elapsed, .. } = event {
            note(
                log,
                &format!(
                    "still waiting for init-services.sh ({}s elapsed)",
                    elapsed.as_secs()
                ),
            );
        }
    });
    match report.outcome {
        Outcome::Ready => {}
        Outcome::TimedOut => {
            say(
                log,
                &format!(
                    "ERROR: init-services.sh did not finish within {}",
                    seconds(config.init_timeout)
                ),
            );
            for line in report.failing_lines() {
                note(log, &line);
            }
            return 1;
        }
        Outcome::Interrupted(sig) => return interrupted(log, sig),
    }
    let after = report
        .targets
        .first()
        .and_then(|t| t.ready_after)
        .unwrap_or(report.elapsed);
    say(log, &format!("init-services done ({}s).", after.as_secs()));
    0
}

/// The migrate-and-seed run; on failure, the last lines of its output go to the log.
fn run_migrations<W: Write>(
    docker: &Docker,
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<u8> {
    say(log, "Running migrations...");
    let (status, tail) = migrate(docker, config, interrupt, log)?;
    if let Some(sig) = interrupt.signal() {
        return Ok(interrupted(log, sig));
    }
    if status != 0 {
        say(
            log,
            &format!(
                "MIGRATIONS FAILED (exit {status}) — last {TAIL_LINES} lines of migration output:"
            ),
        );
        // Reading from memory cannot fail.
        let _ = log.stream(&tail.to_bytes()[..], b"migrate");
        return Ok(status);
    }
    say(log, "Migrations + seed complete.");
    Ok(0)
}

/// Runs the migrate-and-seed command; returns its exit status (128+N when killed by a signal)
/// and the last lines of its output (stdout and stderr together, as the original's `2>&1`).
fn migrate<W: Write>(
    docker: &Docker,
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<(u8, LastLines)> {
    let command = docker
        .command(["exec", "--env-file"])
        .arg(&config.build_env)
        .arg("--env-file")
        .arg(&config.computed_env)
        .args([config.container.as_str(), "sh", "-c", MIGRATE_AND_SEED]);
    let (mut child, mut output) = command.spawn_merged()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // Killing the client ends the read below at once. The hook is dropped before the child is
    // reaped, so it can never signal a recycled pid.
    let hook = interrupt.kill_on_signal(move || {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    });
    let start = Instant::now();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let tail = std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let mut tail = LastLines::new(TAIL_LINES, TAIL_BYTES);
            let mut buf = vec![0u8; 64 * 1024];
            let read_to_end = loop {
                match output.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => tail.feed(&buf[..n]),
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break false,
                }
            };
            tail.finish();
            drop(done_tx);
            (tail, read_to_end)
        });
        while let Err(RecvTimeoutError::Timeout) = done_rx.recv_timeout(MIGRATION_HEARTBEAT) {
            note(
                log,
                &format!("migrations still running ({}s)", start.elapsed().as_secs()),
            );
        }
        reading.join()
    });
    let (tail, read_to_end) = tail.unwrap_or_else(|_| (LastLines::new(0, 0), false));
    // End of output means the command is exiting; after a failed read it is killed instead.
    if !read_to_end {
        let _ = child.kill();
    }
    drop(hook);
    let finished = child.wait().ok();
    let status = finished.map_or(1, shared::process::exit_code);
    Ok((status, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_originals() {
        // The original's line, copied whole.
        let original = "cd /app/apps/backend && node --no-opt --no-wasm-tier-up --no-wasm-dynamic-tiering --no-wasm-code-gc dist/db-migrations.mjs migrate && node --no-opt --no-wasm-tier-up --no-wasm-dynamic-tiering --no-wasm-code-gc dist/db-migrations.mjs seed";
        assert_eq!(MIGRATE_AND_SEED, original);
        assert_eq!(
            volume_args().join(" "),
            "-v stack-postgres-data:/data/postgres -v stack-redis-data:/data/redis \
             -v stack-clickhouse-data:/data/clickhouse -v stack-minio-data:/data/minio \
             -v stack-inbucket-data:/data/inbucket"
        );
    }
}

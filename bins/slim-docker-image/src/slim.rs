//! `slim-docker-image`: the slim image, its smoke test, the flatten, then the storage rebuild.
//!
//! The steps, their docker arguments and their log lines are the original's:
//!
//! 1. `docker build -t stack-local-emulator-slim -` with the original's Dockerfile on stdin
//!    ([`DOCKERFILE`], byte for byte): the standalone `node_modules` replaces the full one.
//! 2. The smoke test, unless `/etc/stack-build-arch.env` says `STACK_EMULATOR_BUILD_ARCH=arm64`
//!    (cross-architecture TCG cannot run the backend reliably): the slim image runs as
//!    `smoke-test` and must answer exactly 200 on `127.0.0.1:8102/health?db=1` within 300 s.
//!    Its three internal keys are fresh CSPRNG hex values passed by name (`-e NAME`, the value
//!    only in the docker client's environment): the original put them in docker's argv, where
//!    any process could read them from `/proc/*/cmdline`. The renamed variables (two of the keys,
//!    the computed env file's port prefix) also get their other generation's name. The arch file
//!    is parsed, not sourced.
//!    On failure: the original's diagnostics (`docker ps -a`, the container's last 200 lines,
//!    `free -m`, `curl -v`), the container removed, exit 1.
//! 3. The flatten: `docker create --name flatten …` and `docker export flatten | docker import
//!    --change … - stack-local-emulator:final`, two docker processes joined by a pipe, no shell.
//! 4. The [storage rebuild](crate::rebuild) and the [free space](crate::zero_fill), a
//!    recoverable state machine: when its state file exists, a run resumes it and skips 1–3,
//!    whose inputs the rebuild has already removed.
//!
//! Stale `smoke-test` and `flatten` containers (a crashed earlier run) are removed first, and
//! both are removed on every way out, SIGTERM and SIGINT included (exit 128+N). Long steps log
//! their progress; lines added to the original's start with `slim-docker-image: `.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::rebuild::State;
use shared::docker::{Docker, DockerCommand};
use shared::duration::seconds;
use shared::emulator::envfile;
use shared::emulator::keystore;
use shared::emulator::names::{
    self, PUBLISHABLE_CLIENT_KEY, SECRET_SERVER_KEY, SUPER_SECRET_ADMIN_KEY,
};
use shared::emulator::volumes::volume_args;
use shared::error::Result;
use shared::log::ProvisionLog;
use shared::log::diagnostics::{argv, stream_command};
use shared::log::progress::{Io, io_bytes, mib};
use shared::os::interrupt::Interrupt;
use shared::os::signal::exit_status;
use shared::wait::probe::{Answer, Endpoint, Host};
use shared::wait::{self, Event, Options, Outcome, Probe, StatusRule, Target};

pub const TOOL: &str = "slim-docker-image";
/// The image the slim one is built from, and the name the final image ends up under.
pub const DEFAULT_IMAGE: &str = shared::emulator::IMAGE;
pub const DEFAULT_SLIM_IMAGE: &str = "stack-local-emulator-slim";
pub const DEFAULT_FINAL_IMAGE: &str = "stack-local-emulator:final";
pub const DEFAULT_ARCH_ENV: &str = shared::emulator::BUILD_ARCH_ENV;
pub const ARCH_KEY: &str = "STACK_EMULATOR_BUILD_ARCH";
pub const DEFAULT_SMOKE_CONTAINER: &str = "smoke-test";
pub const DEFAULT_SMOKE_PORT: u16 = shared::emulator::BACKEND_PORT;
pub const SMOKE_PATH: &str = "/health?db=1";
pub const DEFAULT_SMOKE_TIMEOUT: Duration = Duration::from_secs(300);
/// The original's `curl --max-time 3` per attempt.
pub const SMOKE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_FLATTEN_CONTAINER: &str = "flatten";
/// How long `docker stop` gives a container before killing it (docker's own default).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often long steps log their progress.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// How long one diagnostics command may run.
const DIAGNOSTICS_LIMIT: Duration = Duration::from_secs(60);

/// The original's Dockerfile, byte for byte.
pub const DOCKERFILE: &str = "FROM stack-local-emulator
RUN rm -rf /app/node_modules /app/apps/backend/dist && \\
    mv /app/node_modules.standalone /app/node_modules && \\
    for entry in /app/node_modules/.pnpm/node_modules/*; do \\
      name=\"$(basename \"$entry\")\"; \\
      [ \"$name\" = \".bin\" ] && continue; \\
      ln -sf \".pnpm/node_modules/$name\" \"/app/node_modules/$name\" 2>/dev/null || true; \\
    done
";

/// The original's `docker import --change` lines.
pub const IMPORT_CHANGES: [&str; 4] = [
    "WORKDIR /app",
    "ENTRYPOINT [\"/entrypoint.sh\"]",
    "EXPOSE 5432 6379 2500 9001 1100 8071 8123 9009 9090 8080 8101 8102",
    "ENV DEBIAN_FRONTEND=noninteractive",
];

/// The keys the backend's entrypoint requires in emulator mode, minted fresh for the smoke test
/// (under their Hexclave names; the Stack Auth names follow, see [`smoke_test`]).
pub const SMOKE_KEYS: [&str; 3] = [
    PUBLISHABLE_CLIENT_KEY.hexclave,
    SECRET_SERVER_KEY.hexclave,
    SUPER_SECRET_ADMIN_KEY,
];

/// The variables the smoke test sets to fixed values, as the original did.
pub const SMOKE_FIXED: [&str; 3] = [
    "STACK_SKIP_MIGRATIONS=true",
    "STACK_SKIP_SEED_SCRIPT=true",
    "STACK_RUNTIME_WORK_DIR=/app",
];

/// The Dockerfile for `image`: the original's, with its `FROM` line naming `image`.
pub fn dockerfile(image: &str) -> String {
    match DOCKERFILE.strip_prefix("FROM stack-local-emulator\n") {
        Some(rest) if image != DEFAULT_IMAGE => format!("FROM {image}\n{rest}"),
        _ => DOCKERFILE.to_string(),
    }
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub docker: Docker,
    pub image: String,
    pub slim_image: String,
    pub build_env: PathBuf,
    pub computed_env: PathBuf,
    pub arch_env: PathBuf,
    pub smoke_container: String,
    pub smoke_port: u16,
    pub smoke_timeout: Duration,
    pub flatten_container: String,
    /// How long `docker stop` gives a container before killing it.
    pub stop_timeout: Duration,
    /// How often long steps log their progress.
    pub progress_every: Duration,
    /// The rebuild; its final image is the flatten's output.
    pub rebuild: crate::rebuild::Config,
}

fn say<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(text.as_bytes());
}

fn note<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(format!("{TOOL}: {text}").as_bytes());
}

fn interrupted<W: Write>(log: &mut ProvisionLog<W>, sig: nix::sys::signal::Signal) -> u8 {
    note(log, &format!("interrupted by {}", sig.as_str()));
    exit_status(sig)
}

/// Runs the tool; returns its exit status.
pub fn run<W: Write>(
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<u8> {
    let code = match State::load(&config.rebuild.state_file)? {
        Some(state) => crate::rebuild::resume(&config.rebuild, state, log, interrupt)?,
        None => {
            // Bad paths fail before anything is built.
            crate::rebuild::preflight(&config.rebuild.state_file)?;
            match build_test_flatten(config, interrupt, log)? {
                0 => crate::rebuild::start(&config.rebuild, log, interrupt)?,
                code => code,
            }
        }
    };
    if code == 0 {
        say(log, "slim-docker-image done.");
    }
    Ok(code)
}

/// Steps 1–3; returns the exit status so far.
fn build_test_flatten<W: Write>(
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<u8> {
    say(log, "Building slim Docker image...");
    build_command(config).read_with_progress(config.progress_every, |elapsed, _| {
        note(
            log,
            &format!("build: still running ({}s)", elapsed.as_secs()),
        );
    })?;
    say(log, "Slim image built.");
    if let Some(sig) = interrupt.acknowledge_if_signalled() {
        return Ok(interrupted(log, sig));
    }

    let arch = envfile::value_in(&config.arch_env, ARCH_KEY)?;
    if arch.as_deref() == Some("arm64") {
        say(
            log,
            "Skipping smoke test: build arch is arm64 and cross-arch TCG can't reliably run the \
             backend.",
        );
    } else {
        let code = smoke_test(config, interrupt, log)?;
        if code != 0 {
            return Ok(code);
        }
    }
    if let Some(sig) = interrupt.acknowledge_if_signalled() {
        return Ok(interrupted(log, sig));
    }

    flatten(config, log)?;
    if let Some(sig) = interrupt.acknowledge_if_signalled() {
        return Ok(interrupted(log, sig));
    }
    Ok(0)
}

/// Step 1's command: `docker build`, the Dockerfile on its stdin.
pub fn build_command(config: &Config) -> DockerCommand {
    config
        .docker
        .command(["build", "-t", config.slim_image.as_str(), "-"])
        .stdin_bytes(dockerfile(&config.image))
}

/// Step 2's `docker run`, with three fresh keys.
///
/// The container's environment is the original's (the build and computed env files, the three
/// fresh keys, the three fixed variables), followed by a `-e` for the other generation's name of
/// every renamed variable defined there ([`shared::emulator::names`]: the two keys and the port
/// prefix of the computed env file), with the value docker ends up with for either name, so a
/// slim image of either generation finds what it reads. Every such value goes by name through
/// docker's environment, as the keys do; the two env files are parsed for it (nothing in them
/// runs).
pub fn smoke_command(config: &Config) -> Result<DockerCommand> {
    let mut run = config
        .docker
        .command(["run", "--rm", "--name", config.smoke_container.as_str()])
        .args(["--network", "host", "--env-file"])
        .arg(&config.build_env)
        .arg("--env-file")
        .arg(&config.computed_env);
    let mut keys = Vec::new();
    for key in SMOKE_KEYS {
        keys.push((key, keystore::generate()?));
    }
    for (key, value) in &keys {
        run = run.secret_env(key, value);
    }
    run = run.args(SMOKE_FIXED.iter().flat_map(|var| ["-e", var]));
    // docker reads the env files first, then the -e flags: the same order here.
    let files = [
        envfile::read_optional(&config.build_env)?,
        envfile::read_optional(&config.computed_env)?,
    ];
    let given = files
        .iter()
        .flatten()
        .flat_map(|file| file.entries())
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .chain(keys.iter().map(|(key, value)| (*key, value.as_str())));
    for (name, value) in names::aliases(given) {
        run = run.secret_env(name, value);
    }
    Ok(run
        .args(volume_args())
        .args(["-d", config.slim_image.as_str()]))
}

/// Step 3's commands: `docker create` of the flatten container, then `docker export` of it
/// piped into `docker import`.
pub fn flatten_commands(config: &Config) -> [DockerCommand; 3] {
    let docker = &config.docker;
    let name = config.flatten_container.as_str();
    let create = docker.command(["create", "--name", name, &config.slim_image, "/bin/true"]);
    let import = docker
        .command(["import"])
        .args(
            IMPORT_CHANGES
                .iter()
                .flat_map(|change| ["--change", change]),
        )
        .args(["-", config.rebuild.final_image.as_str()]);
    [create, docker.command(["export", name]), import]
}

/// Step 2 ([`smoke_command`]); returns 0, 1 (failed, diagnostics logged) or 128+N.
fn smoke_test<W: Write>(
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<u8> {
    let docker = &config.docker;
    let name = config.smoke_container.as_str();
    say(log, "Running smoke test on slim image...");
    if docker.container_exists(name)? {
        note(log, &format!("removing stale container {name}"));
        docker.stop_and_remove(name, config.stop_timeout)?;
    }
    let run = smoke_command(config)?;
    let outcome = match run.read() {
        Ok(_) => smoke_wait(config, interrupt, log),
        Err(err) => Err(err),
    };
    let removed = docker.stop_and_remove(name, config.stop_timeout);
    let outcome = outcome?;
    removed?;
    match outcome {
        // Logged once the container is gone, as the original did after its stop.
        Smoke::Passed(after) => {
            say(log, &format!("Smoke test passed ({}s).", after.as_secs()));
            Ok(0)
        }
        Smoke::Failed(code) => Ok(code),
    }
}

/// How the smoke test's wait ended.
enum Smoke {
    /// The backend answered 200 after this long.
    Passed(Duration),
    /// The exit status: 1 (diagnostics logged) or 128+N.
    Failed(u8),
}

/// Waits for the backend's health page; on timeout logs the diagnostics.
fn smoke_wait<W: Write>(
    config: &Config,
    interrupt: &Interrupt,
    log: &mut ProvisionLog<W>,
) -> Result<Smoke> {
    if let Some(sig) = interrupt.acknowledge_if_signalled() {
        return Ok(Smoke::Failed(interrupted(log, sig)));
    }
    let endpoint = Endpoint::new(Host::Ip([127, 0, 0, 1].into()), config.smoke_port);
    let url = format!("http://{endpoint}{SMOKE_PATH}");
    let probe = Probe::http(endpoint, SMOKE_PATH, StatusRule::exactly(200));
    let targets = [Target::new("backend", probe)];
    let options = Options::new(config.smoke_timeout, SMOKE_ATTEMPT_TIMEOUT);
    let report = wait::run(&targets, &options, |event| {
        if let Event::Heartbeat { elapsed, targets } = event {
            let code = Answer::http_code(
                targets
                    .first()
                    .and_then(|t| t.last.as_ref())
                    .map(|a| &a.answer),
            );
            note(
                log,
                &format!(
                    "smoke test still waiting for 200 on {url} (last: {code}; {}s elapsed)",
                    elapsed.as_secs()
                ),
            );
        }
    });
    match report.outcome {
        Outcome::Ready => {
            let after = report
                .targets
                .first()
                .and_then(|t| t.ready_after)
                .unwrap_or(report.elapsed);
            Ok(Smoke::Passed(after))
        }
        Outcome::Interrupted(sig) => {
            interrupt.acknowledge();
            Ok(Smoke::Failed(interrupted(log, sig)))
        }
        Outcome::TimedOut => {
            say(
                log,
                &format!(
                    "SMOKE TEST FAILED: backend {SMOKE_PATH} did not return 200 within {}",
                    seconds(config.smoke_timeout)
                ),
            );
            smoke_diagnostics(config, &url, log);
            Ok(Smoke::Failed(1))
        }
    }
}

/// The original's diagnostics, each command's output with its prefix.
fn smoke_diagnostics<W: Write>(config: &Config, url: &str, log: &mut ProvisionLog<W>) {
    let docker = config.docker.program();
    let name = config.smoke_container.as_str();
    say(log, "--- docker ps -a ---");
    stream_command(log, "ps", &argv(docker, ["ps", "-a"]), DIAGNOSTICS_LIMIT);
    say(
        log,
        &format!("--- {name} container logs (last 200 lines) ---"),
    );
    stream_command(
        log,
        name,
        &argv(docker, ["logs", "--tail", "200", name]),
        DIAGNOSTICS_LIMIT,
    );
    say(log, "--- free -m ---");
    stream_command(
        log,
        "mem",
        &argv("free".as_ref(), ["-m"]),
        DIAGNOSTICS_LIMIT,
    );
    say(log, &format!("--- curl -v {SMOKE_PATH} ---"));
    stream_command(
        log,
        "curl",
        &argv("curl".as_ref(), ["-v", "--max-time", "5", url]),
        DIAGNOSTICS_LIMIT,
    );
}

/// Step 3: create, export | import, remove.
fn flatten<W: Write>(config: &Config, log: &mut ProvisionLog<W>) -> Result<()> {
    let docker = &config.docker;
    let name = config.flatten_container.as_str();
    say(log, "Flattening image (docker export/import)...");
    if docker.container_exists(name)? {
        note(log, &format!("removing stale container {name}"));
        docker.remove_container(name)?;
    }
    let [create, export, import] = flatten_commands(config);
    create.read()?;
    let piped = export.pipe_with_progress(&import, config.progress_every, |elapsed, pid| {
        let bytes = io_bytes(pid, Io::Written).map(|b| format!("{} exported, ", mib(b)));
        note(
            log,
            &format!(
                "flatten: {}{}s",
                bytes.unwrap_or_default(),
                elapsed.as_secs()
            ),
        );
    });
    let removed = docker.remove_container(name);
    piped?;
    removed?;
    say(log, "Flatten done.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_is_the_originals() {
        use sha2::Digest;
        // The heredoc of the original, as cloud-init writes it (YAML block indentation removed).
        assert_eq!(
            hex::encode(sha2::Sha256::digest(DOCKERFILE.as_bytes())),
            "e868158d9f1534a71b900f298bc320354b9857aec14c93b14972afeba927ac12"
        );
        assert_eq!(dockerfile(DEFAULT_IMAGE), DOCKERFILE);
        let other = dockerfile("my/emulator:1");
        assert!(other.starts_with("FROM my/emulator:1\nRUN rm -rf /app/node_modules"));
        assert_eq!(
            other.len(),
            DOCKERFILE.len() - DEFAULT_IMAGE.len() + "my/emulator:1".len()
        );
    }
}

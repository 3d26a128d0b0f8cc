//! `run-build-migrations`: migrate and seed the databases in a deps-only container.

pub mod migrations;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::migrations::Config;
use clap::{CommandFactory, Parser};
use shared::cli::args;
use shared::cli::args::Checked;
use shared::cli::help::{self, Help};
use shared::duration::text;
use shared::error::Error;
use shared::os::interrupt::Interrupt;
use shared::wait::spec;
use shared::wait::{Host, Options, Target};
use wait_for_deps::deps::{self, Ports};

const TOOL: &str = migrations::TOOL;

/// Migrate and seed the emulator's databases once, at image build time.
///
/// Steps, each logged with the original's line:
///
/// 1. `Starting deps container...`: removes a stale container of the same name,
///    then runs
///      docker run --rm --name stack-build-init --network host
///        -e STACK_DEPS_ONLY=true -v stack-postgres-data:/data/postgres
///        -v stack-redis-data:/data/redis -v stack-clickhouse-data:/data/clickhouse
///        -v stack-minio-data:/data/minio -v stack-inbucket-data:/data/inbucket
///        -d stack-local-emulator
/// 2. `Waiting for deps (…)...`: the wait-for-deps wait, in-process, with its own
///    lines (`wait-for-deps: …`), its timeout (STACK_DEPS_TIMEOUT) and its
///    diagnostics.
/// 3. `Waiting for init-services.sh...`: until `docker exec stack-build-init
///    test -f /var/run/stack-local-init-services.done` succeeds, at most 120 s.
/// 4. `Running migrations...`:
///      docker exec --env-file /etc/stack-build.env
///        --env-file /etc/stack-build-computed.env stack-build-init
///        sh -c 'cd /app/apps/backend && node --no-opt --no-wasm-tier-up
///        --no-wasm-dynamic-tiering --no-wasm-code-gc dist/db-migrations.mjs
///        migrate && node … seed'
///    Its output (stdout and stderr) is kept in memory, last 200 lines (at most
///    1 MiB); when it fails they are logged as `migrate: <line>` and the tool
///    exits with its status.
/// 5. `Stopping deps container...`: docker stop, and the container is removed.
///
/// Unlike the original, the container is stopped and removed on every way out:
/// success, a deps or init timeout, failed migrations, an error, SIGTERM or
/// SIGINT (exit 128+N).
///
/// Every line goes to stdout as `STACK_PROVISION: <line>` and to
/// STACK_PROVISION_LOG_FILE, as log-provision writes them; lines this tool adds
/// to the original's start with `run-build-migrations: `.
// The comment above is the --help text, printed verbatim (laid out for an 80-column console),
// not rustdoc Markdown.
#[allow(clippy::doc_overindented_list_items, clippy::doc_lazy_continuation)]
#[derive(Parser)]
#[command(name = TOOL, verbatim_doc_comment)]
pub struct Args {
    /// The image of the deps container.
    #[arg(long, value_name = "IMAGE", default_value = migrations::DEFAULT_IMAGE)]
    pub image: String,

    /// The deps container's name.
    #[arg(long, value_name = "NAME", default_value = migrations::DEFAULT_CONTAINER, value_parser = Checked(args::container))]
    pub container: String,

    /// The build env file passed to the migrations (docker exec --env-file).
    #[arg(long, value_name = "FILE", default_value = shared::emulator::BUILD_ENV)]
    pub build_env: PathBuf,

    /// The computed env file passed after it.
    #[arg(long, value_name = "FILE", default_value = shared::emulator::COMPUTED_ENV)]
    pub computed_env: PathBuf,

    /// The file init-services.sh creates in the container when it is done.
    #[arg(long, value_name = "PATH", default_value = migrations::DEFAULT_INIT_MARKER)]
    pub init_marker: String,

    /// How long to wait for the init-services marker.
    #[arg(long, value_name = "DURATION", default_value = text(migrations::DEFAULT_INIT_TIMEOUT), value_parser = Checked(shared::duration::parse))]
    pub init_timeout: Duration,

    /// How long to wait for the deps (wait-for-deps' STACK_DEPS_TIMEOUT).
    #[arg(long, value_name = "DURATION", env = "STACK_DEPS_TIMEOUT", default_value = text(deps::DEFAULT_TIMEOUT),
          value_parser = Checked(shared::duration::parse))]
    pub deps_timeout: Duration,

    /// Replace the deps service NAME by SPEC, or add one (repeatable; as wait-for-deps).
    #[arg(long = "target", value_name = "NAME=SPEC", value_parser = Checked(spec::target))]
    pub targets: Vec<Target>,

    /// How long `docker stop` gives the container to exit before killing it.
    #[arg(long, value_name = "DURATION", default_value = text(migrations::DEFAULT_STOP_TIMEOUT), value_parser = Checked(shared::duration::parse))]
    pub stop_timeout: Duration,

    /// The docker client program.
    #[arg(long, value_name = "PROGRAM", default_value = shared::docker::DEFAULT_PROGRAM)]
    pub docker: OsString,
}

impl Args {
    fn config(self) -> Result<Config, Error> {
        let host = Host::Ip([127, 0, 0, 1].into());
        let deps_targets = spec::merge(
            deps::default_targets(&host, &Ports::default()),
            self.targets,
        )
        .map_err(|why| Error::usage(why, ""))?;
        Ok(Config {
            docker: self.docker,
            image: self.image,
            container: self.container,
            build_env: self.build_env,
            computed_env: self.computed_env,
            init_marker: self.init_marker,
            init_timeout: self.init_timeout,
            stop_timeout: self.stop_timeout,
            deps_targets,
            deps_options: Options::new(self.deps_timeout, deps::DEFAULT_ATTEMPT_TIMEOUT),
        })
    }
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE, help::DOCKER_HOST],
    exit: &[
        ("0", "migrated and seeded"),
        (
            "1",
            "deps or init-services not ready in time, or a docker command failed",
        ),
        (
            "N",
            "the migrate-and-seed command's own status when it failed",
        ),
        ("128+N", "stopped by signal N (SIGTERM: 143, SIGINT: 130)"),
    ],
    notes: "\
Durations are seconds (120, 2.5) or a number with a unit: 100ms, 30s, 25m, 1h.
--target takes wait-for-deps' specs (tcp://, pg://, http://HOST:PORT/PATH
[status=N|status<N]); see wait-for-deps --help.",
    long_notes: "",
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run_logged(command(), args, |args: Args, log| {
        let interrupt = Interrupt::install()?;
        migrations::run(&args.config()?, &interrupt, log)
    })
}

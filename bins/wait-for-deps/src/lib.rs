//! `wait-for-deps`: wait for the deps container's services, or dump diagnostics and fail.

pub mod deps;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use crate::deps::{Config, Ports};
use clap::{CommandFactory, Parser};
use shared::cli::args;
use shared::cli::args::Checked;
use shared::cli::help::{self, Help};
use shared::duration::text;
use shared::emulator;
use shared::error::Error;
use shared::os::signal;
use shared::wait::spec;
use shared::wait::{Host, Target};

const TOOL: &str = deps::TOOL;

/// Wait until the deps container's services answer: postgres, clickhouse, svix, minio and
/// qstash on the guest's loopback, all probed at once under one deadline.
///
/// Each service is logged as `wait-for-deps: <name> ready (<N>s)` when it answers, and as
/// `still waiting for <name> (<N>s elapsed)` every heartbeat while it does not; when all have
/// answered, `all deps ready (<N>s total)` and exit 0. When the timeout passes first:
/// `TIMEOUT waiting for <first service not ready> after <N>s (hard cap <T>s)`, one line per
/// service still failing with its last answer, then the diagnostics — `docker ps -a`, the
/// container's last 300 log lines, one short probe per service — and exit 1. SIGTERM,
/// SIGINT or SIGHUP stop the wait at once with exit 128+N (143, 130, 129). Every line goes to stdout as
/// `STACK_PROVISION: wait-for-deps: …` and to STACK_PROVISION_LOG_FILE, as log-provision
/// writes them; a log file that cannot be written is reported on stderr and does not change
/// the exit status.
///
/// The services and what counts as ready: postgres `pg://HOST:5432` (answers PostgreSQL's
/// SSLRequest); clickhouse `http://HOST:8123/ping`, svix `http://HOST:8071/api/v1/health/` and
/// minio `http://HOST:9090/minio/health/live` (any status below 400, as `curl -f`); qstash
/// `http://HOST:8080/` (exactly 401). Redirects are not followed and no proxy is used.
///
/// Each attempt is cut to the per-attempt timeout and to the time left, so the wait never
/// outlives its timeout. Between attempts at one service the pause starts at --interval and
/// doubles up to --max-interval.
#[derive(Parser)]
#[command(name = TOOL)]
pub struct Args {
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", env = "STACK_DEPS_TIMEOUT", default_value = text(deps::DEFAULT_TIMEOUT),
          allow_negative_numbers = true, value_parser = Checked(shared::duration::parse))]
    pub timeout: Duration,

    /// The container whose last 300 log lines the diagnostics show.
    #[arg(long, value_name = "NAME", env = "STACK_DEPS_CONTAINER",
          default_value = deps::DEFAULT_CONTAINER, value_parser = Checked(args::container))]
    pub container: String,

    /// The host of every default service.
    #[arg(long, value_name = "HOST", default_value = emulator::LOOPBACK, value_parser = Checked(spec::host))]
    pub host: Host,

    /// postgres's port.
    #[arg(long, value_name = "PORT", default_value_t = deps::DEFAULT_PORTS.postgres, allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub postgres_port: u16,

    /// clickhouse's port.
    #[arg(long, value_name = "PORT", default_value_t = deps::DEFAULT_PORTS.clickhouse, allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub clickhouse_port: u16,

    /// svix's port.
    #[arg(long, value_name = "PORT", default_value_t = deps::DEFAULT_PORTS.svix, allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub svix_port: u16,

    /// minio's port.
    #[arg(long, value_name = "PORT", default_value_t = deps::DEFAULT_PORTS.minio, allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub minio_port: u16,

    /// qstash's port.
    #[arg(long, value_name = "PORT", default_value_t = deps::DEFAULT_PORTS.qstash, allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub qstash_port: u16,

    /// Replace the service NAME by SPEC, or add it (repeatable; see Target specs below).
    #[arg(long = "target", value_name = "NAME=SPEC", value_parser = Checked(spec::target))]
    pub targets: Vec<Target>,

    #[command(flatten)]
    pub polling: args::Polling,

    /// The longest one attempt may take.
    #[arg(long, value_name = "DURATION", default_value = text(deps::DEFAULT_ATTEMPT_TIMEOUT), allow_negative_numbers = true, value_parser = Checked(args::positive_duration))]
    pub attempt_timeout: Duration,

    /// The time limit of each per-service probe in the diagnostics.
    #[arg(long, value_name = "DURATION", default_value = text(deps::DEFAULT_PROBE_TIMEOUT), allow_negative_numbers = true, value_parser = Checked(args::positive_duration))]
    pub diag_probe_timeout: Duration,

    /// The time limit of each diagnostics command; one still running then is killed.
    #[arg(long, value_name = "DURATION", default_value = text(deps::DEFAULT_DIAG_TIMEOUT), allow_negative_numbers = true, value_parser = Checked(args::positive_duration))]
    pub diag_timeout: Duration,

    /// The docker client the diagnostics run.
    #[arg(long, value_name = "PROGRAM", default_value = shared::docker::DEFAULT_PROGRAM)]
    pub docker: OsString,
}

impl Args {
    fn config(self) -> Result<Config, Error> {
        let ports = Ports {
            postgres: self.postgres_port,
            clickhouse: self.clickhouse_port,
            svix: self.svix_port,
            minio: self.minio_port,
            qstash: self.qstash_port,
        };
        let targets = spec::merge(deps::default_targets(&self.host, &ports), self.targets)
            .map_err(|why| Error::usage(why, ""))?;
        let options = self.polling.options(self.timeout, self.attempt_timeout);
        Ok(Config {
            targets,
            options,
            container: self.container,
            docker: shared::docker::Docker::new(self.docker),
            probe_timeout: self.diag_probe_timeout,
            command_timeout: self.diag_timeout,
        })
    }
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE, help::DOCKER_HOST],
    exit: &[
        ("0", "every service answered"),
        (
            "1",
            "the timeout passed first (the diagnostics follow the TIMEOUT line)",
        ),
        (
            "128+N",
            "stopped by signal N (SIGTERM: 143, SIGINT: 130, SIGHUP: 129)",
        ),
    ],
    notes: "\
Target specs (--target NAME=SPEC replaces the service NAME, or adds it after
the others):
  tcp://HOST:PORT                       ready when a connection is accepted
  pg://HOST:PORT                        ready when the server answers SSLRequest
  http://HOST:PORT/PATH                 ready on a status below 400 (curl -f)
  http://HOST:PORT/PATH status=401      ready only on 401
  http://HOST:PORT/PATH status=200,204  ready on either
  http://HOST:PORT/PATH status<300      ready on any status below 300
  HOST is an IPv4 address, an IPv6 address in brackets ([::1]) or a name.

Durations are seconds (1500, 2.5) or a number with a unit: 100ms, 30s, 25m, 1h.
A timeout of 0 gives every service exactly one attempt, each bounded by
--attempt-timeout only; the wait then lasts as long as the slowest attempt, and
the lines report that time.",
    long_notes: "",
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run_logged(command(), args, |args: Args, log| {
        signal::take_over()?;
        Ok(deps::run(&args.config()?, log))
    })
}

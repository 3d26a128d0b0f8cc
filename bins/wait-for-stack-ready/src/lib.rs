//! `wait-for-stack-ready`: wait until the stack's backend and dashboard answer 200, or dump
//! diagnostics and fail.

pub mod ready;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use crate::ready::Config;
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

const TOOL: &str = ready::TOOL;

/// Wait until the stack container's backend (`http://HOST:8102/health?db=1`) and dashboard
/// (`http://HOST:8101/handler/sign-in`) both answer exactly 200, probing both at once.
///
/// Logs `wait-for-stack-ready: waiting for backend:<port> and dashboard:<port>
/// (timeout=<T>s)`, then `still waiting (backend=<code> dashboard=<code>, <N>s elapsed)` every
/// heartbeat, and `ready (<N>s)` with exit 0 once both have answered 200 (each counts as ready
/// from its first 200). A code is the last HTTP status that service answered, or 000 when it
/// did not answer (as curl's %{http_code}). When the timeout passes first: `TIMEOUT after <N>s
/// (backend=<code> dashboard=<code>)`, one line per service still failing with its last
/// answer, then the diagnostics — `docker ps -a`, `docker logs --tail 200 stack`, `systemctl
/// status stack.service`, `journalctl -u stack.service -n 100`, `docker image ls`, each
/// streamed with its own prefix (ps, stack, svc, jrnl, img); a missing program is one line —
/// and exit 1. SIGTERM, SIGINT or SIGHUP stop the wait at
/// once with exit 128+N (143, 130, 129).
///
/// Every line goes to stdout as `STACK_PROVISION: wait-for-stack-ready: …` and to
/// STACK_PROVISION_LOG_FILE, as log-provision writes them; a log file that cannot be written
/// is reported on stderr and does not change the exit status.
///
/// Each attempt is cut to the per-attempt timeout and to the time left, so the wait never
/// outlives its timeout. Between attempts at one service the pause starts at --interval and
/// doubles up to --max-interval. Redirects are not followed and no proxy is used.
#[derive(Parser)]
#[command(name = TOOL)]
pub struct Args {
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", env = "STACK_READY_TIMEOUT", default_value = text(ready::DEFAULT_TIMEOUT),
          allow_negative_numbers = true, value_parser = Checked(shared::duration::parse))]
    pub timeout: Duration,

    /// The backend's port.
    #[arg(long, value_name = "PORT", env = "STACK_READY_BACKEND_PORT", default_value_t = emulator::BACKEND_PORT,
          allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub backend_port: u16,

    /// The dashboard's port.
    #[arg(long, value_name = "PORT", env = "STACK_READY_DASHBOARD_PORT", default_value_t = emulator::DASHBOARD_PORT,
          allow_negative_numbers = true, value_parser = Checked(spec::port))]
    pub dashboard_port: u16,

    /// The host of the backend and the dashboard.
    #[arg(long, value_name = "HOST", default_value = emulator::LOOPBACK, value_parser = Checked(spec::host))]
    pub host: Host,

    /// Replace the target NAME by SPEC, or add it (repeatable; see Target specs below).
    #[arg(long = "target", value_name = "NAME=SPEC", value_parser = Checked(spec::target))]
    pub targets: Vec<Target>,

    #[command(flatten)]
    pub polling: args::Polling,

    /// The longest one attempt may take (the original's curl --max-time 3).
    #[arg(long, value_name = "DURATION", default_value = text(ready::DEFAULT_ATTEMPT_TIMEOUT), allow_negative_numbers = true, value_parser = Checked(args::positive_duration))]
    pub attempt_timeout: Duration,

    /// The container whose last 200 log lines the diagnostics show.
    #[arg(long, value_name = "NAME", default_value = ready::DEFAULT_CONTAINER,
          value_parser = Checked(args::container))]
    pub container: String,

    /// The systemd unit whose status and journal the diagnostics show.
    #[arg(long, value_name = "UNIT", default_value = ready::DEFAULT_SERVICE,
          value_parser = Checked(args::name))]
    pub service: String,

    /// The time limit of each diagnostics command; one still running then is killed.
    #[arg(long, value_name = "DURATION", default_value = text(ready::DEFAULT_DIAG_TIMEOUT), allow_negative_numbers = true, value_parser = Checked(args::positive_duration))]
    pub diag_timeout: Duration,

    /// The docker client the diagnostics run.
    #[arg(long, value_name = "PROGRAM", default_value = shared::docker::DEFAULT_PROGRAM)]
    pub docker: OsString,

    /// The systemctl the diagnostics run.
    #[arg(long, value_name = "PROGRAM", default_value = ready::DEFAULT_SYSTEMCTL)]
    pub systemctl: OsString,

    /// The journalctl the diagnostics run.
    #[arg(long, value_name = "PROGRAM", default_value = ready::DEFAULT_JOURNALCTL)]
    pub journalctl: OsString,
}

impl Args {
    fn config(self) -> Result<Config, Error> {
        let defaults = ready::default_targets(&self.host, self.backend_port, self.dashboard_port);
        let targets = spec::merge(defaults, self.targets).map_err(|why| Error::usage(why, ""))?;
        let options = self.polling.options(self.timeout, self.attempt_timeout);
        Ok(Config {
            targets,
            options,
            container: self.container,
            service: self.service,
            docker: shared::docker::Docker::new(self.docker),
            systemctl: self.systemctl,
            journalctl: self.journalctl,
            command_timeout: self.diag_timeout,
        })
    }
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE, help::DOCKER_HOST],
    exit: &[
        ("0", "the backend and the dashboard answered 200"),
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
Target specs (--target NAME=SPEC replaces backend or dashboard, or adds a
target after them):
  http://HOST:PORT/PATH status=200      ready only on 200
  http://HOST:PORT/PATH status=200,204  ready on either
  http://HOST:PORT/PATH                 ready on a status below 400 (curl -f)
  tcp://HOST:PORT                       ready when a connection is accepted
  pg://HOST:PORT                        ready when the server answers SSLRequest
  HOST is an IPv4 address, an IPv6 address in brackets ([::1]) or a name.

Durations are seconds (600, 2.5) or a number with a unit: 100ms, 30s, 10m, 1h.
A timeout of 0 gives every target exactly one attempt, each bounded by
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
        Ok(ready::run(&args.config()?, log))
    })
}

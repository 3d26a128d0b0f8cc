//! `wait-for-stack-ready`: wait until the stack container's backend and dashboard answer 200.
//!
//! The lines are the original's; the codes in them are curl's `%{http_code}`: the last status
//! each service answered, `000` when it did not answer. Both targets are probed concurrently
//! by the [engine](super); a target that answered 200 once counts as ready (the original needed
//! both in the same round). On timeout: the original's `TIMEOUT` line, one line per target still
//! failing with its last answer (new), then the original's diagnostics — `docker ps -a`, the
//! container's last 200 log lines, `systemctl status`, `journalctl` and `docker image ls`, each
//! streamed with its own prefix.

use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

use shared::docker::Docker;
use shared::duration::seconds;
use shared::log::ProvisionLog;
use shared::log::diagnostics::{argv, stream_command};
use shared::os::signal::exit_status;
use shared::wait::probe::{Answer, Endpoint, Host, Probe, StatusRule};
use shared::wait::{Event, Options, Outcome, Target, TargetReport};

pub const TOOL: &str = "wait-for-stack-ready";
/// The container whose log the diagnostics show.
pub const DEFAULT_CONTAINER: &str = shared::emulator::CONTAINER;
/// The systemd unit whose status and journal the diagnostics show.
pub const DEFAULT_SERVICE: &str = "stack.service";
/// How long the wait may take in all (the original's `STACK_READY_TIMEOUT` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one diagnostics command may run.
pub const DEFAULT_DIAG_TIMEOUT: Duration = shared::log::diagnostics::DEFAULT_LIMIT;
pub const DEFAULT_SYSTEMCTL: &str = "systemctl";
pub const DEFAULT_JOURNALCTL: &str = "journalctl";
/// The cap on one attempt: the original's `curl --max-time 3`.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The original's two targets: backend `/health?db=1` and dashboard `/handler/sign-in`, each
/// ready on exactly 200.
pub fn default_targets(host: &Host, backend_port: u16, dashboard_port: u16) -> Vec<Target> {
    let at = |port| Endpoint::new(host.clone(), port);
    vec![
        Target::new(
            "backend",
            Probe::http(at(backend_port), "/health?db=1", StatusRule::exactly(200)),
        ),
        Target::new(
            "dashboard",
            Probe::http(
                at(dashboard_port),
                "/handler/sign-in",
                StatusRule::exactly(200),
            ),
        ),
    ]
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub targets: Vec<Target>,
    pub options: Options,
    /// The container whose last 200 log lines the diagnostics show.
    pub container: String,
    /// The systemd unit whose status and journal the diagnostics show.
    pub service: String,
    pub docker: Docker,
    pub systemctl: OsString,
    pub journalctl: OsString,
    /// The time limit of each diagnostics command.
    pub command_timeout: Duration,
}

fn say<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(format!("{TOOL}: {text}").as_bytes());
}

/// `backend:8102 and dashboard:8101`; more targets are joined with commas.
fn describe_targets(targets: &[Target]) -> String {
    let labels: Vec<String> = targets
        .iter()
        .map(|t| match t.probe.endpoint() {
            Some(e) => format!("{}:{}", t.name, e.port),
            None => t.name.clone(),
        })
        .collect();
    match labels.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `backend=200 dashboard=000`: every target's last HTTP status, curl style.
fn codes(targets: &[TargetReport]) -> String {
    let codes: Vec<String> = targets
        .iter()
        .map(|t| {
            let code = Answer::http_code(t.last.as_ref().map(|a| &a.answer));
            format!("{}={code}", t.name)
        })
        .collect();
    codes.join(" ")
}

/// Waits, logs, dumps diagnostics on timeout; returns the exit status (0, 1 or 128+N).
pub fn run<W: Write>(config: &Config, log: &mut ProvisionLog<W>) -> u8 {
    say(
        log,
        &format!(
            "waiting for {} (timeout={})",
            describe_targets(&config.targets),
            seconds(config.options.timeout)
        ),
    );
    let report = shared::wait::run(&config.targets, &config.options, |event| {
        if let Event::Heartbeat { elapsed, targets } = event {
            let elapsed = elapsed.as_secs();
            say(
                log,
                &format!("still waiting ({}, {elapsed}s elapsed)", codes(targets)),
            );
        }
    });
    let elapsed = report.elapsed.as_secs();
    match report.outcome {
        Outcome::Ready => {
            say(log, &format!("ready ({elapsed}s)"));
            0
        }
        Outcome::TimedOut => {
            say(
                log,
                &format!("TIMEOUT after {elapsed}s ({})", codes(&report.targets)),
            );
            for line in report.failing_lines() {
                say(log, &line);
            }
            dump_diagnostics(config, log);
            1
        }
        Outcome::Interrupted(signal) => {
            say(
                log,
                &format!("interrupted by {} after {elapsed}s", signal.as_str()),
            );
            exit_status(signal)
        }
    }
}

fn dump_diagnostics<W: Write>(config: &Config, log: &mut ProvisionLog<W>) {
    let service = config.service.as_str();
    let commands = [
        ("ps", config.docker.command(["ps", "-a"]).into_argv()),
        (
            "stack",
            config
                .docker
                .command(["logs", "--tail", "200", config.container.as_str()])
                .into_argv(),
        ),
        (
            "svc",
            argv(&config.systemctl, ["status", service, "--no-pager", "-l"]),
        ),
        (
            "jrnl",
            argv(
                &config.journalctl,
                ["-u", service, "--no-pager", "-n", "100"],
            ),
        ),
        ("img", config.docker.command(["image", "ls"]).into_argv()),
    ];
    for (prefix, argv) in commands {
        stream_command(
            log,
            &format!("{TOOL}: {prefix}"),
            &argv,
            config.command_timeout,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_targets_like_the_original() {
        let host = Host::Ip([127, 0, 0, 1].into());
        let mut targets = default_targets(&host, 8102, 8101);
        assert_eq!(
            describe_targets(&targets),
            "backend:8102 and dashboard:8101"
        );
        targets.push(Target::new("x", Probe::Tcp(Endpoint::new(host, 1))));
        assert_eq!(
            describe_targets(&targets),
            "backend:8102, dashboard:8101 and x:1"
        );
    }
}

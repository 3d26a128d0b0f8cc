//! `wait-for-deps`: wait for the deps container's five services, or dump diagnostics.
//!
//! The lines are the original's, word for word (the host and people grep them); what changed is
//! underneath: the services are probed concurrently by the [engine](super), each attempt bounded
//! by the time left, so the hard cap really is one, and readiness is noticed within a fraction
//! of a second. After the original's `TIMEOUT` line come one line per service still failing with
//! its last answer (new), then the original's diagnostics block.
//!
//! The per-service elapsed times count from the start of the whole wait (the original, probing
//! in sequence, counted from the moment it got round to each service).

use std::io::Write;
use std::time::Duration;

use shared::docker::Docker;
use shared::duration::seconds;
use shared::log::ProvisionLog;
use shared::log::diagnostics::stream_command;
use shared::os::signal::exit_status;
use shared::wait::probe::{Endpoint, Host, Probe, StatusRule};
use shared::wait::{Event, Options, Outcome, Target};

pub const TOOL: &str = "wait-for-deps";
/// The container whose log the diagnostics show.
pub const DEFAULT_CONTAINER: &str = shared::emulator::DEPS_CONTAINER;
/// How long one diagnostics probe may take (the original's `--max-time 3`).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The cap on one readiness attempt. The original had none, because under slow TCG a service
/// may take more than 3 s to answer; this one is generous for the same reason, and keeps a hung
/// service from holding the wait past its deadline.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the wait may take in all (the original's `STACK_DEPS_TIMEOUT` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1500);
/// How long one diagnostics command may run.
pub const DEFAULT_DIAG_TIMEOUT: Duration = shared::log::diagnostics::DEFAULT_LIMIT;
/// The original's ports.
pub const DEFAULT_PORTS: Ports = Ports {
    postgres: 5432,
    clickhouse: 8123,
    svix: 8071,
    minio: 9090,
    qstash: 8080,
};

/// The ports the deps container serves on the guest's loopback.
#[derive(Clone, Debug)]
pub struct Ports {
    pub postgres: u16,
    pub clickhouse: u16,
    pub svix: u16,
    pub minio: u16,
    pub qstash: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            postgres: 5432,
            clickhouse: 8123,
            svix: 8071,
            minio: 9090,
            qstash: 8080,
        }
    }
}

/// The original's five services, in its order.
pub fn default_targets(host: &Host, ports: &Ports) -> Vec<Target> {
    let at = |port| Endpoint::new(host.clone(), port);
    vec![
        Target::new("postgres", Probe::Postgres(at(ports.postgres))),
        Target::new(
            "clickhouse",
            Probe::http(at(ports.clickhouse), "/ping", StatusRule::CURL_FAIL),
        ),
        Target::new(
            "svix",
            Probe::http(at(ports.svix), "/api/v1/health/", StatusRule::CURL_FAIL),
        ),
        Target::new(
            "minio",
            Probe::http(at(ports.minio), "/minio/health/live", StatusRule::CURL_FAIL),
        ),
        Target::new(
            "qstash",
            Probe::http(at(ports.qstash), "/", StatusRule::exactly(401)),
        ),
    ]
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub targets: Vec<Target>,
    pub options: Options,
    /// The container whose last 300 log lines the diagnostics show.
    pub container: String,
    /// The docker client program.
    pub docker: Docker,
    /// The time limit of each diagnostics probe.
    pub probe_timeout: Duration,
    /// The time limit of each diagnostics command.
    pub command_timeout: Duration,
}

fn say<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(format!("{TOOL}: {text}").as_bytes());
}

/// Waits, logs, dumps diagnostics on timeout; returns the exit status (0, 1 or 128+N).
pub fn run<W: Write>(config: &Config, log: &mut ProvisionLog<W>) -> u8 {
    let cap = seconds(config.options.timeout);
    say(log, &format!("starting dep wait (timeout={cap})"));
    let report = shared::wait::run(&config.targets, &config.options, |event| match event {
        Event::Ready { target } => {
            let after = target.ready_after.unwrap_or_default().as_secs();
            say(log, &format!("{} ready ({after}s)", target.name));
        }
        Event::Heartbeat { elapsed, targets } => {
            for t in targets.iter().filter(|t| !t.is_ready()) {
                let elapsed = elapsed.as_secs();
                say(
                    log,
                    &format!("still waiting for {} ({elapsed}s elapsed)", t.name),
                );
            }
        }
        Event::Attempt { .. } => {}
    });
    let elapsed = report.elapsed.as_secs();
    match report.outcome {
        Outcome::Ready => {
            say(log, &format!("all deps ready ({elapsed}s total)"));
            0
        }
        Outcome::TimedOut => {
            let first = report.waiting().next().map_or("", |t| t.name.as_str());
            say(
                log,
                &format!("TIMEOUT waiting for {first} after {elapsed}s (hard cap {cap})"),
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

/// The original's block: `docker ps -a`, the container's last 300 lines, one short probe per
/// service.
fn dump_diagnostics<W: Write>(config: &Config, log: &mut ProvisionLog<W>) {
    let limit = config.command_timeout;
    say(log, "dumping diagnostics for stuck dep wait...");
    say(log, "--- docker ps -a ---");
    stream_command(
        log,
        &format!("{TOOL}: ps"),
        &config.docker.command(["ps", "-a"]).into_argv(),
        limit,
    );
    say(
        log,
        &format!("--- docker logs {} (last 300 lines) ---", config.container),
    );
    stream_command(
        log,
        &format!("{TOOL}: deps"),
        &config
            .docker
            .command(["logs", "--tail", "300", config.container.as_str()])
            .into_argv(),
        limit,
    );
    say(
        log,
        &format!(
            "--- per-service probes ({} timeout) ---",
            seconds(config.probe_timeout)
        ),
    );
    let attempts: Vec<_> = std::thread::scope(|scope| {
        let running: Vec<_> = config
            .targets
            .iter()
            .map(|t| scope.spawn(|| t.probe.attempt(config.probe_timeout)))
            .collect();
        running.into_iter().map(|h| h.join().ok()).collect()
    });
    for (target, attempt) in config.targets.iter().zip(attempts) {
        say(log, &probe_line(target, attempt.as_ref()));
    }
}

/// `postgres:5432 reachable`, `qstash:8080 NOT reachable (code=000)`, … — the original's
/// wording. A target waiting for an exact status shows the status, as the original's qstash
/// line did.
fn probe_line(target: &Target, attempt: Option<&shared::wait::Attempt>) -> String {
    let label = match target.probe.endpoint() {
        Some(e) => format!("{}:{}", target.name, e.port),
        None => target.name.clone(),
    };
    let ready = attempt.is_some_and(|a| a.ready);
    let exact = matches!(
        target.probe,
        Probe::Http {
            rule: StatusRule::OneOf(_),
            ..
        }
    );
    let code = shared::wait::Answer::http_code(attempt.map(|a| &a.answer));
    match (exact, ready) {
        (true, true) => format!("{label} reachable ({code})"),
        (true, false) => format!("{label} NOT reachable (code={code})"),
        (false, true) => format!("{label} reachable"),
        (false, false) => format!("{label} NOT reachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::wait::{Answer, Attempt};

    fn attempt(answer: Answer, ready: bool) -> Attempt {
        Attempt {
            answer,
            ready,
            took: Duration::ZERO,
        }
    }

    #[test]
    fn default_targets_are_the_originals() {
        let specs: Vec<String> =
            default_targets(&Host::Ip([127, 0, 0, 1].into()), &Ports::default())
                .iter()
                .map(Target::to_string)
                .collect();
        assert_eq!(
            specs,
            [
                "postgres=pg://127.0.0.1:5432",
                "clickhouse=http://127.0.0.1:8123/ping status<400",
                "svix=http://127.0.0.1:8071/api/v1/health/ status<400",
                "minio=http://127.0.0.1:9090/minio/health/live status<400",
                "qstash=http://127.0.0.1:8080/ status=401",
            ]
        );
    }

    #[test]
    fn probe_lines_keep_the_original_wording() {
        let targets = default_targets(&Host::Ip([127, 0, 0, 1].into()), &Ports::default());
        let refused = attempt(Answer::Failed("connection refused".into()), false);
        assert_eq!(
            probe_line(&targets[0], Some(&refused)),
            "postgres:5432 NOT reachable"
        );
        let s = attempt(Answer::PgReply(b'S'), true);
        assert_eq!(probe_line(&targets[0], Some(&s)), "postgres:5432 reachable");
        let ok = attempt(Answer::Status(200), true);
        assert_eq!(
            probe_line(&targets[1], Some(&ok)),
            "clickhouse:8123 reachable"
        );
        let unauthorized = attempt(Answer::Status(401), true);
        assert_eq!(
            probe_line(&targets[4], Some(&unauthorized)),
            "qstash:8080 reachable (401)"
        );
        let forbidden = attempt(Answer::Status(403), false);
        assert_eq!(
            probe_line(&targets[4], Some(&forbidden)),
            "qstash:8080 NOT reachable (code=403)"
        );
        assert_eq!(
            probe_line(&targets[4], Some(&refused)),
            "qstash:8080 NOT reachable (code=000)"
        );
    }
}

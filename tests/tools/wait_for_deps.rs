//! wait-for-deps: concurrent, bounded, quick to notice; the original's lines and diagnostics.
//!
//! Every test runs its own servers on free loopback ports and points the tool at them with the
//! port flags or `--target`; none touches the fixed default ports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::docker;
use crate::common::listeners::{ClosedPort, Reply, Server};
use crate::common::*;

const TOOL: &str = "wait-for-deps";

/// The log lines of a run, without the `STACK_PROVISION: ` tag.
pub(super) fn lines(run: &Run) -> Vec<String> {
    run.stdout_str()
        .lines()
        .map(|l| {
            l.strip_prefix("STACK_PROVISION: ")
                .unwrap_or_else(|| panic!("untagged line {l:?}"))
                .to_string()
        })
        .collect()
}

fn count(lines: &[String], wanted: &str) -> usize {
    lines.iter().filter(|l| *l == wanted).count()
}

/// Five servers standing in for the deps, each with its own behaviour.
struct Deps {
    postgres: Server,
    clickhouse: Server,
    svix: Server,
    minio: Server,
    qstash: Server,
}

impl Deps {
    /// All five ready from the start.
    fn ready() -> Deps {
        Deps {
            postgres: Server::always(Reply::Pg(b'S')),
            clickhouse: Server::always(Reply::Status(200)),
            svix: Server::always(Reply::Status(200)),
            minio: Server::always(Reply::Status(200)),
            qstash: Server::always(Reply::Status(401)),
        }
    }

    /// The port flags pointing the default targets at these servers.
    fn args(&self) -> Vec<String> {
        [
            ("--postgres-port", &self.postgres),
            ("--clickhouse-port", &self.clickhouse),
            ("--svix-port", &self.svix),
            ("--minio-port", &self.minio),
            ("--qstash-port", &self.qstash),
        ]
        .iter()
        .flat_map(|(flag, server)| [flag.to_string(), server.port.to_string()])
        .collect()
    }
}

/// The tool with fast diagnostics and no docker.
fn quick() -> Cmd {
    tool(TOOL).args([
        "--docker",
        "/nonexistent/docker",
        "--diag-probe-timeout",
        "0.3",
    ])
}

#[test]
fn help_and_version() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    let help = run.stdout_str();
    for needle in [
        "Usage: wait-for-deps",
        "STACK_DEPS_TIMEOUT",
        "[default: 1500s]",
        "STACK_DEPS_CONTAINER",
        "[default: stack-build-init]",
        "[default: 100ms]",
        "[default: 400ms]",
        "[default: 30s]",
        "--target <NAME=SPEC>",
        "pg://HOST:PORT",
        "HEXCLAVE_*",
    ] {
        assert!(
            help_contains(&help, needle),
            "--help lacks {needle:?}:\n{help}"
        );
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("wait-for-deps"));
}

/// Arguments, environment, and a part of the expected error message.
pub(super) type UsageCase = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn bad_flags_and_environment_are_usage_errors() {
    let cases: &[UsageCase] = &[
        (
            &["--timeout", "-5"],
            &[],
            "invalid value '-5' for '--timeout <DURATION>': must not be negative",
        ),
        (
            &["--timeout", "soon"],
            &[],
            "invalid value 'soon' for '--timeout <DURATION>'",
        ),
        (
            &[],
            &[("STACK_DEPS_TIMEOUT", "15O0")],
            "invalid value '15O0' for '--timeout <DURATION>' (from the environment variable STACK_DEPS_TIMEOUT)",
        ),
        (
            &[],
            &[
                ("STACK_DEPS_TIMEOUT", "60"),
                ("HEXCLAVE_DEPS_TIMEOUT", "-1"),
            ],
            "(from the environment variable HEXCLAVE_DEPS_TIMEOUT): must not be negative",
        ),
        (
            &["--postgres-port", "70000"],
            &[],
            "invalid value '70000' for '--postgres-port <PORT>': not a port number (1-65535)",
        ),
        (
            &["--interval", "5 s"],
            &[],
            "invalid value '5 s' for '--interval <DURATION>'",
        ),
        (&["--attempt-timeout", "0"], &[], "must be greater than 0"),
        (
            &["--host", "no such host!"],
            &[],
            "not an IP address or host name",
        ),
        (
            &["--target", "redis=redis://127.0.0.1:6379"],
            &[],
            "unknown scheme 'redis' (use tcp, pg or http)",
        ),
        (&["--target", "postgres"], &[], "expected NAME=SPEC"),
        (
            &["--target", "x=tcp://::1:5432"],
            &[],
            "an IPv6 address needs brackets, e.g. [::1]:5432",
        ),
        (
            &["--target", "x=http://127.0.0.1:1/ status=4xx"],
            &[],
            "bad status rule 'status=4xx'",
        ),
        (
            &[
                "--target",
                "a=tcp://127.0.0.1:1",
                "--target",
                "a=tcp://127.0.0.1:2",
            ],
            &[],
            "wait-for-deps: --target a: given twice",
        ),
        (
            &["--no-such-flag"],
            &[],
            "unexpected argument '--no-such-flag'",
        ),
        (
            &[],
            &[("STACK_DEPS_CONTAINER", "-x")],
            "(from the environment variable STACK_DEPS_CONTAINER): not a container name",
        ),
    ];
    for (args, env, message) in cases {
        let mut cmd = tool(TOOL).args(*args);
        for (k, v) in *env {
            cmd = cmd.env(k, v);
        }
        let run = cmd.run();
        run.code_is(2).stdout_is("").stderr_contains(message);
    }
}

#[test]
fn staggered_services_each_ready_once_in_about_the_slowest_time() {
    let ms = Duration::from_millis;
    // Before the servers' clocks start: the tool cannot be done before the slowest is ready.
    let start = Instant::now();
    let deps = Deps {
        postgres: Server::ready_after(ms(200), Reply::Close, Reply::Pg(b'N')),
        clickhouse: Server::ready_after(ms(600), Reply::Status(503), Reply::Status(200)),
        svix: Server::ready_after(ms(1000), Reply::Status(500), Reply::Status(204)),
        minio: Server::ready_after(ms(1400), Reply::Status(404), Reply::Status(200)),
        qstash: Server::ready_after(ms(1800), Reply::Status(200), Reply::Status(401)),
    };
    let dir = scratch();
    let log = dir.path().join("provision.log");
    let run = quick()
        .args(deps.args())
        .env("STACK_PROVISION_LOG_FILE", &log)
        .run();
    let took = start.elapsed();
    run.success().stderr_is("");
    let lines = lines(&run);
    assert_eq!(lines[0], "wait-for-deps: starting dep wait (timeout=1500s)");
    for name in ["postgres", "clickhouse", "svix", "minio", "qstash"] {
        let ready: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("wait-for-deps: {name} ready (")))
            .collect();
        assert_eq!(ready.len(), 1, "{name}: {lines:#?}");
        let secs: u64 = ready[0]
            .trim_start_matches(&format!("wait-for-deps: {name} ready ("))
            .trim_end_matches("s)")
            .parse()
            .unwrap();
        assert!(secs <= 2, "{name} after {secs}s");
    }
    let last = lines.last().unwrap();
    assert!(
        last == "wait-for-deps: all deps ready (1s total)"
            || last == "wait-for-deps: all deps ready (2s total)",
        "{last}"
    );
    assert_eq!(lines.len(), 7, "{lines:#?}");
    // Not before the slowest (1.8 s), and short of the sum (5 s) that probing one service at a
    // time would take.
    assert!(took >= ms(1800) && took < ms(4800), "took {took:?}");
    // The log file holds the same lines, without the tag.
    let file = std::fs::read_to_string(&log).unwrap();
    assert_eq!(file.lines().collect::<Vec<_>>(), lines);
    // Each probe asked what the original asked.
    assert!(
        deps.clickhouse
            .requests()
            .contains(&"GET /ping HTTP/1.1".to_string())
    );
    assert!(
        deps.svix
            .requests()
            .contains(&"GET /api/v1/health/ HTTP/1.1".to_string())
    );
    assert!(
        deps.minio
            .requests()
            .contains(&"GET /minio/health/live HTTP/1.1".to_string())
    );
    assert!(
        deps.qstash
            .requests()
            .contains(&"GET / HTTP/1.1".to_string())
    );
    assert!(
        deps.postgres
            .requests()
            .contains(&"[00, 00, 00, 08, 04, d2, 16, 2f]".to_string())
    );
}

/// The original's `curl -sf` had no time limit: a service that accepted and never answered
/// held wait-for-deps past its own hard cap.
#[test]
fn a_service_that_never_answers_times_out_at_the_deadline() {
    let deps = Deps {
        clickhouse: Server::always(Reply::Silent),
        ..Deps::ready()
    };
    let start = Instant::now();
    let run = quick().args(deps.args()).args(["--timeout", "3"]).run();
    let took = start.elapsed();
    run.code_is(1);
    let lines = lines(&run);
    assert_eq!(
        count(
            &lines,
            "wait-for-deps: TIMEOUT waiting for clickhouse after 3s (hard cap 3s)"
        ),
        1,
        "{lines:#?}"
    );
    let failing = format!(
        "wait-for-deps: clickhouse still not ready (http://127.0.0.1:{}/ping status<400): no answer within",
        deps.clickhouse.port
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(&failing)).count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count(
            &lines,
            &format!(
                "wait-for-deps: clickhouse:{} NOT reachable",
                deps.clickhouse.port
            )
        ),
        1
    );
    // The 3 s deadline holds: attempts in flight and diagnostics add little (a generous bound;
    // the figures are in `make bench`).
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn a_postgres_that_accepts_and_never_answers_sslrequest_is_not_ready() {
    let deps = Deps {
        postgres: Server::always(Reply::Silent),
        ..Deps::ready()
    };
    let start = Instant::now();
    let run = quick().args(deps.args()).args(["--timeout", "3"]).run();
    let took = start.elapsed();
    run.code_is(1);
    let lines = lines(&run);
    assert!(
        lines
            .contains(&"wait-for-deps: TIMEOUT waiting for postgres after 3s (hard cap 3s)".into()),
        "{lines:#?}"
    );
    for name in ["clickhouse", "svix", "minio", "qstash"] {
        assert_eq!(
            count(&lines, &format!("wait-for-deps: {name} ready (0s)")),
            1
        );
    }
    let failing = format!(
        "wait-for-deps: postgres still not ready (pg://127.0.0.1:{}): no answer within",
        deps.postgres.port
    );
    assert!(lines.iter().any(|l| l.starts_with(&failing)), "{lines:#?}");
    // The silent server cannot hold the tool past its 3 s deadline (a generous bound).
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn status_rules_follow_curl_dash_f_and_qstash_needs_401() {
    let s = |code| Server::always(Reply::Status(code));
    let deps = Deps {
        postgres: Server::always(Reply::Pg(b'S')),
        clickhouse: s(302),
        svix: s(399),
        minio: s(200),
        qstash: s(401),
    };
    let (s400, s404, s500, q200) = (s(400), s(404), s(500), s(200));
    let target = |name: &str, server: &Server, rule: &str| {
        format!("{name}=http://127.0.0.1:{}/ {rule}", server.port)
    };
    let run = quick()
        .args(deps.args())
        .args(["--timeout", "1", "--heartbeat", "0"])
        .args(["--target", &target("s400", &s400, "status<400")])
        .args(["--target", &target("s404", &s404, "status<400")])
        .args(["--target", &target("s500", &s500, "status<400")])
        .args(["--target", &target("q200", &q200, "status=401")])
        .run();
    run.code_is(1);
    let p = |s: &Server| s.port;
    let expected = [
        "wait-for-deps: starting dep wait (timeout=1s)".to_string(),
        "wait-for-deps: TIMEOUT waiting for s400 after 1s (hard cap 1s)".into(),
        format!(
            "wait-for-deps: s400 still not ready (http://127.0.0.1:{}/ status<400): HTTP 400",
            p(&s400)
        ),
        format!(
            "wait-for-deps: s404 still not ready (http://127.0.0.1:{}/ status<400): HTTP 404",
            p(&s404)
        ),
        format!(
            "wait-for-deps: s500 still not ready (http://127.0.0.1:{}/ status<400): HTTP 500",
            p(&s500)
        ),
        format!(
            "wait-for-deps: q200 still not ready (http://127.0.0.1:{}/ status=401): HTTP 200",
            p(&q200)
        ),
        "wait-for-deps: dumping diagnostics for stuck dep wait...".into(),
        "wait-for-deps: --- docker ps -a ---".into(),
        "wait-for-deps: ps: /nonexistent/docker: command not found".into(),
        "wait-for-deps: --- docker logs stack-build-init (last 300 lines) ---".into(),
        "wait-for-deps: deps: /nonexistent/docker: command not found".into(),
        "wait-for-deps: --- per-service probes (0.3s timeout) ---".into(),
        format!("wait-for-deps: postgres:{} reachable", p(&deps.postgres)),
        format!(
            "wait-for-deps: clickhouse:{} reachable",
            p(&deps.clickhouse)
        ),
        format!("wait-for-deps: svix:{} reachable", p(&deps.svix)),
        format!("wait-for-deps: minio:{} reachable", p(&deps.minio)),
        format!("wait-for-deps: qstash:{} reachable (401)", p(&deps.qstash)),
        format!("wait-for-deps: s400:{} NOT reachable", p(&s400)),
        format!("wait-for-deps: s404:{} NOT reachable", p(&s404)),
        format!("wait-for-deps: s500:{} NOT reachable", p(&s500)),
        format!("wait-for-deps: q200:{} NOT reachable (code=200)", p(&q200)),
    ];
    let mut got = lines(&run);
    // The five ready lines come in whatever order the probes finished.
    let mut ready: Vec<String> = got
        .iter()
        .filter(|l| l.ends_with(" ready (0s)"))
        .cloned()
        .collect();
    got.retain(|l| !l.ends_with(" ready (0s)"));
    ready.sort();
    assert_eq!(
        ready,
        ["clickhouse", "minio", "postgres", "qstash", "svix"]
            .map(|n| format!("wait-for-deps: {n} ready (0s)"))
    );
    assert_eq!(got, expected);
}

#[test]
fn heartbeats_the_timeout_line_and_the_failing_report() {
    let postgres = Server::always(Reply::Pg(b'S'));
    let refusing: Vec<ClosedPort> = (0..4).map(|_| ClosedPort::new()).collect();
    let closed: Vec<u16> = refusing.iter().map(|c| c.port).collect();
    let dir = scratch();
    let log = dir.path().join("provision.log");
    let run = quick()
        .args(["--postgres-port", &postgres.port.to_string()])
        .args(["--clickhouse-port", &closed[0].to_string()])
        .args(["--svix-port", &closed[1].to_string()])
        .args(["--minio-port", &closed[2].to_string()])
        .args(["--qstash-port", &closed[3].to_string()])
        .args(["--heartbeat", "1s", "--timeout", "2.5"])
        .env("STACK_PROVISION_LOG_FILE", &log)
        .run();
    run.code_is(1).stderr_is("");
    let names = ["clickhouse", "svix", "minio", "qstash"];
    let mut expected = vec![
        "wait-for-deps: starting dep wait (timeout=2.5s)".to_string(),
        "wait-for-deps: postgres ready (0s)".into(),
    ];
    for secs in [1, 2] {
        for name in names {
            expected.push(format!(
                "wait-for-deps: still waiting for {name} ({secs}s elapsed)"
            ));
        }
    }
    expected.push("wait-for-deps: TIMEOUT waiting for clickhouse after 2s (hard cap 2.5s)".into());
    let specs = [
        format!("http://127.0.0.1:{}/ping status<400", closed[0]),
        format!("http://127.0.0.1:{}/api/v1/health/ status<400", closed[1]),
        format!(
            "http://127.0.0.1:{}/minio/health/live status<400",
            closed[2]
        ),
        format!("http://127.0.0.1:{}/ status=401", closed[3]),
    ];
    for (name, spec) in names.iter().zip(&specs) {
        expected.push(format!(
            "wait-for-deps: {name} still not ready ({spec}): connection refused"
        ));
    }
    expected.extend([
        "wait-for-deps: dumping diagnostics for stuck dep wait...".to_string(),
        "wait-for-deps: --- docker ps -a ---".into(),
        "wait-for-deps: ps: /nonexistent/docker: command not found".into(),
        "wait-for-deps: --- docker logs stack-build-init (last 300 lines) ---".into(),
        "wait-for-deps: deps: /nonexistent/docker: command not found".into(),
        "wait-for-deps: --- per-service probes (0.3s timeout) ---".into(),
        format!("wait-for-deps: postgres:{} reachable", postgres.port),
        format!("wait-for-deps: clickhouse:{} NOT reachable", closed[0]),
        format!("wait-for-deps: svix:{} NOT reachable", closed[1]),
        format!("wait-for-deps: minio:{} NOT reachable", closed[2]),
        format!(
            "wait-for-deps: qstash:{} NOT reachable (code=000)",
            closed[3]
        ),
    ]);
    assert_eq!(lines(&run), expected);
    let file = std::fs::read_to_string(&log).unwrap();
    assert_eq!(file.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn targets_replace_defaults_and_ipv6_literals_work() {
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    require!(v6, "an IPv6 loopback (::1)");
    let pg6 = Server::start_on("[::1]:0", |_| Reply::Pg(b'S'));
    let extra = Server::always(Reply::Status(204));
    let deps = Deps::ready();
    let run = quick()
        .args(deps.args())
        .args(["--target", &format!("postgres=pg://[::1]:{}", pg6.port)])
        .args([
            "--target",
            &format!("extra=http://127.0.0.1:{}/x?y=1 status=200,204", extra.port),
        ])
        .run();
    run.success();
    let lines = lines(&run);
    assert_eq!(count(&lines, "wait-for-deps: postgres ready (0s)"), 1);
    assert_eq!(count(&lines, "wait-for-deps: extra ready (0s)"), 1);
    assert_eq!(pg6.requests().len(), 1);
    // The default postgres server was replaced, so it was never asked.
    assert!(deps.postgres.requests().is_empty());
    assert_eq!(extra.requests(), ["GET /x?y=1 HTTP/1.1"]);
}

#[test]
fn environment_knobs_set_the_timeout() {
    let refusing = ClosedPort::new();
    let closed = refusing.port;
    let deps = Deps::ready();
    let run = quick()
        .args(deps.args())
        .args(["--target", &format!("postgres=tcp://127.0.0.1:{closed}")])
        .env("HEXCLAVE_DEPS_TIMEOUT", "1")
        .env("STACK_DEPS_TIMEOUT", "100")
        .run();
    run.code_is(1);
    let lines = lines(&run);
    assert_eq!(lines[0], "wait-for-deps: starting dep wait (timeout=1s)");
    assert!(
        lines
            .contains(&"wait-for-deps: TIMEOUT waiting for postgres after 1s (hard cap 1s)".into())
    );
    // An empty variable counts as unset, as `${STACK_DEPS_TIMEOUT:-1500}` did.
    let run = quick()
        .args(deps.args())
        .env("STACK_DEPS_TIMEOUT", "")
        .run();
    run.success();
    assert_eq!(
        self::lines(&run)[0],
        "wait-for-deps: starting dep wait (timeout=1500s)"
    );
}

/// Starts the tool, waits for a line containing `after`, sends `signal`; returns the exit code,
/// the time from the signal to the exit, and all output.
pub(super) fn signal_mid_wait(
    mut cmd: Command,
    after: &str,
    signal: i32,
) -> (Option<i32>, Duration, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    while !first.contains(after) {
        assert_ne!(
            stdout.read_line(&mut first).unwrap(),
            0,
            "no {after:?} in {first}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    let took = start.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    (status.code(), took, first + &rest)
}

#[test]
fn sigterm_and_sigint_stop_the_wait_promptly() {
    // One service holds its attempt open, one refuses: the signal must cut through both.
    let silent = Server::always(Reply::Silent);
    let refusing = ClosedPort::new();
    let closed = refusing.port;
    for (signal, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGHUP, 129, "SIGHUP"),
    ] {
        let mut cmd = Command::new(tool_path(TOOL));
        cmd.args(["--timeout", "60", "--docker", "/nonexistent/docker"])
            .args([
                "--target",
                &format!("postgres=pg://127.0.0.1:{}", silent.port),
            ])
            .args(["--target", &format!("clickhouse=tcp://127.0.0.1:{closed}")])
            .env_remove("STACK_PROVISION_LOG_FILE")
            .env_remove("HEXCLAVE_PROVISION_LOG_FILE");
        let (status, took, out) = signal_mid_wait(cmd, "starting dep wait", signal);
        assert_eq!(status, Some(code), "{out}");
        // Far short of the 60 s timeout: the signal cut through the attempts in flight.
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
        assert!(
            out.ends_with(&format!(
                "STACK_PROVISION: wait-for-deps: interrupted by {name} after 0s\n"
            )),
            "{out}"
        );
        assert!(!out.contains("diagnostics"), "{out}");
    }
}

/// A busybox container that ran `script` to its end (its logs complete) and its image; both
/// removed when dropped.
pub(super) fn finished_container(script: &str) -> (docker::Container, docker::Image) {
    let image = docker::ImageBuilder::new("wait").build();
    let container = docker::Container::run_to_end(
        "wait",
        &image,
        &["--network", "none"],
        &["sh", "-c", script],
    );
    (container, image)
}

#[test]
fn diagnostics_show_the_deps_container_from_a_real_docker_engine() {
    require!(docker::ready(), docker::READY);
    let (container, _image) = finished_container(
        "echo 'deps line one'; echo '  deps line two on stderr' >&2; printf 'no newline'",
    );
    let refusing = ClosedPort::new();
    let closed = refusing.port;
    let deps = Deps::ready();
    let run = tool(TOOL)
        .args(deps.args())
        .args(["--target", &format!("postgres=tcp://127.0.0.1:{closed}")])
        .args(["--timeout", "0.5", "--diag-probe-timeout", "0.3"])
        .env("STACK_DEPS_CONTAINER", &container.name)
        .env("DOCKER_HOST", docker::host())
        .run();
    run.code_is(1);
    let lines = lines(&run);
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no line {line:?} in {lines:#?}"))
    };
    let header = at(&format!(
        "wait-for-deps: --- docker logs {} (last 300 lines) ---",
        container.name
    ));
    assert!(at("wait-for-deps: --- docker ps -a ---") < header);
    // docker ps -a lists the container, under the ps prefix.
    assert!(
        lines[..header]
            .iter()
            .any(|l| l.starts_with("wait-for-deps: ps: ") && l.contains(&container.name)),
        "{lines:#?}"
    );
    // Its log, stdout and stderr alike, every byte kept, under the deps prefix, in order.
    let one = at("wait-for-deps: deps: deps line one");
    let two = at("wait-for-deps: deps:   deps line two on stderr");
    let three = at("wait-for-deps: deps: no newline");
    let probes = at("wait-for-deps: --- per-service probes (0.3s timeout) ---");
    for line in [one, two, three] {
        assert!(header < line && line < probes, "{lines:#?}");
    }
}

/// Issue 10, L1: an empty HEXCLAVE_DEPS_TIMEOUT counts as unset: STACK_DEPS_TIMEOUT applies.
#[test]
fn an_empty_hexclave_knob_leaves_the_stack_one_in_force() {
    let refusing = ClosedPort::new();
    let deps = Deps::ready();
    let run = quick()
        .args(deps.args())
        .args([
            "--target",
            &format!("postgres=tcp://127.0.0.1:{}", refusing.port),
        ])
        .env("HEXCLAVE_DEPS_TIMEOUT", "")
        .env("STACK_DEPS_TIMEOUT", "1")
        .run_within(Duration::from_secs(20));
    run.code_is(1);
    let lines = lines(&run);
    assert_eq!(lines[0], "wait-for-deps: starting dep wait (timeout=1s)");
}

/// Issue 10, L2: a log file that is a FIFO neither blocks nor stalls the wait past its
/// deadline: the lines still reach stdout, and the error comes after them.
#[test]
fn a_fifo_log_file_never_stalls_the_wait() {
    let dir = scratch();
    let fifo = dir.path().join("f");
    super::log_provision::mkfifo(&fifo);
    let refusing = ClosedPort::new();
    let deps = Deps::ready();
    let start = Instant::now();
    let run = quick()
        .args(deps.args())
        .args([
            "--target",
            &format!("postgres=tcp://127.0.0.1:{}", refusing.port),
            "--timeout",
            "1",
        ])
        .env("STACK_PROVISION_LOG_FILE", &fifo)
        .run_within(Duration::from_secs(20));
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    run.code_is(1).stderr_is(format!(
        "wait-for-deps: opening {}: it is a FIFO, not a regular file; STACK_PROVISION_LOG_FILE \
         must name a regular file (or be empty)\n",
        fifo.display()
    ));
    let lines = lines(&run);
    assert_eq!(lines[0], "wait-for-deps: starting dep wait (timeout=1s)");
    assert!(lines.contains(
        &"wait-for-deps: TIMEOUT waiting for postgres after 1s (hard cap 1s)".to_string()
    ));
}

/// Issue 10, W1: `--timeout 0` gives one attempt, bounded by --attempt-timeout, and the
/// TIMEOUT line reports the time that really passed.
#[test]
fn a_zero_timeout_reports_the_real_time_of_its_one_attempt() {
    let deps = Deps {
        clickhouse: Server::always(Reply::Silent),
        ..Deps::ready()
    };
    let start = Instant::now();
    let run = quick()
        .args(deps.args())
        .args(["--timeout", "0", "--attempt-timeout", "2"])
        .run_within(Duration::from_secs(20));
    let took = start.elapsed();
    run.code_is(1);
    let lines = lines(&run);
    assert_eq!(
        count(
            &lines,
            "wait-for-deps: TIMEOUT waiting for clickhouse after 2s (hard cap 0s)"
        ),
        1,
        "{lines:#?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Issue 10, W2: a URL with user information is refused as such, without repeating it.
#[test]
fn a_target_with_user_information_says_so() {
    let run = quick()
        .args(["--target", "x=http://user:pw@127.0.0.1:41029/"])
        .run();
    run.code_is(2).stderr_contains(
        "'http://...': user information (USER:PASSWORD@) is not supported in a target; give \
         HOST:PORT only",
    );
    assert!(!run.stderr_str().contains("IPv6"), "{}", run.stderr_str());
}

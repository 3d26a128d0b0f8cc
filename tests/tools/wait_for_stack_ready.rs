//! wait-for-stack-ready: exactly 200 on both, the original's lines and codes, diagnostics.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::wait_for_deps::{UsageCase, finished_container, lines, signal_mid_wait};
use crate::common::docker;
use crate::common::listeners::{ClosedPort, Reply, Server};
use crate::common::*;

const TOOL: &str = "wait-for-stack-ready";

/// The tool with no docker, systemctl or journalctl.
fn quick() -> Cmd {
    tool(TOOL).args([
        "--docker",
        "/nonexistent/docker",
        "--systemctl",
        "/nonexistent/systemctl",
        "--journalctl",
        "/nonexistent/journalctl",
    ])
}

fn ports(backend: &Server, dashboard: &Server) -> [String; 4] {
    [
        "--backend-port".into(),
        backend.port.to_string(),
        "--dashboard-port".into(),
        dashboard.port.to_string(),
    ]
}

#[test]
fn help_and_version() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    let help = run.stdout_str();
    for needle in [
        "Usage: wait-for-stack-ready",
        "STACK_READY_TIMEOUT",
        "[default: 600s]",
        "STACK_READY_BACKEND_PORT",
        "[default: 8102]",
        "STACK_READY_DASHBOARD_PORT",
        "[default: 8101]",
        "[default: 3s]",
        "--systemctl <PROGRAM>",
        "--journalctl <PROGRAM>",
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
        .stdout_is(version_text("wait-for-stack-ready"));
}

#[test]
fn bad_flags_and_environment_are_usage_errors() {
    let cases: &[UsageCase] = &[
        (
            &[],
            &[("STACK_READY_TIMEOUT", "-1")],
            "invalid value '-1' for '--timeout <DURATION>' (from the environment variable STACK_READY_TIMEOUT): must not be negative",
        ),
        (
            &[],
            &[("STACK_READY_BACKEND_PORT", "81o2")],
            "(from the environment variable STACK_READY_BACKEND_PORT): not a port number (1-65535)",
        ),
        (
            &[],
            &[("HEXCLAVE_READY_DASHBOARD_PORT", "0")],
            "(from the environment variable HEXCLAVE_READY_DASHBOARD_PORT): not a port number",
        ),
        (&["--backend-port", "-8102"], &[], "must not be negative"),
        (
            &["--heartbeat", "often"],
            &[],
            "invalid value 'often' for '--heartbeat <DURATION>'",
        ),
        (
            &["--max-interval", "2x"],
            &[],
            "unknown unit 'x' (use ms, s, m or h)",
        ),
        (
            &["--target", "backend=https://127.0.0.1:8102/"],
            &[],
            "https is not supported",
        ),
        (&["--service", ""], &[], "not a name"),
    ];
    for (args, env, message) in cases {
        let mut cmd = tool(TOOL).args(*args);
        for (k, v) in *env {
            cmd = cmd.env(k, v);
        }
        cmd.run().code_is(2).stdout_is("").stderr_contains(message);
    }
}

#[test]
fn ready_when_both_answer_200_probed_at_once() {
    let ms = Duration::from_millis;
    let start = Instant::now();
    let backend = Server::ready_after(ms(500), Reply::Status(503), Reply::Status(200));
    let dashboard = Server::ready_after(ms(1000), Reply::Status(307), Reply::Status(200));
    let run = quick().args(ports(&backend, &dashboard)).run();
    let took = start.elapsed();
    run.success().stderr_is("");
    assert_eq!(
        lines(&run),
        [
            format!(
                "wait-for-stack-ready: waiting for backend:{} and dashboard:{} (timeout=600s)",
                backend.port, dashboard.port
            ),
            "wait-for-stack-ready: ready (1s)".into(),
        ]
    );
    // Not before the dashboard turns ready (1 s); a generous bound above.
    assert!(took >= ms(1000) && took < ms(10_000), "took {took:?}");
    assert!(
        backend
            .requests()
            .iter()
            .all(|r| r == "GET /health?db=1 HTTP/1.1")
    );
    assert!(
        dashboard
            .requests()
            .iter()
            .all(|r| r == "GET /handler/sign-in HTTP/1.1")
    );
}

#[test]
fn only_exactly_200_counts_and_codes_are_curls() {
    let backend = Server::always(Reply::Status(200));
    let dashboard = Server::always(Reply::Status(204));
    let run = quick()
        .args(ports(&backend, &dashboard))
        .args(["--timeout", "1.5", "--heartbeat", "1"])
        .run();
    run.code_is(1);
    let (b, d) = (backend.port, dashboard.port);
    assert_eq!(
        lines(&run),
        [
            format!(
                "wait-for-stack-ready: waiting for backend:{b} and dashboard:{d} (timeout=1.5s)"
            ),
            "wait-for-stack-ready: still waiting (backend=200 dashboard=204, 1s elapsed)".into(),
            "wait-for-stack-ready: TIMEOUT after 1s (backend=200 dashboard=204)".into(),
            format!(
                "wait-for-stack-ready: dashboard still not ready (http://127.0.0.1:{d}/handler/sign-in status=200): HTTP 204"
            ),
            "wait-for-stack-ready: ps: /nonexistent/docker: command not found".into(),
            "wait-for-stack-ready: stack: /nonexistent/docker: command not found".into(),
            "wait-for-stack-ready: svc: /nonexistent/systemctl: command not found".into(),
            "wait-for-stack-ready: jrnl: /nonexistent/journalctl: command not found".into(),
            "wait-for-stack-ready: img: /nonexistent/docker: command not found".into(),
        ]
    );
}

#[test]
fn no_answer_is_code_000_and_environment_sets_ports_and_timeout() {
    let backend = Server::always(Reply::Status(500));
    let refusing = ClosedPort::new();
    let closed = refusing.port;
    let run = quick()
        .args(["--heartbeat", "0"])
        .env("STACK_READY_TIMEOUT", "1")
        .env("STACK_READY_BACKEND_PORT", backend.port.to_string())
        .env("HEXCLAVE_READY_DASHBOARD_PORT", closed.to_string())
        .env("STACK_READY_DASHBOARD_PORT", "1")
        .run();
    run.code_is(1);
    let lines = lines(&run);
    assert_eq!(
        lines[..4],
        [
            format!(
                "wait-for-stack-ready: waiting for backend:{} and dashboard:{closed} (timeout=1s)",
                backend.port
            ),
            "wait-for-stack-ready: TIMEOUT after 1s (backend=500 dashboard=000)".into(),
            format!(
                "wait-for-stack-ready: backend still not ready (http://127.0.0.1:{}/health?db=1 status=200): HTTP 500",
                backend.port
            ),
            format!(
                "wait-for-stack-ready: dashboard still not ready (http://127.0.0.1:{closed}/handler/sign-in status=200): connection refused"
            ),
        ]
    );
}

/// A stand-in program that prints its arguments, one per line, and one line on stderr.
fn stand_in(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\nfor a in \"$@\"; do echo \"{name} arg: $a\"; done\necho \"{name} stderr\" >&2\nexit 3\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn diagnostics_run_the_originals_commands_with_their_prefixes() {
    let dir = scratch();
    let docker = stand_in(dir.path(), "docker");
    let systemctl = stand_in(dir.path(), "systemctl");
    let refusing = ClosedPort::new();
    let closed = refusing.port;
    let dashboard = Server::always(Reply::Status(200));
    let run = tool(TOOL)
        .args(["--timeout", "0.3"])
        .args(["--backend-port", &closed.to_string()])
        .args(["--dashboard-port", &dashboard.port.to_string()])
        .arg("--docker")
        .arg(&docker)
        .arg("--systemctl")
        .arg(&systemctl)
        .args(["--journalctl", "/nonexistent/journalctl"])
        .env("DOCKER_HOST", docker::host())
        .run();
    run.code_is(1);
    let lines = lines(&run);
    let diag: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("wait-for-stack-ready: ps: "))
        .map(String::as_str)
        .collect();
    let p = "wait-for-stack-ready";
    let expected: Vec<String> = [
        ("ps", "docker", &["ps", "-a"][..]),
        ("stack", "docker", &["logs", "--tail", "200", "stack"]),
        (
            "svc",
            "systemctl",
            &["status", "stack.service", "--no-pager", "-l"],
        ),
    ]
    .iter()
    .flat_map(|(prefix, program, args)| {
        args.iter()
            .map(move |a| format!("{p}: {prefix}: {program} arg: {a}"))
            .chain([format!("{p}: {prefix}: {program} stderr")])
    })
    .chain([format!(
        "{p}: jrnl: /nonexistent/journalctl: command not found"
    )])
    .chain([
        format!("{p}: img: docker arg: image"),
        format!("{p}: img: docker arg: ls"),
        format!("{p}: img: docker stderr"),
    ])
    .collect();
    assert_eq!(diag, expected);
}

#[test]
fn diagnostics_from_a_real_docker_engine() {
    require!(docker::ready(), docker::READY);
    let (container, image) = finished_container("echo 'stack says hello'");
    let repository = image.tag.trim_end_matches(":latest");
    let refusing = ClosedPort::new();
    let closed = refusing.port;
    let run = tool(TOOL)
        .args(["--timeout", "0.3"])
        .args(["--backend-port", &closed.to_string()])
        .args(["--dashboard-port", &closed.to_string()])
        .args(["--container", &container.name])
        .args(["--systemctl", "/nonexistent/systemctl"])
        .args(["--journalctl", "/nonexistent/journalctl"])
        .env("DOCKER_HOST", docker::host())
        .run();
    run.code_is(1);
    let lines = lines(&run);
    let has = |pred: &dyn Fn(&str) -> bool| lines.iter().any(|l| pred(l));
    assert!(
        has(&|l| l.starts_with("wait-for-stack-ready: ps: ") && l.contains(&container.name)),
        "{lines:#?}"
    );
    assert!(
        has(&|l| l == "wait-for-stack-ready: stack: stack says hello"),
        "{lines:#?}"
    );
    assert!(
        has(&|l| l.starts_with("wait-for-stack-ready: img: ") && l.contains(repository)),
        "{lines:#?}"
    );
    assert!(has(
        &|l| l == "wait-for-stack-ready: svc: /nonexistent/systemctl: command not found"
    ));
}

#[test]
fn sigterm_stops_the_wait_promptly() {
    let silent = Server::always(Reply::Silent);
    let refusing_dashboard = ClosedPort::new();
    let mut cmd = Command::new(tool_path(TOOL));
    cmd.args(["--timeout", "60", "--docker", "/nonexistent/docker"])
        .args(["--backend-port", &silent.port.to_string()])
        .args(["--dashboard-port", &refusing_dashboard.port.to_string()])
        .env_remove("STACK_PROVISION_LOG_FILE")
        .env_remove("HEXCLAVE_PROVISION_LOG_FILE");
    let (status, took, out) = signal_mid_wait(cmd, "waiting for backend", libc::SIGTERM);
    assert_eq!(status, Some(143), "{out}");
    // Far short of the 60 s timeout: the signal cut through the wait.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        out.ends_with("STACK_PROVISION: wait-for-stack-ready: interrupted by SIGTERM after 0s\n"),
        "{out}"
    );
}

#[test]
fn sigterm_during_diagnostics_kills_the_command_and_exits_143() {
    let dir = scratch();
    let pid_file = dir.path().join("pid");
    let docker = dir.path().join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\necho $$ > '{}'\necho started\nexec sleep 30\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let refusing = ClosedPort::new();
    let closed = refusing.port.to_string();
    let mut cmd = Command::new(tool_path(TOOL));
    cmd.args(["--timeout", "0.2", "--backend-port", &closed])
        .args(["--dashboard-port", &closed])
        .arg("--docker")
        .arg(&docker)
        .env_remove("STACK_PROVISION_LOG_FILE")
        .env_remove("HEXCLAVE_PROVISION_LOG_FILE");
    let (status, took, out) = signal_mid_wait(cmd, "ps: started", libc::SIGTERM);
    assert_eq!(status, Some(143), "{out}");
    // Far short of the 60 s timeout: the signal cut through the wait.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The stand-in (now `sleep 30`) went with it: gone, or a zombie awaiting its new parent.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(text) if text.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')) => break,
            Ok(text) => assert!(Instant::now() < deadline, "still running: {text}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! slim-docker-image against a throwaway engine and a scratch tmpfs.
//!
//! Everything destructive runs in a sandbox: the engine whose images the tool removes is the
//! sandbox's own dockerd, the state file lives in the sandbox directory, and the zero-fill fills
//! a 32 MiB tmpfs mounted inside the sandbox's mount namespace (a tmpfs has no block device, so
//! the default --zero-fill auto writes the zeros). These tests replace the original's
//! straight-line rebuild (a crash between the `mv` of the volumes and their return lost them)
//! and its smoke keys in docker's argv.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::sandbox::{self, Sandbox};
use crate::common::*;

const TOOL: &str = "slim-docker-image";
const STEPS: [&str; 7] = [
    "remove-slim",
    "remove-source",
    "tag",
    "untag-final",
    "prune",
    "verify",
    "free-space",
];
const SMOKE_KEYS: [&str; 3] = [
    "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
    "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY",
    "STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY",
];
/// What the volume holds before the rebuild and must hold after it.
const KEPT: &str = "kept across the rebuild\n";

/// A sandbox with an engine, the fake emulator as `stack-local-emulator`, a volume holding a
/// file, env files and a scratch tmpfs.
struct Setup {
    sb: Sandbox,
}

impl Setup {
    fn new(extra: &[&str], arch: &str) -> Setup {
        let mut sb = Sandbox::with_network();
        sb.start_engine();
        let s = Setup { sb };
        s.build_fake(extra);
        std::fs::write(s.sb.path("build.env"), "STACK_EMULATOR_BUILD_SNAPSHOT=1\n").unwrap();
        std::fs::write(
            s.sb.path("computed.env"),
            "USE_INLINE_ENV_VARS=true\nBACKEND_PORT=8102\n",
        )
        .unwrap();
        std::fs::write(
            s.sb.path("arch.env"),
            format!("STACK_EMULATOR_BUILD_ARCH={arch}\n"),
        )
        .unwrap();
        std::fs::create_dir(s.sb.path("scratch")).unwrap();
        let mount = s.sb.sh(&format!(
            "mount -t tmpfs -o size=32m scratch '{}'",
            s.sb.path("scratch").display()
        ));
        Run(mount).success();
        s.sb.docker_ok([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            "-v",
            "stack-postgres-data:/data/postgres",
            "stack-local-emulator",
            "-c",
            &format!(
                "printf '{}' > /data/postgres/keep.txt",
                KEPT.trim_end().to_owned() + "\\n"
            ),
        ]);
        s
    }

    fn build_fake(&self, extra: &[&str]) {
        crate::common::fake_emulator::build(|a| self.sb.docker(a), "stack-local-emulator", extra);
    }

    fn var_tmp(&self, name: &str) -> PathBuf {
        self.sb.path("var-tmp").join(name)
    }

    fn log_path(&self) -> PathBuf {
        self.sb.path("provision.log")
    }

    fn tool(&self) -> Cmd {
        let p = |name: &str| self.sb.path(name);
        self.sb
            .tool(TOOL)
            .arg("--build-env")
            .arg(p("build.env"))
            .arg("--computed-env")
            .arg(p("computed.env"))
            .arg("--arch-env")
            .arg(p("arch.env"))
            .arg("--state-file")
            .arg(self.var_tmp("slim.state"))
            .arg("--fill-file")
            .arg(p("scratch/zero.fill"))
            .arg("--fstrim-command")
            .arg(format!("fstrim -v {}", p("scratch").display()))
            .args(["--progress-interval", "1"])
            .env("STACK_PROVISION_LOG_FILE", self.log_path())
    }

    /// The smoke-test container's environment (`NAME=value` lines), read from the engine as
    /// soon as the container exists; empty when it did not appear within a minute.
    fn smoke_env(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let out = self
                .sb
                .docker([
                    "inspect",
                    "--format",
                    "{{range .Config.Env}}{{println .}}{{end}}",
                    "smoke-test",
                ])
                .stderr(Stdio::null())
                .output()
                .unwrap();
            let env: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            if !env.is_empty() {
                return env;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Vec::new()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The original's lines: not ours, not a diagnostics stream.
    fn original_lines(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| !l.starts_with("slim-docker-image: "))
            .map(|l| match l.strip_prefix("Smoke test passed (") {
                Some(_) => "Smoke test passed (Ns).".to_string(),
                None => l,
            })
            .collect()
    }

    fn names(&self, args: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = self
            .sb
            .docker_ok(args)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The rebuild left exactly the final image, with the volume's file, and nothing behind.
    #[track_caller]
    fn assert_rebuilt(&self) {
        assert_eq!(
            self.names(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]),
            ["stack-local-emulator:latest"]
        );
        let kept = self.sb.docker_ok([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/cat",
            "-v",
            "stack-postgres-data:/d",
            "stack-local-emulator",
            "/d/keep.txt",
        ]);
        assert_eq!(kept, KEPT);
        assert!(
            !self.var_tmp("slim.state").exists(),
            "the state file left behind"
        );
        assert_eq!(
            self.names(&["ps", "-a", "--format", "{{.Names}}"]),
            Vec::<String>::new()
        );
        let scratch = self
            .sb
            .sh(&format!("ls -A '{}'", self.sb.path("scratch").display()));
        assert_eq!(
            String::from_utf8_lossy(&scratch.stdout),
            "",
            "the fill file is gone"
        );
    }
}

fn engine() -> bool {
    sandbox::engine_available()
}

/// Collects every process's command line while a run goes on.
struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeSet<String>>>,
}

impl CmdlineSampler {
    fn start() -> CmdlineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                let Ok(entries) = std::fs::read_dir("/proc") else {
                    continue;
                };
                for entry in entries.flatten() {
                    if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
                        if !raw.is_empty() {
                            seen.insert(String::from_utf8_lossy(&raw).replace('\0', " "));
                        }
                    }
                }
            }
            seen
        });
        CmdlineSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn full_run_smoke_tests_flattens_rebuilds_and_fills() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&[], "amd64");
    let sampler = CmdlineSampler::start();
    let child = s
        .tool()
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The smoke container's keys, read from the engine while it runs.
    let secrets: Vec<String> = s
        .smoke_env()
        .iter()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| SMOKE_KEYS.contains(key))
        .map(|(_, value)| value.to_string())
        .collect();
    let output = child.wait_with_output().unwrap();
    let seen = sampler.finish();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{:#?}",
        String::from_utf8_lossy(&output.stderr),
        s.log()
    );

    // Three distinct fresh hex keys, none ever in a command line; the run itself was seen.
    assert_eq!(secrets.len(), 3, "{secrets:?}");
    assert!(
        secrets
            .iter()
            .all(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    assert_eq!(secrets.iter().collect::<BTreeSet<_>>().len(), 3);
    for secret in &secrets {
        assert!(
            !seen.iter().any(|c| c.contains(secret.as_str())),
            "a secret was in argv"
        );
    }
    assert!(
        seen.iter()
            .any(|c| c.contains(" run --rm --name smoke-test ")
                && c.contains(" -e STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY -e ")),
        "the sampler never saw the smoke test's docker run"
    );

    assert_eq!(
        s.original_lines(),
        [
            "Building slim Docker image...".to_string(),
            "Slim image built.".into(),
            "Running smoke test on slim image...".into(),
            "Smoke test passed (Ns).".into(),
            "Flattening image (docker export/import)...".into(),
            "Flatten done.".into(),
            "Saving final image to /var/tmp...".to_string(),
            "Nuking Docker storage and reloading...".into(),
            "Docker storage rebuilt.".into(),
            "Zeroing free space for qcow2 compression...".into(),
            "slim-docker-image done.".into(),
        ]
    );
    let log = s.log();
    // "N/7: name: what it does", up to the name.
    let steps: Vec<String> = log
        .iter()
        .filter_map(|l| l.strip_prefix("slim-docker-image: storage rebuild step "))
        .map(|l| l.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": "))
        .collect();
    let expected: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}/7: {s}", i + 1))
        .collect();
    assert_eq!(steps, expected);
    // The scratch tmpfs has no block device: the zero-fill filled it, then the trim ran.
    assert!(
        log.iter().any(|l| l
            .starts_with("slim-docker-image: zero-fill: no block device found under ")
            && l.ends_with("; writing zeros")),
        "{log:#?}"
    );
    let filled = log
        .iter()
        .find_map(|l| l.strip_prefix("slim-docker-image: zero-fill: filesystem full after "))
        .unwrap_or_else(|| panic!("{log:#?}"));
    let mib: u64 = filled.split(' ').next().unwrap().parse().unwrap();
    assert!((30..=32).contains(&mib), "{filled}");
    assert!(filled.ends_with(&format!(
        "; removed {}",
        s.sb.path("scratch/zero.fill").display()
    )));
    assert!(
        log.iter()
            .any(|l| l.starts_with("slim-docker-image: fstrim: ")),
        "{log:#?}"
    );

    s.assert_rebuilt();

    // The flattened image carries exactly the original's --change settings.
    let config = s.sb.docker_ok([
        "image", "inspect", "--format",
        "{{json .Config.Entrypoint}}|{{.Config.WorkingDir}}|{{json .Config.ExposedPorts}}|{{json .Config.Env}}|{{len .RootFS.Layers}}",
        "stack-local-emulator",
    ]);
    let ports: Vec<String> = [
        1100, 2500, 5432, 6379, 8071, 8080, 8101, 8102, 8123, 9001, 9009, 9090,
    ]
    .iter()
    .map(|p| format!("\"{p}/tcp\":{{}}"))
    .collect();
    assert_eq!(
        config.trim_end(),
        format!(
            "[\"/entrypoint.sh\"]|/app|{{{}}}|[\"DEBIAN_FRONTEND=noninteractive\"]|1",
            ports.join(",")
        )
    );
    // The slim Dockerfile's work: the standalone modules in place, linked by name, the full
    // modules and the backend's dist gone.
    let tree = s.sb.docker_ok([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "stack-local-emulator",
        "-c",
        "cd /app/node_modules && ls -A; for l in next react @prisma; do readlink $l; done; \
         ls /app/apps/backend; test -e /app/node_modules.standalone || echo no-standalone",
    ]);
    assert_eq!(
        tree,
        ".pnpm\n@prisma\nnext\nreact\n.pnpm/node_modules/next\n.pnpm/node_modules/react\n\
         .pnpm/node_modules/@prisma\nno-standalone\n"
    );
}

impl Setup {
    /// The volume's file, read in the engine's volumes directory (nothing ever moves it).
    #[track_caller]
    fn volume_file(&self) -> String {
        let rel = "volumes/stack-postgres-data/_data/keep.txt";
        std::fs::read_to_string(self.sb.engine_data_root().join(rel)).unwrap()
    }
}

#[test]
fn a_crash_after_each_rebuild_step_is_finished_by_a_rerun() {
    require!(engine(), "a sandbox with a docker engine");
    // arm64: the smoke test is skipped (and says so), which keeps this long test short.
    let s = Setup::new(&[], "arm64");
    let resumed = |after: &str| {
        format!(
            "slim-docker-image: resuming the storage rebuild after {after} (state file {})",
            s.var_tmp("slim.state").display()
        )
    };
    for (i, step) in STEPS.iter().enumerate() {
        let before = s.log().len();
        let run = s.tool().env("HEXCLAVE_SLIM_CRASH_AFTER", step).run();
        run.code_is(99).stderr_is(format!(
            "slim-docker-image: crash injected after step {step}: STACK_SLIM_CRASH_AFTER\n"
        ));
        let log = s.log()[before..].to_vec();
        if i == 0 {
            assert!(
                log.contains(
                    &"Skipping smoke test: build arch is arm64 and cross-arch TCG \
                               can't reliably run the backend."
                        .to_string()
                ),
                "{log:#?}"
            );
            assert!(!log.iter().any(|l| l.contains("moke test on")), "{log:#?}");
        } else {
            // The re-run resumes after the last recorded step, redoes the crashed one, and
            // goes on to this one.
            let after = if i == 1 { "the start" } else { STEPS[i - 2] };
            assert_eq!(log[0], resumed(after), "{log:#?}");
            assert!(!log.iter().any(|l| l.starts_with("Building")), "{log:#?}");
        }
        // The crashed step is not recorded; the one before it is.
        let state = std::fs::read_to_string(s.var_tmp("slim.state")).unwrap();
        let done = if i == 0 { "none" } else { STEPS[i - 1] };
        assert!(state.contains(&format!("\ndone={done}\n")), "{state}");
        // Nothing lost at any point: the volume's file stays where the engine keeps it, and
        // the final image is in the engine under one of its names.
        assert_eq!(s.volume_file(), KEPT, "after {step}");
        let names = s.names(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(
            names.iter().any(|n| n == "stack-local-emulator:final")
                || names.iter().any(|n| n == "stack-local-emulator:latest"),
            "after {step}: {names:?}"
        );
    }
    let before = s.log().len();
    s.tool().run().success().stderr_is("");
    let log = s.log()[before..].to_vec();
    assert_eq!(log[0], resumed("verify"));
    assert_eq!(log.last().unwrap(), "slim-docker-image done.");
    s.assert_rebuilt();
}

/// A docker client that fails `docker tag` while a flag file exists, and runs docker otherwise.
fn failing_tag_client(s: &Setup) -> (PathBuf, PathBuf) {
    let flag = s.sb.path("fail-tag");
    let client = s.sb.path("docker-failing-tag");
    std::fs::write(
        &client,
        format!(
            "#!/bin/sh\nif [ \"$1\" = tag ] && [ -e '{}' ]; then echo 'tag refused' >&2; exit 1; fi\n\
             exec docker \"$@\"\n",
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(&flag, "").unwrap();
    (client, flag)
}

#[test]
fn a_failed_step_keeps_its_progress_and_a_rerun_finishes() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&[], "arm64");
    let (client, flag) = failing_tag_client(&s);
    let run = s.tool().arg("--docker").arg(&client).run();
    run.code_is(1);
    assert!(
        run.stderr_str().starts_with(&format!(
            "slim-docker-image: storage rebuild step tag: running `{} tag \
             stack-local-emulator:final stack-local-emulator`: exit status 1",
            client.display()
        )),
        "{}",
        run.stderr_str()
    );
    assert!(
        run.stderr_str().ends_with(&format!(
            "; the progress is kept in {}: fix the cause and run slim-docker-image again to \
             resume\n",
            s.var_tmp("slim.state").display()
        )),
        "{}",
        run.stderr_str()
    );
    let state = std::fs::read_to_string(s.var_tmp("slim.state")).unwrap();
    assert!(state.contains("\ndone=remove-source\n"), "{state}");
    assert_eq!(s.volume_file(), KEPT);
    std::fs::remove_file(flag).unwrap();
    s.tool().arg("--docker").arg(&client).run().success();
    s.assert_rebuilt();
}

/// --dry-run says what a run would do and does none of it: the engine, the state file, the
/// scratch filesystem and the log file are as they were.
#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&[], "amd64");
    let snapshot = |s: &Setup| {
        (
            s.names(&[
                "image",
                "ls",
                "--no-trunc",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
            ]),
            s.names(&["ps", "-a", "--format", "{{.Names}}"]),
            s.names(&["volume", "ls", "--format", "{{.Name}}"]),
            s.volume_file(),
            s.sb.sh(&format!("ls -A '{}'", s.sb.path("scratch").display()))
                .stdout,
            std::fs::read_dir(s.sb.path("")).unwrap().count(),
        )
    };
    // A renamed variable in the computed env file: the smoke test passes its other name too.
    std::fs::write(
        s.sb.path("computed.env"),
        "USE_INLINE_ENV_VARS=true\nBACKEND_PORT=8102\nNEXT_PUBLIC_HEXCLAVE_PORT_PREFIX=81\n",
    )
    .unwrap();
    let before = snapshot(&s);
    let run = s.tool().arg("--dry-run").run();
    run.success().stderr_is("");
    let plan = run.stdout_str();
    let lines: Vec<&str> = plan.lines().collect();
    let p = |name: &str| s.sb.path(name).display().to_string();
    assert_eq!(
        lines[..3],
        [
            "dry run: step 1: docker build -t stack-local-emulator-slim - (the Dockerfile on \
             stdin: FROM stack-local-emulator)"
                .to_string(),
            format!(
                "dry run: step 2: docker run --rm --name smoke-test --network host --env-file {} \
                 --env-file {} -e STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
                 -e STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY \
                 -e STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY \
                 -e 'STACK_SKIP_MIGRATIONS=true' -e 'STACK_SKIP_SEED_SCRIPT=true' \
                 -e 'STACK_RUNTIME_WORK_DIR=/app' \
                 -e STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY \
                 -e STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY \
                 -e NEXT_PUBLIC_STACK_PORT_PREFIX \
                 -v stack-postgres-data:/data/postgres -v stack-redis-data:/data/redis \
                 -v stack-clickhouse-data:/data/clickhouse -v stack-minio-data:/data/minio \
                 -v stack-inbucket-data:/data/inbucket -d stack-local-emulator-slim, then wait \
                 up to 300s for 200 on http://127.0.0.1:8102/health?db=1",
                p("build.env"),
                p("computed.env")
            ),
            "dry run: step 3: docker create --name flatten stack-local-emulator-slim /bin/true; \
             docker export flatten | docker import --change 'WORKDIR /app' \
             --change 'ENTRYPOINT [\"/entrypoint.sh\"]' \
             --change 'EXPOSE 5432 6379 2500 9001 1100 8071 8123 9009 9090 8080 8101 8102' \
             --change 'ENV DEBIAN_FRONTEND=noninteractive' - stack-local-emulator:final; \
             docker rm -f flatten"
                .to_string(),
        ]
    );
    assert_eq!(
        lines[3],
        "dry run: storage rebuild step 1/7: remove-slim: docker rmi stack-local-emulator-slim \
         (the flatten's source; already gone is fine)"
    );
    assert!(
        lines[9].starts_with("dry run: storage rebuild step 7/7: free-space: "),
        "{plan}"
    );
    assert!(lines[10].contains("(the disk under "), "{plan}");
    assert_eq!(lines.len(), 11, "{plan}");
    assert_eq!(snapshot(&s), before);
    assert!(!s.log_path().exists(), "the log file was not even created");
    assert!(!s.var_tmp("slim.state").exists());
}

/// The user-data's `/etc/stack-build-computed.env`.
const COMPUTED_ENV: &str = "USE_INLINE_ENV_VARS=true
NEXT_PUBLIC_STACK_API_URL=http://localhost:8102
NEXT_PUBLIC_STACK_DASHBOARD_URL=http://localhost:8101
NEXT_PUBLIC_BROWSER_STACK_API_URL=http://localhost:8102
NEXT_PUBLIC_BROWSER_STACK_DASHBOARD_URL=http://localhost:8101
NEXT_PUBLIC_SERVER_STACK_API_URL=http://127.0.0.1:8102
NEXT_PUBLIC_SERVER_STACK_DASHBOARD_URL=http://127.0.0.1:8101
NEXT_PUBLIC_STACK_SVIX_SERVER_URL=http://localhost:8071
NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX=81
STACK_CLICKHOUSE_DATABASE=default
BACKEND_PORT=8102
DASHBOARD_PORT=8101
";

/// The smoke container's environment holds the renamed variables under both generations'
/// names (the Hexclave image reads one, the released Stack Auth image the other), with equal
/// values, and no value is in any command line.
#[test]
fn the_smoke_test_environment_gives_each_renamed_variable_under_both_names() {
    require!(engine(), "a sandbox with a docker engine");
    // The app never answers: the smoke test fails after its timeout, before any rebuild.
    let s = Setup::new(&["ENV FAKE_APP_BROKEN=1"], "amd64");
    std::fs::write(s.sb.path("computed.env"), COMPUTED_ENV).unwrap();
    let sampler = CmdlineSampler::start();
    let child = s
        .tool()
        .args(["--smoke-timeout", "3"])
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let env = s.smoke_env();
    let output = child.wait_with_output().unwrap();
    let seen = sampler.finish();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let value = |name: &str| -> String {
        let prefix = format!("{name}=");
        let found: Vec<&String> = env.iter().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(found.len(), 1, "{name} once in {env:#?}");
        found[0][prefix.len()..].to_string()
    };
    let [pck, ssk, sak] = SMOKE_KEYS.map(value);
    for key in [&pck, &ssk, &sak] {
        assert!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
    }
    assert!(pck != ssk && ssk != sak && pck != sak);
    let mut renamed: Vec<&str> = env
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("INTERNAL_PROJECT_") || l.contains("_PORT_PREFIX="))
        .collect();
    renamed.sort_unstable();
    let mut expected = vec![
        "NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX=81".to_string(),
        "NEXT_PUBLIC_STACK_PORT_PREFIX=81".to_string(),
        format!("STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={pck}"),
        format!("STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY={ssk}"),
        format!("STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={pck}"),
        format!("STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY={ssk}"),
        format!("STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY={sak}"),
    ];
    expected.sort_unstable();
    assert_eq!(renamed, expected);
    for secret in [&pck, &ssk, &sak] {
        assert!(
            !seen.iter().any(|c| c.contains(secret.as_str())),
            "a secret was in argv"
        );
    }
    assert!(
        s.log().contains(
            &"SMOKE TEST FAILED: backend /health?db=1 did not return 200 within 3s".into()
        ),
        "{:#?}",
        s.log()
    );
}

#[test]
fn a_failed_smoke_test_dumps_diagnostics_and_removes_its_container() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&["ENV FAKE_APP_BROKEN=1"], "amd64");
    s.tool()
        .args(["--smoke-timeout", "2"])
        .run()
        .code_is(1)
        .stderr_is("");
    let log = s.log();
    let at = |line: &str| {
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?}: {log:#?}"))
    };
    let failed = at("SMOKE TEST FAILED: backend /health?db=1 did not return 200 within 2s");
    assert_eq!(log[failed - 1], "Running smoke test on slim image...");
    let ps = at("--- docker ps -a ---");
    let logs = at("--- smoke-test container logs (last 200 lines) ---");
    let mem = at("--- free -m ---");
    let curl = at("--- curl -v /health?db=1 ---");
    assert!(
        failed < ps && ps < logs && logs < mem && mem < curl,
        "{log:#?}"
    );
    let section = |from: usize, to: usize, prefix: &str| {
        assert!(to > from + 1, "empty section {prefix}: {log:#?}");
        for line in &log[from + 1..to] {
            assert!(line.starts_with(prefix), "{line:?} in the {prefix} section");
        }
    };
    section(ps, logs, "ps: ");
    assert!(
        log[ps + 1..logs].iter().any(|l| l.contains("smoke-test")),
        "{log:#?}"
    );
    section(logs, mem, "smoke-test: ");
    assert!(log[logs + 1..mem].contains(&"smoke-test: fake-emulator: app mode".to_string()));
    section(mem, curl, "mem: ");
    section(curl, log.len(), "curl: ");
    // curl's own account, or the one line saying it is missing.
    assert!(
        log[curl + 1..]
            .iter()
            .any(|l| l.contains("127.0.0.1") || l == "curl: curl: command not found"),
        "{log:#?}"
    );
    assert_eq!(
        s.names(&["ps", "-a", "--format", "{{.Names}}"]),
        Vec::<String>::new()
    );
    assert!(!s.var_tmp("slim.state").exists(), "no rebuild started");
    assert!(
        s.names(&["image", "ls", "--format", "{{.Repository}}"])
            .contains(&"stack-local-emulator-slim".to_string())
    );
}

#[test]
fn a_state_file_path_that_is_not_absolute_is_a_usage_error() {
    tool(TOOL)
        .args(["--state-file", "relative.state"])
        .run()
        .code_is(2)
        .stderr_is(
            "slim-docker-image: --state-file relative.state: must be an absolute path without \
             '..'
\
             Try 'slim-docker-image --help' for more information.
",
        );
}

#[test]
fn help_version_and_bad_arguments() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    let help = run.stdout_str();
    for text in [
        "Usage: slim-docker-image [OPTIONS]",
        "[default: /var/tmp/slim-docker-image.state]",
        "[default: /zero.fill]",
        "[default: \"fstrim -av\"]",
        "[default: auto]",
        "--dry-run",
        "[default: /etc/stack-build-arch.env]",
        "[default: smoke-test]",
        "[default: 8102]",
        "[default: stack-local-emulator:final]",
        "STACK_SEED_INTERNAL_PROJECT_{PUBLISHABLE_CLIENT,SECRET_SERVER}_KEY",
        "also as NEXT_PUBLIC_STACK_PORT_PREFIX",
    ] {
        assert!(help_contains(&help, text), "--help lacks {text:?}:\n{help}");
    }
    assert!(!help.contains("crash-after"), "the test knob stays hidden");
    // The step table, one line per step, from the same table the runner reads.
    let table: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Storage rebuild steps"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(table, STEPS);
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text(TOOL));
    tool(TOOL)
        .args(["--zero-fill", "sometimes"])
        .run()
        .code_is(2)
        .stderr_contains("expected auto, always or never");
    tool(TOOL)
        .args(["--fill-block-size", "4X"])
        .run()
        .code_is(2)
        .stderr_contains("invalid value '4X' for '--fill-block-size <SIZE>'");
    tool(TOOL)
        .env("HEXCLAVE_SLIM_CRASH_AFTER", "lunch")
        .run()
        .code_is(2)
        .stderr_contains("unknown step 'lunch'");
}

#[test]
fn sigterm_during_the_smoke_test_removes_its_container() {
    require!(engine(), "a sandbox with a docker engine");
    let s = Setup::new(&["ENV FAKE_APP_BROKEN=1"], "amd64");
    let mut child = s
        .tool()
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s
        .names(&["ps", "--format", "{{.Names}}"])
        .contains(&"smoke-test".to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the smoke test never started: {:#?}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = terminate(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(143));
    assert_eq!(
        s.log().last().unwrap(),
        "slim-docker-image: interrupted by SIGTERM"
    );
    assert_eq!(
        s.names(&["ps", "-a", "--format", "{{.Names}}"]),
        Vec::<String>::new()
    );
    assert!(!s.var_tmp("slim.state").exists());
}

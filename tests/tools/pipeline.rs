//! The build pipeline end to end: provision-build running every real build-time tool against a
//! throwaway engine, as cloud-init runs it in the guest.
//!
//! Each test owns one sandbox (private mount and network namespaces) holding everything the
//! guest would have: a dockerd of its own, which install-emulator-containers starts through the
//! sandbox's script (standing in for `systemctl enable --now docker`); the bundle disk, an ext4 filesystem labelled
//! STACKBUNDLE on a loop device (found through a by-label link, as udev would make it) holding
//! the fake emulator's `img.tgz` and a `build.env`; a tmpfs as the host folder, so the log is
//! `HOST/provision.log`; a 32 MiB tmpfs for the zero-fill; plain files as the consoles and the
//! serial device; a recording systemctl whose `start stack.service` runs run-stack-container in
//! the background as systemd would; and the fixture stand-in as shutdown and poweroff.
//!
//! provision-build runs each tool without arguments from `--tools-dir`. There the test writes
//! wrapper scripts, `exec TOOL --flag value … "$@"`, that point each tool at the sandbox's paths
//! (their defaults are the machine's /etc, /var/lib/docker, /var/tmp and /zero.fill) and bound
//! their waits to a minute, and links the tools that need no flags.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::fake_emulator::{self, IMAGE};
use crate::common::sandbox::{self, LoopDevice, Sandbox, ext4_image};
use crate::common::*;

const TOOL: &str = "provision-build";

/// How long a whole run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(150);

/// The bound each tool's wait gets here (their defaults are minutes), in seconds.
const WAIT: &str = "60";

/// The build env's realistic part: the generated base.env, then the build's own switch.
fn build_env(extra: &str) -> String {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/render-stack-env/base.env"),
    )
    .unwrap();
    format!("{base}STACK_EMULATOR_BUILD_SNAPSHOT=1\n{extra}")
}

/// `/etc/stack-build-computed.env` exactly as the user-data ships it.
fn computed_env() -> String {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../cloud-init/user-data.template"),
    )
    .unwrap();
    let mut lines = template
        .lines()
        .skip_while(|l| *l != "  - path: /etc/stack-build-computed.env");
    assert_eq!(
        lines.nth(1),
        Some("    content: |"),
        "the template's layout"
    );
    let body: Vec<&str> = lines.map_while(|l| l.strip_prefix("      ")).collect();
    assert!(body.contains(&"USE_INLINE_ENV_VARS=true"), "{body:?}");
    body.iter().map(|l| format!("{l}\n")).collect()
}

/// `'text'` for a fixed script; the sandbox's paths never hold a quote.
fn quoted(text: &str) -> String {
    assert!(!text.contains('\''), "{text}");
    format!("'{text}'")
}

/// The runtime settings the host writes on the STACKCFG disk, in capture mode (no VM folder).
fn runtime_env() -> String {
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/render-stack-env/runtime.env"),
    )
    .unwrap();
    fixture
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("STACK_EMULATOR_VM_DIR_HOST", _)) => "STACK_EMULATOR_VM_DIR_HOST=\n".into(),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// A sandbox set up as a guest at its first boot, and provision-build once started.
struct Guest {
    sb: Sandbox,
    disk: LoopDevice,
    child: Option<Child>,
    started: Option<Instant>,
}

impl Guest {
    /// The fake emulator built with `image_lines` (extra Dockerfile lines) and shipped on the
    /// bundle disk with a build.env ending in `env_extra` and, when `arch` is given, a
    /// build-arch.env.
    fn new(image_lines: &[&str], env_extra: &str, arch: Option<&str>) -> Guest {
        let mut sb = Sandbox::with_network();
        sb.start_engine();
        let bundle = sb.path("bundle");
        fake_emulator::bundle(|a| sb.docker(a), image_lines, &bundle);
        std::fs::write(bundle.join("build.env"), build_env(env_extra)).unwrap();
        if let Some(arch) = arch {
            std::fs::write(
                bundle.join("build-arch.env"),
                format!("STACK_EMULATOR_BUILD_ARCH={arch}\n"),
            )
            .unwrap();
        }
        // install-emulator-containers starts it again, as `systemctl enable --now docker`.
        sb.stop_engine();

        let image = sb.path("bundle.ext4");
        ext4_image(&image, "STACKBUNDLE", &bundle, "32M");
        let disk = LoopDevice::attach(&image);
        for dir in [
            "by-label",
            "mnt/stack-bundle",
            "etc",
            "host",
            "scratch",
            "var-tmp",
            "cfg",
            "keys",
            "run",
            "dev",
            "tools",
            "sbin",
            "stand-in",
        ] {
            std::fs::create_dir_all(sb.path(dir)).unwrap();
        }
        symlink(disk.path(), sb.path("by-label/STACKBUNDLE")).unwrap();
        std::fs::write(sb.path("etc/stack-build-computed.env"), computed_env()).unwrap();
        std::fs::write(sb.path("cfg/runtime.env"), runtime_env()).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/render-stack-env/base.env"),
            sb.path("cfg/base.env"),
        )
        .unwrap();
        // /host and the zero-fill's disk, both small filesystems of the sandbox's own.
        let mounted = sb.sh(&format!(
            "mount -t tmpfs -o size=16m hostfs {} && mount -t tmpfs -o size=32m scratch {}",
            quoted(&sb.path("host").display().to_string()),
            quoted(&sb.path("scratch").display().to_string()),
        ));
        Run(mounted).success();
        // /dev/console and ttyS0 exist (ttyS0 is the serial device too); ttyAMA0 does not.
        std::fs::write(sb.path("dev/console"), "").unwrap();
        std::fs::write(sb.path("dev/ttyS0"), "").unwrap();

        let guest = Guest {
            sb,
            disk,
            child: None,
            started: None,
        };
        guest.install_tools();
        guest
    }

    fn path(&self, name: &str) -> PathBuf {
        self.sb.path(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn build_env_path(&self) -> String {
        self.p("etc/stack-build.env")
    }

    /// The tools directory: wrappers pointing the tools at the sandbox, links for the others,
    /// and the stand-ins for systemctl, shutdown and poweroff.
    fn install_tools(&self) {
        let (start, _) = self.sb.engine_scripts();
        let start = start.display().to_string();
        let build_env = self.build_env_path();
        let computed = self.p("etc/stack-build-computed.env");
        let arch_env = self.p("etc/stack-build-arch.env");
        let wrappers: [(&str, Vec<String>); 5] = [
            (
                "install-emulator-containers",
                vec![
                    "--by-label-dir".into(),
                    self.p("by-label"),
                    "--mount-point".into(),
                    self.p("mnt/stack-bundle"),
                    "--start-docker".into(),
                    start,
                    "--docker-timeout".into(),
                    WAIT.into(),
                    "--build-env".into(),
                    build_env.clone(),
                    "--build-arch-env".into(),
                    arch_env.clone(),
                ],
            ),
            (
                "run-build-migrations",
                vec![
                    "--build-env".into(),
                    build_env.clone(),
                    "--computed-env".into(),
                    computed.clone(),
                    "--deps-timeout".into(),
                    WAIT.into(),
                    "--init-timeout".into(),
                    WAIT.into(),
                ],
            ),
            (
                "slim-docker-image",
                vec![
                    "--build-env".into(),
                    build_env.clone(),
                    "--computed-env".into(),
                    computed,
                    "--arch-env".into(),
                    arch_env,
                    "--smoke-timeout".into(),
                    WAIT.into(),
                    "--state-file".into(),
                    self.p("var-tmp/slim-docker-image.state"),
                    "--fill-file".into(),
                    self.p("scratch/zero.fill"),
                    "--fstrim-command".into(),
                    format!("fstrim -v {}", self.p("scratch")),
                ],
            ),
            (
                "wait-for-stack-ready",
                vec![
                    "--timeout".into(),
                    WAIT.into(),
                    "--systemctl".into(),
                    self.p("sbin/systemctl"),
                ],
            ),
            (
                // What stack.service runs; the systemctl stand-in starts it.
                "run-stack-container",
                vec![
                    "--host-dir".into(),
                    self.p("host"),
                    "--no-cfg-mount".into(),
                    "--cfg-mount-point".into(),
                    self.p("cfg"),
                    "--key-dir".into(),
                    self.p("keys"),
                    "--build-env".into(),
                    build_env,
                    "--env-file".into(),
                    self.p("run/local-emulator.env"),
                ],
            ),
        ];
        for (name, args) in wrappers {
            let words: Vec<String> = std::iter::once(tool_path(name).display().to_string())
                .chain(args)
                .map(|w| quoted(&w))
                .collect();
            executable(
                &self.path("tools").join(name),
                &format!(
                    "#!/bin/sh\n# {name}, pointed at the sandbox.\nexec {} \"$@\"\n",
                    words.join(" ")
                ),
            );
        }
        // mount-host-fs gets --mount-point from provision-build; the rest need nothing.
        for name in [
            "mount-host-fs",
            "wait-for-deps",
            "log-provision",
            "log-provision-stream",
        ] {
            symlink(tool_path(name), self.path("tools").join(name)).unwrap();
        }
        executable(
            &self.path("sbin/systemctl"),
            &format!(
                "#!/bin/sh\n\
                 # Stands in for systemctl: records every call and succeeds; `start \
                 stack.service`\n\
                 # runs run-stack-container in the background, in a session of its own, as \
                 systemd would.\n\
                 printf '%s\\n' \"$*\" >> {calls}\n\
                 if [ \"$*\" = 'start stack.service' ]; then\n\
                 \x20   setsid {rsc} > {out} 2>&1 < /dev/null &\n\
                 \x20   echo $! > {pid}\n\
                 fi\n\
                 exit 0\n",
                calls = quoted(&self.p("systemctl.calls")),
                rsc = quoted(&self.p("tools/run-stack-container")),
                out = quoted(&self.p("stack.out")),
                pid = quoted(&self.p("stack.pid")),
            ),
        );
        for name in ["shutdown", "poweroff"] {
            symlink(provision_stand_in(), self.path("sbin").join(name)).unwrap();
        }
    }

    /// Starts provision-build inside the sandbox, its output to files.
    fn start(&mut self) {
        let dev = |name: &str| self.p(&format!("dev/{name}"));
        let mut cmd = self
            .sb
            .tool(TOOL)
            .env("DOCKER_HOST", self.sb.docker_host())
            .env("STAND_IN_DIR", self.path("stand-in"))
            .args([
                format!("--tools-dir={}", self.p("tools")),
                format!("--host={}", self.p("host")),
                format!("--build-env={}", self.build_env_path()),
                format!("--serial={},{}", dev("ttyAMA0"), dev("ttyS0")),
                format!(
                    "--console={},{},{}",
                    dev("console"),
                    dev("ttyAMA0"),
                    dev("ttyS0")
                ),
                format!("--systemctl={}", self.p("sbin/systemctl")),
                format!("--shutdown={} -P now", self.p("sbin/shutdown")),
                format!("--force-poweroff={} -f", self.p("sbin/poweroff")),
                "--shutdown-delay=0".into(),
                "--force-poweroff-delay=0.2".into(),
                "--qga-settle=0.2".into(),
                // Longer than run-build-migrations needs to remove its container when stopped.
                "--stop-grace=30".into(),
            ])
            .cmd;
        cmd.stdout(std::fs::File::create(self.path("stdout")).unwrap())
            .stderr(std::fs::File::create(self.path("stderr")).unwrap());
        self.started = Some(Instant::now());
        // nsenter executes provision-build without forking: the child is provision-build.
        self.child = Some(cmd.spawn().expect("start provision-build"));
    }

    /// Waits for provision-build to exit; returns its status and how long it ran.
    #[track_caller]
    fn wait(&mut self) -> (Option<i32>, Duration) {
        let child = self.child.as_mut().expect("provision-build was started");
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let took = self.started.map(|s| s.elapsed()).unwrap_or_default();
                self.child = None;
                // The engine provision-build's tools started is the sandbox's now.
                self.sb.adopt_engine();
                return (status.code(), took);
            }
            assert!(
                Instant::now() < deadline,
                "provision-build still runs after {RUN_TIMEOUT:?}:\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether provision-build still runs.
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Polls until `line` is a whole line of the log; panics if provision-build exits first.
    #[track_caller]
    fn wait_for_line(&mut self, line: &str) {
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !self.log_lines().iter().any(|l| l == line) {
            assert!(
                self.running(),
                "provision-build exited before {line:?}:\n{}",
                self.report()
            );
            assert!(
                Instant::now() < deadline,
                "no {line:?} after {RUN_TIMEOUT:?}:\n{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `HOST/provision.log`, read inside the sandbox (the host folder is its tmpfs).
    fn log(&self) -> String {
        let out = self
            .sb
            .command("cat")
            .arg(self.path("host/provision.log"))
            .output()
            .expect("run cat");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_lines(&self) -> Vec<String> {
        self.log().lines().map(str::to_string).collect()
    }

    /// The log and provision-build's stderr, for a failure message.
    fn report(&self) -> String {
        format!(
            "--- provision.log ---\n{}--- stderr ---\n{}",
            self.log(),
            self.read("stderr")
        )
    }

    /// A file of the sandbox's directory; empty when missing.
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn systemctl_calls(&self) -> Vec<String> {
        self.read("systemctl.calls")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The calls of the power-off stand-in `name`, as `NAME|ARGS`.
    fn power_calls(&self, name: &str) -> Vec<String> {
        self.read("stand-in/calls")
            .lines()
            .filter(|c| c.split('|').next() == Some(name))
            .map(|c| c.split('|').take(2).collect::<Vec<_>>().join("|"))
            .collect()
    }

    /// Normalizes a log line for comparison: the sandbox's directory as `SB`, every number as
    /// `N` (durations, the loop device's number).
    fn normalize(&self, line: &str) -> String {
        let line = line.replace(&self.sb.dir().display().to_string(), "SB");
        let mut out = String::with_capacity(line.len());
        let mut in_number = false;
        for c in line.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    out.push('N');
                }
                in_number = true;
            } else {
                out.push(c);
                in_number = false;
            }
        }
        out
    }

    /// Checks that the log holds `groups` in order: every line of a group (in any order among
    /// themselves) after every line of the group before. Lines are compared normalized.
    #[track_caller]
    fn assert_in_order(&self, groups: &[Vec<String>]) {
        let log: Vec<String> = self.log_lines().iter().map(|l| self.normalize(l)).collect();
        let mut from = 0;
        for group in groups {
            let mut end = from;
            for line in group {
                let want = self.normalize(line);
                let at = log[from..]
                    .iter()
                    .position(|l| *l == want)
                    .unwrap_or_else(|| {
                        panic!(
                            "no {want:?} after line {from} of the log (normalized):\n{log:#?}\n{}",
                            self.report()
                        )
                    });
                end = end.max(from + at + 1);
            }
            from = end;
        }
    }

    /// The stack container's pid file, when stack.service was started.
    fn stack_pid(&self) -> Option<i32> {
        self.read("stack.pid").trim().parse().ok()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // run-stack-container, started by the systemctl stand-in; it also ends with the engine.
        if let Some(pid) = self.stack_pid() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("run-stack-container") {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Then the fields: the sandbox (engine, namespaces, mounts), then the loop device.
    }
}

fn lines(v: &[&str]) -> Vec<Vec<String>> {
    v.iter().map(|l| vec![l.to_string()]).collect()
}

/// Lines that are the tools' additions to the original's log, not the original's own.
fn is_ours(line: &str) -> bool {
    [
        "step ",
        "  ",
        "install-emulator-containers: ",
        "run-build-migrations: ",
        "slim-docker-image: ",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

/// run-build-migrations' lines of a successful run, wait-for-deps' block included (the five
/// services become ready concurrently, in any order).
fn migration_lines() -> Vec<Vec<String>> {
    let mut groups = lines(&[
        "starting build migrations",
        "Starting deps container...",
        "Waiting for deps (postgres, redis, clickhouse, minio, qstash)...",
        "wait-for-deps: starting dep wait (timeout=60s)",
    ]);
    groups.push(
        ["postgres", "clickhouse", "svix", "minio", "qstash"]
            .iter()
            .map(|s| format!("wait-for-deps: {s} ready (0s)"))
            .collect(),
    );
    groups.extend(lines(&[
        "wait-for-deps: all deps ready (0s total)",
        "Deps ready.",
        "Waiting for init-services.sh...",
        "init-services done (0s).",
        "Running migrations...",
        "Migrations + seed complete.",
        "Stopping deps container...",
        "run-build-migrations done.",
    ]));
    groups
}

fn available() -> bool {
    sandbox::engine_available() && sandbox::loop_available()
}

#[test]
fn a_build_runs_every_tool_flattens_the_image_marks_done_and_powers_off_once() {
    require!(
        available(),
        "a sandbox with a docker engine, and loop devices"
    );
    let mut g = Guest::new(&[], "", Some("amd64"));
    g.start();
    let (code, took) = g.wait();
    eprintln!(
        "pipeline: the successful build took {:.1}s (provision-build's wall time)",
        took.as_secs_f64()
    );
    assert_eq!(code, Some(0), "{}", g.report());

    let log = g.log();
    assert!(log.ends_with("\nSTACK_CLOUD_INIT_DONE\n"), "{log}");
    let mount_point = g.p("mnt/stack-bundle");
    let mut expected = lines(&["runcmd starting", "installing emulator containers"]);
    expected.extend(lines(&[
        &format!(
            "install-emulator-containers: mounted {} (ext4) read-only at {mount_point}",
            g.disk.0
        ),
        &format!(
            "install-emulator-containers: copied {mount_point}/build.env to {}",
            g.build_env_path()
        ),
        &format!(
            "install-emulator-containers: copied {mount_point}/build-arch.env to {}",
            g.p("etc/stack-build-arch.env")
        ),
    ]));
    expected.extend(migration_lines());
    expected.extend(lines(&[
        "starting slim-docker-image",
        "Building slim Docker image...",
        "Slim image built.",
        "Running smoke test on slim image...",
        "Smoke test passed (0s).",
        "Flattening image (docker export/import)...",
        "Flatten done.",
        "Saving final image to /var/tmp...",
        "Nuking Docker storage and reloading...",
        "Docker storage rebuilt.",
        "Zeroing free space for qcow2 compression...",
        "slim-docker-image done.",
        "build pipeline complete",
        "STACK_CLOUD_INIT_DONE",
    ]));
    g.assert_in_order(&expected);
    // And nothing else but the tools' own additions: no error, no heartbeat, no diagnostics.
    let originals = g.log_lines().into_iter().filter(|l| !is_ours(l)).count();
    let expected_originals = expected.iter().flatten().filter(|l| !is_ours(l)).count();
    assert_eq!(originals, expected_originals, "{log}");

    // The engine holds the flattened image under the emulator's name, and nothing else.
    assert_eq!(g.sb.images(), [format!("{IMAGE}:latest")]);
    let config = g.sb.docker_ok([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}|{{.Config.WorkingDir}}|{{len .RootFS.Layers}}",
        IMAGE,
    ]);
    assert_eq!(config, "[\"/entrypoint.sh\"]|/app|1\n");
    assert_eq!(g.sb.containers(), Vec::<String>::new());
    let mut volumes: Vec<String> =
        g.sb.docker_ok(["volume", "ls", "--format", "{{.Name}}"])
            .lines()
            .map(str::to_string)
            .collect();
    volumes.sort();
    assert_eq!(
        volumes,
        [
            "stack-clickhouse-data",
            "stack-inbucket-data",
            "stack-minio-data",
            "stack-postgres-data",
            "stack-redis-data"
        ]
    );
    for left in [
        "final-image.tar",
        "volumes-backup",
        "slim-docker-image.state",
    ] {
        assert!(!g.path("var-tmp").join(left).exists(), "{left} left behind");
    }
    assert_eq!(
        g.read("etc/stack-build.env"),
        build_env(""),
        "install copied build.env"
    );

    // The consoles that exist got the marker alone on its line; the serial device got all the
    // output, then the marker; none was created.
    assert_eq!(g.read("dev/console"), "STACK_CLOUD_INIT_DONE\n");
    let serial = g.read("dev/ttyS0");
    let done = serial
        .find("\nSTACK_CLOUD_INIT_DONE\n")
        .unwrap_or_else(|| panic!("{serial}"));
    for needle in [
        "STACK_PROVISION: runcmd starting\n",
        "Loaded image: stack-local-emulator:latest\n",
        "STACK_PROVISION: Migrations + seed complete.\n",
        "STACK_PROVISION: build pipeline complete\n",
    ] {
        assert!(serial[..done].contains(needle), "serial lacks {needle:?}");
    }
    assert!(!g.path("dev/ttyAMA0").exists());

    assert_eq!(
        g.systemctl_calls(),
        [
            "disable --now ssh",
            "mask ssh",
            "enable qemu-guest-agent",
            "start qemu-guest-agent",
            "daemon-reload",
            "enable stack.service",
        ]
    );
    // Power-off requested once: no failure-block stage follows it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(g.power_calls("shutdown"), ["shutdown|-P now"]);
    assert_eq!(g.power_calls("poweroff"), Vec::<String>::new());
}

#[test]
fn failed_migrations_run_the_failure_block_and_leave_no_deps_container() {
    require!(
        available(),
        "a sandbox with a docker engine, and loop devices"
    );
    let mut g = Guest::new(&[], "FAKE_MIGRATE_EXIT=7\n", None);
    g.start();
    let (code, _) = g.wait();
    assert_eq!(code, Some(7), "{}", g.report());

    let node = "node --no-opt --no-wasm-tier-up --no-wasm-dynamic-tiering --no-wasm-code-gc \
                dist/db-migrations.mjs migrate";
    let mut expected = lines(&["runcmd starting", "installing emulator containers"]);
    expected.extend(lines(&[
        "starting build migrations",
        "Starting deps container...",
        "Deps ready.",
        "Running migrations...",
        "MIGRATIONS FAILED (exit 7) — last 200 lines of migration output:",
        &format!("migrate: {node}: output line 1"),
        &format!("migrate: {node}: output line 2"),
        &format!("migrate: {node}: output line 3"),
        "Stopping deps container...",
        "step run-build-migrations: exit status 7 in 0.0s",
        "ERROR: provision-build exited with code 7",
        "STACK_CLOUD_INIT_FAILED",
    ]));
    g.assert_in_order(&expected);
    let log = g.log_lines();
    assert_eq!(
        log[log.len() - 2..],
        [
            "ERROR: provision-build exited with code 7",
            "STACK_CLOUD_INIT_FAILED"
        ]
    );
    for never in ["Migrations + seed complete.", "starting slim-docker-image"] {
        assert!(!log.iter().any(|l| l == never), "{never}: {log:#?}");
    }
    assert_eq!(
        g.sb.containers(),
        Vec::<String>::new(),
        "the deps container"
    );
    assert_eq!(g.read("dev/console"), "STACK_CLOUD_INIT_FAILED\n");
    assert!(g.read("dev/ttyS0").contains("\nSTACK_CLOUD_INIT_FAILED\n"));
    // Both stages of the power-off, detached: they run after provision-build exited.
    wait_until(Duration::from_secs(20), || {
        !g.power_calls("poweroff").is_empty()
    });
    assert_eq!(g.power_calls("shutdown"), ["shutdown|-P now"]);
    assert_eq!(g.power_calls("poweroff"), ["poweroff|-f"]);
}

#[test]
fn capture_mode_starts_the_stack_signals_ready_and_keeps_running() {
    require!(
        available(),
        "a sandbox with a docker engine, and loop devices"
    );
    // arm64: the smoke test is skipped, as on a cross-architecture build.
    let mut g = Guest::new(&[], "STACK_EMULATOR_CAPTURE_SAVEVM=1\n", Some("arm64"));
    g.start();
    g.wait_for_line("STACK_SERVICES_READY");
    std::thread::sleep(Duration::from_secs(1));
    assert!(g.running(), "it waits for the host:\n{}", g.report());
    g.sb.adopt_engine();

    let mut expected = lines(&["runcmd starting", "installing emulator containers"]);
    expected.extend(migration_lines());
    expected.extend(lines(&[
        "starting slim-docker-image",
        "Building slim Docker image...",
        "Skipping smoke test: build arch is arm64 and cross-arch TCG can't reliably run the \
         backend.",
        "Flatten done.",
        "Docker storage rebuilt.",
        "slim-docker-image done.",
        "capture mode: starting stack.service",
        "waiting for backend + dashboard to be ready",
        "wait-for-stack-ready: waiting for backend:8102 and dashboard:8101 (timeout=60s)",
        "wait-for-stack-ready: ready (0s)",
        "ensuring qemu-guest-agent is up",
        "qemu-guest-agent active",
        "services ready; signalling STACK_SERVICES_READY",
        "STACK_SERVICES_READY",
    ]));
    g.assert_in_order(&expected);
    let log = g.log_lines();
    assert_eq!(log.last().unwrap(), "STACK_SERVICES_READY");
    assert!(!log.iter().any(|l| l.starts_with("STACK_CLOUD_INIT_")));
    assert_eq!(g.read("dev/console"), "STACK_SERVICES_READY\n");
    assert!(g.read("dev/ttyS0").contains("\nSTACK_SERVICES_READY\n"));
    assert_eq!(
        g.systemctl_calls()[6..],
        [
            "start stack.service",
            "restart qemu-guest-agent",
            "is-active --quiet qemu-guest-agent",
        ]
    );
    // The app runs from the flattened image, with the snapshot build's placeholder keys.
    assert_eq!(g.sb.containers(), ["stack"]);
    let app_env = g.sb.docker_ok(["exec", "stack", "cat", "/tmp/app.env"]);
    assert!(
        app_env.lines().any(|l| l
            == "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY=\
                00000000000000000000000000000000ffffffffffffffffffffffffffffffff"),
        "{app_env}"
    );
    assert_eq!(g.power_calls("shutdown"), Vec::<String>::new());

    // The host ends it (a QMP quit), then the test's cleanup takes the stack down.
    g.child.as_mut().unwrap().kill().unwrap();
    g.child.take().unwrap().wait().unwrap();
    g.sb.docker_ok(["rm", "--force", "stack"]);
    let pid = g.stack_pid().expect("run-stack-container's pid");
    wait_until(Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(g.power_calls("poweroff"), Vec::<String>::new());
}

#[test]
fn sigterm_mid_step_still_runs_the_failure_block_and_removes_the_deps_container() {
    require!(
        available(),
        "a sandbox with a docker engine, and loop devices"
    );
    // The deps never finish their init: run-build-migrations waits until it is stopped.
    let mut g = Guest::new(&["ENV FAKE_INIT_NEVER=1"], "", None);
    g.start();
    g.wait_for_line("Waiting for init-services.sh...");
    std::thread::sleep(Duration::from_millis(300));
    let pid = g.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let (code, _) = g.wait();
    assert_eq!(code, Some(143), "{}", g.report());
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "took {:?}",
        signalled.elapsed()
    );

    g.assert_in_order(&lines(&[
        "Waiting for init-services.sh...",
        "run-build-migrations: interrupted by SIGTERM",
        "Stopping deps container...",
        "step run-build-migrations: stopped: provision-build received SIGTERM in 0.0s",
        "ERROR: provision-build exited with code 143",
        "STACK_CLOUD_INIT_FAILED",
    ]));
    let log = g.log_lines();
    assert_eq!(
        log[log.len() - 2..],
        [
            "ERROR: provision-build exited with code 143",
            "STACK_CLOUD_INIT_FAILED"
        ]
    );
    assert!(!log.iter().any(|l| l == "starting slim-docker-image"));
    assert_eq!(
        g.sb.containers(),
        Vec::<String>::new(),
        "the deps container"
    );
    assert_eq!(g.read("dev/console"), "STACK_CLOUD_INIT_FAILED\n");
    wait_until(Duration::from_secs(20), || {
        !g.power_calls("poweroff").is_empty()
    });
    assert_eq!(g.power_calls("shutdown"), ["shutdown|-P now"]);
    assert_eq!(g.power_calls("poweroff"), ["poweroff|-f"]);
}

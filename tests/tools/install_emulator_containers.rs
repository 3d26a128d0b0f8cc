//! install-emulator-containers: a labelled bundle disk on a loop device, a throwaway engine
//! started by the tool's start command, the fake emulator's `img.tgz`, and every way the
//! archive can be bad. A stub docker (a fixed script of the test's own) covers the progress
//! lines and docker's own failures without an engine.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::fake_emulator;
use crate::common::sandbox::{self, LoopDevice, Sandbox, ext4_image};
use crate::common::*;

const TOOL: &str = "install-emulator-containers";
const IMAGE: &str = "stack-local-emulator";
const BUILD_ENV: &str = "NODE_ENV=production\nSTACK_EMULATOR_BUILD_SNAPSHOT=1\n";
const BUILD_ARCH_ENV: &str = "STACK_EMULATOR_BUILD_ARCH=arm64\n";

/// A sandbox whose engine built the fake emulator and saved it as `<dir>/bundle/img.tgz`, then
/// removed the image, so that a load shows.
fn sandbox_with_bundle() -> Sandbox {
    let mut sb = Sandbox::with_network();
    sb.start_engine();
    fake_emulator::bundle(|a| sb.docker(a), &[], &sb.path("bundle"));
    sb
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// The log file's lines (the messages without the stdout tag).
fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .args(["-1", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn loads_the_bundle_from_a_labelled_disk_and_a_rerun_works() {
    require!(
        sandbox::engine_available() && sandbox::loop_available(),
        "a sandbox with a docker engine, and loop devices"
    );
    let mut sb = sandbox_with_bundle();
    let bundle = sb.path("bundle");
    let digest = sha256_hex(&std::fs::read(bundle.join("img.tgz")).unwrap());
    std::fs::write(
        bundle.join("img.tgz.sha256"),
        format!("{digest}  img.tgz\n"),
    )
    .unwrap();
    std::fs::write(bundle.join("build.env"), BUILD_ENV).unwrap();
    std::fs::write(bundle.join("build-arch.env"), BUILD_ARCH_ENV).unwrap();
    // The tool starts the engine with the sandbox's start script, standing in for systemctl.
    sb.stop_engine();
    let disk = sb.path("bundle.ext4");
    ext4_image(&disk, "STACKBUNDLE", &bundle, "32M");
    let device = LoopDevice::attach(&disk);
    let by_label = sb.path("by-label");
    std::fs::create_dir(&by_label).unwrap();
    std::os::unix::fs::symlink(device.path(), by_label.join("STACKBUNDLE")).unwrap();
    let (start, _) = sb.engine_scripts();
    let mount_point = sb.path("mnt/stack-bundle");
    let build_env = sb.path("etc/stack-build.env");
    let build_arch_env = sb.path("etc/stack-build-arch.env");
    std::fs::create_dir(sb.path("etc")).unwrap();
    let log = sb.path("provision.log");
    let run_with = |sb: &Sandbox, start_command: &str| {
        sb.tool(TOOL)
            .env("DOCKER_HOST", sb.docker_host())
            .env("STACK_PROVISION_LOG_FILE", &log)
            .arg("--by-label-dir")
            .arg(&by_label)
            .arg("--mount-point")
            .arg(&mount_point)
            .args(["--start-docker", start_command])
            .arg("--build-env")
            .arg(&build_env)
            .arg("--build-arch-env")
            .arg(&build_arch_env)
            .run()
    };

    let run = run_with(&sb, start.to_str().unwrap());
    run.success().stderr_is("");
    sb.adopt_engine();
    assert!(
        sb.images().contains(&format!("{IMAGE}:latest")),
        "{:?}",
        sb.images()
    );
    assert!(
        run.stdout_str()
            .contains(&format!("Loaded image: {IMAGE}:latest\n")),
        "{}",
        run.stdout_str()
    );
    let mp = mount_point.display();
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 7, "{lines:#?}");
    assert_eq!(
        lines[0],
        format!("{TOOL}: mounted {} (ext4) read-only at {mp}", device.0)
    );
    assert!(
        lines[1].starts_with(&format!("{TOOL}: docker ")) && lines[1].contains(" is up ("),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&format!("{TOOL}: loading {mp}/img.tgz ("))
            && lines[2].ends_with(", checking its sha256) into docker"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with(&format!("{TOOL}: loaded {mp}/img.tgz: "))
            && lines[3].ends_with("/s), sha256 verified"),
        "{}",
        lines[3]
    );
    assert_eq!(
        lines[4..6],
        [
            format!("{TOOL}: copied {mp}/build.env to {}", build_env.display()),
            format!(
                "{TOOL}: copied {mp}/build-arch.env to {}",
                build_arch_env.display()
            ),
        ]
    );
    assert!(lines[6].starts_with(&format!("{TOOL}: done (")));
    // Every log line also went to stdout, tagged.
    for line in &lines {
        assert!(
            run.stdout_str()
                .contains(&format!("STACK_PROVISION: {line}\n"))
        );
    }
    assert_eq!(std::fs::read_to_string(&build_env).unwrap(), BUILD_ENV);
    assert_eq!(
        std::fs::read_to_string(&build_arch_env).unwrap(),
        BUILD_ARCH_ENV
    );
    assert_eq!(mode(&build_env), 0o644);
    assert_eq!(mode(&build_arch_env), 0o644);
    let mounts: Vec<String> = sb
        .ok("cat", ["/proc/self/mountinfo"])
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&mp.to_string()))
        .map(str::to_string)
        .collect();
    assert_eq!(mounts.len(), 1, "{mounts:#?}");
    let (head, tail) = mounts[0].split_once(" - ").unwrap();
    assert!(
        head.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro")
    );
    assert!(
        tail.starts_with(&format!("ext4 {} ", device.0)),
        "{}",
        mounts[0]
    );

    // The original failed here: the disk is mounted and the engine runs. A recording stub
    // stands in for systemctl this time.
    std::fs::remove_file(&log).unwrap();
    std::fs::write(&build_env, "old\n").unwrap();
    let calls = sb.path("start-calls");
    let stub = sb.path("systemctl");
    // Its `is-enabled` answers "enabled" while the flag file exists.
    let enabled = sb.path("docker-enabled");
    executable(
        &stub,
        &format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n[ \"$1\" != is-enabled ] || [ -e '{}' ]\n",
            calls.display(),
            enabled.display()
        ),
    );
    let enable_now = format!("{} enable --now docker", stub.display());
    let run = run_with(&sb, &enable_now);
    run.success().stderr_is("");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "is-enabled --quiet docker\nenable --now docker\n"
    );
    // Enabled already (docker's package enables it): only started, no reload of systemd.
    std::fs::write(&enabled, "").unwrap();
    std::fs::remove_file(&calls).unwrap();
    std::fs::remove_file(&log).unwrap();
    let run = run_with(&sb, &enable_now);
    run.success().stderr_is("");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "is-enabled --quiet docker\nstart docker\n"
    );
    let lines = log_lines(&log);
    assert_eq!(
        lines[0],
        format!("{TOOL}: {mp} is mounted already; using it")
    );
    assert_eq!(
        lines[1],
        format!(
            "{TOOL}: docker is enabled already: `{0} start docker` instead of `{0} enable --now \
             docker`",
            stub.display()
        )
    );
    assert!(lines[4].ends_with("sha256 verified"), "{lines:#?}");
    assert_eq!(std::fs::read_to_string(&build_env).unwrap(), BUILD_ENV);
    assert!(sb.images().contains(&format!("{IMAGE}:latest")));
}

#[test]
fn bad_archives_fail_clearly_and_docker_keeps_nothing() {
    require!(
        sandbox::engine_available(),
        "a sandbox with a docker engine"
    );
    let sb = sandbox_with_bundle();
    let good = std::fs::read(sb.path("bundle/img.tgz")).unwrap();
    let dir = sb.path("bad");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("build.env"), BUILD_ENV).unwrap();
    let archive = dir.join("img.tgz");
    let p = archive.display().to_string();
    let build_env = sb.path("stack-build.env");
    let attempt = |bytes: Option<&[u8]>, checksum: Option<String>| {
        let _ = std::fs::remove_file(&archive);
        let _ = std::fs::remove_file(dir.join("img.tgz.sha256"));
        if let Some(bytes) = bytes {
            std::fs::write(&archive, bytes).unwrap();
        }
        if let Some(checksum) = checksum {
            std::fs::write(dir.join("img.tgz.sha256"), checksum).unwrap();
        }
        let run = sb
            .tool(TOOL)
            .args(["--no-mount", "--start-docker", ""])
            .arg("--mount-point")
            .arg(&dir)
            .arg("--build-env")
            .arg(&build_env)
            .arg("--build-arch-env")
            .arg(sb.path("stack-build-arch.env"))
            .run();
        run.code_is(1);
        assert!(!run.stdout_str().contains("Loaded image"));
        assert!(
            !sb.images().iter().any(|i| i.starts_with(IMAGE)),
            "docker kept an image: {:?}",
            sb.images()
        );
        assert!(!build_env.exists(), "build.env copied after a failure");
        run.stderr_str()
    };

    let zeros = "0".repeat(64);
    let stderr = attempt(Some(&good), Some(format!("{zeros}  img.tgz\n")));
    assert_eq!(
        stderr,
        format!(
            "{TOOL}: checking {p} against its .sha256 file: sha256 mismatch: the file's digest \
             is {}, the checksum file says {zeros}; the bundle disk is damaged or mixes two \
             builds: rebuild it\n",
            sha256_hex(&good)
        )
    );

    let stderr = attempt(Some(&good[..good.len() / 2]), None);
    assert!(
        stderr.starts_with(&format!(
            "{TOOL}: loading {p}: the file is truncated: its gzip data ends unexpectedly (after "
        )) && stderr.ends_with(" bytes); the bundle disk is incomplete: rebuild it\n"),
        "{stderr}"
    );

    // A bad CRC in the gzip trailer: everything inflates, and only the very end tells.
    let mut corrupt = good.clone();
    let crc_at = corrupt.len() - 8;
    corrupt[crc_at] ^= 0xff;
    let stderr = attempt(Some(&corrupt), None);
    assert_eq!(
        stderr,
        format!(
            "{TOOL}: loading {p}: the file is corrupt: corrupt gzip stream does not have a \
             matching checksum (after {n} of {n} bytes); the bundle disk is damaged: rebuild \
             it\n",
            n = good.len()
        )
    );

    let stderr = attempt(Some(b"a plain tar is not what the host ships\n"), None);
    assert_eq!(
        stderr,
        format!(
            "{TOOL}: loading {p}: not gzip-compressed data (expected `docker save | gzip` \
             output); the bundle disk is damaged or holds the wrong file\n"
        )
    );
    let stderr = attempt(Some(b""), None);
    assert_eq!(
        stderr,
        format!(
            "{TOOL}: loading {p}: the file is empty; the bundle disk is incomplete: rebuild it\n"
        )
    );
    let stderr = attempt(None, None);
    assert_eq!(
        stderr,
        format!("{TOOL}: opening {p}: No such file or directory (os error 2)\n")
    );
    let stderr = attempt(Some(&good), Some("abc  img.tgz\n".into()));
    assert_eq!(
        stderr,
        format!(
            "{TOOL}: reading {p}.sha256: the digest for img.tgz is not 64 hex digits: \"abc\"\n"
        )
    );

    // And the same archive, intact, loads.
    std::fs::write(&archive, &good).unwrap();
    std::fs::write(
        dir.join("img.tgz.sha256"),
        format!("{}\n", sha256_hex(&good)),
    )
    .unwrap();
    sb.tool(TOOL)
        .args(["--no-mount", "--start-docker", ""])
        .arg("--mount-point")
        .arg(&dir)
        .arg("--build-env")
        .arg(&build_env)
        .arg("--build-arch-env")
        .arg(sb.path("stack-build-arch.env"))
        .run()
        .success();
    assert!(sb.images().contains(&format!("{IMAGE}:latest")));
    assert!(!sb.path("stack-build-arch.env").exists());
}

/// A docker client stand-in: `info` answers, `load` sleeps (so progress lines come) and then
/// stores its stdin, or fails like an engine out of space.
fn stub_docker(dir: &Path) -> PathBuf {
    let stub = dir.join("docker");
    executable(
        &stub,
        "#!/bin/sh\n\
         case \"$1\" in\n\
         info) echo 99.0-stub ;;\n\
         load)\n\
         \x20 sleep 0.5\n\
         \x20 cat > \"$STUB_OUT\"\n\
         \x20 if [ -n \"$STUB_FAIL\" ]; then echo \"$STUB_FAIL\" >&2; exit 1; fi\n\
         \x20 echo 'Loaded image: stub:latest' ;;\n\
         *) exit 64 ;;\n\
         esac\n",
    );
    stub
}

#[test]
fn progress_lines_come_while_docker_reads_and_the_tar_arrives_whole() {
    let dir = scratch();
    let stub = stub_docker(dir.path());
    let data = noise(4 << 20);
    let archive = dir.path().join("img.tgz");
    std::fs::write(&archive, gzip(&data)).unwrap();
    let received = dir.path().join("received.tar");
    let run = tool(TOOL)
        .env("STUB_OUT", &received)
        .args([
            "--no-mount",
            "--start-docker",
            "",
            "--progress-interval",
            "0.1",
        ])
        .arg("--docker")
        .arg(&stub)
        .arg("--image")
        .arg(&archive)
        .arg("--build-env")
        .arg(dir.path().join("b.env"))
        .arg("--build-arch-env")
        .arg(dir.path().join("a.env"))
        .run();
    run.success().stderr_is("");
    assert!(std::fs::read(&received).unwrap() == data, "the tar differs");
    let stdout = run.stdout_str();
    let p = archive.display();
    let progress: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(&format!("STACK_PROVISION: {TOOL}: {p}: ")))
        .collect();
    assert!(!progress.is_empty(), "no progress line:\n{stdout}");
    for line in &progress {
        let rest = line
            .strip_prefix(&format!("STACK_PROVISION: {TOOL}: {p}: "))
            .unwrap();
        let (read, rest) = rest.split_once(" of 4.0 MiB read (").unwrap();
        assert!(read.ends_with("B"), "{line}");
        let (percent, rate) = rest.split_once("%), ").unwrap();
        assert!(percent.parse::<u32>().unwrap() <= 100, "{line}");
        assert!(rate.ends_with("B/s"), "{line}");
    }
    assert!(stdout.contains(&format!(
        "STACK_PROVISION: {TOOL}: docker 99.0-stub is up ("
    )));
    assert!(stdout.contains("Loaded image: stub:latest\n"), "{stdout}");
    assert!(stdout.contains(&format!("STACK_PROVISION: {TOOL}: loaded {p}: 4.0 MiB in ")));
}

#[test]
fn a_failing_docker_load_is_reported_with_its_stderr() {
    let dir = scratch();
    let stub = stub_docker(dir.path());
    let archive = dir.path().join("img.tgz");
    std::fs::write(&archive, gzip(&noise(100_000))).unwrap();
    let run = tool(TOOL)
        .env("STUB_OUT", dir.path().join("received.tar"))
        .env(
            "STUB_FAIL",
            "Error processing tar file: no space left on device",
        )
        .args(["--no-mount", "--start-docker", ""])
        .arg("--docker")
        .arg(&stub)
        .arg("--image")
        .arg(&archive)
        .run();
    run.code_is(1).stderr_is(format!(
        "{TOOL}: running `{} load`: exit status 1: Error processing tar file: no space left on \
         device\n",
        stub.display()
    ));
}

#[test]
fn waiting_for_docker_gives_up_with_its_last_answer() {
    require!(has_program("docker"), "the docker client");
    let dir = scratch();
    let socket = dir.path().join("nothing.sock");
    let started = Instant::now();
    let run = tool(TOOL)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        // Attempts bounded generously: on a loaded machine the docker client alone can take
        // a second to fail, and the last answer must be its own, not a kill.
        .args(["--no-mount", "--start-docker", "", "--docker-timeout", "5"])
        .args(["--attempt-timeout", "5"])
        .arg("--mount-point")
        .arg(dir.path())
        .run();
    // It gave up after its 5 s (a generous bound).
    assert!(started.elapsed() < Duration::from_secs(30));
    run.code_is(1);
    let stderr = run.stderr_str();
    assert!(
        stderr.starts_with(&format!(
            "{TOOL}: waiting for `docker info` to answer: no answer within 5s; it last said: \
             exit status 1: Cannot connect to the Docker daemon at unix://{}",
            socket.display()
        )),
        "{stderr}"
    );
}

#[test]
fn the_start_command_is_split_not_shelled_and_its_failure_stops_the_install() {
    let dir = scratch();
    let base = |start: &str| {
        tool(TOOL)
            .args(["--no-mount", "--start-docker", start])
            .arg("--mount-point")
            .arg(dir.path())
    };
    base("false").run().code_is(1).stderr_is(format!(
        "{TOOL}: starting docker with `false`: exit status 1\n"
    ));
    // Quotes group words; nothing is expanded: `$HOME` reaches the program as it is.
    let out = dir.path().join("args");
    let recorder = dir.path().join("record");
    executable(
        &recorder,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexit 3\n",
            out.display()
        ),
    );
    base(&format!("{} 'two words' $HOME", recorder.display()))
        .run()
        .code_is(1);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "two words\n$HOME\n");
    base("/nonexistent/systemctl enable")
        .run()
        .code_is(1)
        .stderr_contains("(is `/nonexistent/systemctl` installed and on PATH?)");
    let run = base("sh -c 'unterminated").run();
    run.code_is(2)
        .stderr_contains("--start-docker: cannot split into words");
}

#[test]
fn help_version_and_bad_flag() {
    let run = tool(TOOL).arg("--help").run();
    run.success();
    let help = run.stdout_str();
    for needle in [
        "[default: STACKBUNDLE]",
        "[default: /mnt/stack-bundle]",
        "[default: \"systemctl enable --now docker\"]",
        "[default: 300s]",
        "[default: 10s]",
        "[default: /etc/stack-build.env]",
        "[default: /etc/stack-build-arch.env]",
        "img.tgz.sha256",
    ] {
        assert!(
            help_contains(&help, needle),
            "--help lacks {needle}:\n{help}"
        );
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text(TOOL));
    tool(TOOL)
        .arg("--bogus")
        .run()
        .code_is(2)
        .stderr_contains("unexpected argument '--bogus'");
    tool(TOOL)
        .args(["--docker-timeout", "soon"])
        .run()
        .code_is(2)
        .stderr_contains("invalid value 'soon' for '--docker-timeout <DURATION>'");
}

//! The docker harness: the suite's own engine, images built from scratch, containers with unique
//! names, cleanup on drop.
//!
//! No test looks at or changes the machine's docker engine: the harness starts one throwaway
//! `dockerd` of its own on first use ([`host`]), in private mount and network namespaces with its
//! own data root and socket (the same set-up as [`super::sandbox`]), shared by every test that
//! does not wipe an engine, and stops it when the test process ends. Whatever another run left in
//! the machine's engine cannot make a test pass or fail.
//!
//! No registry is reachable, so every test image is built `FROM scratch` around Debian's static
//! busybox (package `busybox-static`, at `/bin/busybox`), installed as `/bin/sh`, `/bin/env`, …,
//! plus the files a test gives with their modes. Images and containers get names unique to the
//! process and call ([`unique_name`]) and the label [`LABEL`], and are removed when their guard
//! ([`Image`], [`Container`]) drops, so tests can run in parallel against the shared engine.
//!
//! Tests that need the engine start with `require!(docker::ready(), docker::READY)` and hand
//! [`host`] to the tools they run as `DOCKER_HOST`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The label on every image and container the harness creates.
pub const LABEL: &str = "hexclave-test=1";

/// Where Debian's `busybox-static` puts the static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// What [`ready`] checks, for `require!`.
pub const READY: &str = "the suite's own docker engine (root, unshare, nsenter, ip, dockerd and \
                         docker from docker.io), and a static /bin/busybox (busybox-static)";

/// `docker ARGS…` against the suite's engine, with stdin closed.
pub fn docker<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .stdin(Stdio::null())
        .env("DOCKER_HOST", host());
    cmd
}

/// Runs `docker ARGS…`; panics with its stderr unless it succeeds; returns stdout.
#[track_caller]
pub fn docker_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = docker(args);
    let out = cmd.output().expect("run docker");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The suite's engine, as `DOCKER_HOST` spells it (`unix://…/docker.sock`). Started on first
/// use; panics with the reason when it cannot start (check with [`ready`] first).
pub fn host() -> &'static str {
    match engine() {
        Ok(engine) => &engine.host,
        Err(why) => panic!("the suite's docker engine did not start: {why}"),
    }
}

/// A `docker` client program that talks to the suite's engine wherever it runs: a script that
/// sets `DOCKER_HOST` and runs `docker`, for code that takes a client program rather than an
/// environment.
pub fn client() -> &'static Path {
    match engine() {
        Ok(engine) => &engine.client,
        Err(why) => panic!("the suite's docker engine did not start: {why}"),
    }
}

/// Whether the suite's engine answers; a reason on stderr when it could not be started.
pub fn engine_available() -> bool {
    static NOTED: OnceLock<()> = OnceLock::new();
    match engine() {
        Ok(_) => true,
        Err(why) => {
            NOTED.get_or_init(|| eprintln!("the suite's docker engine: {why}"));
            false
        }
    }
}

/// The engine shared by the tests of this process.
struct Engine {
    host: String,
    client: PathBuf,
}

/// What the exit handler stops and removes; set once the engine runs.
static STARTED: OnceLock<(i32, i32, PathBuf)> = OnceLock::new();

fn engine() -> Result<&'static Engine, &'static str> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            // PR_SET_PDEATHSIG follows the thread that forks, and test threads end with their
            // test: fork from a thread that lasts as long as the process.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(start_engine());
                loop {
                    std::thread::park();
                }
            });
            rx.recv()
                .unwrap_or_else(|_| Err("the engine thread ended".into()))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Starts the engine: a namespace holder (`unshare … sleep`), `lo` up in it, then `dockerd`
/// entered into its namespaces by `nsenter` (which execs it: dockerd is our child). Both die with
/// the process (SIGKILL and SIGTERM by PR_SET_PDEATHSIG) even if it is killed; a normal exit
/// stops dockerd, waits for it and removes its directory.
fn start_engine() -> Result<Engine, String> {
    let prerequisites = super::is_root()
        && ["unshare", "nsenter", "ip", "dockerd", "docker"]
            .iter()
            .all(|p| super::has_program(p));
    if !prerequisites {
        return Err("needs root, unshare, nsenter, ip, dockerd and docker".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("hexclave-test-engine-")
        .tempdir()
        .map_err(|e| format!("creating its directory: {e}"))?
        .keep();
    let holder = dying_with_us(
        Command::new("unshare").args(["-m", "-n", "--propagation", "private", "sleep", "infinity"]),
        libc::SIGKILL,
    )
    .stdin(Stdio::null())
    .spawn()
    .map_err(|e| format!("running unshare: {e}"))?;
    let holder_pid = holder.id() as i32;
    let comm = format!("/proc/{holder_pid}/comm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&comm).ok().as_deref() != Some("sleep\n") {
        if Instant::now() > deadline {
            return Err("unshare did not start sleep within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let enter = |program: &str| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{holder_pid}/ns/mnt"))
            .arg(format!("--net=/proc/{holder_pid}/ns/net"))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        cmd
    };
    let lo = enter("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("running ip: {e}"))?;
    if !lo.success() {
        return Err(format!("`ip link set lo up` in its namespace: {lo}"));
    }
    let host = super::sandbox::docker_host(&dir);
    let log_path = dir.join("dockerd.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("creating its log: {e}"))?;
    let stderr = log.try_clone().map_err(|e| format!("its log: {e}"))?;
    let mut dockerd = enter("dockerd");
    dockerd
        .args(super::sandbox::dockerd_args(
            &dir,
            &host,
            "hexclave-test-engine",
        ))
        .stdout(log)
        .stderr(stderr);
    let dockerd = dying_with_us(&mut dockerd, libc::SIGTERM)
        .spawn()
        .map_err(|e| format!("running dockerd: {e}"))?;
    let _ = STARTED.set((dockerd.id() as i32, holder_pid, dir.clone()));
    // SAFETY: registering a handler with no arguments; it runs once, at exit.
    unsafe { libc::atexit(stop_engine) };
    // The children are reaped by the exit handler (or by init, after a crash).
    std::mem::forget((holder, dockerd));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answers = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .env("DOCKER_HOST", &host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if answers {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            return Err(format!(
                "dockerd did not answer within 60 s; the end of its log, newest first:\n{}",
                tail.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = dir.join("docker");
    std::fs::write(
        &client,
        format!("#!/bin/sh\nDOCKER_HOST='{host}' exec docker \"$@\"\n"),
    )
    .and_then(|()| std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755)))
    .map_err(|e| format!("writing its client script: {e}"))?;
    Ok(Engine { host, client })
}

/// Has the child started by `cmd` receive `signal` when the thread that forks it ends.
fn dying_with_us(cmd: &mut Command, signal: libc::c_int) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// At exit: stops dockerd (SIGTERM, up to 20 s, so it stops its containers and containerd), ends
/// the namespaces and removes the engine's directory.
extern "C" fn stop_engine() {
    let Some((dockerd, holder, dir)) = STARTED.get() else {
        return;
    };
    let reaped = |pid: i32| {
        let mut status = 0;
        // SAFETY: waitpid on a child of ours, without blocking.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
    };
    // SAFETY: signalling children of ours that have not been reaped.
    unsafe { libc::kill(*dockerd, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reaped(*dockerd) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(*holder, libc::SIGKILL) };
    while !reaped(*holder) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked), so it
/// runs in an image with nothing else in it.
pub fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only: the machines this runs on.
    if data.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

/// An engine to talk to and a static busybox to build images with.
pub fn ready() -> bool {
    engine_available() && is_static_elf(Path::new(BUSYBOX))
}

/// A name no other test, run or process uses: `hexclave-test-<prefix>-<pid>-<n>` (lower case,
/// valid for containers and image repositories).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "hexclave-test-{}-{}-{}",
        prefix.to_ascii_lowercase(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An image built by [`ImageBuilder`]; removed (`docker rmi -f`) on drop.
pub struct Image {
    pub tag: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(["rmi", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds an image `FROM scratch`: static busybox installed in `/bin`, a world-writable `/tmp`,
/// then the given files and Dockerfile lines.
pub struct ImageBuilder {
    prefix: String,
    files: Vec<(PathBuf, Vec<u8>, u32)>,
    lines: Vec<String>,
}

impl ImageBuilder {
    /// `prefix` names the image (`hexclave-test-<prefix>-…`).
    pub fn new(prefix: &str) -> Self {
        ImageBuilder {
            prefix: prefix.to_string(),
            files: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Puts `contents` at the absolute `path` in the image with permission bits `mode`; parent
    /// directories are created with mode 0755.
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        let relative = path.strip_prefix('/').expect("image paths are absolute");
        self.files
            .push((PathBuf::from(relative), contents.as_ref().to_vec(), mode));
        self
    }

    /// Appends a Dockerfile instruction (`CMD […]`, `ENV …`, `ENTRYPOINT […]`, …).
    pub fn line(mut self, instruction: &str) -> Self {
        self.lines.push(instruction.to_string());
        self
    }

    #[track_caller]
    pub fn build(self) -> Image {
        let context = super::scratch();
        let dir = context.path();
        std::fs::copy(BUSYBOX, dir.join("busybox")).expect("copy busybox into the context");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        for (path, contents, mode) in &self.files {
            let target = rootfs.join(path);
            let parent = target.parent().unwrap();
            std::fs::create_dir_all(parent).unwrap();
            for dir in parent.ancestors().take_while(|d| d.starts_with(&rootfs)) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::fs::write(&target, contents).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let mut dockerfile = String::from(
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n\
             RUN [\"/bin/busybox\",\"mkdir\",\"-p\",\"-m\",\"1777\",\"/tmp\"]\n\
             COPY rootfs/ /\n",
        );
        for line in &self.lines {
            dockerfile.push_str(line);
            dockerfile.push('\n');
        }
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        let image = Image {
            tag: format!("{}:latest", unique_name(&self.prefix)),
        };
        docker_ok([
            OsStr::new("build"),
            OsStr::new("--quiet"),
            OsStr::new("--label"),
            OsStr::new(LABEL),
            OsStr::new("--tag"),
            OsStr::new(&image.tag),
            dir.as_os_str(),
        ]);
        image
    }
}

/// A container; removed (`docker rm -f`, volumes included) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name <unique> --label … OPTIONS… IMAGE COMMAND…`.
    #[track_caller]
    pub fn run(prefix: &str, image: &Image, options: &[&str], command: &[&str]) -> Container {
        let container = Container {
            name: unique_name(prefix),
        };
        let mut args = vec!["run", "-d", "--name", &container.name, "--label", LABEL];
        args.extend_from_slice(options);
        args.push(&image.tag);
        args.extend_from_slice(command);
        docker_ok(args);
        container
    }

    /// `docker run --name <unique> --label … OPTIONS… IMAGE COMMAND…` in the foreground: returns
    /// once the command has exited, its logs complete; the container stays until dropped.
    #[track_caller]
    pub fn run_to_end(
        prefix: &str,
        image: &Image,
        options: &[&str],
        command: &[&str],
    ) -> Container {
        let container = Container {
            name: unique_name(prefix),
        };
        let mut args = vec!["run", "--name", &container.name, "--label", LABEL];
        args.extend_from_slice(options);
        args.push(&image.tag);
        args.extend_from_slice(command);
        docker_ok(args);
        container
    }

    /// `docker exec NAME ARGS…`, whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        docker(all).output().expect("run docker exec")
    }

    /// The contents of a file in the container, or `None` when it cannot be read.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let out = self.exec(&["cat", path]);
        out.status.success().then_some(out.stdout)
    }

    /// Writes a file in the container (through `docker exec -i … tee`).
    #[track_caller]
    pub fn write_file(&self, path: &str, contents: &[u8]) {
        use std::io::Write;
        let mut child = docker(["exec", "-i", &self.name, "tee", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run docker exec");
        child.stdin.take().unwrap().write_all(contents).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "writing {path} in {}",
            self.name
        );
    }

    /// Removes a file in the container; a missing one is fine.
    #[track_caller]
    pub fn remove_file(&self, path: &str) {
        assert!(self.exec(&["rm", "-f", path]).status.success());
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

//! A private world for tests that mount, attach disks or wipe a docker engine.
//!
//! A [`Sandbox`] is a mount namespace (and, when asked, a network namespace with only `lo`)
//! made by `unshare --propagation private` and held open by a `sleep` in it. Commands enter it
//! with `nsenter`, so several steps see each other's mounts and listeners while none reaches
//! the machine. [`Sandbox::start_engine`] runs a throwaway `dockerd` in it, with its own data
//! root, exec root, pid file and socket under the sandbox's temporary directory, no bridge and no
//! iptables (containers use the host network, which here is the sandbox's own loopback), so
//! destructive tests never touch the machine's engine. Dropping the sandbox stops the engine,
//! ends the namespace and removes the directory.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Cmd, Run, has_program, is_root, require, scratch, tool_path};

/// What a sandbox needs, for `require!`.
pub fn available() -> bool {
    require(is_root(), "root (namespaces, mounts, dockerd)")
        && require(has_program("unshare"), "unshare (util-linux)")
        && require(has_program("nsenter"), "nsenter (util-linux)")
}

/// What a sandbox with an engine needs, for `require!`.
pub fn engine_available() -> bool {
    available()
        && require(has_program("dockerd"), "dockerd (docker.io)")
        && require(has_program("ip"), "ip (iproute2)")
        && require(has_program("docker"), "docker (docker.io)")
        && require(
            super::docker::is_static_elf(Path::new(super::docker::BUSYBOX)),
            "a static /bin/busybox (busybox-static)",
        )
}

pub struct Sandbox {
    holder: Child,
    net: bool,
    dir: tempfile::TempDir,
    engine: Option<u32>,
}

impl Sandbox {
    /// A private mount namespace.
    pub fn new() -> Sandbox {
        Sandbox::make(false)
    }

    /// Private mount and network namespaces, with `lo` up.
    pub fn with_network() -> Sandbox {
        Sandbox::make(true)
    }

    fn make(net: bool) -> Sandbox {
        let dir = scratch();
        let mut unshare = Command::new("unshare");
        unshare.args(["-m", "--propagation", "private"]);
        if net {
            unshare.arg("-n");
        }
        let holder = unshare
            .args(["sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare");
        // Entering the holder before unshare(2) and exec would mean acting in the machine's own
        // namespaces: wait until it is `sleep`, which it becomes only after both.
        let comm = format!("/proc/{}/comm", holder.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&comm).ok().as_deref() != Some("sleep\n") {
            assert!(Instant::now() < deadline, "unshare did not start sleep");
            std::thread::sleep(Duration::from_millis(5));
        }
        let sandbox = Sandbox {
            holder,
            net,
            dir,
            engine: None,
        };
        for ns in ["mnt"].iter().chain(net.then_some(&"net")) {
            assert_ne!(
                std::fs::read_link(format!("/proc/{}/ns/{ns}", sandbox.holder.id())).unwrap(),
                std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
                "the holder must have a {ns} namespace of its own"
            );
        }
        if net {
            sandbox.ok("ip", ["link", "set", "lo", "up"]);
        }
        sandbox
    }

    /// The sandbox's temporary directory (on the machine's filesystem, visible from both sides).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the sandbox's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program` inside the namespaces, with `DOCKER_HOST` pointing at the sandbox's engine when
    /// one runs.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()));
        if self.net {
            cmd.arg(format!("--net=/proc/{}/ns/net", self.holder.id()));
        }
        cmd.arg("--").arg(program).stdin(Stdio::null());
        if self.engine.is_some() {
            cmd.env("DOCKER_HOST", self.docker_host());
        }
        cmd
    }

    /// A built tool inside the namespaces, as the harness's [`Cmd`].
    pub fn tool(&self, name: &str) -> Cmd {
        let mut cmd = Cmd::from_command(self.command(tool_path(name)));
        for knob in ["STACK_PROVISION_LOG_FILE", "HEXCLAVE_PROVISION_LOG_FILE"] {
            cmd = cmd.env_remove(knob);
        }
        cmd
    }

    /// Runs `program ARGS…` inside; panics with its output unless it succeeds; returns stdout.
    #[track_caller]
    pub fn ok<I, S>(&self, program: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        let out = cmd.output().expect("run nsenter");
        Run(out.clone()).success();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a fixed script of the test's own with `sh -c` inside.
    pub fn sh(&self, script: &str) -> Output {
        let mut cmd = self.command("sh");
        cmd.args(["-c", script]);
        cmd.output().expect("run nsenter sh")
    }

    /// The socket of the sandbox's engine, as `DOCKER_HOST` spells it.
    pub fn docker_host(&self) -> String {
        docker_host(self.dir())
    }

    /// `docker ARGS…` against the sandbox's engine, run inside the namespaces.
    pub fn docker<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        assert!(self.engine.is_some(), "the sandbox has no engine");
        let mut cmd = self.command("docker");
        cmd.args(args);
        cmd
    }

    /// `docker ARGS…` inside; panics with stderr unless it succeeds; returns stdout.
    #[track_caller]
    pub fn docker_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.docker(args);
        let out = cmd.output().expect("run docker");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `repository:tag` of every image the sandbox's engine holds.
    pub fn images(&self) -> Vec<String> {
        self.docker_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The name of every container the sandbox's engine holds, running or not.
    pub fn containers(&self) -> Vec<String> {
        self.docker_ok(["ps", "--all", "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The arguments of the sandbox's `dockerd`: state under `<dir>/docker/`, socket at
    /// [`Sandbox::docker_host`]. The data root can be moved (slim-docker-image wipes it).
    pub fn dockerd_args(&self) -> Vec<String> {
        let name = self
            .dir()
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("sandbox")
            .to_string();
        dockerd_args(&self.path("docker"), &self.docker_host(), &name)
    }

    /// Where the sandbox's engine keeps images, containers and volumes.
    pub fn engine_data_root(&self) -> PathBuf {
        self.path("docker/data")
    }

    pub fn engine_pidfile(&self) -> PathBuf {
        self.path("docker/dockerd.pid")
    }

    /// A script that starts the sandbox's engine in the background and returns once it answers
    /// (what `systemctl start docker` does for the tools), and one that stops it and waits for
    /// it to exit. Both run inside the namespaces.
    pub fn engine_scripts(&self) -> (PathBuf, PathBuf) {
        let start = self.path("engine-start");
        let stop = self.path("engine-stop");
        let args: Vec<String> = self
            .dockerd_args()
            .iter()
            .map(|a| format!("'{a}'"))
            .collect();
        let log = self.path("docker/dockerd.log");
        std::fs::create_dir_all(self.path("docker")).unwrap();
        std::fs::write(
            &start,
            format!(
                "#!/bin/sh\n\
                 # Like `systemctl start`, starting a running engine does nothing.\n\
                 DOCKER_HOST='{host}' docker info >/dev/null 2>&1 && exit 0\n\
                 setsid dockerd {} >>'{}' 2>&1 </dev/null &\n\
                 i=0\n\
                 until DOCKER_HOST='{}' docker info >/dev/null 2>&1; do\n\
                 \x20 i=$((i+1)); [ $i -lt 300 ] || {{ echo 'dockerd did not start' >&2; exit 1; }}\n\
                 \x20 sleep 0.1\n\
                 done\n",
                args.join(" "),
                log.display(),
                self.docker_host(),
                host = self.docker_host(),
            ),
        )
        .unwrap();
        std::fs::write(
            &stop,
            format!(
                "#!/bin/sh\n\
                 pid=$(cat '{pid}' 2>/dev/null) || exit 0\n\
                 kill \"$pid\" 2>/dev/null || exit 0\n\
                 i=0\n\
                 while kill -0 \"$pid\" 2>/dev/null; do\n\
                 \x20 i=$((i+1)); [ $i -lt 300 ] || {{ echo 'dockerd did not stop' >&2; exit 1; }}\n\
                 \x20 sleep 0.1\n\
                 done\n\
                 umount '{exec}/netns/default' 2>/dev/null\n\
                 exit 0\n",
                pid = self.engine_pidfile().display(),
                exec = self.path("docker/exec").display(),
            ),
        )
        .unwrap();
        for script in [&start, &stop] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        (start, stop)
    }

    /// Starts the throwaway engine; returns once `docker info` answers.
    #[track_caller]
    pub fn start_engine(&mut self) {
        assert!(
            self.net,
            "an engine needs the sandbox's own network namespace"
        );
        let (start, _) = self.engine_scripts();
        let out = self.command(&start).output().expect("start dockerd");
        Run(out).success();
        let pid = std::fs::read_to_string(self.engine_pidfile()).unwrap();
        self.engine = Some(pid.trim().parse().unwrap());
    }

    /// Takes on an engine that something else (a tool under test running the start script)
    /// started with [`Sandbox::engine_scripts`]: `docker` commands and the drop cleanup then
    /// address it.
    #[track_caller]
    pub fn adopt_engine(&mut self) {
        let pid = std::fs::read_to_string(self.engine_pidfile()).expect("the engine's pid file");
        self.engine = Some(pid.trim().parse().expect("a pid in the engine's pid file"));
    }

    /// Stops the throwaway engine and waits for it to exit.
    pub fn stop_engine(&mut self) {
        if self.engine.take().is_some() {
            let (_, stop) = self.engine_scripts();
            let _ = self.command(&stop).status();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A tool under test may have restarted the engine: stop whatever the pid file names.
        if self.engine.is_some() || self.engine_pidfile().exists() {
            self.engine = Some(0);
            self.stop_engine();
        }
        // Our own child: killing it ends the namespaces and every mount in them.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `DOCKER_HOST` for an engine whose socket is `<dir>/docker.sock`.
pub fn docker_host(dir: &Path) -> String {
    format!("unix://{}", dir.join("docker.sock").display())
}

/// The arguments of a throwaway `dockerd` that keeps its state under `state` (data root, exec
/// root, pid file), listens on `host` only, and uses containerd namespaces named after
/// `namespace`. No bridge and no iptables: started in a private network namespace, containers
/// use the host network, which is that namespace's own loopback.
pub fn dockerd_args(state: &Path, host: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("--data-root={}", state.join("data").display()),
        format!("--exec-root={}", state.join("exec").display()),
        format!("--pidfile={}", state.join("dockerd.pid").display()),
        format!("--host={host}"),
        "--bridge=none".into(),
        "--iptables=false".into(),
        "--ip-masq=false".into(),
        "--host-gateway-ip=127.0.0.1".into(),
        format!("--containerd-namespace={namespace}"),
        format!("--containerd-plugins-namespace={namespace}-plugins"),
    ]
}

/// A loop device attached to an image file; detached on drop.
pub struct LoopDevice(pub String);

impl LoopDevice {
    #[track_caller]
    pub fn attach(image: &Path) -> LoopDevice {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDevice(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// What loop-device tests need, for `require!`.
pub fn loop_available() -> bool {
    available()
        && require(has_program("losetup"), "losetup (mount)")
        && require(has_program("mkfs.ext4"), "mkfs.ext4 (e2fsprogs)")
}

/// An ext4 image file of `size` (e.g. `"64M"`) labelled `label`, holding the files of `from`.
#[track_caller]
pub fn ext4_image(image: &Path, label: &str, from: &Path, size: &str) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-L", label, "-d"])
        .arg(from)
        .arg(image)
        .arg(size)
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! mount-host-fs: binds, propagation and 9p, in a private mount namespace on a scratch tmpfs.
//!
//! Every mount happens inside a namespace made by `unshare -m --propagation private` and held
//! open by a `sleep` in it; the tool and `cat /proc/self/mountinfo` enter it with `nsenter`, so
//! several runs see each other's mounts and none reaches the machine. This kernel has no 9p, so
//! the 9p mount fails here (the cold-boot and post-resume failure paths); the success and
//! idempotence paths mount a tmpfs with source `hostfs` in its place (`--fs-type tmpfs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const TOOL: &str = "mount-host-fs";

/// A private mount namespace with a tmpfs at `base`; gone when dropped.
struct MountNs {
    holder: Child,
    base: PathBuf,
    _dir: tempfile::TempDir,
}

impl MountNs {
    fn new() -> MountNs {
        let dir = scratch();
        let base = dir.path().join("mnt");
        std::fs::create_dir(&base).unwrap();
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare");
        // Entering the holder before unshare(2) and exec would mean mounting in the machine's
        // own namespace: wait until it is `sleep`, which it becomes only after both.
        let comm = format!("/proc/{}/comm", holder.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&comm).ok().as_deref() != Some("sleep\n") {
            assert!(Instant::now() < deadline, "unshare did not start sleep");
            std::thread::sleep(Duration::from_millis(5));
        }
        let ns = MountNs {
            holder,
            base,
            _dir: dir,
        };
        assert_ne!(
            std::fs::read_link(format!("/proc/{}/ns/mnt", ns.holder.id())).unwrap(),
            std::fs::read_link("/proc/self/ns/mnt").unwrap(),
            "the holder must be in a namespace of its own"
        );
        ns.run("mount", ["-t", "tmpfs", "hexclave-scratch"])
            .arg(&ns.base)
            .run_ok();
        ns
    }

    /// `program ARGS…` inside the namespace.
    fn run<I, S>(&self, program: impl AsRef<std::ffi::OsStr>, args: I) -> NsCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        NsCmd(cmd)
    }

    fn tool<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.run(tool_path(TOOL), args).run()
    }

    /// The namespace's mount table, as `cat /proc/self/mountinfo` in it prints it.
    fn mountinfo(&self) -> Vec<MountLine> {
        let text = self.run("cat", ["/proc/self/mountinfo"]).run_ok();
        text.lines().map(MountLine::parse).collect()
    }

    /// The mounts at `path`, oldest first.
    fn mounts_at(&self, path: &Path) -> Vec<MountLine> {
        let path = path.to_str().unwrap();
        self.mountinfo()
            .into_iter()
            .filter(|m| m.mount_point == path)
            .collect()
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        // Our own child: killing it ends the namespace and every mount in it.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

struct NsCmd(Command);

impl NsCmd {
    fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.0.arg(arg);
        self
    }

    fn run(mut self) -> Run {
        Run(self.0.output().expect("run nsenter"))
    }

    #[track_caller]
    fn run_ok(self) -> String {
        let run = self.run();
        run.success();
        run.stdout_str()
    }
}

/// The fields of a mountinfo line these tests look at (proc(5)).
#[derive(Debug)]
struct MountLine {
    id: String,
    parent: String,
    mount_point: String,
    tags: Vec<String>,
    fs_type: String,
    source: String,
}

impl MountLine {
    fn parse(line: &str) -> MountLine {
        let (head, tail) = line.split_once(" - ").expect("mountinfo separator");
        let head: Vec<&str> = head.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        MountLine {
            id: head[0].to_string(),
            parent: head[1].to_string(),
            mount_point: head[4].to_string(),
            tags: head[6..].iter().map(|t| t.to_string()).collect(),
            fs_type: tail[0].to_string(),
            source: tail[1].to_string(),
        }
    }

    fn is_shared(&self) -> bool {
        self.tags.iter().any(|t| t.starts_with("shared:"))
    }
}

fn can_unshare() -> bool {
    is_root() && has_program("unshare") && has_program("nsenter")
}

const NO_NS: &str = "root, unshare and nsenter (util-linux)";

/// The reason line the tool adds after the original's message when 9p cannot be mounted.
fn nine_p_failure(mount_point: &Path) -> String {
    format!(
        "mount-host-fs: mounting 9p hostfs on {} with trans=virtio,version=9p2000.L: ",
        mount_point.display()
    )
}

#[track_caller]
fn assert_one_shared_bind(ns: &MountNs, path: &Path) {
    let mounts = ns.mounts_at(path);
    assert_eq!(
        mounts.len(),
        1,
        "exactly one mount at {}: {mounts:?}",
        path.display()
    );
    assert_eq!(mounts[0].fs_type, "tmpfs", "the bind of the scratch tmpfs");
    assert_eq!(mounts[0].source, "hexclave-scratch");
    assert!(mounts[0].is_shared(), "shared propagation: {:?}", mounts[0]);
}

#[test]
fn cold_boot_without_9p_binds_shares_and_continues() {
    require!(can_unshare(), NO_NS);
    let ns = MountNs::new();
    let host = ns.base.join("host");
    let run = ns.tool(["--mount-point".as_ref(), host.as_os_str()]);
    run.success().stdout_is("");
    let stderr = run.stderr_str();
    let (first, rest) = stderr.split_once('\n').unwrap();
    // The original's line, with the mount point in place of /host.
    assert_eq!(
        first,
        format!(
            "host filesystem unavailable; continuing with empty {}",
            host.display()
        )
    );
    assert!(rest.starts_with(&nine_p_failure(&host)), "{stderr}");
    assert_eq!(rest.lines().count(), 1, "{stderr}");
    ns.run("test", ["-d".as_ref(), host.as_os_str()])
        .run()
        .success();
    assert_one_shared_bind(&ns, &host);
    // The tool made it shared: the tmpfs it was bound from stays private.
    let base = ns.mounts_at(&ns.base);
    assert_eq!(base.len(), 1);
    assert!(!base[0].is_shared(), "{:?}", base[0]);
}

#[test]
fn post_resume_failure_is_reported_and_exits_1() {
    require!(can_unshare(), NO_NS);
    let ns = MountNs::new();
    let host = ns.base.join("host");
    let run = ns.tool([
        "--post-resume".as_ref(),
        "--mount-point".as_ref(),
        host.as_os_str(),
    ]);
    run.code_is(1).stdout_is("");
    let stderr = run.stderr_str();
    let (first, rest) = stderr.split_once('\n').unwrap();
    assert_eq!(first, "post-resume 9p mount failed");
    assert!(rest.starts_with(&nine_p_failure(&host)), "{stderr}");
    assert_one_shared_bind(&ns, &host);
}

#[test]
fn two_runs_leave_one_bind() {
    require!(can_unshare(), NO_NS);
    let ns = MountNs::new();
    let host = ns.base.join("host");
    for _ in 0..2 {
        ns.tool(["--mount-point".as_ref(), host.as_os_str()])
            .success();
    }
    assert_one_shared_bind(&ns, &host);
}

#[test]
fn an_existing_mount_point_is_not_bound_again() {
    require!(can_unshare(), NO_NS);
    let ns = MountNs::new();
    ns.tool(["--mount-point".as_ref(), ns.base.as_os_str()])
        .success();
    // Still only the scratch tmpfs, now shared.
    assert_one_shared_bind(&ns, &ns.base);
}

/// Replaces the original's `mount -t 9p … hostfs /host` on every restart, which stacked one
/// more 9p mount each time.
#[test]
fn filesystem_already_on_top_is_left_alone() {
    require!(can_unshare(), NO_NS);
    let ns = MountNs::new();
    let host = ns.base.join("host");
    let args = [
        "--mount-point".as_ref(),
        host.as_os_str(),
        "--fs-type".as_ref(),
        "tmpfs".as_ref(),
        "--options".as_ref(),
        "size=1m".as_ref(),
    ];
    for _ in 0..3 {
        ns.tool(args).success().stdout_is("").stderr_is("");
    }
    let mounts = ns.mounts_at(&host);
    assert_eq!(mounts.len(), 2, "one bind, one hostfs: {mounts:?}");
    assert_eq!(
        (mounts[0].source.as_str(), mounts[1].source.as_str()),
        ("hexclave-scratch", "hostfs")
    );
    assert_eq!(mounts[1].parent, mounts[0].id, "hostfs sits on the bind");
    assert!(mounts[0].is_shared());
}

/// What the shared bind is for: a mount made on /host after resume reaches a bind of /host made
/// earlier (docker's `-v /host:/host:rshared` into the container).
#[test]
fn post_resume_mount_propagates_to_an_earlier_bind() {
    require!(can_unshare(), NO_NS);
    let ns = MountNs::new();
    let host = ns.base.join("host");
    let peer = ns.base.join("container-view");
    ns.tool(["--mount-point".as_ref(), host.as_os_str()])
        .success();
    ns.run("mkdir", [&peer]).run_ok();
    ns.run(
        "mount",
        ["--bind".as_ref(), host.as_os_str(), peer.as_os_str()],
    )
    .run_ok();
    ns.tool([
        "--post-resume".as_ref(),
        "--mount-point".as_ref(),
        host.as_os_str(),
        "--fs-type".as_ref(),
        "tmpfs".as_ref(),
        "--options".as_ref(),
        "size=1m".as_ref(),
    ])
    .success()
    .stderr_is("");
    let at_peer = ns.mounts_at(&peer);
    assert_eq!(
        at_peer.last().map(|m| m.source.as_str()),
        Some("hostfs"),
        "{at_peer:?}"
    );
}

#[test]
fn help_and_version() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    for text in [
        "Usage: mount-host-fs [OPTIONS]",
        "--post-resume",
        "[default: /host]",
        "[default: hostfs]",
        "[default: trans=virtio,version=9p2000.L]",
    ] {
        assert!(run.stdout_str().contains(text), "{text}");
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(format!("mount-host-fs {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_flag_is_a_usage_error() {
    tool(TOOL)
        .arg("--post-resumee")
        .run()
        .code_is(2)
        .stdout_is("")
        .stderr_contains("unexpected argument '--post-resumee'");
}

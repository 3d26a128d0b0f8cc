//! mount-host-fs: binds, propagation and 9p, in a private mount namespace on a scratch tmpfs.
//!
//! Every mount happens inside a namespace made by `unshare -m --propagation private` and held
//! open by a `sleep` in it; the tool and `cat /proc/self/mountinfo` enter it with `nsenter`, so
//! several runs see each other's mounts and none reaches the machine. This kernel has no 9p, so
//! the 9p mount fails here (the cold-boot and post-resume failure paths); the success and
//! idempotence paths mount a tmpfs with source `hostfs` in its place (`--fs-type tmpfs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use shared::os::mounts::{self, Mount};

use crate::common::sandbox::Sandbox;
use crate::common::*;

const TOOL: &str = "mount-host-fs";

/// A private mount namespace with a tmpfs at `base`; gone when dropped.
struct MountNs {
    sandbox: Sandbox,
    base: PathBuf,
}

impl MountNs {
    fn new() -> MountNs {
        let sandbox = Sandbox::new();
        let base = sandbox.path("mnt");
        std::fs::create_dir(&base).unwrap();
        sandbox.ok(
            "mount",
            [
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "hexclave-scratch".as_ref(),
                base.as_os_str(),
            ],
        );
        MountNs { sandbox, base }
    }

    /// `program ARGS…` inside the namespace.
    fn run<I, S>(&self, program: impl AsRef<std::ffi::OsStr>, args: I) -> NsCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.sandbox.command(program);
        cmd.args(args);
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
    fn mountinfo(&self) -> Vec<Mount> {
        mounts::parse(&self.run("cat", ["/proc/self/mountinfo"]).run_ok()).unwrap()
    }

    /// The mounts at `path`, oldest first.
    fn mounts_at(&self, path: &Path) -> Vec<Mount> {
        self.mountinfo()
            .into_iter()
            .filter(|m| m.mount_point == path)
            .collect()
    }
}

struct NsCmd(Command);

impl NsCmd {
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

fn can_unshare() -> bool {
    crate::common::sandbox::available()
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
        assert!(help_contains(&run.stdout_str(), text), "{text}");
    }
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("mount-host-fs"));
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

/// Issue 10, M1: concurrent runs on one mount point serialise on the lock and leave exactly
/// one bind and one mount.
#[test]
fn concurrent_runs_leave_one_bind_and_one_mount() {
    require!(can_unshare(), NO_NS);
    for trial in 0..10 {
        let ns = MountNs::new();
        let host = ns.base.join("host");
        let lock = ns.sandbox.path("mount-host-fs.lock");
        let children: Vec<_> = (0..8)
            .map(|_| {
                let mut cmd = ns.sandbox.command(tool_path(TOOL));
                cmd.arg("--mount-point")
                    .arg(&host)
                    .args(["--fs-type", "tmpfs", "--options", "size=1m"])
                    .arg("--lock-file")
                    .arg(&lock)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for child in children {
            let run = Run(child.wait_with_output().unwrap());
            run.success().stdout_is("").stderr_is("");
        }
        let mounts = ns.mounts_at(&host);
        assert_eq!(
            mounts.len(),
            2,
            "trial {trial}: one bind, one mount: {mounts:?}"
        );
        assert_eq!(
            (mounts[0].source.as_str(), mounts[1].source.as_str()),
            ("hexclave-scratch", "hostfs")
        );
    }
}

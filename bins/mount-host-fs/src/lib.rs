//! `mount-host-fs [--post-resume]`: the host's folder at `/host`, shared, with 9p on top.

pub mod hostfs;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::hostfs::{
    DEFAULT_FS_TYPE, DEFAULT_LOCK_FILE, DEFAULT_MOUNT_POINT, DEFAULT_OPTIONS, DEFAULT_TAG, HostFs,
};
use clap::{CommandFactory, Parser};
use shared::cli::help::{self, Help};

const TOOL: &str = "mount-host-fs";

/// Mount the host's folder (virtio-9p, tag `hostfs`) at /host.
///
/// Creates the mount point, binds it on itself unless it already is a mount point, makes it a
/// shared mount (so that a 9p mount made later, after a snapshot resume, propagates into the
/// container's `rshared` bind mount of /host), then mounts 9p on top with
/// `trans=virtio,version=9p2000.L`. When the topmost mount at the mount point already is that 9p
/// mount nothing more is mounted, so running this again (every restart of stack.service) leaves
/// exactly one bind and one 9p mount.
///
/// Cold boot (no flag): a 9p mount that fails is normal when the host detached virtfs; this
/// prints `host filesystem unavailable; continuing with empty /host` (with the mount point in
/// place of /host when another is given) and the reason on the next line, and exits 0.
///
/// A failed mkdir, bind or make-shared is a warning on stderr and the 9p mount is still tried,
/// as in the original.
///
/// Concurrent runs are serialised by an exclusive flock(2) on --lock-file (waiting up to 60 s),
/// so however many run at once they leave one bind and one 9p mount. A lock that cannot be
/// taken is a warning and the run goes on without it.
#[derive(Parser)]
#[command(name = TOOL)]
pub struct Args {
    /// After a snapshot resume: a failed 9p mount prints `post-resume 9p mount failed` (and the
    /// reason) on stderr and exits 1.
    #[arg(long)]
    pub post_resume: bool,

    /// Where to mount.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MOUNT_POINT)]
    pub mount_point: PathBuf,

    /// The 9p mount tag (the mount source).
    #[arg(long, value_name = "TAG", default_value = DEFAULT_TAG)]
    pub tag: String,

    /// The filesystem type to mount (another type lets the idempotent path be tried where the
    /// kernel has no 9p).
    #[arg(long, value_name = "TYPE", default_value = DEFAULT_FS_TYPE)]
    pub fs_type: String,

    /// The mount options.
    #[arg(long, value_name = "OPTS", default_value = DEFAULT_OPTIONS)]
    pub options: String,

    /// The lock file that serialises concurrent runs (created when missing).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_LOCK_FILE)]
    pub lock_file: PathBuf,
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[],
    exit: &[
        ("0", "mounted, already mounted, or (cold boot) unavailable"),
        ("1", "--post-resume and the mount failed"),
    ],
    notes: "",
    long_notes: "",
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run(command(), args, |args: Args| {
        let fs = HostFs {
            mount_point: args.mount_point,
            tag: args.tag,
            fs_type: args.fs_type,
            options: args.options,
            lock_file: args.lock_file,
        };
        Ok(fs.run(args.post_resume, TOOL, &mut std::io::stderr().lock()))
    })
}

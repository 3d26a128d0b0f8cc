//! `install-emulator-containers`: the emulator's docker image from the STACKBUNDLE disk.

pub mod install;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::install::Options;
use clap::{CommandFactory, Parser};
use shared::cli::args;
use shared::cli::args::Checked;
use shared::cli::help::{self, Help};
use shared::docker::{DEFAULT_PROGRAM, Docker};
use shared::duration::parse as duration;
use shared::duration::text;
use shared::os::blockdev::{self, Disk, Lookup};

const TOOL: &str = install::TOOL;

const LONG_ABOUT: &str = "\
Load the emulator's docker image from the STACKBUNDLE disk.

1. Mounts the disk labelled STACKBUNDLE read-only at the mount point (created
   when missing), unless that is a mount point already, so a re-run works. The
   disk is found through /dev/disk/by-label, or, without udev, by reading the
   superblock of every device in /sys/class/block (ext2/3/4, iso9660, vfat); the
   filesystem type is probed the same way.
2. Runs the start command (default `systemctl enable --now docker`). It is split
   into words as a shell would, but no shell runs it; an empty command skips
   this step. A failure stops here. A command of the form `systemctl enable
   --now UNIT` runs as `systemctl start UNIT` when `systemctl is-enabled --quiet
   UNIT` says the unit is enabled already (docker's package enables it):
   enabling reloads systemd two or three times, seconds each in a TCG guest,
   and leaves the same state.
3. Waits until `docker info` answers, trying again with a growing pause (at most
   0.5 s), each try killed after the attempt timeout. A line every 30 s says
   what it last answered; after the timeout the tool gives up with that answer.
4. Loads img.tgz: it is inflated in this process and the tar streamed into
   `docker load` (faster than `gzip -dc img.tgz | docker load`; see the README's
   Performance section). A progress line every interval gives the bytes read,
   the total and the rate. A file that is missing, empty, not gzip, truncated or
   corrupt (gzip checksum) is an error naming it. When img.tgz.sha256 sits
   beside it (sha256sum output, or the bare hex digest) the digest is checked
   while streaming. The last MiB of the archive is held back until both checks
   pass, so docker never receives the end of a bad archive and keeps no image
   from it. `docker load` prints `Loaded image: ...` on stdout as before.
5. Copies build.env to the build env file and build-arch.env to the build-arch
   env file when they are present, each atomically with mode 0644.

Progress lines go to stdout as `STACK_PROVISION: install-emulator-containers:
...` and to the file named by STACK_PROVISION_LOG_FILE, as log-provision writes
them.";

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE, help::DOCKER_HOST],
    exit: &[
        ("0", "loaded (and the env files copied)"),
        (
            "1",
            "any step failed; the message names the file, device or command",
        ),
    ],
    notes: "Durations are seconds (300, 2.5) or a number with a unit: 500ms, 30s, 5m.",
    long_notes: "",
};

/// Load the emulator's docker image from the STACKBUNDLE disk.
#[derive(Parser)]
#[command(name = TOOL, long_about = LONG_ABOUT)]
pub struct Args {
    /// The bundle disk's device; when omitted it is found by --label.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<PathBuf>,

    /// The filesystem label of the bundle disk.
    #[arg(long, value_name = "LABEL", default_value = install::DEFAULT_LABEL,
          value_parser = Checked(args::label))]
    pub label: String,

    #[command(flatten)]
    pub lookup: Lookup,

    /// Where the disk is mounted; img.tgz, build.env and build-arch.env are read from here.
    #[arg(long, value_name = "DIR", default_value = install::DEFAULT_MOUNT_POINT)]
    pub mount_point: PathBuf,

    /// Mount nothing; read the bundle's files where they are.
    #[arg(long)]
    pub no_mount: bool,

    /// The image archive; its checksum file is FILE.sha256, and build.env and build-arch.env are
    /// read from its directory [default: MOUNT_POINT/img.tgz]
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,

    /// The command that starts the engine; empty skips it.
    #[arg(long, value_name = "COMMAND", default_value = install::DEFAULT_START_DOCKER)]
    pub start_docker: String,

    /// The docker client program.
    #[arg(long, value_name = "PROGRAM", default_value = DEFAULT_PROGRAM)]
    pub docker: OsString,

    /// How long to wait for `docker info` to answer.
    #[arg(long, value_name = "DURATION", default_value = text(install::DEFAULT_DOCKER_TIMEOUT), value_parser = Checked(duration))]
    pub docker_timeout: Duration,

    /// How long one `docker info` may take before it is killed and tried again.
    #[arg(long, value_name = "DURATION", default_value = text(install::DEFAULT_ATTEMPT_TIMEOUT), value_parser = Checked(duration))]
    pub attempt_timeout: Duration,

    /// How often a progress line is logged while img.tgz loads.
    #[arg(long, value_name = "DURATION", default_value = text(install::DEFAULT_PROGRESS_INTERVAL), value_parser = Checked(duration))]
    pub progress_interval: Duration,

    /// Where build.env is copied.
    #[arg(long, value_name = "FILE", default_value = install::DEFAULT_BUILD_ENV_DEST)]
    pub build_env: PathBuf,

    /// Where build-arch.env is copied.
    #[arg(long, value_name = "FILE", default_value = install::DEFAULT_BUILD_ARCH_ENV_DEST)]
    pub build_arch_env: PathBuf,
}

impl Args {
    pub fn options(self) -> Result<Options, shared::error::Error> {
        let start_docker = args::words(&self.start_docker)
            .map_err(|why| shared::error::Error::usage("--start-docker", why))?
            .0
            .into_iter()
            .map(|word| word.to_string_lossy().into_owned())
            .collect();
        Ok(Options {
            disk: Disk {
                device: self.device,
                label: self.label,
                lookup: self.lookup,
                proc_filesystems: blockdev::DEFAULT_PROC_FILESYSTEMS.into(),
                mount_point: self.mount_point,
            },
            mount: !self.no_mount,
            image: self.image,
            start_docker,
            docker: Docker::new(self.docker),
            docker_timeout: self.docker_timeout,
            attempt_timeout: self.attempt_timeout,
            progress_interval: self.progress_interval,
            build_env: self.build_env,
            build_arch_env: self.build_arch_env,
        })
    }
}

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run_logged(command(), args, |args: Args, log| {
        install::run(&args.options()?, log).map(|()| 0)
    })
}

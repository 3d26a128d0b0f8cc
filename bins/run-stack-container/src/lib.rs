//! `run-stack-container`: the emulator's container in the foreground, for stack.service.

pub mod container;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::container::Options;
use clap::{CommandFactory, Parser};
use mount_host_fs::hostfs::{self, HostFs};
use render_stack_env::render::{self, Output};
use shared::cli::args::{self, Checked};
use shared::cli::help::{self, Help};
use shared::docker::{DEFAULT_PROGRAM, Docker};
use shared::emulator::{envfile, keystore};
use shared::os::blockdev::{self, Disk, Lookup};

const TOOL: &str = container::TOOL;

const LONG_ABOUT: &str = "\
Run the emulator's container in the foreground (stack.service's ExecStart).

1. Mounts the host's folder as mount-host-fs does on a cold boot: the host mount
   point bound on itself and made shared, virtio-9p (tag hostfs) on top unless
   it is there already. A missing 9p prints `host filesystem unavailable;
   continuing with empty /host` and the run goes on.
2. Renders the env file as render-stack-env does (STACKCFG disk, internal keys);
   see render-stack-env --help. Any error there stops the run.
3. Reads STACK_EMULATOR_VM_DIR_HOST from runtime.env. When it is set and not
   empty, the VM folder is HOST_DIR followed by its value (it must be an
   absolute path without `..`, else a warning and no host folder is used), the
   internal publishable client key is copied to VM_FOLDER/internal-pck (mode
   0600, atomically) when the key file is not empty.
4. Removes any old container of the same name (docker rm -f).
5. Runs, in the foreground:
     docker run --rm --name stack --network host
       --add-host host.docker.internal:host-gateway
       --env-file /run/stack-auth/local-emulator.env
       -v stack-postgres-data:/data/postgres -v stack-redis-data:/data/redis
       -v stack-clickhouse-data:/data/clickhouse -v stack-minio-data:/data/minio
       -v stack-inbucket-data:/data/inbucket -v /host:/host:rshared
       stack-local-emulator
   (the env file, host folder, name and image as configured). Without a VM
   folder this process becomes docker. With one, docker's stdout and stderr go,
   together, to stdout and to VM_FOLDER/stack.log (truncated first); SIGTERM and
   SIGINT are passed on to docker, and the tool exits with docker's status as
   soon as docker has exited.

Unlike the original, a host folder that cannot be written (the 9p mount gone, a
read-only or missing folder) is a warning on stderr: the key is not published,
the log is not written, and the container runs with its output on stdout,
instead of failing and being restarted in a loop.";

/// Run the emulator's container in the foreground.
#[derive(Parser)]
#[command(name = TOOL, long_about = LONG_ABOUT)]
pub struct Args {
    /// The host's folder: mounted there, bound into the container as /host, and the base of
    /// the VM folder.
    #[arg(long, value_name = "DIR", default_value = hostfs::DEFAULT_MOUNT_POINT)]
    pub host_dir: PathBuf,

    /// Do not mount anything at the host folder; use it as it is.
    #[arg(long)]
    pub no_host_mount: bool,

    /// The 9p mount tag (the mount source) of the host's folder.
    #[arg(long, value_name = "TAG", default_value = hostfs::DEFAULT_TAG)]
    pub host_tag: String,

    /// The filesystem type of the host's folder.
    #[arg(long, value_name = "TYPE", default_value = hostfs::DEFAULT_FS_TYPE)]
    pub host_fs_type: String,

    /// The mount options of the host's folder.
    #[arg(long, value_name = "OPTS", default_value = hostfs::DEFAULT_OPTIONS)]
    pub host_options: String,

    /// The configuration disk's device; when omitted it is found by --cfg-label.
    #[arg(long, value_name = "DEVICE")]
    pub cfg_device: Option<PathBuf>,

    /// The filesystem label of the configuration disk.
    #[arg(long, value_name = "LABEL", default_value = render::DEFAULT_LABEL,
          value_parser = Checked(args::label))]
    pub cfg_label: String,

    #[command(flatten)]
    pub lookup: Lookup,

    /// Where the configuration disk is mounted.
    #[arg(long, value_name = "DIR", default_value = render::DEFAULT_MOUNT_POINT)]
    pub cfg_mount_point: PathBuf,

    /// Do not mount the configuration disk; read the env files where they are.
    #[arg(long)]
    pub no_cfg_mount: bool,

    /// The host's runtime settings [default: CFG_MOUNT_POINT/runtime.env]
    #[arg(long, value_name = "FILE")]
    pub runtime_env: Option<PathBuf>,

    /// The product configuration [default: CFG_MOUNT_POINT/base.env]
    #[arg(long, value_name = "FILE")]
    pub base_env: Option<PathBuf>,

    /// Where the internal keys are kept.
    #[arg(long, value_name = "DIR", default_value = keystore::DEFAULT_DIR)]
    pub key_dir: PathBuf,

    /// The build env file that may select snapshot-build mode.
    #[arg(long, value_name = "FILE", default_value = render::DEFAULT_BUILD_ENV)]
    pub build_env: PathBuf,

    /// The env file rendered and given to docker run --env-file.
    #[arg(long, value_name = "FILE", default_value = render::DEFAULT_OUTPUT)]
    pub env_file: PathBuf,

    /// The docker client program.
    #[arg(long, value_name = "PROGRAM", default_value = DEFAULT_PROGRAM)]
    pub docker: OsString,

    /// The container's name.
    #[arg(long, value_name = "NAME", default_value = container::DEFAULT_CONTAINER,
          value_parser = Checked(args::container))]
    pub name: String,

    /// The image to run.
    #[arg(long, value_name = "IMAGE", default_value = container::DEFAULT_IMAGE)]
    pub image: String,
}

impl Args {
    pub fn options(self) -> Options {
        Options {
            host: HostFs {
                mount_point: self.host_dir,
                tag: self.host_tag,
                fs_type: self.host_fs_type,
                options: self.host_options,
                lock_file: hostfs::DEFAULT_LOCK_FILE.into(),
            },
            mount_host: !self.no_host_mount,
            env: render::Options {
                disk: Disk {
                    device: self.cfg_device,
                    label: self.cfg_label,
                    lookup: self.lookup,
                    proc_filesystems: blockdev::DEFAULT_PROC_FILESYSTEMS.into(),
                    mount_point: self.cfg_mount_point,
                },
                mount: !self.no_cfg_mount,
                runtime_env: self.runtime_env,
                base_env: self.base_env,
                key_dir: self.key_dir,
                build_env: self.build_env,
                output: Output::File(self.env_file),
            },
            docker: Docker::new(self.docker),
            container: self.name,
            image: self.image,
        }
    }
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::DOCKER_HOST],
    exit: &[
        ("N", "docker's (the container's) status once it runs"),
        ("128+N", "docker was killed by signal N"),
        ("1", "a step before docker failed (the message says which)"),
        ("126", "docker could not be started"),
        ("127", "docker was not found"),
    ],
    notes: "",
    long_notes: envfile::SYNTAX,
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run(command(), args, |args: Args| {
        container::run(&args.options())
    })
}

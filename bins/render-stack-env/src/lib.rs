//! `render-stack-env`: write the stack container's env file from the STACKCFG disk.

pub mod render;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::render::{Options, Output};
use clap::{CommandFactory, Parser};
use shared::cli::args::{self, Checked};
use shared::cli::help::{self, Help};
use shared::emulator::{envfile, keystore};
use shared::os::blockdev::{self, Disk, Lookup};

const TOOL: &str = "render-stack-env";

const LONG_ABOUT: &str = "\
Render the stack container's env file from the STACKCFG disk.

Mounts the disk labelled STACKCFG read-only at the mount point, unless that is a
mount point already. The disk is found through /dev/disk/by-label, or, when udev
made no link, by reading the superblock of every device in /sys/class/block
(ext2/3/4, iso9660, vfat); the filesystem type for mount(2) is probed the same
way, with the kernel's types from /proc/filesystems as a fallback.

Reads runtime.env, then base.env: for the computed values a definition in
base.env wins, and in a file the last one wins. Required:
STACK_EMULATOR_PORT_PREFIX (P: 1 to 3 digits such that ${P}01, ${P}02 and ${P}14
are ports) and STACK_EMULATOR_{BACKEND,DASHBOARD,MINIO,INBUCKET}_HOST_PORT
(1-65535); STACK_EMULATOR_MOCK_OAUTH_HOST_PORT defaults to ${P}14 when unset or
empty.

Keys: internal-pck, internal-ssk and internal-sak in the key directory are
generated once (64 hex characters from the system's CSPRNG, mode 0600) and
reused afterwards. An empty file is regenerated; any other content that is not
64 hex characters (plus one optional newline) is an error naming the file. When
the build env file exists and its last STACK_EMULATOR_BUILD_SNAPSHOT is exactly
1 (a snapshot build; the original matched the prefix '^...=1'), the keys are the
fixed public placeholders, written every time, and a placeholder CRON_SECRET is
added.

Output, as a docker --env-file: base.env's entries, runtime.env's entries (in
file order, duplicates kept, comments dropped), the three keys, CRON_SECRET
(snapshot builds only), then the computed variables. It is replaced atomically
with mode 0600: on any error the previous file and the keys stay as they were.
Key values are never printed, except into the output.

Both generations of names: the product renamed three variables, and the released
Stack Auth image reads the old names. After all of those lines (which keep their
order and bytes), each is written under its other name with the same value:
  STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY
    and STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY
  STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY
    and STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY
  NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX and NEXT_PUBLIC_STACK_PORT_PREFIX
In the env files either name is the same variable: when both appear, the later
definition wins for both names, as for a name defined twice.

Bad input: every input file (runtime.env, base.env, the build env file: at most
1 MiB; a key file: at most 4 KiB) must be a regular file; a device, FIFO or
directory is refused before anything is read. The output and the key files are
replaced only when missing or regular files: a device, FIFO, socket, directory
or symbolic link in their place is refused, and symbolic links are not followed
(give the real path). Concurrent runs agree on the keys: they are created under
a lock on the key directory, never replacing a key another run wrote.

With --output -, the file goes to stdout and nothing is mounted or written: the
env files must be readable where they are. A missing key is replaced by a fresh
one that is printed but not saved, and a note on stderr names its file.";

/// Render the stack container's env file from the STACKCFG disk.
#[derive(Parser)]
#[command(name = TOOL, long_about = LONG_ABOUT)]
pub struct Args {
    /// The configuration disk's device; when omitted it is found by --label.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<PathBuf>,

    /// The filesystem label of the configuration disk.
    #[arg(long, value_name = "LABEL", default_value = render::DEFAULT_LABEL,
          value_parser = Checked(args::label))]
    pub label: String,

    #[command(flatten)]
    pub lookup: Lookup,

    /// Where the disk is mounted (created when missing).
    #[arg(long, value_name = "DIR", default_value = render::DEFAULT_MOUNT_POINT)]
    pub mount_point: PathBuf,

    /// Mount nothing; read the env files where they are.
    #[arg(long)]
    pub no_mount: bool,

    /// The host's runtime settings [default: MOUNT_POINT/runtime.env]
    #[arg(long, value_name = "FILE")]
    pub runtime_env: Option<PathBuf>,

    /// The product configuration [default: MOUNT_POINT/base.env]
    #[arg(long, value_name = "FILE")]
    pub base_env: Option<PathBuf>,

    /// Where the internal keys are kept.
    #[arg(long, value_name = "DIR", default_value = keystore::DEFAULT_DIR)]
    pub key_dir: PathBuf,

    /// The build env file that may select snapshot-build mode.
    #[arg(long, value_name = "FILE", default_value = render::DEFAULT_BUILD_ENV)]
    pub build_env: PathBuf,

    /// The env file to write; - prints it instead and changes nothing.
    #[arg(long, value_name = "FILE", default_value = render::DEFAULT_OUTPUT)]
    pub output: PathBuf,
}

impl Args {
    pub fn options(self) -> Options {
        Options {
            disk: Disk {
                device: self.device,
                label: self.label,
                lookup: self.lookup,
                proc_filesystems: blockdev::DEFAULT_PROC_FILESYSTEMS.into(),
                mount_point: self.mount_point,
            },
            mount: !self.no_mount,
            runtime_env: self.runtime_env,
            base_env: self.base_env,
            key_dir: self.key_dir,
            build_env: self.build_env,
            output: if self.output.as_os_str() == "-" {
                Output::Stdout
            } else {
                Output::File(self.output)
            },
        }
    }
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[],
    exit: &[
        ("0", "written (or printed with --output -)"),
        (
            "1",
            "the disk, an env file, a key file or the output failed; the message names the file \
             and line, and the previous output and keys are unchanged",
        ),
    ],
    notes: "",
    long_notes: envfile::SYNTAX,
};

pub fn command() -> clap::Command {
    help::command(Args::command(), &HELP)
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run(command(), args, |args: Args| {
        let report = render::run(&args.options(), &mut std::io::stdout().lock())?;
        for path in report.unsaved_keys {
            eprintln!(
                "{TOOL}: note: {} is missing or empty; printed a one-off key that was not saved",
                path.display()
            );
        }
        Ok(0)
    })
}

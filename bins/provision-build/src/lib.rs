//! `provision-build`: the emulator image's build pipeline, run once by cloud-init.

pub mod console;
pub mod failure;
pub mod poweroff;
pub mod provision;
pub mod runner;
pub mod steps;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::provision::Config;
use clap::{CommandFactory, Parser};
use shared::cli::args::{self, Checked, Words};
use shared::cli::help::{self, Help};
use shared::duration::text;

const TOOL: &str = provision::TOOL;

const LONG_ABOUT: &str = "\
Run the emulator image's build pipeline: the steps below, in order, then either
print STACK_CLOUD_INIT_DONE and power off, or (capture mode) print
STACK_SERVICES_READY and wait.

The tools run as child processes, by their names in the tools directory, without
arguments (mount-host-fs gets --mount-point HOST). Their stdin is /dev/null;
their stdout and stderr go to ours. Every log line is log-provision's:
`STACK_PROVISION: <line>` on stdout and `<line>` in the log file.

Log file: when mount-host-fs exits 0 (it does on a cold boot even without 9p),
HOST/provision.log is truncated and every child gets STACK_PROVISION_LOG_FILE
(and HEXCLAVE_PROVISION_LOG_FILE) set to it; otherwise both are set empty and
nothing is logged to a file. A log file that cannot be written fails the build
(status 1), as log-provision's failure did in the original.

Serial mirror: everything written to our stdout and stderr, the children's
output included, is also written to the first present device of --serial. A
device is present when it exists, can be opened for writing without being
created, and is a character device, a FIFO with a reader, or a regular file (so
tests can use files); the original took the first character device. When the
device cannot keep up, output is dropped for it (never for stdout) rather than
stalling the build.

Markers: STACK_CLOUD_INIT_DONE, STACK_CLOUD_INIT_FAILED and STACK_SERVICES_READY
are appended to the log file on a line of their own, and written to every
present --console (never created: the original left a regular file /dev/ttyAMA0
on x86_64 guests), best effort, each write bounded to 5 seconds. Before the
marker: `step NAME: OUTCOME in DURATION` after every step, and a table of all
step durations.

Success: `build pipeline complete`, the table, STACK_CLOUD_INIT_DONE, then
--shutdown. A stop signal during --shutdown is taken as the power-off under way
(exit 128+N, no failure block); a --shutdown that fails is a failure.

Capture mode, when the build env file's last STACK_EMULATOR_CAPTURE_SAVEVM is
exactly 1 (the original matched the prefix '^STACK_EMULATOR_CAPTURE_SAVEVM=1'):
the capture steps, then `services ready; signalling STACK_SERVICES_READY`, the
table, STACK_SERVICES_READY, sync, and a wait that only a signal ends (exit
128+N, no failure block). A build env file that cannot be parsed is a failure
(status 1).

Failure block, on any failure (a fatal step failing, a step killed by a signal,
a step that cannot be started, a stop signal to provision-build, a panic):
`ERROR: provision-build exited with code N` and STACK_CLOUD_INIT_FAILED appended
to the log file, STACK_CLOUD_INIT_FAILED to the consoles, sync, then --shutdown
after --shutdown-delay and --force-poweroff after --force-poweroff-delay,
detached (they run after provision-build exited, in their own session, with
stdin, stdout and stderr on /dev/null), and exit N.

Stop signals: on SIGTERM, SIGINT or SIGHUP the running step's process group gets
SIGTERM, then SIGKILL after --stop-grace, and the build fails with 128+N.";

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[],
    exit: &[
        (
            "0",
            "success: STACK_CLOUD_INIT_DONE written and --shutdown succeeded",
        ),
        ("N", "a fatal step exited with N; the failure block ran"),
        (
            "128+N",
            "a step was killed by signal N, or provision-build received signal N",
        ),
        ("126", "a step could not be executed"),
        ("127", "a step's program was not found"),
        ("101", "provision-build panicked"),
        (
            "1",
            "capture-mode checks failed, the build env file is malformed, or the log file could \
             not be written",
        ),
    ],
    notes: "Durations are seconds (2, 0.5) or a number with a unit: 500ms, 15s, 1m.",
    long_notes: "",
};

/// Run the emulator image's build pipeline.
#[derive(Parser)]
#[command(name = TOOL, long_about = LONG_ABOUT)]
pub struct Args {
    /// Where the tools are installed.
    #[arg(long, value_name = "DIR", default_value = provision::DEFAULT_TOOLS_DIR)]
    pub tools_dir: PathBuf,

    /// The host folder's mount point; the log file is HOST/provision.log.
    #[arg(long, value_name = "DIR", default_value = provision::DEFAULT_HOST)]
    pub host: PathBuf,

    /// The build env file (install-emulator-containers copies it from the bundle disk).
    #[arg(long, value_name = "FILE", default_value = provision::DEFAULT_BUILD_ENV)]
    pub build_env: PathBuf,

    /// Serial devices, comma-separated, to mirror all output to: the first present one. An
    /// empty value means none.
    #[arg(long, value_name = "PATHS", default_value = provision::DEFAULT_SERIAL.join(","),
          value_parser = paths)]
    pub serial: Paths,

    /// Consoles, comma-separated, the markers are written to: every present one. An empty value
    /// means none.
    #[arg(long, value_name = "PATHS", default_value = provision::DEFAULT_CONSOLES.join(","),
          value_parser = paths)]
    pub console: Paths,

    /// The systemctl program.
    #[arg(long, value_name = "PROGRAM", default_value = provision::DEFAULT_SYSTEMCTL)]
    pub systemctl: OsString,

    /// The power-off command: at the end of a successful build, and the failure block's first
    /// stage. Split into words with shell-like quoting, nothing expanded.
    #[arg(long, value_name = "COMMAND", default_value = provision::DEFAULT_SHUTDOWN,
          value_parser = args::command)]
    pub shutdown: Words,

    /// The failure block's second stage, in case the first one hangs.
    #[arg(long, value_name = "COMMAND", default_value = provision::DEFAULT_FORCE_POWEROFF,
          value_parser = args::command)]
    pub force_poweroff: Words,

    /// How long from the failure block to --shutdown.
    #[arg(long, value_name = "DURATION", default_value = text(provision::DEFAULT_SHUTDOWN_DELAY),
          value_parser = Checked(shared::duration::parse))]
    pub shutdown_delay: Duration,

    /// How long from the failure block to --force-poweroff.
    #[arg(long, value_name = "DURATION", default_value = text(provision::DEFAULT_FORCE_POWEROFF_DELAY),
          value_parser = Checked(shared::duration::parse))]
    pub force_poweroff_delay: Duration,

    /// Capture mode: how long between restarting qemu-guest-agent and asking whether it is
    /// active.
    #[arg(long, value_name = "DURATION", default_value = text(provision::DEFAULT_QGA_SETTLE),
          value_parser = Checked(shared::duration::parse))]
    pub qga_settle: Duration,

    /// How long a step stopped by a signal gets between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = text(provision::DEFAULT_STOP_GRACE),
          value_parser = Checked(shared::duration::parse))]
    pub stop_grace: Duration,

    #[command(flatten)]
    pub test_hooks: TestHooks,
}

/// Hooks for the suite, compiled only with the `test-hooks` feature (never into the binaries
/// that `make` embeds in the user-data).
#[cfg(feature = "test-hooks")]
#[derive(clap::Args, Debug, Clone)]
pub struct TestHooks {
    /// For tests: panic right before the step of this name (checks the panic path, which must
    /// run the failure block in builds with panic = "abort" too).
    #[arg(long, value_name = "STEP", hide = true)]
    pub test_panic_before: Option<String>,
}

/// Without the `test-hooks` feature: no hook at all.
#[cfg(not(feature = "test-hooks"))]
#[derive(clap::Args, Debug, Clone)]
pub struct TestHooks {}

impl TestHooks {
    fn panic_before(self) -> Option<String> {
        #[cfg(feature = "test-hooks")]
        return self.test_panic_before;
        #[cfg(not(feature = "test-hooks"))]
        return None;
    }
}

pub fn command() -> clap::Command {
    let steps = steps::help();
    help::command(
        Args::command(),
        &Help {
            long_notes: &steps,
            ..HELP
        },
    )
}

/// A comma-separated list of paths; empty entries are dropped, so an empty value is none.
#[derive(Debug, Clone)]
pub struct Paths(pub Vec<PathBuf>);

fn paths(text: &str) -> Result<Paths, String> {
    Ok(Paths(
        text.split(',')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
    ))
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run(command(), args, |args: Args| {
        provision::run(Config {
            tools_dir: args.tools_dir,
            host: args.host,
            build_env: args.build_env,
            serial: args.serial.0,
            consoles: args.console.0,
            systemctl: args.systemctl,
            shutdown: args.shutdown.0,
            force_poweroff: args.force_poweroff.0,
            shutdown_delay: args.shutdown_delay,
            force_poweroff_delay: args.force_poweroff_delay,
            qga_settle: args.qga_settle,
            stop_grace: args.stop_grace,
            panic_before: args.test_hooks.panic_before(),
        })
    })
}

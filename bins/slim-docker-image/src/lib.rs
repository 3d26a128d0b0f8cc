//! `slim-docker-image`: build, smoke-test and flatten the slim image; rebuild docker's storage
//! around it; zero-fill the free space.

pub mod dry_run;
pub mod rebuild;
pub mod slim;
pub mod zero_fill;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::rebuild::Step;
use crate::slim::Config;
use clap::{CommandFactory, Parser};
use shared::cli::args::Checked;
use shared::cli::args::{self, Words};
use shared::cli::help::{self, Help};
use shared::docker::Docker;
use shared::duration::text;
use shared::os::interrupt::Interrupt;
use shared::wait::spec;

const TOOL: &str = slim::TOOL;

/// Build the slim emulator image, smoke-test it, flatten it, rebuild docker's
/// storage around it and zero-fill the free space.
///
/// Steps, each logged with the original's lines:
///
/// 1. docker build -t stack-local-emulator-slim - (the original's Dockerfile on
///    stdin).
/// 2. Unless --arch-env sets STACK_EMULATOR_BUILD_ARCH=arm64 (the file is parsed
///    as an env file, never executed): the smoke test.
///      docker run --rm --name smoke-test --network host
///        --env-file BUILD_ENV --env-file COMPUTED_ENV
///    with three fresh random hex keys
///      STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY,
///      STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY,
///      STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY
///    passed by name: the values are only in docker's environment, never in an
///    argument list; STACK_SKIP_MIGRATIONS=true, STACK_SKIP_SEED_SCRIPT=true,
///    STACK_RUNTIME_WORK_DIR=/app; then the renamed variables under their other
///    generation's name, by name too: the two keys also as
///    STACK_SEED_INTERNAL_PROJECT_{PUBLISHABLE_CLIENT,SECRET_SERVER}_KEY, and a
///    NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX of the env files also as
///    NEXT_PUBLIC_STACK_PORT_PREFIX (or the other way round; the value docker
///    ends up with for either name), so a slim image of either generation finds
///    them; and the five data volumes. The backend must answer exactly 200 on
///    http://127.0.0.1:8102/health?db=1 within 300 s. Otherwise: diagnostics
///    (docker ps -a, the container's last 200 log lines, free -m, curl -v), the
///    container removed, exit 1.
/// 3. The flatten: docker create --name flatten stack-local-emulator-slim
///    /bin/true, then
///      docker export flatten | docker import --change 'WORKDIR /app'
///        --change 'ENTRYPOINT ["/entrypoint.sh"]'
///        --change 'EXPOSE 5432 6379 2500 9001 1100 8071 8123 9009 9090 8080
///        8101 8102' --change 'ENV DEBIAN_FRONTEND=noninteractive'
///        - stack-local-emulator:final
/// 4. The storage rebuild: the engine removes the slim and the source image and
///    the build's leftovers, the final image takes the source image's name, and
///    the free space is trimmed, zero-filled first where the disk takes no
///    discards (--zero-fill). The engine is never stopped and the volumes never
///    move. The steps are in the table below; each is recorded in --state-file
///    when done.
///
/// Recovery: when --state-file exists, steps 1-3 are skipped and the rebuild
/// resumes after the last recorded step, so a run that crashed or failed
/// anywhere in it is finished by running the tool again with the same options.
/// The final tag is removed only once the image's name is verified to be the
/// final image, and the run counts as done only once the engine lists every
/// volume it had.
///
/// --dry-run prints every step and command a run would carry out, with the
/// free-space decision for this machine, and changes nothing: no docker command
/// runs, no file is written, the log file included.
///
/// Every line goes to stdout as `STACK_PROVISION: <line>` and to
/// STACK_PROVISION_LOG_FILE, as log-provision writes them; lines added to the
/// original's start with `slim-docker-image: ` (progress of long steps every
/// --progress-interval, the rebuild's steps).
// The comment above is the --help text, printed verbatim (laid out for an 80-column console),
// not rustdoc Markdown.
#[allow(clippy::doc_overindented_list_items, clippy::doc_lazy_continuation)]
#[derive(Parser)]
#[command(name = TOOL, verbatim_doc_comment)]
pub struct Args {
    /// The emulator image the slim one is built from; the final image is tagged with it.
    #[arg(long, value_name = "IMAGE", default_value = slim::DEFAULT_IMAGE)]
    pub image: String,

    /// The slim image's name.
    #[arg(long, value_name = "IMAGE", default_value = slim::DEFAULT_SLIM_IMAGE)]
    pub slim_image: String,

    /// The flattened image's name, until it is tagged as --image.
    #[arg(long, value_name = "IMAGE", default_value = slim::DEFAULT_FINAL_IMAGE)]
    pub final_image: String,

    /// The build env file given to the smoke test.
    #[arg(long, value_name = "FILE", default_value = shared::emulator::BUILD_ENV)]
    pub build_env: PathBuf,

    /// The computed env file given after it.
    #[arg(long, value_name = "FILE", default_value = shared::emulator::COMPUTED_ENV)]
    pub computed_env: PathBuf,

    /// The file saying STACK_EMULATOR_BUILD_ARCH (missing: not arm64).
    #[arg(long, value_name = "FILE", default_value = slim::DEFAULT_ARCH_ENV)]
    pub arch_env: PathBuf,

    /// The smoke-test container's name.
    #[arg(long, value_name = "NAME", default_value = slim::DEFAULT_SMOKE_CONTAINER, value_parser = Checked(args::container))]
    pub smoke_container: String,

    /// The backend port the smoke test probes on 127.0.0.1.
    #[arg(long, value_name = "PORT", default_value_t = slim::DEFAULT_SMOKE_PORT, value_parser = Checked(spec::port))]
    pub smoke_port: u16,

    /// How long the backend may take to answer 200.
    #[arg(long, value_name = "DURATION", default_value = text(slim::DEFAULT_SMOKE_TIMEOUT), value_parser = Checked(shared::duration::parse))]
    pub smoke_timeout: Duration,

    /// The flatten container's name.
    #[arg(long, value_name = "NAME", default_value = slim::DEFAULT_FLATTEN_CONTAINER, value_parser = Checked(args::container))]
    pub flatten_container: String,

    /// The rebuild's progress record; its existence means "resume".
    #[arg(long, value_name = "FILE", default_value = rebuild::DEFAULT_STATE)]
    pub state_file: PathBuf,

    /// When to write zeros over the free space: auto (unless the disk takes discards and the
    /// trim succeeds; the host's disk must pass them on, as QEMU's discard=unmap does), always
    /// (the original's), never (the trim alone).
    #[arg(long, value_name = "WHEN", default_value_t = zero_fill::Mode::Auto, value_parser = Checked(zero_fill::Mode::parse))]
    pub zero_fill: zero_fill::Mode,

    /// Where sysfs is mounted (read to learn whether the disk takes discards).
    #[arg(long, value_name = "DIR", default_value = zero_fill::DEFAULT_SYSFS, hide = true)]
    pub sysfs: PathBuf,

    /// The file the zero-fill writes (and removes).
    #[arg(long, value_name = "FILE", default_value = zero_fill::DEFAULT_FILE)]
    pub fill_file: PathBuf,

    /// The size of each zero-fill write.
    #[arg(long, value_name = "SIZE", default_value = size_text(zero_fill::DEFAULT_BLOCK_SIZE), value_parser = Checked(size))]
    pub fill_block_size: usize,

    /// The trim command after the zero-fill (empty: none).
    #[arg(long, value_name = "COMMAND", default_value = zero_fill::DEFAULT_TRIM, value_parser = Checked(args::words))]
    pub fstrim_command: Words,

    /// How often long steps log their progress.
    #[arg(long, value_name = "DURATION", default_value = text(slim::DEFAULT_PROGRESS_INTERVAL), value_parser = Checked(args::positive_duration))]
    pub progress_interval: Duration,

    /// How long `docker stop` gives a container before killing it.
    #[arg(long, value_name = "DURATION", default_value = text(slim::DEFAULT_STOP_TIMEOUT), value_parser = Checked(shared::duration::parse))]
    pub stop_timeout: Duration,

    /// Print every step and command a run would carry out, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The docker client program.
    #[arg(long, value_name = "PROGRAM", default_value = shared::docker::DEFAULT_PROGRAM)]
    pub docker: OsString,

    #[command(flatten)]
    pub test_hooks: TestHooks,
}

/// Hooks for the suite, compiled only with the `test-hooks` feature (never into the binaries
/// that `make` embeds in the user-data).
#[cfg(feature = "test-hooks")]
#[derive(clap::Args, Debug, Clone)]
pub struct TestHooks {
    /// Tests only: exit with status 99 right after this rebuild step, before recording it.
    #[arg(long, value_name = "STEP", env = "STACK_SLIM_CRASH_AFTER", hide = true, value_parser = Checked(Step::parse))]
    pub crash_after: Option<Step>,
}

/// Without the `test-hooks` feature: no hook at all.
#[cfg(not(feature = "test-hooks"))]
#[derive(clap::Args, Debug, Clone)]
pub struct TestHooks {}

impl TestHooks {
    fn crash_after(&self) -> Option<Step> {
        #[cfg(feature = "test-hooks")]
        return self.crash_after;
        #[cfg(not(feature = "test-hooks"))]
        return None;
    }
}

/// `bytes` as [`size`] reads it: with the largest of K, M or G that divides it.
fn size_text(bytes: usize) -> String {
    let units = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    match units
        .iter()
        .find(|(factor, _)| bytes > 0 && bytes % factor == 0)
    {
        Some((factor, unit)) => format!("{}{unit}", bytes / factor),
        None => bytes.to_string(),
    }
}

/// Bytes, or a number with K, M or G (powers of 1024); at least 1, at most 1G.
fn size(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let factor: usize = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err("expected bytes or a number with K, M or G".into()),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| "expected bytes or a number with K, M or G".to_string())?;
    match n.checked_mul(factor) {
        Some(bytes) if (1..=1 << 30).contains(&bytes) => Ok(bytes),
        _ => Err("must be between 1 byte and 1G".into()),
    }
}

impl Args {
    fn config(self) -> Config {
        let docker = Docker::new(self.docker);
        let rebuild = rebuild::Config {
            docker: docker.clone(),
            final_image: self.final_image,
            target_image: self.image.clone(),
            slim_image: self.slim_image.clone(),
            state_file: self.state_file,
            free_space: zero_fill::Config {
                mode: self.zero_fill,
                sysfs: self.sysfs,
                path: self.fill_file,
                block_size: self.fill_block_size,
                progress_every: self.progress_interval,
                trim: self.fstrim_command.0,
            },
            crash_after: self.test_hooks.crash_after(),
        };
        Config {
            docker,
            image: self.image,
            slim_image: self.slim_image,
            build_env: self.build_env,
            computed_env: self.computed_env,
            arch_env: self.arch_env,
            smoke_container: self.smoke_container,
            smoke_port: self.smoke_port,
            smoke_timeout: self.smoke_timeout,
            flatten_container: self.flatten_container,
            stop_timeout: self.stop_timeout,
            progress_every: self.progress_interval,
            rebuild,
        }
    }
}

const HELP: Help<'static> = Help {
    about: env!("CARGO_PKG_DESCRIPTION"),
    env: &[help::LOG_FILE, help::DOCKER_HOST],
    exit: &[
        ("0", "done"),
        (
            "1",
            "the smoke test failed, or a step failed (the message names it; a failed rebuild \
             step keeps its progress in --state-file: fix the cause and run again)",
        ),
        (
            "128+N",
            "stopped by signal N (SIGTERM: 143, SIGINT: 130); a rebuild resumes on the next run",
        ),
    ],
    notes: "\
--fstrim-command is split into words like a shell would (quotes, backslashes)
but never run by a shell; an empty one skips the trim. Durations are seconds (300, 2.5) or a number with a unit: 100ms, 30s, 5m.
Sizes are bytes or a number with K, M or G.",
    long_notes: "",
};

pub fn command() -> clap::Command {
    let steps = format!(
        "Storage rebuild steps (step 4; the name is what --state-file records):\n{}",
        rebuild::help_table()
    );
    help::command(
        Args::command(),
        &Help {
            long_notes: &steps,
            ..HELP
        },
    )
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    shared::cli::run(command(), args, |args: Args| {
        if args.dry_run {
            let mut out = std::io::stdout().lock();
            return dry_run::print(&args.config(), &mut out).map(|()| 0);
        }
        shared::cli::logged(TOOL, |log| {
            let interrupt = Interrupt::install()?;
            slim::run(&args.config(), &interrupt, log)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4M"), Ok(4 << 20));
        assert_eq!(size("512k"), Ok(512 << 10));
        assert_eq!(size("4096"), Ok(4096));
        for bad in ["", "0", "4X", "M", "2G", "-1", "1.5M"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
        for (bytes, text) in [
            (1 << 20, "1M"),
            (3 << 10, "3K"),
            (1 << 30, "1G"),
            (1000, "1000"),
        ] {
            assert_eq!(size_text(bytes), text);
            assert_eq!(size(text), Ok(bytes));
        }
    }
}

//! `provision-build`: the build pipeline cloud-init runs once per emulator image.
//!
//! The steps, their order, their log lines and what each failure means are one table,
//! [`crate::steps::STEPS`]. The pipeline walks it: mount the host folder (and log to
//! `HOST/provision.log`, truncated, when that worked), mirror all output to the serial device,
//! run every step, then either print `STACK_CLOUD_INIT_DONE` and power off, or, in capture
//! mode, print `STACK_SERVICES_READY` and wait for the host to take the snapshot.
//!
//! **The tools run as child processes**, by their installed names in the tools directory
//! (`/usr/local/bin` by default), as the original ran them (`bash /usr/local/bin/…`), not
//! in-process through this crate. Three reasons: a step that panics, aborts (the release profile
//! has `panic = "abort"`) or is killed only ends its own process, and provision-build survives
//! to report its status and run the failure block; all output, the children's included, reaches
//! the serial device because provision-build reads their stdout and stderr pipes itself (a tool
//! running in-process would write to our stdout directly); and each step can be replaced, in
//! tests or by an operator, by putting another program under its name in the tools directory.
//! mount-host-fs is a child too, for the last reason: tests substitute it, and its exit status
//! decides whether there is a log file, exactly as in the original.
//!
//! **Failure handling**: every way the pipeline can fail ends in the original's failure block
//! ([`failure`]): a step exiting non-zero (its status is ours), a step killed by a signal
//! (128 + N), a step that cannot be started (127 or 126, as a shell says), a stop signal to
//! provision-build (the step is stopped; 128 + N), and a panic in provision-build itself (101,
//! through the panic hook, which works with `panic = "abort"`).
//!
//! New next to the original's lines: a line per step with its duration as it finishes
//! (`step NAME: ok in 1m02s`), and a table of all step durations before the final marker.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::console::Mirror;
use crate::failure::{FailureBlock, append_on_own_line, write_marker};
use crate::poweroff::Delayed;
use crate::runner::{Output, Runner, Status};
use crate::steps::{Action, OnFailure, Phase, STEPS, Step};
use shared::emulator::envfile;
use shared::error::{Error, Result};
use shared::knob;
use shared::log::{LOG_FILE_KNOB, ProvisionLog};

pub const TOOL: &str = "provision-build";

pub const DEFAULT_TOOLS_DIR: &str = "/usr/local/bin";
pub const DEFAULT_HOST: &str = shared::emulator::HOST_DIR;
/// The log file's name in the host folder.
pub const LOG_FILE_NAME: &str = "provision.log";
pub const DEFAULT_BUILD_ENV: &str = shared::emulator::BUILD_ENV;
pub const DEFAULT_SERIAL: &[&str] = &["/dev/ttyAMA0", "/dev/ttyS0"];
pub const DEFAULT_CONSOLES: &[&str] = &["/dev/console", "/dev/ttyAMA0", "/dev/ttyS0"];
pub const DEFAULT_SYSTEMCTL: &str = "systemctl";
pub const DEFAULT_SHUTDOWN: &str = "shutdown -P now";
pub const DEFAULT_FORCE_POWEROFF: &str = "poweroff -f";
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(2);
pub const DEFAULT_FORCE_POWEROFF_DELAY: Duration = Duration::from_secs(15);
pub const DEFAULT_QGA_SETTLE: Duration = Duration::from_secs(2);
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything provision-build can be told; the tool's flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the tools are installed.
    pub tools_dir: PathBuf,
    /// The host folder's mount point; the log file is `HOST/provision.log`.
    pub host: PathBuf,
    /// The build env file, read for capture mode after the build steps.
    pub build_env: PathBuf,
    /// Serial devices, the first present one mirrored to.
    pub serial: Vec<PathBuf>,
    /// Consoles the markers are written to.
    pub consoles: Vec<PathBuf>,
    pub systemctl: OsString,
    /// Run at the end of a successful build, and as the first stage of the failure power-off.
    pub shutdown: Vec<OsString>,
    /// The second stage of the failure power-off.
    pub force_poweroff: Vec<OsString>,
    pub shutdown_delay: Duration,
    pub force_poweroff_delay: Duration,
    /// The wait between restarting qemu-guest-agent and asking whether it is active.
    pub qga_settle: Duration,
    /// How long a step stopped by a signal gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Tests only: panic right before the step of this name. Has no effect unless built with
    /// the `test-hooks` feature.
    pub panic_before: Option<String>,
}

/// `0.4s`, `59.9s`, `1m00s`, `1h02m03s`.
pub fn format_duration(duration: Duration) -> String {
    let tenths = (duration.as_millis() + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = (duration.as_millis() + 500) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h == 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{h}h{m:02}m{s:02}s")
    }
}

/// Runs the pipeline; returns the exit status. Only a failure to set up signal handling comes
/// back as an error: from then on every failure goes through the failure block.
pub fn run(config: Config) -> Result<u8> {
    crate::failure::install_panic_hook(TOOL);
    // First, before any other thread exists: the signal mask is inherited by new threads.
    let mut runner = Runner::new(config.stop_grace)?;
    let mirror = Mirror::open(&config.serial);
    runner.set_mirror(mirror.clone());
    let block = crate::failure::arm(FailureBlock {
        log_file: OnceLock::new(),
        consoles: config.consoles.clone(),
        mirror: mirror.clone(),
        power_off: vec![
            Delayed {
                delay: config.shutdown_delay,
                argv: config.shutdown.clone(),
            },
            Delayed {
                delay: config.force_poweroff_delay,
                argv: config.force_poweroff.clone(),
            },
        ],
    });
    let mut pipeline = Pipeline {
        config,
        runner,
        mirror,
        log_file: None,
        block,
        records: Vec::new(),
        started: Instant::now(),
    };
    let status = match pipeline.build() {
        Ok(End::Done) => pipeline.finish_build(),
        Ok(End::Ready) => pipeline.ready_and_wait(),
        Err(Failed(code)) => {
            pipeline.summary();
            crate::failure::run(code)
        }
    };
    let mirror = &pipeline.mirror;
    mirror.flush(Duration::from_secs(5));
    if let (Some(serial), dropped @ 1..) = (mirror.serial_path(), mirror.dropped()) {
        let _ = writeln!(
            std::io::stderr(),
            "{TOOL}: warning: {dropped} chunks of output were not mirrored to {} (it did not \
             keep up)",
            serial.display()
        );
    }
    Ok(status)
}

/// The pipeline failed; the status to exit with. What failed has been reported.
struct Failed(u8);

enum End {
    Done,
    Ready,
}

struct Record {
    name: &'static str,
    took: Duration,
    outcome: String,
}

struct Pipeline {
    config: Config,
    runner: Runner,
    mirror: Mirror,
    log_file: Option<PathBuf>,
    block: &'static FailureBlock,
    records: Vec<Record>,
    started: Instant,
}

impl Pipeline {
    /// Every build step, then the capture steps when the build env file asks for them.
    fn build(&mut self) -> Result<End, Failed> {
        let mut capture = None;
        for step in STEPS {
            if step.phase == Phase::Capture {
                let on = match capture {
                    Some(on) => on,
                    None => *capture.insert(self.capture_mode()?),
                };
                if !on {
                    break;
                }
            }
            self.step(step)?;
        }
        Ok(if capture == Some(true) {
            End::Ready
        } else {
            End::Done
        })
    }

    /// Whether the build env file's last `STACK_EMULATOR_CAPTURE_SAVEVM` is exactly `1`.
    fn capture_mode(&mut self) -> Result<bool, Failed> {
        envfile::is_set_in(&self.config.build_env, crate::steps::CAPTURE_KEY, "1").map_err(|err| {
            self.report(&err);
            Failed(1)
        })
    }

    /// Runs `step`, logs its line, and on a fatal failure its error line and dump.
    fn step(&mut self, step: &Step) -> Result<(), Failed> {
        if let Some(signal) = self.runner.pending_signal() {
            self.say_anyway(&format!("stopped by {signal} before step {}", step.name));
            return Err(Failed(128 + signal as u8));
        }
        #[cfg(feature = "test-hooks")]
        if self.config.panic_before.as_deref() == Some(step.name) {
            panic!(
                "panicking before step {} as asked (--test-panic-before)",
                step.name
            );
        }
        if let Some(line) = step.before {
            self.say(line)?;
        }
        let start = Instant::now();
        let status = self.act(step.action);
        let took = start.elapsed();
        let stopped = matches!(status, Status::Stopped(_));
        let (fatal, note) = match step.on_failure {
            _ if status.success() => (None, ""),
            _ if stopped => (Some(status.code()), ""),
            OnFailure::NoLogFile => (None, " (continuing without a log file)"),
            OnFailure::Ignore => (None, " (ignored)"),
            OnFailure::Fatal => (Some(status.code()), ""),
            OnFailure::Abort { .. } => (Some(1), ""),
        };
        let outcome = format!("{status}{note}");
        let line = format!("step {}: {outcome} in {}", step.name, format_duration(took));
        self.records.push(Record {
            name: step.name,
            took,
            outcome,
        });
        if step.action == Action::MountHostFs && status.success() {
            // Before the step's line, which is then the log file's first.
            if let Err(failed) = self.open_log_file() {
                self.say_anyway(&line);
                return Err(failed);
            }
        }
        let Some(code) = fatal else {
            self.say(&line)?;
            if let Some(after) = step.after {
                self.say(after)?;
            }
            return Ok(());
        };
        self.say_anyway(&line);
        if let (OnFailure::Abort { error, dump }, false) = (step.on_failure, stopped) {
            self.abort(error, dump);
        }
        Err(Failed(code))
    }

    /// Carries out a step's action.
    fn act(&mut self, action: Action) -> Status {
        match action {
            Action::MountHostFs => {
                // Set empty, not inherited, until the mount decides.
                self.set_log_file_env("");
                let argv = [
                    self.config.tools_dir.join("mount-host-fs").into(),
                    "--mount-point".into(),
                    self.config.host.clone().into(),
                ];
                self.runner.run(&argv, Output::Forward)
            }
            Action::Tool(name) => {
                let argv = [self.config.tools_dir.join(name).into()];
                self.runner.run(&argv, Output::Forward)
            }
            Action::Systemctl(args) => {
                let argv = self.systemctl(args);
                self.runner.run(&argv, Output::Forward)
            }
            Action::Settle => match self.runner.sleep(self.config.qga_settle) {
                Some(signal) => Status::Stopped(signal),
                None => Status::Ended(ExitStatus::from_raw(0)),
            },
        }
    }

    /// An aborting step's error line, then its dump: `systemctl ARGS` into the log, each line
    /// with `prefix`.
    fn abort(&mut self, error: &str, dump: Option<(&str, &[&str])>) {
        self.say_anyway(error);
        if let Some((prefix, args)) = dump {
            let argv = self.systemctl(args);
            let log_file = self.log_file.clone();
            self.runner.run(
                &argv,
                Output::Log {
                    prefix,
                    log_file: log_file.as_deref(),
                },
            );
        }
    }

    fn systemctl(&self, args: &[&str]) -> Vec<OsString> {
        std::iter::once(self.config.systemctl.clone())
            .chain(args.iter().map(OsString::from))
            .collect()
    }

    fn set_log_file_env(&mut self, value: impl Into<OsString>) {
        let value = value.into();
        // Both spellings: a child's HEXCLAVE_PROVISION_LOG_FILE would win over ours.
        if let Some(new) = knob::hexclave_name(LOG_FILE_KNOB) {
            self.runner.set_env(&new, value.clone());
        }
        self.runner.set_env(LOG_FILE_KNOB, value);
    }

    /// The host folder is there: the log file is `HOST/provision.log`, truncated.
    fn open_log_file(&mut self) -> Result<(), Failed> {
        let path = self.config.host.join(LOG_FILE_NAME);
        // As the original exported it before truncating: the failure block tries it either way.
        let _ = self.block.log_file.set(path.clone());
        self.set_log_file_env(path.clone());
        if let Err(err) = std::fs::File::create(&path) {
            self.report(&Error::new(format!("truncating {}", path.display()), err));
            return Err(Failed(1));
        }
        self.log_file = Some(path);
        Ok(())
    }

    /// Logs `line` as log-provision does; a log file that cannot be written fails the pipeline,
    /// as the original's `log_provision` did under `set -e`.
    fn say(&mut self, line: &str) -> Result<(), Failed> {
        let mut log = ProvisionLog::new(self.mirror.stdout(), self.log_file.as_deref());
        log.message(line.as_bytes());
        log.finish().map_err(|err| {
            self.report(&err);
            Failed(1)
        })
    }

    /// Logs `line`, best effort: for the failure path.
    fn say_anyway(&mut self, line: &str) {
        let mut log = ProvisionLog::new(self.mirror.stdout(), self.log_file.as_deref());
        log.message(line.as_bytes());
        let _ = log.finish();
    }

    fn report(&self, err: &Error) {
        let _ = writeln!(self.mirror.stderr(), "{TOOL}: {err}");
    }

    /// The table of step durations.
    fn summary(&mut self) {
        let mut lines = vec!["step durations:".to_string()];
        for record in &self.records {
            let mut line = String::new();
            let _ = write!(
                line,
                "  {:<28}{:>9}  {}",
                record.name,
                format_duration(record.took),
                record.outcome
            );
            lines.push(line);
        }
        lines.push(format!(
            "  {:<28}{:>9}",
            "total",
            format_duration(self.started.elapsed())
        ));
        for line in lines {
            self.say_anyway(&line);
        }
    }

    /// `marker` alone on its line in the log file, and on every console.
    fn marker(&mut self, marker: &str) -> Result<(), Failed> {
        if let Some(path) = &self.log_file {
            if let Err(err) = append_on_own_line(path, format!("{marker}\n").as_bytes()) {
                self.report(&Error::new(format!("appending to {}", path.display()), err));
                return Err(Failed(1));
            }
        }
        write_marker(&self.config.consoles, &self.mirror, marker);
        Ok(())
    }

    /// The end of a build without capture: the summary, `STACK_CLOUD_INIT_DONE`, power off.
    fn finish_build(&mut self) -> u8 {
        let done = self
            .say(crate::steps::BUILD_COMPLETE)
            .map(|()| self.summary())
            .and_then(|()| match self.runner.pending_signal() {
                Some(signal) => {
                    self.say_anyway(&format!(
                        "stopped by {signal} before {}",
                        crate::steps::DONE_MARKER
                    ));
                    Err(Failed(128 + signal as u8))
                }
                None => self.marker(crate::steps::DONE_MARKER),
            });
        if let Err(Failed(code)) = done {
            return crate::failure::run(code);
        }
        let shutdown = self.config.shutdown.clone();
        match self.runner.run(&shutdown, Output::Forward) {
            status if status.success() => 0,
            // The build is done and says so; a stop signal now is the power-off under way, not
            // a failure to report after STACK_CLOUD_INIT_DONE.
            Status::Stopped(signal) => 128 + signal as u8,
            status => {
                self.report(&Error::new(
                    format!(
                        "powering off with `{}`",
                        crate::poweroff::display_command(&shutdown)
                    ),
                    &status,
                ));
                crate::failure::run(status.code())
            }
        }
    }

    /// The end of a capture build: `STACK_SERVICES_READY`, then wait for the host, with the
    /// failure block disarmed. A stop signal ends the wait with 128 + its number.
    fn ready_and_wait(&mut self) -> u8 {
        let ready = self
            .say(crate::steps::SERVICES_READY)
            .map(|()| self.summary())
            .and_then(|()| self.marker(crate::steps::READY_MARKER));
        if let Err(Failed(code)) = ready {
            return crate::failure::run(code);
        }
        nix::unistd::sync();
        crate::failure::disarm();
        self.mirror.flush(Duration::from_secs(5));
        let signal: Signal = self.runner.wait_for_signal();
        128 + signal as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        let ms = Duration::from_millis;
        assert_eq!(format_duration(ms(0)), "0.0s");
        assert_eq!(format_duration(ms(49)), "0.0s");
        assert_eq!(format_duration(ms(50)), "0.1s");
        assert_eq!(format_duration(ms(59_949)), "59.9s");
        assert_eq!(format_duration(ms(59_950)), "1m00s");
        assert_eq!(format_duration(ms(62_400)), "1m02s");
        assert_eq!(format_duration(ms(3_599_499)), "59m59s");
        assert_eq!(format_duration(ms(3_723_000)), "1h02m03s");
    }
}

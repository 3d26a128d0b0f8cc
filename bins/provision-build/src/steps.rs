//! The steps of the build pipeline: one table, in the original's order.
//!
//! Each row says what runs, the original's log line before it (and after it, where the original
//! logged success), and what its failure means. [`STEPS`] is the only place the order lives: the
//! runner walks it, `--help` prints it, and the tests check the log against it.

/// What a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `TOOLS/mount-host-fs --mount-point HOST`.
    MountHostFs,
    /// `TOOLS/<name>`, without arguments, as the original ran it.
    Tool(&'static str),
    /// `SYSTEMCTL <args>`.
    Systemctl(&'static [&'static str]),
    /// The original's `sleep 2` before asking whether qemu-guest-agent is active (`--qga-settle`).
    Settle,
}

/// What a failed step means for the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The pipeline continues without a log file (`STACK_PROVISION_LOG_FILE` empty).
    NoLogFile,
    /// `|| true`: the failure is logged and the pipeline continues.
    Ignore,
    /// The pipeline fails with the step's exit status (128 + N for a step killed by signal N).
    Fatal,
    /// The original's `if ! …; then log_provision "ERROR: …"; exit 1`: the pipeline logs
    /// `error`, logs the output of `systemctl <dump>` with prefix `dump_prefix` when given, and
    /// fails with status 1.
    Abort {
        error: &'static str,
        dump: Option<(&'static str, &'static [&'static str])>,
    },
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every build.
    Build,
    /// Only in capture mode (`STACK_EMULATOR_CAPTURE_SAVEVM=1` in the build env file), after
    /// every build step.
    Capture,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The name in the duration lines and the summary, and for `--test-panic-before`.
    pub name: &'static str,
    pub phase: Phase,
    /// The original's log line before the step runs.
    pub before: Option<&'static str>,
    pub action: Action,
    pub on_failure: OnFailure,
    /// The original's log line after the step succeeded.
    pub after: Option<&'static str>,
}

const fn step(
    name: &'static str,
    phase: Phase,
    before: Option<&'static str>,
    action: Action,
    on_failure: OnFailure,
) -> Step {
    Step {
        name,
        phase,
        before,
        action,
        on_failure,
        after: None,
    }
}

use Action::*;
use OnFailure::*;
use Phase::*;

/// The pipeline, in the original's order.
pub const STEPS: &[Step] = &[
    step("mount-host-fs", Build, None, MountHostFs, NoLogFile),
    step(
        "disable ssh",
        Build,
        Some("runcmd starting"),
        Systemctl(&["disable", "--now", "ssh"]),
        Ignore,
    ),
    step("mask ssh", Build, None, Systemctl(&["mask", "ssh"]), Ignore),
    step(
        "enable qemu-guest-agent",
        Build,
        None,
        Systemctl(&["enable", "qemu-guest-agent"]),
        Ignore,
    ),
    step(
        "start qemu-guest-agent",
        Build,
        None,
        Systemctl(&["start", "qemu-guest-agent"]),
        Ignore,
    ),
    step(
        "install-emulator-containers",
        Build,
        Some("installing emulator containers"),
        Tool("install-emulator-containers"),
        Fatal,
    ),
    step(
        "daemon-reload",
        Build,
        None,
        Systemctl(&["daemon-reload"]),
        Fatal,
    ),
    step(
        "enable stack.service",
        Build,
        None,
        Systemctl(&["enable", "stack.service"]),
        Fatal,
    ),
    step(
        "run-build-migrations",
        Build,
        Some("starting build migrations"),
        Tool("run-build-migrations"),
        Fatal,
    ),
    step(
        "slim-docker-image",
        Build,
        Some("starting slim-docker-image"),
        Tool("slim-docker-image"),
        Fatal,
    ),
    step(
        "start stack.service",
        Capture,
        Some("capture mode: starting stack.service"),
        Systemctl(&["start", "stack.service"]),
        Ignore,
    ),
    step(
        "wait-for-stack-ready",
        Capture,
        Some("waiting for backend + dashboard to be ready"),
        Tool("wait-for-stack-ready"),
        Abort {
            error: "ERROR: stack services did not become ready",
            dump: None,
        },
    ),
    step(
        "restart qemu-guest-agent",
        Capture,
        Some("ensuring qemu-guest-agent is up"),
        Systemctl(&["restart", "qemu-guest-agent"]),
        Ignore,
    ),
    step("settle", Capture, None, Settle, Fatal),
    Step {
        after: Some("qemu-guest-agent active"),
        ..step(
            "check qemu-guest-agent",
            Capture,
            None,
            Systemctl(&["is-active", "--quiet", "qemu-guest-agent"]),
            Abort {
                error: "ERROR: qemu-guest-agent failed to start",
                dump: Some(("qga", &["status", "qemu-guest-agent", "--no-pager", "-l"])),
            },
        )
    },
];

/// The original's first log line of the end of a build without capture.
pub const BUILD_COMPLETE: &str = "build pipeline complete";
/// The original's log line before `STACK_SERVICES_READY`.
pub const SERVICES_READY: &str = "services ready; signalling STACK_SERVICES_READY";

/// The markers the host greps for, each alone on its line.
pub const DONE_MARKER: &str = "STACK_CLOUD_INIT_DONE";
pub const FAILED_MARKER: &str = "STACK_CLOUD_INIT_FAILED";
pub const READY_MARKER: &str = "STACK_SERVICES_READY";

/// The build env file's switch for capture mode.
pub const CAPTURE_KEY: &str = "STACK_EMULATOR_CAPTURE_SAVEVM";

/// The table as `--help` prints it.
pub fn help() -> String {
    let mut out = String::from("Steps, in order (what runs; what a failure means):\n");
    let mut rows = Vec::new();
    let mut phase = Build;
    for step in STEPS {
        if step.phase != phase {
            phase = step.phase;
            out.push_str(&shared::cli::help::rows(&rows));
            rows.clear();
            out.push_str(&format!(
                "Capture mode only ({CAPTURE_KEY}=1 in the build env file):\n"
            ));
        }
        let what = match step.action {
            MountHostFs => "TOOLS/mount-host-fs --mount-point HOST".to_string(),
            Tool(name) => format!("TOOLS/{name}"),
            Systemctl(args) => format!("systemctl {}", args.join(" ")),
            Settle => "wait --qga-settle".to_string(),
        };
        let failure = match step.on_failure {
            NoLogFile => "continue without a log file".to_string(),
            Ignore => "ignored".to_string(),
            Fatal => "fail with its status".to_string(),
            Abort { dump, .. } => match dump {
                Some((prefix, args)) => format!(
                    "log the ERROR line and `systemctl {}` (as `{prefix}: …`), fail with 1",
                    args.join(" ")
                ),
                None => "log the ERROR line, fail with 1".to_string(),
            },
        };
        rows.push((step.name.to_string(), format!("{what}; {failure}")));
    }
    out.push_str(&shared::cli::help::rows(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_capture_steps_come_last() {
        let mut names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STEPS.len());
        let first_capture = STEPS.iter().position(|s| s.phase == Capture).unwrap();
        assert!(STEPS[first_capture..].iter().all(|s| s.phase == Capture));
    }

    /// The original's log lines, in its order.
    #[test]
    fn log_lines_are_the_originals_in_order() {
        let lines: Vec<&str> = STEPS
            .iter()
            .flat_map(|s| {
                let abort = match s.on_failure {
                    Abort { error, .. } => Some(error),
                    _ => None,
                };
                [s.before, abort, s.after]
            })
            .flatten()
            .collect();
        assert_eq!(
            lines,
            [
                "runcmd starting",
                "installing emulator containers",
                "starting build migrations",
                "starting slim-docker-image",
                "capture mode: starting stack.service",
                "waiting for backend + dashboard to be ready",
                "ERROR: stack services did not become ready",
                "ensuring qemu-guest-agent is up",
                "ERROR: qemu-guest-agent failed to start",
                "qemu-guest-agent active",
            ]
        );
    }

    #[test]
    fn help_lists_every_step() {
        let help = help();
        for step in STEPS {
            assert!(help.contains(step.name), "{}", step.name);
        }
        assert!(help.contains("systemctl disable --now ssh; ignored"));
    }
}

//! Rebuilding docker's storage around the final image, as a state machine that survives a crash.
//!
//! After the flatten, the engine's data root still holds every layer of the original and the
//! slim image. The original threw it all away and reloaded only the final image:
//!
//!   docker save → mv volumes away → stop docker and containerd → rm -rf both data roots → start
//!   → docker load → tag → rmi :final → rm the tar → stop docker → put the volumes back → start
//!
//! as a straight script: a crash (or a failed `docker load`) anywhere between moving the volumes
//! away and moving them back lost the databases the migrations had just filled, and a re-run
//! could not continue. Here every step is recorded in a state file when it is done, and a re-run
//! of the tool reads the state file and resumes after the last recorded step. Each step is
//! written so that running it again after a crash in its middle is safe (see [`Step`]):
//!
//! - the tar is saved as `<tar>.partial` and renamed when complete, so a tar that exists is whole;
//! - volumes move by `rename(2)` (one atomic operation, same filesystem, checked before
//!   anything starts); "already moved" and "already back" are recognised by which directory
//!   exists;
//! - the data roots are wiped only while both the tar and the volumes backup exist;
//! - the tar is removed only after the reloaded image is verified (its ID is the ID recorded
//!   before the save); the volumes backup ceases to exist only by being renamed back into
//!   place, and the rebuild counts as done only once the engine lists every volume it had
//!   before;
//! - on resume, the engine is first put in the state the next step expects (stopped or
//!   answering), in case the machine rebooted in between.
//!
//! One change of order from the original: the engine is stopped *before* the volumes are moved,
//! so that its volume database is closed when it moves. The zero-fill that follows is the last
//! step of the same machine, so that a crash during it resumes with the fill rather than with a
//! rebuild of an image that no longer exists.
//!
//! The state file (`/var/tmp/slim-docker-image.state` by default; `/var/tmp` survives reboots)
//! holds `key=value` lines: `format=1`, `done=<last step done, or none>`, the image names and ID,
//! every path the steps touch (a re-run with other paths is refused rather than guessed at),
//! and one `volume=<name>` line per volume to verify. It is written atomically, mode 0600.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, umount2};

use crate::zero_fill;
use shared::docker::Docker;
use shared::duration::seconds;
use shared::error::{Context, Error, Result};
use shared::log::ProvisionLog;
use shared::log::progress::{Io, io_bytes, mib};
use shared::os::atomic;
use shared::os::interrupt::Interrupt;
use shared::os::mounts;
use shared::os::signal::exit_status;
use shared::os::small_file;
use shared::wait::{self, Event, Options, Outcome, Probe, Target};

/// The tag of the lines this module adds to the original's.
const TAG: &str = "slim-docker-image";

pub const DEFAULT_DOCKER_ROOT: &str = "/var/lib/docker";
pub const DEFAULT_CONTAINERD_ROOT: &str = "/var/lib/containerd";
pub const DEFAULT_BACKUP: &str = "/var/tmp/volumes-backup";
pub const DEFAULT_TAR: &str = "/var/tmp/final-image.tar";
pub const DEFAULT_STATE: &str = "/var/tmp/slim-docker-image.state";
pub const DEFAULT_STOP_ALL: &str = "systemctl stop docker containerd";
pub const DEFAULT_START_ALL: &str = "systemctl start docker containerd";
pub const DEFAULT_STOP_DOCKER: &str = "systemctl stop docker";
pub const DEFAULT_START_DOCKER: &str = "systemctl start docker";
/// How long a started engine may take to answer `docker info` (the original waited forever).
pub const DEFAULT_ENGINE_TIMEOUT: Duration = Duration::from_secs(300);
/// The exit status of an injected crash (`STACK_SLIM_CRASH_AFTER`, for tests).
pub const CRASH_EXIT: u8 = 99;

const FORMAT: &str = "1";

/// One step of the rebuild, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `docker save FINAL` to `<tar>.partial`, fsync, rename to the tar. Again: saves again.
    Save,
    /// The stop-all command (docker and containerd). Again: stopping a stopped engine is fine.
    StopEngine,
    /// Rename the volumes directory to the backup. Again: a backup that exists is the move done.
    MoveVolumes,
    /// Remove both data roots (mounts below them are detached first). Only while the tar and the
    /// backup exist. Again: removes what is left.
    Wipe,
    /// The start-all command, then wait for `docker info`.
    StartEngine,
    /// `docker load -i TAR`. Again: loads again.
    Load,
    /// `docker tag FINAL TARGET`.
    Tag,
    /// Verify TARGET is the recorded image, then `docker rmi FINAL` (a missing one is fine).
    UntagFinal,
    /// Verify TARGET again, then remove the tar.
    RemoveTar,
    /// The stop-docker command.
    StopDocker,
    /// Replace the new, empty volumes directory by the backup (rename). Again: a volumes
    /// directory without a backup is the move done.
    RestoreVolumes,
    /// The start-docker command, then wait for `docker info`.
    StartDocker,
    /// Verify the image and that every recorded volume is listed.
    Verify,
    /// Zero-fill the free space and trim; the state file is removed after it.
    ZeroFill,
}

/// What a step needs of the engine when the rebuild resumes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Anything,
    Running,
    AllStopped,
    DockerStopped,
}

impl Step {
    pub const ALL: [Step; 14] = [
        Step::Save,
        Step::StopEngine,
        Step::MoveVolumes,
        Step::Wipe,
        Step::StartEngine,
        Step::Load,
        Step::Tag,
        Step::UntagFinal,
        Step::RemoveTar,
        Step::StopDocker,
        Step::RestoreVolumes,
        Step::StartDocker,
        Step::Verify,
        Step::ZeroFill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Save => "save",
            Step::StopEngine => "stop-engine",
            Step::MoveVolumes => "move-volumes",
            Step::Wipe => "wipe",
            Step::StartEngine => "start-engine",
            Step::Load => "load",
            Step::Tag => "tag",
            Step::UntagFinal => "untag-final",
            Step::RemoveTar => "remove-tar",
            Step::StopDocker => "stop-docker",
            Step::RestoreVolumes => "restore-volumes",
            Step::StartDocker => "start-docker",
            Step::Verify => "verify",
            Step::ZeroFill => "zero-fill",
        }
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Result<Step, String> {
        Step::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Step::ALL.iter().map(|s| s.name()).collect();
                format!("unknown step '{name}' (one of {})", names.join(", "))
            })
    }

    fn index(self) -> usize {
        Step::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }

    fn needs(self) -> Needs {
        match self {
            Step::Save
            | Step::Load
            | Step::Tag
            | Step::UntagFinal
            | Step::RemoveTar
            | Step::Verify => Needs::Running,
            Step::MoveVolumes | Step::Wipe => Needs::AllStopped,
            Step::RestoreVolumes => Needs::DockerStopped,
            Step::StopEngine
            | Step::StartEngine
            | Step::StopDocker
            | Step::StartDocker
            | Step::ZeroFill => Needs::Anything,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every path the rebuild touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub docker_root: PathBuf,
    pub containerd_root: PathBuf,
    pub volumes: PathBuf,
    pub backup: PathBuf,
    pub tar: PathBuf,
    pub state: PathBuf,
}

/// The commands that stop and start the engine (argv each).
#[derive(Clone, Debug)]
pub struct EngineCommands {
    pub stop_all: Vec<OsString>,
    pub start_all: Vec<OsString>,
    pub stop_docker: Vec<OsString>,
    pub start_docker: Vec<OsString>,
}

/// Everything the rebuild needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub docker: Docker,
    /// The flattened image (`stack-local-emulator:final`).
    pub final_image: String,
    /// The name it ends up under (`stack-local-emulator`).
    pub target_image: String,
    pub paths: Paths,
    pub engine: EngineCommands,
    pub engine_timeout: Duration,
    pub progress_every: Duration,
    pub zero_fill: zero_fill::Config,
    /// Exit with [`CRASH_EXIT`] right after this step's action, before it is recorded. Has no
    /// effect unless built with the `test-hooks` feature (tests only).
    pub crash_after: Option<Step>,
}

/// What the state file records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub done: Option<Step>,
    pub final_image: String,
    pub target_image: String,
    pub image_id: String,
    pub docker_root: PathBuf,
    pub containerd_root: PathBuf,
    pub volumes_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub image_tar: PathBuf,
    pub volumes: Vec<String>,
}

impl State {
    fn path_fields(&self) -> [(&'static str, &Path); 5] {
        [
            ("docker-root", &self.docker_root),
            ("containerd-root", &self.containerd_root),
            ("volumes-dir", &self.volumes_dir),
            ("backup-dir", &self.backup_dir),
            ("image-tar", &self.image_tar),
        ]
    }

    /// The file's text.
    pub fn render(&self) -> Result<String> {
        let mut out = String::from(
            "# slim-docker-image: docker storage rebuild in progress.\n\
             # Run slim-docker-image again (same options) to finish it; do not edit.\n",
        );
        let mut line = |key: &str, value: &str| -> Result<()> {
            if value.contains('\n') || value.is_empty() {
                return Err(Error::new(
                    format!("recording {key} in the state file"),
                    "the value is empty or holds a newline",
                ));
            }
            out.push_str(&format!("{key}={value}\n"));
            Ok(())
        };
        line("format", FORMAT)?;
        line("done", self.done.map_or("none", Step::name))?;
        line("final-image", &self.final_image)?;
        line("target-image", &self.target_image)?;
        line("image-id", &self.image_id)?;
        for (key, path) in self.path_fields() {
            let text = path.to_str().ok_or_else(|| {
                Error::new(
                    format!("recording {key} in the state file"),
                    format!("{} is not valid UTF-8", path.display()),
                )
            })?;
            line(key, text)?;
        }
        for volume in &self.volumes {
            line("volume", volume)?;
        }
        Ok(out)
    }

    /// Parses the file's text; `name` is what errors call it.
    pub fn parse(name: &str, text: &str) -> Result<State> {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        let mut volumes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: &str| Error::new(format!("{name}:{}", index + 1), why.to_string());
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| at("expected key=value"))?;
            match key {
                "volume" => volumes.push(value.to_string()),
                "format" | "done" | "final-image" | "target-image" | "image-id" | "docker-root"
                | "containerd-root" | "volumes-dir" | "backup-dir" | "image-tar" => {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(at(&format!("{key} given twice")));
                    }
                    fields.push((key, value));
                }
                _ => return Err(at(&format!("unknown key '{key}'"))),
            }
        }
        let get = |key: &str| -> Result<&str> {
            fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| Error::new(name.to_string(), format!("missing {key}=")))
        };
        if get("format")? != FORMAT {
            return Err(Error::new(
                name.to_string(),
                format!("format {} is not {FORMAT}", get("format")?),
            ));
        }
        let done = match get("done")? {
            "none" => None,
            step => Some(Step::parse(step).map_err(|why| Error::new(name.to_string(), why))?),
        };
        Ok(State {
            done,
            final_image: get("final-image")?.to_string(),
            target_image: get("target-image")?.to_string(),
            image_id: get("image-id")?.to_string(),
            docker_root: PathBuf::from(get("docker-root")?),
            containerd_root: PathBuf::from(get("containerd-root")?),
            volumes_dir: PathBuf::from(get("volumes-dir")?),
            backup_dir: PathBuf::from(get("backup-dir")?),
            image_tar: PathBuf::from(get("image-tar")?),
            volumes,
        })
    }

    /// The state of a rebuild in progress, if the file exists.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let Some(bytes) = small_file::read_optional(path, small_file::ENV_FILE_CAP)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::new(format!("reading {}", path.display()), "not UTF-8 text"))?;
        State::parse(&path.display().to_string(), &text).map(Some)
    }

    fn save(&self, path: &Path) -> Result<()> {
        atomic::write(path, self.render()?.as_bytes(), 0o600)
    }

    /// Refuses a resume with options that name other images or paths than the recorded ones.
    fn check_matches(&self, config: &Config) -> Result<()> {
        let paths = &config.paths;
        let now: [(&str, &Path); 5] = [
            ("docker-root", &paths.docker_root),
            ("containerd-root", &paths.containerd_root),
            ("volumes-dir", &paths.volumes),
            ("backup-dir", &paths.backup),
            ("image-tar", &paths.tar),
        ];
        let mut differences = Vec::new();
        for ((key, recorded), (_, given)) in self.path_fields().into_iter().zip(now) {
            if recorded != given {
                differences.push(format!(
                    "--{key} is {} but the rebuild started with {}",
                    given.display(),
                    recorded.display()
                ));
            }
        }
        for (key, recorded, given) in [
            ("final-image", &self.final_image, &config.final_image),
            ("image", &self.target_image, &config.target_image),
        ] {
            if recorded != given {
                differences.push(format!(
                    "--{key} is {given} but the rebuild started with {recorded}"
                ));
            }
        }
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            format!(
                "resuming the storage rebuild recorded in {}",
                paths.state.display()
            ),
            format!("{}; re-run with the same options", differences.join("; ")),
        ))
    }
}

/// A line of ours.
fn note<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(format!("{TAG}: {text}").as_bytes());
}

/// The rebuild in progress: its configuration, state, log and signals.
struct Rebuild<'a, W: Write> {
    config: &'a Config,
    state: State,
    log: &'a mut ProvisionLog<W>,
    interrupt: &'a Interrupt,
}

/// Starts a rebuild: checks the paths, records the image ID and the volumes, then runs every
/// step. Returns the exit status (0, or 128+N after a signal).
pub fn start<W: Write>(
    config: &Config,
    log: &mut ProvisionLog<W>,
    interrupt: &Interrupt,
) -> Result<u8> {
    preflight(&config.paths)?;
    let docker = &config.docker;
    let image_id = docker.image_id(&config.final_image)?.ok_or_else(|| {
        Error::new(
            format!("saving {}", config.final_image),
            "the engine has no such image",
        )
    })?;
    let state = State {
        done: None,
        final_image: config.final_image.clone(),
        target_image: config.target_image.clone(),
        image_id,
        docker_root: config.paths.docker_root.clone(),
        containerd_root: config.paths.containerd_root.clone(),
        volumes_dir: config.paths.volumes.clone(),
        backup_dir: config.paths.backup.clone(),
        image_tar: config.paths.tar.clone(),
        volumes: docker.volume_names()?,
    };
    state.save(&config.paths.state)?;
    Rebuild {
        config,
        state,
        log,
        interrupt,
    }
    .run()
}

/// Resumes the rebuild recorded in `state`.
pub fn resume<W: Write>(
    config: &Config,
    state: State,
    log: &mut ProvisionLog<W>,
    interrupt: &Interrupt,
) -> Result<u8> {
    state.check_matches(config)?;
    let after = state.done.map_or("the start", Step::name);
    note(
        log,
        &format!(
            "resuming the storage rebuild after {after} (state file {})",
            config.paths.state.display()
        ),
    );
    let mut rebuild = Rebuild {
        config,
        state,
        log,
        interrupt,
    };
    if let Some(next) = rebuild.next_step() {
        rebuild.prepare(next.needs())?;
    }
    rebuild.run()
}

/// The checks before anything is touched: absolute paths, nothing the wipe would remove, a
/// backup that does not exist yet on the same filesystem as the volumes. Creates the parent
/// directories of the backup, the tar and the state file.
pub fn preflight(paths: &Paths) -> Result<()> {
    let named = [
        ("--docker-root", &paths.docker_root),
        ("--containerd-root", &paths.containerd_root),
        ("--volumes-dir", &paths.volumes),
        ("--backup-dir", &paths.backup),
        ("--image-tar", &paths.tar),
        ("--state-file", &paths.state),
    ];
    for (flag, path) in named {
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(Error::usage(
                format!("{flag} {}", path.display()),
                "must be an absolute path without '..'",
            ));
        }
        if path.parent().is_none() {
            return Err(Error::usage(
                format!("{flag} /"),
                "refusing the root directory",
            ));
        }
    }
    for (flag, path) in [
        ("--backup-dir", &paths.backup),
        ("--image-tar", &paths.tar),
        ("--state-file", &paths.state),
    ] {
        for (root_flag, root) in [
            ("--docker-root", &paths.docker_root),
            ("--containerd-root", &paths.containerd_root),
        ] {
            if path.starts_with(root) {
                return Err(Error::usage(
                    format!("{flag} {}", path.display()),
                    format!(
                        "is inside {root_flag} {}, which the rebuild wipes",
                        root.display()
                    ),
                ));
            }
        }
    }
    if paths.backup.symlink_metadata().is_ok() {
        return Err(Error::new(
            format!(
                "starting the storage rebuild: {} exists",
                paths.backup.display()
            ),
            format!(
                "no rebuild is recorded in {}, so it is not ours; move it away and run again",
                paths.state.display()
            ),
        ));
    }
    for (flag, path) in [
        ("--backup-dir", &paths.backup),
        ("--image-tar", &paths.tar),
        ("--state-file", &paths.state),
    ] {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .context(|| format!("creating directory {}", parent.display()))?;
            // The same check with symlinks resolved.
            let real = std::fs::canonicalize(parent)
                .context(|| format!("resolving {}", parent.display()))?;
            for root in [&paths.docker_root, &paths.containerd_root] {
                if let Ok(real_root) = std::fs::canonicalize(root) {
                    if real.starts_with(&real_root) {
                        return Err(Error::usage(
                            format!("{flag} {}", path.display()),
                            format!(
                                "resolves to {}, inside {}, which the rebuild wipes",
                                real.display(),
                                real_root.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let (Ok(volumes), Some(parent)) = (paths.volumes.metadata(), paths.backup.parent()) {
        let parent_dev = parent
            .metadata()
            .context(|| format!("checking {}", parent.display()))?
            .dev();
        if volumes.dev() != parent_dev {
            return Err(Error::usage(
                format!("--backup-dir {}", paths.backup.display()),
                format!(
                    "is not on the filesystem of {}: the volumes move by rename, which cannot \
                     cross filesystems",
                    paths.volumes.display()
                ),
            ));
        }
    }
    Ok(())
}

impl<W: Write> Rebuild<'_, W> {
    fn next_step(&self) -> Option<Step> {
        let from = self.state.done.map_or(0, |s| s.index() + 1);
        Step::ALL.get(from).copied()
    }

    fn run(mut self) -> Result<u8> {
        while let Some(step) = self.next_step() {
            if let Some(sig) = self.interrupt.acknowledge_if_signalled() {
                note(
                    self.log,
                    &format!(
                        "interrupted by {} before step {step}; run slim-docker-image again to \
                         finish the storage rebuild",
                        sig.as_str()
                    ),
                );
                return Ok(exit_status(sig));
            }
            note(
                self.log,
                &format!(
                    "storage rebuild step {}/{}: {step}",
                    step.index() + 1,
                    Step::ALL.len()
                ),
            );
            if let Some(code) = self
                .perform(step)
                .map_err(|err| self.step_error(step, err))?
            {
                return Ok(code);
            }
            #[cfg(feature = "test-hooks")]
            if self.config.crash_after == Some(step) {
                return Err(Error::new(
                    format!("crash injected after step {step}"),
                    "STACK_SLIM_CRASH_AFTER",
                )
                .with_code(CRASH_EXIT));
            }
            self.state.done = Some(step);
            if step == Step::ZeroFill {
                std::fs::remove_file(&self.config.paths.state)
                    .context(|| format!("removing {}", self.config.paths.state.display()))?;
            } else {
                self.state.save(&self.config.paths.state)?;
            }
        }
        Ok(0)
    }

    fn step_error(&self, step: Step, err: Error) -> Error {
        if err.code() != shared::error::FAILURE {
            return err;
        }
        Error::new(
            format!("storage rebuild step {step}: {}", err.what()),
            format!(
                "{}; the progress is kept in {}: fix the cause and run slim-docker-image again \
                 to resume",
                err.why(),
                self.config.paths.state.display()
            ),
        )
    }

    /// Runs one step; `Some(status)` ends the rebuild early (a signal during the zero-fill).
    fn perform(&mut self, step: Step) -> Result<Option<u8>> {
        let paths = &self.config.paths;
        match step {
            Step::Save => {
                let dir = paths.tar.parent().unwrap_or(Path::new("/"));
                self.log
                    .message(format!("Saving final image to {}...", dir.display()).as_bytes());
                self.save_tar()?;
            }
            Step::StopEngine => {
                self.log.message(b"Nuking Docker storage and reloading...");
                self.command(&self.config.engine.stop_all)?;
            }
            Step::MoveVolumes => self.move_volumes()?,
            Step::Wipe => {
                for (what, path) in [("image tar", &paths.tar), ("volumes backup", &paths.backup)] {
                    if path.symlink_metadata().is_err() {
                        return Err(Error::new(
                            format!(
                                "refusing to wipe the engine's storage: the {what} {} is missing",
                                path.display()
                            ),
                            "nothing was removed",
                        ));
                    }
                }
                for root in [&paths.docker_root, &paths.containerd_root] {
                    wipe(root, self.log)?;
                }
            }
            Step::StartEngine => {
                self.command(&self.config.engine.start_all)?;
                self.wait_for_engine()?;
            }
            Step::Load => self.load_tar()?,
            Step::Tag => {
                self.config
                    .docker
                    .command(["tag", &self.config.final_image, &self.config.target_image])
                    .read()?;
            }
            Step::UntagFinal => {
                self.verify_image()?;
                if self.config.final_image != self.config.target_image {
                    // The original's `docker rmi … || true`: only a tag goes.
                    let _ = self
                        .config
                        .docker
                        .command(["rmi", &self.config.final_image])
                        .read();
                }
            }
            Step::RemoveTar => {
                self.verify_image()?;
                remove_file_if_exists(&paths.tar)?;
            }
            Step::StopDocker => self.command(&self.config.engine.stop_docker)?,
            Step::RestoreVolumes => self.restore_volumes()?,
            Step::StartDocker => {
                self.command(&self.config.engine.start_docker)?;
                self.wait_for_engine()?;
            }
            Step::Verify => {
                self.verify_image()?;
                let listed = self.config.docker.volume_names()?;
                let missing: Vec<&str> = self
                    .state
                    .volumes
                    .iter()
                    .filter(|v| !listed.contains(v))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    return Err(Error::new(
                        "verifying the volumes after the rebuild".to_string(),
                        format!(
                            "the engine does not list {} (their data should be in {})",
                            missing.join(", "),
                            paths.volumes.display()
                        ),
                    ));
                }
                self.log.message(b"Docker storage rebuilt.");
            }
            Step::ZeroFill => {
                self.log
                    .message(b"Zeroing free space for qcow2 compression...");
                let interrupt = self.interrupt;
                let stopped = zero_fill::run(&self.config.zero_fill, TAG, self.log, || {
                    interrupt.signal().is_some()
                })?;
                if stopped {
                    if let Some(sig) = interrupt.acknowledge() {
                        note(
                            self.log,
                            &format!(
                                "interrupted by {} during the zero-fill; run slim-docker-image \
                                 again to finish it",
                                sig.as_str()
                            ),
                        );
                        return Ok(Some(exit_status(sig)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Puts the engine in the state `needs` says, before a resumed step.
    fn prepare(&mut self, needs: Needs) -> Result<()> {
        let engine = &self.config.engine;
        match needs {
            Needs::Anything => Ok(()),
            Needs::AllStopped => self.command(&engine.stop_all),
            Needs::DockerStopped => self.command(&engine.stop_docker),
            Needs::Running => {
                if self.config.docker.answers() {
                    return Ok(());
                }
                self.command(&engine.start_all)?;
                self.wait_for_engine()
            }
        }
    }

    /// Runs an engine stop or start command (argv, no shell).
    fn command(&mut self, argv: &[OsString]) -> Result<()> {
        let Some((program, args)) = argv.split_first() else {
            return Ok(());
        };
        let shown: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        note(self.log, &format!("running {}", shown.join(" ")));
        // The docker wrapper runs any program by argv and reports it as typed.
        Docker::new(program).command(args).read().map(drop)
    }

    /// Waits for `docker info` to answer, at most the engine timeout.
    fn wait_for_engine(&mut self) -> Result<()> {
        let docker = &self.config.docker;
        let probe = Probe::Command(vec![docker.program().to_os_string(), "info".into()]);
        let targets = [Target::new("docker", probe)];
        let options = Options::new(self.config.engine_timeout, Duration::from_secs(10));
        let log = &mut *self.log;
        let report = wait::run(&targets, &options, |event| {
            if let Event::Heartbeat { elapsed, .. } = event {
                note(
                    log,
                    &format!(
                        "still waiting for the engine to answer `docker info` ({}s)",
                        elapsed.as_secs()
                    ),
                );
            }
        });
        match report.outcome {
            Outcome::Ready => Ok(()),
            Outcome::TimedOut => Err(Error::new(
                format!(
                    "waiting for the docker engine: no answer to `docker info` within {}",
                    seconds(self.config.engine_timeout)
                ),
                report
                    .targets
                    .first()
                    .map(|t| t.last_answer())
                    .unwrap_or_default(),
            )),
            Outcome::Interrupted(sig) => Err(Error::new(
                format!(
                    "interrupted by {} while waiting for the docker engine",
                    sig.as_str()
                ),
                "run slim-docker-image again to finish the storage rebuild",
            )
            .with_code(exit_status(sig))),
        }
    }

    fn save_tar(&mut self) -> Result<()> {
        let tar = &self.config.paths.tar;
        let partial = partial_path(tar);
        remove_file_if_exists(&partial)?;
        let log = &mut *self.log;
        self.config
            .docker
            .command(["save", self.config.final_image.as_str(), "-o"])
            .arg(&partial)
            .read_with_progress(self.config.progress_every, |elapsed, pid| {
                let bytes = io_bytes(pid, Io::Written).map(|b| format!("{} written, ", mib(b)));
                note(
                    log,
                    &format!("save: {}{}s", bytes.unwrap_or_default(), elapsed.as_secs()),
                );
            })?;
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .context(|| format!("flushing {}", partial.display()))?;
        std::fs::rename(&partial, tar)
            .context(|| format!("renaming {} to {}", partial.display(), tar.display()))?;
        sync_dir(tar);
        let size = std::fs::metadata(tar).map(|m| m.len()).unwrap_or(0);
        note(
            self.log,
            &format!("saved {} ({})", tar.display(), mib(size)),
        );
        Ok(())
    }

    fn load_tar(&mut self) -> Result<()> {
        let tar = &self.config.paths.tar;
        let total = std::fs::metadata(tar)
            .context(|| format!("checking {}", tar.display()))?
            .len();
        let log = &mut *self.log;
        self.config
            .docker
            .command(["load", "-i"])
            .arg(tar)
            .read_with_progress(self.config.progress_every, |elapsed, pid| {
                let bytes = io_bytes(pid, Io::Read)
                    .map(|b| format!("{} of {} read, ", mib(b.min(total)), mib(total)));
                note(
                    log,
                    &format!("load: {}{}s", bytes.unwrap_or_default(), elapsed.as_secs()),
                );
            })?;
        Ok(())
    }

    /// The target image exists and is the image that was saved.
    fn verify_image(&self) -> Result<()> {
        let target = &self.config.target_image;
        match self.config.docker.image_id(target)? {
            Some(id) if id == self.state.image_id => Ok(()),
            Some(id) => Err(Error::new(
                format!("verifying {target}"),
                format!("its ID is {id}, not the saved {}", self.state.image_id),
            )),
            None => Err(Error::new(
                format!("verifying {target}"),
                "the engine has no such image",
            )),
        }
    }

    fn move_volumes(&mut self) -> Result<()> {
        let (volumes, backup) = (&self.config.paths.volumes, &self.config.paths.backup);
        if backup.symlink_metadata().is_ok() {
            // Only this step creates the backup, and the preflight made sure none existed.
            note(
                self.log,
                &format!("{} already holds the volumes", backup.display()),
            );
            return Ok(());
        }
        if volumes.symlink_metadata().is_err() {
            note(
                self.log,
                &format!("{} does not exist: no volumes to keep", volumes.display()),
            );
            std::fs::create_dir(backup).context(|| format!("creating {}", backup.display()))?;
        } else {
            std::fs::rename(volumes, backup)
                .context(|| format!("moving {} to {}", volumes.display(), backup.display()))?;
        }
        sync_dir(backup);
        sync_dir(volumes);
        Ok(())
    }

    fn restore_volumes(&mut self) -> Result<()> {
        let (volumes, backup) = (&self.config.paths.volumes, &self.config.paths.backup);
        if backup.symlink_metadata().is_err() {
            if volumes.is_dir() {
                note(self.log, &format!("{} is already back", volumes.display()));
                return Ok(());
            }
            return Err(Error::new(
                format!("restoring the volumes to {}", volumes.display()),
                format!("neither it nor the backup {} exists", backup.display()),
            ));
        }
        if volumes.symlink_metadata().is_ok() {
            // The new engine's empty volumes directory.
            std::fs::remove_dir_all(volumes)
                .context(|| format!("removing the new {}", volumes.display()))?;
        }
        if let Some(parent) = volumes.parent() {
            std::fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
        }
        rename_dir(backup, volumes)?;
        sync_dir(volumes);
        sync_dir(backup);
        Ok(())
    }
}

/// Moves a directory by `rename(2)`; EXDEV gets an explanation.
fn rename_dir(from: &Path, to: &Path) -> Result<()> {
    let what = || format!("moving {} to {}", from.display(), to.display());
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) => Err(Error::new(
            what(),
            "they are on different mounts (a running dockerd keeps its data root bind-mounted \
             on itself: is the engine really stopped?)",
        )),
        Err(err) => Err(Error::new(what(), err)),
    }
}

/// `<tar>.partial`.
fn partial_path(tar: &Path) -> PathBuf {
    let mut name = tar.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::new(format!("removing {}", path.display()), err)),
    }
}

/// fsyncs the directory holding `path`, so that a rename or removal in it is durable.
fn sync_dir(path: &Path) {
    if let Some(parent) = path.parent() {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

/// `rm -rf ROOT`, but never across a mount: whatever is mounted below `root` (leftovers of the
/// stopped engine) is detached first, so that removing the tree cannot reach into another
/// filesystem. A `root` that is itself a mount point is emptied and kept.
fn wipe<W: Write>(root: &Path, log: &mut ProvisionLog<W>) -> Result<()> {
    let meta = match root.symlink_metadata() {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::new(format!("checking {}", root.display()), err)),
    };
    if meta.file_type().is_symlink() || !meta.is_dir() {
        note(log, &format!("removing {}", root.display()));
        return remove_file_if_exists(root);
    }
    let root = std::fs::canonicalize(root).context(|| format!("resolving {}", root.display()))?;
    let table = mounts::read(Path::new(mounts::SELF_MOUNTINFO))?;
    let mut below: Vec<&Path> = table
        .iter()
        .map(|m| m.mount_point.as_path())
        .filter(|p| p.starts_with(&root) && *p != root)
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for point in below {
        note(log, &format!("unmounting {}", point.display()));
        match umount2(point, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(err) => {
                return Err(Error::new(format!("unmounting {}", point.display()), err));
            }
        }
    }
    note(log, &format!("removing {}", root.display()));
    let entries = std::fs::read_dir(&root).context(|| format!("listing {}", root.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("listing {}", root.display()))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.context(|| format!("removing {}", path.display()))?;
    }
    let is_mount_point = table.iter().any(|m| m.mount_point == root);
    if !is_mount_point {
        std::fs::remove_dir(&root).context(|| format!("removing {}", root.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            done: Some(Step::Wipe),
            final_image: "stack-local-emulator:final".into(),
            target_image: "stack-local-emulator".into(),
            image_id: "sha256:abc".into(),
            docker_root: "/var/lib/docker".into(),
            containerd_root: "/var/lib/containerd".into(),
            volumes_dir: "/var/lib/docker/volumes".into(),
            backup_dir: "/var/tmp/volumes-backup".into(),
            image_tar: "/var/tmp/final-image.tar".into(),
            volumes: vec!["stack-postgres-data".into(), "stack-redis-data".into()],
        }
    }

    #[test]
    fn state_round_trips() {
        let state = sample();
        let text = state.render().unwrap();
        assert_eq!(
            text,
            "# slim-docker-image: docker storage rebuild in progress.\n\
             # Run slim-docker-image again (same options) to finish it; do not edit.\n\
             format=1\ndone=wipe\nfinal-image=stack-local-emulator:final\n\
             target-image=stack-local-emulator\nimage-id=sha256:abc\n\
             docker-root=/var/lib/docker\ncontainerd-root=/var/lib/containerd\n\
             volumes-dir=/var/lib/docker/volumes\nbackup-dir=/var/tmp/volumes-backup\n\
             image-tar=/var/tmp/final-image.tar\nvolume=stack-postgres-data\n\
             volume=stack-redis-data\n"
        );
        assert_eq!(State::parse("s", &text).unwrap(), state);
        let none = State {
            done: None,
            volumes: vec![],
            ..sample()
        };
        assert_eq!(State::parse("s", &none.render().unwrap()).unwrap(), none);
    }

    #[test]
    fn bad_state_files_say_where() {
        let text = sample().render().unwrap();
        let err = State::parse("s", &text.replace("done=wipe", "done=dance")).unwrap_err();
        assert!(err.why().starts_with("unknown step 'dance'"), "{err}");
        let err = State::parse("s", &format!("{text}colour=blue\n")).unwrap_err();
        assert_eq!(err.to_string(), "s:15: unknown key 'colour'");
        let err = State::parse("s", &text.replace("image-id=sha256:abc\n", "")).unwrap_err();
        assert_eq!(err.to_string(), "s: missing image-id=");
        let err = State::parse("s", &format!("{text}format=1\n")).unwrap_err();
        assert_eq!(err.to_string(), "s:15: format given twice");
        assert!(State::parse("s", &text.replace("format=1", "format=2")).is_err());
    }

    #[test]
    fn steps_parse_by_name() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.name()), Ok(step));
        }
        assert!(
            Step::parse("nope")
                .unwrap_err()
                .contains("one of save, stop-engine")
        );
    }

    #[test]
    fn preflight_refuses_paths_the_wipe_would_take() {
        let paths = Paths {
            docker_root: "/nonexistent-root/docker".into(),
            containerd_root: "/nonexistent-root/containerd".into(),
            volumes: "/nonexistent-root/docker/volumes".into(),
            backup: "/nonexistent-root/docker/backup".into(),
            tar: "/nonexistent-root/tmp/final.tar".into(),
            state: "/nonexistent-root/tmp/state".into(),
        };
        let err = preflight(&paths).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--backup-dir /nonexistent-root/docker/backup: is inside --docker-root \
             /nonexistent-root/docker, which the rebuild wipes"
        );
        let relative = Paths {
            tar: "final.tar".into(),
            ..paths.clone()
        };
        assert_eq!(
            preflight(&relative).unwrap_err().to_string(),
            "--image-tar final.tar: must be an absolute path without '..'"
        );
    }

    #[test]
    fn preflight_resolves_symlinks() {
        let dir = std::env::temp_dir().join(format!("preflight-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("docker/tmp")).unwrap();
        std::os::unix::fs::symlink(dir.join("docker/tmp"), dir.join("tmp")).unwrap();
        let paths = Paths {
            docker_root: dir.join("docker"),
            containerd_root: dir.join("containerd"),
            volumes: dir.join("docker/volumes"),
            backup: dir.join("backup"),
            tar: dir.join("tmp/final.tar"),
            state: dir.join("state"),
        };
        let err = preflight(&paths).unwrap_err();
        assert!(err.why().contains("which the rebuild wipes"), "{err}");
        assert_eq!(err.code(), shared::error::USAGE);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn partial_is_beside_the_tar() {
        assert_eq!(
            partial_path(Path::new("/var/tmp/final-image.tar")),
            Path::new("/var/tmp/final-image.tar.partial")
        );
    }
}

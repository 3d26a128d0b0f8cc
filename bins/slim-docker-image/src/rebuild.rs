//! Leaving docker's storage with only the final image, as a state machine that survives a crash.
//!
//! After the flatten, the engine's data root still holds every layer of the original and the
//! slim image. The original threw it all away and reloaded only the final image:
//!
//!   docker save → mv volumes away → stop docker and containerd → rm -rf both data roots → start
//!   → docker load → tag → rmi :final → rm the tar → stop docker → put the volumes back → start
//!
//! Here the engine removes what the build left instead, and stays up: the slim image, the source
//! image (the final one then takes its name) and anything dangling. What the round trip rewrote
//! was the final image's own layer; the blocks the removed layers held are freed either way and
//! then trimmed (see [`crate::zero_fill`]), so the finished disk image (`qemu-img convert -O qcow2
//! -c`) holds the same data: the README's Performance section has the measured sizes. What goes
//! is the save, the wipe, the reload and the two engine restarts (10-11 s each under TCG),
//! and with them every moment in which the volumes, the databases the migrations just filled,
//! sat outside the engine: nothing here moves them.
//!
//! Each step is recorded in a state file when it is done, and a re-run of the tool reads the
//! state file and resumes after the last recorded step, without building again (its source image
//! may be gone by then). Each step can run again after a crash in its middle: removing an image
//! that is gone is fine, the source image is removed only while it is not the final one, the
//! final tag goes only once the target name is verified to be the final image, and the run
//! counts as done only once the engine lists every volume it had. The step table ([`STEPS`]) is
//! the one description of the steps: the runner, the resume, `--dry-run` and `--help` read it.
//!
//! The state file (`/var/tmp/slim-docker-image.state` by default; `/var/tmp` survives reboots)
//! holds `key=value` lines: `format=2`, `done=<last step done, or none>`, the image names and the
//! final image's ID (a re-run naming other images is refused rather than guessed at), and one
//! `volume=<name>` line per volume to verify. It is written atomically, mode 0600.

use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::zero_fill;
use shared::docker::Docker;
use shared::error::{Context, Error, Result};
use shared::log::ProvisionLog;
use shared::os::atomic;
use shared::os::interrupt::Interrupt;
use shared::os::signal::exit_status;
use shared::os::small_file;

/// The tag of the lines this module adds to the original's.
const TAG: &str = "slim-docker-image";

pub const DEFAULT_STATE: &str = "/var/tmp/slim-docker-image.state";
/// The exit status of an injected crash (`STACK_SLIM_CRASH_AFTER`, for tests).
pub const CRASH_EXIT: u8 = 99;
/// The original's line, kept although nothing is saved any more: hosts and people grep for it.
pub const SAVING_LINE: &str = "Saving final image to /var/tmp...";

const FORMAT: &str = "2";

/// One step of the rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    RemoveSlim,
    RemoveSource,
    Tag,
    UntagFinal,
    Prune,
    Verify,
    FreeSpace,
}

/// A row of the step table.
pub struct StepInfo {
    pub step: Step,
    pub name: &'static str,
    /// What it does (the `--help` line and the `--dry-run` line; FINAL, TARGET and SLIM stand
    /// for the image names).
    pub does: &'static str,
}

/// The steps, in order: the one place they are described.
pub const STEPS: [StepInfo; 7] = [
    StepInfo {
        step: Step::RemoveSlim,
        name: "remove-slim",
        does: "docker rmi SLIM (the flatten's source; already gone is fine)",
    },
    StepInfo {
        step: Step::RemoveSource,
        name: "remove-source",
        does: "docker rmi TARGET, the image the build started from, unless it is FINAL already",
    },
    StepInfo {
        step: Step::Tag,
        name: "tag",
        does: "docker tag FINAL TARGET",
    },
    StepInfo {
        step: Step::UntagFinal,
        name: "untag-final",
        does: "verify TARGET has the recorded image ID, then docker rmi FINAL (the tag only)",
    },
    StepInfo {
        step: Step::Prune,
        name: "prune",
        does: "docker image prune -f and docker builder prune -af (the build's leftovers)",
    },
    StepInfo {
        step: Step::Verify,
        name: "verify",
        does: "verify TARGET's ID and that every recorded volume is listed",
    },
    StepInfo {
        step: Step::FreeSpace,
        name: "free-space",
        does: "trim the free space, zero-filling it first where the disk takes no discards",
    },
];

impl Step {
    fn info(self) -> &'static StepInfo {
        let index = self.index();
        &STEPS[index]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Result<Step, String> {
        STEPS
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.step)
            .ok_or_else(|| {
                let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
                format!("unknown step '{name}' (one of {})", names.join(", "))
            })
    }

    fn index(self) -> usize {
        STEPS.iter().position(|s| s.step == self).unwrap_or(0)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The step table as `--help` shows it: each step's name and what it does.
pub fn help_table() -> String {
    let rows: Vec<(String, String)> = STEPS
        .iter()
        .map(|row| (row.name.to_string(), row.does.to_string()))
        .collect();
    shared::cli::help::rows(&rows)
}

/// Everything the rebuild needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub docker: Docker,
    /// The flattened image (`stack-local-emulator:final`).
    pub final_image: String,
    /// The name it ends up under (`stack-local-emulator`), which the source image had.
    pub target_image: String,
    /// The slim image (`stack-local-emulator-slim`).
    pub slim_image: String,
    pub state_file: PathBuf,
    pub free_space: zero_fill::Config,
    /// Exit with [`CRASH_EXIT`] right after this step's action, before it is recorded. Has no
    /// effect unless built with the `test-hooks` feature (tests only).
    pub crash_after: Option<Step>,
}

impl Config {
    /// A step's description with the image names filled in.
    pub fn describe(&self, step: Step) -> String {
        step.info()
            .does
            .replace("FINAL", &self.final_image)
            .replace("TARGET", &self.target_image)
            .replace("SLIM", &self.slim_image)
    }
}

/// What the state file records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub done: Option<Step>,
    pub final_image: String,
    pub target_image: String,
    pub slim_image: String,
    pub image_id: String,
    pub volumes: Vec<String>,
}

impl State {
    fn images(&self) -> [(&'static str, &str); 3] {
        [
            ("final-image", &self.final_image),
            ("image", &self.target_image),
            ("slim-image", &self.slim_image),
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
        for (key, value) in self.images() {
            line(key, value)?;
        }
        line("image-id", &self.image_id)?;
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
                "format" | "done" | "final-image" | "image" | "slim-image" | "image-id" => {
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
        let format = get("format")?;
        if format != FORMAT {
            return Err(Error::new(
                name.to_string(),
                format!(
                    "format {format} is not {FORMAT}: it records a storage rebuild of another \
                     version of slim-docker-image; finish it with that version"
                ),
            ));
        }
        let done = match get("done")? {
            "none" => None,
            step => Some(Step::parse(step).map_err(|why| Error::new(name.to_string(), why))?),
        };
        Ok(State {
            done,
            final_image: get("final-image")?.to_string(),
            target_image: get("image")?.to_string(),
            slim_image: get("slim-image")?.to_string(),
            image_id: get("image-id")?.to_string(),
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

    /// Refuses a resume with options that name other images than the recorded ones.
    fn check_matches(&self, config: &Config) -> Result<()> {
        let given = [
            &config.final_image,
            &config.target_image,
            &config.slim_image,
        ];
        let differences: Vec<String> = self
            .images()
            .into_iter()
            .zip(given)
            .filter(|((_, recorded), given)| recorded != given)
            .map(|((key, recorded), given)| {
                format!("--{key} is {given} but the rebuild started with {recorded}")
            })
            .collect();
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            format!(
                "resuming the storage rebuild recorded in {}",
                config.state_file.display()
            ),
            format!("{}; re-run with the same options", differences.join("; ")),
        ))
    }

    /// The next step to run.
    pub fn next_step(&self) -> Option<Step> {
        let from = self.done.map_or(0, |s| s.index() + 1);
        STEPS.get(from).map(|s| s.step)
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

/// The state file's path must be absolute, and its directory is created.
pub fn preflight(state_file: &Path) -> Result<()> {
    if !state_file.is_absolute() || state_file.components().any(|c| c == Component::ParentDir) {
        return Err(Error::usage(
            format!("--state-file {}", state_file.display()),
            "must be an absolute path without '..'",
        ));
    }
    match state_file.parent() {
        Some(parent) => std::fs::create_dir_all(parent)
            .context(|| format!("creating directory {}", parent.display())),
        None => Err(Error::usage(
            "--state-file /",
            "refusing the root directory",
        )),
    }
}

/// Starts a rebuild: records the final image's ID and the volumes, then runs every step.
/// Returns the exit status (0, or 128+N after a signal).
pub fn start<W: Write>(
    config: &Config,
    log: &mut ProvisionLog<W>,
    interrupt: &Interrupt,
) -> Result<u8> {
    preflight(&config.state_file)?;
    let docker = &config.docker;
    let image_id = docker.image_id(&config.final_image)?.ok_or_else(|| {
        Error::new(
            format!("keeping {}", config.final_image),
            "the engine has no such image",
        )
    })?;
    let state = State {
        done: None,
        final_image: config.final_image.clone(),
        target_image: config.target_image.clone(),
        slim_image: config.slim_image.clone(),
        image_id,
        volumes: docker.volume_names()?,
    };
    state.save(&config.state_file)?;
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
            config.state_file.display()
        ),
    );
    Rebuild {
        config,
        state,
        log,
        interrupt,
    }
    .run()
}

impl<W: Write> Rebuild<'_, W> {
    fn run(mut self) -> Result<u8> {
        while let Some(step) = self.state.next_step() {
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
                    "storage rebuild step {}/{}: {step}: {}",
                    step.index() + 1,
                    STEPS.len(),
                    self.config.describe(step)
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
            self.record(step)?;
        }
        Ok(0)
    }

    fn record(&mut self, step: Step) -> Result<()> {
        self.state.done = Some(step);
        if self.state.next_step().is_none() {
            let path = &self.config.state_file;
            std::fs::remove_file(path).context(|| format!("removing {}", path.display()))
        } else {
            self.state.save(&self.config.state_file)
        }
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
                self.config.state_file.display()
            ),
        )
    }

    /// Runs one step; `Some(status)` ends the rebuild early (a signal during the zero-fill).
    fn perform(&mut self, step: Step) -> Result<Option<u8>> {
        let config = self.config;
        let docker = &config.docker;
        match step {
            Step::RemoveSlim => {
                self.log.message(SAVING_LINE.as_bytes());
                note(
                    self.log,
                    "the final image stays in the engine: the build's other images are removed \
                     through it instead (no save, wipe, reload or engine restart)",
                );
                self.log.message(b"Nuking Docker storage and reloading...");
                self.remove_image(&config.slim_image)?;
            }
            Step::RemoveSource => match docker.image_id(&config.target_image)? {
                Some(id) if id == self.state.image_id => note(
                    self.log,
                    &format!("{} is the final image already", config.target_image),
                ),
                Some(_) => self.remove_image(&config.target_image)?,
                None => {}
            },
            Step::Tag => {
                docker
                    .command(["tag", &config.final_image, &config.target_image])
                    .read()?;
            }
            Step::UntagFinal => {
                self.verify_image()?;
                if config.final_image != config.target_image {
                    self.remove_image(&config.final_image)?;
                }
            }
            Step::Prune => {
                for args in [&["image", "prune", "-f"][..], &["builder", "prune", "-af"]] {
                    if let Err(err) = docker.command(args).read() {
                        note(self.log, &format!("WARNING: {err} (continuing)"));
                    }
                }
            }
            Step::Verify => {
                self.verify_image()?;
                self.verify_volumes()?;
                self.log.message(b"Docker storage rebuilt.");
            }
            Step::FreeSpace => return self.free_space(),
        }
        Ok(None)
    }

    /// `docker rmi NAME`; an image that is already gone is fine. One docker call: each costs
    /// about a second in a TCG guest, so there is no listing first.
    fn remove_image(&mut self, name: &str) -> Result<()> {
        match self.config.docker.command(["rmi", name]).read() {
            Ok(_) => Ok(()),
            Err(err) if err.to_string().contains("No such image") => {
                note(
                    self.log,
                    &format!("{name}: no such image (already removed)"),
                );
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The target image exists and is the final image.
    fn verify_image(&self) -> Result<()> {
        let target = &self.config.target_image;
        match self.config.docker.image_id(target)? {
            Some(id) if id == self.state.image_id => Ok(()),
            Some(id) => Err(Error::new(
                format!("verifying {target}"),
                format!("its ID is {id}, not the final {}", self.state.image_id),
            )),
            None => Err(Error::new(
                format!("verifying {target}"),
                "the engine has no such image",
            )),
        }
    }

    fn verify_volumes(&self) -> Result<()> {
        let listed = self.config.docker.volume_names()?;
        let missing: Vec<&str> = self
            .state
            .volumes
            .iter()
            .filter(|v| !listed.contains(v))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            "verifying the volumes after the rebuild",
            format!("the engine does not list {}", missing.join(", ")),
        ))
    }

    fn free_space(&mut self) -> Result<Option<u8>> {
        self.log
            .message(b"Zeroing free space for qcow2 compression...");
        let interrupt = self.interrupt;
        let stopped = zero_fill::free_space(&self.config.free_space, TAG, self.log, || {
            interrupt.signal().is_some()
        })?;
        if stopped {
            if let Some(sig) = interrupt.acknowledge() {
                note(
                    self.log,
                    &format!(
                        "interrupted by {} during the zero-fill; run slim-docker-image again to \
                         finish it",
                        sig.as_str()
                    ),
                );
                return Ok(Some(exit_status(sig)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            done: Some(Step::Tag),
            final_image: "stack-local-emulator:final".into(),
            target_image: "stack-local-emulator".into(),
            slim_image: "stack-local-emulator-slim".into(),
            image_id: "sha256:abc".into(),
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
             format=2\ndone=tag\nfinal-image=stack-local-emulator:final\n\
             image=stack-local-emulator\nslim-image=stack-local-emulator-slim\n\
             image-id=sha256:abc\nvolume=stack-postgres-data\nvolume=stack-redis-data\n"
        );
        assert_eq!(State::parse("s", &text).unwrap(), state);
        let none = State {
            done: None,
            volumes: vec![],
            ..sample()
        };
        assert_eq!(State::parse("s", &none.render().unwrap()).unwrap(), none);
        assert_eq!(none.next_step(), Some(Step::RemoveSlim));
        assert_eq!(sample().next_step(), Some(Step::UntagFinal));
    }

    #[test]
    fn bad_state_files_say_where() {
        let text = sample().render().unwrap();
        let err = State::parse("s", &text.replace("done=tag", "done=dance")).unwrap_err();
        assert!(err.why().starts_with("unknown step 'dance'"), "{err}");
        let err = State::parse("s", &format!("{text}colour=blue\n")).unwrap_err();
        assert_eq!(err.to_string(), "s:11: unknown key 'colour'");
        let err = State::parse("s", &text.replace("image-id=sha256:abc\n", "")).unwrap_err();
        assert_eq!(err.to_string(), "s: missing image-id=");
        let err = State::parse("s", &format!("{text}format=2\n")).unwrap_err();
        assert_eq!(err.to_string(), "s:11: format given twice");
        let err = State::parse("s", &text.replace("format=2", "format=1")).unwrap_err();
        assert!(err.why().contains("another version"), "{err}");
    }

    #[test]
    fn steps_parse_by_name_and_the_table_is_in_order() {
        for (index, row) in STEPS.iter().enumerate() {
            assert_eq!(Step::parse(row.name), Ok(row.step));
            assert_eq!(row.step.index(), index);
        }
        assert!(
            Step::parse("nope")
                .unwrap_err()
                .contains("one of remove-slim, remove-source")
        );
        let table = help_table();
        let names: Vec<&str> = table
            .lines()
            .filter(|line| !line.starts_with("   "))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(names, STEPS.map(|row| row.name));
        assert!(
            table.contains("\n  free-space     trim the free space"),
            "{table}"
        );
    }

    #[test]
    fn preflight_wants_an_absolute_state_file() {
        assert_eq!(
            preflight(Path::new("state")).unwrap_err().to_string(),
            "--state-file state: must be an absolute path without '..'"
        );
    }
}

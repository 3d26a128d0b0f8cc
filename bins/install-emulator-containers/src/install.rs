//! `install-emulator-containers`: the emulator's docker image from the `STACKBUNDLE` disk.
//!
//! The original mounted `/dev/disk/by-label/STACKBUNDLE` (failing on a re-run, where it is
//! mounted already, and without udev), ran `systemctl enable --now docker`, polled `docker info`
//! every second forever, piped `gzip -dc img.tgz` into `docker load` with no word of progress,
//! and `cp`ed `build.env` and `build-arch.env` to `/etc`. Here:
//!
//! - the disk is found and mounted read-only by [`shared::os::blockdev`] (label link or superblock
//!   scan, probed filesystem type); a mount point that is mounted already is used as it is;
//! - the engine start command is configurable (split into words, never given to a shell; empty
//!   skips it), and the wait for `docker info` runs on the [wait engine](shared::wait): bounded,
//!   with heartbeats, and on giving up it says what `docker info` last answered;
//! - `img.tgz` is inflated in this process (zlib-rs) and the tar streamed into `docker load`'s
//!   stdin. Measured against `gzip -dc img.tgz | docker load` (`make bench`), this is the fastest
//!   of the candidates on an archive that compresses as the emulator's image does: the
//!   original's pipe, `docker load -i img.tgz` or the compressed bytes streamed into `docker
//!   load` (the engine inflates, in Go, slower than zlib-rs), and this. Only on incompressible
//!   data, where gzip stores the blocks and inflating is a copy, is the engine's own inflate
//!   faster. A progress line (bytes read of the total, rate) reaches the provision log every
//!   interval;
//! - a truncated or corrupt `img.tgz` is named as such (the gzip CRC and length are checked
//!   here), and when the bundle carries `img.tgz.sha256` (`sha256sum` output, or the bare hex
//!   digest) the file's digest is computed while streaming. The last [`HOLD_BACK`] bytes of the
//!   tar are held back until both checks pass: docker never sees the end of a bad archive, so
//!   it loads nothing from it (the engine unpacks the whole archive into a temporary directory
//!   before it registers anything, and removes it when the stream fails), and `docker load` is
//!   killed;
//! - the two env files are copied atomically with mode 0644.
//!
//! `docker load`'s own output (`Loaded image: …`) still goes to stdout, as it did.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use shared::docker::Docker;
use shared::duration::seconds;
use shared::error::{Context, Error, Result};
use shared::log::ProvisionLog;
use shared::os::atomic;
use shared::os::blockdev::{Disk, Mounted};
use shared::os::signal;
use shared::os::small_file;
use shared::process::{self, Program};
use shared::wait::{self, Answer, Event, Outcome, Probe, Target};

pub const TOOL: &str = "install-emulator-containers";
pub const DEFAULT_LABEL: &str = "STACKBUNDLE";
pub const DEFAULT_MOUNT_POINT: &str = "/mnt/stack-bundle";
/// The image archive on the bundle disk (`docker save | gzip`).
pub const IMAGE_FILE: &str = "img.tgz";
/// Appended to the image archive's name: its optional checksum file.
pub const CHECKSUM_SUFFIX: &str = ".sha256";
pub const BUILD_ENV: &str = "build.env";
pub const BUILD_ARCH_ENV: &str = "build-arch.env";
pub const DEFAULT_BUILD_ENV_DEST: &str = shared::emulator::BUILD_ENV;
pub const DEFAULT_BUILD_ARCH_ENV_DEST: &str = shared::emulator::BUILD_ARCH_ENV;
pub const DEFAULT_START_DOCKER: &str = "systemctl enable --now docker";
/// How long to wait for `docker info`: generous, for a first boot under cross-arch emulation.
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest one `docker info` may take before it is killed and tried again.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// The mode of the copied env files: what `cp` gives a new file under the usual umask.
pub const COPY_MODE: u32 = 0o644;
/// How much of the tar is held back from docker until the archive is known to be good.
pub const HOLD_BACK: usize = 1 << 20;

/// The size of the writes into docker's stdin.
const CHUNK: usize = 256 << 10;
/// The size of the reads from img.tgz, and how many may wait to be inflated.
const READ_BLOCK: usize = 1 << 20;
const BLOCKS_IN_FLIGHT: usize = 4;
/// The pipe buffer asked for on docker's stdin.
const PIPE_SIZE: i32 = 1 << 20;

/// Everything one run needs; [`Default`] is the original's.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bundle disk.
    pub disk: Disk,
    /// Whether to mount the disk at its mount point (unless it is a mount point already).
    pub mount: bool,
    /// `<mount_point>/img.tgz` when `None`.
    pub image: Option<PathBuf>,
    /// The command that starts the engine, as argv; empty skips the step.
    pub start_docker: Vec<String>,
    pub docker: Docker,
    pub docker_timeout: Duration,
    pub attempt_timeout: Duration,
    pub progress_interval: Duration,
    pub build_env: PathBuf,
    pub build_arch_env: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            disk: Disk::new(DEFAULT_LABEL, DEFAULT_MOUNT_POINT),
            mount: true,
            image: None,
            start_docker: DEFAULT_START_DOCKER
                .split(' ')
                .map(str::to_string)
                .collect(),
            docker: Docker::default(),
            docker_timeout: DEFAULT_DOCKER_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            build_env: DEFAULT_BUILD_ENV_DEST.into(),
            build_arch_env: DEFAULT_BUILD_ARCH_ENV_DEST.into(),
        }
    }
}

impl Options {
    pub fn image(&self) -> PathBuf {
        self.image
            .clone()
            .unwrap_or_else(|| self.disk.mount_point.join(IMAGE_FILE))
    }
}

fn say<W: Write>(log: &mut ProvisionLog<W>, text: &str) {
    log.message(format!("{TOOL}: {text}").as_bytes());
}

/// The whole tool, in the original's order.
pub fn run<W: Write>(opts: &Options, log: &mut ProvisionLog<W>) -> Result<()> {
    let start = Instant::now();
    if opts.mount {
        mount_bundle(opts, log)?;
    }
    let instead = start_command(&opts.start_docker, is_enabled);
    if let Some(start) = &instead {
        say(
            log,
            &format!(
                "{} is enabled already: `{}` instead of `{}`",
                start[2],
                shell_words::join(start),
                shell_words::join(&opts.start_docker)
            ),
        );
    }
    start_docker(instead.as_deref().unwrap_or(&opts.start_docker))?;
    wait_for_docker(opts, log)?;
    let image = opts.image();
    let loaded = load_image(&image, &opts.docker, opts.progress_interval, log)?;
    say(
        log,
        &format!(
            "loaded {}: {} in {} ({}/s){}",
            image.display(),
            size(loaded.read),
            secs(loaded.elapsed),
            size(rate(loaded.read, loaded.elapsed)),
            if loaded.verified {
                ", sha256 verified"
            } else {
                ""
            }
        ),
    );
    let bundle = image.parent().unwrap_or(Path::new("."));
    for (name, dest) in [
        (BUILD_ENV, &opts.build_env),
        (BUILD_ARCH_ENV, &opts.build_arch_env),
    ] {
        let source = bundle.join(name);
        if copy_if_present(&source, dest)? {
            say(
                log,
                &format!("copied {} to {}", source.display(), dest.display()),
            );
        }
    }
    say(log, &format!("done ({})", secs(start.elapsed())));
    Ok(())
}

/// `mkdir -p` and mount read-only, unless the mount point is mounted already.
fn mount_bundle<W: Write>(opts: &Options, log: &mut ProvisionLog<W>) -> Result<()> {
    let target = opts.disk.mount_point.display();
    match opts.disk.mount()? {
        Mounted::Now { device, fs_type } => say(
            log,
            &format!(
                "mounted {} ({fs_type}) read-only at {target}",
                device.display()
            ),
        ),
        Mounted::Already => say(log, &format!("{target} is mounted already; using it")),
    }
    Ok(())
}

/// The command to run instead of `argv`, if any: `systemctl enable --now UNIT` becomes
/// `systemctl start UNIT` when `enabled(systemctl, UNIT)` says the unit is enabled already.
/// Enabling reloads systemd's configuration, two or three times with Debian's sysv-install
/// hook: 4-16 s each in a TCG guest, where docker is enabled by its package and running by the
/// time the build starts. The end state is the same: the unit enabled and started.
pub fn start_command(
    argv: &[String],
    enabled: impl FnOnce(&str, &str) -> bool,
) -> Option<Vec<String>> {
    match argv {
        [systemctl, enable, now, unit]
            if systemctl.rsplit('/').next() == Some("systemctl")
                && enable == "enable"
                && now == "--now"
                && enabled(systemctl, unit) =>
        {
            Some(vec![systemctl.clone(), "start".into(), unit.clone()])
        }
        _ => None,
    }
}

/// `systemctl is-enabled --quiet UNIT` exits 0 (enabled, static, alias, …).
fn is_enabled(systemctl: &str, unit: &str) -> bool {
    let mut check = Program::new(systemctl);
    check
        .args(["is-enabled", "--quiet", unit])
        .stdin(std::process::Stdio::null());
    check.status().is_ok_and(|status| status.success())
}

/// Runs the engine start command with stdio inherited; a failure stops the install, as
/// `set -e` did.
fn start_docker(argv: &[String]) -> Result<()> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let line = shell_words::join(argv);
    let mut start = Program::new(program);
    start.args(args).stdin(std::process::Stdio::null());
    let status = start.status().map_err(|err| {
        let why = if err.kind() == io::ErrorKind::NotFound {
            format!("{err} (is `{program}` installed and on PATH?)")
        } else {
            err.to_string()
        };
        Error::new(format!("starting docker with `{line}`"), why)
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(
            format!("starting docker with `{line}`"),
            process::describe_status(status),
        ))
    }
}

/// Waits until `docker info` answers; gives up after the timeout with its last answer.
fn wait_for_docker<W: Write>(opts: &Options, log: &mut ProvisionLog<W>) -> Result<()> {
    let argv: Vec<OsString> = vec![
        opts.docker.program().to_owned(),
        "info".into(),
        "--format".into(),
        "{{.ServerVersion}}".into(),
    ];
    let targets = [Target::new("docker", Probe::Command(argv))];
    let options = wait::Options::new(opts.docker_timeout, opts.attempt_timeout);
    let report = wait::run(&targets, &options, |event| match event {
        Event::Ready { target } => {
            let version = match target.last.as_ref().map(|a| &a.answer) {
                Some(Answer::Exited { output, .. }) if !output.is_empty() => {
                    format!("docker {output}")
                }
                _ => "docker".to_string(),
            };
            let after = target.ready_after.unwrap_or_default();
            say(log, &format!("{version} is up ({})", secs(after)));
        }
        Event::Heartbeat { elapsed, targets } => {
            for t in targets.iter().filter(|t| !t.is_ready()) {
                say(
                    log,
                    &format!(
                        "still waiting for docker ({} elapsed): {}",
                        secs(elapsed),
                        t.last_answer()
                    ),
                );
            }
        }
        Event::Attempt { .. } => {}
    });
    let what = || "waiting for `docker info` to answer".to_string();
    match report.outcome {
        Outcome::Ready => Ok(()),
        Outcome::TimedOut => {
            let last = report
                .targets
                .first()
                .map(wait::TargetReport::last_answer)
                .unwrap_or_default();
            Err(Error::new(
                what(),
                format!(
                    "no answer within {}; it last said: {last}",
                    seconds(opts.docker_timeout)
                ),
            ))
        }
        Outcome::Interrupted(sig) => {
            Err(Error::new(what(), format!("stopped by {sig}")).with_code(signal::exit_status(sig)))
        }
    }
}

/// What [`load_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Bytes of the compressed file read.
    pub read: u64,
    /// Bytes of tar handed to docker.
    pub tar: u64,
    pub elapsed: Duration,
    /// Whether a checksum file was there and matched.
    pub verified: bool,
}

/// Reads the digest from `<image>.sha256`: `None` when there is no such file.
pub fn read_checksum(image: &Path) -> Result<Option<[u8; 32]>> {
    let mut path = image.as_os_str().to_owned();
    path.push(CHECKSUM_SUFFIX);
    let path = PathBuf::from(path);
    let Some(bytes) = small_file::read_optional(&path, small_file::ENV_FILE_CAP)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::new(format!("reading {}", path.display()), "not UTF-8 text"))?;
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_checksum(&text, &name)
        .map(Some)
        .map_err(|why| Error::new(format!("reading {}", path.display()), why))
}

/// The digest for `name` in `sha256sum` output (`<hex>  name`, `<hex> *name`), or a file that
/// holds the bare hex digest.
pub fn parse_checksum(text: &str, name: &str) -> std::result::Result<[u8; 32], String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut found = None;
    for line in &lines {
        let (hex_part, file) = match line.split_once([' ', '\t']) {
            Some((hex_part, rest)) => (hex_part, Some(rest.trim_start().trim_start_matches('*'))),
            None => (*line, None),
        };
        let named_here = match file {
            None => lines.len() == 1,
            Some(file) => file == name || Path::new(file).file_name() == Some(name.as_ref()),
        };
        if named_here {
            found = Some(hex_part);
            break;
        }
    }
    let Some(hex_part) = found else {
        return Err(format!(
            "no line for {name}: expected `<64 hex digits>  {name}` or the digest alone"
        ));
    };
    let mut digest = [0u8; 32];
    if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut digest).is_err() {
        return Err(format!(
            "the digest for {name} is not 64 hex digits: {hex_part:?}"
        ));
    }
    Ok(digest)
}

/// What stopped the stream.
enum PumpError {
    /// The archive is bad (unreadable, not gzip, truncated, corrupt, wrong digest).
    Image(Error),
    /// Writing to `docker load` failed: it ended early; its own error says why.
    Docker(io::Error),
}

/// One block of the file, or the error that ended reading it.
type Block = io::Result<Vec<u8>>;

/// Reads the file in blocks on a thread of its own, counting and hashing them, so that hashing
/// runs beside inflating rather than between the reads. Returns the digest when asked for one
/// and the whole file was read.
fn read_blocks(
    mut file: File,
    mut hasher: Option<Sha256>,
    blocks: mpsc::SyncSender<Block>,
    spare: mpsc::Receiver<Vec<u8>>,
    read: &AtomicU64,
) -> Option<[u8; 32]> {
    loop {
        let mut block = spare.try_recv().unwrap_or_default();
        block.resize(READ_BLOCK, 0);
        match fill(&mut file, &mut block) {
            Ok(0) => break,
            Ok(n) => {
                block.truncate(n);
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&block);
                }
                read.fetch_add(n as u64, Ordering::Relaxed);
                if blocks.send(Ok(block)).is_err() {
                    return None;
                }
            }
            Err(err) => {
                let _ = blocks.send(Err(err));
                return None;
            }
        }
    }
    hasher.map(|hasher| hasher.finalize().into())
}

/// The blocks of [`read_blocks`] as one stream, for the decoder; used blocks go back to it.
struct Blocks<'a> {
    blocks: mpsc::Receiver<Block>,
    spare: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    /// Set when reading the file failed (as opposed to the data being bad).
    failed: &'a AtomicBool,
}

impl Read for Blocks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.blocks.recv() {
                Ok(Ok(block)) => {
                    let used = std::mem::replace(&mut self.current, block);
                    if used.capacity() > 0 {
                        let _ = self.spare.send(used);
                    }
                    self.at = 0;
                }
                Ok(Err(err)) => {
                    self.failed.store(true, Ordering::Relaxed);
                    return Err(err);
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Loads the gzip-compressed docker archive at `path` into the engine; see the module doc.
pub fn load_image<W: Write>(
    path: &Path,
    docker: &Docker,
    progress_interval: Duration,
    log: &mut ProvisionLog<W>,
) -> Result<Loaded> {
    let shown = path.display().to_string();
    let (file, total, expected) = open_image(path, &shown)?;
    let checking = match expected {
        Some(_) => ", checking its sha256",
        None => "",
    };
    say(
        log,
        &format!("loading {shown} ({}{checking}) into docker", size(total)),
    );
    let read = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    let mut feeding = docker.command(["load"]).feed()?;
    let Some(stdin) = feeding.stdin() else {
        feeding.abort();
        return Err(Error::new(
            format!("running `{}`", docker.command(["load"])),
            "its stdin is closed",
        ));
    };
    // A larger pipe lets this process and the client run further apart (the default is 64 KiB);
    // where it cannot be changed the default works too.
    let _ = nix::fcntl::fcntl(&*stdin, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let check = Check {
        shown: &shown,
        total,
        expected,
        read: &read,
        failed: &failed,
    };
    let result = pump_with_progress(file, stdin, &check, progress_interval, log);
    match result {
        Ok((tar, verified)) => {
            let stderr = feeding.finish()?;
            let _ = io::stderr().write_all(&stderr);
            Ok(Loaded {
                read: read.load(Ordering::Relaxed),
                tar,
                elapsed: start.elapsed(),
                verified,
            })
        }
        Err(PumpError::Image(err)) => {
            feeding.abort();
            Err(err)
        }
        Err(PumpError::Docker(write_err)) => {
            // docker load stopped reading: its exit status and stderr say why.
            feeding.finish()?;
            Err(Error::new(
                format!("feeding {shown} to `{}`", docker.command(["load"])),
                write_err,
            ))
        }
    }
}

/// The archive opened and checked for the gzip magic, its size, and the digest it must have
/// (from its checksum file, when there is one).
fn open_image(path: &Path, shown: &str) -> Result<(File, u64, Option<[u8; 32]>)> {
    let expected = read_checksum(path)?;
    let mut file = File::open(path).context(|| format!("opening {shown}"))?;
    let total = file
        .metadata()
        .context(|| format!("reading {shown}"))?
        .len();
    check_magic(&mut file, shown)?;
    Ok((file, total, expected))
}

/// [`pump`] on a thread of its own, with a progress line (bytes read of the total, rate) every
/// `every` until it ends.
fn pump_with_progress<W: Write>(
    file: File,
    stdin: &mut (impl Write + Send),
    check: &Check<'_>,
    every: Duration,
    log: &mut ProvisionLog<W>,
) -> std::result::Result<(u64, bool), PumpError> {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = done_tx.send(pump(file, stdin, check));
        });
        let mut last = (Instant::now(), 0u64);
        loop {
            match done_rx.recv_timeout(every.max(Duration::from_millis(10))) {
                Ok(result) => break result,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let bytes = check.read.load(Ordering::Relaxed);
                    let recent = rate(bytes.saturating_sub(last.1), now - last.0);
                    last = (now, bytes);
                    say(
                        log,
                        &format!(
                            "{}: {} of {} read ({}%), {}/s",
                            check.shown,
                            size(bytes),
                            size(check.total),
                            percent(bytes, check.total),
                            size(recent)
                        ),
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break Err(PumpError::Image(Error::new(
                        format!("loading {}", check.shown),
                        "the copying thread ended without a result",
                    )));
                }
            }
        }
    })
}

/// A gzip file starts with 0x1f 0x8b; anything else (an empty file included) is refused before
/// docker is started.
fn check_magic(file: &mut File, shown: &str) -> Result<()> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::new(format!("reading {shown}"), err)),
        }
    }
    if got == 0 {
        return Err(Error::new(
            format!("loading {shown}"),
            "the file is empty; the bundle disk is incomplete: rebuild it",
        ));
    }
    if got < 2 || magic != [0x1f, 0x8b] {
        return Err(Error::new(
            format!("loading {shown}"),
            "not gzip-compressed data (expected `docker save | gzip` output); the bundle disk \
             is damaged or holds the wrong file",
        ));
    }
    use std::io::Seek;
    file.rewind().context(|| format!("reading {shown}"))
}

/// What the pump checks the archive against.
struct Check<'a> {
    shown: &'a str,
    total: u64,
    expected: Option<[u8; 32]>,
    read: &'a AtomicU64,
    failed: &'a AtomicBool,
}

impl Check<'_> {
    /// The error for a failed read of the inflated stream.
    fn stream_error(&self, err: io::Error) -> Error {
        let at = self.read.load(Ordering::Relaxed);
        let place = format!("after {} of {} bytes", at, self.total);
        if self.failed.load(Ordering::Relaxed) {
            return Error::new(
                format!("reading {}", self.shown),
                format!("{err} ({place})"),
            );
        }
        let why = if err.kind() == io::ErrorKind::UnexpectedEof {
            format!(
                "the file is truncated: its gzip data ends unexpectedly ({place}); the bundle \
                 disk is incomplete: rebuild it"
            )
        } else {
            format!("the file is corrupt: {err} ({place}); the bundle disk is damaged: rebuild it")
        };
        Error::new(format!("loading {}", self.shown), why)
    }
}

/// Inflates the archive into `sink`, holding the last [`HOLD_BACK`] bytes back until the
/// gzip trailer and the digest have been checked. Returns the tar's length and whether a
/// digest was verified.
fn pump(
    file: File,
    sink: &mut impl Write,
    check: &Check<'_>,
) -> std::result::Result<(u64, bool), PumpError> {
    let (block_tx, block_rx) = mpsc::sync_channel(BLOCKS_IN_FLIGHT);
    let (spare_tx, spare_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let hasher = check.expected.map(|_| Sha256::new());
        let read = check.read;
        let reader = scope.spawn(move || read_blocks(file, hasher, block_tx, spare_rx, read));
        let blocks = Blocks {
            blocks: block_rx,
            spare: spare_tx,
            current: Vec::new(),
            at: 0,
            failed: check.failed,
        };
        // The decoder (and with it the receiving end) is dropped before the join, so a reader
        // blocked on a full channel sees the end and stops.
        let inflated = inflate(blocks, sink, check);
        let digest = reader.join().ok().flatten();
        let (tar, held) = inflated?;
        let verified = match (check.expected, digest) {
            (Some(expected), Some(actual)) if actual != expected => {
                return Err(PumpError::Image(Error::new(
                    format!(
                        "checking {} against its {CHECKSUM_SUFFIX} file",
                        check.shown
                    ),
                    format!(
                        "sha256 mismatch: the file's digest is {}, the checksum file says {}; \
                         the bundle disk is damaged or mixes two builds: rebuild it",
                        hex::encode(actual),
                        hex::encode(expected)
                    ),
                )));
            }
            (Some(_), Some(_)) => true,
            (Some(_), None) => {
                return Err(PumpError::Image(Error::new(
                    format!("reading {}", check.shown),
                    "the file was not read to its end",
                )));
            }
            (None, _) => false,
        };
        for chunk in held {
            sink.write_all(&chunk).map_err(PumpError::Docker)?;
        }
        sink.flush().map_err(PumpError::Docker)?;
        Ok((tar, verified))
    })
}

/// Inflates everything into `sink` except the last [`HOLD_BACK`] bytes or more, which are
/// returned with the tar's length.
fn inflate(
    input: Blocks<'_>,
    sink: &mut impl Write,
    check: &Check<'_>,
) -> std::result::Result<(u64, VecDeque<Vec<u8>>), PumpError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(input);
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut queued = 0usize;
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut tar = 0u64;
    loop {
        let mut chunk = spare.pop().unwrap_or_default();
        chunk.resize(CHUNK, 0);
        let n =
            fill(&mut decoder, &mut chunk).map_err(|e| PumpError::Image(check.stream_error(e)))?;
        if n == 0 {
            return Ok((tar, queue));
        }
        chunk.truncate(n);
        tar += n as u64;
        queued += n;
        queue.push_back(chunk);
        while let Some(front) = queue.front() {
            if queued - front.len() < HOLD_BACK {
                break;
            }
            let Some(front) = queue.pop_front() else {
                break;
            };
            sink.write_all(&front).map_err(PumpError::Docker)?;
            queued -= front.len();
            spare.push(front);
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(got)
}

/// `src` to `dest` atomically with mode 0644 when `src` is a regular file (the original's
/// `[ -f SRC ] && cp SRC DEST`). Returns whether it copied.
pub fn copy_if_present(src: &Path, dest: &Path) -> Result<bool> {
    match std::fs::metadata(src) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(Error::new(format!("reading {}", src.display()), err)),
    }
    let contents = small_file::read(src, small_file::ENV_FILE_CAP)?;
    atomic::write(dest, &contents, COPY_MODE)?;
    Ok(true)
}

/// Bytes per second over `elapsed`.
fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let ms = elapsed.as_millis().max(1);
    (u128::from(bytes) * 1000 / ms) as u64
}

fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        100
    } else {
        (u128::from(part) * 100 / u128::from(whole)) as u64
    }
}

/// Whole seconds, or tenths under ten seconds: `42s`, `3.5s`.
fn secs(d: Duration) -> String {
    if d.as_secs() >= 10 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A size in binary units, one decimal: `512 B`, `1.5 KiB`, `300.0 MiB`, `1.2 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_now_of_an_enabled_unit_is_only_a_start() {
        let words = |text: &str| -> Vec<String> { text.split(' ').map(str::to_string).collect() };
        let default = words(DEFAULT_START_DOCKER);
        let mut asked = None;
        let instead = start_command(&default, |systemctl, unit| {
            asked = Some(format!("{systemctl} {unit}"));
            true
        });
        assert_eq!(instead, Some(words("systemctl start docker")));
        assert_eq!(asked.as_deref(), Some("systemctl docker"));
        assert_eq!(start_command(&default, |_, _| false), None);
        let full = words("/usr/bin/systemctl enable --now docker");
        assert_eq!(
            start_command(&full, |_, _| true),
            Some(words("/usr/bin/systemctl start docker"))
        );
        for other in [
            "/tmp/start-engine",
            "systemctl enable docker",
            "service docker start",
        ] {
            assert_eq!(
                start_command(&words(other), |_, _| panic!("asked")),
                None,
                "{other}"
            );
        }
    }

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn checksum_forms() {
        let want = {
            let mut d = [0u8; 32];
            hex::decode_to_slice(DIGEST, &mut d).unwrap();
            d
        };
        for text in [
            format!("{DIGEST}\n"),
            format!("{DIGEST}  img.tgz\n"),
            format!("{DIGEST} *img.tgz\n"),
            format!("{}  ./bundle/img.tgz", DIGEST.to_uppercase()),
            format!("{}  other.tgz\n{DIGEST}  img.tgz\n", "0".repeat(64)),
        ] {
            assert_eq!(parse_checksum(&text, "img.tgz"), Ok(want), "{text}");
        }
        let err = parse_checksum(&format!("{DIGEST}  other.tgz\n"), "img.tgz").unwrap_err();
        assert!(err.starts_with("no line for img.tgz"), "{err}");
        let err = parse_checksum("abc  img.tgz\n", "img.tgz").unwrap_err();
        assert!(err.contains("not 64 hex digits"), "{err}");
        assert!(parse_checksum("", "img.tgz").is_err());
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(300 << 20), "300.0 MiB");
        assert_eq!(size(3 << 29), "1.5 GiB");
        assert_eq!(rate(100 << 20, Duration::from_secs(2)), 50 << 20);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(secs(Duration::from_millis(3450)), "3.5s");
        assert_eq!(secs(Duration::from_secs(42)), "42s");
    }

    #[test]
    fn default_start_command_is_the_original() {
        assert_eq!(
            Options::default().start_docker,
            ["systemctl", "enable", "--now", "docker"]
        );
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn pump_bytes(bytes: &[u8], expected: Option<[u8; 32]>) -> (Result<(u64, bool)>, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("install-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("img-{}.tgz", rand_suffix()));
        std::fs::write(&path, bytes).unwrap();
        let read = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let check = Check {
            shown: "img.tgz",
            total: bytes.len() as u64,
            expected,
            read: &read,
            failed: &failed,
        };
        let mut out = Vec::new();
        let result = pump(File::open(&path).unwrap(), &mut out, &check).map_err(|e| match e {
            PumpError::Image(e) => e,
            PumpError::Docker(e) => Error::new("docker", e),
        });
        std::fs::remove_file(&path).unwrap();
        (result, out)
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    /// Bytes that do not compress, so the compressed file is about as long as the data.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn good_archive_passes_through_whole() {
        let data = noise(3 * HOLD_BACK + 12345);
        let gz = gzip(&data);
        let digest: [u8; 32] = Sha256::digest(&gz).into();
        let (result, out) = pump_bytes(&gz, Some(digest));
        assert_eq!(result.unwrap(), (data.len() as u64, true));
        assert!(out == data);
        let (result, out) = pump_bytes(&gz, None);
        assert_eq!(result.unwrap(), (data.len() as u64, false));
        assert!(out == data);
    }

    #[test]
    fn bad_archives_never_deliver_their_end() {
        let data = noise(3 * HOLD_BACK);
        let gz = gzip(&data);
        let check_held_back = |out: &[u8]| {
            assert!(out.len() <= data.len() - HOLD_BACK, "{}", out.len());
            assert!(out == &data[..out.len()]);
        };

        let (result, out) = pump_bytes(&gz, Some([7u8; 32]));
        let err = result.unwrap_err();
        assert!(err.why().starts_with("sha256 mismatch"), "{err}");
        assert_eq!(out.len(), data.len() - HOLD_BACK);
        check_held_back(&out);

        let (result, out) = pump_bytes(&gz[..gz.len() - 5000], None);
        let err = result.unwrap_err();
        assert!(err.why().starts_with("the file is truncated"), "{err}");
        check_held_back(&out);

        let mut corrupt = gz.clone();
        let at = corrupt.len() - 6;
        corrupt[at] ^= 0xff;
        let (result, out) = pump_bytes(&corrupt, None);
        let err = result.unwrap_err();
        assert!(err.why().starts_with("the file is corrupt"), "{err}");
        check_held_back(&out);
    }
}

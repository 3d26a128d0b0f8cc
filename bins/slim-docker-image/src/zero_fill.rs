//! Zero-filling a filesystem's free space, so that the disk image compresses well.
//!
//! The build's last act before power-off: every free block that still holds old data (deleted
//! layers, the image tarball) becomes zeros, which qcow2 compression turns into nothing. The
//! original ran `dd if=/dev/zero of=/zero.fill bs=1M` until the disk was full, silently, then
//! `rm`, `sync` and `fstrim -av`.
//!
//! Here one process writes a zero buffer (1 MiB by default: measured on tmpfs and ext4, larger
//! writes gained nothing; what is saved is dd's read of `/dev/zero` for every block) until the
//! filesystem says ENOSPC (or EDQUOT or EFBIG: full for this file), reporting its progress and
//! rate; fsyncs; removes the file — on
//! every path, an error or a signal included, because a full root filesystem breaks everything
//! after it — and syncs that filesystem. The fill file is opened without following a symlink and
//! must be a regular file: zeros written through a planted `/zero.fill -> /dev/vda` would erase
//! the disk. Then the trim command runs, best effort, its output in the log.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::error::{Context, Error, Result};
use shared::log::ProvisionLog;
use shared::log::diagnostics::stream_command;
use shared::log::progress::{mib, rate};

/// The original's fill file.
pub const DEFAULT_FILE: &str = "/zero.fill";
/// The size of one write.
pub const DEFAULT_BLOCK_SIZE: usize = 1024 * 1024;
/// Where sysfs is mounted.
pub const DEFAULT_SYSFS: &str = "/sys";
/// The original's trim command.
pub const DEFAULT_TRIM: &str = "fstrim -av";
/// How long the trim command may run before it is killed.
pub const TRIM_LIMIT: Duration = Duration::from_secs(30 * 60);

/// What one fill did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filled {
    /// Bytes of zeros written before the filesystem was full.
    pub bytes: u64,
    pub elapsed: Duration,
    /// Whether `stop` ended it before the filesystem was full.
    pub stopped: bool,
}

/// Why a fill failed.
#[derive(Debug)]
pub enum FillError {
    /// No fill happened, or it broke off; the fill file is gone (or was never ours).
    Unable(Error),
    /// The fill file could not be removed: the filesystem may still be full.
    NotRemoved(Error),
}

impl From<FillError> for Error {
    fn from(err: FillError) -> Error {
        match err {
            FillError::Unable(err) | FillError::NotRemoved(err) => err,
        }
    }
}

/// Writes zeros to `path` in writes of `block_size` bytes until its filesystem is full, calling
/// `progress(bytes, elapsed)` every `every`, and stopping early when `stop()` says so. The file is
/// removed before this returns, whatever happened.
pub fn fill(
    path: &Path,
    block_size: usize,
    every: Duration,
    mut progress: impl FnMut(u64, Duration),
    stop: impl Fn() -> bool,
) -> Result<Filled, FillError> {
    let shown = path.display();
    let mut file = open(path).map_err(FillError::Unable)?;
    let written = write_zeros(&mut file, block_size.max(1), every, &mut progress, &stop);
    // A full filesystem may refuse the flush too; the file goes away next in any case.
    let _ = file.sync_all();
    drop(file);
    std::fs::remove_file(path)
        .context(|| format!("removing the fill file {shown}"))
        .map_err(FillError::NotRemoved)?;
    let (bytes, elapsed, stopped) = written
        .context(|| format!("writing zeros to {shown}"))
        .map_err(FillError::Unable)?;
    sync_filesystem(path);
    Ok(Filled {
        bytes,
        elapsed,
        stopped,
    })
}

/// Opens (creates) the fill file: never through a symlink, and only a regular file.
fn open(path: &Path) -> Result<File> {
    let shown = path.display();
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // No symlink is followed; a FIFO without a reader fails rather than blocks.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .context(|| format!("creating the fill file {shown}"))?;
    let kind = file
        .metadata()
        .context(|| format!("checking {shown}"))?
        .file_type();
    if !kind.is_file() {
        let what = if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(Error::new(
            format!("refusing to fill {shown}"),
            format!("it is {what}; remove it or choose another --fill-file"),
        ));
    }
    Ok(file)
}

fn write_zeros(
    file: &mut File,
    block_size: usize,
    every: Duration,
    progress: &mut impl FnMut(u64, Duration),
    stop: &impl Fn() -> bool,
) -> io::Result<(u64, Duration, bool)> {
    file.set_len(0)?;
    let zeros = vec![0u8; block_size];
    let start = Instant::now();
    let mut next_report = start + every;
    let mut bytes: u64 = 0;
    loop {
        if stop() {
            return Ok((bytes, start.elapsed(), true));
        }
        match file.write(&zeros) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if is_full(&err) => break,
            Err(err) => return Err(err),
        }
        let now = Instant::now();
        if now >= next_report {
            progress(bytes, now - start);
            next_report = now + every;
        }
    }
    Ok((bytes, start.elapsed(), false))
}

/// ENOSPC, EDQUOT, EFBIG: no more room for this file.
fn is_full(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    )
}

/// `syncfs` on the filesystem that held `path` (the original's `sync`, for that filesystem).
fn sync_filesystem(path: &Path) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = File::open(dir) {
        let _ = nix::unistd::syncfs(&dir);
    }
}

/// When to write the zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Unless the filesystem's disk takes discards and the trim succeeds.
    Auto,
    /// Always (the original's behaviour).
    Always,
    /// Never: the trim alone.
    Never,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Auto, Mode::Always, Mode::Never];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Always => "always",
            Mode::Never => "never",
        }
    }

    pub fn parse(text: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| "expected auto, always or never".into())
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The block device under the filesystem that holds `dir`, and how many bytes one discard may
/// cover (0: it takes none), read from `sysfs` (`/sys`). `None` when the filesystem has no
/// block device (tmpfs, overlay, 9p) or sysfs does not say.
pub fn discard_support(sysfs: &Path, dir: &Path) -> Option<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let device = std::fs::canonicalize(sysfs.join(format!("dev/block/{major}:{minor}"))).ok()?;
    // A partition has no queue of its own: its disk's is the parent directory's.
    let queue = [device.join("queue"), device.parent()?.join("queue")]
        .into_iter()
        .find(|q| q.is_dir())?;
    let max = std::fs::read_to_string(queue.join("discard_max_bytes")).ok()?;
    let name = device.file_name()?.to_string_lossy().into_owned();
    Some((name, max.trim().parse().ok()?))
}

/// The zero-fill step of a tool.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    /// Where sysfs is mounted (`/sys`).
    pub sysfs: PathBuf,
    pub path: PathBuf,
    pub block_size: usize,
    /// How often progress is logged.
    pub progress_every: Duration,
    /// The trim command after the fill (argv; empty: none).
    pub trim: Vec<OsString>,
}

/// Frees the space as [`Mode`] says: in `auto`, when the disk under the fill file's filesystem
/// takes discards, the trim first, and the zero-fill only when the trim fails; otherwise the
/// zero-fill and then the trim ([`run`]). Returns whether `stop` ended a fill early.
pub fn free_space<W: Write>(
    config: &Config,
    tag: &str,
    log: &mut ProvisionLog<W>,
    stop: impl Fn() -> bool,
) -> Result<bool> {
    match config.mode {
        Mode::Always => run(config, tag, log, stop),
        Mode::Never => {
            say(log, tag, "skipped (--zero-fill never); trimming only");
            trim(config, tag, log);
            Ok(false)
        }
        Mode::Auto if trimmed_instead(config, tag, log) => Ok(false),
        Mode::Auto => run(config, tag, log, stop),
    }
}

fn say<W: Write>(log: &mut ProvisionLog<W>, tag: &str, text: &str) {
    log.message(format!("{tag}: zero-fill: {text}").as_bytes());
}

/// Syncs the filesystem and runs the trim command; whether it ran and exited 0.
fn trim<W: Write>(config: &Config, tag: &str, log: &mut ProvisionLog<W>) -> bool {
    sync_filesystem(&config.path);
    !config.trim.is_empty()
        && stream_command(log, &format!("{tag}: fstrim"), &config.trim, TRIM_LIMIT)
}

/// `auto`: when the disk takes discards, trims; whether that made the zeros unnecessary. Says
/// why zeros are written otherwise.
fn trimmed_instead<W: Write>(config: &Config, tag: &str, log: &mut ProvisionLog<W>) -> bool {
    let dir = config
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let why = match discard_support(&config.sysfs, dir) {
        Some((device, max)) if max > 0 && !config.trim.is_empty() => {
            if trim(config, tag, log) {
                let text = format!(
                    "not needed: {device} takes discards (discard_max_bytes {max}) and the trim \
                     succeeded, so the free blocks are unmapped, not just unused"
                );
                say(log, tag, &text);
                return true;
            }
            "the trim failed; writing zeros instead".to_string()
        }
        Some((device, _)) if config.trim.is_empty() => {
            format!("{device} may take discards, but there is no trim command; writing zeros")
        }
        Some((device, _)) => {
            format!("{device} takes no discards (discard_max_bytes 0); writing zeros")
        }
        None => format!(
            "no block device found under {} in {}; writing zeros",
            dir.display(),
            config.sysfs.display()
        ),
    };
    say(log, tag, &why);
    false
}

/// Fills, logs `TAG: zero-fill: …` lines, then runs the trim command with its output logged as
/// `TAG: fstrim: …`. Returns whether `stop` ended the fill early. A fill that cannot be done
/// (the file cannot be created or written) is a warning — the image is fine without it — but a
/// fill file that cannot be removed again is an error.
pub fn run<W: Write>(
    config: &Config,
    tag: &str,
    log: &mut ProvisionLog<W>,
    stop: impl Fn() -> bool,
) -> Result<bool> {
    let filled = fill(
        &config.path,
        config.block_size,
        config.progress_every,
        |bytes, elapsed| {
            log.message(
                format!(
                    "{tag}: zero-fill: {} written ({})",
                    mib(bytes),
                    rate(bytes, elapsed)
                )
                .as_bytes(),
            );
        },
        stop,
    );
    match filled {
        Ok(filled) => {
            let how = if filled.stopped {
                "stopped after"
            } else {
                "filesystem full after"
            };
            log.message(
                format!(
                    "{tag}: zero-fill: {how} {} in {:.1}s ({}); removed {}",
                    mib(filled.bytes),
                    filled.elapsed.as_secs_f64(),
                    rate(filled.bytes, filled.elapsed),
                    config.path.display()
                )
                .as_bytes(),
            );
            if filled.stopped {
                return Ok(true);
            }
        }
        Err(FillError::NotRemoved(err)) => return Err(err),
        Err(FillError::Unable(err)) => {
            log.message(format!("{tag}: WARNING: zero-fill skipped: {err}").as_bytes());
        }
    }
    if !config.trim.is_empty() {
        stream_command(log, &format!("{tag}: fstrim"), &config.trim, TRIM_LIMIT);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("zero-fill-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stop_ends_the_fill_and_removes_the_file() {
        let dir = scratch("stop");
        let path = dir.join("zero.fill");
        let calls = std::cell::Cell::new(0);
        let filled = fill(
            &path,
            64 * 1024,
            Duration::from_secs(60),
            |_, _| {},
            || {
                calls.set(calls.get() + 1);
                calls.get() > 3
            },
        )
        .unwrap();
        assert_eq!(filled.bytes, 3 * 64 * 1024);
        assert!(filled.stopped);
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_symlinks_and_devices() {
        let dir = scratch("refuse");
        let link = dir.join("zero.fill");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let err = Error::from(
            fill(&link, 4096, Duration::from_secs(1), |_, _| {}, || false).unwrap_err(),
        );
        assert!(err.what().starts_with("creating the fill file"), "{err}");
        assert!(link.symlink_metadata().is_ok(), "the link is left alone");
        let err = Error::from(
            fill(
                Path::new("/dev/null"),
                4096,
                Duration::from_secs(1),
                |_, _| {},
                || false,
            )
            .unwrap_err(),
        );
        assert_eq!(
            err.to_string(),
            "refusing to fill /dev/null: it is a device; remove it or choose another --fill-file"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn discard_support_reads_the_disk_of_a_partition() {
        use std::os::unix::fs::MetadataExt;
        let dir = scratch("sysfs");
        let dev = std::fs::metadata(&dir).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let disk = dir.join("devices/virtio1/block/vda");
        std::fs::create_dir_all(disk.join("vda1")).unwrap();
        std::fs::create_dir_all(disk.join("queue")).unwrap();
        std::fs::write(disk.join("queue/discard_max_bytes"), "2147483136\n").unwrap();
        std::fs::create_dir_all(dir.join("dev/block")).unwrap();
        let link = dir.join(format!("dev/block/{major}:{minor}"));
        std::os::unix::fs::symlink(disk.join("vda1"), &link).unwrap();
        assert_eq!(
            discard_support(&dir, &dir),
            Some(("vda1".to_string(), 2_147_483_136))
        );
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&disk, &link).unwrap();
        std::fs::write(disk.join("queue/discard_max_bytes"), "0\n").unwrap();
        assert_eq!(discard_support(&dir, &dir), Some(("vda".to_string(), 0)));
        std::fs::remove_file(&link).unwrap();
        assert_eq!(discard_support(&dir, &dir), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_filesystem_ends_the_fill() {
        // /dev/full answers every write with ENOSPC; it is a device, so the check is by hand.
        let mut full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let err = full.write(&[0u8; 16]).unwrap_err();
        assert!(is_full(&err));
    }
}

//! Reading a small input file: an env file, a key, a checksum, a state file.
//!
//! Every such file is a few bytes to a few kilobytes, and the path comes from an operator, a
//! disk or a flag. Reading it with `std::fs::read` trusts the path too much: `/dev/zero` or
//! `/dev/urandom` grows memory without bound, a FIFO blocks forever waiting for a writer, and a
//! large sparse file is read whole before the parser finds its first bad byte. [`read`] is the
//! project's one way to read such a file, and it:
//!
//! - opens with `O_NONBLOCK` (and `O_NOCTTY`), so that opening a FIFO or a terminal can never
//!   block; symbolic links are followed, as any reader of a file would;
//! - checks with `fstat(2)` on the open descriptor (no race with a rename) that it is a regular
//!   file, and refuses anything else, naming what it is;
//! - reads at most `cap + 1` bytes, and refuses a file larger than `cap`.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::os::atomic::kind_of;

/// The largest env file read (runtime.env, base.env, the build env files): 1 MiB, some
/// hundred times the largest the host writes.
pub const ENV_FILE_CAP: u64 = 1 << 20;
/// The largest key file read: 4 KiB (a key is 65 bytes).
pub const KEY_FILE_CAP: u64 = 4 << 10;

/// Reads `path`, a regular file of at most `cap` bytes. Errors read `reading <path>: <why>`.
pub fn read(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let what = || format!("reading {}", path.display());
    let file = open(path).map_err(|e| Error::new(what(), e))?;
    read_open(file, cap).map_err(|why| Error::new(what(), why))
}

/// Like [`read`], but a path that does not exist is `None`.
pub fn read_optional(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let what = || format!("reading {}", path.display());
    let file = match open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(what(), e)),
    };
    read_open(file, cap)
        .map(Some)
        .map_err(|why| Error::new(what(), why))
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn read_open(file: File, cap: u64) -> Result<Vec<u8>, String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "it is {}, not a regular file; give the path of a regular file",
            kind_of(meta.file_type())
        ));
    }
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "larger than {} bytes, which no file of this kind is; check the path",
            cap
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "small-file-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_up_to_the_cap() {
        let dir = scratch();
        let path = dir.join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read(&path, 5).unwrap(), b"12345");
        let err = read(&path, 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "reading {}: larger than 4 bytes, which no file of this kind is; check the path",
                path.display()
            )
        );
        assert_eq!(read_optional(&dir.join("missing"), 5).unwrap(), None);
        assert!(read(&dir.join("missing"), 5).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let dir = scratch();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let start = Instant::now();
        let err = read(&fifo, 10).unwrap_err();
        assert!(
            err.why().starts_with("it is a FIFO, not a regular file"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
        let err = read(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(err.why().starts_with("it is a character device"), "{err}");
        let err = read_optional(&dir, 10).unwrap_err();
        assert!(err.why().starts_with("it is a directory"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

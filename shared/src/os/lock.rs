//! Advisory locks (`flock(2)`) that serialise concurrent runs of a tool.
//!
//! Some steps are "look, then act": is this a mount point, then bind it; is this key missing,
//! then create it. Two runs at once both look before either acts, and both act. A lock held
//! around the whole step makes the second run look after the first has acted. `flock(2)` locks
//! belong to the open file, so a run that dies, however it dies, releases its lock, and a stale
//! lock file is harmless: only the lock on it counts, never its existence.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a busy lock is tried again.
const RETRY: Duration = Duration::from_millis(20);

/// An exclusive lock, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Locks the file at `path` (created with mode 0600 when missing), waiting at most
    /// `timeout` for another holder to let go.
    pub fn file(path: &Path, timeout: Duration) -> Result<Lock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| Error::new(format!("opening the lock file {}", path.display()), e))?;
        Lock::hold(file, path, timeout)
    }

    /// Locks the directory `dir` itself, which creates nothing in it.
    pub fn dir(dir: &Path, timeout: Duration) -> Result<Lock> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| Error::new(format!("opening {} to lock it", dir.display()), e))?;
        Lock::hold(file, dir, timeout)
    }

    fn hold(file: File, path: &Path, timeout: Duration) -> Result<Lock> {
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) if Instant::now() < deadline => std::thread::sleep(RETRY),
                Some(libc::EINTR) => {}
                Some(libc::EWOULDBLOCK) => {
                    return Err(Error::new(
                        format!("locking {}", path.display()),
                        format!(
                            "another run held the lock for more than {}; check for a hung \
                             run of this tool (fuser {})",
                            crate::duration::seconds(timeout),
                            path.display()
                        ),
                    ));
                }
                _ => return Err(Error::new(format!("locking {}", path.display()), err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up() {
        let dir = std::env::temp_dir().join(format!("lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let first = Lock::file(&path, Duration::from_secs(1)).unwrap();
        let err = Lock::file(&path, Duration::from_millis(100)).unwrap_err();
        assert!(err.why().starts_with("another run held the lock"), "{err}");
        let held = Lock::dir(&dir, Duration::from_secs(1)).unwrap();
        assert!(Lock::dir(&dir, Duration::ZERO).is_err());
        drop((first, held));
        // Released on drop. (Not with a zero timeout: a child that another test thread forks
        // holds a copy of every descriptor until it executes its program, and on a loaded
        // machine that moment can come late.)
        Lock::file(&path, Duration::from_secs(10)).unwrap();
        Lock::dir(&dir, Duration::from_secs(10)).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}

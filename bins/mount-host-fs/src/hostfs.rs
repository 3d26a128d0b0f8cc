//! The host's folder at `/host`: a shared mount point with virtio-9p on top.
//!
//! The emulator's container bind-mounts `/host` with `rshared` propagation. For a 9p mount made
//! after the container started (the host hot-plugs virtio-9p after a snapshot resume) to reach
//! the container, `/host` must itself be a shared mount point, which is why it is first bound on
//! itself (propagation is a property of mounts, not directories) and made shared, and only then
//! gets 9p (tag `hostfs`, `trans=virtio,version=9p2000.L`) on top.
//!
//! On a cold boot a missing 9p is normal (snapshot builds detach virtfs), so failure is a notice
//! and exit 0; after a resume the host needs the mount, so failure is exit 1. Both messages are
//! the original's, byte for byte. The original mounted another 9p over `/host` on every restart
//! of `stack.service`; here a `/host` whose topmost mount already is that 9p is left alone, so
//! running this any number of times leaves one bind and one 9p.
//!
//! Concurrent runs (a restart of `stack.service` while the host's post-resume call runs, say)
//! would each find `/host` without the 9p mount and each mount one. So the whole
//! look-then-mount sequence runs under an exclusive `flock(2)` on a lock file (by default
//! `/run/mount-host-fs.lock`): the second run looks only after the first has mounted, and leaves
//! it alone. A lock that cannot be taken is a warning, and the run goes on unserialised as the
//! original did.
//!
//! Everything is done with mount(2) and read back from `/proc/self/mountinfo` ([`shared::os::mounts`]),
//! never by running `mount` or `mountpoint`.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use shared::error::{Context, Error, Result};
use shared::os::lock::Lock;
use shared::os::mounts::{self, Mount};

pub const DEFAULT_MOUNT_POINT: &str = shared::emulator::HOST_DIR;
/// The virtio-9p mount tag the host's QEMU exports.
pub const DEFAULT_TAG: &str = "hostfs";
pub const DEFAULT_FS_TYPE: &str = "9p";
pub const DEFAULT_OPTIONS: &str = "trans=virtio,version=9p2000.L";
/// The lock that serialises concurrent runs.
pub const DEFAULT_LOCK_FILE: &str = "/run/mount-host-fs.lock";
/// How long a run waits for another one to finish.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The original's line when `--post-resume` cannot mount (keep: the host greps it).
pub const POST_RESUME_FAILED: &str = "post-resume 9p mount failed";

/// The original's cold-boot notice, for `mount_point` (`/host` gives the exact original text).
pub fn unavailable_message(mount_point: &Path) -> String {
    format!(
        "host filesystem unavailable; continuing with empty {}",
        mount_point.display()
    )
}

/// What to mount where. [`Default`] is the original's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFs {
    pub mount_point: PathBuf,
    /// The mount source: the 9p tag.
    pub tag: String,
    pub fs_type: String,
    pub options: String,
    /// The lock file that serialises concurrent runs.
    pub lock_file: PathBuf,
}

impl Default for HostFs {
    fn default() -> Self {
        HostFs {
            mount_point: PathBuf::from(DEFAULT_MOUNT_POINT),
            tag: DEFAULT_TAG.to_string(),
            fs_type: DEFAULT_FS_TYPE.to_string(),
            options: DEFAULT_OPTIONS.to_string(),
            lock_file: PathBuf::from(DEFAULT_LOCK_FILE),
        }
    }
}

/// How the host filesystem ended up mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Mounted,
    /// Its topmost mount already was this filesystem: nothing was mounted.
    AlreadyMounted,
}

/// Whether the mount a lookup of `path` sees is `fs_type` from `source` (the 9p already on top).
pub fn already_on_top(table: &[Mount], path: &Path, fs_type: &str, source: &str) -> bool {
    mounts::top(table, path).is_some_and(|m| m.fs_type == fs_type && m.source == source)
}

impl HostFs {
    /// `mkdir -p`, bind the mount point on itself unless it is a mount point, make it shared.
    /// Returns the resolved mount point and the failures, which (as in the original, which ran
    /// these steps without `set -e`) do not stop the 9p mount from being tried.
    pub fn prepare(&self) -> (PathBuf, Vec<Error>) {
        let mut warnings = Vec::new();
        let given = &self.mount_point;
        if let Err(err) =
            std::fs::create_dir_all(given).context(|| format!("creating {}", given.display()))
        {
            warnings.push(err);
        }
        // mountinfo shows resolved paths.
        let path = std::fs::canonicalize(given).unwrap_or_else(|_| given.clone());
        match mounts::read(Path::new(mounts::SELF_MOUNTINFO)) {
            Ok(table) if mounts::at(&table, &path).is_empty() => {
                if let Err(err) = mount(
                    Some(&path),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ) {
                    warnings.push(Error::new(
                        format!("binding {} on itself", path.display()),
                        err,
                    ));
                }
            }
            Ok(_) => {}
            // Without the table a bind could stack on an existing one; skip it and say why.
            Err(err) => warnings.push(err),
        }
        if let Err(err) = mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        ) {
            warnings.push(Error::new(
                format!("making {} a shared mount", path.display()),
                err,
            ));
        }
        (path, warnings)
    }

    /// Mounts the filesystem on `path` unless its topmost mount already is that filesystem.
    pub fn mount_on_top(&self, path: &Path) -> Result<Outcome> {
        let table = mounts::read(Path::new(mounts::SELF_MOUNTINFO))?;
        if already_on_top(&table, path, &self.fs_type, &self.tag) {
            return Ok(Outcome::AlreadyMounted);
        }
        mount(
            Some(self.tag.as_str()),
            path,
            Some(self.fs_type.as_str()),
            MsFlags::empty(),
            Some(self.options.as_str()),
        )
        .map_err(|err| {
            Error::new(
                format!(
                    "mounting {} {} on {} with {}",
                    self.fs_type,
                    self.tag,
                    path.display(),
                    self.options
                ),
                err,
            )
        })?;
        Ok(Outcome::Mounted)
    }

    /// The whole tool: prepare, mount, and report on `stderr` as the original did, prefixing our
    /// own extra lines (warnings, the reason of a failure) with `tool: `. Returns the exit status:
    /// 0, or 1 when `post_resume` and the mount failed.
    pub fn run(&self, post_resume: bool, tool: &str, stderr: &mut impl Write) -> u8 {
        let _lock = match Lock::file(&self.lock_file, LOCK_TIMEOUT) {
            Ok(lock) => Some(lock),
            Err(err) => {
                let _ = writeln!(
                    stderr,
                    "{tool}: warning: {err}; going on without serialising with other runs"
                );
                None
            }
        };
        let (path, warnings) = self.prepare();
        for warning in &warnings {
            let _ = writeln!(stderr, "{tool}: warning: {warning}");
        }
        match self.mount_on_top(&path) {
            Ok(_) => 0,
            Err(err) => {
                let (line, status) = if post_resume {
                    (POST_RESUME_FAILED.to_string(), 1)
                } else {
                    (unavailable_message(&self.mount_point), 0)
                };
                let _ = writeln!(stderr, "{line}\n{tool}: {err}");
                status
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Vec<Mount> {
        mounts::parse(text).unwrap()
    }

    const ROOT: &str = "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n";

    #[test]
    fn original_messages_are_kept() {
        assert_eq!(
            unavailable_message(Path::new(DEFAULT_MOUNT_POINT)),
            "host filesystem unavailable; continuing with empty /host"
        );
        assert_eq!(POST_RESUME_FAILED, "post-resume 9p mount failed");
        let fs = HostFs::default();
        assert_eq!(
            (fs.tag.as_str(), fs.fs_type.as_str(), fs.options.as_str()),
            ("hostfs", "9p", "trans=virtio,version=9p2000.L")
        );
    }

    #[test]
    fn nine_p_on_top_is_detected() {
        let t = table(&format!(
            "{ROOT}35 22 0:30 / /host rw shared:12 - ext4 /dev/vda1 rw\n\
             36 35 0:31 / /host rw shared:13 - 9p hostfs rw,trans=virtio\n"
        ));
        assert!(already_on_top(&t, Path::new("/host"), "9p", "hostfs"));
        assert!(!already_on_top(&t, Path::new("/other"), "9p", "hostfs"));
    }

    #[test]
    fn bind_only_is_not_nine_p() {
        let t = table(&format!(
            "{ROOT}35 22 252:1 /host /host rw shared:12 - ext4 /dev/vda1 rw\n"
        ));
        assert!(!already_on_top(&t, Path::new("/host"), "9p", "hostfs"));
    }

    #[test]
    fn nine_p_covered_by_another_mount_is_not_on_top() {
        let t = table(&format!(
            "{ROOT}35 22 0:30 / /host rw shared:12 - ext4 /dev/vda1 rw\n\
             36 35 0:31 / /host rw - 9p hostfs rw\n\
             37 36 0:40 / /host rw - tmpfs tmpfs rw\n"
        ));
        assert!(!already_on_top(&t, Path::new("/host"), "9p", "hostfs"));
    }

    #[test]
    fn another_nine_p_tag_is_not_ours() {
        let t = table(&format!(
            "{ROOT}35 22 0:30 / /host rw shared:12 - ext4 /dev/vda1 rw\n\
             36 35 0:31 / /host rw - 9p othertag rw\n"
        ));
        assert!(!already_on_top(&t, Path::new("/host"), "9p", "hostfs"));
    }

    #[test]
    fn stacked_nine_p_from_the_original_counts_as_on_top() {
        // What the original left after two restarts: 9p on 9p. Ours adds nothing more.
        let t = table(&format!(
            "{ROOT}35 22 0:30 / /host rw shared:12 - ext4 /dev/vda1 rw\n\
             36 35 0:31 / /host rw - 9p hostfs rw\n\
             37 36 0:32 / /host rw - 9p hostfs rw\n"
        ));
        assert!(already_on_top(&t, Path::new("/host"), "9p", "hostfs"));
    }
}

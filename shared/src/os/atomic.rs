//! Writing a file so that readers see the old contents or the new, never a part.
//!
//! Secrets and the rendered env file must survive a crash or a failed run intact: the original
//! redirected into the target (`> file`), so an error or a power cut midway left it truncated.
//! [`write`] puts the contents in a temporary file beside the target (same directory, hence the
//! same filesystem, so `rename(2)` is atomic), with the mode set explicitly rather than left to
//! the umask, fsyncs it, renames it over the target and fsyncs the directory so the rename itself
//! is durable. On any error the temporary file is removed and the target is left as it was.
//!
//! This is the project's one way to replace an output file, and it replaces regular files only.
//! A target that exists and is anything else is refused before anything is written: a device
//! node (`--output /dev/null` would otherwise replace the machine's `/dev/null` with a file), a
//! FIFO, a socket, a directory, and a symbolic link, whatever it points at. Symbolic links are
//! not followed: `rename(2)` would replace the link itself rather than the file it names, which
//! is never what the caller meant, so the caller is asked for the real path instead.
//!
//! [`stage`] is the first half on its own, for callers that must prepare several files before
//! any of them appears ([`Staged::replace`] or, to never replace anything,
//! [`Staged::create_new`], which links the file into place only when the name is free).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Context, Error, Result};

/// The marker in temporary file names: `.<name>.tmp-<pid>-<n>`.
pub const TEMP_MARKER: &str = ".tmp-";

/// What the `--help` of a tool that writes files through this module says about the targets.
pub const TARGET_RULE: &str = "An output file is replaced atomically (a temporary file in the \
    same directory, fsync, rename) and only when it is missing or a regular file: a device, \
    FIFO, socket, directory or symbolic link in its place is refused and left alone (symbolic \
    links are not followed; give the real path).";

/// Writes `contents` to `path` atomically with permissions `mode` (e.g. `0o600`).
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    stage(path, contents, mode)?.replace()
}

/// The kind of a file that is not a regular file, in words.
pub fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Refuses a target that exists and is not a regular file (symbolic links included): what
/// [`write`] checks, for a caller that wants to know before it changes anything else.
pub fn check_target(path: &Path) -> Result<()> {
    let what = || format!("writing {}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) => Err(Error::new(
            what(),
            format!(
                "it exists and is {}, not a regular file; refusing to replace it (remove it, \
                 or name a regular file{})",
                kind_of(meta.file_type()),
                if meta.file_type().is_symlink() {
                    ": symbolic links are not followed"
                } else {
                    ""
                }
            ),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::new(what(), e)),
    }
}

/// A complete, synced temporary file beside its target, not yet in place. Dropping it removes
/// the temporary file.
pub struct Staged {
    temp: TempFile,
    target: PathBuf,
    dir: PathBuf,
}

/// Writes `contents` to a new temporary file beside `path` (mode `mode`, synced), after checking
/// that `path` is missing or a regular file. Nothing is visible at `path` yet.
pub fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<Staged> {
    let what = || format!("writing {}", path.display());
    let name = path
        .file_name()
        .ok_or_else(|| Error::new(what(), "the path does not name a file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    check_target(path)?;
    let (temp_path, mut file) = create_temp(dir, &name.to_string_lossy(), mode).context(what)?;
    let temp = TempFile(Some(temp_path));
    // The mode given at open is filtered by the umask; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .context(what)?;
    file.write_all(contents).context(what)?;
    file.sync_all().context(what)?;
    Ok(Staged {
        temp,
        target: path.to_path_buf(),
        dir: dir.to_path_buf(),
    })
}

impl Staged {
    /// The target this file is meant for.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the file over its target (checked again just before) and syncs the directory.
    pub fn replace(self) -> Result<()> {
        let what = || format!("writing {}", self.target.display());
        check_target(&self.target)?;
        std::fs::rename(self.temp.path(), &self.target).context(what)?;
        self.temp.keep();
        sync_dir(&self.dir)
    }

    /// Links the file in at its target only if nothing is there (`link(2)`, which never
    /// replaces): `Ok(true)` when it was put in place, `Ok(false)` when the name was taken (by
    /// anything: nothing is changed then). The temporary name is removed either way.
    pub fn create_new(self) -> Result<bool> {
        let what = || format!("creating {}", self.target.display());
        match std::fs::hard_link(self.temp.path(), &self.target) {
            Ok(()) => {
                drop(self.temp);
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::new(what(), e)),
        }
    }
}

/// fsync(2) on a directory, so that a rename or link in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("syncing directory {}", dir.display()))
}

/// Creates a new, empty file that no one else has open.
fn create_temp(dir: &Path, name: &str, mode: u32) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}{TEMP_MARKER}{}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            // Left behind by a process that died with our pid: try the next name.
            Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Removes the temporary file when dropped, unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `mkdir -p` for the parents of `dir` (mode 0755 before the umask), then `dir` itself with
/// `mode` when it has to be created. An existing directory keeps its mode.
pub fn create_dir_all(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let what = || format!("creating directory {}", dir.display());
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).context(what)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(Error::new(what(), e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).context(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "atomic-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_contents_with_the_exact_mode() {
        let dir = scratch();
        let path = dir.join("out.env");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"new\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(names(&dir), vec!["out.env"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failure_leaves_target_and_no_temp_file() {
        let dir = scratch();
        // A directory in the way: rename(2) of a file over it fails.
        let path = dir.join("target");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "kept").unwrap();
        let err = write(&path, b"x", 0o600).unwrap_err();
        assert_eq!(err.what(), format!("writing {}", path.display()));
        assert!(
            err.why().starts_with("it exists and is a directory"),
            "{err}"
        );
        assert_eq!(names(&dir), vec!["target"]);
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_every_target_that_is_not_a_regular_file() {
        let dir = scratch();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = write(&fifo, b"x", 0o600).unwrap_err();
        assert!(err.why().starts_with("it exists and is a FIFO"), "{err}");
        let link = dir.join("link");
        std::fs::write(dir.join("real"), "kept").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), &link).unwrap();
        let err = write(&link, b"x", 0o600).unwrap_err();
        assert!(
            err.why().starts_with("it exists and is a symbolic link"),
            "{err}"
        );
        assert!(
            err.why().contains("symbolic links are not followed"),
            "{err}"
        );
        let err = write(Path::new("/dev/null"), b"x", 0o600).unwrap_err();
        assert!(
            err.why().starts_with("it exists and is a character device"),
            "{err}"
        );
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(dir.join("real")).unwrap(), b"kept");
        assert_eq!(names(&dir), vec!["fifo", "link", "real"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn create_new_never_replaces() {
        let dir = scratch();
        let path = dir.join("key");
        assert!(stage(&path, b"first", 0o600).unwrap().create_new().unwrap());
        assert!(
            !stage(&path, b"second", 0o600)
                .unwrap()
                .create_new()
                .unwrap()
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // A staged file that is dropped leaves nothing behind.
        drop(stage(&dir.join("other"), b"x", 0o600).unwrap());
        assert_eq!(names(&dir), vec!["key"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = scratch();
        let path = dir.join("no/such/file");
        assert!(write(&path, b"x", 0o600).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn create_dir_all_sets_the_leaf_mode_only_when_creating() {
        let dir = scratch();
        let leaf = dir.join("a/b");
        create_dir_all(&leaf, 0o700).unwrap();
        assert_eq!(std::fs::metadata(&leaf).unwrap().mode() & 0o7777, 0o700);
        std::fs::set_permissions(&leaf, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_dir_all(&leaf, 0o700).unwrap();
        assert_eq!(std::fs::metadata(&leaf).unwrap().mode() & 0o7777, 0o750);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! `--install DIR`: one symbolic link per tool in DIR, each pointing at this binary.
//!
//! The multicall binary picks the tool from the name it was called by, so a link named
//! `wait-for-deps` runs wait-for-deps; links keep one copy of the binary on the guest. Targets
//! are absolute, so a link works wherever DIR is.
//!
//! Running it again is safe. A link that already points at this binary is kept; a link that
//! points anywhere else (an earlier install location, a dangling path) is replaced atomically: a
//! new link is made under a temporary name and renamed over the old one, so the name never
//! disappears in between. Anything that is not a symbolic link is left alone and reported: it may
//! be a file an operator put there, and overwriting it would lose it.

use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use shared::error::{Context, Error};

/// What happened to one name.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Kept,
    Replaced {
        was: PathBuf,
    },
    /// A file that is not a symbolic link is in the way; nothing was changed.
    Refused,
}

/// Links every name in `names` in `dir` to `target`, then reports each outcome on `out` (and
/// each refusal on `err`). Returns the outcomes, in the order of `names`.
///
/// Every link is made before a word of the report is written, so a report that cannot be
/// written (stdout on a full disk, or a pipe closed early by `| head -1`) costs no link: it is an
/// error only after the work is done.
pub fn install<'a>(
    dir: &Path,
    target: &Path,
    names: impl IntoIterator<Item = &'a str>,
    tool: &str,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Vec<Outcome>, Error> {
    let created_dir = prepare_dir(dir)?;
    let mut done = Vec::new();
    for name in names {
        let link = dir.join(name);
        let outcome = link_one(&link, target)?;
        done.push((link, outcome));
    }
    let report = |e: io::Error| Error::new("writing the report (every link was made)", e);
    if created_dir {
        writeln!(out, "created directory {}", dir.display()).map_err(report)?;
    }
    for (link, outcome) in &done {
        match outcome {
            Outcome::Created => writeln!(out, "created {} -> {}", link.display(), target.display()),
            Outcome::Kept => writeln!(out, "kept {} -> {}", link.display(), target.display()),
            Outcome::Replaced { was } => writeln!(
                out,
                "replaced {} -> {} (was -> {})",
                link.display(),
                target.display(),
                was.display()
            ),
            Outcome::Refused => writeln!(
                err,
                "{tool}: {} exists and is not a symbolic link; left alone (remove it and run \
                 --install again)",
                link.display()
            ),
        }
        .map_err(report)?;
    }
    out.flush().map_err(report)?;
    Ok(done.into_iter().map(|(_, outcome)| outcome).collect())
}

/// Makes sure `dir` is a directory, creating it (and its parents) when nothing is there.
/// Returns whether it was created. Anything else in the way is named: a file, a dangling
/// symbolic link, a loop of links.
fn prepare_dir(dir: &Path) -> Result<bool, Error> {
    let what = || format!("installing into {}", dir.display());
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(false),
        Ok(meta) => Err(Error::new(
            what(),
            format!(
                "it is {}, not a directory; name a directory (it is created when missing)",
                shared::os::atomic::kind_of(meta.file_type())
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Ok(points_at) = std::fs::read_link(dir) {
                return Err(Error::new(
                    what(),
                    format!(
                        "it is a symbolic link to {}, which does not exist; create that \
                         directory or name another",
                        points_at.display()
                    ),
                ));
            }
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
            Ok(true)
        }
        Err(e) => Err(Error::new(what(), e)),
    }
}

fn link_one(link: &Path, target: &Path) -> Result<Outcome, Error> {
    let was = match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            symlink(target, link).context(|| format!("creating the link {}", link.display()))?;
            return Ok(Outcome::Created);
        }
        Err(e) => return Err(Error::new(format!("inspecting {}", link.display()), e)),
        Ok(meta) if !meta.file_type().is_symlink() => return Ok(Outcome::Refused),
        Ok(_) => {
            std::fs::read_link(link).context(|| format!("reading the link {}", link.display()))?
        }
    };
    if was == target {
        return Ok(Outcome::Kept);
    }
    let file_name = link
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = link.with_file_name(format!(".{file_name}.install-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    symlink(target, &temp).context(|| format!("creating the link {}", temp.display()))?;
    if let Err(e) = std::fs::rename(&temp, link) {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::new(
            format!("replacing the link {}", link.display()),
            e,
        ));
    }
    Ok(Outcome::Replaced { was })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "emulator-tools-install-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A writer that always fails, as stdout does on a full disk.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn links_are_made_even_when_the_report_cannot_be_written() {
        let dir = scratch();
        let target = Path::new("/opt/multicall");
        let err = install(&dir, target, ["a", "b"], "t", &mut Full, &mut Full).unwrap_err();
        assert_eq!(err.what(), "writing the report (every link was made)");
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), target);
        assert_eq!(std::fs::read_link(dir.join("b")).unwrap(), target);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn creates_keeps_replaces_and_refuses() {
        let dir = scratch();
        let target = Path::new("/opt/multicall");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let first = install(&dir, target, ["a", "b"], "t", &mut out, &mut err).unwrap();
        assert_eq!(first, [Outcome::Created, Outcome::Created]);
        std::fs::remove_file(dir.join("b")).unwrap();
        symlink("/old/place", dir.join("b")).unwrap();
        std::fs::write(dir.join("c"), "mine").unwrap();
        let again = install(&dir, target, ["a", "b", "c"], "t", &mut out, &mut err).unwrap();
        assert_eq!(
            again,
            [
                Outcome::Kept,
                Outcome::Replaced {
                    was: PathBuf::from("/old/place")
                },
                Outcome::Refused
            ]
        );
        assert_eq!(std::fs::read_link(dir.join("b")).unwrap(), target);
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "mine");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            3,
            "no temporary link left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

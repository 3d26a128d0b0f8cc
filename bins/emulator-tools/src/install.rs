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

/// Links every name in `names` in `dir` to `target`, reporting each outcome on `out` (and each
/// refusal on `err`). Returns the outcomes, in the order of `names`.
pub fn install<'a>(
    dir: &Path,
    target: &Path,
    names: impl IntoIterator<Item = &'a str>,
    tool: &str,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Vec<Outcome>, Error> {
    let report = |e: io::Error| Error::new("writing the report", e);
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        writeln!(out, "created directory {}", dir.display()).map_err(report)?;
    }
    let mut outcomes = Vec::new();
    for name in names {
        let link = dir.join(name);
        let outcome = link_one(&link, target)?;
        match &outcome {
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
        outcomes.push(outcome);
    }
    out.flush().map_err(report)?;
    Ok(outcomes)
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

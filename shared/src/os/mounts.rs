//! The kernel's mount table, read from `/proc/self/mountinfo`.
//!
//! `mountpoint -q` and "is 9p already on top of /host" are both questions about this table, so
//! both are answered here from one parser rather than by running `mountpoint` or `mount`. The
//! format is documented in proc(5): the mount point is field 5, the filesystem type and source
//! follow the `-` separator, and spaces, tabs, newlines and backslashes in paths are written as
//! octal escapes (`\040`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// The mount table of the calling process's namespace.
pub const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub parent: u64,
    /// The root of the mount within its filesystem (`/` unless a bind of a subdirectory).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Optional fields such as `shared:12` or `master:3`.
    pub tags: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl Mount {
    /// Whether mount events propagate from this mount to its peers (`mount --make-shared`).
    pub fn is_shared(&self) -> bool {
        self.tags.iter().any(|t| t.starts_with("shared:"))
    }
}

/// Parses mountinfo text. A malformed line is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Mount>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            parse_line(line).ok_or_else(|| {
                Error::new(
                    format!("parsing mountinfo line {}", n + 1),
                    format!("unexpected format: {line:?}"),
                )
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let id = head.next()?.parse().ok()?;
    let parent = head.next()?.parse().ok()?;
    let _dev = head.next()?;
    let root = unescape(head.next()?);
    let mount_point = unescape(head.next()?);
    let _options = head.next()?;
    let tags = head.map(str::to_string).collect();
    let mut tail = tail.split(' ');
    let fs_type = tail.next()?.to_string();
    let source = tail.next()?.to_string();
    Some(Mount {
        id,
        parent,
        root,
        mount_point,
        tags,
        fs_type,
        source,
    })
}

/// Undoes the kernel's `\ooo` escaping of paths. Only `\000` to `\377` stand for a byte; any
/// other backslash (`\777` included, which is no byte) is kept as it is.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\'
                && (b'0'..=b'3').contains(&d[0])
                && d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
        });
        match octal {
            Some(d) => {
                let value = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                out.push(u8::try_from(value).unwrap_or(u8::MAX));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Reads and parses a mountinfo file.
pub fn read(path: &Path) -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

/// The mounts whose mount point is `path`, oldest first: the last one is the one a lookup of
/// `path` sees.
pub fn at<'a>(table: &'a [Mount], path: &Path) -> Vec<&'a Mount> {
    table.iter().filter(|m| m.mount_point == path).collect()
}

/// The mount a lookup of `path` sees: of the mounts stacked at `path`, the one nothing else at
/// `path` is mounted on. The table's order is not relied on (propagation can list a mount before
/// the one it sits on).
pub fn top<'a>(table: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let stack = at(table, path);
    stack
        .iter()
        .rev()
        .find(|m| !stack.iter().any(|above| above.parent == m.id))
        .copied()
}

/// Whether `path` is a mount point in the calling process's namespace (`mountpoint -q`).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let path = std::fs::canonicalize(path).context(|| format!("resolving {}", path.display()))?;
    Ok(!at(&read(Path::new(SELF_MOUNTINFO))?, &path).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 22 0:30 / /host rw,relatime shared:12 - tmpfs tmpfs rw
36 35 0:31 / /host rw,relatime - 9p hostfs rw,trans=virtio
40 22 0:33 /sub /with\\040space rw master:3 - ext4 /dev/loop0 ro
";

    #[test]
    fn parses_fields_tags_and_escapes() {
        let table = parse(SAMPLE).unwrap();
        assert_eq!(table.len(), 4);
        assert_eq!(table[1].mount_point, Path::new("/host"));
        assert!(table[1].is_shared());
        assert!(!table[2].is_shared());
        assert_eq!(table[2].fs_type, "9p");
        assert_eq!(table[2].source, "hostfs");
        assert_eq!(table[3].mount_point, Path::new("/with space"));
        assert_eq!(table[3].root, Path::new("/sub"));
        assert_eq!(table[3].tags, vec!["master:3".to_string()]);
    }

    #[test]
    fn stacked_mounts_are_listed_oldest_first() {
        let table = parse(SAMPLE).unwrap();
        let host = at(&table, Path::new("/host"));
        assert_eq!(host.len(), 2);
        assert_eq!(host.last().unwrap().fs_type, "9p");
    }

    #[test]
    fn top_follows_parent_links_not_table_order() {
        let table = parse(SAMPLE).unwrap();
        assert_eq!(top(&table, Path::new("/host")).unwrap().id, 36);
        let reordered = parse(
            "36 35 0:31 / /host rw - 9p hostfs rw\n\
             22 1 252:1 / / rw - ext4 /dev/vda1 rw\n\
             35 22 0:30 / /host rw shared:12 - tmpfs tmpfs rw\n",
        )
        .unwrap();
        assert_eq!(top(&reordered, Path::new("/host")).unwrap().id, 36);
        assert_eq!(top(&table, Path::new("/nothing")), None);
    }

    #[test]
    fn octal_escapes_that_are_no_byte_are_kept_not_overflowed() {
        assert_eq!(unescape("/a\\777b"), Path::new("/a\\777b"));
        assert_eq!(unescape("/a\\400"), Path::new("/a\\400"));
        assert_eq!(
            unescape("/x\\377\\000\\134"),
            PathBuf::from(OsString::from_vec(b"/x\xff\0\\".to_vec()))
        );
        assert_eq!(unescape("/end\\12"), Path::new("/end\\12"));
    }

    #[test]
    fn malformed_line_names_its_number() {
        let err = parse("22 1 252:1 / / rw\n").unwrap_err();
        assert_eq!(err.what(), "parsing mountinfo line 1");
    }
}

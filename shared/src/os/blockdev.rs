//! Finding a disk by its filesystem label, and mounting it read-only.
//!
//! The host attaches its configuration as volumes labelled `STACKCFG` and `STACKBUNDLE`. The
//! original relied on udev's `/dev/disk/by-label/<LABEL>` link and on `mount` guessing the
//! filesystem type. udev may not run (minimal images, containers, tests), and mount(2) needs a
//! type, so both are done here without helpers:
//!
//! - [`find_by_label`] uses `<by-label dir>/<LABEL>` when it resolves to a device, and otherwise
//!   scans `/sys/class/block/*`: for every device with a non-zero size it opens
//!   `/dev/<DEVNAME>` (from the entry's `uevent`) and reads the label from the superblock, as
//!   `blkid -L` would. Exactly one device may carry the label.
//! - [`probe`] reads the superblocks this project meets: ext2/3/4 (magic `0xEF53` at byte
//!   1024+0x38, label 16 bytes at 1024+0x78), ISO9660 (volume descriptors from byte 32768,
//!   `CD001`, the primary one's volume id at +40, 32 bytes space-padded) and FAT12/16/32 (the
//!   label in the boot sector).
//! - [`mount_readonly`] mounts with the probed type (`ext4` for ext2/3/4, `iso9660`, `vfat`) and,
//!   when the type is unknown or the kernel lacks that driver, tries every non-`nodev` type in
//!   `/proc/filesystems` in turn, as busybox's `mount` does. A target that is already a mount
//!   point is left alone (the original's `mountpoint -q || mount`).

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::error::{Context, Error, Result};
use crate::os::mounts;

pub const DEFAULT_BY_LABEL_DIR: &str = "/dev/disk/by-label";
pub const DEFAULT_SYS_BLOCK_DIR: &str = "/sys/class/block";
pub const DEFAULT_DEV_DIR: &str = "/dev";
pub const DEFAULT_PROC_FILESYSTEMS: &str = "/proc/filesystems";

/// Where [`find_by_label`] looks; also the flags of every tool that finds a disk by label.
#[derive(Debug, Clone, clap::Args)]
pub struct Lookup {
    /// udev's label links, tried first.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BY_LABEL_DIR)]
    pub by_label_dir: PathBuf,
    /// The block devices scanned when there is no label link (their superblocks are read).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SYS_BLOCK_DIR)]
    pub sys_block_dir: PathBuf,
    /// Where the device nodes of the scanned devices are (named by their `uevent`'s DEVNAME).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DEV_DIR)]
    pub dev_dir: PathBuf,
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup {
            by_label_dir: DEFAULT_BY_LABEL_DIR.into(),
            sys_block_dir: DEFAULT_SYS_BLOCK_DIR.into(),
            dev_dir: DEFAULT_DEV_DIR.into(),
        }
    }
}

/// A filesystem family this module recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext,
    Iso9660,
    Vfat,
}

impl FsKind {
    /// The type to hand mount(2): the ext4 driver mounts ext2 and ext3 too.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsKind::Ext => "ext4",
            FsKind::Iso9660 => "iso9660",
            FsKind::Vfat => "vfat",
        }
    }
}

/// What a superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: FsKind,
    /// The label, padding removed; `None` when the filesystem has none.
    pub label: Option<String>,
}

/// Reads the superblock of `device` (a block device or an image file). `Ok(None)` when it is
/// none of the recognised filesystems.
pub fn probe(device: &Path) -> Result<Option<Probe>> {
    let file = File::open(device).context(|| format!("opening {}", device.display()))?;
    probe_file(&file).context(|| format!("reading {}", device.display()))
}

fn probe_file(file: &File) -> std::io::Result<Option<Probe>> {
    if let Some(probe) = probe_ext(file)? {
        return Ok(Some(probe));
    }
    if let Some(probe) = probe_iso9660(file)? {
        return Ok(Some(probe));
    }
    probe_vfat(file)
}

/// Reads `len` bytes at `offset`; `None` when the device is shorter.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0; len];
    match file.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// A label field: cut at the first NUL, padding blanks removed, `None` when nothing is left.
fn label_field(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let label = String::from_utf8_lossy(&bytes[..end]);
    let label = label.trim_end_matches(' ');
    (!label.is_empty()).then(|| label.to_string())
}

fn probe_ext(file: &File) -> std::io::Result<Option<Probe>> {
    let Some(sb) = read_at(file, 1024, 0x88)? else {
        return Ok(None);
    };
    if sb[0x38..0x3a] != [0x53, 0xEF] {
        return Ok(None);
    }
    Ok(Some(Probe {
        kind: FsKind::Ext,
        label: label_field(&sb[0x78..0x88]),
    }))
}

fn probe_iso9660(file: &File) -> std::io::Result<Option<Probe>> {
    // Volume descriptors are 2048-byte sectors from sector 16, ended by type 255.
    for sector in 16..48u64 {
        let Some(vd) = read_at(file, sector * 2048, 72)? else {
            return Ok(None);
        };
        if &vd[1..6] != b"CD001" {
            return Ok(None);
        }
        match vd[0] {
            1 => {
                return Ok(Some(Probe {
                    kind: FsKind::Iso9660,
                    label: label_field(&vd[40..72]),
                }));
            }
            255 => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

fn probe_vfat(file: &File) -> std::io::Result<Option<Probe>> {
    let Some(bs) = read_at(file, 0, 512)? else {
        return Ok(None);
    };
    if bs[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    // FAT32 keeps its extended boot record at 0x40, FAT12/16 at 0x24; the label is 11 bytes
    // after the 0x29 signature, then the type string.
    let label_at = if &bs[0x52..0x57] == b"FAT32" {
        0x47
    } else if &bs[0x36..0x39] == b"FAT" {
        0x2B
    } else {
        return Ok(None);
    };
    let label = label_field(&bs[label_at..label_at + 11]).filter(|l| l != "NO NAME");
    Ok(Some(Probe {
        kind: FsKind::Vfat,
        label,
    }))
}

/// The block device carrying filesystem label `label`.
pub fn find_by_label(label: &str, lookup: &Lookup) -> Result<PathBuf> {
    let what = || format!("finding the disk labelled {label}");
    let link = lookup.by_label_dir.join(label);
    if let Ok(device) = std::fs::canonicalize(&link) {
        return Ok(device);
    }
    let scan = scan(label, lookup).context(what)?;
    match scan.found.as_slice() {
        [device] => Ok(device.clone()),
        [] => {
            let mut why = format!(
                "{} does not resolve and no device under {} has that label (ext2/3/4, iso9660 \
                 or vfat); check that the disk is attached (lsblk -f, blkid -L {label})",
                link.display(),
                lookup.sys_block_dir.display()
            );
            if !scan.unreadable.is_empty() {
                why.push_str("; could not read: ");
                why.push_str(&scan.unreadable.join(", "));
            }
            Err(Error::new(what(), why))
        }
        several => Err(Error::new(
            what(),
            format!(
                "several devices carry it: {}; detach all but one",
                several
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

struct Scan {
    found: Vec<PathBuf>,
    /// `device: why` for the devices whose superblock could not be read.
    unreadable: Vec<String>,
}

fn scan(label: &str, lookup: &Lookup) -> Result<Scan> {
    let dir = &lookup.sys_block_dir;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut scan = Scan {
        found: Vec::new(),
        unreadable: Vec::new(),
    };
    for entry in names {
        // Unattached loop devices and empty drives have size 0: nothing to read.
        let size = std::fs::read_to_string(entry.join("size")).unwrap_or_default();
        if size.trim().parse::<u64>().unwrap_or(0) == 0 {
            continue;
        }
        let Some(devname) = devname(&entry) else {
            continue;
        };
        let device = lookup.dev_dir.join(devname);
        match probe(&device) {
            Ok(Some(Probe {
                label: Some(found), ..
            })) if found == label => scan.found.push(device),
            Ok(_) => {}
            Err(e) => scan.unreadable.push(e.to_string()),
        }
    }
    Ok(scan)
}

/// `DEVNAME` from a sysfs block entry's `uevent` (`loop0`, `sda1`, `mapper/…` is `dm-0`).
fn devname(entry: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(entry.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty() && !n.split('/').any(|c| c == ".."))
        .map(str::to_string)
}

/// What [`mount_readonly`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mounted {
    /// The target was a mount point already; nothing was done.
    Already,
    /// `device` was mounted with this filesystem type.
    Now { device: PathBuf, fs_type: String },
}

/// A disk that a tool mounts read-only: its device, or the label to find it by, and where it
/// goes. render-stack-env's `STACKCFG` and install-emulator-containers' `STACKBUNDLE` are both
/// mounted the way the originals did: `mountpoint -q MP || mount -o ro DEVICE MP`.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Found by `label` when `None`.
    pub device: Option<PathBuf>,
    pub label: String,
    pub lookup: Lookup,
    /// The kernel's type list for the fallback (`/proc/filesystems`).
    pub proc_filesystems: PathBuf,
    pub mount_point: PathBuf,
}

impl Disk {
    /// The disk labelled `label`, mounted at `mount_point`, looked up in the default places.
    pub fn new(label: &str, mount_point: &str) -> Disk {
        Disk {
            device: None,
            label: label.into(),
            lookup: Lookup::default(),
            proc_filesystems: DEFAULT_PROC_FILESYSTEMS.into(),
            mount_point: mount_point.into(),
        }
    }

    /// Mounts the disk read-only at its mount point (created like `mkdir -p`) unless that is a
    /// mount point already; the device is looked up only when a mount is needed.
    pub fn mount(&self) -> Result<Mounted> {
        let target = &self.mount_point;
        std::fs::create_dir_all(target).context(|| format!("creating {}", target.display()))?;
        if mounts::is_mount_point(target)? {
            return Ok(Mounted::Already);
        }
        let device = match &self.device {
            Some(device) => device.clone(),
            None => find_by_label(&self.label, &self.lookup)?,
        };
        mount_readonly(&device, target, &self.proc_filesystems)
    }
}

/// Mounts `device` read-only at `target` (created like `mkdir -p`) unless `target` is a mount
/// point already. `proc_filesystems` is the kernel's type list for the fallback.
pub fn mount_readonly(device: &Path, target: &Path, proc_filesystems: &Path) -> Result<Mounted> {
    std::fs::create_dir_all(target).context(|| format!("creating {}", target.display()))?;
    if mounts::is_mount_point(target)? {
        return Ok(Mounted::Already);
    }
    let what = || {
        format!(
            "mounting {} read-only at {}",
            device.display(),
            target.display()
        )
    };
    let probed = probe(device).context(what)?.map(|p| p.kind.mount_type());
    let mut tried: Vec<String> = Vec::new();
    let mut try_type = |fs_type: &str| -> Option<Errno> {
        let result = nix::mount::mount(
            Some(device),
            target,
            Some(fs_type),
            MsFlags::MS_RDONLY,
            None::<&str>,
        );
        match result {
            Ok(()) => None,
            Err(errno) => {
                tried.push(format!("{fs_type}: {}", errno.desc()));
                Some(errno)
            }
        }
    };
    if let Some(fs_type) = probed {
        match try_type(fs_type) {
            None => {
                return Ok(Mounted::Now {
                    device: device.to_path_buf(),
                    fs_type: fs_type.to_string(),
                });
            }
            // The kernel lacks that driver: fall back to what it has.
            Some(Errno::ENODEV) => {}
            Some(_) => return Err(mount_error(what(), &tried, device)),
        }
    }
    for fs_type in kernel_block_types(proc_filesystems)? {
        if Some(fs_type.as_str()) == probed {
            continue;
        }
        if try_type(&fs_type).is_none() {
            return Ok(Mounted::Now {
                device: device.to_path_buf(),
                fs_type,
            });
        }
    }
    Err(mount_error(what(), &tried, device))
}

fn mount_error(what: String, tried: &[String], device: &Path) -> Error {
    let tried = if tried.is_empty() {
        "no filesystem type to try".to_string()
    } else {
        format!("tried {}", tried.join(", "))
    };
    Error::new(
        what,
        format!(
            "{tried}; check the disk's filesystem (blkid {}) and the kernel log (dmesg)",
            device.display()
        ),
    )
}

/// The filesystem types in `/proc/filesystems` that need a device (no `nodev` flag).
pub fn kernel_block_types(proc_filesystems: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(proc_filesystems)
        .context(|| format!("reading {}", proc_filesystems.display()))?;
    Ok(parse_filesystems(&text))
}

fn parse_filesystems(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (flag, name) = line.split_once('\t')?;
            (flag.trim().is_empty() && !name.trim().is_empty()).then(|| name.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn scratch() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "blockdev-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ext_image(label: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 8192];
        img[1024 + 0x38] = 0x53;
        img[1024 + 0x39] = 0xEF;
        img[1024 + 0x78..1024 + 0x78 + label.len()].copy_from_slice(label);
        img
    }

    fn iso_image(label: &str) -> Vec<u8> {
        let mut img = vec![0u8; 19 * 2048];
        // A boot record first, then the primary descriptor, then the terminator.
        img[16 * 2048] = 0;
        img[16 * 2048 + 1..16 * 2048 + 6].copy_from_slice(b"CD001");
        let pvd = 17 * 2048;
        img[pvd] = 1;
        img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        let mut id = [b' '; 32];
        id[..label.len()].copy_from_slice(label.as_bytes());
        img[pvd + 40..pvd + 72].copy_from_slice(&id);
        img[18 * 2048] = 255;
        img[18 * 2048 + 1..18 * 2048 + 6].copy_from_slice(b"CD001");
        img
    }

    fn vfat_image(fat32: bool, label: &str) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[510] = 0x55;
        img[511] = 0xAA;
        let (label_at, type_at, kind) = if fat32 {
            (0x47, 0x52, b"FAT32   ")
        } else {
            (0x2B, 0x36, b"FAT16   ")
        };
        let mut l = [b' '; 11];
        l[..label.len()].copy_from_slice(label.as_bytes());
        img[label_at..label_at + 11].copy_from_slice(&l);
        img[type_at..type_at + 8].copy_from_slice(kind);
        img
    }

    fn probe_bytes(bytes: &[u8]) -> Option<Probe> {
        let dir = scratch();
        let path = dir.join("img");
        std::fs::write(&path, bytes).unwrap();
        let probe = probe(&path).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        probe
    }

    #[test]
    fn probes_each_family() {
        let probe = |b: &[u8]| probe_bytes(b).map(|p| (p.kind, p.label));
        assert_eq!(
            probe(&ext_image(b"STACKCFG")),
            Some((FsKind::Ext, Some("STACKCFG".into())))
        );
        assert_eq!(probe(&ext_image(b"")), Some((FsKind::Ext, None)));
        assert_eq!(
            probe(&ext_image(b"SIXTEEN-BYTES-XY")),
            Some((FsKind::Ext, Some("SIXTEEN-BYTES-XY".into())))
        );
        assert_eq!(
            probe(&iso_image("STACKBUNDLE")),
            Some((FsKind::Iso9660, Some("STACKBUNDLE".into())))
        );
        assert_eq!(
            probe(&vfat_image(true, "STACKCFG")),
            Some((FsKind::Vfat, Some("STACKCFG".into())))
        );
        assert_eq!(
            probe(&vfat_image(false, "NO NAME")),
            Some((FsKind::Vfat, None))
        );
        assert_eq!(probe(&[0u8; 100]), None);
        assert_eq!(probe(&vec![0u8; 40000]), None);
    }

    #[test]
    fn mount_types() {
        assert_eq!(FsKind::Ext.mount_type(), "ext4");
        assert_eq!(FsKind::Iso9660.mount_type(), "iso9660");
        assert_eq!(FsKind::Vfat.mount_type(), "vfat");
    }

    /// A fake sysfs and /dev: image files stand in for the devices.
    fn fake_tree(devices: &[(&str, &str, &[u8])]) -> (PathBuf, Lookup) {
        let root = scratch();
        let lookup = Lookup {
            by_label_dir: root.join("by-label"),
            sys_block_dir: root.join("sys"),
            dev_dir: root.join("dev"),
        };
        std::fs::create_dir_all(&lookup.sys_block_dir).unwrap();
        std::fs::create_dir_all(&lookup.dev_dir).unwrap();
        for (name, size, image) in devices {
            let entry = lookup.sys_block_dir.join(name);
            std::fs::create_dir_all(&entry).unwrap();
            std::fs::write(entry.join("size"), format!("{size}\n")).unwrap();
            std::fs::write(
                entry.join("uevent"),
                format!("MAJOR=7\nMINOR=0\nDEVNAME={name}\nDEVTYPE=disk\n"),
            )
            .unwrap();
            std::fs::write(lookup.dev_dir.join(name), image).unwrap();
        }
        (root, lookup)
    }

    #[test]
    fn scan_finds_the_labelled_device() {
        let (root, lookup) = fake_tree(&[
            ("loop0", "0", &ext_image(b"STACKCFG")),
            ("sda", "100", &[0u8; 4096]),
            ("sr0", "100", &iso_image("STACKBUNDLE")),
            ("vdb", "100", &ext_image(b"STACKCFG")),
        ]);
        assert_eq!(
            find_by_label("STACKCFG", &lookup).unwrap(),
            lookup.dev_dir.join("vdb")
        );
        assert_eq!(
            find_by_label("STACKBUNDLE", &lookup).unwrap(),
            lookup.dev_dir.join("sr0")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn by_label_link_wins() {
        let (root, lookup) = fake_tree(&[("vdb", "100", &ext_image(b"OTHER"))]);
        std::fs::create_dir_all(&lookup.by_label_dir).unwrap();
        std::os::unix::fs::symlink("../dev/vdb", lookup.by_label_dir.join("STACKCFG")).unwrap();
        assert_eq!(
            find_by_label("STACKCFG", &lookup).unwrap(),
            std::fs::canonicalize(lookup.dev_dir.join("vdb")).unwrap()
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn missing_and_ambiguous_labels_are_explained() {
        let (root, lookup) = fake_tree(&[
            ("vdb", "100", &ext_image(b"STACKCFG")),
            ("vdc", "100", &ext_image(b"STACKCFG")),
        ]);
        let err = find_by_label("NOPE", &lookup).unwrap_err();
        assert_eq!(err.what(), "finding the disk labelled NOPE");
        assert!(
            err.why().contains("by-label/NOPE does not resolve"),
            "{err}"
        );
        assert!(err.why().contains("blkid -L NOPE"), "{err}");
        let err = find_by_label("STACKCFG", &lookup).unwrap_err();
        assert!(err.why().starts_with("several devices carry it: "), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn kernel_types_skip_nodev() {
        let text = "nodev\tsysfs\nnodev\ttmpfs\n\text3\n\text4\n\tiso9660\nnodev\t9p\n";
        assert_eq!(parse_filesystems(text), vec!["ext3", "ext4", "iso9660"]);
    }
}

//! The docker harness: images built from scratch, containers with unique names, cleanup on drop.
//!
//! No registry is reachable, so every test image is built `FROM scratch` around Debian's static
//! busybox (package `busybox-static`, at `/bin/busybox`), installed as `/bin/sh`, `/bin/env`, …,
//! plus the files a test gives with their modes. Images and containers get names unique to the
//! process and call ([`unique_name`]) and the label [`LABEL`], and are removed when their guard
//! ([`Image`], [`Container`]) drops, so tests can run in parallel against the machine's engine
//! and a crashed run leaves things an operator can find with `docker ps -a --filter label=…`.
//!
//! The harness talks to whatever `docker` reaches (`DOCKER_HOST` included); tests that need an
//! engine start with `require!(docker::ready(), docker::READY)`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The label on every image and container the harness creates.
pub const LABEL: &str = "hexclave-test=1";

/// Where Debian's `busybox-static` puts the static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// What [`ready`] checks, for `require!`.
pub const READY: &str = "a docker engine answering `docker info`, and a static /bin/busybox \
                         (busybox-static)";

/// `docker ARGS…` with stdin closed.
pub fn docker<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("docker");
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Runs `docker ARGS…`; panics with its stderr unless it succeeds; returns stdout.
#[track_caller]
pub fn docker_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = docker(args);
    let out = cmd.output().expect("run docker");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `docker info` answers (the engine `make test` starts). Asked once per run.
pub fn engine_available() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        super::has_program("docker")
            && docker(["info", "--format", "{{.ServerVersion}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// Whether `path` is an ELF executable without a program interpreter (statically linked), so it
/// runs in an image with nothing else in it.
pub fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        data.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit little-endian ELF only: the machines this runs on.
    if data.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

/// An engine to talk to and a static busybox to build images with.
pub fn ready() -> bool {
    engine_available() && is_static_elf(Path::new(BUSYBOX))
}

/// A name no other test, run or process uses: `hexclave-test-<prefix>-<pid>-<n>` (lower case,
/// valid for containers and image repositories).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "hexclave-test-{}-{}-{}",
        prefix.to_ascii_lowercase(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An image built by [`ImageBuilder`]; removed (`docker rmi -f`) on drop.
pub struct Image {
    pub tag: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(["rmi", "-f", &self.tag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Builds an image `FROM scratch`: static busybox installed in `/bin`, a world-writable `/tmp`,
/// then the given files and Dockerfile lines.
pub struct ImageBuilder {
    prefix: String,
    files: Vec<(PathBuf, Vec<u8>, u32)>,
    lines: Vec<String>,
}

impl ImageBuilder {
    /// `prefix` names the image (`hexclave-test-<prefix>-…`).
    pub fn new(prefix: &str) -> Self {
        ImageBuilder {
            prefix: prefix.to_string(),
            files: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Puts `contents` at the absolute `path` in the image with permission bits `mode`; parent
    /// directories are created with mode 0755.
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> Self {
        let relative = path.strip_prefix('/').expect("image paths are absolute");
        self.files
            .push((PathBuf::from(relative), contents.as_ref().to_vec(), mode));
        self
    }

    /// Appends a Dockerfile instruction (`CMD […]`, `ENV …`, `ENTRYPOINT […]`, …).
    pub fn line(mut self, instruction: &str) -> Self {
        self.lines.push(instruction.to_string());
        self
    }

    #[track_caller]
    pub fn build(self) -> Image {
        let context = super::scratch();
        let dir = context.path();
        std::fs::copy(BUSYBOX, dir.join("busybox")).expect("copy busybox into the context");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        for (path, contents, mode) in &self.files {
            let target = rootfs.join(path);
            let parent = target.parent().unwrap();
            std::fs::create_dir_all(parent).unwrap();
            for dir in parent.ancestors().take_while(|d| d.starts_with(&rootfs)) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::fs::write(&target, contents).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let mut dockerfile = String::from(
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n\
             RUN [\"/bin/busybox\",\"mkdir\",\"-p\",\"-m\",\"1777\",\"/tmp\"]\n\
             COPY rootfs/ /\n",
        );
        for line in &self.lines {
            dockerfile.push_str(line);
            dockerfile.push('\n');
        }
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        let image = Image {
            tag: format!("{}:latest", unique_name(&self.prefix)),
        };
        docker_ok([
            OsStr::new("build"),
            OsStr::new("--quiet"),
            OsStr::new("--label"),
            OsStr::new(LABEL),
            OsStr::new("--tag"),
            OsStr::new(&image.tag),
            dir.as_os_str(),
        ]);
        image
    }
}

/// A container; removed (`docker rm -f`, volumes included) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name <unique> --label … OPTIONS… IMAGE COMMAND…`.
    #[track_caller]
    pub fn run(prefix: &str, image: &Image, options: &[&str], command: &[&str]) -> Container {
        let container = Container {
            name: unique_name(prefix),
        };
        let mut args = vec!["run", "-d", "--name", &container.name, "--label", LABEL];
        args.extend_from_slice(options);
        args.push(&image.tag);
        args.extend_from_slice(command);
        docker_ok(args);
        container
    }

    /// `docker run --name <unique> --label … OPTIONS… IMAGE COMMAND…` in the foreground: returns
    /// once the command has exited, its logs complete; the container stays until dropped.
    #[track_caller]
    pub fn run_to_end(
        prefix: &str,
        image: &Image,
        options: &[&str],
        command: &[&str],
    ) -> Container {
        let container = Container {
            name: unique_name(prefix),
        };
        let mut args = vec!["run", "--name", &container.name, "--label", LABEL];
        args.extend_from_slice(options);
        args.push(&image.tag);
        args.extend_from_slice(command);
        docker_ok(args);
        container
    }

    /// `docker exec NAME ARGS…`, whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        docker(all).output().expect("run docker exec")
    }

    /// The contents of a file in the container, or `None` when it cannot be read.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let out = self.exec(&["cat", path]);
        out.status.success().then_some(out.stdout)
    }

    /// Writes a file in the container (through `docker exec -i … tee`).
    #[track_caller]
    pub fn write_file(&self, path: &str, contents: &[u8]) {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args(["exec", "-i", &self.name, "tee", path])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run docker exec");
        child.stdin.take().unwrap().write_all(contents).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "writing {path} in {}",
            self.name
        );
    }

    /// Removes a file in the container; a missing one is fine.
    #[track_caller]
    pub fn remove_file(&self, path: &str) {
        assert!(self.exec(&["rm", "-f", path]).status.success());
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

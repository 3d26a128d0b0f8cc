//! The fake `stack-local-emulator` image (`tests/fixtures/fake-emulator/`).
//!
//! Built `FROM scratch` around Debian's static busybox, it behaves like the real emulator image
//! as far as the build and run tools can see: deps-only mode with the five dependency listeners
//! and the init-services marker, app mode with the backend health and dashboard sign-in pages, a
//! `node` that records its arguments and fails on demand, `rotate-secrets`, and the
//! `node_modules.standalone` tree the slim Dockerfile rewrites. The fixture's `entrypoint.sh`
//! lists its knobs. The image is built by the tests, never committed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture directory (Dockerfile and scripts).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake-emulator")
}

/// Builds the image as `tag` with `docker`, a function giving `docker ARGS…` against the engine
/// of the caller's choice; `extra` Dockerfile lines (e.g. `ENV FAKE_INIT_NEVER=1`) are appended.
#[track_caller]
pub fn build(docker: impl Fn(&[&str]) -> Command, tag: &str, extra: &[&str]) {
    let context = super::scratch();
    let dir = context.path();
    for entry in std::fs::read_dir(fixture_dir()).expect("read the fake-emulator fixture") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::copy(super::docker::BUSYBOX, dir.join("busybox")).expect("copy busybox");
    if !extra.is_empty() {
        let mut dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        for line in extra {
            dockerfile.push_str(line);
            dockerfile.push('\n');
        }
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    }
    let context = dir.to_str().expect("utf-8 scratch path");
    let out = docker(&["build", "--quiet", "--tag", tag, context])
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "building the fake emulator image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Saves `tag` as a gzip-compressed tarball at `dest` (`docker save | gzip`), as the host ships
/// `img.tgz`.
#[track_caller]
pub fn save_tgz(docker: impl Fn(&[&str]) -> Command, tag: &str, dest: &Path) {
    let tar = dest.with_extension("tar");
    let out = docker(&["save", "-o", tar.to_str().unwrap(), tag])
        .output()
        .expect("run docker save");
    assert!(
        out.status.success(),
        "docker save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gz = Command::new("gzip")
        .args(["-f", "-1"])
        .arg(&tar)
        .status()
        .expect("run gzip");
    assert!(gz.success(), "gzip {}", tar.display());
    std::fs::rename(tar.with_extension("tar.gz"), dest).unwrap();
}

/// The image's name, as the tools expect it.
pub const IMAGE: &str = "stack-local-emulator";

/// Builds the image as [`IMAGE`] (with `extra` Dockerfile lines), saves it as `dir/img.tgz`
/// (the bundle disk's archive; `dir` is created) and removes it from the engine again, so that a
/// later load shows.
#[track_caller]
pub fn bundle(docker: impl Fn(&[&str]) -> Command, extra: &[&str], dir: &Path) {
    build(&docker, IMAGE, extra);
    std::fs::create_dir_all(dir).unwrap();
    save_tgz(&docker, IMAGE, &dir.join("img.tgz"));
    let out = docker(&["rmi", "-f", IMAGE])
        .output()
        .expect("run docker rmi");
    assert!(
        out.status.success(),
        "docker rmi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

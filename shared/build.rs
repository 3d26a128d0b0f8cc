//! The build's identity, stamped into every tool's `--version` (see `src/stamp.rs`).
//!
//! Four facts, all fixed by the source and the build command, none by the time or the machine,
//! so the same commit built the same way prints the same identity: the package version, the git
//! commit (`-dirty` when tracked files differ from it, as `git describe --dirty` has it), the
//! target triple and the build profile.
//!
//! The commit comes from `HEXCLAVE_BUILD_COMMIT` when that is set (the Makefile sets it, computed
//! afresh on every `make`, so a shipped binary is always stamped right), else from git itself
//! when the source is a git checkout with git installed, else it is `unknown` (a source tarball).
//! Asked through git, cargo reruns this script when HEAD moves (the HEAD file, the branch's ref,
//! packed-refs) and when the index changes (`git add`, `git commit`); an edit that is not yet
//! staged does not rerun it, so a plain `cargo build` may show a stale clean/dirty mark until
//! the next `git add` or `make`. Watching every source file instead would rebuild every crate of
//! the workspace on every edit.
//!
//! This runs at build time on the host, where the crate's own process layer is not available;
//! it runs git with fixed arguments and no shell.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HEXCLAVE_BUILD_COMMIT");
    let commit = match std::env::var("HEXCLAVE_BUILD_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".to_string()),
    };
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    // PROFILE is `release` or `debug`: the profile a custom one (like `bench`) inherits from.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=HEXCLAVE_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=HEXCLAVE_BUILD_TARGET={target}");
    println!("cargo:rustc-env=HEXCLAVE_BUILD_PROFILE={profile}");
}

/// `git rev-parse --short HEAD`, with `-dirty` when `git status` lists a changed tracked file;
/// `None` outside a git checkout or without git. Registers the files whose change moves HEAD.
fn from_git() -> Option<String> {
    let paths = git(&[
        "rev-parse",
        "--git-path",
        "HEAD",
        "--git-path",
        "index",
        "--git-path",
        "packed-refs",
    ])?;
    for path in paths.lines() {
        watch(path);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", branch.trim()]) {
            watch(path.trim());
        }
    }
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
    let dirty = if status.trim().is_empty() {
        ""
    } else {
        "-dirty"
    };
    Some(format!("{}{dirty}", commit.trim()))
}

/// Reruns this script when `path` (relative to the crate, as git prints it) changes. A path that
/// does not exist (no packed-refs yet) is not watched: cargo would rerun the script every build.
fn watch(path: &str) {
    let path = PathBuf::from(path);
    let path = if path.is_absolute() {
        path
    } else {
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        dir.unwrap_or_default().join(path)
    };
    if !path.exists() {
        return;
    }
    println!("cargo:rerun-if-changed={}", path.display());
}

/// The stdout of a successful `git ARGS`, run in the crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

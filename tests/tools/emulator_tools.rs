//! emulator-tools: the multicall binary. Dispatch on the exact name or the first argument, the
//! one table behind --list and --install, and the static musl builds for both guest
//! architectures (the aarch64 one run under qemu-user and compared with the x86_64 one).

use std::ffi::OsStr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

const MULTICALL: &str = "emulator-tools";
pub const X86_64: &str = "x86_64-unknown-linux-musl";
pub const AARCH64: &str = "aarch64-unknown-linux-musl";
const QEMU: &str = "qemu-aarch64-static";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// cargo's target directory: target/<profile>/deps/tools-<hash> -> target.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The static multicall binary of `triple`, built by `make test` (and `make`).
pub fn musl_multicall(triple: &str) -> PathBuf {
    target_dir().join(triple).join("release").join(MULTICALL)
}

/// Whether the static multicall binary of `triple` is built and current; the `require!` text
/// says why not. The first call for a triple builds it with cargo (a no-op after `make test`),
/// so no test compares or embeds a binary older than the source.
pub fn musl_built(triple: &str) -> (bool, String) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, Result<(), String>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = built
        .get_or_insert_with(HashMap::new)
        .entry(triple.to_string())
        .or_insert_with(|| build_release(triple))
        .clone();
    let path = musl_multicall(triple);
    match outcome {
        Ok(()) => (path.is_file(), path.display().to_string()),
        Err(why) => (
            false,
            format!(
                "{} ({why}; `make test` adds the target and builds it)",
                path.display()
            ),
        ),
    }
}

/// `cargo build --release --target TRIPLE -p emulator-tools`, as `make test` runs it.
fn build_release(triple: &str) -> Result<(), String> {
    cargo_build(&["--release", "--target", triple, "-p", MULTICALL])
}

/// Runs `program` with `args`, `stdin` and extra environment, the provision-log knobs cleared.
pub fn run_program<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    env: &[(&str, &OsStr)],
    stdin: &[u8],
) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("STACK_PROVISION_LOG_FILE")
        .env_remove("HEXCLAVE_PROVISION_LOG_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait");
    feeder.join().expect("stdin feeder");
    Run(output)
}

/// The tool crates under bins/ (every one but the multicall crate), sorted.
fn tool_crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("bins"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().into_string().unwrap())
        .filter(|name| name != MULTICALL)
        .collect();
    names.sort();
    names
}

fn listed_tools() -> Vec<String> {
    let run = tool(MULTICALL).arg("--list").run();
    run.success().stderr_is("");
    run.stdout_str().lines().map(str::to_string).collect()
}

/// The canonical path of the host build of the multicall binary: what --install links to.
fn multicall_path() -> PathBuf {
    std::fs::canonicalize(tool_path(MULTICALL)).unwrap()
}

#[test]
fn list_prints_exactly_the_tool_crates_under_bins() {
    let crates = tool_crates();
    assert!(crates.contains(&"log-provision".to_string()), "{crates:?}");
    tool(MULTICALL)
        .arg("--list")
        .run()
        .success()
        .stdout_is(crates.iter().map(|c| format!("{c}\n")).collect::<String>());
}

#[test]
fn help_shows_the_usage_and_every_tool() {
    let run = tool(MULTICALL).arg("--help").run();
    run.success().stderr_is("");
    let out = run.stdout_str();
    assert!(
        out.contains(
            "Usage: emulator-tools TOOL [ARGS]...\n       emulator-tools --list\n       \
             emulator-tools --install DIR\n"
        ),
        "{out}"
    );
    // Each tool on a line of its own, with its one-line description (its crate's).
    let tools = &out[out.find("Tools:\n").expect("a Tools section")..];
    for name in listed_tools() {
        assert!(
            tools.contains(&format!("\n  {name}  ")),
            "{name} and its description:\n{out}"
        );
    }
    assert!(
        tools.contains("  wait-for-deps                Wait for the deps container's services"),
        "{out}"
    );
}

#[test]
fn version() {
    tool(MULTICALL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("emulator-tools"));
}

#[test]
fn no_arguments_is_a_usage_error_with_the_help() {
    let run = tool(MULTICALL).run();
    run.code_is(2).stdout_is("");
    assert!(
        run.stderr_str().contains("Usage: emulator-tools TOOL"),
        "{}",
        run.stderr_str()
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    tool(MULTICALL)
        .arg("--bogus")
        .run()
        .code_is(2)
        .stderr_contains("unexpected argument '--bogus'");
    tool(MULTICALL)
        .args(["--list", "extra"])
        .run()
        .code_is(2)
        .stderr_contains("unexpected argument 'extra'");
    tool(MULTICALL)
        .args(["--list", "--install", "x"])
        .run()
        .code_is(2)
        .stderr_contains("cannot be used with");
    tool(MULTICALL)
        .arg("--install")
        .run()
        .code_is(2)
        .stderr_contains("a value is required for '--install <DIR>'");
}

#[test]
fn unknown_tool_is_a_usage_error() {
    tool(MULTICALL)
        .args(["wait-for-nothing", "--help"])
        .run()
        .code_is(2)
        .stdout_is("")
        .stderr_is(
            "emulator-tools: unknown tool \"wait-for-nothing\": `emulator-tools --list` prints \
             the tools\nTry 'emulator-tools --help' for more information.\n",
        );
}

/// `emulator-tools TOOL ARGS...` is the tool itself: same help, same version, same output.
#[test]
fn first_argument_names_the_tool() {
    for name in listed_tools() {
        for flag in ["--help", "--version"] {
            let own = tool(&name).arg(flag).run();
            own.success();
            tool(MULTICALL)
                .args([name.as_str(), flag])
                .run()
                .success()
                .stdout_is(own.stdout())
                .stderr_is("");
        }
    }
    tool(MULTICALL)
        .args(["log-provision", "a", "  b", "--list"])
        .run()
        .success()
        .stdout_is("STACK_PROVISION: a   b --list\n");
    let dir = scratch();
    let log = dir.path().join("provision.log");
    tool(MULTICALL)
        .args(["log-provision-stream", "pfx"])
        .env("STACK_PROVISION_LOG_FILE", &log)
        .stdin("one\n  two  \nlast")
        .run()
        .success()
        .stdout_is(
            "STACK_PROVISION: pfx: one\nSTACK_PROVISION: pfx:   two  \nSTACK_PROVISION: pfx: last\n",
        );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "pfx: one\npfx:   two  \npfx: last\n"
    );
}

/// Called through a link (or a copy) named exactly like a tool, the binary is that tool.
#[test]
fn program_name_selects_the_tool() {
    let dir = scratch();
    let link = dir.path().join("log-provision");
    symlink(multicall_path(), &link).unwrap();
    run_program(&link, &["hello", "--version"], &[], b"")
        .success()
        .stdout_is("STACK_PROVISION: hello --version\n");
    run_program(&link, &["--version"], &[], b"")
        .success()
        .stdout_is(version_text("log-provision"));
    let copy = dir.path().join("log-provision-stream");
    // Copied by cp, not by this process: a descriptor open for writing here could be inherited
    // by a child another test forks meanwhile, and running the copy would fail with ETXTBSY.
    let copied = Command::new("cp")
        .arg(multicall_path())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    run_program(&copy, &["p"], &[], b"x\n")
        .success()
        .stdout_is("STACK_PROVISION: p: x\n");
    // The name wins over the first argument: this logs the word "log-provision-stream".
    run_program(&link, &["log-provision-stream"], &[], b"")
        .success()
        .stdout_is("STACK_PROVISION: log-provision-stream\n");
}

/// Only the exact name selects a tool: hyphenated names overlap, so no suffix or prefix matching.
#[test]
fn near_names_are_not_tools() {
    let dir = scratch();
    for name in [
        "my-log-provision",
        "log-provision.sh",
        "provision-stream",
        "log-provision-",
        "Log-Provision",
    ] {
        let link = dir.path().join(name);
        symlink(multicall_path(), &link).unwrap();
        run_program(&link, &["hello"], &[], b"")
            .code_is(2)
            .stdout_is("")
            .stderr_is(
                "emulator-tools: unknown tool \"hello\": `emulator-tools --list` prints the \
                 tools\nTry 'emulator-tools --help' for more information.\n",
            );
        // Called by a name that is no tool, the first argument still selects one.
        run_program(&link, &["log-provision", "hi"], &[], b"")
            .success()
            .stdout_is("STACK_PROVISION: hi\n");
    }
}

#[test]
fn install_links_every_tool_and_can_run_again() {
    let dir = scratch();
    let bin = dir.path().join("usr/local/bin");
    let target = multicall_path();
    let tools = listed_tools();
    // Every tool, then emulator-tools itself, so it is on PATH too.
    let linked: Vec<String> = tools
        .iter()
        .cloned()
        .chain([MULTICALL.to_string()])
        .collect();
    let created: String = linked
        .iter()
        .map(|t| format!("created {}/{t} -> {}\n", bin.display(), target.display()))
        .collect();
    tool(MULTICALL)
        .arg("--install")
        .arg(&bin)
        .run()
        .success()
        .stderr_is("")
        .stdout_is(format!("created directory {}\n{created}", bin.display()));
    let mut names: Vec<String> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = linked.clone();
    expected.sort();
    assert_eq!(names, expected);
    for name in &linked {
        let link = bin.join(name);
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        run_program(&link, &["--version"], &[], b"")
            .success()
            .stdout_is(version_text(name));
    }
    let kept: String = linked
        .iter()
        .map(|t| format!("kept {}/{t} -> {}\n", bin.display(), target.display()))
        .collect();
    tool(MULTICALL)
        .arg("--install")
        .arg(&bin)
        .run()
        .success()
        .stderr_is("")
        .stdout_is(kept);
}

#[test]
fn install_replaces_stale_links_and_leaves_other_files_alone() {
    let dir = scratch();
    let bin = dir.path();
    let target = multicall_path();
    symlink("/nonexistent/emulator-tools", bin.join("log-provision")).unwrap();
    std::fs::write(bin.join("log-provision-stream"), "#!/bin/bash\n").unwrap();
    tool(MULTICALL)
        .arg("--install")
        .arg(bin)
        .run()
        .code_is(1)
        .stdout_is(
            listed_tools()
                .iter()
                .chain([&MULTICALL.to_string()])
                .filter(|t| *t != "log-provision-stream")
                .map(|t| match t.as_str() {
                    "log-provision" => format!(
                        "replaced {}/{t} -> {} (was -> /nonexistent/emulator-tools)\n",
                        bin.display(),
                        target.display()
                    ),
                    _ => format!("created {}/{t} -> {}\n", bin.display(), target.display()),
                })
                .collect::<String>(),
        )
        .stderr_is(format!(
            "emulator-tools: {}/log-provision-stream exists and is not a symbolic link; left \
             alone (remove it and run --install again)\n",
            bin.display()
        ));
    assert_eq!(
        std::fs::read_link(bin.join("log-provision")).unwrap(),
        target
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("log-provision-stream")).unwrap(),
        "#!/bin/bash\n"
    );
    let left: Vec<_> = std::fs::read_dir(bin).unwrap().collect();
    assert_eq!(
        left.len(),
        listed_tools().len() + 1,
        "no temporary link left behind"
    );
}

/// e_machine and e_type of a 64-bit little-endian ELF file, and whether it asks for a dynamic
/// loader.
fn elf_machine_type_and_interp(path: &Path) -> (u16, u16, bool) {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "{}: 64-bit LSB ELF",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36) as usize, u16_at(0x38));
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (u16_at(0x12), u16_at(0x10), interp)
}

#[test]
fn musl_builds_are_static_binaries_for_their_architecture() {
    for (triple, machine) in [(X86_64, 62), (AARCH64, 183)] {
        let (built, what) = musl_built(triple);
        require!(built, &what);
        let (found, kind, interp) = elf_machine_type_and_interp(&musl_multicall(triple));
        assert_eq!(found, machine, "{triple}: ELF e_machine");
        // ET_EXEC, not the ET_DYN of a static-pie: position-dependent (.cargo/config.toml), so
        // no relocation tables to ship.
        assert_eq!(kind, 2, "{triple}: ELF e_type");
        assert!(
            !interp,
            "{triple}: statically linked, no program interpreter"
        );
    }
}

/// The aarch64 build, run under qemu-user, prints what the x86_64 build prints, which prints
/// what the host build prints: same bytes on stdout and stderr, same status, same log file.
#[test]
fn aarch64_build_under_qemu_matches_the_x86_64_build() {
    for triple in [X86_64, AARCH64] {
        let (built, what) = musl_built(triple);
        require!(built, &what);
    }
    require!(
        has_program(QEMU),
        "qemu-aarch64-static (Debian package qemu-user-static)"
    );
    let dir = scratch();
    // Links named like a tool, one per build, to check dispatch by program name too.
    let host_link = dir.path().join("host/log-provision");
    let x86_link = dir.path().join("x86_64/log-provision");
    let arm_link = dir.path().join("aarch64/log-provision");
    for (link, bin) in [
        (&host_link, multicall_path()),
        (&x86_link, musl_multicall(X86_64)),
        (&arm_link, musl_multicall(AARCH64)),
    ] {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(bin, link).unwrap();
    }
    // render-stack-env on the fixture files with keys fixed in advance, nothing mounted.
    let fixtures = workspace().join("tests/fixtures/render-stack-env");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    for (name, digit) in [
        ("internal-pck", "1"),
        ("internal-ssk", "2"),
        ("internal-sak", "3"),
    ] {
        std::fs::write(keys.join(name), format!("{}\n", digit.repeat(64))).unwrap();
    }
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let render = vec![
        "render-stack-env".to_string(),
        "--output".into(),
        "-".into(),
        "--no-mount".into(),
        "--runtime-env".into(),
        path(&fixtures.join("runtime.env")),
        "--base-env".into(),
        path(&fixtures.join("base.env")),
        "--key-dir".into(),
        path(&keys),
        "--build-env".into(),
        path(&dir.path().join("no-build.env")),
    ];
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let hex = "ab".repeat(32);
    let cases: Vec<(Vec<String>, Vec<u8>)> = vec![
        (owned(&["--version"]), vec![]),
        (owned(&["--list"]), vec![]),
        (owned(&["--help"]), vec![]),
        (owned(&["--bogus"]), vec![]),
        (owned(&["no-such-tool"]), vec![]),
        (
            owned(&["log-provision", "hello", "  two  spaces", "-n"]),
            vec![],
        ),
        (owned(&["log-provision", "--help"]), vec![]),
        (owned(&["log-provision-stream", "--version"]), vec![]),
        (
            owned(&["log-provision-stream", "pfx"]),
            b"one\n  two  \r\n\xff\xfe bytes\nlast".to_vec(),
        ),
        (owned(&["log-provision-stream"]), b"no prefix\n".to_vec()),
        (render, vec![]),
        // trigger-fast-rotate's input checks, all before docker would run.
        (
            owned(&["trigger-fast-rotate", "--docker", "/nonexistent/docker"]),
            format!("CRON_SECRET={hex}\nX=$(touch /tmp/pwned)").into_bytes(),
        ),
        (
            owned(&["trigger-fast-rotate", "--docker", "/nonexistent/docker"]),
            format!("CRON_SECRET={hex}").into_bytes(),
        ),
    ];
    let mut checked = 0;
    for (args, stdin) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdin = stdin.as_slice();
        let run = |label: &str, program: &Path, qemu: bool| {
            let log = dir.path().join(format!("{label}.log"));
            let mut argv: Vec<&OsStr> = Vec::new();
            if qemu {
                argv.push(program.as_os_str());
            }
            argv.extend(args.iter().map(OsStr::new));
            let env = [("STACK_PROVISION_LOG_FILE", log.as_os_str())];
            let run = if qemu {
                run_program(QEMU, &argv, &env, stdin)
            } else {
                run_program(program, &argv, &env, stdin)
            };
            let logged = std::fs::read(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            (
                run.code(),
                run.stdout().to_vec(),
                run.stderr().to_vec(),
                logged,
            )
        };
        let host = run("host", &multicall_path(), false);
        let x86 = run("x86_64", &musl_multicall(X86_64), false);
        let arm = run("aarch64", &musl_multicall(AARCH64), true);
        // --version names the build: the same commit and version, each its own target and
        // profile. Everything else must match byte for byte.
        let (host, x86, arm) = if args.last() == Some(&"--version") {
            let commit = |out: &(Option<i32>, Vec<u8>, Vec<u8>, Vec<u8>)| {
                let text = String::from_utf8_lossy(&out.1).into_owned();
                let target = text.lines().nth(2).unwrap_or_default().to_string();
                (
                    out.0,
                    text.lines().take(2).collect::<Vec<_>>().join("\n"),
                    target,
                )
            };
            let (h, x, a) = (commit(&host), commit(&x86), commit(&arm));
            assert_eq!((&x.0, &x.1), (&h.0, &h.1), "x86_64 vs host: {args:?}");
            assert_eq!((&a.0, &a.1), (&x.0, &x.1), "aarch64 vs x86_64: {args:?}");
            assert_eq!(x.2, format!("target:  {X86_64}"));
            assert_eq!(a.2, format!("target:  {AARCH64}"));
            checked += 1;
            continue;
        } else {
            (host, x86, arm)
        };
        assert_eq!(x86, host, "x86_64 musl vs host build: {args:?}");
        assert_eq!(arm, x86, "aarch64 under qemu vs x86_64: {args:?}");
        match args.first() {
            Some(&"render-stack-env") => {
                assert_eq!(x86.0, Some(0), "{}", String::from_utf8_lossy(&x86.2));
                let env = String::from_utf8_lossy(&x86.1);
                let pck = format!(
                    "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={}",
                    "1".repeat(64)
                );
                assert!(env.lines().any(|l| l == pck), "{env}");
                assert!(
                    env.ends_with(&format!(
                        "DASHBOARD_PORT=8101\n\
                         STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={}\n\
                         STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY={}\n\
                         NEXT_PUBLIC_STACK_PORT_PREFIX=81\n",
                        "1".repeat(64),
                        "2".repeat(64)
                    )),
                    "{env}"
                );
            }
            Some(&"trigger-fast-rotate") => assert_eq!(x86.0, Some(2)),
            _ => {}
        }
        if args.first() == Some(&"log-provision") && args.len() > 2 {
            assert_eq!(x86.1, b"STACK_PROVISION: hello   two  spaces -n\n");
            assert_eq!(x86.3, b"hello   two  spaces -n\n");
        }
        // And the same tool by program name.
        if args.first() == Some(&"log-provision") {
            let by_name = |link: &Path, qemu: bool| {
                let rest: Vec<&OsStr> = args[1..].iter().map(OsStr::new).collect();
                let run = if qemu {
                    let mut argv = vec![link.as_os_str()];
                    argv.extend(rest);
                    run_program(QEMU, &argv, &[], stdin)
                } else {
                    run_program(link, &rest, &[], stdin)
                };
                (run.code(), run.stdout().to_vec(), run.stderr().to_vec())
            };
            let host = by_name(&host_link, false);
            assert_eq!(by_name(&x86_link, false), host, "by name: {args:?}");
            assert_eq!(
                by_name(&arm_link, true),
                host,
                "by name under qemu: {args:?}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}

/// Issue 10, E1: the links are made before the report is written, so a report that cannot be
/// written (stdout on a full disk) costs no link.
#[test]
fn install_makes_every_link_even_when_stdout_fails() {
    require!(Path::new("/dev/full").exists(), "/dev/full");
    let dir = scratch();
    let links = dir.path().join("bin");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(tool_path("emulator-tools"))
        .arg("--install")
        .arg(&links)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "emulator-tools: writing the report (every link was made): No space left on device (os \
         error 28)\n"
    );
    let list = tool("emulator-tools").arg("--list").run();
    for name in list.stdout_str().lines() {
        assert_eq!(
            std::fs::read_link(links.join(name)).unwrap(),
            tool_path("emulator-tools").canonicalize().unwrap(),
            "{name}"
        );
    }
}

/// Issue 10, E2: an install directory that is a file, a dangling link or a loop of links is
/// named as such.
#[test]
fn install_names_what_is_in_the_way_of_the_directory() {
    let dir = scratch();
    let file = dir.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let (a, b) = (dir.path().join("loop-a"), dir.path().join("loop-b"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    for (path, why) in [
        (
            file.clone(),
            "it is a regular file, not a directory; name a directory (it is created when \
             missing)"
                .to_string(),
        ),
        (
            dangling.clone(),
            format!(
                "it is a symbolic link to {}, which does not exist; create that directory or \
                 name another",
                dir.path().join("nowhere").display()
            ),
        ),
        (
            a.clone(),
            "Too many levels of symbolic links (os error 40)".to_string(),
        ),
    ] {
        tool("emulator-tools")
            .arg("--install")
            .arg(&path)
            .run()
            .code_is(1)
            .stdout_is("")
            .stderr_is(format!(
                "emulator-tools: installing into {}: {why}\n",
                path.display()
            ));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    assert!(!dir.path().join("nowhere").exists());
}

/// The binaries `make` embeds in the user-data hold no test hook: the hidden flag and
/// variable exist only in builds with the `test-hooks` feature.
#[test]
fn release_multicall_binaries_hold_no_test_hook() {
    let target = bin_dir()
        .parent()
        .expect("the binaries are in target/<profile>")
        .to_path_buf();
    // target/<triple>/release (make, make test) and target/release (make bench).
    let mut found: Vec<PathBuf> = Some(target.join("release/emulator-tools"))
        .filter(|p| p.is_file())
        .into_iter()
        .collect();
    for entry in std::fs::read_dir(&target).unwrap().flatten() {
        let binary = entry.path().join("release/emulator-tools");
        if binary.is_file() {
            found.push(binary);
        }
    }
    require!(
        !found.is_empty(),
        "a release build of emulator-tools (make test builds one per target)"
    );
    for binary in found {
        let bytes = std::fs::read(&binary).unwrap();
        for hook in ["test-panic-before", "SLIM_CRASH_AFTER"] {
            assert!(
                memchr::memmem::find(&bytes, hook.as_bytes()).is_none(),
                "{} holds {hook}",
                binary.display()
            );
        }
    }
}

//! The generated cloud-init user-data (render-user-data on cloud-init/user-data.template and
//! cloud-init/emulator-tools.sh.template): a MIME multipart whose cloud-config part is valid for
//! cloud-init and the original everywhere but the tool installation, whose script part installs
//! the built binary, and whose first runcmd step stops everything on a bad or missing binary.
//!
//! MIME processing, parsing, script writing go through cloud-init's own Python code
//! (`tests/fixtures/user_data/cloud_init.py`, run with Debian's python3 and its `cloudinit`
//! package), so what is checked is what a guest does; a Rust YAML parser could differ from
//! cloud-init's PyYAML on exactly the corner cases that matter.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::emulator_tools::{AARCH64, X86_64, musl_built, musl_multicall, run_program, workspace};
use crate::common::*;

const GENERATOR: &str = "render-user-data";
const BINARY_PATH: &str = "/usr/local/lib/emulator-tools/emulator-tools";
/// The script part's name, as cloud-init writes it to its scripts directory.
const SCRIPT_PART: &str = "emulator-tools";
const PYTHON: &str = "/usr/bin/python3";
/// The twelve scripts of the original user-data, in its order: what the one binary replaces.
const SCRIPTS: [&str; 12] = [
    "install-emulator-containers",
    "render-stack-env",
    "mount-host-fs",
    "run-stack-container",
    "wait-for-deps",
    "log-provision",
    "log-provision-stream",
    "run-build-migrations",
    "slim-docker-image",
    "wait-for-stack-ready",
    "trigger-fast-rotate",
    "provision-build",
];

/// The original user-data, as upstream ships it (`cloud-init/upstream/`, with a note on where it
/// comes from).
fn original() -> PathBuf {
    workspace().join("cloud-init/upstream/user-data")
}

fn template() -> PathBuf {
    workspace().join("cloud-init/user-data.template")
}

fn script_template() -> PathBuf {
    workspace().join("cloud-init/emulator-tools.sh.template")
}

/// Whether cloud-init's Python code is there to read user-data with; `make test` installs it.
fn have_cloud_init() -> bool {
    has_program("cloud-init") && Path::new(PYTHON).is_file()
}

/// The generator with its four paths.
fn generator(template: &Path, script: &Path, binary: &Path, output: &Path) -> Cmd {
    tool(GENERATOR)
        .arg("--template")
        .arg(template)
        .arg("--script-template")
        .arg(script)
        .arg("--binary")
        .arg(binary)
        .arg("--output")
        .arg(output)
}

/// Renders the user-data of `triple` into `dir`; returns its path.
fn render(triple: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{triple}.user-data"));
    let run = generator(
        &template(),
        &script_template(),
        &musl_multicall(triple),
        &out,
    )
    .run();
    run.success().stderr_is("");
    assert!(
        run.stdout_str()
            .starts_with(&format!("{}: ", out.display())),
        "{}",
        run.stdout_str()
    );
    out
}

/// Runs the cloud-init helper; returns its stdout.
fn helper(args: &[&OsStr]) -> String {
    let script = workspace().join("tests/fixtures/user_data/cloud_init.py");
    let mut argv = vec![script.as_os_str()];
    argv.extend_from_slice(args);
    let run = run_program(PYTHON, &argv, &[], b"");
    run.success();
    run.stdout_str()
}

/// The cloud-config part's text, written to `dir` by cloud-init's MIME code.
fn cloud_config(file: &Path, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{}.cloud-config",
        file.file_name().unwrap().to_string_lossy()
    ));
    helper(&[os("text"), file.as_os_str(), out.as_os_str()]);
    out
}

/// The script parts as cloud-init's init stage writes them, under `cloud_dir`; their paths.
fn scripts(file: &Path, cloud_dir: &Path) -> Vec<PathBuf> {
    helper(&[os("scripts"), file.as_os_str(), cloud_dir.as_os_str()])
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Runs a script part as scripts_user does (executed directly), installing under `root`.
fn run_script(script: &Path, root: &Path) -> Run {
    let mut cmd = std::process::Command::new(script);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HEXCLAVE_INSTALL_ROOT", root);
    Run(cmd.output().unwrap())
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The SHA-256 of a file, by coreutils (independent of the generator's sha2).
fn sha256sum(path: &Path) -> String {
    let run = run_program("sha256sum", &[path], &[], b"");
    run.success();
    run.stdout_str()[..64].to_string()
}

/// Both renderings, or `None` (after a skip note) when a prerequisite is missing.
macro_rules! rendered {
    ($dir:expr) => {{
        require!(
            have_cloud_init(),
            "cloud-init and /usr/bin/python3 (Debian's cloud-init)"
        );
        let mut files = Vec::new();
        for triple in [X86_64, AARCH64] {
            let (built, what) = musl_built(triple);
            require!(built, &what);
            files.push((triple, render(triple, $dir)));
        }
        files
    }};
}

#[test]
fn passes_cloud_init_schema_validation() {
    let dir = scratch();
    for (_, user_data) in rendered!(dir.path()) {
        let file = cloud_config(&user_data, dir.path());
        let run = run_program(
            "cloud-init",
            &[os("schema"), os("--config-file"), file.as_os_str()],
            &[],
            b"",
        );
        run.success();
        assert!(
            run.stdout_str()
                .contains(&format!("Valid cloud-config: {}", file.display())),
            "{}",
            run.stdout_str()
        );
        // The validator does validate: a bad value in the same part is rejected.
        let bad = dir.path().join("bad.user-data");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("\npackage_update: true\n"));
        std::fs::write(
            &bad,
            text.replacen("package_update: true", "package_update: 7", 1),
        )
        .unwrap();
        let run = run_program(
            "cloud-init",
            &[os("schema"), os("--config-file"), bad.as_os_str()],
            &[],
            b"",
        );
        assert_ne!(run.code(), Some(0), "{}", run.stdout_str());
    }
}

#[test]
fn fits_in_one_mebibyte() {
    let dir = scratch();
    for (triple, file) in rendered!(dir.path()) {
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size <= 1 << 20, "{triple}: {size} bytes");
    }
}

/// Parsed as cloud-init parses it, the cloud-config part is the original's document once the
/// twelve scripts and runcmd are taken out of the original and runcmd out of ours: same keys,
/// same values, same order. The binary is in the other part.
#[test]
fn same_document_as_the_original_outside_the_replaced_entries() {
    let dir = scratch();
    let files = rendered!(dir.path());
    let script_paths: Vec<String> = SCRIPTS
        .iter()
        .map(|s| format!("/usr/local/bin/{s}"))
        .collect();
    let original_paths = helper(&[os("paths"), original().as_os_str()]);
    let mut expected: Vec<&str> = original_paths
        .lines()
        .filter(|p| p.starts_with("/usr/local/bin/"))
        .collect();
    expected.sort_unstable();
    let mut scripts: Vec<&str> = script_paths.iter().map(String::as_str).collect();
    scripts.sort_unstable();
    assert_eq!(expected, scripts, "the original's scripts");

    let original = original();
    let mut drop: Vec<&OsStr> = vec![os("without"), original.as_os_str()];
    drop.extend(script_paths.iter().map(|p| os(p)));
    let original_rest = helper(&drop);
    assert!(
        original_rest.contains("\"/etc/systemd/system/stack.service\""),
        "{original_rest}"
    );
    for (triple, file) in files {
        let ours = helper(&[os("without"), file.as_os_str()]);
        assert_eq!(ours, original_rest, "{triple}");
        assert_eq!(
            helper(&[os("paths"), file.as_os_str()]),
            "/etc/stack-build-computed.env\n/etc/systemd/system/stack.service\n",
            "{triple}: no write_files entry for the binary"
        );
    }
}

/// Outside the replaced entries the cloud-config part's text is the original's, byte for byte:
/// everything before write_files, and each entry that is not a script.
#[test]
fn text_outside_the_replaced_entries_is_byte_identical() {
    let dir = scratch();
    let files = rendered!(dir.path());
    let original = std::fs::read_to_string(original()).unwrap();
    let head_len = original.find("write_files:\n").unwrap() + "write_files:\n".len();
    let (head, rest) = original.split_at(head_len);
    let entries = &rest[..rest.find("\nruncmd:\n").unwrap() + 1];
    // Each entry's text runs from its `  - path:` line to the next one.
    let mut blocks: Vec<String> = Vec::new();
    for line in entries.split_inclusive('\n') {
        if line.starts_with("  - path: ") {
            blocks.push(String::new());
        }
        blocks
            .last_mut()
            .expect("entries start with `  - path:`")
            .push_str(line);
    }
    assert_eq!(blocks.len(), 14);
    let kept: Vec<&String> = blocks
        .iter()
        .filter(|b| !b.starts_with("  - path: /usr/local/bin/"))
        .collect();
    assert_eq!(kept.len(), 2, "stack-build-computed.env and stack.service");
    for (triple, file) in files {
        let ours = std::fs::read_to_string(cloud_config(&file, dir.path())).unwrap();
        assert!(
            ours.starts_with(head),
            "{triple}: the text before write_files"
        );
        for block in &kept {
            assert!(
                ours.contains(block.as_str()),
                "{triple}: missing verbatim:\n{block}"
            );
        }
    }
}

/// Two parts, the cloud-config and the script; cloud-init's scripts_user runs its scripts
/// directory in name order, so the script (written there by the init stage) runs before the
/// runcmd script (written there by cc_runcmd), whose first step checks the binary.
#[test]
fn parts_and_runcmd_are_as_specified() {
    let dir = scratch();
    for (triple, file) in rendered!(dir.path()) {
        assert_eq!(
            helper(&[os("parts"), file.as_os_str()]),
            format!("text/cloud-config cloud-config\ntext/x-shellscript {SCRIPT_PART}\n"),
            "{triple}"
        );
        let cloud_dir = dir.path().join(format!("{triple}.cloud"));
        let written = scripts(&file, &cloud_dir);
        assert_eq!(written.len(), 1, "{written:?}");
        assert!(written[0].ends_with(format!("instance/scripts/{SCRIPT_PART}")));
        let mut order = [SCRIPT_PART, "runcmd"];
        order.sort_unstable();
        assert_eq!(order, [SCRIPT_PART, "runcmd"], "runparts order");
        let runcmd = helper(&[os("runcmd"), file.as_os_str()]);
        let digest = sha256sum(&musl_multicall(triple));
        assert!(
            runcmd.starts_with("[\"root=\\\"${HEXCLAVE_INSTALL_ROOT:-}\\\"\\n"),
            "{triple}: the first step checks the binary: {runcmd}"
        );
        assert!(
            runcmd.contains(&format!("[ \\\"$sum\\\" = \\\"{digest}\\\" ]")),
            "{runcmd}"
        );
        assert!(
            runcmd.ends_with("\", [\"/usr/local/bin/provision-build\"]]\n"),
            "{triple}: then provision-build, and nothing else: {runcmd}"
        );
    }
}

/// The script part, written and run as cloud-init does, installs the built binary, mode 0755,
/// whose SHA-256 is the one the first runcmd step expects, and leaves nothing else behind.
#[test]
fn script_part_installs_the_built_binary() {
    let dir = scratch();
    for (triple, file) in rendered!(dir.path()) {
        let root = dir.path().join(format!("{triple}.root"));
        let script = scripts(&file, &dir.path().join(format!("{triple}.cloud"))).remove(0);
        run_script(&script, &root)
            .success()
            .stdout_is("")
            .stderr_is("");
        let out = root.join(BINARY_PATH.trim_start_matches('/'));
        let installed: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(installed, [SCRIPT_PART], "{triple}");
        let built = std::fs::read(musl_multicall(triple)).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == built,
            "{triple}: the installed binary differs from the build"
        );
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{triple}");
        let digest = sha256sum(&out);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text.matches(&digest).count(),
            4,
            "{triple}: digest {digest} twice in the check, and in the comments above it and at \
             the head of the script part"
        );
    }
}

/// The cloud-config's runcmd and the binary's script part carry its identity (as its `--version`
/// prints it), the runcmd also the one command that checks it in a guest; the x86_64 build, run
/// here, names the commit of HEAD.
#[test]
fn user_data_names_the_build_and_how_to_verify_it() {
    let dir = scratch();
    for (triple, file) in rendered!(dir.path()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let binary = musl_multicall(triple);
        let digest = sha256sum(&binary);
        let stamp = shared::stamp::find_in(&std::fs::read(&binary).unwrap()).expect("a stamp");
        let [version, commit, target, profile] = &stamp;
        assert_eq!(target, triple);
        let identity = format!("emulator-tools {version} (commit {commit}, {triple}, {profile})");
        let comment = format!(
            "\nruncmd:\n  # {identity}; verify it in the guest with\n  #   echo '{digest}  \
             {BINARY_PATH}' | sha256sum -c\n"
        );
        assert!(text.contains(&comment), "{triple}: {comment}");
        let script = format!(
            "\n#!/bin/sh\n# {identity}: the emulator's tools, one static multicall binary, \
             gzip-compressed\n# and base64-encoded below. Verify the installed binary in the \
             guest with\n#   echo '{digest}  {BINARY_PATH}' | sha256sum -c\n"
        );
        assert!(text.contains(&script), "{triple}: {script}");
        if triple == X86_64 {
            let root = dir.path().join("root");
            let script = scripts(&file, &dir.path().join("cloud")).remove(0);
            run_script(&script, &root).success();
            let out = root.join(BINARY_PATH.trim_start_matches('/'));
            let version_text = run_program(&out, &["--version"], &[], b"").stdout_str();
            assert_eq!(
                version_text,
                format!(
                    "emulator-tools {version}\ncommit:  {commit}\ntarget:  {target}\nprofile: \
                     {profile}\n"
                )
            );
            let head = run_program(
                "git",
                &[
                    "-C",
                    env!("CARGO_MANIFEST_DIR"),
                    "rev-parse",
                    "--short",
                    "HEAD",
                ],
                &[],
                b"",
            );
            if head.code() == Some(0) {
                assert_eq!(commit.trim_end_matches("-dirty"), head.stdout_str().trim());
            }
            // The command in the comment verifies the decoded binary.
            let check = run_program(
                "sha256sum",
                &["-c"],
                &[],
                format!("{digest}  {}\n", out.display()).as_bytes(),
            );
            check.success();
        }
    }
}

#[test]
fn rendering_is_reproducible() {
    let dir = scratch();
    let first = rendered!(dir.path());
    let again = scratch();
    for (triple, file) in first {
        let second = render(triple, again.path());
        assert!(
            std::fs::read(&file).unwrap() == std::fs::read(&second).unwrap(),
            "{triple}"
        );
    }
}

/// A scratch guest root for the first runcmd step: the x86_64 user-data's script part run as
/// scripts_user runs it (the installed binary then optionally altered), /dev for the console
/// messages, and the runcmd script as cloud-init writes it with its first step only, then a
/// sentinel command.
struct Guest {
    _dir: tempfile::TempDir,
    root: PathBuf,
    script: PathBuf,
    sentinel: PathBuf,
}

fn guest(user_data: impl FnOnce(&mut String), payload: impl FnOnce(&Path)) -> Guest {
    let dir = scratch();
    let root = dir.path().join("root");
    for dir in ["dev", "usr/local/bin"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let file = render(X86_64, dir.path());
    let mut text = std::fs::read_to_string(&file).unwrap();
    user_data(&mut text);
    std::fs::write(&file, text).unwrap();
    let binary = root.join(BINARY_PATH.trim_start_matches('/'));
    let script = scripts(&file, &dir.path().join("cloud")).remove(0);
    let installed = run_script(&script, &root);
    if binary.exists() {
        installed.success();
    }
    payload(&binary);
    let sentinel = dir.path().join("the-rest-ran");
    let script = dir.path().join("runcmd");
    helper(&[
        os("script"),
        file.as_os_str(),
        os("1"),
        script.as_os_str(),
        os("touch"),
        sentinel.as_os_str(),
    ]);
    Guest {
        _dir: dir,
        root,
        script,
        sentinel,
    }
}

impl Guest {
    /// Runs the script as cloud-init's scripts_user does (executed directly, `#!/bin/sh`).
    fn run(&self) -> Run {
        let mut cmd = std::process::Command::new(&self.script);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HEXCLAVE_INSTALL_ROOT", &self.root);
        Run(cmd.output().unwrap())
    }

    fn binary(&self) -> PathBuf {
        self.root.join(BINARY_PATH.trim_start_matches('/'))
    }

    fn consoles(&self) -> Vec<(String, String)> {
        ["console", "ttyAMA0", "ttyS0"]
            .iter()
            .map(|tty| {
                let path = self.root.join("dev").join(tty);
                (
                    tty.to_string(),
                    std::fs::read_to_string(path).unwrap_or_default(),
                )
            })
            .collect()
    }
}

macro_rules! guest {
    ($payload:expr) => {
        guest!(|_| {}, $payload)
    };
    ($user_data:expr, $payload:expr) => {{
        require!(
            have_cloud_init(),
            "cloud-init and /usr/bin/python3 (Debian's cloud-init)"
        );
        let (built, what) = musl_built(X86_64);
        require!(built, &what);
        guest($user_data, $payload)
    }};
}

#[test]
fn first_runcmd_step_links_the_tools_then_the_rest_runs() {
    let guest = guest!(|_| {});
    let run = guest.run();
    run.success().stderr_is("");
    assert!(guest.sentinel.exists(), "the next runcmd entry ran");
    let bin = guest.root.join("usr/local/bin");
    let tools = run_program(guest.binary(), &["--list"], &[], b"").stdout_str();
    let mut expected = String::new();
    for name in tools.lines() {
        assert!(
            SCRIPTS.contains(&name),
            "{name} is one of the original's scripts"
        );
        expected.push_str(&format!(
            "created {}/{name} -> {}\n",
            bin.display(),
            guest.binary().display()
        ));
        assert_eq!(std::fs::read_link(bin.join(name)).unwrap(), guest.binary());
    }
    // And emulator-tools itself, so `emulator-tools --list` works in the guest.
    expected.push_str(&format!(
        "created {}/emulator-tools -> {}\n",
        bin.display(),
        guest.binary().display()
    ));
    assert_eq!(
        std::fs::read_link(bin.join("emulator-tools")).unwrap(),
        guest.binary()
    );
    run.stdout_is(expected);
    run_program(bin.join("log-provision"), &["linked"], &[], b"")
        .success()
        .stdout_is("STACK_PROVISION: linked\n");
    for (tty, text) in guest.consoles() {
        assert_eq!(text, "", "{tty}");
    }
}

/// A binary that does not match its digest stops the runcmd script before anything else runs,
/// with the reason on stderr and on the consoles, followed by the failure marker the host
/// watches for.
#[test]
fn corrupt_payload_stops_runcmd_before_anything_else_runs() {
    let guest = guest!(|binary: &Path| {
        let mut bytes = std::fs::read(binary).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(binary, bytes).unwrap();
    });
    let expected_digest = sha256sum(&musl_multicall(X86_64));
    let actual_digest = sha256sum(&guest.binary());
    assert_ne!(actual_digest, expected_digest);
    let message = format!(
        "emulator-tools: {} is corrupt: its SHA-256 is {actual_digest}, expected \
         {expected_digest}; the tools are not installed\n",
        guest.binary().display()
    );
    guest.run().code_is(1).stdout_is("").stderr_is(&message);
    assert!(!guest.sentinel.exists(), "nothing after the check may run");
    let linked = std::fs::read_dir(guest.root.join("usr/local/bin"))
        .unwrap()
        .count();
    assert_eq!(linked, 0, "no tool was linked");
    for (tty, text) in guest.consoles() {
        assert_eq!(text, format!("{message}STACK_CLOUD_INIT_FAILED\n"), "{tty}");
    }
}

/// When write_files could not decode the payload there is no binary at all: same stop.
#[test]
fn missing_binary_stops_runcmd_before_anything_else_runs() {
    let guest = guest!(|binary: &Path| std::fs::remove_file(binary).unwrap());
    let message = missing_message(&guest);
    guest.run().code_is(1).stdout_is("").stderr_is(&message);
    assert!(!guest.sentinel.exists(), "nothing after the check may run");
    for (tty, text) in guest.consoles() {
        assert_eq!(text, format!("{message}STACK_CLOUD_INIT_FAILED\n"), "{tty}");
    }
}

fn missing_message(guest: &Guest) -> String {
    format!(
        "emulator-tools: cannot read {} (the emulator-tools part of the user-data did not \
         install it: see /var/log/cloud-init-output.log)\n",
        guest.binary().display()
    )
}

/// A script part whose payload does not decode installs nothing (no partial binary either):
/// the first runcmd step stops the build as for a missing binary.
#[test]
fn damaged_script_part_installs_nothing_and_runcmd_stops() {
    let guest = guest!(
        |text: &mut String| {
            // A line of the payload cut short: the gzip stream no longer decodes.
            let start = text.find("<<'PAYLOAD'").unwrap() + 200_000;
            let line = start + text[start..].find('\n').unwrap() + 1;
            text.replace_range(line..line + 500, "");
        },
        |_| {}
    );
    let dir = guest.binary().parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing installed"
    );
    let message = missing_message(&guest);
    guest.run().code_is(1).stdout_is("").stderr_is(&message);
    assert!(!guest.sentinel.exists(), "nothing after the check may run");
    for (tty, text) in guest.consoles() {
        assert_eq!(text, format!("{message}STACK_CLOUD_INIT_FAILED\n"), "{tty}");
    }
}

#[test]
fn generator_help_version_and_bad_arguments() {
    let help = tool(GENERATOR).arg("--help").run();
    help.success();
    assert!(
        help.stdout_str().contains(
            "Usage: render-user-data [OPTIONS] --template <FILE> --script-template <FILE> --binary <FILE> --output <FILE>"
        ),
        "{}",
        help.stdout_str()
    );
    tool(GENERATOR)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text("render-user-data"));
    tool(GENERATOR)
        .arg("--bogus")
        .run()
        .code_is(2)
        .stderr_contains("unexpected argument '--bogus'");
}

#[test]
fn generator_rejects_a_template_without_a_place_for_the_binary() {
    let dir = scratch();
    let template = dir.path().join("template");
    let script = dir.path().join("script");
    let binary = dir.path().join("binary");
    let output = dir.path().join("out/user-data");
    std::fs::write(&template, "#cloud-config\nsum: @EMULATOR_TOOLS_SHA256@\n").unwrap();
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::write(&binary, "bytes").unwrap();
    generator(&template, &script, &binary, &output)
        .run()
        .code_is(1)
        .stdout_is("")
        .stderr_is(format!(
            "render-user-data: {}: no line holds @EMULATOR_TOOLS_GZ_B64@: nowhere to put the \
             binary\n",
            script.display()
        ));
    assert!(!output.exists());
}

#[test]
fn generator_refuses_a_user_data_over_the_size_limit() {
    let dir = scratch();
    let binary = dir.path().join("binary");
    let output = dir.path().join("user-data");
    // Without a build stamp the template's identity comment cannot be filled.
    std::fs::write(&binary, "small").unwrap();
    generator(&template(), &script_template(), &binary, &output)
        .run()
        .code_is(1)
        .stdout_is("")
        .stderr_is(format!(
            "render-user-data: reading {}: no build stamp in it, and a template names the \
             build: it is not an emulator-tools binary of this workspace, or was built before \
             --version carried the commit; rebuild it\n",
            binary.display()
        ));
    std::fs::write(&binary, format!("small{}", shared::stamp::STAMP)).unwrap();
    let run = generator(&template(), &script_template(), &binary, &output)
        .args(["--max-size", "1000"])
        .run();
    run.code_is(1).stdout_is("");
    assert!(
        run.stderr_str().starts_with(&format!(
            "render-user-data: rendering {}: ",
            output.display()
        )),
        "{}",
        run.stderr_str()
    );
    assert!(
        run.stderr_str().ends_with(
            " bytes is more than the limit of 1000 bytes; make the binary smaller (`make size` \
             shows where the bytes are) or raise --max-size\n"
        ),
        "{}",
        run.stderr_str()
    );
    assert!(!output.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}

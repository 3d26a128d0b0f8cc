//! render-stack-env: the whole output file, the keys, every refusal of the env-file parser, and
//! a real labelled loop device mounted in a private mount namespace.
//!
//! `expected.env` and `expected-snapshot.env` are what the original script wrote for the same
//! `runtime.env`, `base.env` and keys, less base.env's comments and blank lines (which docker's
//! `--env-file` skips, so the container saw the same variables). The tool writes exactly that,
//! followed by the Stack Auth names of the renamed variables ([`stack_auth_names`]).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::common::sandbox::{self, LoopDevice};
use crate::common::*;

const TOOL: &str = "render-stack-env";
const PCK: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const SSK: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const SAK: &str = "adad0123adad0123adad0123adad0123adad0123adad0123adad0123adad0123";
const KEY_FILES: [&str; 3] = ["internal-pck", "internal-ssk", "internal-sak"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/render-stack-env")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// The snapshot build's placeholder keys.
const PLACEHOLDER_PCK: &str = "00000000000000000000000000000000ffffffffffffffffffffffffffffffff";
const PLACEHOLDER_SSK: &str = "00000000000000000000000000000000eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

/// The lines written after the original's: the variables the product renamed, under their Stack
/// Auth names (what the released host's image reads), with the values of the Hexclave names.
fn stack_auth_names(pck: &str, ssk: &str, prefix: &str) -> String {
    format!(
        "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={pck}\n\
         STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY={ssk}\n\
         NEXT_PUBLIC_STACK_PORT_PREFIX={prefix}\n"
    )
}

/// The whole output for the fixtures and the fixed keys.
fn expected_env() -> String {
    read_fixture("expected.env") + &stack_auth_names(PCK, SSK, "81")
}

/// The whole output for the fixtures in snapshot-build mode.
fn expected_snapshot_env() -> String {
    read_fixture("expected-snapshot.env")
        + &stack_auth_names(PLACEHOLDER_PCK, PLACEHOLDER_SSK, "81")
}

/// A scratch layout: `cfg/` stands for the mounted disk, `keys/`, `run/` for the output, and a
/// build env file that does not exist unless a test writes it.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let setup = Setup { dir: scratch() };
        std::fs::create_dir_all(setup.cfg()).unwrap();
        std::fs::copy(fixture("runtime.env"), setup.runtime()).unwrap();
        std::fs::copy(fixture("base.env"), setup.base()).unwrap();
        setup
    }

    /// With the fixed keys stored as `openssl rand -hex 32 >` wrote them.
    fn seeded() -> Setup {
        let setup = Setup::new();
        std::fs::create_dir_all(setup.keys()).unwrap();
        for (file, key) in KEY_FILES.iter().zip([PCK, SSK, SAK]) {
            let path = setup.keys().join(file);
            std::fs::write(&path, format!("{key}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        setup
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn cfg(&self) -> PathBuf {
        self.path("cfg")
    }
    fn runtime(&self) -> PathBuf {
        self.path("cfg/runtime.env")
    }
    fn base(&self) -> PathBuf {
        self.path("cfg/base.env")
    }
    fn keys(&self) -> PathBuf {
        self.path("keys")
    }
    fn build_env(&self) -> PathBuf {
        self.path("stack-build.env")
    }
    fn output(&self) -> PathBuf {
        self.path("run/local-emulator.env")
    }

    fn cmd(&self) -> Cmd {
        tool(TOOL)
            .arg("--mount-point")
            .arg(self.cfg())
            .arg("--key-dir")
            .arg(self.keys())
            .arg("--build-env")
            .arg(self.build_env())
            .current_dir(self.dir.path())
    }

    /// A run that mounts nothing and writes the output file.
    fn run(&self) -> Run {
        self.cmd()
            .arg("--no-mount")
            .arg("--output")
            .arg(self.output())
            .run()
    }

    /// [`Setup::run`], killed and failed when it takes longer than `limit`.
    fn run_within(&self, limit: std::time::Duration) -> Run {
        self.cmd()
            .arg("--no-mount")
            .arg("--output")
            .arg(self.output())
            .run_within(limit)
    }

    fn output_text(&self) -> String {
        std::fs::read_to_string(self.output()).unwrap()
    }

    /// Every file under keys/ and run/ with its bytes and mode.
    fn state(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        let mut state = BTreeMap::new();
        for dir in [self.keys(), self.path("run")] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let meta = std::fs::metadata(&path).unwrap();
                state.insert(
                    path.clone(),
                    (std::fs::read(&path).unwrap(), meta.mode() & 0o7777),
                );
            }
        }
        state
    }

    #[track_caller]
    fn assert_no_temp_files(&self) {
        for dir in [self.keys(), self.path("run")] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.contains(".tmp-"), "temporary file left: {name}");
            }
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn is_lower_hex_key(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn golden_output_matches_the_original_whole_and_in_order() {
    let setup = Setup::seeded();
    setup.run().success().stdout_is("").stderr_is("");
    assert_eq!(setup.output_text(), expected_env());
    assert_eq!(mode(&setup.output()), 0o600);
    // The keys were reused as they were.
    for (file, key) in KEY_FILES.iter().zip([PCK, SSK, SAK]) {
        let path = setup.keys().join(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{key}\n"));
        assert_eq!(mode(&path), 0o600);
    }
    setup.assert_no_temp_files();
}

#[test]
fn rerun_replaces_the_output_atomically_with_mode_0600() {
    let setup = Setup::seeded();
    std::fs::create_dir_all(setup.path("run")).unwrap();
    std::fs::write(setup.output(), "stale\n").unwrap();
    std::fs::set_permissions(setup.output(), std::fs::Permissions::from_mode(0o644)).unwrap();
    setup.run().success();
    assert_eq!(setup.output_text(), expected_env());
    assert_eq!(mode(&setup.output()), 0o600);
    setup.assert_no_temp_files();
}

#[test]
fn snapshot_mode_writes_placeholders_and_cron_secret() {
    let setup = Setup::seeded();
    // The host's build.env: base.env plus the snapshot switch.
    let build_env = format!(
        "{}STACK_EMULATOR_BUILD_SNAPSHOT=1\nSTACK_EMULATOR_CAPTURE_SAVEVM=1\n",
        read_fixture("base.env")
    );
    std::fs::write(setup.build_env(), build_env).unwrap();
    setup.run().success().stderr_is("");
    assert_eq!(setup.output_text(), expected_snapshot_env());
    // Written with printf '%s': no newline.
    let placeholders = [
        PLACEHOLDER_PCK,
        PLACEHOLDER_SSK,
        "00000000000000000000000000000000dddddddddddddddddddddddddddddddd",
    ];
    for (file, placeholder) in KEY_FILES.iter().zip(placeholders) {
        let path = setup.keys().join(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), placeholder);
        assert_eq!(mode(&path), 0o600);
    }
}

#[test]
fn snapshot_switch_is_the_last_exact_value_not_a_prefix() {
    let setup = Setup::seeded();
    // The original's grep '^STACK_EMULATOR_BUILD_SNAPSHOT=1' took both of these for "on".
    for build_env in [
        "STACK_EMULATOR_BUILD_SNAPSHOT=10\n",
        "STACK_EMULATOR_BUILD_SNAPSHOT=1\nSTACK_EMULATOR_BUILD_SNAPSHOT=0\n",
    ] {
        std::fs::write(setup.build_env(), build_env).unwrap();
        setup.run().success();
        assert_eq!(setup.output_text(), expected_env(), "{build_env}");
    }
    std::fs::write(
        setup.build_env(),
        "export STACK_EMULATOR_BUILD_SNAPSHOT=\"1\"\n",
    )
    .unwrap();
    setup.run().success();
    assert_eq!(setup.output_text(), expected_snapshot_env());
}

#[test]
fn malformed_build_env_is_an_error_naming_it() {
    let setup = Setup::seeded();
    std::fs::write(
        setup.build_env(),
        "OK=1\nSTACK_EMULATOR_BUILD_SNAPSHOT=$(id)\n",
    )
    .unwrap();
    setup.run().code_is(1).stderr_is(format!(
        "{TOOL}: {}:2: command substitution $(...) is not allowed (nothing in an env file is \
         executed)\n",
        setup.build_env().display()
    ));
    assert!(!setup.output().exists());
}

#[test]
fn keys_are_generated_once_and_reused() {
    let setup = Setup::new();
    setup.run().success().stderr_is("");
    assert_eq!(mode(&setup.keys()), 0o700);
    let mut keys = Vec::new();
    for file in KEY_FILES {
        let path = setup.keys().join(file);
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let key = text.strip_suffix('\n').expect("a trailing newline");
        assert!(is_lower_hex_key(key), "{file}: {text:?}");
        keys.push(key.to_string());
    }
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    let expected = expected_env()
        .replace(PCK, &keys[0])
        .replace(SSK, &keys[1])
        .replace(SAK, &keys[2]);
    assert_eq!(setup.output_text(), expected);

    let before = setup.state();
    setup.run().success();
    assert_eq!(setup.state(), before, "second run changed keys or output");
}

#[test]
fn empty_key_file_is_regenerated_alone() {
    let setup = Setup::seeded();
    std::fs::write(setup.keys().join("internal-ssk"), "").unwrap();
    setup.run().success();
    let ssk = std::fs::read_to_string(setup.keys().join("internal-ssk")).unwrap();
    let ssk = ssk.strip_suffix('\n').unwrap();
    assert!(is_lower_hex_key(ssk) && ssk != SSK);
    assert_eq!(mode(&setup.keys().join("internal-ssk")), 0o600);
    assert_eq!(setup.output_text(), expected_env().replace(SSK, ssk));
    assert_eq!(
        std::fs::read_to_string(setup.keys().join("internal-pck")).unwrap(),
        format!("{PCK}\n")
    );
}

#[test]
fn corrupt_key_file_is_an_error_naming_it() {
    let setup = Setup::seeded();
    setup.run().success();
    std::fs::write(setup.keys().join("internal-pck"), "").unwrap();
    // One character short, and a secret-looking value that must not be echoed.
    let corrupt = setup.keys().join("internal-sak");
    std::fs::write(&corrupt, format!("{}\n", &SAK[1..])).unwrap();
    let before = setup.state();
    let run = setup.run();
    run.code_is(1).stderr_is(format!(
        "{TOOL}: reading {}: not a key: expected 64 hex characters and at most one trailing \
         newline; restore the file, or delete it to have a new key generated\n",
        corrupt.display()
    ));
    assert!(!run.stderr_str().contains(&SAK[1..]));
    // The empty pck was not regenerated either: nothing changed.
    assert_eq!(setup.state(), before);
    setup.assert_no_temp_files();
}

/// (file, contents, the error after `path:`) — each a line the parser or validation refuses.
fn refusals() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let runtime = read_fixture("runtime.env");
    let without = |name: &str| -> Vec<u8> {
        runtime
            .lines()
            .filter(|l| !l.starts_with(name))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let with = |line: &str| format!("{runtime}{line}\n").into_bytes();
    vec![
        (
            "base.env",
            b"A=1\nB=\"never closed\n".to_vec(),
            "2: unterminated double quote (a value cannot span lines)",
        ),
        (
            "base.env",
            b"# c\n\nC='never closed\n".to_vec(),
            "3: unterminated single quote",
        ),
        (
            "base.env",
            b"X=$(touch PWNED)\n".to_vec(),
            "1: command substitution $(...) is not allowed (nothing in an env file is executed)",
        ),
        (
            "base.env",
            b"X=\"a $(touch PWNED)\"\n".to_vec(),
            "1: command substitution $(...) is not allowed (nothing in an env file is executed)",
        ),
        (
            "base.env",
            b"X=`touch PWNED`\n".to_vec(),
            "1: command substitution with backticks is not allowed (nothing in an env file is \
             executed)",
        ),
        (
            "base.env",
            b"X=${HOME}/x\n".to_vec(),
            "1: '$' expansion is not supported (write the value literally; single quotes keep \
             a '$')",
        ),
        (
            "base.env",
            b"A=1\nJUST_A_WORD\n".to_vec(),
            "2: missing '=' (expected KEY=value)",
        ),
        (
            "base.env",
            b"1BAD=x\n".to_vec(),
            "1: invalid variable name \"1BAD\" (letters, digits and '_', not starting with a \
             digit)",
        ),
        (
            "base.env",
            b"BAD-NAME=x\n".to_vec(),
            "1: invalid variable name \"BAD-NAME\" (letters, digits and '_', not starting with \
             a digit)",
        ),
        ("base.env", b"A=1\nB=x\0y\n".to_vec(), "2: NUL byte"),
        ("base.env", b"A=caf\xe9\n".to_vec(), "1: invalid UTF-8"),
        (
            "base.env",
            b"A=1\r\nB=x\ry\r\n".to_vec(),
            "2: carriage return inside a line",
        ),
        (
            "base.env",
            b"A=1 # comment\n".to_vec(),
            "1: blank inside an unquoted value (quote the value; an inline '# comment' is not \
             supported)",
        ),
        (
            "base.env",
            b"A='x' y\n".to_vec(),
            "1: text after the closing quote",
        ),
        (
            "runtime.env",
            with("STACK_EMULATOR_BACKEND_HOST_PORT=81o2"),
            "8: STACK_EMULATOR_BACKEND_HOST_PORT=\"81o2\" is not a port number (1-65535, \
             digits only, no leading zero)",
        ),
        (
            "runtime.env",
            with("STACK_EMULATOR_MINIO_HOST_PORT=65536"),
            "8: STACK_EMULATOR_MINIO_HOST_PORT=\"65536\" is not a port number (1-65535, digits \
             only, no leading zero)",
        ),
        (
            "runtime.env",
            with("STACK_EMULATOR_MOCK_OAUTH_HOST_PORT=0"),
            "8: STACK_EMULATOR_MOCK_OAUTH_HOST_PORT=\"0\" is not a port number (1-65535, digits \
             only, no leading zero)",
        ),
        (
            "runtime.env",
            with("STACK_EMULATOR_PORT_PREFIX=656"),
            "8: STACK_EMULATOR_PORT_PREFIX=\"656\" is not a port prefix: 1 to 3 digits without \
             a leading zero, at most 655, so that ${P}01, ${P}02 and ${P}14 are ports",
        ),
        (
            "runtime.env",
            with("STACK_EMULATOR_PORT_PREFIX=x1"),
            "8: STACK_EMULATOR_PORT_PREFIX=\"x1\" is not a port prefix: 1 to 3 digits without \
             a leading zero, at most 655, so that ${P}01, ${P}02 and ${P}14 are ports",
        ),
        (
            "runtime.env",
            without("STACK_EMULATOR_INBUCKET_HOST_PORT"),
            " and BASE: required variable STACK_EMULATOR_INBUCKET_HOST_PORT is not set",
        ),
        (
            "runtime.env",
            without("STACK_EMULATOR_PORT_PREFIX"),
            " and BASE: required variable STACK_EMULATOR_PORT_PREFIX is not set",
        ),
    ]
}

#[test]
fn every_refusal_names_file_and_line_and_changes_nothing() {
    let setup = Setup::seeded();
    setup.run().success();
    let before = setup.state();
    for (file, contents, why) in refusals() {
        std::fs::copy(fixture("runtime.env"), setup.runtime()).unwrap();
        std::fs::copy(fixture("base.env"), setup.base()).unwrap();
        let path = setup.cfg().join(file);
        std::fs::write(&path, &contents).unwrap();
        let why = why.replace("BASE", &setup.base().display().to_string());
        let sep = if why.starts_with(' ') { "" } else { ":" };
        setup
            .run()
            .code_is(1)
            .stdout_is("")
            .stderr_is(format!("{TOOL}: {}{sep}{why}\n", path.display()));
        assert_eq!(setup.state(), before, "{file}: {why}");
        setup.assert_no_temp_files();
        assert!(!setup.path("PWNED").exists(), "a command ran");
    }
}

#[test]
fn crlf_and_a_leading_bom_are_accepted() {
    let setup = Setup::seeded();
    let crlf = |name: &str| read_fixture(name).replace('\n', "\r\n");
    std::fs::write(setup.runtime(), crlf("runtime.env")).unwrap();
    std::fs::write(setup.base(), format!("\u{feff}{}", crlf("base.env"))).unwrap();
    setup.run().success().stderr_is("");
    assert_eq!(setup.output_text(), expected_env());
}

#[test]
fn a_bom_after_the_start_is_refused() {
    let setup = Setup::seeded();
    std::fs::write(setup.base(), "A=1\n\u{feff}B=2\n").unwrap();
    setup.run().code_is(1).stderr_is(format!(
        "{TOOL}: {}:2: invalid variable name \"\\u{{feff}}B\" (letters, digits and '_', not \
         starting with a digit)\n",
        setup.base().display()
    ));
}

#[test]
fn quotes_export_and_trailing_blanks_follow_the_documented_rules() {
    let setup = Setup::seeded();
    let base = "export EXPORTED=1\n\
                SINGLE='literal $HOME `x` \\n'\n\
                DOUBLE=\"say \\\"hi\\\" \\$5 \\\\ \\n\"   # a comment\n\
                PADDED=\"  kept  \"\n\
                TRAILING=dropped  \t\n\
                EMPTY=\n\
                EMPTY_QUOTED=''\n\
                URL=postgres://u:p@h:5432/db?a=1&b=2#frag\n\
                DUP=first\n\
                DUP=second\n";
    std::fs::write(setup.base(), base).unwrap();
    setup.run().success();
    let head = "EXPORTED=1\n\
                SINGLE=literal $HOME `x` \\n\n\
                DOUBLE=say \"hi\" $5 \\ \\n\n\
                PADDED=  kept  \n\
                TRAILING=dropped\n\
                EMPTY=\n\
                EMPTY_QUOTED=\n\
                URL=postgres://u:p@h:5432/db?a=1&b=2#frag\n\
                DUP=first\n\
                DUP=second\n";
    let text = setup.output_text();
    assert!(text.starts_with(head), "{text}");
    assert!(text[head.len()..].starts_with("STACK_EMULATOR_PORT_PREFIX=81\n"));
}

#[test]
fn base_env_wins_for_the_computed_values() {
    let setup = Setup::seeded();
    std::fs::write(
        setup.base(),
        "STACK_EMULATOR_PORT_PREFIX=92\nSTACK_EMULATOR_BACKEND_HOST_PORT=30002\n\
         STACK_EMULATOR_MOCK_OAUTH_HOST_PORT=\n",
    )
    .unwrap();
    setup.run().success();
    let text = setup.output_text();
    // Both definitions reach the container (docker keeps the later, runtime.env's)...
    assert!(text.starts_with(
        "STACK_EMULATOR_PORT_PREFIX=92\nSTACK_EMULATOR_BACKEND_HOST_PORT=30002\n\
         STACK_EMULATOR_MOCK_OAUTH_HOST_PORT=\nSTACK_EMULATOR_PORT_PREFIX=81\n"
    ));
    // ...while the computed block used base.env's, as the original (sourcing base.env last) did.
    for line in [
        "NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX=92\n",
        "NEXT_PUBLIC_STACK_API_URL=http://localhost:30002\n",
        "NEXT_PUBLIC_SERVER_STACK_API_URL=http://127.0.0.1:9202\n",
        "STACK_OAUTH_MOCK_PORT=9214\n",
        "BACKEND_PORT=9202\n",
        "DASHBOARD_PORT=9201\n",
    ] {
        assert!(text.contains(line), "{line}");
    }
}

#[test]
fn mock_oauth_port_defaults_to_prefix_14() {
    let setup = Setup::seeded();
    let runtime: String = read_fixture("runtime.env")
        .lines()
        .filter(|l| !l.starts_with("STACK_EMULATOR_MOCK_OAUTH_HOST_PORT"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(setup.runtime(), runtime).unwrap();
    setup.run().success();
    let text = setup.output_text();
    assert!(
        text.contains("\nSTACK_OAUTH_MOCK_URL=http://localhost:8114\nSTACK_OAUTH_MOCK_PORT=8114\n")
    );
}

#[test]
fn missing_input_file_is_named() {
    let setup = Setup::seeded();
    std::fs::remove_file(setup.base()).unwrap();
    setup.run().code_is(1).stderr_is(format!(
        "{TOOL}: reading {}: No such file or directory (os error 2)\n",
        setup.base().display()
    ));
    assert!(!setup.output().exists());
}

#[test]
fn output_dash_prints_and_changes_nothing() {
    let setup = Setup::seeded();
    // No --no-mount: with --output - nothing is mounted (cfg/ is not a mount point, and no
    // label lookup happens).
    let before = setup.state();
    setup
        .cmd()
        .args(["--output", "-"])
        .run()
        .success()
        .stdout_is(expected_env())
        .stderr_is("");
    assert_eq!(setup.state(), before);
    assert!(!setup.output().exists());
}

/// The last value of every name in a docker env file (docker keeps the last definition).
fn docker_view(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn output_dash_gives_each_renamed_variable_under_both_names_after_the_originals_lines() {
    let setup = Setup::seeded();
    let run = setup.cmd().args(["--output", "-"]).run();
    run.success().stderr_is("");
    let text = run.stdout_str();
    // The original's lines, byte for byte and in order, then the Stack Auth names.
    let original = read_fixture("expected.env");
    assert_eq!(
        text.strip_prefix(original.as_str()),
        Some(
            "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY=\
             c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00\n\
             STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY=\
             5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed\n\
             NEXT_PUBLIC_STACK_PORT_PREFIX=81\n"
        ),
        "{text}"
    );
    let env = docker_view(&text);
    for (hexclave, stack_auth, value) in [
        (
            "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
            "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
            PCK,
        ),
        (
            "STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY",
            "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
            SSK,
        ),
        (
            "NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX",
            "NEXT_PUBLIC_STACK_PORT_PREFIX",
            "81",
        ),
    ] {
        assert_eq!(env.get(hexclave).map(String::as_str), Some(value));
        assert_eq!(env.get(stack_auth), env.get(hexclave), "{stack_auth}");
    }
    // The snapshot build's file likewise.
    std::fs::write(setup.build_env(), "STACK_EMULATOR_BUILD_SNAPSHOT=1\n").unwrap();
    setup
        .cmd()
        .args(["--output", "-"])
        .run()
        .success()
        .stdout_is(expected_snapshot_env());
}

#[test]
fn inputs_using_the_stack_auth_names_are_read_as_the_same_variables() {
    let setup = Setup::seeded();
    // base.env of the released host's generation: its lines stay where they are, and, as for
    // a name defined twice, the later definition (the key, the computed prefix) wins for both
    // names.
    let extra = "NEXT_PUBLIC_STACK_PORT_PREFIX=70\n\
                 STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY=from-base-env\n";
    std::fs::write(setup.base(), format!("{}{extra}", read_fixture("base.env"))).unwrap();
    setup.run().success().stdout_is("").stderr_is("");
    let expected = expected_env().replacen(
        "STACK_EMULATOR_PORT_PREFIX=81\n",
        &format!("{extra}STACK_EMULATOR_PORT_PREFIX=81\n"),
        1,
    );
    assert_eq!(setup.output_text(), expected);
    let env = docker_view(&expected);
    assert_eq!(env["NEXT_PUBLIC_STACK_PORT_PREFIX"], "81");
    assert_eq!(env["STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY"], SSK);
}

#[test]
fn output_dash_with_missing_keys_prints_one_off_keys_and_saves_nothing() {
    let setup = Setup::new();
    let run = setup.cmd().args(["--output", "-"]).run();
    run.success();
    let notes: String = KEY_FILES
        .iter()
        .map(|f| {
            format!(
                "{TOOL}: note: {} is missing or empty; printed a one-off key that was not \
                 saved\n",
                setup.keys().join(f).display()
            )
        })
        .collect();
    run.stderr_is(notes);
    let text = run.stdout_str();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY="))
        .unwrap();
    assert!(is_lower_hex_key(key));
    assert!(!run.stderr_str().contains(key), "a key was logged");
    assert!(!setup.keys().exists());
    assert!(!setup.path("run").exists());
}

#[test]
fn label_not_found_says_where_it_looked() {
    let setup = Setup::seeded();
    let by_label = setup.path("by-label");
    let sys = setup.path("sys");
    std::fs::create_dir_all(&sys).unwrap();
    setup
        .cmd()
        .arg("--by-label-dir")
        .arg(&by_label)
        .arg("--sys-block-dir")
        .arg(&sys)
        .arg("--output")
        .arg(setup.output())
        .run()
        .code_is(1)
        .stderr_is(format!(
            "{TOOL}: finding the disk labelled STACKCFG: {}/STACKCFG does not resolve and no \
             device under {} has that label (ext2/3/4, iso9660 or vfat); check that the disk is \
             attached (lsblk -f, blkid -L STACKCFG)\n",
            by_label.display(),
            sys.display()
        ));
    assert!(!setup.output().exists());
}

#[test]
fn help_documents_defaults_and_the_env_file_syntax() {
    let run = tool(TOOL).arg("--help").run();
    run.success().stderr_is("");
    let help = run.stdout_str();
    for needle in [
        "[default: STACKCFG]",
        "[default: /dev/disk/by-label]",
        "[default: /sys/class/block]",
        "[default: /mnt/stack-runtime]",
        "[default: /var/lib/stack-auth]",
        "[default: /etc/stack-build.env]",
        "[default: /run/stack-auth/local-emulator.env]",
        "--no-mount",
        "With --output -, the file goes to stdout and nothing is mounted or written",
        "Env-file syntax",
        "  KEY='value'        literal, '$' and '\\' included.",
        "  export KEY=value   the same as KEY=value.",
        "CRLF line ends are accepted; a UTF-8\nbyte-order mark at the start of the file is skipped",
        "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
        "NEXT_PUBLIC_STACK_PORT_PREFIX",
    ] {
        assert!(
            help_contains(&help, needle),
            "--help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn version_and_bad_flag() {
    tool(TOOL)
        .arg("--version")
        .run()
        .success()
        .stdout_is(version_text(TOOL));
    let run = tool(TOOL).arg("--bogus").run();
    run.code_is(2)
        .stdout_is("")
        .stderr_contains("unexpected argument '--bogus'");
}

// ---------------------------------------------------------------------------------------------
// A real labelled disk: an ext4 image on a loop device, mounted in a private mount namespace.

/// The loop tests attach devices carrying labels; one at a time keeps the sysfs scan
/// unambiguous.
static LOOP_LOCK: Mutex<()> = Mutex::new(());

fn loop_prerequisites() -> bool {
    sandbox::loop_available()
}

/// An ext4 image labelled `label` holding the fixture env files.
fn labelled_image(setup: &Setup, label: &str) -> PathBuf {
    let image = setup.path("stackcfg.ext4");
    sandbox::ext4_image(&image, label, &setup.cfg(), "16M");
    image
}

/// Runs the tool twice in a private mount namespace (the second run finds the disk mounted
/// already), then prints the namespace's mountinfo lines for the mount point.
fn run_in_namespace(setup: &Setup, mount_point: &Path, extra: &[&std::ffi::OsStr]) -> Run {
    let script = r#"set -e
mp=$1; shift
"$@"
"$@"
while read -r id parent dev root point rest; do
    [ "$point" = "$mp" ] && echo "$id $parent $dev $root $point $rest"
done < /proc/self/mountinfo
true"#;
    let mut cmd = tool(TOOL);
    cmd.cmd = Command::new("unshare");
    cmd.cmd
        .args([
            "-m",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(mount_point)
        .arg(tool_path(TOOL))
        .arg("--mount-point")
        .arg(mount_point)
        .arg("--key-dir")
        .arg(setup.keys())
        .arg("--build-env")
        .arg(setup.build_env())
        .arg("--output")
        .arg(setup.output())
        .args(extra);
    cmd.run()
}

/// The filesystem type, source and options of the one mount line printed.
#[track_caller]
fn assert_mounted_read_only(run: &Run, fs_type: &str, device: &str) {
    run.success().stderr_is("");
    let lines: Vec<String> = run.stdout_str().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "one mount expected:\n{}", run.stdout_str());
    let (head, tail) = lines[0].split_once(" - ").unwrap();
    let options = head.split(' ').nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "not read-only: {}",
        lines[0]
    );
    let tail: Vec<&str> = tail.split(' ').collect();
    assert_eq!(&tail[..2], [fs_type, device], "{}", lines[0]);
}

#[test]
fn mounts_a_labelled_loop_device_found_through_a_by_label_link() {
    if !loop_prerequisites() {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::seeded();
    let image = labelled_image(&setup, "STACKCFG");
    let device = LoopDevice::attach(&image);
    let by_label = setup.path("by-label");
    std::fs::create_dir_all(&by_label).unwrap();
    std::os::unix::fs::symlink(&device.0, by_label.join("STACKCFG")).unwrap();
    // An empty sysfs: the link alone must be enough.
    let sys = setup.path("no-sys");
    std::fs::create_dir_all(&sys).unwrap();
    let mount_point = setup.path("mnt/stack-runtime");

    let run = run_in_namespace(
        &setup,
        &mount_point,
        &[
            "--by-label-dir".as_ref(),
            by_label.as_os_str(),
            "--sys-block-dir".as_ref(),
            sys.as_os_str(),
        ],
    );
    assert_mounted_read_only(&run, "ext4", &device.0);
    assert_eq!(setup.output_text(), expected_env());
    assert_eq!(mode(&setup.output()), 0o600);
    // The mount lived in the namespace only; the directory was created like mkdir -p.
    assert!(mount_point.is_dir());
    assert_eq!(std::fs::read_dir(&mount_point).unwrap().count(), 0);
}

#[test]
fn mounts_a_labelled_loop_device_found_by_scanning_sysfs() {
    if !loop_prerequisites() {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::seeded();
    // The scan reads every block device of the machine, where another suite may have a
    // STACKCFG disk attached: a label of our own keeps the match unique.
    let label = format!("RSE{}", std::process::id() % 10_000_000);
    let image = labelled_image(&setup, &label);
    let device = LoopDevice::attach(&image);
    let empty = setup.path("no-by-label");
    std::fs::create_dir_all(&empty).unwrap();
    let mount_point = setup.path("mnt/stack-runtime");

    let run = run_in_namespace(
        &setup,
        &mount_point,
        &[
            "--label".as_ref(),
            label.as_ref(),
            "--by-label-dir".as_ref(),
            empty.as_os_str(),
        ],
    );
    assert_mounted_read_only(&run, "ext4", &device.0);
    assert_eq!(setup.output_text(), expected_env());
    assert_eq!(std::fs::read_dir(&mount_point).unwrap().count(), 0);
}

#[test]
fn unprobed_filesystem_is_mounted_through_the_kernel_type_list() {
    if !loop_prerequisites() || !require(has_program("mksquashfs"), "mksquashfs (squashfs-tools)") {
        return;
    }
    let _serial = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::seeded();
    // squashfs has no superblock probe here: only the /proc/filesystems fallback finds it.
    let image = setup.path("stackcfg.squashfs");
    let out = Command::new("mksquashfs")
        .arg(setup.cfg())
        .arg(&image)
        .args(["-noappend", "-no-progress", "-quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mksquashfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = LoopDevice::attach(&image);
    let mount_point = setup.path("mnt/stack-runtime");
    let run = run_in_namespace(
        &setup,
        &mount_point,
        &["--device".as_ref(), device.0.as_ref()],
    );
    assert_mounted_read_only(&run, "squashfs", &device.0);
    assert_eq!(setup.output_text(), expected_env());
}

/// `mkfifo` at `path`, mode 0600.
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn file_type(path: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(path).unwrap().file_type()
}

/// Issue 10, R1: an output that exists and is not a regular file is refused and left alone,
/// and no key is created for a run that cannot write its output.
#[test]
fn an_output_that_is_not_a_regular_file_is_refused_and_left_alone() {
    use std::os::unix::fs::FileTypeExt;
    let setup = Setup::new();
    let fifo = setup.path("fifo");
    mkfifo(&fifo);
    let link = setup.path("link");
    std::fs::write(setup.path("real.env"), "kept\n").unwrap();
    std::os::unix::fs::symlink(setup.path("real.env"), &link).unwrap();
    let proc_link = setup.path("to-stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &proc_link).unwrap();
    let dir = setup.path("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let mut cases = vec![
        (fifo.clone(), "a FIFO", ""),
        (
            link.clone(),
            "a symbolic link",
            ": symbolic links are not followed",
        ),
        (
            proc_link.clone(),
            "a symbolic link",
            ": symbolic links are not followed",
        ),
        (dir.clone(), "a directory", ""),
    ];
    let node = setup.path("mynull");
    if is_root() {
        let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; makes a character device 1:3 (/dev/null's numbers).
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0, "mknod");
        cases.push((node.clone(), "a character device", ""));
    }
    for (output, kind, note) in &cases {
        setup
            .cmd()
            .arg("--no-mount")
            .arg("--output")
            .arg(output)
            .run_within(std::time::Duration::from_secs(10))
            .code_is(1)
            .stdout_is("")
            .stderr_is(format!(
                "{TOOL}: writing {}: it exists and is {kind}, not a regular file; refusing to \
                 replace it (remove it, or name a regular file{note})\n",
                output.display()
            ));
    }
    assert!(file_type(&fifo).is_fifo());
    assert!(file_type(&link).is_symlink() && file_type(&proc_link).is_symlink());
    assert_eq!(
        std::fs::read_to_string(setup.path("real.env")).unwrap(),
        "kept\n"
    );
    assert!(file_type(&dir).is_dir());
    if is_root() {
        assert!(file_type(&node).is_char_device());
    }
    assert!(
        !setup.keys().exists(),
        "no key is created for an output that cannot be written"
    );
    setup.assert_no_temp_files();
}

/// Issue 10, R2 and R3: inputs are read with a size cap and must be regular files, so a device,
/// a FIFO or a huge file is refused at once instead of hanging or eating memory.
#[test]
fn inputs_must_be_small_regular_files() {
    let limit = std::time::Duration::from_secs(10);
    let setup = Setup::seeded();
    let before = setup.state();
    let refused = |flag: &str, path: &Path, why: &str| {
        let mut inputs = [
            ("--runtime-env", setup.runtime()),
            ("--base-env", setup.base()),
            ("--build-env", setup.build_env()),
        ];
        for input in inputs.iter_mut().filter(|(f, _)| *f == flag) {
            input.1 = path.to_path_buf();
        }
        inputs
            .iter()
            .fold(tool(TOOL), |cmd, (f, p)| cmd.arg(f).arg(p))
            .arg("--key-dir")
            .arg(setup.keys())
            .arg("--no-mount")
            .arg("--output")
            .arg(setup.output())
            .run_within(limit)
            .code_is(1)
            .stdout_is("")
            .stderr_is(format!("{TOOL}: reading {}: {why}\n", path.display()));
    };
    // A sparse 512 MiB file: refused after 1 MiB, not read whole.
    let sparse = setup.path("sparse.env");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let too_large = "larger than 1048576 bytes, which no file of this kind is; check the path";
    refused("--base-env", &sparse, too_large);
    refused("--build-env", &sparse, too_large);
    let fifo = setup.path("fifo.env");
    mkfifo(&fifo);
    let fifo_why = "it is a FIFO, not a regular file; give the path of a regular file";
    refused("--base-env", &fifo, fifo_why);
    refused("--runtime-env", &fifo, fifo_why);
    refused("--build-env", &fifo, fifo_why);
    let zero = Path::new("/dev/zero");
    let device = "it is a character device, not a regular file; give the path of a regular file";
    refused("--base-env", zero, device);
    refused("--build-env", zero, device);
    assert_eq!(setup.state(), before);
    assert!(!setup.output().exists());

    // A key file that is a FIFO, or a link to a device: named, never read.
    let pck = setup.keys().join("internal-pck");
    for replacement in ["fifo", "/dev/zero", "/dev/urandom"] {
        std::fs::remove_file(&pck).unwrap();
        if replacement == "fifo" {
            mkfifo(&pck);
        } else {
            std::os::unix::fs::symlink(replacement, &pck).unwrap();
        }
        let why = if replacement == "fifo" {
            fifo_why
        } else {
            device
        };
        setup
            .run_within(limit)
            .code_is(1)
            .stderr_is(format!("{TOOL}: reading {}: {why}\n", pck.display()));
    }
    // A key file larger than 4 KiB.
    std::fs::remove_file(&pck).unwrap();
    std::fs::write(&pck, vec![b'a'; 4097]).unwrap();
    setup.run_within(limit).code_is(1).stderr_is(format!(
        "{TOOL}: reading {}: larger than 4096 bytes, which no file of this kind is; check the path\n",
        pck.display()
    ));
    assert!(!setup.output().exists());
}

/// Issue 10, R4: concurrent first runs on an empty key directory all write the keys that end up
/// in the key files.
#[test]
fn concurrent_first_runs_agree_on_the_keys() {
    for _trial in 0..10 {
        let setup = Setup::new();
        std::fs::create_dir_all(setup.keys()).unwrap();
        let runs: Vec<_> = (0..8)
            .map(|i| {
                setup
                    .cmd()
                    .arg("--no-mount")
                    .arg("--output")
                    .arg(setup.path(&format!("run/out-{i}.env")))
                    .cmd
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in runs {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let key = |file: &str| {
            std::fs::read_to_string(setup.keys().join(file))
                .unwrap()
                .trim_end()
                .to_string()
        };
        let (pck, ssk, sak) = (
            key("internal-pck"),
            key("internal-ssk"),
            key("internal-sak"),
        );
        for i in 0..8 {
            let text = std::fs::read_to_string(setup.path(&format!("run/out-{i}.env"))).unwrap();
            for (name, value) in [
                ("STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY", &pck),
                ("STACK_INTERNAL_PROJECT_SECRET_SERVER_KEY", &ssk),
                ("STACK_SEED_INTERNAL_PROJECT_SUPER_SECRET_ADMIN_KEY", &sak),
            ] {
                assert!(
                    text.contains(&format!("\n{name}={value}\n")),
                    "run {i}'s {name} is not the key file's"
                );
            }
        }
        setup.assert_no_temp_files();
    }
}

/// Issue 10, R5: running out of space while creating the keys leaves the key directory as it
/// was (a tmpfs with room for one key file).
#[test]
fn no_space_for_the_keys_leaves_the_key_directory_as_it_was() {
    require!(
        crate::common::sandbox::available(),
        "root, unshare and nsenter (util-linux)"
    );
    let setup = Setup::new();
    let s = sandbox::Sandbox::new();
    std::fs::create_dir_all(setup.keys()).unwrap();
    s.ok(
        "mount",
        [
            "-t".as_ref(),
            "tmpfs".as_ref(),
            "-o".as_ref(),
            "size=4k,mode=0700".as_ref(),
            "hexclave-keys".as_ref(),
            setup.keys().as_os_str(),
        ],
    );
    let run = s
        .tool(TOOL)
        .arg("--no-mount")
        .arg("--runtime-env")
        .arg(setup.runtime())
        .arg("--base-env")
        .arg(setup.base())
        .arg("--build-env")
        .arg(setup.build_env())
        .arg("--key-dir")
        .arg(setup.keys())
        .arg("--output")
        .arg(setup.output())
        .run();
    run.code_is(1).stderr_contains("No space left on device");
    assert!(
        run.stderr_str().starts_with(&format!(
            "{TOOL}: writing {}/internal-",
            setup.keys().display()
        )),
        "{}",
        run.stderr_str()
    );
    assert_eq!(s.ok("ls", ["-A".as_ref(), setup.keys().as_os_str()]), "");
    assert!(!setup.output().exists());
}

/// Issue 10, R6: an empty label (or one that names another file) is a usage error.
#[test]
fn a_label_that_is_no_label_is_a_usage_error() {
    let setup = Setup::seeded();
    let by_label = setup.path("by-label");
    std::fs::create_dir_all(&by_label).unwrap();
    for label in ["", ".", "..", "a/b"] {
        setup
            .cmd()
            .arg("--by-label-dir")
            .arg(&by_label)
            .arg("--label")
            .arg(label)
            .arg("--output")
            .arg(setup.output())
            .run()
            .code_is(2)
            .stderr_contains(&format!(
                "invalid value '{label}' for '--label <LABEL>': not a filesystem label: it must \
                 not be empty, '.', '..' or hold a '/'"
            ));
    }
    assert!(!setup.output().exists());
}

/// `--output -` mounts nothing: when the disk is not mounted, the missing env file is explained
/// as the normal path explains a missing disk — which disk, and what to do.
#[test]
fn output_dash_explains_an_unmounted_disk() {
    let setup = Setup::seeded();
    std::fs::remove_file(setup.runtime()).unwrap();
    std::fs::remove_file(setup.base()).unwrap();
    let empty = setup.path("no-disks");
    std::fs::create_dir_all(&empty).unwrap();
    // No disk with the label: the lookup's own reason follows.
    let run = setup
        .cmd()
        .args(["--output", "-", "--by-label-dir"])
        .arg(&empty)
        .arg("--sys-block-dir")
        .arg(&empty)
        .run();
    run.code_is(1).stdout_is("");
    let text = run.stderr_str();
    assert!(
        text.starts_with(&format!(
            "{TOOL}: reading {}: {} is not a mount point, and --output - mounts nothing; and \
             finding the disk labelled STACKCFG: ",
            setup.runtime().display(),
            setup.cfg().display()
        )),
        "{text}"
    );
    assert!(text.contains("check that the disk is attached"), "{text}");
    // A known device: the command that mounts it.
    let run = setup
        .cmd()
        .args(["--output", "-", "--device", "/dev/vdz"])
        .run();
    run.code_is(1).stdout_is("").stderr_is(format!(
        "{TOOL}: reading {}: {} is not a mount point, and --output - mounts nothing: mount the \
         STACKCFG disk first (mount -o ro /dev/vdz {}), run render-stack-env once without \
         --output - (it mounts the disk), or name the files with --runtime-env and --base-env\n",
        setup.runtime().display(),
        setup.cfg().display(),
        setup.cfg().display()
    ));
}

//! The one table of tools.
//!
//! Everything that needs to know which tools exist reads [`TOOLS`]: the dispatcher, `--list`,
//! `--install` and the test that the table matches the crates under `bins/`. Adding a tool is
//! one line here (plus its dependency line in this crate's `Cargo.toml`). Keep the table in
//! alphabetical order: `--list` prints it as it stands.

use std::ffi::OsString;
use std::process::ExitCode;

/// One tool: the name it is installed and called by, and the pair every tool crate exports.
pub struct Tool {
    /// The exact program name, as in the original user-data (`/usr/local/bin/<name>`).
    pub name: &'static str,
    /// The tool's `main`, given the full argument list with the tool's name first.
    pub main: fn(Vec<OsString>) -> ExitCode,
    /// The tool's clap command (for its description in `--help`).
    pub command: fn() -> clap::Command,
}

macro_rules! tools {
    ($($name:literal => $krate:ident,)*) => {
        /// Every tool, in alphabetical order.
        pub const TOOLS: &[Tool] = &[$(Tool {
            name: $name,
            main: |args| $krate::main(args),
            command: $krate::command,
        },)*];
    };
}

tools! {
    "install-emulator-containers" => install_emulator_containers,
    "log-provision" => log_provision,
    "log-provision-stream" => log_provision_stream,
    "mount-host-fs" => mount_host_fs,
    "provision-build" => provision_build,
    "render-stack-env" => render_stack_env,
    "run-build-migrations" => run_build_migrations,
    "run-stack-container" => run_stack_container,
    "slim-docker-image" => slim_docker_image,
    "trigger-fast-rotate" => trigger_fast_rotate,
    "wait-for-deps" => wait_for_deps,
    "wait-for-stack-ready" => wait_for_stack_ready,
}

/// The tool called exactly `name`, if any. No prefix or suffix matching: the names share
/// hyphenated parts (`log-provision`, `log-provision-stream`), so only equality is unambiguous.
pub fn find(name: &std::ffi::OsStr) -> Option<&'static Tool> {
    TOOLS.iter().find(|tool| name == tool.name)
}

/// The tool whose name is closest to `name`, when it is a likely typo of it (`wait-for-dep`,
/// `log-provison`): at most two letters added, dropped, changed or swapped. The names share
/// long parts (`wait-for-`), so a looser measure would suggest a tool for any `wait-for-…`.
pub fn similar(name: &str) -> Option<&'static str> {
    TOOLS
        .iter()
        .map(|tool| (strsim::damerau_levenshtein(name, tool.name), tool.name))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_each_tools_own_command_name() {
        for tool in TOOLS {
            assert_eq!((tool.command)().get_name(), tool.name);
        }
    }

    #[test]
    fn table_is_sorted_and_without_duplicates() {
        let names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    /// The table holds exactly the tool crates under `bins/` (every one but this crate).
    #[test]
    fn table_matches_the_crates_under_bins() {
        let bins = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let mut crates: Vec<String> = std::fs::read_dir(bins)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.path().join("Cargo.toml").is_file())
            .map(|entry| entry.file_name().into_string().unwrap())
            .filter(|name| name != env!("CARGO_PKG_NAME"))
            .collect();
        crates.sort_unstable();
        let names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
        assert_eq!(
            names, crates,
            "add the missing tools to the table in src/tools.rs (and to Cargo.toml)"
        );
    }

    #[test]
    fn typos_suggest_the_nearest_tool() {
        assert_eq!(similar("wait-for-dep"), Some("wait-for-deps"));
        assert_eq!(similar("wait-for-nothing"), None);
        assert_eq!(similar("log-provison"), Some("log-provision"));
        assert_eq!(similar("ls"), None);
    }

    #[test]
    fn find_takes_exact_names_only() {
        assert_eq!(
            find("log-provision".as_ref()).map(|t| t.name),
            Some("log-provision")
        );
        for near in [
            "provision-stream",
            "xlog-provision",
            "log-provision.sh",
            "LOG-PROVISION",
            "",
        ] {
            assert!(find(near.as_ref()).is_none(), "{near}");
        }
    }
}

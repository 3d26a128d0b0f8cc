//! Environment knobs under both product names.
//!
//! The original scripts read `STACK_*` variables (`STACK_DEPS_TIMEOUT`, `STACK_PROVISION_LOG_FILE`,
//! …). The product is being renamed to Hexclave, so every such knob is also accepted as
//! `HEXCLAVE_*`, and that spelling wins when both are set. An empty variable counts as unset,
//! under either name and for every knob, as the originals' `${STACK_X:-default}` had it: an
//! empty `HEXCLAVE_X` leaves `STACK_X` in force, and when both are empty or unset the default
//! applies. This is the one place that rule lives ([`lookup`]): tools declare their arguments
//! with clap's `env = "STACK_…"` and [`with_hexclave_env`] points each of them at the name that
//! [`lookup`] chose; code that reads a knob directly calls [`var_os`].
//!
//! Variables that the host or the container consume (the `STACK_EMULATOR_*` entries of the env
//! files) are data, not knobs, and keep their one name.

use std::ffi::OsString;

use clap::Command;

const OLD: &str = "STACK_";
const NEW: &str = "HEXCLAVE_";

/// The `HEXCLAVE_*` spelling of a `STACK_*` knob, or `None` for any other name.
pub fn hexclave_name(stack_name: &str) -> Option<String> {
    stack_name
        .strip_prefix(OLD)
        .map(|rest| format!("{NEW}{rest}"))
}

/// The name and value of a knob: `HEXCLAVE_<rest>` when it is set and not empty, else
/// `STACK_<rest>` when that is set and not empty, else `None`.
pub fn lookup(stack_name: &str) -> Option<(String, OsString)> {
    hexclave_name(stack_name)
        .into_iter()
        .chain(std::iter::once(stack_name.to_string()))
        .find_map(|name| {
            std::env::var_os(&name)
                .filter(|value| !value.is_empty())
                .map(|value| (name, value))
        })
}

/// The value of a knob (see [`lookup`]); `None` when unset or empty under both names.
pub fn var_os(stack_name: &str) -> Option<OsString> {
    lookup(stack_name).map(|(_, value)| value)
}

/// Makes every argument of `cmd` that reads `STACK_X` read `HEXCLAVE_X` instead when that is
/// set and not empty ([`lookup`]). (The help's Environment section, built by the layer that runs
/// tools, says so.)
pub fn with_hexclave_env(cmd: Command) -> Command {
    let knobs: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_str()?;
            hexclave_name(name)?;
            Some((arg.get_id().clone(), name.to_string()))
        })
        .collect();
    knobs
        .into_iter()
        .filter_map(|(id, stack)| {
            let (name, _) = lookup(&stack)?;
            (name != stack).then_some((id, name))
        })
        .fold(cmd, |cmd, (id, new)| cmd.mut_arg(id, |arg| arg.env(new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_only_stack_knobs() {
        assert_eq!(
            hexclave_name("STACK_DEPS_TIMEOUT").as_deref(),
            Some("HEXCLAVE_DEPS_TIMEOUT")
        );
        assert_eq!(hexclave_name("DOCKER_HOST"), None);
    }
}

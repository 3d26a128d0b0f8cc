//! `--dry-run`: what a run would do, step by step, with every command, and nothing done.
//!
//! It reads only: the state file (to say where a run would resume), the arch file (whether the
//! smoke test would run) and sysfs (whether the free space would be zero-filled). No docker
//! command runs and nothing is written, the provision log included: the plan goes to stdout.

use std::io::Write;

use crate::rebuild::{STEPS, State, Step};
use crate::slim::{self, ARCH_KEY, Config, SMOKE_PATH};
use crate::zero_fill::{self, Mode};
use shared::duration::seconds;
use shared::emulator::envfile;
use shared::error::{Context, Result};

/// Prints the plan of a run with `config` to `out`.
pub fn print(config: &Config, out: &mut impl Write) -> Result<()> {
    let mut lines = Vec::new();
    let state = State::load(&config.rebuild.state_file)?;
    match &state {
        Some(state) => lines.push(format!(
            "a storage rebuild is recorded in {} (last step done: {}): steps 1-3 are skipped",
            config.rebuild.state_file.display(),
            state.done.map_or("none", Step::name)
        )),
        None => build_test_flatten(config, &mut lines)?,
    }
    let from = state.as_ref().and_then(State::next_step);
    let skip = match (&state, from) {
        (Some(_), Some(next)) => STEPS.iter().position(|s| s.step == next).unwrap_or(0),
        (Some(_), None) => STEPS.len(),
        (None, _) => 0,
    };
    for (index, row) in STEPS.iter().enumerate().skip(skip) {
        lines.push(format!(
            "storage rebuild step {}/{}: {}: {}",
            index + 1,
            STEPS.len(),
            row.name,
            config.rebuild.describe(row.step)
        ));
        if row.step == Step::FreeSpace {
            lines.push(format!("  {}", free_space(&config.rebuild.free_space)));
        }
    }
    let mut text = String::new();
    for line in lines {
        text.push_str("dry run: ");
        text.push_str(&line);
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .context(|| "writing the plan to stdout".to_string())
}

/// Steps 1-3, with the commands a run would build (the smoke test's keys by name only).
fn build_test_flatten(config: &Config, lines: &mut Vec<String>) -> Result<()> {
    lines.push(format!(
        "step 1: {} (the Dockerfile on stdin: FROM {})",
        slim::build_command(config),
        config.image
    ));
    let arch = envfile::value_in(&config.arch_env, ARCH_KEY)?;
    if arch.as_deref() == Some("arm64") {
        lines.push(format!("step 2: no smoke test ({ARCH_KEY}=arm64)"));
    } else {
        lines.push(format!(
            "step 2: {}, then wait up to {} for 200 on http://127.0.0.1:{}{SMOKE_PATH}",
            slim::smoke_command(config)?,
            seconds(config.smoke_timeout),
            config.smoke_port
        ));
    }
    let [create, export, import] = slim::flatten_commands(config);
    lines.push(format!(
        "step 3: {create}; {export} | {import}; {}",
        config
            .docker
            .command(["rm", "-f", config.flatten_container.as_str()])
    ));
    Ok(())
}

/// What the free-space step would do on this machine.
fn free_space(config: &zero_fill::Config) -> String {
    let trim = if config.trim.is_empty() {
        "no trim command".to_string()
    } else {
        shell_words::join(config.trim.iter().map(|w| w.to_string_lossy().into_owned()))
    };
    let fill = format!(
        "write zeros to {} until the filesystem is full, remove it, then {trim}",
        config.path.display()
    );
    match config.mode {
        Mode::Always => fill,
        Mode::Never => trim,
        Mode::Auto => {
            let dir = config.path.parent().unwrap_or(std::path::Path::new("."));
            match zero_fill::discard_support(&config.sysfs, dir) {
                Some((device, max)) if max > 0 && !config.trim.is_empty() => format!(
                    "{trim}; {device} takes discards (discard_max_bytes {max}), so no zeros \
                     unless the trim fails; then: {fill}"
                ),
                _ => format!(
                    "{fill} (the disk under {} takes no discards)",
                    dir.display()
                ),
            }
        }
    }
}

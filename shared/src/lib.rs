//! The logic behind every emulator tool.
//!
//! Each tool crate under `bins/` is a thin front end: it declares its arguments with clap, calls
//! into this crate and lets [`cli::run`] turn the outcome into an exit status. Everything a tool
//! actually does lives here, one module per concern, so that the tools share one log writer, one
//! env-file parser, one mount-table reader and one way of naming environment knobs.

pub mod args;
pub mod atomic;
pub mod blockdev;
pub mod cli;
pub mod diagnostics;
pub mod docker;
pub mod envfile;
pub mod error;
pub mod hostfs;
pub mod install;
pub mod interrupt;
pub mod keystore;
pub mod knob;
pub mod lock;
pub mod migrations;
pub mod mounts;
pub mod progress;
pub mod provision;
pub mod provision_log;
pub mod rotate;
pub mod signal;
pub mod slim;
pub mod small_file;
pub mod stack_container;
pub mod stack_env;
pub mod storage_rebuild;
pub mod tail;
pub mod wait;
pub mod zero_fill;

#[cfg(test)]
mod proptests;

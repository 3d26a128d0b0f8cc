//! What several emulator tools use: the infrastructure under every tool, in layers.
//!
//! Each tool's own logic lives in its crate under `bins/`; this crate holds only what more than
//! one tool needs, grouped in layers. A module may use the layers below its own and nothing
//! above or beside it, so that each layer can be read, tested and changed knowing only what is
//! under it (`tests/layers.rs` fails on an arrow that points the wrong way):
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | 5 | [`cli`] | running a tool: parsing, the one error report, exit codes, argument values |
//! | 4 | [`wait`] | the wait engine: targets probed concurrently under one deadline |
//! | 3 | [`log`], [`docker`], [`emulator`] | the provision log; the docker client; the emulator's files (env files, keys, volumes, defaults) |
//! | 2 | [`process`] | the one way to start a program |
//! | 1 | [`os`] | atomic files, mounts, block devices, signals |
//! | 0 | [`error`], [`knob`], [`duration`], [`stamp`] | the error type; `STACK_*`/`HEXCLAVE_*` names; durations as text; the build's identity |
//!
//! No module here is named after a tool or knows one: a tool's name comes in as a value.

pub mod cli;
pub mod docker;
pub mod duration;
pub mod emulator;
pub mod error;
pub mod knob;
pub mod log;
pub mod os;
pub mod process;
pub mod stamp;
pub mod wait;

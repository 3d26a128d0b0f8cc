//! Integration tests: every tool driven as a real process, with real stdin, stdout, files,
//! mounts and docker engines. `make test` builds the tools first; see `common` for the harness.

#[macro_use]
mod common;
mod tools;

//! `make bench`: speed and memory figures of the built tools, each beside a baseline measured in
//! the same run (these machines are noisy, so only ratios mean anything).
//!
//! Run with the tools in `HEXCLAVE_TEST_BIN_DIR` (the Makefile points it at the release build).
//! A benchmark name on the command line runs only the benchmarks whose name contains it.

#[path = "../common/mod.rs"]
#[macro_use]
#[allow(unused_macros)]
mod common;
mod util;

mod image_load;
mod log_provision;

/// Every benchmark: a name and the function that runs it and prints its figures.
const BENCHES: &[(&str, fn())] = &[
    ("log-provision", log_provision::per_call),
    ("log-provision-stream", log_provision::stream_throughput),
    ("image-load", image_load::load),
];

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, bench) in BENCHES {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            println!("== {name}");
            bench();
        }
    }
}

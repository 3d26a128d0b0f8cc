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
mod wait;
mod zero_fill;

/// Every benchmark: a name and the function that runs it and prints its figures.
const BENCHES: &[(&str, fn())] = &[
    ("log-provision", log_provision::per_call),
    ("log-provision-stream", log_provision::stream_throughput),
    ("wait-for-deps detection", wait::detection_latency),
    ("wait-for-deps waiting cpu", wait::waiting_cpu),
    ("zero-fill", zero_fill::versus_dd),
    ("image-load", image_load::load),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(zero_fill::HELPER) {
        zero_fill::helper(&args[1..]);
        return;
    }
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

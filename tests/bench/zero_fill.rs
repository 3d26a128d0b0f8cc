//! The zero-fill beside `dd if=/dev/zero bs=1M`, on the same scratch filesystems.
//!
//! Both fill a filesystem mounted inside a private mount namespace (a sandbox), never the
//! machine's own: a 512 MiB tmpfs (memory bandwidth: the cost of the writes themselves) and a
//! 256 MiB ext4 on a loop device (a real filesystem's allocation path). Ours runs in a helper
//! process — this benchmark binary re-executed inside the sandbox with `--zero-fill-helper` —
//! calling `slim_docker_image::zero_fill::fill` (fsync, remove, syncfs), with its default 1 MiB writes and
//! with 4 MiB writes; dd runs as `dd if=/dev/zero of=FILE bs=1M conv=fsync` followed by `rm`.
//! Rounds alternate to spread the machine's noise; the figure is the median round of each. The
//! loop device's figures swing by ±20% between runs (its writes land in the host's page cache).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::sandbox::{self, Sandbox};
use crate::common::{has_program, is_root, require};

/// The flag that makes this binary the helper.
pub const HELPER: &str = "--zero-fill-helper";
const ROUNDS: usize = 5;

/// `--zero-fill-helper FILE BLOCK`: fills, prints `BYTES NANOS` on stdout.
pub fn helper(args: &[String]) {
    let (Some(file), Some(block)) = (args.first(), args.get(1)) else {
        eprintln!("usage: {HELPER} FILE BLOCK_BYTES");
        std::process::exit(2);
    };
    let block: usize = block.parse().expect("block size in bytes");
    let start = Instant::now();
    let filled = slim_docker_image::zero_fill::fill(
        Path::new(file),
        block,
        Duration::from_secs(3600),
        |_, _| {},
        || false,
    )
    .map_err(shared::error::Error::from)
    .expect("zero-fill");
    println!("{} {}", filled.bytes, start.elapsed().as_nanos());
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

pub fn versus_dd() {
    let ok = is_root() && sandbox::available() && has_program("dd");
    if !require(
        ok,
        "root, unshare/nsenter and dd for the zero-fill benchmark",
    ) {
        return;
    }
    let sb = Sandbox::new();
    let tmpfs = sb.path("tmpfs");
    let ext4 = sb.path("ext4");
    let image = sb.path("ext4.img");
    std::fs::create_dir(&tmpfs).unwrap();
    std::fs::create_dir(&ext4).unwrap();
    let setup = sb.sh(&format!(
        "mount -t tmpfs -o size=512m bench '{}' && mkfs.ext4 -q -F '{}' 256M && \
         mount -o loop '{}' '{}'",
        tmpfs.display(),
        image.display(),
        image.display(),
        ext4.display()
    ));
    assert!(
        setup.status.success(),
        "scratch filesystems: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let exe = std::env::current_exe().expect("benchmark binary path");
    for (label, dir) in [("tmpfs 512 MiB", &tmpfs), ("ext4 on loop, 256 MiB", &ext4)] {
        let file = dir.join("zero.fill");
        let ours = |block: usize| {
            let out = sb
                .command(&exe)
                .arg(HELPER)
                .arg(&file)
                .arg(block.to_string())
                .output()
                .expect("run the zero-fill helper");
            assert!(
                out.status.success(),
                "helper: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let mut words = text.split_whitespace().map(|w| w.parse::<u128>().unwrap());
            let bytes = words.next().unwrap() as u64;
            let nanos = words.next().unwrap() as u64;
            (bytes, Duration::from_nanos(nanos))
        };
        let dd = || {
            let start = Instant::now();
            let out = sb
                .command("sh")
                .arg("-c")
                .arg("dd if=/dev/zero of=\"$1\" bs=1M conv=fsync 2>/dev/null; rm -f \"$1\"")
                .arg("sh")
                .arg(&file)
                .output()
                .expect("run dd");
            assert!(out.status.success());
            start.elapsed()
        };
        let (mut dd_rates, mut ours_rates, mut ours_4m_rates) = (vec![], vec![], vec![]);
        let mut filled = 0;
        for _ in 0..ROUNDS {
            let t = dd();
            let (bytes, took) = ours(slim_docker_image::zero_fill::DEFAULT_BLOCK_SIZE);
            let (bytes_4m, took_4m) = ours(4 << 20);
            filled = bytes;
            // dd fills the same free space, to within a block.
            dd_rates.push(mib_per_s(bytes, t));
            ours_rates.push(mib_per_s(bytes, took));
            ours_4m_rates.push(mib_per_s(bytes_4m, took_4m));
        }
        let (ours, ours_4m, dd) = (
            median(&mut ours_rates),
            median(&mut ours_4m_rates),
            median(&mut dd_rates),
        );
        println!(
            "zero-fill on {label} ({} MiB free): ours {ours:.0} MiB/s (1 MiB writes), \
             {ours_4m:.0} MiB/s (4 MiB writes); dd bs=1M {dd:.0} MiB/s; ratio {:.2}x",
            filled >> 20,
            ours / dd
        );
    }
}

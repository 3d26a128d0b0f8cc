//! install-emulator-containers' image load, beside the original's `gzip -dc img.tgz | docker
//! load` and `docker load -i img.tgz` (the engine inflating the archive itself), on the
//! machine's engine.
//!
//! Two generated images, each one layer under a unique tag, saved with `docker save | gzip -1`
//! and removed again: 300 MB of random bytes (the archive is as large as the data, and the
//! engine's own work dominates), and 300 MB of word-like text, about 120 MB compressed (as code
//! and `node_modules` compress; inflating weighs more). The tool runs with an `img.tgz.sha256`
//! beside the archive, so its figure includes checking the digest. Every method loads each
//! archive three times, in a rotating order, after a `sync`; the image is removed after every
//! load. The figure that counts is the tool's ratio to the original's pipe (target: at most
//! 0.8).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{docker, scratch, tool_path};
use crate::util::time;

const ROUNDS: usize = 3;

pub fn load() {
    if !docker::engine_available() {
        println!("skipped: the suite's own docker engine could not start (see above)");
        return;
    }
    let dir = scratch();
    let random = prepare(dir.path(), "random", 300 << 20, random_bytes);
    compare("random, 300 MB", &random);
    std::fs::remove_dir_all(&random.dir).expect("remove the random archive");
    let text = prepare(dir.path(), "text", 300 << 20, text_bytes);
    compare("text, about 2.5:1", &text);
}

/// Builds a fresh command for one run of a method.
type MakeCommand<'a> = Box<dyn Fn() -> Command + 'a>;

struct Archive {
    dir: PathBuf,
    tag: String,
    tgz: PathBuf,
}

/// Builds a one-layer image of `len` bytes from `generate`, saves it as `<dir>/<name>/img.tgz`
/// with its `.sha256`, and removes the image.
fn prepare(root: &Path, name: &str, len: usize, generate: fn(&mut dyn Write, usize)) -> Archive {
    let dir = root.join(name);
    let context = dir.join("context");
    std::fs::create_dir_all(&context).expect("create the build context");
    let mut blob = std::io::BufWriter::new(
        std::fs::File::create(context.join("blob")).expect("create the blob"),
    );
    generate(&mut blob, len);
    blob.flush().expect("write the blob");
    drop(blob);
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY blob /data/blob\n",
    )
    .expect("write the Dockerfile");
    let tag = docker::unique_name(&format!("bench-{name}"));
    docker::docker_ok([
        "build",
        "--quiet",
        "--tag",
        &tag,
        context.to_str().expect("utf-8"),
    ]);
    std::fs::remove_dir_all(&context).expect("remove the build context");
    let tgz = dir.join("img.tgz");
    let status = Command::new("sh")
        .args(["-c", "docker save \"$1\" | gzip -1 > \"$2\"", "sh"])
        .arg(&tag)
        .arg(&tgz)
        .env("DOCKER_HOST", docker::host())
        .status()
        .expect("run docker save | gzip");
    assert!(status.success(), "docker save | gzip");
    docker::docker_ok(["rmi", "-f", &tag]);
    let digest = Command::new("sha256sum")
        .arg(&tgz)
        .output()
        .expect("run sha256sum");
    let hex = String::from_utf8_lossy(&digest.stdout)[..64].to_string();
    std::fs::write(dir.join("img.tgz.sha256"), format!("{hex}  img.tgz\n")).expect("write");
    Archive { dir, tag, tgz }
}

/// Times every method on `archive` and prints the figures as ratios to the original's pipe.
fn compare(label: &str, archive: &Archive) {
    let size = std::fs::metadata(&archive.tgz).expect("archive").len();
    let methods: [(&str, MakeCommand); 3] = [
        (
            "gzip -dc | docker load (original)",
            Box::new(|| {
                let mut cmd = Command::new("sh");
                cmd.args(["-c", "gzip -dc \"$1\" | docker load", "sh"])
                    .arg(&archive.tgz);
                cmd
            }),
        ),
        (
            "docker load -i (engine inflates)",
            Box::new(|| {
                let mut cmd = Command::new("docker");
                cmd.args(["load", "-i"]).arg(&archive.tgz);
                cmd
            }),
        ),
        (
            "install-emulator-containers",
            Box::new(|| {
                let mut cmd = Command::new(tool_path("install-emulator-containers"));
                cmd.args(["--no-mount", "--start-docker", ""])
                    .arg("--image")
                    .arg(&archive.tgz)
                    .arg("--build-env")
                    .arg(archive.dir.join("stack-build.env"))
                    .arg("--build-arch-env")
                    .arg(archive.dir.join("stack-build-arch.env"))
                    .env_remove("STACK_PROVISION_LOG_FILE")
                    .env_remove("HEXCLAVE_PROVISION_LOG_FILE");
                cmd
            }),
        ),
    ];
    let mut totals = vec![Duration::ZERO; methods.len()];
    for round in 0..ROUNDS {
        // Each round starts with another method, so that none always follows the same one.
        for i in (0..methods.len()).map(|k| (k + round) % methods.len()) {
            let (name, make) = &methods[i];
            // What the previous load wrote must not be flushed during this one.
            let _ = Command::new("sync").status();
            let mut cmd = make();
            cmd.stdout(Stdio::null()).env("DOCKER_HOST", docker::host());
            let mut ok = true;
            totals[i] += time(|| ok = cmd.status().is_ok_and(|s| s.success()));
            assert!(ok, "{name} failed");
            let images = docker::docker_ok(["images", "--quiet", &archive.tag]);
            assert!(!images.trim().is_empty(), "{name} loaded no image");
            docker::docker_ok(["rmi", "-f", &archive.tag]);
        }
    }
    let base = totals[0].as_secs_f64();
    println!(
        "image load, {label}: img.tgz {:.0} MiB, mean of {ROUNDS}",
        size as f64 / f64::from(1 << 20)
    );
    for ((name, _), total) in methods.iter().zip(&totals) {
        let secs = total.as_secs_f64() / ROUNDS as f64;
        println!(
            "  {name:<36} {secs:6.2} s  {:6.1} MiB/s  ratio {:.2}x",
            size as f64 / f64::from(1 << 20) / secs,
            total.as_secs_f64() / base
        );
    }
}

/// xorshift64: fast, and incompressible enough for gzip.
fn random_bytes(out: &mut dyn Write, len: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        out.write_all(&buf[..n]).expect("write");
        left -= n;
    }
}

/// Words drawn from a small made-up vocabulary: compresses about 2.5:1 with `gzip -1`.
fn text_bytes(out: &mut dyn Write, len: usize) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let syllables = [
        "ex", "port", "const", "ion", "func", "re", "turn", "mod", "ule", "def", "ault", "type",
        "script", "node", "pack", "age", "json", "im", "val", "ue", "str", "ing", "num", "ber",
        "ob", "ject", "ar", "ray", "pro", "mise", "as", "ync",
    ];
    let mut vocabulary = Vec::new();
    for _ in 0..4096 {
        let r = next();
        let parts = 1 + (r % 4) as usize;
        let word: String = (0..parts)
            .map(|i| syllables[((r >> (8 + 5 * i)) % syllables.len() as u64) as usize])
            .collect();
        vocabulary.push(word);
    }
    let separators = [" ", " ", " ", ".", "(", ");\n", " = ", ", ", "\n  "];
    let mut written = 0;
    let mut line = String::with_capacity(1 << 16);
    while written < len {
        line.clear();
        while line.len() < (1 << 16) - 64 {
            let r = next();
            line.push_str(&vocabulary[(r % vocabulary.len() as u64) as usize]);
            line.push_str(separators[((r >> 20) % separators.len() as u64) as usize]);
        }
        let n = line.len().min(len - written);
        out.write_all(&line.as_bytes()[..n]).expect("write");
        written += n;
    }
}

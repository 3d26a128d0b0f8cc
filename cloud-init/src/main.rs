//! `render-user-data`: the emulator's cloud-init user-data, with the tools embedded.
//!
//! The committed template (`cloud-init/user-data.template`) is the original user-data with the
//! twelve bash scripts replaced by one `write_files` entry for the multicall binary and a first
//! `runcmd` step that checks the binary's SHA-256 before linking the tools. This fills in the two
//! things that depend on the build: the binary itself, gzipped and base64-encoded as cloud-init's
//! `encoding: gz+b64` expects, and its digest. Everything else in the template is copied byte for
//! byte, so the output differs from the original only where the template does.
//!
//! The output is reproducible: the gzip header carries no time stamp or file name, so the same
//! binary always renders the same user-data.
//!
//! The payload is most of the user-data, and a user-data must stay under 1 MiB, so it is
//! deflated as tightly as a practical encoder manages: libdeflate's best level, a few percent
//! smaller than zlib's and ten times faster than zopfli, which does no better here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sha2::{Digest, Sha256};
use shared::error::{Context, Error};

const TOOL: &str = "render-user-data";

/// Where the gzipped, base64-encoded binary goes: alone on its line, inside a YAML literal block.
const PAYLOAD: &str = "@EMULATOR_TOOLS_GZ_B64@";
/// Where the binary's SHA-256 goes (64 lowercase hex digits); any number of times, at least once.
const DIGEST: &str = "@EMULATOR_TOOLS_SHA256@";
/// Where the binary's build identity goes (`emulator-tools VERSION (commit C, TARGET, PROFILE)`,
/// read from the stamp in its bytes, as its `--version` prints it); any number of times.
const IDENTITY: &str = "@EMULATOR_TOOLS_IDENTITY@";
/// Base64 characters per line. Every line also carries the indentation and a newline, 7 bytes
/// in the template, so short lines cost space: MIME's 76 made the user-data 9% larger than its
/// payload, 2000 makes it 0.35%. 2000 keeps each line, indentation and newline included, within
/// the 2048 bytes that POSIX guarantees every text utility handles (LINE_MAX), so the file stays
/// an ordinary text file; a multiple of 4, each line decodes to whole bytes (1500).
const LINE_WIDTH: usize = 2000;

/// Render the cloud-init user-data: the template with the multicall binary embedded.
///
/// The line of the template that holds only @EMULATOR_TOOLS_GZ_B64@ becomes the binary, gzipped
/// and base64-encoded in lines of 2000 characters at that line's indentation (what cloud-init's
/// `encoding: gz+b64` decodes); every @EMULATOR_TOOLS_SHA256@ becomes the binary's SHA-256 in
/// lowercase hex, every @EMULATOR_TOOLS_IDENTITY@ its build identity (version, commit, target,
/// profile, read from the stamp in the binary). The output is written atomically; a result larger than --max-size is an error
/// and nothing is written.
#[derive(Parser)]
#[command(name = TOOL, version)]
struct Args {
    /// The user-data template.
    #[arg(long, value_name = "FILE")]
    template: PathBuf,

    /// The multicall binary to embed.
    #[arg(long, value_name = "FILE")]
    binary: PathBuf,

    /// Where to write the user-data (its directory is created when missing).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,

    /// The largest user-data accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_size: u64,
}

fn main() -> ExitCode {
    shared::cli::run(Args::command(), std::env::args_os(), run)
}

fn run(args: Args) -> Result<u8, Error> {
    let template = std::fs::read_to_string(&args.template)
        .context(|| format!("reading {}", args.template.display()))?;
    let binary =
        std::fs::read(&args.binary).context(|| format!("reading {}", args.binary.display()))?;
    let digest = hex::encode(Sha256::digest(&binary));
    let identity = match shared::stamp::find_in(&binary) {
        Some([version, commit, target, profile]) => {
            format!("emulator-tools {version} (commit {commit}, {target}, {profile})")
        }
        None if template.contains(IDENTITY) => {
            return Err(Error::new(
                format!("reading {}", args.binary.display()),
                "no build stamp in it, and the template names the build: it is not an \
                 emulator-tools binary of this workspace, or was built before --version carried \
                 the commit; rebuild it",
            ));
        }
        None => "binary".to_string(),
    };
    let template = template.replace(IDENTITY, &identity);
    let gzipped = gzip(&binary).context(|| format!("compressing {}", args.binary.display()))?;
    let user_data = render(&template, &base64(&gzipped), &digest)
        .map_err(|why| Error::new(args.template.display().to_string(), why))?;
    let size = user_data.len() as u64;
    if size > args.max_size {
        return Err(Error::new(
            format!("rendering {}", args.output.display()),
            format!(
                "{size} bytes is more than the limit of {} bytes; make the binary smaller \
                 (`make size` shows where the bytes are) or raise --max-size",
                args.max_size
            ),
        ));
    }
    write_atomically(&args.output, user_data.as_bytes())?;
    println!(
        "{}: {size} bytes ({identity}: {} bytes, gzipped {} bytes, sha256 {digest})",
        args.output.display(),
        binary.len(),
        gzipped.len()
    );
    Ok(0)
}

/// gzip at libdeflate's best level (12), with no time stamp or name in the header
/// (reproducible output).
fn gzip(data: &[u8]) -> Result<Vec<u8>, libdeflater::CompressionError> {
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::best());
    let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
    let len = compressor.gzip_compress(data, &mut out)?;
    out.truncate(len);
    Ok(out)
}

/// Standard base64 (RFC 4648, with padding), on one line.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let group = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (group >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Fills the placeholders of `template`: `payload` (one line of base64) in lines of
/// [`LINE_WIDTH`] at the indentation of the payload placeholder, `digest` for every digest
/// placeholder. Errors name the template line at fault.
fn render(template: &str, payload: &str, digest: &str) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + payload.len() * 11 / 10);
    let mut payload_line = None;
    let mut digests = 0;
    for (index, line) in template.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let content = line.strip_suffix('\n').unwrap_or(line);
        if content.trim_start() == PAYLOAD {
            if let Some(first) = payload_line {
                return Err(format!(
                    "line {number}: a second {PAYLOAD} (the first is on line {first}); the \
                     binary goes in one place"
                ));
            }
            payload_line = Some(number);
            let indent = &content[..content.len() - PAYLOAD.len()];
            for chunk in payload.as_bytes().chunks(LINE_WIDTH) {
                out.push_str(indent);
                // Base64 is ASCII, so every chunk is valid UTF-8.
                out.push_str(&String::from_utf8_lossy(chunk));
                out.push('\n');
            }
        } else if content.contains(PAYLOAD) {
            return Err(format!(
                "line {number}: {PAYLOAD} must be alone on its line (inside a YAML `|` block)"
            ));
        } else {
            digests += line.matches(DIGEST).count();
            let filled = line.replace(DIGEST, digest);
            if filled.contains("@EMULATOR_TOOLS_") {
                return Err(format!(
                    "line {number}: an unknown @EMULATOR_TOOLS_…@ placeholder (known: {PAYLOAD}, \
                     {DIGEST})"
                ));
            }
            out.push_str(&filled);
        }
    }
    if payload_line.is_none() {
        return Err(format!(
            "no line holds {PAYLOAD}: nowhere to put the binary"
        ));
    }
    if digests == 0 {
        return Err(format!("no {DIGEST}: nothing would check the binary"));
    }
    Ok(out)
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`, so a reader
/// never sees half a user-data.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| file.write_all(data).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::new(format!("writing {}", path.display()), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn payload_is_wrapped_at_the_placeholder_indentation() {
        let template = "a: |\n    @EMULATOR_TOOLS_GZ_B64@\nsum: @EMULATOR_TOOLS_SHA256@ @EMULATOR_TOOLS_SHA256@\n";
        let payload = "x".repeat(LINE_WIDTH * 2 + 3);
        let out = render(template, &payload, "abc").unwrap();
        let expected = format!(
            "a: |\n    {0}\n    {0}\n    xxx\nsum: abc abc\n",
            "x".repeat(LINE_WIDTH)
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn text_outside_the_placeholders_is_copied_byte_for_byte() {
        let template = "#cloud-config\r\nk: 'v'  \n\n  - |\n    @EMULATOR_TOOLS_GZ_B64@\n@EMULATOR_TOOLS_SHA256@";
        let out = render(template, "QQ==", "d").unwrap();
        assert_eq!(out, "#cloud-config\r\nk: 'v'  \n\n  - |\n    QQ==\nd");
    }

    #[test]
    fn misplaced_or_missing_placeholders_are_errors() {
        let cases = [
            (
                "@EMULATOR_TOOLS_SHA256@\n",
                "no line holds @EMULATOR_TOOLS_GZ_B64@",
            ),
            ("  @EMULATOR_TOOLS_GZ_B64@\n", "no @EMULATOR_TOOLS_SHA256@"),
            (
                "x: @EMULATOR_TOOLS_GZ_B64@\n@EMULATOR_TOOLS_SHA256@\n",
                "line 1: @EMULATOR_TOOLS_GZ_B64@ must be alone on its line",
            ),
            (
                "@EMULATOR_TOOLS_GZ_B64@\n@EMULATOR_TOOLS_SHA256@\n @EMULATOR_TOOLS_GZ_B64@\n",
                "line 3: a second @EMULATOR_TOOLS_GZ_B64@ (the first is on line 1)",
            ),
            (
                "@EMULATOR_TOOLS_GZ_B64@\n@EMULATOR_TOOLS_SHA256@ @EMULATOR_TOOLS_SHA265@\n",
                "line 2: an unknown @EMULATOR_TOOLS_",
            ),
        ];
        for (template, expected) in cases {
            let err = render(template, "QQ==", "d").unwrap_err();
            assert!(err.starts_with(expected), "{template:?}: {err}");
        }
    }

    #[test]
    fn gzip_is_reproducible_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = gzip(&data).unwrap();
        assert_eq!(a, gzip(&data).unwrap());
        assert_eq!(&a[4..8], &[0, 0, 0, 0], "no time stamp");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&a[..]), &mut back).unwrap();
        assert_eq!(back, data);
    }
}

//! `render-user-data`: the emulator's cloud-init user-data, with the tools embedded.
//!
//! The output is a MIME multipart user-data, one file, as cloud-init's NoCloud source reads it
//! from the seed disk (the host copies it there byte for byte), with two parts:
//!
//! 1. `text/cloud-config`: the committed template (`cloud-init/user-data.template`), the original
//!    user-data with the twelve bash scripts taken out and a first `runcmd` step that checks the
//!    tools binary's SHA-256 before linking the tools; this fills in that digest.
//! 2. `text/x-shellscript`, named `emulator-tools`: the second template
//!    (`cloud-init/emulator-tools.sh.template`), a script that holds the binary gzipped and
//!    base64-encoded and installs it. cloud-init writes it to its scripts directory and runs it
//!    just before the runcmd script (see the template for why that order holds).
//!
//! Why not the binary in the cloud-config's `write_files`, as before: cloud-init parses the
//! cloud-config with pure-Python YAML, several times per boot stage. With the ~930 KB payload in
//! it, that cost some 20 s of the init stage under TCG (the original's 33 KB document: about 1 s);
//! the same bytes in a MIME part go through Python's email parser, measured 10-20 times faster.
//! The binary travels as text because cloud-init's part handlers decode a `text/*` payload to a
//! string and write it back as UTF-8, which no binary survives, and it has no handler that writes
//! any other type. gzip rather than xz: xz (with its x86 filter) is 21% smaller, but xz-utils is
//! not in a minimal Debian (gzip is essential), and the bytes saved cost more time in xz's
//! decoder than they save in the parser.
//!
//! Everything in the templates outside the placeholders is copied byte for byte, so the
//! cloud-config part differs from the original only where the template does. The output is
//! reproducible: the gzip header carries no time stamp or file name, and the MIME boundary is
//! fixed (a line of a part that would look like it is an error).
//!
//! The payload is most of the user-data, and a user-data should stay under 1 MiB, so it is
//! deflated as tightly as a practical encoder manages: libdeflate's best level, a few percent
//! smaller than zlib's and ten times faster than zopfli, which does no better here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sha2::{Digest, Sha256};
use shared::error::{Context, Error};

const TOOL: &str = "render-user-data";

/// Where the gzipped, base64-encoded binary goes: alone on its line, in the script template.
const PAYLOAD: &str = "@EMULATOR_TOOLS_GZ_B64@";
/// Where the binary's SHA-256 goes (64 lowercase hex digits): at least once in the cloud-config
/// template (its check), any number of times in the script template.
const DIGEST: &str = "@EMULATOR_TOOLS_SHA256@";
/// Base64 characters per line: fewer lines parse faster in cloud-init's email parser (996
/// characters: 0.26 s against 0.46 s at MIME's 76, for the whole user-data), and 996 keeps every
/// line within the 998 characters a MIME text line may hold (RFC 5322). A multiple of 4, so each
/// line decodes to whole bytes.
const LINE_WIDTH: usize = 996;
/// The longest line a 7bit MIME part may hold, newline excluded (RFC 5322).
const MAX_LINE: usize = 998;
/// The MIME boundary. No base64 line can hold it (`-` is not in the alphabet), and a template
/// line that would end a part early is refused.
const BOUNDARY: &str = "==emulator-tools-user-data==";
/// Where the binary's build identity goes (`emulator-tools VERSION (commit C, TARGET, PROFILE)`,
/// read from the stamp in its bytes, as its `--version` prints it), in either template; any
/// number of times.
const IDENTITY: &str = "@EMULATOR_TOOLS_IDENTITY@";

/// Render the cloud-init user-data: a MIME multipart of the cloud-config template and the
/// install script with the multicall binary embedded.
///
/// The cloud-config part is --template with every @EMULATOR_TOOLS_SHA256@ replaced by the
/// binary's SHA-256 in lowercase hex (at least one: its check). The script part (named
/// emulator-tools, which cloud-init runs before the runcmd script) is --script-template with
/// its line holding only @EMULATOR_TOOLS_GZ_B64@ replaced by the binary, gzipped and
/// base64-encoded in lines of 996 characters, and any @EMULATOR_TOOLS_SHA256@ by the digest.
/// Every @EMULATOR_TOOLS_IDENTITY@, in either, becomes the binary's build identity (version,
/// commit, target, profile, read from the stamp in it). Both templates must be ASCII text with
/// lines of at most 998 characters (the parts are declared 7bit). The output is written
/// atomically; a result larger than --max-size is an error and nothing is written.
#[derive(Parser)]
#[command(name = TOOL, version)]
struct Args {
    /// The cloud-config template (the first part).
    #[arg(long, value_name = "FILE")]
    template: PathBuf,

    /// The install script template (the second part, which carries the binary).
    #[arg(long, value_name = "FILE")]
    script_template: PathBuf,

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

/// An error about a template, named by its path.
fn at(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |why| Error::new(path.display().to_string(), why)
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))
}

fn run(args: Args) -> Result<u8, Error> {
    let template = read_text(&args.template)?;
    let script_template = read_text(&args.script_template)?;
    let binary =
        std::fs::read(&args.binary).context(|| format!("reading {}", args.binary.display()))?;
    let digest = hex::encode(Sha256::digest(&binary));
    let identity = match shared::stamp::find_in(&binary) {
        Some([version, commit, target, profile]) => {
            format!("emulator-tools {version} (commit {commit}, {target}, {profile})")
        }
        None if template.contains(IDENTITY) || script_template.contains(IDENTITY) => {
            return Err(Error::new(
                format!("reading {}", args.binary.display()),
                "no build stamp in it, and a template names the build: it is not an \
                 emulator-tools binary of this workspace, or was built before --version carried \
                 the commit; rebuild it",
            ));
        }
        None => "binary".to_string(),
    };
    let template = template.replace(IDENTITY, &identity);
    let script_template = script_template
        .replace(IDENTITY, &identity)
        .replace(DIGEST, &digest);
    let gzipped = gzip(&binary).context(|| format!("compressing {}", args.binary.display()))?;
    let cloud_config = fill_digest(&template, &digest).map_err(at(&args.template))?;
    let script =
        fill_payload(&script_template, &base64(&gzipped)).map_err(at(&args.script_template))?;
    check_part(&cloud_config).map_err(at(&args.template))?;
    check_part(&script).map_err(at(&args.script_template))?;
    let user_data = multipart(&[
        ("text/cloud-config", "cloud-config", &cloud_config),
        ("text/x-shellscript", "emulator-tools", &script),
    ]);
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

/// The cloud-config template with every digest placeholder filled. Errors name the template
/// line at fault.
fn fill_digest(template: &str, digest: &str) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut digests = 0;
    for (index, line) in template.split_inclusive('\n').enumerate() {
        let number = index + 1;
        if line.contains(PAYLOAD) {
            return Err(format!(
                "line {number}: {PAYLOAD} belongs in the script template (--script-template)"
            ));
        }
        digests += line.matches(DIGEST).count();
        let filled = line.replace(DIGEST, digest);
        if filled.contains("@EMULATOR_TOOLS_") {
            return Err(format!(
                "line {number}: an unknown @EMULATOR_TOOLS_…@ placeholder (known here: {DIGEST})"
            ));
        }
        out.push_str(&filled);
    }
    if digests == 0 {
        return Err(format!("no {DIGEST}: nothing would check the binary"));
    }
    Ok(out)
}

/// The script template with its payload line replaced by `payload` (one line of base64) in
/// lines of [`LINE_WIDTH`] at that line's indentation. Errors name the template line at fault.
fn fill_payload(template: &str, payload: &str) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + payload.len() * 101 / 100);
    let mut payload_line = None;
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
                "line {number}: {PAYLOAD} must be alone on its line"
            ));
        } else if content.contains("@EMULATOR_TOOLS_") {
            return Err(format!(
                "line {number}: an unknown @EMULATOR_TOOLS_…@ placeholder (known here: {PAYLOAD})"
            ));
        } else {
            out.push_str(line);
        }
    }
    if payload_line.is_none() {
        return Err(format!(
            "no line holds {PAYLOAD}: nowhere to put the binary"
        ));
    }
    Ok(out)
}

/// A part's text is what its headers say (7bit: ASCII, lines of at most [`MAX_LINE`]) and
/// cannot end early (no line starts with `--BOUNDARY`).
fn check_part(text: &str) -> Result<(), String> {
    let delimiter = format!("--{BOUNDARY}");
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(at) = line.find(|c: char| !c.is_ascii() || (c.is_control() && c != '\t')) {
            return Err(format!(
                "line {number}, column {}: not printable ASCII (the part is sent as 7bit text)",
                at + 1
            ));
        }
        if line.len() > MAX_LINE {
            return Err(format!(
                "line {number}: {} characters, more than a MIME text line may hold ({MAX_LINE})",
                line.len()
            ));
        }
        if line.starts_with(&delimiter) {
            return Err(format!(
                "line {number}: starts with the MIME boundary {delimiter}, which would end the part"
            ));
        }
    }
    Ok(())
}

/// The MIME multipart document of `parts` (content type, file name, text): the layout of
/// cloud-init's own `make-mime`, with a fixed boundary. Each part's text keeps its last newline
/// (the one before a boundary belongs to the boundary).
fn multipart(parts: &[(&str, &str, &str)]) -> String {
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\nMIME-Version: 1.0\n\n");
    for (content_type, filename, text) in parts {
        out.push_str(&format!(
            "--{BOUNDARY}\nContent-Type: {content_type}; charset=\"us-ascii\"\n\
             MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n\
             Content-Disposition: attachment; filename=\"{filename}\"\n\n{text}\n"
        ));
    }
    out.push_str(&format!("--{BOUNDARY}--\n"));
    out
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
        let template = "#!/bin/sh\nbase64 -d <<'P'\n  @EMULATOR_TOOLS_GZ_B64@\nP\n";
        let payload = "x".repeat(LINE_WIDTH * 2 + 3);
        let out = fill_payload(template, &payload).unwrap();
        let expected = format!(
            "#!/bin/sh\nbase64 -d <<'P'\n  {0}\n  {0}\n  xxx\nP\n",
            "x".repeat(LINE_WIDTH)
        );
        assert_eq!(out, expected);
        assert_eq!(
            fill_digest(
                "sum: @EMULATOR_TOOLS_SHA256@ @EMULATOR_TOOLS_SHA256@\n",
                "abc"
            )
            .unwrap(),
            "sum: abc abc\n"
        );
    }

    #[test]
    fn text_outside_the_placeholders_is_copied_byte_for_byte() {
        let template = "#cloud-config\r\nk: 'v'  \n\n  - |\n@EMULATOR_TOOLS_SHA256@";
        let out = fill_digest(template, "d").unwrap();
        assert_eq!(out, "#cloud-config\r\nk: 'v'  \n\n  - |\nd");
        let script = "#!/bin/sh\r\n x  \n@EMULATOR_TOOLS_GZ_B64@\nend";
        assert_eq!(
            fill_payload(script, "QQ==").unwrap(),
            "#!/bin/sh\r\n x  \nQQ==\nend"
        );
    }

    #[test]
    fn misplaced_or_missing_placeholders_are_errors() {
        let digest_cases = [
            ("k: v\n", "no @EMULATOR_TOOLS_SHA256@"),
            (
                "@EMULATOR_TOOLS_SHA256@\n  @EMULATOR_TOOLS_GZ_B64@\n",
                "line 2: @EMULATOR_TOOLS_GZ_B64@ belongs in the script template",
            ),
            (
                "@EMULATOR_TOOLS_SHA256@ @EMULATOR_TOOLS_SHA265@\n",
                "line 1: an unknown @EMULATOR_TOOLS_",
            ),
        ];
        for (template, expected) in digest_cases {
            let err = fill_digest(template, "d").unwrap_err();
            assert!(err.starts_with(expected), "{template:?}: {err}");
        }
        let payload_cases = [
            ("#!/bin/sh\n", "no line holds @EMULATOR_TOOLS_GZ_B64@"),
            (
                "x=@EMULATOR_TOOLS_GZ_B64@\n",
                "line 1: @EMULATOR_TOOLS_GZ_B64@ must be alone on its line",
            ),
            (
                "@EMULATOR_TOOLS_GZ_B64@\n\n @EMULATOR_TOOLS_GZ_B64@\n",
                "line 3: a second @EMULATOR_TOOLS_GZ_B64@ (the first is on line 1)",
            ),
            (
                "@EMULATOR_TOOLS_GZ_B64@\n@EMULATOR_TOOLS_SHA256@\n",
                "line 2: an unknown @EMULATOR_TOOLS_",
            ),
        ];
        for (template, expected) in payload_cases {
            let err = fill_payload(template, "QQ==").unwrap_err();
            assert!(err.starts_with(expected), "{template:?}: {err}");
        }
    }

    #[test]
    fn parts_must_be_7bit_text_that_cannot_end_early() {
        assert_eq!(check_part("#!/bin/sh\n\tok\n"), Ok(()));
        let long = format!("a\n{}\n", "b".repeat(MAX_LINE + 1));
        assert_eq!(
            check_part(&long).unwrap_err(),
            "line 2: 999 characters, more than a MIME text line may hold (998)"
        );
        assert!(
            check_part("é\n")
                .unwrap_err()
                .starts_with("line 1, column 1: not printable")
        );
        let early = format!("x\n--{BOUNDARY}--\n");
        assert!(
            check_part(&early)
                .unwrap_err()
                .starts_with("line 2: starts with the MIME")
        );
    }

    #[test]
    fn multipart_layout() {
        let out = multipart(&[("text/a", "one", "1\n"), ("text/b", "two", "2\n")]);
        assert_eq!(
            out,
            format!(
                "Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\nMIME-Version: 1.0\n\n\
                 --{BOUNDARY}\nContent-Type: text/a; charset=\"us-ascii\"\nMIME-Version: 1.0\n\
                 Content-Transfer-Encoding: 7bit\nContent-Disposition: attachment; \
                 filename=\"one\"\n\n1\n\n--{BOUNDARY}\nContent-Type: text/b; \
                 charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n\
                 Content-Disposition: attachment; filename=\"two\"\n\n2\n\n--{BOUNDARY}--\n"
            )
        );
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

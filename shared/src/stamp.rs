//! Which build this is: the identity `build.rs` stamps in, as every tool's `--version` prints it.
//!
//! A binary inside a guest must be traceable to the commit it was built from, so `--version`
//! prints the package version, the git commit (`-dirty` when the tree differed from it), the
//! target triple and the build profile. Nothing in it depends on the time or the machine: the
//! same commit built the same way prints the same text.
//!
//! [`STAMP`] also sits in the binary as one string after the marker [`MARKER`], so a program that
//! cannot run the binary (the user-data generator, holding an aarch64 build on an x86_64 host)
//! can read the identity out of its bytes, as what(1) reads `@(#)` strings.

/// What precedes the identity in the binary's bytes.
pub const MARKER: &str = "@(#)hexclave-build ";

/// The marker, then `VERSION COMMIT TARGET PROFILE`, then a NUL that ends it in the binary.
pub const STAMP: &str = concat!(
    "@(#)hexclave-build ",
    env!("CARGO_PKG_VERSION"),
    " ",
    env!("HEXCLAVE_BUILD_COMMIT"),
    " ",
    env!("HEXCLAVE_BUILD_TARGET"),
    " ",
    env!("HEXCLAVE_BUILD_PROFILE"),
    "\0"
);

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit, `git rev-parse --short HEAD` with `-dirty` when the tree differed, or
/// `unknown`.
pub const COMMIT: &str = env!("HEXCLAVE_BUILD_COMMIT");
/// The target triple the binary was built for.
pub const TARGET: &str = env!("HEXCLAVE_BUILD_TARGET");
/// `release` or `debug`.
pub const PROFILE: &str = env!("HEXCLAVE_BUILD_PROFILE");

/// The identity as `--version` prints it after the tool's name: the version on the first line,
/// then one `key: value` line each.
pub fn long_version() -> String {
    // Read through the stamp, so the one string the generator looks for is the one in use.
    let fields = identity();
    format!(
        "{}\ncommit:  {}\ntarget:  {}\nprofile: {}",
        fields[0], fields[1], fields[2], fields[3]
    )
}

/// `VERSION (COMMIT)`: the short form, for `-V`.
pub fn short_version() -> String {
    let fields = identity();
    format!("{} ({})", fields[0], fields[1])
}

/// The four fields of [`STAMP`]: version, commit, target, profile.
pub fn identity() -> [&'static str; 4] {
    let stamp = std::hint::black_box(STAMP);
    let text = stamp
        .strip_prefix(MARKER)
        .unwrap_or(stamp)
        .trim_end_matches('\0');
    let mut fields = text.splitn(4, ' ');
    let mut next = || fields.next().unwrap_or("unknown");
    [next(), next(), next(), next()]
}

/// Reads the identity out of a binary's bytes: the four fields after [`MARKER`], or `None` when
/// the binary has no stamp (built before there was one, or by something else).
pub fn find_in(binary: &[u8]) -> Option<[String; 4]> {
    let marker = MARKER.as_bytes();
    let at = binary.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let rest = &binary[at..];
    let end = rest.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        [version, commit, target, profile]
            if fields.iter().all(|f| !f.is_empty() && f.is_ascii()) =>
        {
            Some([version, commit, target, profile].map(|f| f.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_found_in_bytes_and_matches_the_constants() {
        let mut binary = b"\x7fELF junk @(#) other".to_vec();
        binary.extend_from_slice(STAMP.as_bytes());
        binary.extend_from_slice(b"more");
        let found = find_in(&binary).unwrap();
        assert_eq!(found, [VERSION, COMMIT, TARGET, PROFILE].map(String::from));
        assert_eq!(identity(), [VERSION, COMMIT, TARGET, PROFILE]);
        assert!(long_version().starts_with(&format!("{VERSION}\ncommit:  {COMMIT}\n")));
        assert!(find_in(b"@(#)hexclave-build 0.1.0 abc\0").is_none());
        assert!(find_in(b"no stamp").is_none());
    }
}

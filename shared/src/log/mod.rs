//! The provision log: what `log-provision` and `log-provision-stream` write, and every tool logs
//! through.
//!
//! The host parses two places. Every message goes to stdout as `STACK_PROVISION: <message>`
//! (cloud-init forwards stdout to the serial console), and, when `STACK_PROVISION_LOG_FILE` is
//! set and not empty, to that file as `<message>` alone — no prefix — plus a newline.
//!
//! The original appended with `printf >>`, one process per line. Here the file is opened once
//! with `O_APPEND` and every write holds whole lines only, so concurrent writers (a tool and the
//! stream of its child's output) can never interleave inside a line. Streams are batched: all the
//! complete lines of one read go out in one write per destination, and each read is flushed before
//! the next one blocks, so a slow producer is seen live while a fast one costs few syscalls.
//!
//! Nothing is lost to a failing destination: when stdout or the file fails, the other keeps
//! receiving, input keeps being drained, and the first error of each is reported at the end.

pub mod diagnostics;
pub mod progress;
pub mod tail;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::knob;

/// The tag the host looks for on the console.
pub const STDOUT_TAG: &[u8] = b"STACK_PROVISION: ";
/// The knob naming the log file.
pub const LOG_FILE_KNOB: &str = "STACK_PROVISION_LOG_FILE";
/// The longest line a stream emits; a longer input line is split into several lines of at most
/// this many bytes, each with the prefix, so memory stays bounded whatever the input.
pub const MAX_LINE: usize = 64 * 1024;

const READ_CHUNK: usize = 64 * 1024;
const FLUSH_AT: usize = 256 * 1024;

/// One destination: a writer, its batch, and the first error it gave.
struct Sink<W> {
    name: String,
    writer: Option<W>,
    batch: Vec<u8>,
    error: Option<Error>,
}

impl<W: Write> Sink<W> {
    fn new(name: String, writer: Option<W>) -> Self {
        Sink {
            name,
            writer,
            batch: Vec::new(),
            error: None,
        }
    }

    fn failed(name: String, error: Error) -> Self {
        Sink {
            error: Some(error),
            ..Sink::new(name, None)
        }
    }

    fn push(&mut self, parts: &[&[u8]]) {
        if self.writer.is_some() {
            parts.iter().for_each(|p| self.batch.extend_from_slice(p));
        }
    }

    /// Writes the batch, whole lines only, in as few `write(2)` calls as the kernel allows.
    fn flush(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            let result = writer.write_all(&self.batch).and_then(|()| writer.flush());
            if let Err(err) = result {
                self.error = Some(Error::new(format!("writing to {}", self.name), err));
                self.writer = None;
            }
        }
        self.batch.clear();
    }
}

/// The writer behind `log-provision`: stdout plus the optional log file.
pub struct ProvisionLog<W: Write> {
    stdout: Sink<W>,
    file: Sink<File>,
}

impl ProvisionLog<io::Stdout> {
    /// Stdout and the file named by `STACK_PROVISION_LOG_FILE` (or `HEXCLAVE_PROVISION_LOG_FILE`).
    pub fn from_env() -> Self {
        let path = knob::var_os(LOG_FILE_KNOB)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        ProvisionLog::new(io::stdout(), path.as_deref())
    }
}

impl<W: Write> ProvisionLog<W> {
    /// Logs to `stdout` and, when given, appends to `log_file`. A file that cannot be opened is
    /// not an error yet: stdout is still written, and [`ProvisionLog::finish`] reports it.
    pub fn new(stdout: W, log_file: Option<&Path>) -> Self {
        let file = match log_file {
            None => Sink::new(String::new(), None),
            Some(path) => {
                let name = path.display().to_string();
                match OpenOptions::new().append(true).create(true).open(path) {
                    Ok(file) => Sink::new(name, Some(file)),
                    Err(err) => {
                        Sink::failed(name.clone(), Error::new(format!("opening {name}"), err))
                    }
                }
            }
        };
        ProvisionLog {
            stdout: Sink::new("stdout".into(), Some(stdout)),
            file,
        }
    }

    fn push(&mut self, prefix: &[u8], line: &[u8]) {
        self.stdout.push(&[STDOUT_TAG, prefix, line, b"\n"]);
        self.file.push(&[prefix, line, b"\n"]);
    }

    fn flush(&mut self) {
        self.stdout.flush();
        self.file.flush();
    }

    /// Logs one message: one write to stdout, one `O_APPEND` write to the file.
    pub fn message(&mut self, msg: &[u8]) {
        self.push(b"", msg);
        self.flush();
    }

    /// Logs every line of `input` as `<prefix>: <line>`, keeping every byte, the last line even
    /// without a newline, and splitting lines longer than [`MAX_LINE`].
    pub fn stream(&mut self, mut input: impl Read, prefix: &[u8]) -> Result<()> {
        let tag = [prefix, b": "].concat();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut line = LineSplitter::default();
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    line.finish(|l| self.push(&tag, l));
                    self.flush();
                    return Err(Error::new("reading stdin", err));
                }
            };
            line.feed(&buf[..n], |l| {
                self.push(&tag, l);
                if self.stdout.batch.len() >= FLUSH_AT {
                    self.flush();
                }
            });
            self.flush();
        }
        line.finish(|l| self.push(&tag, l));
        self.flush();
        Ok(())
    }

    /// The first error of each destination, stdout's first.
    pub fn finish(self) -> Result<()> {
        match (self.stdout.error, self.file.error) {
            (Some(err), _) | (None, Some(err)) => Err(err),
            (None, None) => Ok(()),
        }
    }
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes, holding at most one partial line.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            self.take(&chunk[..end], &mut emit);
            emit(&self.partial);
            self.partial.clear();
            chunk = &chunk[end + 1..];
        }
        self.take(chunk, &mut emit);
    }

    /// Appends to the current line, emitting it in [`MAX_LINE`] pieces while it is longer.
    fn take(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&[u8])) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.partial.len();
            if self.partial.is_empty() {
                emit(&bytes[..room]);
            } else {
                self.partial.extend_from_slice(&bytes[..room]);
                emit(&self.partial);
                self.partial.clear();
            }
            bytes = &bytes[room..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// Emits a last line that had no newline.
    fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        for chunk in input {
            splitter.feed(chunk, |l| out.push(l.to_vec()));
        }
        splitter.finish(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn splits_across_chunks_and_keeps_last_line() {
        let got = lines_of(&[b"a\nb", b"c\n\n", b"tail"]);
        assert_eq!(
            got,
            vec![b"a".to_vec(), b"bc".to_vec(), vec![], b"tail".to_vec()]
        );
    }

    #[test]
    fn caps_long_lines_exactly() {
        let exact = vec![b'x'; MAX_LINE];
        assert_eq!(lines_of(&[&exact, b"\n"]), vec![exact.clone()]);
        let long = vec![b'y'; 2 * MAX_LINE + 1];
        let got = lines_of(&[&long[..10], &long[10..], b"\n"]);
        assert_eq!(
            got.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 1]
        );
    }

    #[test]
    fn message_and_stream_format() {
        let mut out = Vec::new();
        let mut log = ProvisionLog::new(&mut out, None);
        log.message(b"hello world");
        log.stream(&b"  one \\n\n\xfftwo"[..], b"pfx").unwrap();
        log.finish().unwrap();
        assert_eq!(
            out,
            b"STACK_PROVISION: hello world\nSTACK_PROVISION: pfx:   one \\n\nSTACK_PROVISION: pfx: \xfftwo\n"
        );
    }
}

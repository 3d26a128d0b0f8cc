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
//!
//! The file never holds a partial line, so whatever is appended next (a failure marker, say)
//! starts a line of its own and the host's whole-line match finds it. When a write is short (the
//! file system filled up midway), the part of the line that did get in is cut off again with
//! `ftruncate(2)` and the rest is tried once more; the error that follows is reported. A stream
//! stopped by SIGTERM, SIGINT or SIGHUP logs the partial line it holds before it exits
//! ([`ProvisionLog::stream_stdin_until_signal`]).
//!
//! The file must be a regular file. It is opened with `O_NONBLOCK`, so that a FIFO (or a path
//! that names a terminal) can never block a tool, not even one that must finish a wait by its
//! deadline; anything that is not a regular file is an error, reported after stdout was written.

pub mod diagnostics;
pub mod progress;
pub mod tail;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::knob;
use crate::os::atomic::kind_of;
use crate::os::signal;

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

/// The log file, appended to in whole lines only (see the module's documentation).
struct LogFile(File);

impl LogFile {
    /// Opens `path` for appending without ever blocking, and refuses anything but a regular
    /// file.
    fn open(path: &Path) -> std::result::Result<LogFile, String> {
        let not_regular = |kind: &str| {
            format!(
                "it is {kind}, not a regular file; {LOG_FILE_KNOB} must name a regular file \
                 (or be empty)"
            )
        };
        let opened = OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            // A FIFO without a reader (ENXIO) and the like: say what is there.
            Err(err) => {
                return Err(match std::fs::metadata(path) {
                    Ok(meta) if !meta.is_file() => not_regular(kind_of(meta.file_type())),
                    _ => err.to_string(),
                });
            }
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err(not_regular(kind_of(meta.file_type())));
        }
        Ok(LogFile(file))
    }

    /// Cuts the last `len` bytes this process appended, unless someone appended after them.
    fn cut(&mut self, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // With O_APPEND, the offset after a write is the end of what that write put in.
        let end = self.0.stream_position()?;
        if self.0.metadata()?.len() == end {
            self.0.set_len(end.saturating_sub(len as u64))
        } else {
            // Another writer's line follows ours: end ours instead (best effort).
            self.0.write(b"\n").map(|_| ())
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whole lines or nothing: a short write is cut back to the last whole line it holds and
    /// the rest is tried again; twice without a whole line in is an error.
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let mut stalled = false;
        while !buf.is_empty() {
            match self.0.write(buf) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => {
                    let whole = buf[..n]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |at| at + 1);
                    self.cut(n - whole)?;
                    buf = &buf[whole..];
                    if whole == 0 && stalled {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "a line did not fit whole and was left out (is the file system full?)",
                        ));
                    }
                    stalled = whole == 0;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// The writer behind `log-provision`: stdout plus the optional log file.
pub struct ProvisionLog<W: Write> {
    stdout: Sink<W>,
    file: Sink<LogFile>,
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
                match LogFile::open(path) {
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
                    self.end(&mut line, &tag);
                    return Err(Error::new("reading stdin", err));
                }
            };
            self.feed(&mut line, &tag, &buf[..n]);
        }
        self.end(&mut line, &tag);
        Ok(())
    }

    /// [`ProvisionLog::stream`] of this process's stdin, ended by a stop signal too (SIGTERM,
    /// SIGINT, SIGHUP: see [`signal::take_over`], called here): the partial line held so far
    /// is logged and everything flushed, and the signal is returned for the caller to exit
    /// 128+N. `None` when stdin ended.
    pub fn stream_stdin_until_signal(&mut self, prefix: &[u8]) -> Result<Option<Signal>> {
        // Before the reader thread starts, so that it inherits the blocked signals.
        signal::take_over()?;
        let (tx, rx) = mpsc::channel();
        let _subscription = {
            let tx = std::sync::Mutex::new(tx.clone());
            signal::subscribe(move |sig| {
                let _ = tx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send(Message::Signal(sig));
            })
        };
        let ack_tx = read_stdin(tx)?;
        let tag = [prefix, b": "].concat();
        let mut line = LineSplitter::default();
        loop {
            match rx.recv() {
                Ok(Message::Data(chunk)) => {
                    self.feed(&mut line, &tag, &chunk);
                    let _ = ack_tx.send(());
                }
                Ok(Message::End) | Err(_) => {
                    self.end(&mut line, &tag);
                    return Ok(None);
                }
                Ok(Message::Failed(err)) => {
                    self.end(&mut line, &tag);
                    return Err(Error::new("reading stdin", err));
                }
                Ok(Message::Signal(sig)) => {
                    self.end(&mut line, &tag);
                    return Ok(Some(sig));
                }
            }
        }
    }

    /// Logs the complete lines of `chunk`, holding back its partial last line, and flushes.
    fn feed(&mut self, line: &mut LineSplitter, tag: &[u8], chunk: &[u8]) {
        line.feed(chunk, |l| {
            self.push(tag, l);
            if self.stdout.batch.len() >= FLUSH_AT {
                self.flush();
            }
        });
        self.flush();
    }

    /// Logs the partial line held back, if any, and flushes.
    fn end(&mut self, line: &mut LineSplitter, tag: &[u8]) {
        line.finish(|l| self.push(tag, l));
        self.flush();
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

/// What the stdin reader and the signal handler send [`ProvisionLog::stream_stdin_until_signal`].
enum Message {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
    Signal(Signal),
}

/// Reads this process's stdin on a thread of its own, sending each chunk to `tx`, then the end
/// or the error. One chunk is in flight at a time, so memory stays bounded however fast stdin
/// is: the reader waits for a `()` on the returned sender before it reads on.
fn read_stdin(tx: mpsc::Sender<Message>) -> Result<mpsc::SyncSender<()>> {
    let (ack_tx, ack_rx) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let message = match stdin.read(&mut buf) {
                    Ok(0) => Message::End,
                    Ok(n) => Message::Data(buf[..n].to_vec()),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => Message::Failed(err),
                };
                let more = matches!(message, Message::Data(_));
                if tx.send(message).is_err() || !more || ack_rx.recv().is_err() {
                    return;
                }
            }
        })
        .map_err(|err| Error::new("starting the stdin reader", err))?;
    Ok(ack_tx)
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

//! Where the pipeline's output goes: our stdout and stderr, the serial device, the consoles.
//!
//! The original sent everything, its children's output included, through `tee -a` to the first
//! serial character device it found, so the host sees the build live on the serial log. Here
//! provision-build reads its children's stdout and stderr pipes itself and writes each chunk to
//! its own stdout or stderr and to the serial device ([`Mirror`]).
//!
//! A device is *present* when it can be opened for writing without being created and is a
//! character device, a FIFO or a regular file ([`open_device`]). The original asked `[ -c ]`;
//! opening also skips a UART node without hardware behind it (EIO) and a FIFO nobody reads
//! (ENXIO), and the plain files let a test stand in for the devices. Nothing is ever created:
//! the original's `echo > /dev/ttyAMA0` left a regular file in `/dev` on x86_64 guests.
//!
//! Writes to a device never hold the pipeline up. The serial device gets its own writer thread
//! behind a bounded queue: if the device blocks (flow control, a stuck UART) the queue fills and
//! further output is dropped for the serial device only, and stdout keeps everything. Markers are
//! written to the consoles from threads the caller waits for with a deadline.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// How many chunks (each at most [`CHUNK`] bytes) may wait for the serial device.
const QUEUE: usize = 256;
/// The read size for children's output.
pub const CHUNK: usize = 16 * 1024;

/// Opens an existing character device, FIFO or regular file for appending, without creating
/// it, without making it our controlling terminal and without blocking on the open (a FIFO with
/// no reader fails with ENXIO). Writes to the returned file block as usual.
pub fn open_device(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_char_device() || kind.is_fifo() || kind.is_file()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a character device, FIFO or regular file",
        ));
    }
    let flags = fcntl(file.as_fd(), FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(file.as_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

enum Chunk {
    Data(Vec<u8>),
    /// Answered once everything queued before it was written.
    Barrier(SyncSender<()>),
}

struct SerialState {
    queue: SyncSender<Chunk>,
    /// Whether the last byte queued was a newline (or nothing was queued yet).
    at_line_start: bool,
    dropped: u64,
}

struct Serial {
    path: PathBuf,
    state: Mutex<SerialState>,
}

/// Our stdout and stderr, each mirrored to the serial device when one is present.
#[derive(Clone, Default)]
pub struct Mirror {
    serial: Option<Arc<Serial>>,
}

impl Mirror {
    /// Mirrors to the first of `candidates` that is present; no mirror when none is.
    pub fn open(candidates: &[PathBuf]) -> Mirror {
        let Some((path, file)) = candidates
            .iter()
            .find_map(|path| open_device(path).ok().map(|file| (path.clone(), file)))
        else {
            return Mirror::default();
        };
        let (queue, chunks) = mpsc::sync_channel(QUEUE);
        let name = path.clone();
        let writer = std::thread::Builder::new()
            .name("serial".into())
            .spawn(move || write_serial(file, &name, chunks));
        if writer.is_err() {
            return Mirror::default();
        }
        Mirror {
            serial: Some(Arc::new(Serial {
                path,
                state: Mutex::new(SerialState {
                    queue,
                    at_line_start: true,
                    dropped: 0,
                }),
            })),
        }
    }

    /// The serial device mirrored to, if any.
    pub fn serial_path(&self) -> Option<&Path> {
        self.serial.as_deref().map(|s| s.path.as_path())
    }

    /// A writer to our stdout and the serial device.
    pub fn stdout(&self) -> MirrorWriter {
        MirrorWriter {
            mirror: self.clone(),
            stderr: false,
        }
    }

    /// A writer to our stderr and the serial device.
    pub fn stderr(&self) -> MirrorWriter {
        MirrorWriter {
            mirror: self.clone(),
            stderr: true,
        }
    }

    fn to_serial(&self, bytes: &[u8]) {
        let Some(serial) = &self.serial else { return };
        if bytes.is_empty() {
            return;
        }
        let mut state = serial.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.queue.try_send(Chunk::Data(bytes.to_vec())) {
            Ok(()) => state.at_line_start = bytes.ends_with(b"\n"),
            Err(_) => state.dropped += 1,
        }
    }

    /// Whether the serial device's output ends with a complete line, so that a marker written
    /// to a console that shows it starts on a line of its own.
    pub fn at_line_start(&self) -> bool {
        self.serial.as_ref().is_none_or(|serial| {
            serial
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .at_line_start
        })
    }

    /// Waits up to `timeout` until everything queued so far reached the serial device. Returns
    /// whether it did (true without a serial device).
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(serial) = &self.serial else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let (ack, acked) = mpsc::sync_channel(1);
        let mut barrier = Chunk::Barrier(ack);
        loop {
            let sent = serial
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queue
                .try_send(barrier);
            match sent {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    barrier = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        acked
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// How many chunks were not mirrored because the serial device did not keep up.
    pub fn dropped(&self) -> u64 {
        self.serial.as_ref().map_or(0, |serial| {
            serial
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dropped
        })
    }
}

fn write_serial(mut file: File, path: &Path, chunks: mpsc::Receiver<Chunk>) {
    let mut failed = false;
    for chunk in chunks {
        match chunk {
            Chunk::Data(bytes) if !failed => {
                if let Err(err) = file.write_all(&bytes) {
                    failed = true;
                    // Only to our stderr: the serial device is what failed.
                    let _ = writeln!(
                        io::stderr().lock(),
                        "provision-build: warning: writing to {}: {err}; no more output is \
                         mirrored there",
                        path.display()
                    );
                }
            }
            Chunk::Data(_) => {}
            Chunk::Barrier(ack) => {
                let _ = ack.try_send(());
            }
        }
    }
}

/// Writes to our stdout or stderr, then queues the same bytes for the serial device. It never
/// fails: a closed stdout must not stop the build (cloud-init may have gone away), and the
/// serial device drops rather than blocks.
pub struct MirrorWriter {
    mirror: Mirror,
    stderr: bool,
}

impl Write for MirrorWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = if self.stderr {
            io::stderr().lock().write_all(buf)
        } else {
            let mut out = io::stdout().lock();
            out.write_all(buf).and_then(|()| out.flush())
        };
        self.mirror.to_serial(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `from` to `to` in chunks as they arrive, until end of file or a read error.
pub fn forward(mut from: impl Read, mut to: MirrorWriter) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = to.write_all(&buf[..n]);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Writes `text` to every console that is present ([`open_device`]), each from its own thread,
/// and waits for them until `timeout`. Best effort: a console that is missing, fails or blocks
/// is skipped silently, as the original's `echo … > dev 2>/dev/null || true`.
pub fn write_to_consoles(consoles: &[PathBuf], text: &[u8], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let (done, finished) = mpsc::channel();
    let mut waiting = 0;
    for path in consoles {
        let (path, text, done) = (path.clone(), text.to_vec(), done.clone());
        let write = move || {
            if let Ok(mut file) = open_device(&path) {
                let _ = file.write_all(&text);
            }
            let _ = done.send(());
        };
        // Without a thread (none left), write inline: blocking is better than skipping.
        match std::thread::Builder::new()
            .name("console".into())
            .spawn(write.clone())
        {
            Ok(_) => waiting += 1,
            Err(_) => write(),
        }
    }
    for _ in 0..waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        if finished.recv_timeout(left).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "provision-console-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn devices_are_never_created_and_directories_are_not_devices() {
        let dir = scratch();
        let missing = dir.join("ttyAMA0");
        assert!(open_device(&missing).is_err());
        assert!(!missing.exists());
        assert!(open_device(&dir).is_err());
        let file = dir.join("ttyS0");
        std::fs::write(&file, "x").unwrap();
        open_device(&file).unwrap().write_all(b"y").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"xy");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mirror_picks_the_first_present_device_and_tracks_line_ends() {
        let dir = scratch();
        let (first, second) = (dir.join("a"), dir.join("b"));
        std::fs::write(&second, "").unwrap();
        let mirror = Mirror::open(&[first.clone(), second.clone()]);
        assert_eq!(mirror.serial_path(), Some(second.as_path()));
        assert!(mirror.at_line_start());
        mirror.to_serial(b"partial");
        assert!(!mirror.at_line_start());
        mirror.to_serial(b" line\n");
        assert!(mirror.flush(Duration::from_secs(5)));
        assert!(mirror.at_line_start());
        assert_eq!(std::fs::read(&second).unwrap(), b"partial line\n");
        assert!(!first.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn consoles_get_the_text_when_present() {
        let dir = scratch();
        let (present, missing) = (dir.join("console"), dir.join("ttyAMA0"));
        std::fs::write(&present, "before\n").unwrap();
        write_to_consoles(
            &[missing.clone(), present.clone()],
            b"MARKER\n",
            Duration::from_secs(5),
        );
        assert_eq!(std::fs::read(&present).unwrap(), b"before\nMARKER\n");
        assert!(!missing.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

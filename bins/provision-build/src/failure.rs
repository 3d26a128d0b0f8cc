//! The failure block: what the host sees when the build failed, however it failed.
//!
//! The original's `trap cleanup EXIT` appended `ERROR: provision-build exited with code N` and
//! `STACK_CLOUD_INIT_FAILED` to the log file, wrote the marker to the consoles, synced, and
//! scheduled the two-stage power-off. [`run`] does the same, once, from whichever path gets there
//! first: a failed step, a stop signal, or a panic.
//!
//! Panics: the release profile has `panic = "abort"`, so unwinding cannot be relied on. The
//! panic hook ([`install_panic_hook`]) runs before the abort on the panicking thread, whatever
//! the profile: it stops the running step, runs the failure block and ends the process with
//! `_exit(101)` (Rust's status for a panic) before the runtime gets to abort. Debug and release
//! builds therefore behave the same, and the tests check both.
//!
//! The block writes with fresh file descriptors and no lock the rest of the program may hold,
//! every write is bounded in time, and it runs at most once ([`run`] called again, say by a
//! panic in another thread meanwhile, waits for the first run to finish).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::console::{Mirror, write_to_consoles};
use crate::poweroff::{Delayed, spawn_detached};
use crate::runner::signal_current_step;
use crate::steps::FAILED_MARKER;

/// The exit status after a panic.
pub const PANIC_STATUS: u8 = 101;
/// How long the block waits for the serial device and for each round of console writes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the failure block needs to know.
pub struct FailureBlock {
    /// Set once mount-host-fs succeeded.
    pub log_file: OnceLock<PathBuf>,
    pub consoles: Vec<PathBuf>,
    pub mirror: Mirror,
    /// The two-stage power-off, in order.
    pub power_off: Vec<Delayed>,
}

static BLOCK: OnceLock<FailureBlock> = OnceLock::new();
/// False once the pipeline signalled STACK_SERVICES_READY: from then on nothing is a failure.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The status the block ran with, once it ran; the lock is held while it runs.
static RAN: Mutex<Option<u8>> = Mutex::new(None);
static STARTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Whether this thread is running the block (a panic inside it must not wait for itself).
    static RUNNING_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes `block` the failure block and arms it. The first call wins.
pub fn arm(block: FailureBlock) -> &'static FailureBlock {
    let block = BLOCK.get_or_init(|| block);
    ARMED.store(true, Ordering::SeqCst);
    block
}

/// From now on, nothing runs the failure block.
pub fn disarm() {
    ARMED.store(false, Ordering::SeqCst);
}

/// Runs the failure block for exit status `code` (unless disarmed or never armed) and returns
/// the status to exit with.
pub fn run(code: u8) -> u8 {
    if !ARMED.load(Ordering::SeqCst) {
        return code;
    }
    let Some(block) = BLOCK.get() else {
        return code;
    };
    if RUNNING_HERE.with(std::cell::Cell::get) {
        return code;
    }
    if STARTED.swap(true, Ordering::SeqCst) {
        // Another thread is running it: wait until it is done (it exits the process then).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(ran) = RAN.try_lock() {
                if let Some(status) = *ran {
                    return status;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return code;
    }
    let mut ran = RAN.lock().unwrap_or_else(PoisonError::into_inner);
    RUNNING_HERE.with(|here| here.set(true));
    block.execute(code);
    *ran = Some(code);
    code
}

impl FailureBlock {
    fn execute(&self, code: u8) {
        let text = format!("ERROR: provision-build exited with code {code}\n{FAILED_MARKER}\n");
        if let Some(log_file) = self.log_file.get() {
            let _ = append_on_own_line(log_file, text.as_bytes());
        }
        self.mirror.flush(WRITE_TIMEOUT);
        // The same two lines on stdout, for whoever runs the build by hand or reads its output:
        // the log file alone held them in the original. Not through the serial mirror, which
        // gets the marker as a console below.
        let lead = if self.mirror.at_line_start() {
            ""
        } else {
            "\n"
        };
        write_stdout_bounded(format!("{lead}{text}"), WRITE_TIMEOUT);
        write_marker(&self.consoles, &self.mirror, FAILED_MARKER);
        nix::unistd::sync();
        let mut stderr = self.mirror.stderr();
        for command in &self.power_off {
            if let Err(err) = spawn_detached(command) {
                let _ = writeln!(stderr, "provision-build: {err}");
            }
        }
    }
}

/// Writes `text` to stdout from a thread of its own and waits at most `timeout` for it, so a
/// stdout nobody reads (a full pipe) cannot keep the failure block from powering off.
fn write_stdout_bounded(text: String, timeout: Duration) {
    let (done, wait) = std::sync::mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("failure-stdout".into())
        .spawn(move || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            let _ = done.send(());
        });
    if writer.is_ok() {
        let _ = wait.recv_timeout(timeout);
    }
}

/// Writes `marker` on a line of its own to every console: after a newline when the serial
/// device's output ends inside a line (a console may be showing it).
pub fn write_marker(consoles: &[PathBuf], mirror: &Mirror, marker: &str) {
    mirror.flush(WRITE_TIMEOUT);
    let lead = if mirror.at_line_start() { "" } else { "\n" };
    write_to_consoles(
        consoles,
        format!("{lead}{marker}\n").as_bytes(),
        WRITE_TIMEOUT,
    );
}

/// Appends `text` to `path` (created when missing) in one write, after a newline when the file
/// does not end with one: what the text starts with must be at the start of a line.
pub fn append_on_own_line(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut last = [0u8; 1];
    let ends_inside_a_line = match file.seek(SeekFrom::End(-1)) {
        Ok(_) => file.read_exact(&mut last).is_ok() && last[0] != b'\n',
        Err(_) => false,
    };
    let mut all = Vec::with_capacity(text.len() + 1);
    if ends_inside_a_line {
        all.push(b'\n');
    }
    all.extend_from_slice(text);
    file.write_all(&all)
}

/// Makes every panic, in any thread, stop the running step, run the failure block and end the
/// process with [`PANIC_STATUS`], in debug and release (`panic = "abort"`) builds alike.
pub fn install_panic_hook(tool: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        if let Some(block) = BLOCK.get() {
            let _ = writeln!(block.mirror.stderr(), "{tool}: {info}");
        } else {
            let _ = writeln!(std::io::stderr(), "{tool}: {info}");
        }
        signal_current_step(Signal::SIGTERM);
        let status = run(PANIC_STATUS);
        // SAFETY: _exit ends the process at once; nothing after it runs. It is used rather than
        // `exit` so that no lock another thread holds (stdout's) can stall the exit.
        unsafe { libc::_exit(i32::from(status)) }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_start_on_their_own_line() {
        let dir = std::env::temp_dir().join(format!("provision-failure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("provision.log");
        append_on_own_line(&log, b"A\n").unwrap();
        append_on_own_line(&log, b"B\n").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"partial")
            .unwrap();
        append_on_own_line(&log, b"C\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"A\nB\npartial\nC\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Running the steps' programs as child processes, and noticing signals meanwhile.
//!
//! Every step's program is a child process in a process group of its own, with stdin from
//! `/dev/null` and its stdout and stderr on pipes that provision-build forwards ([`Mirror`]).
//! Whatever the child does (exits non-zero, panics, is killed) provision-build only sees a wait
//! status, so it always survives to report it.
//!
//! SIGTERM, SIGINT and SIGHUP are blocked in every thread of provision-build and taken by the
//! project's one signal thread ([`shared::os::signal`]), which here turns them into
//! [`Event::Signal`]s on the same channel as the children's exits: the main thread waits for whichever comes first. On a signal, the running
//! step's process group gets SIGTERM, then SIGKILL after the grace period, and the pipeline
//! fails with 128 + the signal's number. A new process inherits its parent's signal mask, so
//! each child empties it before it executes its program ([`signal::unblock_in_child`]); without
//! that, a step could not be stopped by anything but SIGKILL.

use std::ffi::OsString;
use std::io;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::console::{Mirror, forward};
use shared::error::Result;
use shared::log::ProvisionLog;
use shared::os::signal;
use shared::process::{self, Program};

/// What reads a step's output until the step (and whatever it left behind) closes it.
type Reader = Box<dyn FnOnce() + Send>;

/// How long to wait for the output of a step that exited, when something it left behind keeps
/// its pipes open. The output still arrives afterwards; the pipeline just does not wait for it.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// The process group of the step running now (0: none), for the panic hook.
static CURRENT_GROUP: AtomicI32 = AtomicI32::new(0);

/// Sends `signal` to the running step's process group, if any.
pub fn signal_current_step(signal: Signal) {
    let group = CURRENT_GROUP.load(Ordering::SeqCst);
    if group > 0 {
        let _ = killpg(Pid::from_raw(group), signal);
    }
}

/// How a step's program ended.
#[derive(Debug)]
pub enum Status {
    /// It ended (exited, or was killed by a signal) with this status.
    Ended(ExitStatus),
    /// It could not be started; the status is what a shell reports (127: not found, 126: not
    /// executable).
    NotStarted { code: u8, why: String },
    /// provision-build received this signal while the step ran, and stopped it.
    Stopped(Signal),
}

impl Status {
    pub fn success(&self) -> bool {
        matches!(self, Status::Ended(status) if status.success())
    }

    /// The status the pipeline exits with when this failure is fatal: the child's own status, or
    /// 128 + the signal's number, as a shell reports it.
    pub fn code(&self) -> u8 {
        match self {
            Status::Ended(status) => process::exit_code(*status),
            Status::NotStarted { code, .. } => *code,
            Status::Stopped(signal) => signal::exit_status(*signal),
        }
    }

    fn not_started(err: &io::Error) -> Status {
        Status::NotStarted {
            code: process::not_started_code(err),
            why: err.to_string(),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Ended(status) if status.success() => f.write_str("ok"),
            Status::Ended(status) => f.write_str(&process::describe_status(*status)),
            Status::NotStarted { why, .. } => write!(f, "could not start: {why}"),
            Status::Stopped(signal) => write!(f, "stopped: provision-build received {signal}"),
        }
    }
}

enum Event {
    Exited(i32, io::Result<ExitStatus>),
    Signal(Signal),
}

/// What to do with a child's output.
pub enum Output<'a> {
    /// stdout to our stdout, stderr to our stderr, both to the serial device.
    Forward,
    /// stdout and stderr together (`2>&1`), each line logged as `<prefix>: <line>` (what the
    /// original piped into `log-provision-stream <prefix>`).
    Log {
        prefix: &'a str,
        log_file: Option<&'a std::path::Path>,
    },
}

pub struct Runner {
    /// Stop signals arrive as [`Event::Signal`]s while this lives.
    _signals: signal::Subscription,
    events: Receiver<Event>,
    sender: Sender<Event>,
    mirror: Mirror,
    env: Vec<(OsString, OsString)>,
    stop_grace: Duration,
}

impl Runner {
    /// Blocks the stop signals in this thread, and so in every thread started after it: call
    /// it before any other thread starts. Starts the thread that receives them.
    pub fn new(stop_grace: Duration) -> Result<Runner> {
        signal::take_over()?;
        let (sender, events) = mpsc::channel();
        let to_main = sender.clone();
        let signals = signal::subscribe(move |sig| {
            let _ = to_main.send(Event::Signal(sig));
        });
        Ok(Runner {
            _signals: signals,
            events,
            sender,
            mirror: Mirror::default(),
            env: Vec::new(),
            stop_grace,
        })
    }

    /// Where children's output is forwarded.
    pub fn set_mirror(&mut self, mirror: Mirror) {
        self.mirror = mirror;
    }

    /// Sets a variable in every child's environment from now on.
    pub fn set_env(&mut self, key: &str, value: impl Into<OsString>) {
        let value = value.into();
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value));
    }

    /// A stop signal received since the last look, if any.
    pub fn pending_signal(&mut self) -> Option<Signal> {
        while let Ok(event) = self.events.try_recv() {
            if let Event::Signal(signal) = event {
                return Some(signal);
            }
        }
        None
    }

    /// Sleeps for `duration`, or until a stop signal, which it returns.
    pub fn sleep(&mut self, duration: Duration) -> Option<Signal> {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Signal(signal)) => return Some(signal),
                Ok(Event::Exited(..)) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits for a stop signal, forever.
    pub fn wait_for_signal(&mut self) -> Signal {
        loop {
            match self.events.recv() {
                Ok(Event::Signal(signal)) => return signal,
                Ok(Event::Exited(..)) => {}
                // The signal thread holds a sender for as long as the process lives.
                Err(_) => std::thread::park(),
            }
        }
    }

    /// Runs `argv` to completion, or until a stop signal stops it.
    pub fn run(&mut self, argv: &[OsString], output: Output<'_>) -> Status {
        let (child, readers) = match self.start(argv, output) {
            Ok(started) => started,
            Err(err) => return Status::not_started(&err),
        };
        let pid = child.id() as i32;
        CURRENT_GROUP.store(pid, Ordering::SeqCst);
        let (output_done, outputs) = mpsc::channel::<()>();
        let mut started = 0;
        for reader in readers {
            let done = output_done.clone();
            let spawned = std::thread::Builder::new()
                .name("output".into())
                .spawn(move || {
                    reader();
                    let _ = done.send(());
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        let status = match self.watch(child) {
            Ok(()) => self.wait_for(pid),
            Err(err) => Status::not_started(&err),
        };
        CURRENT_GROUP.store(0, Ordering::SeqCst);
        let deadline = Instant::now() + OUTPUT_GRACE;
        for _ in 0..started {
            let left = deadline.saturating_duration_since(Instant::now());
            if outputs.recv_timeout(left).is_err() {
                break;
            }
        }
        status
    }

    /// Starts `argv` in a process group of its own, stdin from /dev/null, the environment
    /// added, and returns it with what reads its output (to the consoles, or into the log).
    fn start(&self, argv: &[OsString], output: Output<'_>) -> io::Result<(Child, Vec<Reader>)> {
        let mut cmd = Program::from_argv(argv)?;
        cmd.stdin(Stdio::null()).own_process_group();
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        let mut readers: Vec<Reader> = Vec::new();
        let child = match output {
            Output::Forward => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                let mut child = cmd.spawn()?;
                if let Some(out) = child.stdout.take() {
                    let to = self.mirror.stdout();
                    readers.push(Box::new(move || forward(out, to)));
                }
                if let Some(err) = child.stderr.take() {
                    let to = self.mirror.stderr();
                    readers.push(Box::new(move || forward(err, to)));
                }
                child
            }
            Output::Log { prefix, log_file } => {
                let (child, read) = cmd.spawn_merged()?;
                let mut log = ProvisionLog::new(self.mirror.stdout(), log_file);
                let prefix = prefix.as_bytes().to_vec();
                readers.push(Box::new(move || {
                    let _ = log.stream(read, &prefix);
                    let _ = log.finish();
                }));
                child
            }
        };
        Ok((child, readers))
    }

    /// Waits for `child` on a thread that reports its exit on the events channel, beside the
    /// stop signals. Without that thread the child cannot be watched: it is killed.
    fn watch(&self, mut child: Child) -> io::Result<()> {
        let pid = child.id() as i32;
        let exits = self.sender.clone();
        let waiter = std::thread::Builder::new()
            .name("wait".into())
            .spawn(move || {
                let status = child.wait();
                let _ = exits.send(Event::Exited(pid, status));
            });
        waiter.map(drop).inspect_err(|_| {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        })
    }

    /// Waits for child `pid`; on a stop signal, stops its process group and reports that.
    fn wait_for(&mut self, pid: i32) -> Status {
        let group = Pid::from_raw(pid);
        let mut stopped: Option<Signal> = None;
        let mut deadline: Option<Instant> = None;
        let mut killed = false;
        loop {
            let event = match deadline {
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .events
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match event {
                Ok(Event::Exited(done, status)) if done == pid => {
                    return match (stopped, status) {
                        (Some(signal), _) => Status::Stopped(signal),
                        (None, Ok(status)) => Status::Ended(status),
                        (None, Err(err)) => Status::NotStarted {
                            code: 1,
                            why: format!("waiting for it: {err}"),
                        },
                    };
                }
                Ok(Event::Exited(..)) => {}
                Ok(Event::Signal(signal)) => {
                    if stopped.is_none() {
                        stopped = Some(signal);
                        let _ = killpg(group, Signal::SIGTERM);
                        deadline = Some(Instant::now() + self.stop_grace);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let signal = stopped.unwrap_or(Signal::SIGTERM);
                    if killed {
                        // Not even SIGKILL ended it (stuck in the kernel): stop waiting.
                        return Status::Stopped(signal);
                    }
                    // The grace period is over: SIGKILL, and give the kernel a moment to reap.
                    killed = true;
                    let _ = killpg(group, Signal::SIGKILL);
                    deadline = Some(Instant::now() + Duration::from_secs(5));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Status::NotStarted {
                        code: 1,
                        why: "lost track of it".into(),
                    };
                }
            }
        }
    }
}

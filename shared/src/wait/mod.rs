//! The wait engine: the project's one way of waiting for something to become ready.
//!
//! The originals polled one service after another with `sleep 2` between probes and no bound on
//! a probe, so a port that accepted and never answered hung the wait past its own deadline, and
//! readiness was noticed a second late on average. Here every target gets its own thread and is
//! probed concurrently under one global deadline; every attempt is bounded by a per-attempt cap
//! and by the time left, so nothing outlives the deadline; the poll interval starts short and
//! doubles up to a cap, so readiness is noticed quickly without hammering a service that is
//! slow to start under emulation.
//!
//! The caller hands in targets (a name and a [`Probe`]) and [`Options`], receives [`Event`]s on
//! its own thread — each tool turns them into its original's exact log lines — and gets a
//! [`Report`] back: which targets became ready and when, and the last answer of the others.
//! A stop signal (SIGTERM, SIGINT, SIGHUP) ends a wait promptly when the tool called
//! [`signal::take_over`].

pub mod probe;
pub mod spec;

use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::os::signal;

pub use probe::{Answer, Attempt, Endpoint, Host, Probe, StatusRule};

/// The first pause between two attempts at one target.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
/// The longest pause between two attempts: the interval doubles after each failed attempt
/// until it reaches this. A service that comes up is noticed 200 ms later on average (the
/// original: 1 s), at about a fifth of a CPU second per minute of waiting on five services.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_millis(400);
/// How often a target that is still not ready is reported.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Something to wait for: a name for the log lines and a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub probe: Probe,
}

impl Target {
    pub fn new(name: impl Into<String>, probe: Probe) -> Self {
        Target {
            name: name.into(),
            probe,
        }
    }
}

impl fmt::Display for Target {
    /// `NAME=SPEC`, the form `--target` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.probe)
    }
}

/// How long and how often to try.
#[derive(Clone, Debug)]
pub struct Options {
    /// The whole wait gives up after this long. Zero means one attempt per target, each bounded
    /// by `attempt_timeout` only; [`Report::elapsed`] is then the time those attempts took.
    pub timeout: Duration,
    /// The first pause between attempts at one target.
    pub interval: Duration,
    /// The pause doubles after each failed attempt, up to this.
    pub max_interval: Duration,
    /// A [`Event::Heartbeat`] this often while a target is not ready; `None` for none.
    pub heartbeat: Option<Duration>,
    /// The longest one attempt may take (it is also cut to the time left).
    pub attempt_timeout: Duration,
}

impl Options {
    /// The defaults above, with `timeout` and a per-attempt cap of `attempt_timeout`.
    pub fn new(timeout: Duration, attempt_timeout: Duration) -> Self {
        Options {
            timeout,
            interval: DEFAULT_INTERVAL,
            max_interval: DEFAULT_MAX_INTERVAL,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            attempt_timeout,
        }
    }
}

/// What a target has done so far.
#[derive(Clone, Debug)]
pub struct TargetReport {
    /// Its position in the list the wait was given.
    pub index: usize,
    pub name: String,
    pub probe: Probe,
    /// Time from the start of the wait to the end of the attempt that found it ready.
    pub ready_after: Option<Duration>,
    /// Its most recent attempt.
    pub last: Option<Attempt>,
    pub attempts: u32,
}

impl TargetReport {
    pub fn is_ready(&self) -> bool {
        self.ready_after.is_some()
    }

    /// The last answer in words, or `no attempt finished yet`.
    pub fn last_answer(&self) -> String {
        match &self.last {
            Some(attempt) => attempt.answer.to_string(),
            None => "no attempt finished yet".to_string(),
        }
    }
}

/// What the caller hears while the wait runs, always on its own thread.
#[derive(Debug)]
pub enum Event<'a> {
    /// An attempt ended (ready or not); `target` already includes it.
    Attempt {
        target: &'a TargetReport,
        attempt: &'a Attempt,
    },
    /// A target became ready; it is never probed again.
    Ready { target: &'a TargetReport },
    /// Another heartbeat period passed with at least one target not ready. `targets` holds
    /// every target, ready or not, in list order.
    Heartbeat {
        elapsed: Duration,
        targets: &'a [TargetReport],
    },
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every target became ready.
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// A stop signal (SIGTERM, SIGINT, SIGHUP) arrived.
    Interrupted(Signal),
}

/// What a wait found.
#[derive(Clone, Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// Time from the start to the moment the outcome was decided: the last target ready, the
    /// deadline, or the signal. (Attempts still in flight at the deadline may add a moment
    /// before [`run`] returns; they are bounded by the deadline too.)
    pub elapsed: Duration,
    /// Every target, in list order.
    pub targets: Vec<TargetReport>,
}

impl Report {
    /// The targets that did not become ready, in list order.
    pub fn waiting(&self) -> impl Iterator<Item = &TargetReport> {
        self.targets.iter().filter(|t| !t.is_ready())
    }

    /// One line per target that did not become ready, naming its probe and its last answer:
    /// `postgres still not ready (pg://127.0.0.1:5432): connection refused`.
    pub fn failing_lines(&self) -> Vec<String> {
        self.waiting()
            .map(|t| {
                format!(
                    "{} still not ready ({}): {}",
                    t.name,
                    t.probe,
                    t.last_answer()
                )
            })
            .collect()
    }
}

enum Message {
    Attempt {
        index: usize,
        attempt: Attempt,
        at: Instant,
    },
    /// A worker has ended (sent from its drop, so even a panicking probe is accounted for).
    Done,
    Signal(Signal),
}

/// How long a timed-out wait lets the attempts still in flight report. They are bounded by the
/// deadline, so they end with it; waiting for them means the report shows a hung service's
/// `no answer within 3s` rather than `no attempt finished yet`.
const SETTLE: Duration = Duration::from_secs(1);

/// A flag the workers sleep on, so that stopping wakes them at once.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn set(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` or until stopped; returns whether stopped.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// The caller's side of a wait: the reports, and the events they give rise to.
struct Tally<F> {
    start: Instant,
    reports: Vec<TargetReport>,
    live_workers: usize,
    on_event: F,
}

impl<F: FnMut(Event<'_>)> Tally<F> {
    fn all_ready(&self) -> bool {
        self.reports.iter().all(TargetReport::is_ready)
    }

    /// Takes in one message; returns the signal if it was one.
    fn absorb(&mut self, message: Message) -> Option<Signal> {
        match message {
            Message::Attempt { index, attempt, at } => {
                let report = self.reports.get_mut(index)?;
                report.attempts += 1;
                if attempt.ready && report.ready_after.is_none() {
                    report.ready_after = Some(at.saturating_duration_since(self.start));
                }
                report.last = Some(attempt);
                let report = &self.reports[index];
                if let Some(attempt) = &report.last {
                    (self.on_event)(Event::Attempt {
                        target: report,
                        attempt,
                    });
                    if attempt.ready {
                        (self.on_event)(Event::Ready { target: report });
                    }
                }
                None
            }
            Message::Done => {
                self.live_workers = self.live_workers.saturating_sub(1);
                None
            }
            Message::Signal(signal) => Some(signal),
        }
    }
}

/// Waits for every target, calling `on_event` on this thread as things happen.
pub fn run(targets: &[Target], options: &Options, on_event: impl FnMut(Event<'_>)) -> Report {
    let start = Instant::now();
    let deadline = start + options.timeout;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(Stop::default());
    let children = Arc::new(crate::process::Registry::default());
    let _subscription = {
        let tx = Mutex::new(tx.clone());
        signal::subscribe(move |sig| {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Message::Signal(sig));
        })
    };
    let mut tally = Tally {
        start,
        reports: targets
            .iter()
            .enumerate()
            .map(|(index, t)| TargetReport {
                index,
                name: t.name.clone(),
                probe: t.probe.clone(),
                ready_after: None,
                last: None,
                attempts: 0,
            })
            .collect(),
        live_workers: 0,
        on_event,
    };
    for (index, target) in targets.iter().enumerate() {
        let worker = Worker {
            index,
            probe: target.probe.clone(),
            options: options.clone(),
            deadline,
            tx: tx.clone(),
            stop: Arc::clone(&stop),
            children: Arc::clone(&children),
        };
        tally.start_worker(&target.name, worker);
    }
    drop(tx);
    let outcome = tally.watch(&rx, options, deadline);
    let (outcome, elapsed) = tally.settle(&rx, options, outcome);
    stop.set();
    children.close();
    Report {
        outcome,
        elapsed,
        targets: tally.reports,
    }
}

impl<F: FnMut(Event<'_>)> Tally<F> {
    /// Starts `worker` on a thread of its own. Out of threads, its target gets an answer that
    /// says so, and never gets ready.
    fn start_worker(&mut self, name: &str, worker: Worker) {
        let index = worker.index;
        let spawned = std::thread::Builder::new()
            .name(format!("wait {name}"))
            .spawn(move || worker.run());
        match spawned {
            Ok(_) => self.live_workers += 1,
            Err(err) => {
                let attempt = Attempt {
                    answer: Answer::Failed(format!("cannot start a thread: {err}")),
                    ready: false,
                    took: Duration::ZERO,
                };
                let at = Instant::now();
                self.absorb(Message::Attempt { index, attempt, at });
            }
        }
    }

    /// Takes the workers' messages until every target is ready, the deadline passes, a stop
    /// signal comes or no worker is left; reports heartbeats on the way.
    fn watch(&mut self, rx: &Receiver<Message>, options: &Options, deadline: Instant) -> Outcome {
        let start = self.start;
        let mut next_heartbeat = options
            .heartbeat
            .filter(|p| !p.is_zero())
            .map(|p| start + p);
        loop {
            if self.all_ready() {
                return Outcome::Ready;
            }
            let now = Instant::now();
            if let (Some(due), Some(period)) = (next_heartbeat, options.heartbeat) {
                if now >= due {
                    (self.on_event)(Event::Heartbeat {
                        elapsed: now - start,
                        targets: &self.reports,
                    });
                    let mut next = due + period;
                    while next <= now {
                        next += period;
                    }
                    next_heartbeat = Some(next);
                }
            }
            if now >= deadline || self.live_workers == 0 {
                return Outcome::TimedOut;
            }
            let wake = next_heartbeat.map_or(deadline, |h| h.min(deadline));
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(message) => {
                    if let Some(signal) = self.absorb(message) {
                        return Outcome::Interrupted(signal);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Unreachable while the signal subscription holds a sender; treat as the end.
                Err(RecvTimeoutError::Disconnected) => return Outcome::TimedOut,
            }
        }
    }

    /// After a timeout, lets the attempts in flight land (one may make the wait ready after
    /// all); returns the final outcome and the wait's time.
    fn settle(
        &mut self,
        rx: &Receiver<Message>,
        options: &Options,
        outcome: Outcome,
    ) -> (Outcome, Duration) {
        let mut elapsed = self.start.elapsed();
        if outcome != Outcome::TimedOut {
            return (outcome, elapsed);
        }
        // A zero timeout means one full attempt per target, which may take up to the
        // per-attempt cap.
        let settle = if options.timeout.is_zero() {
            options.attempt_timeout + SETTLE
        } else {
            SETTLE
        };
        let until = Instant::now() + settle;
        while self.live_workers > 0 {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(message) => {
                    if let Some(signal) = self.absorb(message) {
                        return (Outcome::Interrupted(signal), elapsed);
                    }
                }
                Err(_) => break,
            }
        }
        if options.timeout.is_zero() {
            // The deadline was the start, but the one attempt each took its time: report that.
            elapsed = self.start.elapsed();
        }
        if self.all_ready() {
            let ready = self.reports.iter().filter_map(|t| t.ready_after).max();
            return (Outcome::Ready, ready.unwrap_or(elapsed));
        }
        (Outcome::TimedOut, elapsed)
    }
}

/// One target's loop: attempt, report, pause, until ready, stopped or out of time.
struct Worker {
    index: usize,
    probe: Probe,
    options: Options,
    deadline: Instant,
    tx: mpsc::Sender<Message>,
    stop: Arc<Stop>,
    children: Arc<crate::process::Registry>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Done);
    }
}

impl Worker {
    fn run(self) {
        // With a zero timeout every target gets one whole attempt.
        let once = self.options.timeout.is_zero();
        let mut interval = self.options.interval;
        while !self.stop.is_set() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let budget = if once {
                self.options.attempt_timeout
            } else {
                self.options.attempt_timeout.min(left)
            };
            if budget.is_zero() {
                return;
            }
            let attempt = self.probe.attempt_with(budget, &self.children);
            let ready = attempt.ready;
            let sent = self.tx.send(Message::Attempt {
                index: self.index,
                attempt,
                at: Instant::now(),
            });
            if ready || once || sent.is_err() {
                return;
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.sleep(interval.min(left)) {
                return;
            }
            interval = (interval * 2).min(self.options.max_interval.max(self.options.interval));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{IpAddr, TcpListener};

    fn local(port: u16) -> Endpoint {
        Endpoint::new(Host::Ip(IpAddr::from([127, 0, 0, 1])), port)
    }

    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// An HTTP server answering every request with `status`.
    fn http_server(status: u16) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        port
    }

    #[test]
    fn ready_and_timed_out_targets_are_reported() {
        let ok = http_server(200);
        let teapot = http_server(418);
        let targets = vec![
            Target::new("ok", Probe::http(local(ok), "/", StatusRule::CURL_FAIL)),
            Target::new(
                "teapot",
                Probe::http(local(teapot), "/", StatusRule::CURL_FAIL),
            ),
            Target::new("closed", Probe::Tcp(local(closed_port()))),
        ];
        let mut options = Options::new(Duration::from_millis(700), Duration::from_secs(1));
        options.heartbeat = Some(Duration::from_millis(300));
        let mut ready = Vec::new();
        let mut heartbeats = 0;
        let report = run(&targets, &options, |event| match event {
            Event::Ready { target } => ready.push(target.name.clone()),
            Event::Heartbeat { .. } => heartbeats += 1,
            Event::Attempt { .. } => {}
        });
        assert_eq!(report.outcome, Outcome::TimedOut);
        assert_eq!(ready, ["ok"]);
        assert_eq!(heartbeats, 2);
        let waiting: Vec<_> = report
            .waiting()
            .map(|t| (t.name.as_str(), t.last_answer()))
            .collect();
        assert_eq!(
            waiting,
            [
                ("teapot", "HTTP 418".to_string()),
                ("closed", "connection refused".to_string())
            ]
        );
        assert!(report.elapsed >= Duration::from_millis(700));
        assert!(
            report.elapsed < Duration::from_millis(1500),
            "{:?}",
            report.elapsed
        );
    }

    #[test]
    fn zero_timeout_tries_once() {
        let ok = http_server(204);
        let targets = vec![Target::new(
            "ok",
            Probe::http(local(ok), "/", StatusRule::exactly(204)),
        )];
        let report = run(
            &targets,
            &Options::new(Duration::ZERO, Duration::from_secs(2)),
            |_| {},
        );
        assert_eq!(report.outcome, Outcome::Ready);
        let targets = vec![Target::new("closed", Probe::Tcp(local(closed_port())))];
        let report = run(
            &targets,
            &Options::new(Duration::ZERO, Duration::from_secs(2)),
            |_| {},
        );
        assert_eq!(report.outcome, Outcome::TimedOut);
        assert_eq!(report.targets[0].attempts, 1);
    }

    #[test]
    fn zero_timeout_reports_the_time_its_one_attempt_took() {
        let targets = vec![Target::new(
            "sleepy",
            Probe::Command(vec!["sleep".into(), "5".into()]),
        )];
        let report = run(
            &targets,
            &Options::new(Duration::ZERO, Duration::from_millis(600)),
            |_| {},
        );
        assert_eq!(report.outcome, Outcome::TimedOut);
        assert_eq!(report.targets[0].attempts, 1);
        assert!(
            report.elapsed >= Duration::from_millis(600),
            "{:?}",
            report.elapsed
        );
        assert!(
            report.elapsed < Duration::from_secs(3),
            "{:?}",
            report.elapsed
        );
    }

    #[test]
    fn a_killed_command_attempt_does_not_outlive_the_deadline() {
        let targets = vec![Target::new(
            "sleepy",
            Probe::Command(vec!["sleep".into(), "30".into()]),
        )];
        let report = run(
            &targets,
            &Options::new(Duration::from_millis(300), Duration::from_secs(10)),
            |_| {},
        );
        assert_eq!(report.outcome, Outcome::TimedOut);
        assert!(report.elapsed < Duration::from_secs(2));
    }
}

//! SIGTERM, SIGINT and SIGHUP, received by one thread and turned into a prompt, orderly stop.
//!
//! Every tool that must clean up on a stop signal (a wait, a container to remove, a pipeline
//! step to stop) goes through this module. A wait runs several threads, some of them blocked in
//! `connect` or `read` for seconds, and possibly child processes. A signal handler could do almost nothing safely there; instead
//! [`take_over`] blocks the stop signals in the calling thread — and so in every thread started
//! after it, which inherit the mask — and starts one thread that receives them with
//! `sigwait(2)`. A running wait [`subscribe`]s: the signal then ends it with
//! [`super::Outcome::Interrupted`], its children killed, and the tool exits 128+N as a shell
//! would report it. With no wait running, the process exits 128+N at once, which is what the
//! default action would have meant to the caller.
//!
//! A new process inherits its parent's signal mask, and the standard library does not reset it
//! on spawn: every child of a tool that called [`take_over`] would start with the stop signals
//! blocked, and could then be stopped by nothing but SIGKILL (a `docker run` client that must
//! pass SIGTERM on to its container, a step of provision-build). So every program is started
//! through [`crate::process::Program`], which empties the mask in the child.

use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};

use crate::error::{Context, Result};

type Callback = Box<dyn Fn(Signal) + Send>;

struct Subscribers {
    next_id: u64,
    callbacks: Vec<(u64, Callback)>,
}

static SUBSCRIBERS: Mutex<Subscribers> = Mutex::new(Subscribers {
    next_id: 0,
    callbacks: Vec::new(),
});
static TAKEN_OVER: Mutex<bool> = Mutex::new(false);

/// The signals that stop a tool: `systemctl stop`, ^C, and a closed terminal.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// [`STOP_SIGNALS`] as a set.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    STOP_SIGNALS.iter().for_each(|s| set.add(*s));
    set
}

/// The exit status that reports death by `signal`, as a shell does: 128 + N.
pub fn exit_status(signal: Signal) -> u8 {
    128u8.saturating_add(signal as u8)
}

/// Blocks the stop signals in this thread and starts the thread that receives them. Call it
/// first thing in `main`, before any other thread exists. Calling it again does nothing.
pub fn take_over() -> Result<()> {
    let mut taken_over = TAKEN_OVER.lock().unwrap_or_else(|e| e.into_inner());
    if *taken_over {
        return Ok(());
    }
    let set = stop_signals();
    set.thread_block()
        .context(|| "blocking SIGTERM, SIGINT and SIGHUP".to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                if let Ok(signal) = set.wait() {
                    deliver(signal);
                }
            }
        })
        .context(|| "starting the signal thread".to_string())?;
    *taken_over = true;
    Ok(())
}

fn deliver(signal: Signal) {
    let subscribers = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
    if subscribers.callbacks.is_empty() {
        drop(subscribers);
        std::process::exit(i32::from(exit_status(signal)));
    }
    for (_, callback) in &subscribers.callbacks {
        callback(signal);
    }
}

/// Calls `callback` on every stop signal until the returned guard is dropped. Without
/// [`take_over`], signals keep their default action and the callback is never called.
pub fn subscribe(callback: impl Fn(Signal) + Send + 'static) -> Subscription {
    let mut subscribers = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
    let id = subscribers.next_id;
    subscribers.next_id += 1;
    subscribers.callbacks.push((id, Box::new(callback)));
    Subscription { id }
}

/// Ends a [`subscribe`] when dropped.
pub struct Subscription {
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = SUBSCRIBERS.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.callbacks.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_128_plus_n() {
        assert_eq!(exit_status(Signal::SIGTERM), 143);
        assert_eq!(exit_status(Signal::SIGINT), 130);
    }
}

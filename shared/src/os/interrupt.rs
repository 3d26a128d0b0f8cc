//! SIGTERM and SIGINT for a tool that must clean up before it exits.
//!
//! run-build-migrations starts a container that must not outlive it, and slim-docker-image
//! starts a smoke-test container and fills a disk with zeros: a signal must end them promptly
//! *and* remove what they made. The [wait engine](crate::os::signal) already receives both
//! signals on a thread of its own and ends a running wait; [`Interrupt`] builds on that for the
//! rest of a tool's run:
//!
//! - it records the signal, so that the tool's steps can check it between them and take the
//!   cleanup path, exiting 128+N as a shell would report the death;
//! - it kills the child registered with [`Interrupt::kill_on_signal`] (a `docker exec` the tool
//!   is reading), which ends a blocking read at once;
//! - until the tool [acknowledges](Interrupt::acknowledge) the signal, it sends it again to the
//!   process every 200 ms. A signal that arrives in the instant between the tool's last check and
//!   the start of a wait would otherwise be seen by nobody and the wait would run its full time;
//!   sent again, it reaches the wait, which ends with `Interrupted`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{Context, Result};
use crate::os::signal::{self, Subscription};

/// How often an unacknowledged signal is sent again.
const RESEND: Duration = Duration::from_millis(200);

type Hook = Box<dyn Fn() + Send>;

#[derive(Default)]
struct Shared {
    signal: Mutex<Option<Signal>>,
    arrived: Condvar,
    acknowledged: AtomicBool,
    hook: Mutex<Option<Hook>>,
}

impl Shared {
    fn arrive(&self, sig: Signal) {
        {
            let mut slot = self.signal.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(sig);
        }
        self.arrived.notify_all();
        if let Some(hook) = self.hook.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            hook();
        }
    }

    fn signal(&self) -> Option<Signal> {
        *self.signal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a signal, then resends it until acknowledged.
    fn resend_until_acknowledged(&self) {
        let sig = {
            let guard = self.signal.lock().unwrap_or_else(|e| e.into_inner());
            let guard = self
                .arrived
                .wait_while(guard, |s| s.is_none())
                .unwrap_or_else(|e| e.into_inner());
            *guard
        };
        let Some(sig) = sig else { return };
        loop {
            std::thread::sleep(RESEND);
            if self.acknowledged.load(Ordering::SeqCst) {
                return;
            }
            // To the process, not this thread: the signal thread's sigwait takes it.
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), sig);
        }
    }
}

/// The tool's view of SIGTERM and SIGINT from now until it exits.
pub struct Interrupt {
    shared: Arc<Shared>,
    _subscription: Subscription,
}

impl Interrupt {
    /// Takes SIGTERM and SIGINT over (see [`signal::take_over`]) and starts recording them. Call
    /// it first thing in the tool's run, before any other thread exists.
    pub fn install() -> Result<Interrupt> {
        signal::take_over()?;
        let shared = Arc::new(Shared::default());
        let subscription = {
            let shared = Arc::clone(&shared);
            signal::subscribe(move |sig| shared.arrive(sig))
        };
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("interrupt".into())
                .spawn(move || shared.resend_until_acknowledged())
                .context(|| "starting the interrupt thread".to_string())?;
        }
        Ok(Interrupt {
            shared,
            _subscription: subscription,
        })
    }

    /// The first signal received, if any.
    pub fn signal(&self) -> Option<Signal> {
        self.shared.signal()
    }

    /// Stops resending the signal (the tool is cleaning up) and returns it.
    pub fn acknowledge(&self) -> Option<Signal> {
        self.shared.acknowledged.store(true, Ordering::SeqCst);
        self.signal()
    }

    /// When a signal has arrived: acknowledges it (see [`Interrupt::acknowledge`]) and returns
    /// it.
    pub fn acknowledge_if_signalled(&self) -> Option<Signal> {
        self.signal()?;
        self.acknowledge()
    }

    /// Calls `kill` when a signal arrives (at once if one already did) until the guard drops.
    /// One hook at a time: a new one replaces the old.
    pub fn kill_on_signal(&self, kill: impl Fn() + Send + 'static) -> HookGuard<'_> {
        *self.shared.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(kill));
        // A signal that came before the hook was in place.
        if self.signal().is_some() {
            if let Some(hook) = self
                .shared
                .hook
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                hook();
            }
        }
        HookGuard { owner: self }
    }
}

/// Removes the hook of [`Interrupt::kill_on_signal`] when dropped.
pub struct HookGuard<'a> {
    owner: &'a Interrupt,
}

impl Drop for HookGuard<'_> {
    fn drop(&mut self) {
        *self
            .owner
            .shared
            .hook
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

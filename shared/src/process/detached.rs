//! Programs that run later, detached from the tool that starts them (provision-build's
//! power-off after a failure: `(sleep 2 && shutdown -P now) &` in the original).
//!
//! The child is forked by hand, not spawned by `std::process::Command`, because it must sleep
//! before it executes its program and `Command::spawn` waits for the `exec`. Everything it needs
//! (the resolved program, the argument vector, the delay) is prepared before `fork`, so the
//! child calls only async-signal-safe functions, as it must in a multithreaded process.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The program `name` as `execv` needs it: a path, searched on `PATH` when `name` has no `/`.
fn resolve(name: &OsStr) -> io::Result<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found on PATH", name.to_string_lossy()),
            )
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `argv` detached: it leaves our session, sleeps `delay`, then runs, whether or not we
/// are still alive. Its stdin, stdout and stderr are `/dev/null`. The program is looked up on
/// `PATH` now, unless it holds a `/`.
pub fn spawn_detached(argv: &[OsString], delay: Duration) -> io::Result<()> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let program = resolve(program)?;
    let cstring = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let program = cstring(program.as_os_str())?;
    let args = argv
        .iter()
        .map(|a| cstring(a))
        .collect::<io::Result<Vec<_>>>()?;
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let devnull = c"/dev/null";
    // SAFETY: an all-zero timespec is a valid value.
    let mut sleep: libc::timespec = unsafe { std::mem::zeroed() };
    // Clamped so that it fits every platform's time_t; both casts are then lossless.
    sleep.tv_sec = delay.as_secs().min(i32::MAX as u64) as _;
    sleep.tv_nsec = delay.subsec_nanos() as _;
    // SAFETY: an all-zero sigset_t is valid storage, and sigemptyset initialises it.
    let mut no_signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `no_signals` is valid, writable storage.
    unsafe { libc::sigemptyset(&mut no_signals) };
    // SAFETY: fork has no preconditions; the child below only calls async-signal-safe functions
    // on data prepared before the fork, and never returns.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: every pointer points into the prepared, NUL-terminated data above.
            unsafe { run_later(&program, &pointers, devnull, &sleep, &no_signals) }
        }
        _ => Ok(()),
    }
}

/// The forked child: leave the session, reset signals, silence stdio, sleep, exec.
///
/// # Safety
/// Only for the child of `fork`; `argv` must be a NULL-terminated array of C strings.
unsafe fn run_later(
    program: &CString,
    argv: &[*const libc::c_char],
    devnull: &std::ffi::CStr,
    delay: &libc::timespec,
    no_signals: &libc::sigset_t,
) -> ! {
    // SAFETY: all of these are async-signal-safe and get valid pointers.
    unsafe {
        libc::setsid();
        // The parent blocks the stop signals for its signal thread; the command must not
        // inherit that, nor the standard library's ignored SIGPIPE.
        libc::pthread_sigmask(libc::SIG_SETMASK, no_signals, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
        let mut left = *delay;
        let mut rest: libc::timespec = std::mem::zeroed();
        while libc::nanosleep(&left, &mut rest) != 0 {
            left = rest;
        }
        libc::execv(program.as_ptr(), argv.as_ptr());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_searches_path_only_without_a_slash() {
        assert_eq!(
            resolve(OsStr::new("./x")).unwrap(),
            PathBuf::from("./x"),
            "a path is taken as it is"
        );
        assert!(resolve(OsStr::new("sh")).unwrap().is_absolute());
        let err = resolve(OsStr::new("no-such-program-here")).unwrap_err();
        assert_eq!(err.to_string(), "no-such-program-here not found on PATH");
    }
}

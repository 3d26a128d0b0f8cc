//! `run-stack-container`: the emulator's container in the foreground, for `stack.service`.
//!
//! The steps are the original's: mount the host's folder (cold-boot rules of
//! [`mount_host_fs::hostfs`]), render the env file ([`render_stack_env::render`]), publish the internal
//! publishable client key to the host's VM folder, remove any old `stack` container, and run
//! the container with exactly the original's `docker run` arguments.
//!
//! With no host VM folder (`STACK_EMULATOR_VM_DIR_HOST` empty or unset in runtime.env) this
//! process becomes docker (`exec`), as before. With one, the original piped docker's output
//! through `tee -a /host<dir>/stack.log` under `set -euo pipefail`, so a host folder that went
//! away (the 9p mount dropped) or could not be written failed `install` or `tee`, and systemd
//! restarted the service in a loop. Here every host-side write is best effort: a failure is a
//! warning on stderr and the output keeps flowing to stdout (the journal). Docker's stdout and
//! stderr share one pipe (`2>&1`); this process copies it to stdout and to the log, forwards
//! SIGTERM and SIGINT to docker (whose `run` passes them on to the container), and exits with
//! docker's status as soon as docker has exited, even if something else still holds the pipe.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use mount_host_fs::hostfs::HostFs;
use render_stack_env::render::{self, Output};
use shared::docker::Docker;
use shared::emulator::envfile;
use shared::emulator::keystore::{Key, KeyStore};
use shared::error::{Error, Result};
use shared::os::signal;

pub const TOOL: &str = "run-stack-container";
pub const DEFAULT_CONTAINER: &str = shared::emulator::CONTAINER;
pub const DEFAULT_IMAGE: &str = shared::emulator::IMAGE;
/// The runtime.env entry naming the VM's folder under the host mount.
pub const VM_DIR_VAR: &str = "STACK_EMULATOR_VM_DIR_HOST";
/// The container's log in the VM folder.
pub const HOST_LOG: &str = "stack.log";
/// The mode of the published key.
pub const PUBLISHED_KEY_MODE: u32 = 0o600;
/// Where the container sees the host's folder.
pub const CONTAINER_HOST_DIR: &str = shared::emulator::HOST_DIR;
/// The named volumes, in the original's order.
pub const VOLUMES: [&str; 5] = [
    "stack-postgres-data:/data/postgres",
    "stack-redis-data:/data/redis",
    "stack-clickhouse-data:/data/clickhouse",
    "stack-minio-data:/data/minio",
    "stack-inbucket-data:/data/inbucket",
];
/// How long output still in the pipe is copied once docker has exited.
const DRAIN: Duration = Duration::from_secs(2);
const CHUNK: usize = 64 << 10;

/// Everything one run needs; [`Default`] is the original's.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's folder: where it is mounted and how.
    pub host: HostFs,
    /// Whether to run mount-host-fs's steps (off: use the host folder as it is).
    pub mount_host: bool,
    /// render-stack-env's options; its output is the container's `--env-file`.
    pub env: render::Options,
    pub docker: Docker,
    pub container: String,
    pub image: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: HostFs::default(),
            mount_host: true,
            env: render::Options::default(),
            docker: Docker::default(),
            container: DEFAULT_CONTAINER.into(),
            image: DEFAULT_IMAGE.into(),
        }
    }
}

impl Options {
    /// The env file rendered and handed to docker.
    pub fn env_file(&self) -> Result<&Path> {
        match &self.env.output {
            Output::File(path) => Ok(path),
            Output::Stdout => Err(Error::usage(
                "--env-file",
                "the container needs a file, not stdout",
            )),
        }
    }
}

/// The original's `docker run` arguments (after `docker`).
pub fn run_args(env_file: &Path, host_dir: &Path, container: &str, image: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "run",
        "--rm",
        "--name",
        container,
        "--network",
        "host",
        "--add-host",
        "host.docker.internal:host-gateway",
        "--env-file",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(env_file.into());
    for volume in VOLUMES {
        args.push("-v".into());
        args.push(volume.into());
    }
    args.push("-v".into());
    let mut bind = host_dir.as_os_str().to_owned();
    bind.push(format!(":{CONTAINER_HOST_DIR}:rshared"));
    args.push(bind);
    args.push(image.into());
    args
}

/// `/host` + the VM folder, joined as the original's `"/host${STACK_EMULATOR_VM_DIR_HOST}"`.
/// `None` when the folder is empty; an error (for a warning) when it is not an absolute path
/// without `..`, which could reach outside the host folder.
pub fn vm_dir(host_dir: &Path, value: &str) -> std::result::Result<Option<PathBuf>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let path = Path::new(value);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{VM_DIR_VAR}={value:?} is not an absolute path without `..`; not using the host \
             folder"
        ));
    }
    let mut joined = host_dir.as_os_str().to_owned();
    joined.push(value);
    Ok(Some(PathBuf::from(joined)))
}

fn warn(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{TOOL}: warning: {text}");
}

/// The whole tool. Returns docker's exit status, unless this process became docker.
pub fn run(opts: &Options) -> Result<u8> {
    let env_file = opts.env_file()?.to_path_buf();
    if opts.mount_host {
        // Cold boot: a missing 9p is a notice and the run goes on with an empty host folder.
        opts.host.run(false, TOOL, &mut io::stderr().lock());
    }
    render::run(&opts.env, &mut io::stdout().lock())?;

    let vm_value = envfile::value_in(&opts.env.runtime_env(), VM_DIR_VAR)?.unwrap_or_default();
    let host_vm_dir = match vm_dir(&opts.host.mount_point, &vm_value) {
        Ok(dir) => dir,
        Err(why) => {
            warn(why);
            None
        }
    };
    if let Some(dir) = &host_vm_dir {
        publish_key(&KeyStore::new(&opts.env.key_dir), dir);
    }

    if let Err(err) = opts.docker.remove_container(&opts.container) {
        warn(format!("removing the old container: {err}"));
    }
    let command = opts.docker.command(run_args(
        &env_file,
        &opts.host.mount_point,
        &opts.container,
        &opts.image,
    ));
    match host_vm_dir {
        None => Err(command.exec()),
        Some(dir) => mirror(&command, &dir.join(HOST_LOG)),
    }
}

/// Copies the internal publishable client key to `<dir>/internal-pck` (mode 0600, atomic) when
/// it is not empty; a failure is a warning.
fn publish_key(store: &KeyStore, dir: &Path) {
    let source = store.path(Key::Pck);
    let key = match shared::os::small_file::read_optional(
        &source,
        shared::os::small_file::KEY_FILE_CAP,
    ) {
        Ok(Some(key)) if !key.is_empty() => key,
        Ok(_) => return,
        Err(err) => {
            warn(err.to_string());
            return;
        }
    };
    let dest = dir.join(Key::Pck.file_name());
    if let Err(err) = shared::os::atomic::write(&dest, &key, PUBLISHED_KEY_MODE) {
        warn(format!("publishing the key to the host: {err}"));
    }
}

/// Who receives a forwarded signal: docker while it runs; before it starts, the signal waits.
#[derive(Default)]
struct Forward {
    pid: Option<Pid>,
    pending: Option<Signal>,
    exited: bool,
}

/// Runs `command` with its output mirrored to stdout and `log`; returns its exit status.
fn mirror(command: &shared::docker::DockerCommand, log: &Path) -> Result<u8> {
    let forward = Arc::new(Mutex::new(Forward::default()));
    signal::take_over()?;
    let _subscription = {
        let forward = Arc::clone(&forward);
        signal::subscribe(move |sig| {
            let mut state = forward.lock().unwrap_or_else(|e| e.into_inner());
            match state.pid {
                Some(pid) if !state.exited => {
                    let _ = kill(pid, sig);
                }
                Some(_) => {}
                None => state.pending = Some(sig),
            }
        })
    };
    let log_file = open_log(log);
    let (mut child, pipe) = command.spawn_merged()?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    {
        let mut state = forward.lock().unwrap_or_else(|e| e.into_inner());
        state.pid = Some(pid);
        if let Some(sig) = state.pending.take() {
            let _ = kill(pid, sig);
        }
    }
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let log_name = log.to_path_buf();
    std::thread::Builder::new()
        .name("mirror".into())
        .spawn(move || {
            copy_out(pipe, log_file.map(|f| (log_name, f)));
            let _ = done_tx.send(());
        })
        .map_err(|err| Error::new("starting the output thread", err))?;
    // Wait for docker's exit without reaping it, so that no signal can reach a reused pid.
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(Error::new(format!("waiting for `{command}`"), err)),
        }
    }
    forward.lock().unwrap_or_else(|e| e.into_inner()).exited = true;
    let status = child
        .wait()
        .map_err(|err| Error::new(format!("waiting for `{command}`"), err))?;
    // Docker is gone: what it wrote is in the pipe; copy it unless someone else keeps the
    // pipe open, which must not keep the service from ending.
    let _ = done_rx.recv_timeout(DRAIN);
    Ok(shared::process::exit_code(status))
}

/// The host log, truncated, for appending (`: > log`, then `tee -a log`); a failure is a
/// warning and the output goes to stdout only.
fn open_log(path: &Path) -> Option<File> {
    match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_APPEND)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(err) => {
            warn(format!(
                "cannot write the host log {}: {err}; the output goes to stdout only",
                path.display()
            ));
            None
        }
    }
}

/// Copies `pipe` to stdout and the log until it ends. A destination that fails is dropped with
/// a warning; the other keeps receiving, and the pipe is always drained so docker never blocks.
fn copy_out(mut pipe: File, mut log: Option<(PathBuf, File)>) {
    let mut stdout = Some(io::stdout());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                warn(format!("reading docker's output: {err}"));
                return;
            }
        };
        let chunk = &buf[..n];
        if let Some(out) = stdout.as_mut() {
            let mut out = out.lock();
            if let Err(err) = out.write_all(chunk).and_then(|()| out.flush()) {
                warn(format!("writing to stdout: {err}"));
                drop(out);
                stdout = None;
            }
        }
        if let Some((name, file)) = log.as_mut() {
            if let Err(err) = file.write_all(chunk) {
                warn(format!(
                    "writing the host log {}: {err}; the output goes to stdout only",
                    name.display()
                ));
                log = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_args_are_the_original() {
        let args = run_args(
            Path::new("/run/stack-auth/local-emulator.env"),
            Path::new("/host"),
            DEFAULT_CONTAINER,
            DEFAULT_IMAGE,
        );
        assert_eq!(
            Docker::default().command(args).to_string(),
            "docker run --rm --name stack --network host --add-host host.docker.internal:host-gateway \
             --env-file /run/stack-auth/local-emulator.env \
             -v stack-postgres-data:/data/postgres -v stack-redis-data:/data/redis \
             -v stack-clickhouse-data:/data/clickhouse -v stack-minio-data:/data/minio \
             -v stack-inbucket-data:/data/inbucket -v /host:/host:rshared stack-local-emulator"
        );
    }

    #[test]
    fn vm_dir_is_joined_like_the_original() {
        let host = Path::new("/host");
        assert_eq!(vm_dir(host, ""), Ok(None));
        assert_eq!(
            vm_dir(host, "/Users/me/.stack/vm"),
            Ok(Some(PathBuf::from("/host/Users/me/.stack/vm")))
        );
        assert!(vm_dir(host, "relative").is_err());
        assert!(vm_dir(host, "/a/../../etc").is_err());
    }
}

//! wait-for-deps: how soon it notices readiness, and what waiting costs, beside the original's
//! algorithm (sequential probes, `sleep 2`) re-created as a fixed bash script with curl.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::listeners::{Reply, Server, free_port};
use crate::common::tool_path;
use crate::util::median_p95;

const TRIALS: usize = 20;
const BASELINE_TRIALS: usize = 8;
/// The last server comes up at a random moment in this window, 2 s wide so that it falls at a
/// random phase of both tools' polling (the original's `sleep 2`, our capped interval); the
/// other four come up at random moments before it.
const LAST_FROM: Duration = Duration::from_millis(1200);
const LAST_TO: Duration = Duration::from_millis(3200);
const FIRST_FROM: Duration = Duration::from_millis(200);
/// How long the CPU measurement waits on targets that never become ready.
const CPU_WAIT: Duration = Duration::from_secs(10);

/// The original's loop: each service in turn, `sleep 2` between attempts, a whole-wait cap.
/// Only its own arguments (ports and the cap) reach it.
const ORIGINAL: &str = r#"
start=$SECONDS
probe() {
  case $1 in
    pg) (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null ;;
    http) curl -sf -o /dev/null "http://127.0.0.1:$2$3" ;;
    qstash) [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/" 2>/dev/null || true)" = 401 ] ;;
  esac
}
wait_for() {
  until probe "$@"; do
    [ $((SECONDS - start)) -ge "$CAP" ] && exit 1
    sleep 2
  done
}
wait_for pg "$1"
wait_for http "$2" /ping
wait_for http "$3" /api/v1/health/
wait_for http "$4" /minio/health/live
wait_for qstash "$5"
"#;

/// A small deterministic generator: the benchmark needs spread, not cryptographic quality.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The five deps' ports and what each answers once it is up.
fn replies() -> [Reply; 5] {
    [
        Reply::Pg(b'S'),
        Reply::Status(200),
        Reply::Status(200),
        Reply::Status(200),
        Reply::Status(401),
    ]
}

/// Five servers that start listening at random moments (nothing listens before: connection
/// refused, as while a container starts); returns the time from the last one listening to
/// the exit of the wait that `command` starts.
fn trial(rng: &mut Lcg, command: impl FnOnce(&[u16; 5]) -> Command) -> Duration {
    let ports = [(); 5].map(|_| free_port());
    let between = |rng: &mut Lcg, from: Duration, to: Duration| {
        from + Duration::from_secs_f64(rng.unit() * (to - from).as_secs_f64())
    };
    let last = between(rng, LAST_FROM, LAST_TO);
    let mut delays = [(); 5].map(|_| between(rng, FIRST_FROM, last));
    delays[(rng.unit() * 5.0) as usize % 5] = last;
    let ready_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut cmd = command(&ports);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let servers: Vec<_> = ports
        .iter()
        .zip(delays)
        .zip(replies())
        .map(|((&port, delay), reply)| {
            let ready_at = Arc::clone(&ready_at);
            std::thread::spawn(move || {
                std::thread::sleep(delay.saturating_sub(start.elapsed()));
                let server = Server::start_on(&format!("127.0.0.1:{port}"), move |_| reply);
                ready_at.lock().expect("ready_at").push(Instant::now());
                server
            })
        })
        .collect();
    let status = child.wait().expect("wait");
    let exited = Instant::now();
    assert!(status.success(), "the wait failed: {cmd:?}");
    let servers: Vec<Server> = servers
        .into_iter()
        .map(|h| h.join().expect("server"))
        .collect();
    let last = *ready_at
        .lock()
        .expect("ready_at")
        .iter()
        .max()
        .expect("ready");
    drop(servers);
    exited.saturating_duration_since(last)
}

fn ours(ports: &[u16; 5], timeout: Duration) -> Command {
    let mut cmd = Command::new(tool_path("wait-for-deps"));
    for (flag, port) in [
        "--postgres-port",
        "--clickhouse-port",
        "--svix-port",
        "--minio-port",
        "--qstash-port",
    ]
    .iter()
    .zip(ports)
    {
        cmd.args([flag.to_string(), port.to_string()]);
    }
    cmd.args(["--timeout", &timeout.as_secs().to_string()])
        .args(["--docker", "/nonexistent/docker"])
        .args(["--diag-probe-timeout", "0.1"])
        .env_remove("STACK_PROVISION_LOG_FILE")
        .env_remove("HEXCLAVE_PROVISION_LOG_FILE");
    cmd
}

fn original(ports: &[u16; 5], cap: Duration) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", ORIGINAL, "original"])
        .args(ports.map(|p| p.to_string()))
        .env("CAP", cap.as_secs().to_string());
    cmd
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Time from the last service coming up to the wait's exit, over 20 trials with default
/// settings, beside the original's algorithm.
pub fn detection_latency() {
    let mut rng = Lcg(0x5eed_0f3a_17c0);
    let mut samples: Vec<Duration> = (0..TRIALS)
        .map(|_| trial(&mut rng, |p| ours(p, Duration::from_secs(60))))
        .collect();
    let (median, p95) = median_p95(&mut samples);
    println!(
        "wait-for-deps detection latency ({TRIALS} trials, default intervals): median {:.0} ms, p95 {:.0} ms",
        ms(median),
        ms(p95)
    );
    if !(has("bash") && has("curl")) {
        println!("original algorithm: skipped (needs bash and curl)");
        return;
    }
    let mut base: Vec<Duration> = (0..BASELINE_TRIALS)
        .map(|_| trial(&mut rng, |p| original(p, Duration::from_secs(60))))
        .collect();
    let (base_median, base_p95) = median_p95(&mut base);
    println!(
        "original algorithm ({BASELINE_TRIALS} trials): median {:.0} ms, p95 {:.0} ms; median ratio {:.1}x",
        ms(base_median),
        ms(base_p95),
        base_median.as_secs_f64() / median.as_secs_f64().max(1e-6)
    );
}

/// Runs `cmd` to its end and returns (wall time, user+system CPU of it and its reaped
/// descendants), whatever its exit status.
fn cpu_of(cmd: &mut Command) -> (Duration, Duration) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes into the two locals we pass; the child is ours and not yet reaped.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid, "wait4");
        usage
    };
    std::mem::forget(child);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (start.elapsed(), tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// CPU seconds per minute of waiting on five services that never come up (connection
/// refused, the most frequent failure), measured over 10 s and scaled.
pub fn waiting_cpu() {
    let ports = [(); 5].map(|_| free_port());
    let per_minute =
        |(wall, cpu): (Duration, Duration)| cpu.as_secs_f64() * 60.0 / wall.as_secs_f64();
    let (wall, cpu) = cpu_of(&mut ours(&ports, CPU_WAIT));
    let rate = per_minute((wall, cpu));
    println!(
        "wait-for-deps waiting on 5 never-ready services: {:.3} CPU s over {:.1} s = {:.3} CPU s per minute",
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        rate
    );
    if !(has("bash") && has("curl")) {
        println!("original algorithm: skipped (needs bash and curl)");
        return;
    }
    let (bwall, bcpu) = cpu_of(&mut original(&ports, CPU_WAIT));
    let base = per_minute((bwall, bcpu));
    println!(
        "original algorithm (probing one service every 2 s): {:.3} CPU s per minute; ratio {:.2}x",
        base,
        rate / base.max(1e-9)
    );
}

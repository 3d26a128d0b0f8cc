//! The fake emulator image and the throwaway engine behave as the tool tests rely on.

use std::time::{Duration, Instant};

use crate::common::fake_emulator;
use crate::common::sandbox::{self, Sandbox};

#[test]
fn deps_mode_serves_the_five_deps_and_writes_the_marker() {
    require!(
        sandbox::engine_available(),
        "a sandbox with a docker engine"
    );
    let mut sb = Sandbox::with_network();
    sb.start_engine();
    fake_emulator::build(|a| sb.docker(a), "stack-local-emulator", &[]);
    sb.docker_ok([
        "run",
        "-d",
        "--name",
        "deps",
        "--network",
        "host",
        "-e",
        "STACK_DEPS_ONLY=true",
        "stack-local-emulator",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sb
        .docker([
            "exec",
            "deps",
            "test",
            "-f",
            "/var/run/stack-local-init-services.done",
        ])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "init marker never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The sandbox's loopback is the container's: probe it from inside the namespaces.
    let codes = sb.sh(
        "for u in 8123/ping 8071/api/v1/health/ 9090/minio/health/live 8080/; do \
           busybox wget -q -O /dev/null -S http://127.0.0.1:$u 2>&1 | busybox head -1; \
         done; \
         printf '\\0\\0\\0\\010\\004\\322\\026\\057' | busybox timeout 3 busybox nc 127.0.0.1 5432",
    );
    let text = String::from_utf8_lossy(&codes.stdout);
    assert_eq!(
        text.lines().map(str::trim).collect::<Vec<_>>(),
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 401 Unauthorized",
            "N"
        ],
        "{}",
        String::from_utf8_lossy(&codes.stderr)
    );
}

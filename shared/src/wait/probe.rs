//! Probes: one bounded attempt at asking a service whether it is ready.
//!
//! A probe is data — an address and a rule — never a shell string, so nothing a probe names is
//! ever evaluated. Every attempt is given a budget and returns within it (plus scheduling
//! noise), whatever the other side does: connecting, sending and reading all carry the time
//! that is left, and a command that runs past it is killed. A failed attempt is an answer too:
//! the last one of each target is what the report shows when the wait gives up.
//!
//! - `tcp` is ready when a connection is accepted (`nc -z`).
//! - `pg` sends PostgreSQL's 8-byte SSLRequest and is ready on the one-byte reply `S` or `N`:
//!   any live server answers it before authentication, while a port that accepts and never
//!   answers (a proxy, a hung server) does not pass.
//! - `http` sends one `GET` and applies a status rule to the answer; redirects are not followed
//!   (curl without `-L`), no proxy is used, and a status that fails the rule is an answer, not
//!   an error. Only the status line is read (after any interim 1xx answers), so the probe is a
//!   request written on a TCP stream and one line read back: a few dozen lines here instead of
//!   an HTTP client library inside every guest binary.
//! - a command (argv) is ready when it exits 0.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::duration::about_seconds as seconds;
use crate::process::{self, Registry};

/// The bytes of PostgreSQL's SSLRequest: length 8, then the code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f];

/// The host part of an address: an IP literal or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A host and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: Host, port: u16) -> Self {
        Endpoint { host, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Which HTTP statuses count as ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusRule {
    /// Any status below this one: `Below(400)` is what `curl -f` counts as success.
    Below(u16),
    /// Exactly one of these.
    OneOf(Vec<u16>),
}

impl StatusRule {
    /// The rule of `curl -f`: any status below 400.
    pub const CURL_FAIL: StatusRule = StatusRule::Below(400);

    pub fn exactly(code: u16) -> Self {
        StatusRule::OneOf(vec![code])
    }

    pub fn accepts(&self, status: u16) -> bool {
        match self {
            StatusRule::Below(limit) => status < *limit,
            StatusRule::OneOf(codes) => codes.contains(&status),
        }
    }
}

impl fmt::Display for StatusRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusRule::Below(limit) => write!(f, "status<{limit}"),
            StatusRule::OneOf(codes) => {
                let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
                write!(f, "status={}", codes.join(","))
            }
        }
    }
}

/// What to ask, and what answer means ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Ready when a TCP connection is accepted.
    Tcp(Endpoint),
    /// Ready when the server answers SSLRequest with `S` or `N`.
    Postgres(Endpoint),
    /// Ready when `GET path` answers with a status the rule accepts.
    Http {
        endpoint: Endpoint,
        /// Starts with `/`; may carry a query (`/health?db=1`).
        path: String,
        rule: StatusRule,
    },
    /// Ready when the command exits 0. Never run through a shell.
    Command(Vec<OsString>),
}

impl Probe {
    pub fn http(endpoint: Endpoint, path: impl Into<String>, rule: StatusRule) -> Self {
        Probe::Http {
            endpoint,
            path: path.into(),
            rule,
        }
    }

    /// The address probed, for a network probe.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match self {
            Probe::Tcp(e) | Probe::Postgres(e) | Probe::Http { endpoint: e, .. } => Some(e),
            Probe::Command(_) => None,
        }
    }

    /// One attempt, returning within `budget`.
    pub fn attempt(&self, budget: Duration) -> Attempt {
        self.attempt_with(budget, &Registry::default())
    }

    /// One attempt whose child process, if any, `children` can kill.
    pub(crate) fn attempt_with(&self, budget: Duration, children: &Registry) -> Attempt {
        let start = Instant::now();
        let deadline = start + budget;
        let answer = match self {
            Probe::Tcp(endpoint) => match connect(endpoint, deadline, budget) {
                Ok(_) => Answer::Connected,
                Err(why) => Answer::Failed(why),
            },
            Probe::Postgres(endpoint) => ssl_request(endpoint, deadline, budget),
            Probe::Http { endpoint, path, .. } => http_get(endpoint, path, deadline, budget),
            Probe::Command(argv) => command(argv, budget, children),
        };
        let ready = match (&answer, self) {
            (Answer::Connected, Probe::Tcp(_)) => true,
            (Answer::PgReply(b), Probe::Postgres(_)) => matches!(b, b'S' | b'N'),
            (Answer::Status(code), Probe::Http { rule, .. }) => rule.accepts(*code),
            (Answer::Exited { success, .. }, Probe::Command(_)) => *success,
            _ => false,
        };
        Attempt {
            answer,
            ready,
            took: start.elapsed(),
        }
    }
}

impl fmt::Display for Probe {
    /// The probe as a target spec (`pg://127.0.0.1:5432`, `http://…/ status=401`); a command
    /// shows its argv.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp(e) => write!(f, "tcp://{e}"),
            Probe::Postgres(e) => write!(f, "pg://{e}"),
            Probe::Http {
                endpoint,
                path,
                rule,
            } => write!(f, "http://{endpoint}{path} {rule}"),
            Probe::Command(argv) => {
                let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
                write!(f, "command `{}`", words.join(" "))
            }
        }
    }
}

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub answer: Answer,
    /// Whether the answer is what the probe waits for.
    pub ready: bool,
    pub took: Duration,
}

/// What a service said, or why it said nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A TCP connection was accepted.
    Connected,
    /// An HTTP status line came back.
    Status(u16),
    /// The first byte of the reply to SSLRequest.
    PgReply(u8),
    /// A command ended; `how` says how (`exit status 1`), `output` is its last line of output.
    Exited {
        success: bool,
        how: String,
        output: String,
    },
    /// No answer: refused, reset, timed out, not resolvable, …
    Failed(String),
}

impl Answer {
    /// The HTTP status, if this is one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Answer::Status(code) => Some(*code),
            _ => None,
        }
    }

    /// The status as curl's `%{http_code}` prints it: `000` when there was none.
    pub fn http_code(answer: Option<&Answer>) -> String {
        match answer.and_then(Answer::http_status) {
            Some(code) => code.to_string(),
            None => "000".to_string(),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Connected => f.write_str("connection accepted"),
            Answer::Status(code) => write!(f, "HTTP {code}"),
            Answer::PgReply(b) if b.is_ascii_graphic() => {
                write!(f, "answered SSLRequest with '{}'", char::from(*b))
            }
            Answer::PgReply(b) => write!(f, "answered SSLRequest with byte 0x{b:02x}"),
            Answer::Exited { how, output, .. } if output.is_empty() => f.write_str(how),
            Answer::Exited { how, output, .. } => write!(f, "{how}: {output}"),
            Answer::Failed(why) => f.write_str(why),
        }
    }
}

/// An I/O error in a few words, without the `(os error N)` tail.
fn describe_io(err: &io::Error, budget: Duration) -> String {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut | WouldBlock => format!("no answer within {}", seconds(budget)),
        UnexpectedEof => "connection closed without an answer".into(),
        BrokenPipe => "connection closed".into(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_string(),
                None => text,
            }
        }
    }
}

/// The socket addresses of `endpoint`; a name is resolved in a helper thread so that a stuck
/// resolver cannot hold the attempt past its budget.
fn resolve(endpoint: &Endpoint, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    let name = match &endpoint.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, endpoint.port)]),
        Host::Name(name) => name.clone(),
    };
    let port = endpoint.port;
    let (tx, rx) = mpsc::channel();
    let lookup = name.clone();
    std::thread::spawn(move || {
        let _ = tx.send(
            (lookup.as_str(), port)
                .to_socket_addrs()
                .map(Vec::from_iter),
        );
    });
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("{name}: no address")),
        Ok(Err(err)) => Err(format!("resolving {name}: {err}")),
        Err(_) => Err(format!("resolving {name}: no answer in time")),
    }
}

fn connect(endpoint: &Endpoint, deadline: Instant, budget: Duration) -> Result<TcpStream, String> {
    let mut last = format!("no answer within {}", seconds(budget));
    for addr in resolve(endpoint, deadline)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = describe_io(&err, budget),
        }
    }
    Err(last)
}

fn ssl_request(endpoint: &Endpoint, deadline: Instant, budget: Duration) -> Answer {
    let exchange = || -> Result<u8, String> {
        let mut stream = connect(endpoint, deadline, budget)?;
        let io = |err: io::Error| describe_io(&err, budget);
        stream
            .set_write_timeout(Some(time_left(deadline)))
            .map_err(io)?;
        stream.write_all(&SSL_REQUEST).map_err(io)?;
        let mut reply = [0u8; 1];
        loop {
            stream
                .set_read_timeout(Some(time_left(deadline)))
                .map_err(io)?;
            match stream.read(&mut reply) {
                Ok(0) => return Err("connection closed without an answer".into()),
                Ok(_) => return Ok(reply[0]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(io(err)),
            }
        }
    };
    match exchange() {
        Ok(byte) => Answer::PgReply(byte),
        Err(why) => Answer::Failed(why),
    }
}

/// The time until `deadline`, as a socket timeout: at least 1 ms, since a zero timeout means
/// "none" to the socket API.
fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn http_get(endpoint: &Endpoint, path: &str, deadline: Instant, budget: Duration) -> Answer {
    match http_status(endpoint, path, deadline, budget) {
        Ok(code) => Answer::Status(code),
        Err(why) => Answer::Failed(why),
    }
}

/// The most bytes of an answer's head read before its final status line: far more than a status
/// line and a few interim answers need, and a bound on what a confused peer can make us read.
const HEAD_LIMIT: usize = 16 * 1024;

/// Sends `GET path` to `endpoint` and reads the status of the answer. The connection is closed
/// after the status line: headers and body are never read, redirects never followed.
fn http_status(
    endpoint: &Endpoint,
    path: &str,
    deadline: Instant,
    budget: Duration,
) -> Result<u16, String> {
    let mut stream = connect(endpoint, deadline, budget)?;
    let io = |err: io::Error| describe_io(&err, budget);
    // The port is left out of Host when it is HTTP's own, as browsers and curl do.
    let host = match endpoint.port {
        80 => endpoint.host.to_string(),
        _ => endpoint.to_string(),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .set_write_timeout(Some(time_left(deadline)))
        .map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut head = Head {
        stream,
        bytes: Vec::new(),
        start: 0,
    };
    loop {
        let line = head.line(deadline, budget)?;
        let code = status_code(&line).ok_or_else(|| {
            let shown: String = String::from_utf8_lossy(&line).chars().take(80).collect();
            format!("not an HTTP answer: {shown:?}")
        })?;
        // An interim answer (100 Continue, 103 Early Hints) comes before the real one: skip its
        // header fields, up to the blank line, and read on. 101 ends the exchange.
        if (100..200).contains(&code) && code != 101 {
            while !head.line(deadline, budget)?.is_empty() {}
            continue;
        }
        return Ok(code);
    }
}

/// The head of an HTTP answer, read line by line within a deadline.
struct Head {
    stream: TcpStream,
    bytes: Vec<u8>,
    /// Where the next line starts in `bytes`.
    start: usize,
}

impl Head {
    /// The next line, without its line end (LF or CRLF).
    fn line(&mut self, deadline: Instant, budget: Duration) -> Result<Vec<u8>, String> {
        let mut searched = self.start;
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.bytes[searched..]) {
                let end = searched + at;
                let mut line = self.bytes[self.start..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start = end + 1;
                return Ok(line);
            }
            searched = self.bytes.len();
            if self.bytes.len() >= HEAD_LIMIT {
                return Err(format!(
                    "not an HTTP answer: no status line in its first {HEAD_LIMIT} bytes"
                ));
            }
            let io = |err: io::Error| describe_io(&err, budget);
            self.stream
                .set_read_timeout(Some(time_left(deadline)))
                .map_err(io)?;
            let mut buf = [0u8; 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("connection closed without an answer".into()),
                Ok(n) => self.bytes.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io(err)),
            }
        }
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`; the reason may be empty or
/// missing), or `None` when `line` is not one.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    if !minor.is_ascii_digit() || rest.len() < 3 || !matches!(rest.get(3), None | Some(b' ')) {
        return None;
    }
    let digits = &rest[..3];
    if !digits.iter().all(u8::is_ascii_digit) || digits[0] == b'0' {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |code, d| code * 10 + u16::from(d - b'0')),
    )
}

/// The most output a command probe keeps: enough for its last lines.
const OUTPUT_TAIL: usize = 4096;

fn command(argv: &[OsString], budget: Duration, children: &Registry) -> Answer {
    let program = argv.first().cloned().unwrap_or_default();
    let (mut child, output) = match children.spawn(argv) {
        Ok(spawned) => spawned,
        Err(err) => return Answer::Failed(process::describe_spawn_error(&program, &err)),
    };
    let pid = child.id();
    // The output is read on the side (a chatty command must not block on a full pipe), and
    // the exit status is awaited on the side, so that this thread can keep the time.
    let out_rx = read_tail(output);
    let (status_tx, status_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _ = status_tx.send(children.wait(&mut child));
        });
        let (status, killed) = match status_rx.recv_timeout(budget) {
            Ok(status) => (status, false),
            Err(_) => {
                let killed = children.kill(pid);
                (
                    status_rx
                        .recv()
                        .unwrap_or_else(|e| Err(io::Error::other(e))),
                    killed,
                )
            }
        };
        // What the command printed, if it has finished printing (a grandchild outside its
        // process group could hold the pipe open).
        let tail = out_rx
            .recv_timeout(Duration::from_millis(100))
            .unwrap_or_default();
        let output = last_line(&tail);
        match status {
            Ok(_) if killed => Answer::Failed(format!(
                "{}: still running after {}; killed",
                program.to_string_lossy(),
                seconds(budget)
            )),
            Ok(status) => Answer::Exited {
                success: status.success(),
                how: process::describe_status(status),
                output,
            },
            Err(err) => Answer::Failed(format!("waiting for {}: {err}", program.to_string_lossy())),
        }
    })
}

/// Reads `output` to its end on a thread of its own; the last [`OUTPUT_TAIL`] bytes or more
/// arrive on the receiver then.
fn read_tail(mut output: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match output.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * OUTPUT_TAIL {
                        tail.drain(..tail.len() - OUTPUT_TAIL);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(tail);
    });
    rx
}

/// The last non-blank line of `bytes`, trimmed and cut to a readable length.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn local(port: u16) -> Endpoint {
        Endpoint::new(Host::Ip(IpAddr::from([127, 0, 0, 1])), port)
    }

    #[test]
    fn status_rules() {
        assert!(StatusRule::CURL_FAIL.accepts(200));
        assert!(StatusRule::CURL_FAIL.accepts(302));
        assert!(StatusRule::CURL_FAIL.accepts(399));
        assert!(!StatusRule::CURL_FAIL.accepts(400));
        assert!(StatusRule::exactly(401).accepts(401));
        assert!(!StatusRule::exactly(401).accepts(200));
        assert_eq!(
            StatusRule::OneOf(vec![200, 204]).to_string(),
            "status=200,204"
        );
    }

    #[test]
    fn display_brackets_ipv6() {
        let e = Endpoint::new(Host::Ip("::1".parse().unwrap()), 5432);
        assert_eq!(Probe::Postgres(e).to_string(), "pg://[::1]:5432");
    }

    #[test]
    fn refused_tcp_is_an_answer_not_a_hang() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let a = Probe::Tcp(local(port)).attempt(Duration::from_secs(2));
        assert!(!a.ready);
        assert_eq!(a.answer, Answer::Failed("connection refused".into()));
    }

    #[test]
    fn silent_postgres_times_out_within_budget() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let a = Probe::Postgres(local(port)).attempt(Duration::from_millis(300));
        assert!(!a.ready);
        assert_eq!(a.answer, Answer::Failed("no answer within 0.3s".into()));
        assert!(a.took < Duration::from_millis(600), "{:?}", a.took);
    }

    /// A one-connection HTTP server on `addr`: it reads the request head, then `reply` writes
    /// whatever answer the test needs. The handle returns the request as read.
    fn serve_once(
        addr: &str,
        reply: impl FnOnce(&mut TcpStream) + Send + 'static,
    ) -> (Endpoint, std::thread::JoinHandle<(String, TcpListener)>) {
        let listener = TcpListener::bind(addr).unwrap();
        let local = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 256];
            while !head.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                assert_ne!(n, 0, "request ended early: {head:?}");
                head.extend_from_slice(&buf[..n]);
            }
            reply(&mut stream);
            (String::from_utf8(head).unwrap(), listener)
        });
        (Endpoint::new(Host::Ip(local.ip()), local.port()), server)
    }

    fn get(endpoint: &Endpoint, path: &str, budget: Duration) -> Attempt {
        Probe::http(endpoint.clone(), path, StatusRule::CURL_FAIL).attempt(budget)
    }

    #[test]
    fn http_sends_one_get_reads_the_status_line_and_follows_no_redirect() {
        let (endpoint, server) = serve_once("127.0.0.1:0", |stream| {
            stream
                .write_all(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n\r\n")
                .unwrap();
            // The connection stays open: the probe must not wait for more than the status.
            std::thread::sleep(Duration::from_secs(1));
        });
        let a = get(&endpoint, "/a/b?c=1&d", Duration::from_secs(5));
        assert_eq!(a.answer, Answer::Status(302));
        assert!(a.ready, "302 passes status<400");
        assert!(a.took < Duration::from_millis(800), "{:?}", a.took);
        let (request, listener) = server.join().unwrap();
        assert_eq!(
            request,
            format!(
                "GET /a/b?c=1&d HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                endpoint.port
            )
        );
        listener.set_nonblocking(true).unwrap();
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "no second request: the redirect is not followed"
        );
    }

    #[test]
    fn http_over_ipv6_names_the_bracketed_host() {
        if TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipped: no IPv6 loopback");
            return;
        }
        let (endpoint, server) = serve_once("[::1]:0", |stream| {
            stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
                .unwrap();
        });
        let a = Probe::http(endpoint.clone(), "/", StatusRule::exactly(401))
            .attempt(Duration::from_secs(5));
        assert_eq!(a.answer, Answer::Status(401));
        assert!(a.ready);
        let (request, _) = server.join().unwrap();
        assert_eq!(
            request,
            format!(
                "GET / HTTP/1.1\r\nHost: [::1]:{}\r\nConnection: close\r\n\r\n",
                endpoint.port
            )
        );
    }

    #[test]
    fn http_skips_interim_answers_and_reads_a_status_line_in_pieces() {
        let (endpoint, server) = serve_once("127.0.0.1:0", |stream| {
            for piece in [
                &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>"[..],
                b"\r\n\r\nHTT",
                b"P/1.0 204 No Content\r\n\r\n",
            ] {
                stream.write_all(piece).unwrap();
                stream.flush().unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let a = get(&endpoint, "/", Duration::from_secs(5));
        assert_eq!(a.answer, Answer::Status(204));
        server.join().unwrap();
    }

    #[test]
    fn http_without_a_whole_status_line_fails_within_budget() {
        let (endpoint, _server) = serve_once("127.0.0.1:0", |stream| {
            stream.write_all(b"HTTP/1.1 2").unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        let a = get(&endpoint, "/", Duration::from_millis(300));
        assert_eq!(a.answer, Answer::Failed("no answer within 0.3s".into()));
        assert!(a.took < Duration::from_millis(600), "{:?}", a.took);

        let (endpoint, server) = serve_once("127.0.0.1:0", |_| {});
        let a = get(&endpoint, "/", Duration::from_secs(5));
        assert_eq!(
            a.answer,
            Answer::Failed("connection closed without an answer".into())
        );
        server.join().unwrap();

        let (endpoint, server) = serve_once("127.0.0.1:0", |stream| {
            stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        });
        let a = get(&endpoint, "/", Duration::from_secs(5));
        assert_eq!(
            a.answer,
            Answer::Failed("not an HTTP answer: \"SSH-2.0-OpenSSH_9.2\"".into())
        );
        assert!(!a.ready);
        server.join().unwrap();
    }

    #[test]
    fn status_lines() {
        for (line, code) in [
            ("HTTP/1.1 200 OK", Some(200)),
            ("HTTP/1.0 404 Not Found", Some(404)),
            ("HTTP/1.1 503", Some(503)),
            ("HTTP/1.1 204 ", Some(204)),
            ("HTTP/1.1 999 Odd", Some(999)),
            ("HTTP/1.1 099 Low", None),
            ("HTTP/1.1 20 OK", None),
            ("HTTP/1.1 2000 OK", None),
            ("HTTP/1.1 2x0 OK", None),
            ("HTTP/1.1  200 OK", None),
            ("HTTP/2 200", None),
            ("http/1.1 200 OK", None),
            ("", None),
        ] {
            assert_eq!(status_code(line.as_bytes()), code, "{line:?}");
        }
    }

    #[test]
    fn command_probe_exit_status_and_kill() {
        let argv = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
        let ok = Probe::Command(argv(&["true"])).attempt(Duration::from_secs(5));
        assert!(ok.ready);
        let bad = Probe::Command(argv(&["sh", "-c", "echo first; echo oops >&2; exit 3"]))
            .attempt(Duration::from_secs(5));
        assert!(!bad.ready);
        assert_eq!(bad.answer.to_string(), "exit status 3: oops");
        let slow = Probe::Command(argv(&["sleep", "10"])).attempt(Duration::from_millis(200));
        assert_eq!(
            slow.answer,
            Answer::Failed("sleep: still running after 0.2s; killed".into())
        );
        assert!(slow.took < Duration::from_secs(2));
        let missing = Probe::Command(argv(&["/nonexistent/x"])).attempt(Duration::from_secs(1));
        assert_eq!(
            missing.answer,
            Answer::Failed("/nonexistent/x: command not found".into())
        );
    }
}

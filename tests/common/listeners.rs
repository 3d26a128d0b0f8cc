//! Loopback servers for the wait tools: each on a port of its own, answering as a test says.
//!
//! A server's behaviour is a function of the time since it started, so one server can refuse
//! to be ready (503, a closed connection, silence) and then become ready at a chosen moment.
//! Every request line it reads is recorded, so a test can check which path a probe asked for.
//! Dropping a server stops it and closes every connection it still holds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a server does with one connection.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// Read an HTTP request, answer with this status and an empty body.
    Status(u16),
    /// Read PostgreSQL's 8-byte SSLRequest, answer with this byte.
    Pg(u8),
    /// Close the connection at once, without reading.
    Close,
    /// Hold the connection open and never answer.
    Silent,
}

/// A port nothing listens on (bound, then released; another process could take it, which on a
/// test machine's loopback does not happen in practice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A loopback port that refuses connections and that nothing else can take while this lives: a
/// TCP socket bound to it that never listens, so a SYN to it is answered with a reset. A port
/// found free and closed again could be taken by a concurrent test's server in between.
pub struct ClosedPort {
    pub port: u16,
    _socket: std::os::fd::OwnedFd,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket calls on a descriptor we own, with correctly sized addresses.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(
                socket.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            );
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let named = libc::getsockname(
                socket.as_raw_fd(),
                (&raw mut addr).cast::<libc::sockaddr>(),
                &mut len,
            );
            assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedPort {
                port: u16::from_be(addr.sin_port),
                _socket: socket,
            }
        }
    }
}

pub struct Server {
    pub port: u16,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// A server on 127.0.0.1 whose reply to a connection depends on the time since start.
    pub fn start(behaviour: impl Fn(Duration) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_on("127.0.0.1:0", behaviour)
    }

    /// The same on another address (`[::1]:0`).
    pub fn start_on(
        bind: &str,
        behaviour: impl Fn(Duration) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind(bind).expect("bind test server");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(behaviour);
        let start = Instant::now();
        let accept = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let reply = behaviour(start.elapsed());
                    let stop = Arc::clone(&stop);
                    let requests = Arc::clone(&requests);
                    std::thread::spawn(move || serve(stream, reply, &stop, &requests));
                }
            })
        };
        Server {
            port: addr.port(),
            addr,
            stop,
            requests,
            accept: Some(accept),
        }
    }

    /// Always the same reply.
    pub fn always(reply: Reply) -> Server {
        Server::start(move |_| reply)
    }

    /// `before` until `ready_after` has passed, then `after`.
    pub fn ready_after(ready_after: Duration, before: Reply, after: Reply) -> Server {
        Server::start(move |t| if t >= ready_after { after } else { before })
    }

    /// The request lines read so far (`GET /ping HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(mut stream: TcpStream, reply: Reply, stop: &AtomicBool, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    match reply {
        Reply::Close => {}
        Reply::Silent => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Reply::Pg(byte) => {
            let mut request = [0u8; 8];
            if stream.read_exact(&mut request).is_ok() {
                requests
                    .lock()
                    .expect("requests")
                    .push(format!("{request:02x?}"));
                let _ = stream.write_all(&[byte]);
            }
        }
        Reply::Status(status) => {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let line = text.lines().next().unwrap_or("").to_string();
            requests.lock().expect("requests").push(line);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}

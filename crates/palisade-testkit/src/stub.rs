//! A stub HTTP dependency on loopback that answers, hangs, fails or refuses
//! connections — switched at any time — and records what it was sent: for
//! tests of outbound calls (deadlines, breakers, fail-open checks).
//!
//! Threads, not an async runtime, so it works beside any runtime (or none).
//! Every connection is answered with `Connection: close`; a hanging one is
//! held until the stub is dropped or 60 s pass.
//!
//! # Example
//!
//! ```
//! use palisade_testkit::http::Request;
//! use palisade_testkit::stub::{Mode, StubServer};
//!
//! let stub = StubServer::start(Mode::answer(200, "ok")).unwrap();
//! let res = Request::get("/range/5BAA6").send(stub.addr()).unwrap();
//! assert_eq!((res.status, res.text().as_str()), (200, "ok"));
//! assert_eq!(stub.requests()[0].path, "/range/5BAA6");
//!
//! stub.set_mode(Mode::Fail);
//! assert_eq!(Request::get("/").send(stub.addr()).unwrap().status, 500);
//! stub.set_mode(Mode::Refuse);
//! assert!(Request::get("/").send(stub.addr()).is_err());
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestkitError;

/// What the stub does with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Answers this status and body.
    Answer {
        /// The status code.
        status: u16,
        /// The body.
        body: String,
    },
    /// Reads the request and never answers.
    Hang,
    /// Answers 500.
    Fail,
    /// Closes every connection at once, before reading (as close to a
    /// refused connection as a listening socket gets: the client sees a
    /// reset or an empty answer). To refuse outright, drop the stub and
    /// reuse its address.
    Refuse,
}

impl Mode {
    /// [`Mode::Answer`].
    pub fn answer(status: u16, body: impl Into<String>) -> Self {
        Self::Answer {
            status,
            body: body.into(),
        }
    }
}

/// A request as the stub received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<Received>>,
    connections: Mutex<u64>,
    stop: AtomicBool,
}

/// The stub; stops when dropped.
#[derive(Debug)]
pub struct StubServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl StubServer {
    /// Starts a stub on `127.0.0.1` (a free port) in `mode`.
    pub fn start(mode: Mode) -> Result<Self, TestkitError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| TestkitError::io("binding the stub's port", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestkitError::io("reading the stub's address", e))?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
            connections: Mutex::new(0),
            stop: AtomicBool::new(false),
        });
        let accept = Arc::clone(&shared);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if accept.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                *lock(&accept.connections) += 1;
                let shared = Arc::clone(&accept);
                thread::spawn(move || serve(conn, &shared));
            }
        });
        Ok(Self { addr, shared })
    }

    /// The stub's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the stub does with the next connections.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared.requests).clone()
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> u64 {
        *lock(&self.shared.connections)
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn serve(mut conn: TcpStream, shared: &Shared) {
    let mode = lock(&shared.mode).clone();
    if mode == Mode::Refuse {
        let _ = conn.shutdown(Shutdown::Both);
        return;
    }
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(received) = read_head(&mut conn) else {
        return;
    };
    lock(&shared.requests).push(received);
    let (status, body) = match mode {
        Mode::Answer { status, body } => (status, body),
        Mode::Fail => (500, "failed".to_owned()),
        Mode::Hang | Mode::Refuse => {
            let until = Instant::now() + Duration::from_secs(60);
            while !shared.stop.load(Ordering::Acquire) && Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 {status} Stub\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
    let _ = conn.flush();
}

/// Reads up to the end of the head (16 KiB at most).
fn read_head(conn: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Received {
        method,
        path,
        headers,
    })
}

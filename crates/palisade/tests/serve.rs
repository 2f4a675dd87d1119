//! `palisade::serve` on real loopback sockets: each attack first, with small
//! configured timeouts so that no test waits the production ones.
#![cfg(all(feature = "serve", feature = "axum"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use http_body::Frame;
use palisade::core::client_ip::PeerAddr;
use palisade::prelude::*;
use palisade::serve::ServeError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(5);

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Fires the shutdown signal; returns when it fired.
    fn shutdown(&mut self) -> Instant {
        self.stop.take().unwrap().send(()).unwrap();
        Instant::now()
    }

    async fn stopped(self) -> Result<(), ServeError> {
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("serve returned")
            .unwrap()
    }
}

/// Serves `app` with `server`'s settings on 127.0.0.1, stopped by `Running::shutdown`.
async fn start(server: impl FnOnce(TcpListener) -> Server, app: Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = server(listener).shutdown_signal(async {
        let _ = stopped.await;
    });
    let task = tokio::spawn(server.serve(app));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response with a `content-length` (what these routes send).
async fn read_response(stream: &mut TcpStream) -> Option<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Response { status, head, body })
}

async fn request(stream: &mut TcpStream, bytes: &[u8]) -> Response {
    stream.write_all(bytes).await.unwrap();
    tokio::time::timeout(LIMIT, read_response(stream))
        .await
        .expect("a response in time")
        .expect("a response")
}

/// Waits until the server closes `stream` (reading and dropping whatever
/// comes), at most `LIMIT`; returns when it did.
async fn closed(stream: &mut TcpStream) -> Instant {
    let mut sink = vec![0u8; 1 << 16];
    tokio::time::timeout(LIMIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection")
}

fn between(elapsed: Duration, low_ms: u64, high_ms: u64) -> bool {
    elapsed >= Duration::from_millis(low_ms) && elapsed <= Duration::from_millis(high_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_head_is_cut_at_the_head_timeout_while_another_client_is_served() {
    let server = start(
        |l| Server::from_listener(l).header_read_timeout(Duration::from_millis(300)),
        hello(),
    )
    .await;

    // The attacker: one byte of a never-ending head every 100 ms.
    let connected = Instant::now();
    let attacker = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = attacker.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Meanwhile a well-behaved client is served on a keep-alive connection.
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..5 {
        let res = request(&mut client, GET).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, b"hello");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut sink = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, read.read(&mut sink))
        .await
        .expect("the attacker is disconnected")
        .unwrap_or(0);
    let elapsed = connected.elapsed();
    assert_eq!(n, 0, "closed without a response");
    assert!(between(elapsed, 290, 1000), "cut after {elapsed:?}");
    trickle.abort();

    // The well-behaved client is still served.
    assert_eq!(request(&mut client, GET).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_head_is_timed_from_its_first_byte_not_from_the_last_response() {
    let server = start(
        |l| {
            Server::from_listener(l)
                .header_read_timeout(Duration::from_millis(300))
                .idle_timeout(Duration::from_secs(5))
        },
        hello(),
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut client, GET).await.status, 200);

    // Idle for longer than the head timeout: still open (idle is 5 s).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(request(&mut client, GET).await.status, 200);

    // The next head trickles: cut 300 ms after its first byte.
    let first_byte = Instant::now();
    let (mut read, mut write) = client.into_split();
    let trickle = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut sink = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, read.read(&mut sink))
        .await
        .expect("disconnected")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let elapsed = first_byte.elapsed();
    assert!(between(elapsed, 290, 1000), "cut after {elapsed:?}");
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_head_timeout() {
    let server = start(
        |l| Server::from_listener(l).header_read_timeout(Duration::from_millis(300)),
        hello(),
    )
    .await;
    let connected = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let elapsed = closed(&mut silent).await - connected;
    assert!(between(elapsed, 290, 1000), "closed after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(
        |l| {
            Server::from_listener(l)
                .idle_timeout(Duration::from_millis(400))
                .header_read_timeout(Duration::from_secs(5))
        },
        hello(),
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let res = request(&mut client, GET).await;
    assert_eq!(res.status, 200);
    assert!(!res.head.contains("connection: close"));
    let answered = Instant::now();
    let elapsed = closed(&mut client).await - answered;
    assert!(between(elapsed, 380, 1500), "closed after {elapsed:?}");
}

/// A response body that never ends; flags when it is dropped.
struct Endless {
    dropped: Option<oneshot::Sender<Instant>>,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 65_536] = [b'x'; 65_536];
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_never_reads_is_cut_after_the_write_progress_timeout() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let dropped_tx = Arc::new(Mutex::new(Some(dropped_tx)));
    let app = Router::new().route(
        "/endless",
        get(move || {
            let dropped = dropped_tx.lock().unwrap().take();
            async move { Body::new(Endless { dropped }) }
        }),
    );
    let server = start(
        |l| Server::from_listener(l).write_progress_timeout(Duration::from_millis(300)),
        app,
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let asked = Instant::now();
    client
        .write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: the socket buffers fill, then writes stall.
    let cut = tokio::time::timeout(LIMIT, dropped_rx)
        .await
        .expect("the response was cut")
        .unwrap();
    let elapsed = cut - asked;
    assert!(between(elapsed, 300, 3000), "cut after {elapsed:?}");
    // What was buffered drains, then the connection ends.
    closed(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_gets_the_whole_response() {
    const SIZE: usize = 8 << 20;
    let app = Router::new().route("/big", get(|| async { vec![b'x'; SIZE] }));
    let server = start(
        |l| Server::from_listener(l).write_progress_timeout(Duration::from_millis(500)),
        app,
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Drain what arrived every 100 ms (well within the timeout).
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    while received < SIZE && started.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        loop {
            match client.try_read(&mut buf) {
                Ok(0) => panic!("cut after {received} bytes"),
                Ok(n) => received += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("cut after {received} bytes: {e}"),
            }
        }
    }
    assert!(received > SIZE, "{received} bytes (head and body)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_pauses_at_the_connection_cap_and_resumes_when_one_closes() {
    let server = start(|l| Server::from_listener(l).max_connections(2), hello()).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut first, GET).await.status, 200);
    assert_eq!(request(&mut second, GET).await.status, 200);

    // The third connects (the kernel's backlog) but is not accepted: no answer.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(GET).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(400), read_response(&mut third)).await;
    assert!(early.is_err(), "answered over the cap: {early:?}");

    // One of the first two closes: the third is accepted and answered.
    drop(first);
    let res = tokio::time::timeout(LIMIT, read_response(&mut third))
        .await
        .expect("answered once a slot is free")
        .unwrap();
    assert_eq!(res.status, 200);

    // Nothing ended the server: it keeps serving within the cap.
    drop(second);
    drop(third);
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut fourth, GET).await.status, 200);
    assert!(!server.task.is_finished());
}

async fn peer_of(
    ConnectInfo(info): ConnectInfo<SocketAddr>,
    axum::Extension(PeerAddr(peer)): axum::Extension<PeerAddr>,
) -> String {
    format!("{info} {peer}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_the_peer_address_over_http1_and_http2() {
    let app = Router::new().route("/peer", get(peer_of));
    let server = start(Server::from_listener, app).await;

    let mut h1 = TcpStream::connect(server.addr).await.unwrap();
    let local = h1.local_addr().unwrap();
    for _ in 0..2 {
        let res = request(&mut h1, b"GET /peer HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(res.status, 200);
        assert_eq!(
            String::from_utf8(res.body).unwrap(),
            format!("{local} {local}")
        );
    }

    // HTTP/2 with prior knowledge.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/peer", server.addr))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, format!("{local} {local}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_stack_needs_no_connect_info_plumbing() {
    // `ClientIpLayer` answers 500 without a peer address; here there always is one.
    let app = SecureStack::api()
        .build()
        .unwrap()
        .apply(Router::new().route("/health", get(|| async { "ok" })));
    let server = start(Server::from_listener, app).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let res = request(&mut client, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert!(res.head.contains("x-request-id:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let server = start(
        |l| Server::from_listener(l).idle_timeout(Duration::from_millis(400)),
        hello(),
    )
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/", server.addr))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    drop(
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap(),
    );
    let answered = Instant::now();
    tokio::time::timeout(LIMIT, conn)
        .await
        .expect("the server closed the HTTP/2 connection")
        .unwrap()
        .ok();
    let elapsed = answered.elapsed();
    assert!(between(elapsed, 380, 2500), "closed after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_header_limit_is_431() {
    let server = start(Server::from_listener, hello()).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let res = request(&mut client, big.as_bytes()).await;
    assert_eq!(res.status, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_runs_the_hook_first_finishes_in_flight_requests_and_closes_the_rest() {
    let (started_tx, mut started_rx) = mpsc::channel::<()>(1);
    let app = Router::new().route("/", get(|| async { "hello" })).route(
        "/slow",
        get(move || {
            let started = started_tx.clone();
            async move {
                started.send(()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(600)).await;
                "done"
            }
        }),
    );
    // The hook records whether the listener still accepted when it ran.
    let hook_saw_listener = Arc::new(Mutex::new(None::<bool>));
    let hook_slot = Arc::clone(&hook_saw_listener);
    let addr_slot = Arc::new(Mutex::new(None::<SocketAddr>));
    let hook_addr = Arc::clone(&addr_slot);
    let mut server = start(
        move |l| {
            *hook_addr.lock().unwrap() = Some(l.local_addr().unwrap());
            Server::from_listener(l)
                .drain_timeout(Duration::from_secs(3))
                .on_shutdown(move || {
                    let addr = hook_addr.lock().unwrap().unwrap();
                    let open = std::net::TcpStream::connect(addr).is_ok();
                    *hook_slot.lock().unwrap() = Some(open);
                })
        },
        app,
    )
    .await;

    // In flight: a slow request.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Half a request head.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Idle after a request.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut idle, GET).await.status, 200);
    tokio::time::timeout(LIMIT, started_rx.recv())
        .await
        .unwrap()
        .unwrap();

    let signalled = server.shutdown();
    let idle_closed = closed(&mut idle).await - signalled;
    assert!(idle_closed < Duration::from_millis(500), "{idle_closed:?}");

    let res = tokio::time::timeout(LIMIT, read_response(&mut slow))
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"done");
    assert!(res.head.contains("connection: close"));
    closed(&mut slow).await;

    let half_closed = closed(&mut half).await - signalled;
    assert!(half_closed < Duration::from_millis(1500), "{half_closed:?}");

    let addr = server.addr;
    server.stopped().await.unwrap();
    let returned = signalled.elapsed();
    assert!(between(returned, 550, 3000), "returned after {returned:?}");
    assert_eq!(
        *hook_saw_listener.lock().unwrap(),
        Some(true),
        "the hook ran, before the listener closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_finishes_is_cut_at_the_drain_deadline() {
    let (started_tx, mut started_rx) = mpsc::channel::<()>(1);
    let app = Router::new().route(
        "/hang",
        get(move || {
            let started = started_tx.clone();
            async move {
                started.send(()).await.unwrap();
                std::future::pending::<()>().await;
            }
        }),
    );
    let mut server = start(
        |l| Server::from_listener(l).drain_timeout(Duration::from_millis(300)),
        app,
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, started_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let signalled = server.shutdown();
    server.stopped().await.unwrap();
    let returned = signalled.elapsed();
    assert!(between(returned, 290, 1500), "returned after {returned:?}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, client.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "no response, just closed");
}

#[tokio::test]
async fn invalid_settings_are_config_errors_naming_the_setting() {
    type Setter = fn(Server) -> Server;
    let cases: [(Setter, &str); 9] = [
        (|s| s.max_connections(0), "serve.max_connections"),
        (
            |s| s.header_read_timeout(Duration::ZERO),
            "serve.header_read_timeout",
        ),
        (|s| s.idle_timeout(Duration::ZERO), "serve.idle_timeout"),
        (
            |s| s.write_progress_timeout(Duration::ZERO),
            "serve.write_progress_timeout",
        ),
        (|s| s.drain_timeout(Duration::ZERO), "serve.drain_timeout"),
        (
            |s| s.idle_timeout(Duration::from_secs(7 * 86_400)),
            "serve.idle_timeout",
        ),
        (|s| s.max_header_bytes(1024), "serve.max_header_bytes"),
        (|s| s.max_header_bytes(1 << 20), "serve.max_header_bytes"),
        (
            |s| s.http2_max_concurrent_streams(0),
            "serve.http2_max_concurrent_streams",
        ),
    ];
    for (set, setting) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = set(Server::from_listener(listener));
        assert_eq!(server.check().unwrap_err().setting(), setting);
        let err = server.serve(hello()).await.unwrap_err();
        assert_eq!(
            err.config().map(ConfigError::setting),
            Some(setting),
            "{err}"
        );
        assert!(err.to_string().contains(setting));
    }
    assert!(Server::bind(([127, 0, 0, 1], 0)).check().is_ok());
}

#[tokio::test]
async fn an_address_in_use_is_a_bind_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Server::bind(taken.local_addr().unwrap())
        .shutdown_signal(async {})
        .serve(hello())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn palisade_serve_is_one_line() {
    // The function form, with the default signal (never fired here).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(palisade::serve(listener, hello()));
    let mut client = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut client, GET).await.status, 200);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

//! Serving the reference backend, black-box: every request counts against
//! the per-IP limit (unknown paths, wrong methods, preflights), the trust
//! boundary of `/metrics`, wide trusted-proxy networks in `prod`, and the
//! internal metrics listener.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::net::{SocketAddr, TcpListener};

use palisade_security_tests::http::Request;
use palisade_security_tests::{Backend, SHARED_SECRET, most_allowed, run_to_exit};

/// Quick requests from one address until the first 429: the burst of 50 is
/// served (with the status of the route), then no more than the refill over
/// the time it took (30/s) — whatever the path or method.
#[test]
fn unknown_paths_wrong_methods_and_preflights_count_against_the_per_ip_limit() {
    const BURST: u32 = 50;
    let interval = std::time::Duration::from_nanos(1_000_000_000 / 30);
    for (method, path, expected) in [
        ("GET", "/nope", 404),
        ("DELETE", "/health", 405),
        ("OPTIONS", "/auth/login", 403),
    ] {
        let backend = Backend::start();
        let mut statuses = Vec::new();
        let start = std::time::Instant::now();
        while !statuses.contains(&429) && statuses.len() < 1000 {
            let mut req = Request::new(method, path);
            if method == "OPTIONS" {
                req = req
                    .header("origin", "https://elsewhere.example")
                    .header("access-control-request-method", "POST");
            }
            statuses.push(req.send(backend.addr).unwrap().status);
        }
        let elapsed = start.elapsed();
        let (last, served) = statuses.split_last().unwrap();
        assert_eq!(*last, 429, "{method} {path}: never refused");
        assert!(
            served.iter().all(|s| *s == expected),
            "{method} {path}: {statuses:?}"
        );
        let most = most_allowed(BURST, interval, elapsed);
        assert!(
            served.len() as u64 >= u64::from(BURST) && served.len() as u64 <= most,
            "{method} {path}: {} served in {elapsed:?} (at most {most})",
            served.len()
        );
    }
}

#[test]
fn metrics_are_refused_to_a_loopback_peer_that_forwards_a_client() {
    let backend = Backend::start();
    assert_eq!(
        Request::get("/metrics").send(backend.addr).unwrap().status,
        200,
        "a direct local scraper is served"
    );
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let value = if header == "forwarded" {
            "for=198.51.100.7"
        } else {
            "198.51.100.7"
        };
        let res = Request::get("/metrics")
            .header(header, value)
            .send(backend.addr)
            .unwrap();
        assert_eq!(res.status, 403, "{header}: a same-host proxy's client");
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
    }
}

#[test]
fn metrics_are_refused_to_a_trusted_loopback_proxy_and_in_prod_without_a_token() {
    let behind_proxy = Backend::start_with(&[("APP_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let res = Request::get("/metrics").send(behind_proxy.addr).unwrap();
    assert_eq!(res.status, 403, "the peer is a proxy, not a local scraper");

    let prod = Backend::start_with(&[("APP_PROFILE", "prod"), ("APP_JWT_SECRET", SHARED_SECRET)]);
    assert_eq!(
        Request::get("/metrics").send(prod.addr).unwrap().status,
        403
    );
    assert_eq!(Request::get("/health").send(prod.addr).unwrap().status, 200);
}

#[test]
fn prod_refuses_trusted_proxy_networks_wider_than_a_slash_8() {
    for wide in ["0.0.0.0/0", "0.0.0.0/0,::/0", "::/0"] {
        let (status, _, stderr) = run_to_exit(&[
            ("APP_PROFILE", "prod"),
            ("APP_JWT_SECRET", SHARED_SECRET),
            ("APP_TRUSTED_PROXIES", wide),
        ]);
        assert_eq!(status.code(), Some(78), "{wide}: {stderr}");
        assert!(
            stderr.contains("APP_TRUSTED_PROXIES: must not contain"),
            "{stderr}"
        );
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn the_internal_metrics_listener_serves_metrics_and_the_main_one_answers_404() {
    let internal = free_port();
    let backend = Backend::start_with(&[
        ("APP_METRICS_LISTEN", internal.to_string().as_str()),
        ("APP_TRUSTED_PROXIES", "127.0.0.1/32"),
    ]);
    let main = Request::get("/metrics").send(backend.addr).unwrap();
    assert_eq!(main.status, 404);
    assert_eq!(
        main.header("content-type"),
        Some("application/problem+json")
    );
    // Served on the internal address, forwarding headers or not.
    let res = Request::get("/metrics")
        .header("x-forwarded-for", "198.51.100.7")
        .send(internal)
        .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("# TYPE"), "{}", res.text());
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    // Nothing else lives there.
    assert_eq!(Request::get("/health").send(internal).unwrap().status, 404);
}

/// Raises this process's open-file limit (inherited by the backend it
/// starts) so that thousands of test connections fit on any machine.
fn raise_open_files(wanted: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if limit.current.is_some_and(|soft| soft < wanted) {
        let mut raised = limit;
        raised.current = Some(wanted.min(hard));
        setrlimit(Resource::Nofile, raised).unwrap();
    }
}

fn health_ok(addr: SocketAddr) -> bool {
    Request::get("/health")
        .send(addr)
        .is_ok_and(|r| r.status == 200)
}

/// Slowloris: a head sent one line a second is cut by the 10 s head
/// deadline, while other clients are served all along.
#[test]
fn a_request_head_sent_one_line_a_second_is_cut_within_twelve_seconds() {
    use std::io::{ErrorKind, Read, Write};
    use std::time::{Duration, Instant};
    let backend = Backend::start();
    let mut slow = palisade_security_tests::http::connect(backend.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut closed_after = None;
    // When the connection was last seen open (a read that timed out).
    let mut open_at = Duration::ZERO;
    let mut served = 0;
    while start.elapsed() < Duration::from_secs(20) {
        // One more header line a second, as long as the server takes them.
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed_after = Some(start.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                open_at = start.elapsed();
            }
            _ => {}
        }
        assert!(
            health_ok(backend.addr),
            "another client must be served meanwhile"
        );
        served += 1;
        std::thread::sleep(Duration::from_millis(800));
    }
    let closed_after = closed_after.expect("the slow connection was never closed");
    println!(
        "slowloris connection last seen open at {open_at:?}, seen closed at {closed_after:?}; \
         {served} other requests served"
    );
    // Bounds a slow test machine cannot break: probes late by scheduling
    // only see the cut later, never earlier, and never see it open longer.
    assert!(open_at < Duration::from_secs(12), "open at {open_at:?}");
    assert!(
        closed_after >= Duration::from_secs(9),
        "cut too early: {closed_after:?}"
    );
}

#[test]
fn two_thousand_idle_connections_do_not_stop_new_clients() {
    use std::time::{Duration, Instant};
    raise_open_files(8192);
    let backend = Backend::start();
    let idle: Vec<_> = (0..2000)
        .map(|_| std::net::TcpStream::connect(backend.addr).unwrap())
        .collect();
    let start = Instant::now();
    for _ in 0..20 {
        assert!(health_ok(backend.addr));
    }
    let took = start.elapsed();
    println!("20 requests beside 2,000 idle connections: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(idle);
}

#[test]
fn shutdown_with_a_half_sent_request_head_exits_zero_within_the_drain_deadline() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let backend = Backend::start();
    let mut hung = palisade_security_tests::http::connect(backend.addr).unwrap();
    hung.write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    // The server has read the bytes; now the operator stops it.
    assert!(health_ok(backend.addr));
    let start = Instant::now();
    let (status, logs) = backend.stop("TERM");
    let took = start.elapsed();
    println!("stopped in {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
    drop(hung);
}

/// Issue 18 item 11: a drain test needs a request in flight. An upload whose
/// body is still arriving when SIGTERM comes is finished and answered 201,
/// then the process exits 0.
#[test]
fn sigterm_lets_an_upload_in_flight_finish_then_exits_zero() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let backend = Backend::start();
    let creds = serde_json::json!({"email": "drain@example.com", "password": "violet quartz harbor timber"})
        .to_string();
    let send = |path: &str| {
        Request::post(path)
            .header("content-type", "application/json")
            .body(creds.clone())
            .send(backend.addr)
            .unwrap()
    };
    assert_eq!(send("/auth/register").status, 201);
    let login = send("/auth/login");
    let token = login.json().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut upload = palisade_security_tests::http::connect(backend.addr).unwrap();
    upload
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        upload,
        "PUT /files/drain.txt HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: text/plain\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhello"
    )
    .unwrap();
    // The handler is reading the body when the operator stops the service.
    std::thread::sleep(Duration::from_millis(300));
    backend.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    upload.write_all(b"world").unwrap();
    let mut response = String::new();
    let _ = upload.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let (status, logs) = backend.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
}

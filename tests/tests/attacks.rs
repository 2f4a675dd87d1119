//! Hostile input against the reference backend binary: malformed requests,
//! oversized heads, header injection attempts, a flood of concurrent
//! connections. None may crash the process or produce a 5xx; the server
//! keeps serving. (Slow heads and idle connections: `serving.rs`.)
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use std::io::Write;

use palisade_security_tests::Backend;
use palisade_security_tests::http::{self, Request};

/// Raw request heads a scanner or an attacker sends.
fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET /health HTTP/1.0\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /health HTTP/9.9\r\nhost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\nx-forwarded-for: \xff\xfe\r\nconnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\nforwarded: for=\"unterminated\r\nconnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 1.1.1.1, 999.1.1.1, [::1\r\nconnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\nx-request-id: a\r\n b\r\nconnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\norigin: null\r\nsec-fetch-site: cross-site\r\nconnection: close\r\n\r\n",
        b"POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        b"POST /health HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        b"POST /health HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n",
        b"POST /health HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n",
        b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /health%00 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /\xc0\xae\xc0\xae/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET http://evil.example/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\n\r\n",
        b"TRACE /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"OPTIONS /health HTTP/1.1\r\nhost: x\r\norigin: https://evil.example\r\naccess-control-request-method: DELETE\r\nconnection: close\r\n\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    // A head far beyond any sane size.
    let mut big = b"GET /health HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..2_000 {
        big.extend_from_slice(format!("x-filler-{i}: {}\r\n", "a".repeat(64)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    c.push(big);
    let mut long_xff =
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-forwarded-for: ".to_vec();
    long_xff.extend_from_slice("1.2.3.4, ".repeat(1_000).as_bytes());
    long_xff.extend_from_slice(b"\r\n\r\n");
    c.push(long_xff);
    c
}

#[test]
fn malformed_requests_never_yield_5xx_or_crash() {
    let mut backend = Backend::start();
    for (i, payload) in corpus().iter().enumerate() {
        match http::raw(backend.addr, payload) {
            Ok(res) => assert!(
                res.status < 500,
                "payload {i}: {} {}",
                res.status,
                res.text()
            ),
            // The server may refuse to answer garbage at all (hyper closes).
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "payload {i}: {e}"
            ),
        }
        assert!(backend.is_running(), "payload {i} killed the server");
    }
    assert_eq!(
        Request::get("/health").send(backend.addr).unwrap().status,
        200
    );
}

#[test]
fn cross_site_state_changing_requests_are_refused() {
    let backend = Backend::start();
    let res = Request::post("/health")
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body("x")
        .send(backend.addr)
        .unwrap();
    assert_eq!(res.status, 403);
    assert!(
        res.json().unwrap()["type"]
            .as_str()
            .unwrap()
            .ends_with("cross-origin-denied")
    );
}

/// 400 connections open at once, each with a request sent before any
/// response is read: every one is answered (served, or refused by the
/// per-IP limits: burst 50, 20 in flight), none dropped, none a 5xx, and the
/// process keeps serving.
#[test]
fn four_hundred_concurrent_connections_each_get_an_answer() {
    let mut backend = Backend::start();
    let addr = backend.addr;
    let mut streams: Vec<_> = (0..400).map(|_| http::connect(addr).unwrap()).collect();
    let request = Request::get("/health").to_bytes(addr);
    for s in &mut streams {
        s.write_all(&request).unwrap();
    }
    let statuses: Vec<u16> = streams
        .iter_mut()
        .map(|s| http::read_response(s).unwrap().status)
        .collect();
    assert_eq!(statuses.len(), 400);
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 429)),
        "{statuses:?}"
    );
    let ok = statuses.iter().filter(|s| **s == 200).count();
    println!("{ok} of 400 concurrent requests served, the rest refused 429");
    assert!(ok >= 1, "none served");
    assert!(backend.is_running());
    let after = Request::get("/health").send(addr).unwrap().status;
    assert!(matches!(after, 200 | 429), "{after}");
}

//! The secure stack on a real socket: what hyper and the layers do together
//! with bytes a well-behaved client would never send.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::post;
use palisade::prelude::*;
use palisade_testkit::http::{self, Request};

/// Serves the stack with a 1 KiB body limit on a runtime of its own thread.
fn serve() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = SecureStack::api()
                .body_limit(1024)
                .build()
                .unwrap()
                .apply(Router::new().route("/echo", post(|body: String| async move { body })));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn chunked_body_over_the_cap_is_413_without_reading_the_rest() {
    let addr = serve();
    let mut stream = http::connect(addr).unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    // 1.5 KiB in chunks, and the body never ends: the server must not wait for it.
    for _ in 0..3 {
        stream.write_all(&http::chunk(&[b'a'; 512])).unwrap();
    }
    let res = http::read_response(&mut stream).unwrap();
    assert_eq!(res.status, 413);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn declared_length_over_the_cap_is_413_before_any_body_byte() {
    let addr = serve();
    let mut stream = http::connect(addr).unwrap();
    // Headers only: the 1 MB body is never sent.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        .unwrap();
    let res = http::read_response(&mut stream).unwrap();
    assert_eq!(res.status, 413);
}

#[test]
fn body_under_the_cap_is_served() {
    let addr = serve();
    let res = Request::post("/echo")
        .body(vec![b'b'; 1024])
        .send(addr)
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), 1024);
}

//! A handler's panic inside the secure stack, with logging set up like a
//! service: the panic's JSON log lines carry the request's id. This file
//! holds one test: the subscriber and the panic hook are process-wide.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use palisade::core::client_ip::PeerAddr;
use palisade::prelude::*;
use palisade::telemetry::LogConfig;
use tower::ServiceExt;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn boom() -> &'static str {
    panic!("handler bug")
}

/// Issue 18 item 15: the hook's `palisade::panic` line and the stack's
/// "handler panicked" line both name the request that panicked, so the 500
/// the client got (its `request_id`) leads to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panic_log_lines_carry_the_request_id() {
    let sink = Sink::default();
    let guard = palisade::telemetry::init_with_writer(&LogConfig::default(), sink.clone()).unwrap();
    let app = SecureStack::api()
        .build()
        .unwrap()
        .apply(Router::new().route("/boom", get(boom)));
    let mut req = Request::get("/boom")
        .header("x-request-id", "panic-rid-18")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr("192.0.2.1:4444".parse().unwrap()));
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-request-id"], "panic-rid-18");
    drop(guard); // flushes

    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hook = lines
        .iter()
        .find(|l| l["target"] == "palisade::panic")
        .unwrap_or_else(|| panic!("no line of the panic hook:\n{text}"));
    let caught = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("handler panicked"))
        })
        .unwrap_or_else(|| panic!("no line of the panic catcher:\n{text}"));
    for line in [hook, caught] {
        assert_eq!(line["request_id"], "panic-rid-18", "{line}");
    }
}

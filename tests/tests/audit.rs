//! `palisade-audit`, the built binary, against the reference backend (every
//! check, login and files included: exit 0) and against a bare axum
//! hello-world (exit 1, each missing protection named).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)] // test code: a failed step is a failed test

use std::net::SocketAddr;
use std::process::{Command, Output};

use palisade_security_tests::{Backend, SHARED_SECRET, audit_binary};
use palisade_testkit::audit::Check;

fn audit(args: &[&str]) -> Output {
    Command::new(audit_binary())
        .args(args)
        .env_remove("PALISADE_AUDIT_PASSWORD")
        .env_remove("PALISADE_AUDIT_TOKEN")
        .output()
        .expect("palisade-audit runs")
}

/// The table row of `check`, e.g. `request-id  FAIL ...`.
fn row<'a>(stdout: &'a str, check: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(check))
        .unwrap_or_else(|| panic!("no row for {check} in:\n{stdout}"))
}

#[test]
fn the_reference_backend_passes_every_check() {
    let backend = Backend::start_with(&[("APP_JWT_SECRET", SHARED_SECRET)]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, SHARED_SECRET).unwrap();
    let url = format!("http://{}", backend.addr);
    let out = audit(&[
        &url,
        "--login",
        "/auth/login",
        "--register",
        "/auth/register",
        "--files",
        "/files",
        "--protected",
        "/me",
        "--jwt-secret-file",
        key.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in Check::ALL {
        let line = row(&stdout, check.name());
        assert!(line.contains(" pass "), "{line}");
    }
    assert!(
        stdout.contains("16 passed, 0 failed, 0 skipped"),
        "{stdout}"
    );
    // Nothing the audit did broke the service.
    assert!(
        backend
            .logs()
            .iter()
            .all(|l| !l.contains("\"level\":\"ERROR\"")),
        "{:?}",
        backend.logs()
    );
}

/// A bare axum hello-world on 127.0.0.1:0, served on its own thread.
fn hello_world() -> SocketAddr {
    serve(axum::Router::new().route("/", axum::routing::get(|| async { "hello" })))
}

fn serve(app: axum::Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

#[test]
fn a_bare_axum_service_fails_with_each_missing_protection_named() {
    let addr = hello_world();
    let url = format!("http://{addr}");
    // The slow-head check waits out its bound; the rest tells enough.
    let out = audit(&[&url, "--skip", "slowloris"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for check in [
        "security-headers",
        "request-id",
        "rate-limit",
        "body-limit",
        "problem-json",
    ] {
        assert!(row(&stdout, check).contains("FAIL"), "{check}:\n{stdout}");
    }
    // The findings name what is missing, and say how to fix it.
    for needle in [
        "a Content-Security-Policy header",
        "Strict-Transport-Security with max-age",
        "a generated X-Request-Id on the answer",
        "none refused",
        "limit requests per client IP",
        "expected: 413",
    ] {
        assert!(stdout.contains(needle), "`{needle}` not in:\n{stdout}");
    }
    // The same run as JSON, for machines.
    let out = audit(&[&url, "--json", "--only", "request-id,no-banner"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["checks"][0]["check"], "no-banner");
    assert_eq!(json["checks"][0]["status"], "pass");
    assert_eq!(json["checks"][1]["status"], "fail");
    assert!(
        json["checks"][1]["findings"][0]["fix"]
            .as_str()
            .unwrap()
            .contains("X-Request-Id")
    );
}

#[test]
fn usage_errors_exit_2_without_sending_anything() {
    for args in [
        &["https://127.0.0.1:1"][..],
        &["ftp://127.0.0.1:1"],
        &["http://127.0.0.1:1", "--only", "no-such-check"],
        &["http://127.0.0.1:1", "--only", "file-traversal"],
        &["http://127.0.0.1:1", "--user", "a@example.com"],
        &[],
    ] {
        let out = audit(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn redirects_are_reported_never_followed() {
    // Another address the service points every client to.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let location = format!("http://{}/", elsewhere.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move { (axum::http::StatusCode::FOUND, [("location", location)]) }
    });
    let addr = serve(app);
    let out = audit(&[&format!("http://{addr}"), "--skip", "slowloris,rate-limit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("302"));
    // Nothing ever connected to the other address.
    assert_eq!(
        elsewhere.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
}

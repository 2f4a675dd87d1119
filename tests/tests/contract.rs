//! The reference backend against its contract,
//! `examples/reference-backend/API.md`: start-up, the headers of every
//! response, problem documents, readiness, shutdown.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use palisade_security_tests::http::Request;
use palisade_security_tests::{Backend, run_to_exit};

const CONTRACT_HEADERS: [(&str, &str); 9] = [
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
    ("cache-control", "no-store"),
];

fn assert_contract_headers(res: &palisade_security_tests::http::Response) {
    for (name, value) in CONTRACT_HEADERS {
        assert_eq!(
            res.header(name),
            Some(value),
            "{name} on {}: {:?}",
            res.status,
            res.headers
        );
    }
    assert_eq!(res.header("server"), None);
    assert_eq!(res.header("x-powered-by"), None);
}

#[test]
fn health_with_no_configuration() {
    let backend = Backend::start();
    let res = Request::get("/health").send(backend.addr).unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.json().unwrap(), serde_json::json!({"status": "ok"}));
    assert_contract_headers(&res);
    // The JSON log line of the contract.
    let listening = backend
        .logs()
        .into_iter()
        .find(|l| l.contains("\"listening\""))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&listening).unwrap();
    for key in ["timestamp", "level", "target", "message", "addr"] {
        assert!(line.get(key).is_some(), "{key} missing in {listening}");
    }
    assert_eq!(line["addr"], backend.addr.to_string());
    // SQLite was created on first run.
    assert!(backend.data_dir().join("app.db").exists());
}

#[test]
fn errors_are_problem_documents_with_headers() {
    let backend = Backend::start();
    let cases = [
        (Request::get("/does-not-exist"), 404, "not-found"),
        (
            Request::post("/health").body("{}"),
            405,
            "method-not-allowed",
        ),
        (Request::new("DELETE", "/ready"), 405, "method-not-allowed"),
        (Request::get("/health/../../etc/passwd"), 404, "not-found"),
    ];
    for (req, status, kind) in cases {
        let res = req.send(backend.addr).unwrap();
        assert_eq!(res.status, status);
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
        let body = res.json().unwrap();
        assert_eq!(body["status"], status);
        assert!(body["type"].as_str().unwrap().ends_with(kind), "{body}");
        assert_contract_headers(&res);
    }
    let res = Request::post("/health").send(backend.addr).unwrap();
    assert!(res.header("allow").unwrap().contains("GET"));
}

/// Every 403 the backend gives (a cross-site state-changing request, a
/// denied preflight with and without CORS origins, `/metrics` refused to a
/// proxied client) carries the contract: the security headers, a problem
/// document and the request id, in the header and in the body.
#[test]
fn every_403_carries_the_contract_headers_a_problem_and_the_request_id() {
    let plain = Backend::start();
    let cors = Backend::start_with(&[("APP_CORS_ORIGINS", "https://app.example.com")]);
    let denied_preflight = || {
        Request::new("OPTIONS", "/auth/login")
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
    };
    let cases = [
        (
            "cross-site POST",
            plain.addr,
            Request::post("/auth/login")
                .header("origin", "https://evil.example")
                .header("sec-fetch-site", "cross-site")
                .header("content-type", "application/json")
                .body("{}"),
            "cross-origin-denied",
        ),
        (
            "preflight without CORS",
            plain.addr,
            denied_preflight(),
            "cors-denied",
        ),
        (
            "preflight from another origin",
            cors.addr,
            denied_preflight(),
            "cors-denied",
        ),
        (
            "metrics for a proxied client",
            plain.addr,
            Request::get("/metrics").header("x-forwarded-for", "198.51.100.7"),
            "forbidden",
        ),
    ];
    for (i, (what, addr, req, kind)) in cases.into_iter().enumerate() {
        let id = format!("forbidden-{i}");
        let res = req.header("x-request-id", &id).send(addr).unwrap();
        assert_eq!(res.status, 403, "{what}: {}", res.text());
        assert_contract_headers(&res);
        assert_eq!(
            res.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        assert_eq!(res.header("x-request-id"), Some(id.as_str()), "{what}");
        let body = res.json().unwrap();
        assert_eq!(body["status"], 403, "{what}: {body}");
        assert_eq!(body["request_id"], id.as_str(), "{what}: {body}");
        assert_eq!(
            body["type"],
            format!("urn:palisade:problem:{kind}"),
            "{what}: {body}"
        );
        assert!(
            res.headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{what}: {:?}",
            res.headers
        );
    }
}

#[test]
fn ready_checks_the_database() {
    let backend = Backend::start();
    let res = Request::get("/ready").send(backend.addr).unwrap();
    assert_eq!(res.status, 200);
    let body = res.json().unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert!(body["checks"]["database"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_contract_headers(&res);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    for signal in ["TERM", "INT"] {
        let backend = Backend::start();
        assert_eq!(
            Request::get("/health").send(backend.addr).unwrap().status,
            200
        );
        let (status, logs) = backend.stop(signal);
        assert!(status.success(), "{signal}: {status:?}");
        assert!(logs.iter().any(|l| l.contains("shutting down")), "{logs:?}");
        assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
    }
}

#[test]
fn cors_is_off_without_origins_and_exact_with_them() {
    let preflight = |origin: &str| {
        Request::new("OPTIONS", "/health")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
    };
    let backend = Backend::start();
    let res = preflight("https://app.example.com")
        .send(backend.addr)
        .unwrap();
    assert_eq!(res.status, 403);
    assert!(
        res.headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-"))
    );
    let res = Request::get("/health")
        .header("origin", "https://app.example.com")
        .send(backend.addr)
        .unwrap();
    assert!(
        res.headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-"))
    );

    let backend = Backend::start_with(&[("APP_CORS_ORIGINS", "https://app.example.com")]);
    let res = preflight("https://app.example.com")
        .send(backend.addr)
        .unwrap();
    assert_eq!(res.status, 204);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_contract_headers(&res);
    let res = preflight("https://evil.example")
        .send(backend.addr)
        .unwrap();
    assert_eq!(res.status, 403);
    assert_eq!(res.header("access-control-allow-origin"), None);
}

#[test]
fn invalid_configuration_exits_78_naming_every_problem() {
    let (status, stdout, stderr) = run_to_exit(&[
        ("APP_LISTEN", "not-an-address-xyz"),
        ("APP_CORS_ORIGINS", "*"),
        ("APP_TRUSTED_PROXIES", "10.0.0.0/8,proxy-host-xyz"),
    ]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    for setting in ["APP_LISTEN", "APP_CORS_ORIGINS", "APP_TRUSTED_PROXIES"] {
        assert!(stderr.contains(setting), "{setting} not named in: {stderr}");
    }
    assert!(
        !stderr.contains("xyz") && !stdout.contains("xyz"),
        "values echoed: {stderr}"
    );
}

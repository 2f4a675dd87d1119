//! Request ids and logs of the reference backend binary: the contract's
//! "Every response" and "Logs" sections.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use palisade_security_tests::Backend;
use palisade_security_tests::http::Request;

fn json_lines(backend: &Backend) -> Vec<serde_json::Value> {
    backend
        .logs()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn request_id_is_echoed_and_on_the_access_line() {
    let backend = Backend::start();
    let res = Request::get("/health")
        .header("x-request-id", "bb-test-42")
        .send(backend.addr)
        .unwrap();
    assert_eq!(res.header("x-request-id"), Some("bb-test-42"));
    let access = backend.wait_for_log(|l| l["request_id"] == "bb-test-42");
    assert_eq!(access["target"], "palisade::access");
    assert_eq!(access["message"], "request");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["route"], "/health");
    assert_eq!(access["status"], 200);
    assert_eq!(access["client_ip"], "127.0.0.1");
    assert!(access["latency_ms"].as_f64().unwrap() >= 0.0);
    for key in ["timestamp", "level", "target", "message"] {
        assert!(access.get(key).is_some(), "{key}");
    }
    // Every line the backend wrote is one JSON object with the contract's fields.
    for line in json_lines(&backend) {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }
}

#[test]
fn every_line_of_a_request_has_its_id_even_from_spawned_tasks() {
    // Readiness checks run in tasks of their own and log at DEBUG.
    let backend = Backend::start_with(&[("RUST_LOG", "info,palisade_telemetry=debug")]);
    // The maintenance job runs once at start, outside any request: its line
    // may land anywhere until it has run (on a loaded CI run it fell inside
    // the request's lines). After it, nothing runs in the background for an
    // hour.
    backend.wait_for_log(|l| l["message"] == "expired rows pruned");
    let res = Request::get("/ready")
        .header("x-request-id", "ready-probe-7")
        .send(backend.addr)
        .unwrap();
    assert_eq!(res.status, 200);
    backend
        .wait_for_log(|l| l["request_id"] == "ready-probe-7" && l["target"] == "palisade::access");
    let mine: Vec<_> = json_lines(&backend)
        .into_iter()
        .filter(|l| l["request_id"] == "ready-probe-7")
        .collect();
    let messages: Vec<_> = mine
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        messages.contains(&"readiness check".to_owned()),
        "{messages:?}"
    );
    assert!(messages.contains(&"request".to_owned()), "{messages:?}");
    // No line between the request's first and last lacks the id.
    let lines = json_lines(&backend);
    let first = lines
        .iter()
        .position(|l| l["request_id"] == "ready-probe-7")
        .unwrap();
    let last = lines
        .iter()
        .rposition(|l| l["request_id"] == "ready-probe-7")
        .unwrap();
    for l in &lines[first..=last] {
        assert_eq!(l["request_id"], "ready-probe-7", "{l}");
    }
}

#[test]
fn invalid_ids_are_replaced_and_rejections_carry_one() {
    let backend = Backend::start();
    for bad in ["x\"}{\"level\":\"ERROR", &"a".repeat(129), "has space"] {
        let res = Request::get("/health")
            .header("x-request-id", bad)
            .send(backend.addr)
            .unwrap();
        let id = res.header("x-request-id").unwrap();
        assert_eq!(id.len(), 36, "a UUIDv7 replaces {bad:?}: {id}");
        assert_ne!(id, bad);
    }
    // Rejections produced by inner layers have an id too: 404, 405, 403.
    for req in [
        Request::get("/nope"),
        Request::post("/health").body("x"),
        Request::post("/health")
            .header("sec-fetch-site", "cross-site")
            .header("origin", "https://evil.example")
            .body("x"),
    ] {
        let res = req.send(backend.addr).unwrap();
        let id = res.header("x-request-id").unwrap().to_owned();
        assert_eq!(
            res.json().unwrap()["request_id"],
            id.as_str(),
            "status {}",
            res.status
        );
        let access = backend
            .wait_for_log(|l| l["request_id"] == id.as_str() && l["target"] == "palisade::access");
        assert_eq!(access["status"], res.status);
    }
    // The cross-origin refusal was also logged, with the request id.
    assert!(
        json_lines(&backend)
            .iter()
            .any(|l| l["reason"] == "cross_origin" && l["request_id"].is_string())
    );
    let unmatched = backend.wait_for_log(|l| l["status"] == 404);
    assert_eq!(unmatched["route"], "<unmatched>");
}

#[test]
fn traceparent_becomes_the_request_id() {
    let backend = Backend::start();
    let res = Request::get("/health")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send(backend.addr)
        .unwrap();
    assert_eq!(
        res.header("x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[test]
fn credentials_never_reach_a_log_line() {
    let backend = Backend::start();
    let secrets = [
        "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig-4f2a",
        "Basic cHJveHk6c2VjcmV0LXByb3h5",
        "session=sess-7d1c9e",
        "key-3b8f0a6e",
        "qtok-91a7",
        "qpass-55e1",
        "qsecret-c0de",
        "qkey-77f3",
    ];
    let res = Request::get(&format!(
        "/health?token={}&password={}&secret={}&key={}",
        secrets[4], secrets[5], secrets[6], secrets[7]
    ))
    .header("authorization", secrets[0])
    .header("proxy-authorization", secrets[1])
    .header("cookie", secrets[2])
    .header("x-api-key", secrets[3])
    .header("x-request-id", "redaction-check")
    .send(backend.addr)
    .unwrap();
    assert_eq!(res.status, 200);
    backend.wait_for_log(|l| l["request_id"] == "redaction-check");
    let all = backend.settled_logs().join("\n");
    for secret in secrets {
        assert!(!all.contains(secret), "{secret} logged:\n{all}");
    }
    assert!(!all.contains("sess-7d1c9e") && !all.contains("eyJhbGci"));
}

#[test]
fn metrics_count_requests_and_rejections_for_loopback_clients() {
    let backend = Backend::start();
    Request::get("/health").send(backend.addr).unwrap();
    Request::get("/no-such-page").send(backend.addr).unwrap();
    Request::post("/health")
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .body("x")
        .send(backend.addr)
        .unwrap();
    let res = Request::get("/metrics").send(backend.addr).unwrap();
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text();
    for needle in [
        r#"http_requests_total{method="GET",route="/health",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="<unmatched>",status="404"} 1"#,
        r#"palisade_rejections_total{reason="cross_origin_denied"} 1"#,
        "# TYPE http_request_duration_seconds histogram",
        "http_requests_in_flight",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    assert!(
        !text.contains("no-such-page"),
        "raw paths never become labels"
    );
}

#[test]
fn metrics_token_is_required_when_configured() {
    let token = "Qm9Xc2Vy7dLk3pT8vZ1nR4wY6hF0aJ2sG5bN8cE3";
    let backend = Backend::start_with(&[("APP_METRICS_TOKEN", token)]);
    let get = |auth: Option<&str>| {
        let mut req = Request::get("/metrics");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send(backend.addr).unwrap()
    };
    let denied = get(None);
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(get(Some("Bearer wrong-token")).status, 403);
    assert_eq!(get(Some(&format!("Basic {token}"))).status, 403);
    assert_eq!(get(Some(&format!("Bearer {token}"))).status, 200);
    assert!(!backend.settled_logs().join("\n").contains(token));
}

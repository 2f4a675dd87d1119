//! The breached-password check (`APP_PWNED_API_URL`), black-box, against
//! stub range APIs on loopback that answer, hang, fail and refuse: a
//! breached password is refused with `breached`; a hanging API costs at most
//! its 2 s deadline; once the breaker is open it costs nothing; a failing or
//! unreachable API lets registration through with a WARN line (fail open).
//! And the setting's rules: malformed, or plain http off loopback in prod,
//! is exit 78.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code: a failed step is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palisade_security_tests::http::{Request, Response};
use palisade_security_tests::{Backend, run_to_exit};
use palisade_testkit::stub::{Mode, StubServer};
use serde_json::{Value, json};

/// In the stub's breach list.
const BREACHED: &str = "correct horse battery staple";
/// SHA-1 of [`BREACHED`], upper case: prefix (sent) and suffix (answered).
const BREACHED_PREFIX: &str = "ABF7A";
const BREACHED_SUFFIX: &str = "AD6438836DBE526AA231ABDE2D0EEF74D42";
/// Not in it.
const CLEAN: &str = "violet quartz harbor timber";
const METRICS_TOKEN: &str = "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8";

/// A range answer listing [`BREACHED`], with padding lines (count 0).
fn range_answer() -> String {
    format!(
        "0000000000000000000000000000000000A:0\r\n{BREACHED_SUFFIX}:21\r\n0000000000000000000000000000000000B:0\r\n"
    )
}

fn backend(api: &str) -> Backend {
    Backend::start_with(&[
        ("APP_PWNED_API_URL", api),
        ("APP_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("APP_METRICS_TOKEN", METRICS_TOKEN),
    ])
}

fn post(addr: SocketAddr, path: &str, body: &Value, bearer: Option<&str>, from: &str) -> Response {
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .header("x-forwarded-for", from)
        .body(body.to_string());
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    req.send(addr).unwrap()
}

/// Registers `n`@example.com (from its own client address), timed.
fn register(addr: SocketAddr, n: usize, password: &str) -> (Response, Duration) {
    let start = Instant::now();
    let res = post(
        addr,
        "/auth/register",
        &json!({"email": format!("user{n}@example.com"), "password": password}),
        None,
        &format!("10.9.{}.{}", n / 250, n % 250 + 1),
    );
    (res, start.elapsed())
}

fn metrics(addr: SocketAddr) -> String {
    let res = Request::get("/metrics")
        .header("authorization", &format!("Bearer {METRICS_TOKEN}"))
        .send(addr)
        .unwrap();
    assert_eq!(res.status, 200);
    res.text()
}

fn fail_open_warnings(backend: &Backend) -> usize {
    backend
        .logs()
        .iter()
        .filter(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["level"] == "WARN" && v["target"] == "palisade::pwned"
        })
        .count()
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

#[test]
fn a_breached_password_is_refused_with_breached_at_registration_and_password_change() {
    let stub = StubServer::start(Mode::answer(200, range_answer())).unwrap();
    let backend = backend(&stub.url());
    let (res, _) = register(backend.addr, 1, BREACHED);
    assert_eq!(res.status, 422, "{}", res.text());
    let body = res.json().unwrap();
    assert_eq!(body["errors"][0]["field"], "password");
    assert_eq!(body["errors"][0]["code"], "breached");
    // Only the prefix was sent, with padding asked for, and the request id
    // of the registration went along.
    let sent = stub.requests();
    assert_eq!(sent[0].path, format!("/range/{BREACHED_PREFIX}"));
    assert_eq!(sent[0].header("add-padding"), Some("true"));
    assert_eq!(sent[0].header("x-request-id"), res.header("x-request-id"));
    assert!(!format!("{sent:?}").contains(BREACHED_SUFFIX));

    let (res, _) = register(backend.addr, 2, CLEAN);
    assert_eq!(res.status, 201, "{}", res.text());
    let login = post(
        backend.addr,
        "/auth/login",
        &json!({"email": "user2@example.com", "password": CLEAN}),
        None,
        "10.9.9.2",
    );
    assert_eq!(login.status, 200);
    let token = login.json().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = post(
        backend.addr,
        "/auth/password",
        &json!({"current_password": CLEAN, "new_password": BREACHED}),
        Some(&token),
        "10.9.9.2",
    );
    assert_eq!(res.status, 422, "{}", res.text());
    let body = res.json().unwrap();
    assert_eq!(body["errors"][0]["field"], "new_password");
    assert_eq!(body["errors"][0]["code"], "breached");
    assert!(metrics(backend.addr).contains("palisade_pwned_checks_total{outcome=\"breached\"} 2"));
}

#[test]
fn a_hanging_api_delays_registration_by_its_deadline_at_most_then_the_open_breaker_by_nothing() {
    let stub = StubServer::start(Mode::answer(200, range_answer())).unwrap();
    let backend = backend(&stub.url());
    // Baseline: registrations with an API that answers at once.
    let baseline = median(
        (0..3)
            .map(|n| {
                let (res, took) = register(backend.addr, n, CLEAN);
                assert_eq!(res.status, 201);
                took
            })
            .collect(),
    );

    // Hanging: each registration waits for the 2 s deadline, then proceeds.
    stub.set_mode(Mode::Hang);
    let mut hanging = Duration::MAX;
    for n in 10..13 {
        let (res, took) = register(backend.addr, n, BREACHED);
        assert_eq!(res.status, 201, "fail open: {}", res.text());
        assert!(took < Duration::from_secs(3), "{took:?}");
        hanging = hanging.min(took);
    }
    assert!(fail_open_warnings(&backend) >= 3);

    // Three slow failures opened the breaker: the API is no longer called.
    let calls = stub.requests().len();
    let open: Vec<Duration> = (20..23)
        .map(|n| {
            let (res, took) = register(backend.addr, n, BREACHED);
            assert_eq!(res.status, 201);
            took
        })
        .collect();
    assert_eq!(
        stub.requests().len(),
        calls,
        "no call while the breaker is open"
    );
    // "By nothing": no call reached the API (above), and no registration
    // waited for the deadline: each is at least 1 s quicker than the
    // quickest that did (2 s apart, less the hashing's jitter). A bound
    // over the baseline would measure the hashing pool's load, not the
    // breaker (a loaded run took 279 ms against a 102 ms baseline).
    let slowest = open.iter().max().copied().unwrap_or_default();
    eprintln!(
        "registration with the breaker open: median {:?}, slowest {slowest:?}; \
         with an answering API {baseline:?}, with a hanging one {hanging:?} or more",
        median(open)
    );
    assert!(
        slowest + Duration::from_secs(1) < hanging,
        "breaker open: {slowest:?}, against {hanging:?} waiting for the deadline"
    );
    let text = metrics(backend.addr);
    assert!(
        text.contains("palisade_breaker_state{breaker=\"pwned\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("palisade_pwned_checks_total{outcome=\"unavailable\"} 6"),
        "{text}"
    );
}

#[test]
fn a_failing_or_unreachable_api_lets_registration_through_with_a_warning() {
    let stub = StubServer::start(Mode::Fail).unwrap();
    let backend = backend(&stub.url());
    let (res, _) = register(backend.addr, 1, BREACHED);
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(fail_open_warnings(&backend), 1);

    // A port nothing listens on any more: connections are refused.
    let gone = StubServer::start(Mode::Refuse).unwrap().url();
    let backend = self::backend(&gone);
    let (res, took) = register(backend.addr, 2, BREACHED);
    assert_eq!(res.status, 201, "{}", res.text());
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(fail_open_warnings(&backend), 1);
    assert!(
        metrics(backend.addr).contains("palisade_pwned_checks_total{outcome=\"unavailable\"} 1")
    );
}

#[test]
fn a_malformed_url_or_plain_http_off_loopback_in_prod_is_exit_78() {
    let (status, _, stderr) = run_to_exit(&[("APP_PWNED_API_URL", "api.pwnedpasswords.com")]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("APP_PWNED_API_URL: must be an http:// or https:// URL"),
        "{stderr}"
    );

    let prod = |url: &str| {
        run_to_exit(&[
            ("APP_PROFILE", "prod"),
            ("APP_JWT_SECRET", METRICS_TOKEN),
            ("APP_PWNED_API_URL", url),
        ])
    };
    let (status, _, stderr) = prod("http://pwned.internal:8080");
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("APP_PWNED_API_URL: must be an https:// URL in prod"),
        "{stderr}"
    );
}

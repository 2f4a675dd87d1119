//! Serving the reference backend, black-box: every request counts against
//! the per-IP limit (unknown paths, wrong methods, preflights), the trust
//! boundary of `/metrics`, wide trusted-proxy networks in `prod`, and the
//! internal metrics listener.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::net::{SocketAddr, TcpListener};

use palisade_security_tests::http::Request;
use palisade_security_tests::{Backend, SHARED_SECRET, run_to_exit};

/// 120 quick requests from one address: the burst of 50 is served (with the
/// status of the route), the rest is 429 — whatever the path or method.
#[test]
fn unknown_paths_wrong_methods_and_preflights_count_against_the_per_ip_limit() {
    for (method, path, expected) in [
        ("GET", "/nope", 404),
        ("DELETE", "/health", 405),
        ("OPTIONS", "/auth/login", 403),
    ] {
        let backend = Backend::start();
        let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
        for _ in 0..120 {
            let res = Request::new(method, path)
                .header("origin", "https://elsewhere.example")
                .header("access-control-request-method", "POST")
                .send(backend.addr)
                .unwrap();
            *statuses.entry(res.status).or_default() += 1;
        }
        let limited = statuses.get(&429).copied().unwrap_or(0);
        let served = statuses.get(&expected).copied().unwrap_or(0);
        assert!(
            (50..=60).contains(&served) && served + limited == 120,
            "{method} {path}: {statuses:?}"
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
    assert_eq!(Request::get("/metrics").send(prod.addr).unwrap().status, 403);
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
        assert!(stderr.contains("APP_TRUSTED_PROXIES: must not contain"), "{stderr}");
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
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
    assert_eq!(main.header("content-type"), Some("application/problem+json"));
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

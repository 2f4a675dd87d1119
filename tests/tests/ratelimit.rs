//! Rate limits of the reference backend, black-box: the global per-IP limit,
//! limits shared by two instances over Redis, and Redis outages.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::time::{Duration, Instant};

use palisade_security_tests::Backend;
use palisade_security_tests::http::Request;
use palisade_testkit::redis::{RedisServer, Reply};

/// Polls `f` every 50 ms until it is true or `limit` passes (waiting on
/// another process to recover, not on a rate-limit window).
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The global per-IP quota: 30/s, burst 50.
const GLOBAL_BURST: u32 = 50;
const GLOBAL_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / 30);
/// Requests sent at most while waiting for the first 429 (the machine would
/// have to answer fewer than 30 a second for it never to come).
const MAX_REQUESTS: usize = 1000;

#[test]
fn a_burst_from_one_ip_beyond_fifty_gets_429_with_retry_after() {
    let backend = Backend::start();
    let mut statuses = Vec::new();
    let mut limited = None;
    let start = Instant::now();
    while limited.is_none() && statuses.len() < MAX_REQUESTS {
        let res = Request::get("/health").send(backend.addr).unwrap();
        statuses.push(res.status);
        match res.status {
            200 => {
                assert!(res.header("ratelimit-policy").is_some());
                assert!(res.header("ratelimit").is_some());
            }
            429 => limited = Some(res),
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = start.elapsed();
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    // The burst is served whatever the clock; beyond it, no more than the
    // refill over the time the test took.
    let first = &statuses[..GLOBAL_BURST as usize];
    assert!(first.iter().all(|s| *s == 200), "the burst: {first:?}");
    let most = palisade_security_tests::most_allowed(GLOBAL_BURST, GLOBAL_INTERVAL, elapsed);
    assert!(ok <= most, "{ok} allowed in {elapsed:?} (at most {most})");
    let res = limited.expect("some requests were refused");
    assert_eq!(res.header("retry-after"), Some("1"));
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert!(res.header("x-request-id").is_some());
    let body = res.json().unwrap();
    assert_eq!(body["type"], "urn:palisade:problem:rate-limited");
    assert_eq!(body["request_id"].as_str(), res.header("x-request-id"));
}

#[test]
fn two_instances_share_their_limits_through_redis_and_survive_its_outage() {
    let mut redis = RedisServer::start().unwrap();
    let url = redis.url();
    let env = [
        ("APP_REDIS_URL", url.as_str()),
        (
            "APP_REDIS_TIMEOUT_MS",
            palisade_security_tests::REDIS_TIMEOUT_MS,
        ),
    ];
    let a = Backend::start_with(&env);
    let b = Backend::start_with(&env);
    let ready = |backend: &Backend| Request::get("/ready").send(backend.addr).unwrap();
    let res = ready(&a);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json().unwrap()["checks"]["store"]["status"], "up");

    // Alternate between the instances: together they allow one burst.
    let mut statuses = Vec::new();
    let start = Instant::now();
    while !statuses.contains(&429) && statuses.len() < MAX_REQUESTS {
        let backend = if statuses.len() % 2 == 0 { &a } else { &b };
        statuses.push(Request::get("/health").send(backend.addr).unwrap().status);
    }
    let elapsed = start.elapsed();
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let first = &statuses[..GLOBAL_BURST as usize];
    assert!(first.iter().all(|s| *s == 200), "the burst: {first:?}");
    assert!(statuses.contains(&429), "never refused: {statuses:?}");
    let most = palisade_security_tests::most_allowed(GLOBAL_BURST, GLOBAL_INTERVAL, elapsed);
    assert!(
        ok <= most,
        "{ok} allowed across two instances in {elapsed:?} (at most {most})"
    );
    let keys = redis.command(&["KEYS", "*"]).unwrap();
    let Reply::Array(keys) = keys else {
        panic!("KEYS answered {keys:?}")
    };
    let keys: Vec<_> = keys.iter().filter_map(Reply::as_str).collect();
    assert_eq!(keys, ["palisade:{rl}:g:global:127.0.0.1/32"]);

    // Redis dies: the global limit falls back to per-instance memory (the
    // service keeps serving), readiness reports the store degraded (200: no
    // load balancer drains every instance over a dependency they share).
    redis.kill();
    let served = (0..5)
        .filter(|_| Request::get("/health").send(a.addr).unwrap().status != 503)
        .count();
    assert_eq!(served, 5, "non-auth routes fall back instead of failing");
    for backend in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(10), || {
                let res = ready(backend);
                res.status == 200 && res.json().unwrap()["checks"]["store"]["status"] == "degraded"
            }),
            "readiness reports the store degraded"
        );
    }
    assert!(eventually(Duration::from_secs(5), || a
        .logs()
        .iter()
        .any(|l| l.contains("circuit opened"))));

    // Redis returns: both recover by themselves.
    redis.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            ready(&a).json().unwrap()["checks"]["store"]["status"] == "up"
        }),
        "the store recovered"
    );
    assert!(eventually(Duration::from_secs(5), || a
        .logs()
        .iter()
        .any(|l| l.contains("circuit closed"))));
}

//! Readiness that degrades instead of cascading, black-box: with Redis down
//! the instance stays in the load balancer (`/ready` 200 `degraded`) while
//! auth fails closed, and everything recovers by itself; with the database
//! gone `/ready` is red. The supervised maintenance job is in `/ready`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palisade_security_tests::Backend;
use palisade_security_tests::http::{Request, Response};
use palisade_testkit::redis::RedisServer;
use serde_json::{Value, json};

/// Polls `f` every 50 ms until it is true or `limit` passes (waiting on
/// another process to notice an outage, not on a rate-limit window).
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

fn ready(addr: SocketAddr) -> (u16, Value) {
    let res = Request::get("/ready").send(addr).unwrap();
    (res.status, res.json().unwrap())
}

fn login(addr: SocketAddr, body: &Value) -> Response {
    Request::post("/auth/login")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send(addr)
        .unwrap()
}

#[test]
fn with_redis_down_ready_is_degraded_logins_fail_closed_and_all_recover() {
    let mut redis = RedisServer::start().unwrap();
    let url = redis.url();
    let backend = Backend::start_with(&[("APP_REDIS_URL", url.as_str())]);
    let addr = backend.addr;
    let (status, body) = ready(addr);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"]["status"], "up");
    let creds = json!({"email": "ada@example.com", "password": "violet quartz harbor timber"});
    let res = Request::post("/auth/register")
        .header("content-type", "application/json")
        .body(creds.to_string())
        .send(addr)
        .unwrap();
    assert_eq!(res.status, 201, "{}", res.text());

    redis.kill();
    // Degraded, not red: the load balancer keeps this instance.
    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            let (status, body) = ready(addr);
            last = body;
            status == 200 && last["status"] == "degraded"
        }),
        "readiness degrades: {last}"
    );
    assert_eq!(last["checks"]["store"]["status"], "degraded");
    assert!(
        last["checks"]["store"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{last}"
    );
    assert_eq!(last["checks"]["database"]["status"], "up");
    assert_eq!(last["checks"]["tasks"]["status"], "up");
    // Auth fails closed; liveness is unaffected.
    let res = login(addr, &creds);
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert!(res.header("retry-after").is_some());
    let health = Request::get("/health").send(addr).unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json().unwrap(), json!({"status": "ok"}));

    // Redis returns: readiness and logins recover by themselves.
    redis.restart().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let (status, body) = ready(addr);
            status == 200 && body["status"] == "ready"
        }),
        "the store recovered"
    );
    assert_eq!(ready(addr).1["checks"]["store"]["status"], "up");
    assert!(
        eventually(Duration::from_secs(10), || login(addr, &creds).status
            == 200),
        "logins recovered"
    );
}

#[test]
fn with_the_database_gone_ready_is_red_and_health_is_not() {
    let backend = Backend::start();
    let addr = backend.addr;
    assert_eq!(ready(addr).0, 200);
    // The volume goes away under the running process (SQLite would go on
    // writing into the deleted file through its open descriptors).
    std::fs::remove_dir_all(backend.data_dir()).unwrap();
    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            let (status, body) = ready(addr);
            last = body;
            status == 503
        }),
        "readiness turns red: {last}"
    );
    assert_eq!(last["status"], "not_ready");
    assert_eq!(last["checks"]["database"]["status"], "down");
    assert_eq!(
        last["checks"]["database"]["reason"],
        "database file missing"
    );
    assert_eq!(Request::get("/health").send(addr).unwrap().status, 200);
}

#[test]
fn the_maintenance_job_runs_under_the_supervisor_and_reports_in_ready() {
    let backend = Backend::start();
    let (status, body) = ready(backend.addr);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["tasks"]["status"], "up");
    // It runs at start, and its metrics are exposed.
    assert!(eventually(Duration::from_secs(10), || {
        backend
            .logs()
            .iter()
            .any(|l| l.contains("expired rows pruned"))
    }));
    let metrics = Request::get("/metrics").send(backend.addr).unwrap();
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains(r#"palisade_task_state{task="prune-expired",state="idle"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"palisade_task_last_success_timestamp_seconds{task="prune-expired"}"#));
    // SIGTERM stops it with the service.
    let (status, logs) = backend.stop("TERM");
    assert!(status.success());
    assert!(
        logs.iter().any(|l| l.contains("every task stopped")),
        "{logs:?}"
    );
}

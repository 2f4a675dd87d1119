//! `/auth/*` and `/me` of the reference backend, black-box: every contract
//! row, the login and registration limits, lockout, and two instances over
//! one Redis.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palisade_security_tests::http::{Request, Response};
use palisade_security_tests::{Backend, Database, Db, Shared, most_allowed};
use palisade_testkit::redis::RedisServer;
use serde_json::{Value, json};

const PASSWORD: &str = "violet quartz harbor timber";
/// A high-entropy secret shared by instances that must accept each other's tokens.
fn post(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    bearer: Option<&str>,
    from: Option<&str>,
) -> Response {
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    req.send(addr).unwrap()
}

fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Response {
    let mut req = Request::get(path);
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    req.send(addr).unwrap()
}

fn creds(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

/// The problem body without its request id, to compare two answers.
fn problem_shape(res: &Response) -> Value {
    let mut v = res.json().unwrap();
    v.as_object_mut().unwrap().remove("request_id");
    v
}

#[allow(clippy::too_many_lines)] // one walk through the contract rows, in order
fn every_auth_row_of_the_contract(db: Db) {
    let database = Database::start(db);
    let backend = Backend::start_on(&database, &[]);
    let addr = backend.addr;
    // Register: 201, then 409 for the same address in another case.
    let res = post(
        addr,
        "/auth/register",
        &creds("Ada@Example.com", PASSWORD),
        None,
        None,
    );
    assert_eq!(res.status, 201, "{}", res.text());
    let user = res.json().unwrap();
    assert_eq!(user["email"], "ada@example.com");
    let res = post(
        addr,
        "/auth/register",
        &creds("ADA@example.com", PASSWORD),
        None,
        None,
    );
    assert_eq!(res.status, 409);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    // 422 with the policy's code, never the password.
    let res = post(
        addr,
        "/auth/register",
        &creds("bob@example.com", "password123"),
        None,
        None,
    );
    assert_eq!(res.status, 422);
    let body = res.json().unwrap();
    assert_eq!(body["errors"][0]["field"], "password");
    assert_eq!(body["errors"][0]["code"], "too_common");
    assert!(!res.text().contains("password123"));

    // Login: 200 with the token response.
    let res = post(
        addr,
        "/auth/login",
        &creds("ada@example.com", PASSWORD),
        None,
        None,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let tokens = res.json().unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert!(
        !backend
            .settled_logs()
            .iter()
            .any(|l| l.contains(&access) || l.contains(&refresh) || l.contains(PASSWORD))
    );

    // 401: the same body for a wrong password and for an unknown account.
    let wrong = post(
        addr,
        "/auth/login",
        &creds("ada@example.com", "not the password"),
        None,
        None,
    );
    let unknown = post(
        addr,
        "/auth/login",
        &creds("nobody@example.com", "not the password"),
        None,
        None,
    );
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(problem_shape(&wrong), problem_shape(&unknown));
    assert_eq!(problem_shape(&wrong)["detail"], "invalid credentials");

    // /me with and without the token.
    let res = get(addr, "/me", Some(&access));
    assert_eq!(res.status, 200);
    let me = res.json().unwrap();
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "ada@example.com");
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));
    let res = get(addr, "/me", None);
    assert_eq!(res.status, 401);
    assert_eq!(res.header("www-authenticate"), Some("Bearer"));

    // Refresh: a new pair; the old refresh token is spent.
    let res = post(
        addr,
        "/auth/refresh",
        &json!({"refresh_token": refresh}),
        None,
        None,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let pair = res.json().unwrap();
    assert_ne!(pair["refresh_token"].as_str(), Some(refresh.as_str()));
    let res = post(
        addr,
        "/auth/refresh",
        &json!({"refresh_token": refresh}),
        None,
        None,
    );
    assert_eq!(res.status, 401);

    // Logout: 204, then the token and its family stop working.
    let access2 = pair["access_token"].as_str().unwrap();
    assert_eq!(
        post(addr, "/auth/logout", &json!({}), Some(access2), None).status,
        204
    );
    assert_eq!(get(addr, "/me", Some(access2)).status, 401);
    let res = post(
        addr,
        "/auth/refresh",
        &json!({"refresh_token": pair["refresh_token"]}),
        None,
        None,
    );
    assert_eq!(res.status, 401);
    assert_eq!(
        post(addr, "/auth/logout", &json!({}), None, None).status,
        401
    );
}

/// Logins per client IP: 5 a minute (one more every 12 s).
const LOGIN_BURST: u32 = 5;
const LOGIN_INTERVAL: Duration = Duration::from_secs(12);
/// Registrations per client IP: 3 a minute (one more every 20 s).
const REGISTER_BURST: u32 = 3;
const REGISTER_INTERVAL: Duration = Duration::from_secs(20);

/// Sends `attempt(i)` until one answers 429 (at most 20): the statuses, and
/// the time from before the first was sent to after the last answer came.
fn until_limited(mut attempt: impl FnMut(usize) -> Response) -> (Vec<Response>, Duration) {
    let start = Instant::now();
    let mut answers: Vec<Response> = Vec::new();
    while answers.last().is_none_or(|r| r.status != 429) && answers.len() < 20 {
        answers.push(attempt(answers.len()));
    }
    (answers, start.elapsed())
}

fn the_sixth_login_and_the_fourth_registration_from_one_ip_get_429(db: Db) {
    let database = Database::start(db);
    let backend = Backend::start_on(&database, &[]);
    let addr = backend.addr;
    let (answers, elapsed) = until_limited(|i| {
        post(
            addr,
            "/auth/login",
            &creds(&format!("u{i}@example.com"), "wrong password"),
            None,
            None,
        )
    });
    // The first five are checked whatever the clock; the sixth is refused
    // unless the test took 12 s (then at most one more per 12 s passed).
    let (refused, checked) = answers.split_last().unwrap();
    for (i, res) in checked.iter().enumerate() {
        assert_eq!(res.status, 401, "attempt {i}");
        assert_eq!(
            res.header("ratelimit"),
            None,
            "login does not advertise its quota"
        );
    }
    let most = most_allowed(LOGIN_BURST, LOGIN_INTERVAL, elapsed);
    assert!(
        checked.len() as u64 >= u64::from(LOGIN_BURST) && checked.len() as u64 <= most,
        "{} logins checked in {elapsed:?} (at most {most})",
        checked.len()
    );
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(
        refused.json().unwrap()["type"],
        "urn:palisade:problem:rate-limited"
    );

    let (answers, elapsed) = until_limited(|i| {
        post(
            addr,
            "/auth/register",
            &creds(&format!("r{i}@example.com"), PASSWORD),
            None,
            None,
        )
    });
    let (refused, created) = answers.split_last().unwrap();
    for (i, res) in created.iter().enumerate() {
        assert_eq!(res.status, 201, "registration {i}: {}", res.text());
    }
    let most = most_allowed(REGISTER_BURST, REGISTER_INTERVAL, elapsed);
    assert!(
        created.len() as u64 >= u64::from(REGISTER_BURST) && created.len() as u64 <= most,
        "{} registrations in {elapsed:?} (at most {most})",
        created.len()
    );
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
}

fn distributed_guessing_locks_the_account_but_not_its_owner(db: Db) {
    let database = Database::start(db);
    // Behind a trusted proxy, each guess comes from another client address.
    let backend = Backend::start_on(&database, &[("APP_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let addr = backend.addr;
    let home = "198.51.100.10";
    assert_eq!(
        post(
            addr,
            "/auth/register",
            &creds("owner@example.com", PASSWORD),
            None,
            Some(home)
        )
        .status,
        201
    );
    assert_eq!(
        post(
            addr,
            "/auth/login",
            &creds("owner@example.com", PASSWORD),
            None,
            Some(home)
        )
        .status,
        200
    );
    for i in 0..50 {
        let ip = format!("203.0.113.{}", i + 1);
        let res = post(
            addr,
            "/auth/login",
            &creds("owner@example.com", "guess"),
            None,
            Some(&ip),
        );
        assert_eq!(res.status, 401, "guess {i}");
    }
    // The account is locked for new addresses, even with the right password.
    let res = post(
        addr,
        "/auth/login",
        &creds("owner@example.com", PASSWORD),
        None,
        Some("192.0.2.77"),
    );
    assert_eq!(res.status, 429, "{}", res.text());
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 3000, "{retry}");
    // The owner's address still gets in.
    let res = post(
        addr,
        "/auth/login",
        &creds("owner@example.com", PASSWORD),
        None,
        Some(home),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    backend.wait_for_log(|l| l["event"] == "lockout" && l["scope"] == "account");
    assert!(
        !backend
            .settled_logs()
            .iter()
            .any(|l| l.contains("owner@example.com")),
        "audit lines carry a digest, not the email"
    );
}

fn two_instances_over_redis_share_limits_lockouts_and_logouts(db: Db) {
    let database = Database::start(db);
    let mut redis = RedisServer::start().unwrap();
    let env = Shared::new(redis.url(), &database);
    let (a, b) = (env.start(), env.start());
    assert_eq!(
        post(
            a.addr,
            "/auth/register",
            &creds("sam@example.com", PASSWORD),
            None,
            None
        )
        .status,
        201
    );
    // Logins alternate between the instances: one budget of 5 per minute.
    let (answers, elapsed) = until_limited(|i| {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        let password = if i == 0 { PASSWORD } else { "wrong password" };
        post(
            addr,
            "/auth/login",
            &creds("sam@example.com", password),
            None,
            None,
        )
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    // Five checked whatever the clock, then refused (unless the test took
    // 12 s: at most one more per 12 s). The lockout of the (account, IP)
    // pair takes over at the fifth consecutive failure, so a late sixth
    // check is answered 401 or 429, never 200.
    let most = most_allowed(LOGIN_BURST, LOGIN_INTERVAL, elapsed);
    assert_eq!(statuses[..5], [200, 401, 401, 401, 401], "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.len() as u64 - 1 <= most,
        "{statuses:?} in {elapsed:?} (at most {most} checked)"
    );

    // A logout on one instance is effective on the other at once.
    let c = env.start();
    // (From another client: this one has used its login budget above.)
    let other = Some("198.51.100.50");
    let tokens = post(
        c.addr,
        "/auth/login",
        &creds("sam@example.com", PASSWORD),
        None,
        other,
    )
    .json()
    .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(get(b.addr, "/me", Some(access)).status, 200);
    assert_eq!(
        post(c.addr, "/auth/logout", &json!({}), Some(access), None).status,
        204
    );
    assert_eq!(get(b.addr, "/me", Some(access)).status, 401);

    // Redis down: logins fail closed, the rest keeps serving.
    redis.kill();
    let res = post(
        b.addr,
        "/auth/login",
        &creds("sam@example.com", PASSWORD),
        None,
        Some("198.51.100.51"),
    );
    assert_eq!(res.status, 503, "{}", res.text());
    assert!(res.header("retry-after").is_some());
    assert_eq!(get(b.addr, "/health", None).status, 200);
}

fn a_parallel_burst_over_two_instances_gets_at_most_fifty_password_checks(db: Db) {
    let database = Database::start(db);
    let redis = RedisServer::start().unwrap();
    let env = Shared::new(redis.url(), &database);
    let (a, b) = (env.start(), env.start());
    assert_eq!(
        post(
            a.addr,
            "/auth/register",
            &creds("target@example.com", PASSWORD),
            None,
            None
        )
        .status,
        201
    );
    let threads: Vec<_> = (0..150u32)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            std::thread::spawn(move || {
                let ip = format!("10.{}.{}.1", i / 200, i % 200);
                post(
                    addr,
                    "/auth/login",
                    &creds("target@example.com", "a wrong guess"),
                    None,
                    Some(&ip),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // 401: the password was checked. 429: locked before any check. 503: the
    // hashing pool was saturated and the slot was given back.
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429 | 503)),
        "{statuses:?}"
    );
    assert!(checked <= 50, "{checked} password checks");
    assert!(checked > 0);
}

palisade_security_tests::on_both_databases!(
    every_auth_row_of_the_contract,
    the_sixth_login_and_the_fourth_registration_from_one_ip_get_429,
    distributed_guessing_locks_the_account_but_not_its_owner,
    two_instances_over_redis_share_limits_lockouts_and_logouts,
    a_parallel_burst_over_two_instances_gets_at_most_fifty_password_checks,
);

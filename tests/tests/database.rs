//! The reference backend on PostgreSQL, black-box: a database outage under
//! light load (readiness red then green without a restart, every request
//! answered within the statement timeout plus a second, 503 problems, nothing
//! acknowledged lost), instances starting together on an empty database, and
//! the URL's password kept out of logs and `--check-config`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code: a failed step is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palisade_security_tests::http::{Request, Response};
use palisade_security_tests::{Backend, Database, Db, Shared, run_to_exit_with_args};
use palisade_testkit::redis::RedisServer;
use serde_json::{Value, json};

const PASSWORD: &str = "violet quartz harbor timber";
/// `APP_DATABASE_STATEMENT_TIMEOUT_MS` of the outage test.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the database stays down (the acceptance of issue 20).
const OUTAGE: Duration = Duration::from_secs(10);

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

/// `send` again while it answers 503 (this machine's Redis may be slow to
/// answer under load: a retryable answer, not a lost account), at most 20
/// times, 250 ms apart.
fn retrying(send: impl Fn() -> Response) -> Response {
    let mut res = send();
    for _ in 0..20 {
        if res.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        res = send();
    }
    res
}

fn ready(addr: SocketAddr) -> u16 {
    Request::get("/ready").send(addr).unwrap().status
}

/// One request's answer and how long it took.
struct Timed {
    what: &'static str,
    status: u16,
    took: Duration,
}

fn timed(what: &'static str, log: &mut Vec<Timed>, f: impl FnOnce() -> Response) -> Response {
    let start = Instant::now();
    let res = f();
    log.push(Timed {
        what,
        status: res.status,
        took: start.elapsed(),
    });
    if res.status == 503 {
        assert_eq!(
            res.header("content-type"),
            Some("application/problem+json"),
            "{what}: {}",
            res.text()
        );
        assert!(res.header("retry-after").is_some(), "{what}");
    } else if res.status >= 500 {
        panic!("{what} answered {}: {}", res.status, res.text());
    }
    res
}

/// A user whose registration was acknowledged, and the refresh token of
/// its chain when every refresh of the chain was answered (an unanswered
/// one may have spent the token: it is not checked).
struct Account {
    email: String,
    refresh: Option<String>,
}

/// How the database goes away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// The server stops: connections are refused.
    Killed,
    /// The server hangs: connections open, nothing answers (no server-side
    /// timeout can fire; the backend's own deadline must).
    Frozen,
}

#[test]
fn a_ten_second_postgres_outage_under_light_load_is_503_then_recovers_without_a_restart() {
    outage_under_light_load(Outage::Killed);
}

#[test]
fn a_ten_second_frozen_postgres_under_light_load_is_503_within_the_deadline_then_recovers() {
    outage_under_light_load(Outage::Frozen);
}

#[allow(clippy::too_many_lines)] // one scenario: before, during and after the outage, in order
fn outage_under_light_load(outage: Outage) {
    let mut database = Database::start(Db::Postgres);
    let redis = RedisServer::start().unwrap();
    let timeout = STATEMENT_TIMEOUT.as_millis().to_string();
    let mut backend = Backend::start_on(
        &database,
        &[
            ("APP_REDIS_URL", redis.url().as_str()),
            ("APP_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("APP_DATABASE_STATEMENT_TIMEOUT_MS", timeout.as_str()),
            ("APP_DATABASE_CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    let addr = backend.addr;
    assert_eq!(ready(addr), 200);

    let mut log = Vec::new();
    let mut accounts: Vec<Account> = Vec::new();
    let mut readiness = Vec::new();
    let mut cycle = 0usize;
    // One user's cycle: register, log in, refresh, /me; and /ready.
    let mut run_cycle = |log: &mut Vec<Timed>, accounts: &mut Vec<Account>| {
        cycle += 1;
        let from = format!("10.20.{}.{}", cycle / 250, cycle % 250 + 1);
        let email = format!("outage-{cycle}@example.com");
        let creds = json!({"email": email, "password": PASSWORD});
        let res = timed("register", log, || {
            post(addr, "/auth/register", &creds, None, &from)
        });
        if res.status == 201 {
            accounts.push(Account {
                email: email.clone(),
                refresh: None,
            });
        }
        let res = timed("login", log, || {
            post(addr, "/auth/login", &creds, None, &from)
        });
        if res.status == 200 {
            let body = res.json().unwrap();
            let access = body["access_token"].as_str().unwrap().to_owned();
            let refresh = body["refresh_token"].as_str().unwrap().to_owned();
            let res = timed("refresh", log, || {
                post(
                    addr,
                    "/auth/refresh",
                    &json!({"refresh_token": refresh}),
                    None,
                    &from,
                )
            });
            let account = accounts.iter_mut().find(|a| a.email == email);
            if let Some(account) = account {
                account.refresh = (res.status == 200).then(|| {
                    res.json().unwrap()["refresh_token"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                });
            }
            timed("me", log, || {
                Request::get("/me")
                    .header("authorization", &format!("Bearer {access}"))
                    .header("x-forwarded-for", &from)
                    .send(addr)
                    .unwrap()
            });
        }
    };

    // Before: everything works.
    for _ in 0..3 {
        run_cycle(&mut log, &mut accounts);
        readiness.push(ready(addr));
    }
    assert!(
        log.iter().all(|t| t.status < 300),
        "before the outage: {:?}",
        log.iter().map(|t| (t.what, t.status)).collect::<Vec<_>>()
    );

    // The outage: light load for ten seconds.
    match outage {
        Outage::Killed => database.postgres().unwrap().kill(),
        Outage::Frozen => database.postgres().unwrap().freeze(),
    }
    let down = Instant::now();
    while down.elapsed() < OUTAGE {
        run_cycle(&mut log, &mut accounts);
        readiness.push(ready(addr));
    }
    let outage_answers: Vec<&Timed> = log.iter().skip(12).collect();
    assert!(
        outage_answers.iter().any(|t| t.status == 503),
        "no request noticed the outage"
    );
    assert!(
        readiness.contains(&503),
        "/ready stayed green: {readiness:?}"
    );

    // Back: /ready turns green by itself, the same process serves again.
    match outage {
        Outage::Killed => database.postgres().unwrap().restart().unwrap(),
        Outage::Frozen => database.postgres().unwrap().thaw(),
    }
    let back = Instant::now();
    while ready(addr) != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "/ready did not turn green again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..3 {
        run_cycle(&mut log, &mut accounts);
    }
    assert!(backend.is_running(), "the backend exited");
    assert!(
        !backend.logs().iter().any(|l| l.contains("panicked")),
        "a panic was logged"
    );

    // No request waited for the database past the statement timeout plus a
    // second. Registrations and logins also hash a password first: on a
    // loaded machine that alone can take seconds, so they get, on top, the
    // slowest of them before the outage (hashing with a healthy database).
    let hashes = |t: &&Timed| matches!(t.what, "register" | "login");
    let hash_budget = log
        .iter()
        .take(12)
        .filter(hashes)
        .map(|t| t.took)
        .max()
        .unwrap();
    let bound = STATEMENT_TIMEOUT + Duration::from_secs(1);
    let slowest_db = log
        .iter()
        .filter(|t| !hashes(t))
        .map(|t| t.took)
        .max()
        .unwrap();
    println!(
        "{} requests, {} answered 503; slowest refresh or /me {slowest_db:?}; hashing before the \
         outage up to {hash_budget:?}",
        log.len(),
        log.iter().filter(|t| t.status == 503).count(),
    );
    for t in &log {
        let allowed = if hashes(&t) {
            bound + hash_budget
        } else {
            bound
        };
        assert!(
            t.took <= allowed,
            "{} took {:?} (allowed {allowed:?})",
            t.what,
            t.took
        );
    }

    // Nothing acknowledged was lost: every registered account logs in, and
    // every refresh token handed out (whose chain was answered) refreshes.
    for (i, account) in accounts.iter().enumerate() {
        let from = format!("10.21.{}.{}", i / 250, i % 250 + 1);
        let res = retrying(|| {
            post(
                addr,
                "/auth/login",
                &json!({"email": account.email, "password": PASSWORD}),
                None,
                &from,
            )
        });
        assert_eq!(res.status, 200, "{}: {}", account.email, res.text());
        if let Some(token) = &account.refresh {
            let res = retrying(|| {
                post(
                    addr,
                    "/auth/refresh",
                    &json!({"refresh_token": token}),
                    None,
                    &from,
                )
            });
            assert_eq!(res.status, 200, "{}: {}", account.email, res.text());
        }
    }
}

#[test]
fn instances_starting_together_on_an_empty_postgres_migrate_once() {
    let database = Database::start(Db::Postgres);
    let redis = RedisServer::start().unwrap();
    let env = Shared::new(redis.url(), &database);
    let instances: Vec<Backend> = std::thread::scope(|s| {
        let started: Vec<_> = (0..3).map(|_| s.spawn(|| env.start())).collect();
        started.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for b in &instances {
        assert_eq!(ready(b.addr), 200);
    }
    // Each applied migration recorded once, whoever applied it.
    let server = database_server(&database);
    let versions = server
        .psql(
            "app",
            "SELECT version FROM _sqlx_migrations ORDER BY version",
        )
        .unwrap();
    assert_eq!(versions, "1\n4");
    // A user registered on one is there for the others.
    let creds = json!({"email": "shared@example.com", "password": PASSWORD});
    let res = retrying(|| {
        post(
            instances[0].addr,
            "/auth/register",
            &creds,
            None,
            "10.30.0.1",
        )
    });
    assert_eq!(res.status, 201, "{}", res.text());
    for (i, b) in instances.iter().enumerate() {
        let from = format!("10.30.1.{i}");
        let res = retrying(|| post(b.addr, "/auth/login", &creds, None, &from));
        assert_eq!(res.status, 200, "{}", res.text());
    }
}

fn database_server(database: &Database) -> &palisade_testkit::postgres::PostgresServer {
    database.server().unwrap()
}

#[test]
fn the_password_in_a_postgres_url_is_never_printed() {
    let database = Database::start(Db::Postgres);
    let password = database.password().unwrap().to_owned();
    let backend = Backend::start_on(&database, &[]);
    let (status, logs) = backend.stop("TERM");
    assert!(status.success());
    for line in &logs {
        assert!(!line.contains(&password), "{line}");
    }
    // --check-config, accepted and refused.
    let (status, stdout, stderr) =
        run_to_exit_with_args(&["--check-config"], &[("APP_DATABASE_URL", database.url())]);
    assert!(status.success(), "{stderr}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password));
    let refused = database.url().replace("postgres://", "postgresql://") + "&sslmode=sometimes";
    let (status, stdout, stderr) = run_to_exit_with_args(
        &["--check-config"],
        &[("APP_DATABASE_URL", refused.as_str())],
    );
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("APP_DATABASE_URL: "), "{stderr}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password));
    // A wrong password: the start fails, naming neither password.
    let wrong = database.url().replace(&password, "wrong-pw-value");
    let (status, stdout, stderr) =
        run_to_exit_with_args(&[], &[("APP_DATABASE_URL", wrong.as_str())]);
    assert!(!status.success());
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(&password) && !text.contains("wrong-pw-value"),
            "{text}"
        );
    }
    assert!(
        stdout.contains("password authentication failed")
            || stderr.contains("password authentication failed"),
        "{stdout}{stderr}"
    );
}

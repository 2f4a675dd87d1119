//! The session flows of the reference backend, black-box: a burst of
//! ordinary logins, logout under a drained per-user quota, NFKC passwords,
//! logout everywhere, password change, and refresh racing logout or a replay
//! across two instances sharing Redis and one database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code: a failed step is a failed test

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Barrier, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_security_tests::http::{Request, Response};
use palisade_security_tests::{Backend, Database, Db, Shared, honour_retry_after, most_allowed};
use palisade_testkit::redis::RedisServer;
use serde_json::{Value, json};

const PASSWORD: &str = "violet quartz harbor timber";
const NEW_PASSWORD: &str = "amber lantern copper meadow";

/// The burst runs alone: the other tests of this file hash passwords too,
/// and on a small machine they would be what the burst meets.
static TIMING: RwLock<()> = RwLock::new(());

fn shared_cpu() -> RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive_cpu() -> RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(PoisonError::into_inner)
}

/// A distinct client address for request `i` of test `test` (sent as
/// `X-Forwarded-For`, honoured because 127.0.0.1 is a trusted proxy).
fn client(test: u8, i: usize) -> String {
    format!("10.{test}.{}.{}", i / 250, i % 250 + 1)
}

/// A backend on `database` and its own memory store that trusts 127.0.0.1
/// as its proxy.
fn behind_proxy(database: &Database) -> Backend {
    Backend::start_on(database, &[("APP_TRUSTED_PROXIES", "127.0.0.1/32")])
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

fn me(addr: SocketAddr, bearer: &str, from: &str) -> Response {
    Request::get("/me")
        .header("authorization", &format!("Bearer {bearer}"))
        .header("x-forwarded-for", from)
        .send(addr)
        .unwrap()
}

fn creds(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

/// Setup steps hash passwords: on a loaded machine the backend may shed one
/// with 503 and `Retry-After`, and a client tries again (the registration
/// quota, 3 a minute per address, allows it).
fn register(addr: SocketAddr, email: &str, password: &str, from: &str) {
    let res = honour_retry_after(3, || {
        post(addr, "/auth/register", &creds(email, password), None, from)
    });
    assert_eq!(res.status, 201, "registering {email}: {}", res.text());
}

/// An access token and a refresh token.
#[derive(Clone, Debug)]
struct Pair {
    access: String,
    refresh: String,
}

impl Pair {
    fn from_response(res: &Response) -> Self {
        let body = res.json().unwrap();
        Self {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

fn login(addr: SocketAddr, email: &str, password: &str, from: &str) -> Pair {
    let res = honour_retry_after(3, || {
        post(addr, "/auth/login", &creds(email, password), None, from)
    });
    assert_eq!(res.status, 200, "login of {email}: {}", res.text());
    Pair::from_response(&res)
}

fn refresh(addr: SocketAddr, token: &str, from: &str) -> Response {
    post(
        addr,
        "/auth/refresh",
        &json!({"refresh_token": token}),
        None,
        from,
    )
}

fn logout(addr: SocketAddr, access: &str, from: &str) -> Response {
    post(addr, "/auth/logout", &json!({}), Some(access), from)
}

/// UNIX seconds of the wall clock (the backend's clock: same machine).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Jitter of 0–3 ms for one side of a race, the other side starting at once.
fn jitter(seed: &std::hash::RandomState, i: usize) -> (Duration, Duration) {
    let r = seed.hash_one(i);
    let delay = Duration::from_micros(r % 3001);
    if r >> 32 & 1 == 0 {
        (delay, Duration::ZERO)
    } else {
        (Duration::ZERO, delay)
    }
}

/// 32 logins of 32 accounts at once. The contract serves a burst that the
/// hashing threads finish within 2 s and sheds the rest with 503 and
/// `Retry-After`; how much fits depends on the machine and its load, so the
/// test asserts what does not: the first round (one login per core) is
/// always served, every other login is served or shed with `Retry-After`,
/// and a shed login succeeds when retried. The time the burst took and how
/// many were shed are printed (the benchmark measures throughput).
fn thirty_two_concurrent_logins_are_served_or_shed_with_retry_after_never_lost(db: Db) {
    const N: usize = 32;
    let database = Database::start(db);
    let _cpu = exclusive_cpu();
    let backend = behind_proxy(&database);
    let addr = backend.addr;
    let email = |i: usize| format!("burst{i}@example.com");
    // Registrations: 3 per minute per client address; 4 at a time.
    std::thread::scope(|s| {
        for w in 0..4 {
            s.spawn(move || {
                for i in (w..N).step_by(4) {
                    register(addr, &email(i), PASSWORD, &client(1, i));
                }
            });
        }
    });
    let barrier = Barrier::new(N + 1);
    let (start, answers) = std::thread::scope(|s| {
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (barrier, email) = (&barrier, email(i));
                s.spawn(move || {
                    let body = creds(&email, PASSWORD);
                    let from = client(1, 100 + i);
                    barrier.wait();
                    let res = post(addr, "/auth/login", &body, None, &from);
                    (Instant::now(), res)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (start, answers)
    });
    let last = answers.iter().map(|(at, _)| *at).max().unwrap();
    let elapsed = last.saturating_duration_since(start);
    let served = answers.iter().filter(|(_, r)| r.status == 200).count();
    println!("{N} concurrent logins: {served} served in {elapsed:?}, the rest shed");
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert!(
        served >= cores.min(N),
        "{served} served at once, fewer than the {cores} hashing threads"
    );
    for (i, (_, res)) in answers.iter().enumerate() {
        match res.status {
            200 => {}
            503 => {
                let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=10).contains(&retry), "login {i}: Retry-After {retry}");
                assert_eq!(
                    res.json().unwrap()["type"],
                    "urn:palisade:problem:unavailable"
                );
                // The client honours Retry-After (the login quota, 5 a
                // minute per address, allows four more).
                let again = honour_retry_after(4, || {
                    post(
                        addr,
                        "/auth/login",
                        &creds(&email(i), PASSWORD),
                        None,
                        &client(1, 100 + i),
                    )
                });
                assert_eq!(again.status, 200, "login {i} retried: {}", again.text());
            }
            other => panic!("login {i}: {other} {}", res.text()),
        }
    }
}

/// The per-user quota of authenticated API requests: 100 a minute (one more
/// every 600 ms).
const API_BURST: u32 = 100;
const API_INTERVAL: Duration = Duration::from_millis(600);

/// Sends `/me` with `access` until it is refused, each request from another
/// client address (so only the per-user policy can refuse): how many passed,
/// the refusal, and the time from before the first was sent to after the
/// refusal came. Bounded: a quota that never refuses fails the test.
fn drain(addr: SocketAddr, access: &str, first_client: usize) -> (u64, Response, Duration) {
    let start = Instant::now();
    let mut ok = 0;
    for i in first_client..first_client + 2000 {
        let res = me(addr, access, &client(2, i));
        match res.status {
            200 => ok += 1,
            429 => return (ok, res, start.elapsed()),
            other => panic!("request {i}: {other} {}", res.text()),
        }
    }
    panic!("the per-user quota never refused: {ok} requests passed");
}

fn logout_still_answers_204_when_the_per_user_quota_is_drained_from_another_token(db: Db) {
    const DEFENDERS: usize = 3;
    let database = Database::start(db);
    let _cpu = shared_cpu();
    let backend = behind_proxy(&database);
    let addr = backend.addr;
    let email = "drained@example.com";
    register(addr, email, PASSWORD, &client(2, 0));
    let a = login(addr, email, PASSWORD, &client(2, 1));
    let defenders: Vec<Pair> = (0..DEFENDERS)
        .map(|i| login(addr, email, PASSWORD, &client(2, 2 + i)))
        .collect();

    // Drain the per-user quota with token A: the burst passes whatever the
    // clock, then no more than the refill over the time it took.
    let (ok, limited, elapsed) = drain(addr, &a.access, 10);
    let most = most_allowed(API_BURST, API_INTERVAL, elapsed);
    assert!(
        (u64::from(API_BURST)..=most).contains(&ok),
        "{ok} requests passed first in {elapsed:?} (at most {most})"
    );
    let policy = limited.header("ratelimit-policy").unwrap_or_default();
    assert!(
        policy.starts_with("\"api\";"),
        "the per-user policy refused, not {policy:?}"
    );
    assert_eq!(
        limited.json().unwrap()["type"],
        "urn:palisade:problem:rate-limited"
    );
    assert!(limited.header("retry-after").is_some());

    // Another token of the user defends the account all the same: its logout
    // is answered 204 right after A was refused. Whether the quota was still
    // drained when the logout came is known afterwards: A refused again (no
    // counted request passed in between, so none could have at the logout).
    // The quota refills one request every 600 ms; on a machine so slow that
    // it refilled in between, the next defender tries again.
    let mut defended = 0;
    let mut proven = false;
    while !proven && defended < DEFENDERS {
        let first = 3000 + 10 * defended;
        drain(addr, &a.access, first);
        let res = logout(addr, &defenders[defended].access, &client(2, first + 5));
        assert_eq!(res.status, 204, "defender {defended}: {}", res.text());
        let after = me(addr, &a.access, &client(2, first + 6));
        assert!(matches!(after.status, 200 | 429), "{}", after.text());
        proven = after.status == 429;
        defended += 1;
    }
    assert!(
        proven,
        "the quota refilled between A's refusal and each of {DEFENDERS} logouts"
    );
    // The sessions logged out are over.
    for (d, defender) in defenders.iter().take(defended).enumerate() {
        let res = me(addr, &defender.access, &client(2, 4000 + d));
        assert_eq!(res.status, 401, "defender {d}: {}", res.text());
        let res = refresh(addr, &defender.refresh, &client(2, 4100 + d));
        assert_eq!(res.status, 401, "defender {d}: {}", res.text());
    }
}

fn a_password_registered_in_full_width_logs_in_with_its_ascii_nfkc_form(db: Db) {
    let database = Database::start(db);
    let _cpu = shared_cpu();
    let backend = behind_proxy(&database);
    let addr = backend.addr;
    let full_width = "ｖｉｏｌｅｔ ｑｕａｒｔｚ ｈａｒｂｏｒ ｔｉｍｂｅｒ";
    assert_ne!(full_width, PASSWORD);
    let email = "wide@example.com";
    register(addr, email, full_width, &client(3, 0));
    let ascii = login(addr, email, PASSWORD, &client(3, 1));
    assert_eq!(me(addr, &ascii.access, &client(3, 1)).status, 200);
    let wide = login(addr, email, full_width, &client(3, 2));
    assert_eq!(me(addr, &wide.access, &client(3, 2)).status, 200);
    // And a different password still does not.
    let res = post(
        addr,
        "/auth/login",
        &creds(email, "violet quartz harbor timbers"),
        None,
        &client(3, 3),
    );
    assert_eq!(res.status, 401, "{}", res.text());
}

fn logout_all_ends_every_access_and_refresh_token_of_the_user(db: Db) {
    let database = Database::start(db);
    let _cpu = shared_cpu();
    let backend = behind_proxy(&database);
    let addr = backend.addr;
    let email = "everywhere@example.com";
    register(addr, email, PASSWORD, &client(4, 0));
    let sessions: Vec<Pair> = (1..=3)
        .map(|i| login(addr, email, PASSWORD, &client(4, i)))
        .collect();
    for (i, s) in sessions.iter().enumerate() {
        assert_eq!(me(addr, &s.access, &client(4, 10 + i)).status, 200);
    }
    let res = post(
        addr,
        "/auth/logout-all",
        &json!({}),
        Some(&sessions[1].access),
        &client(4, 20),
    );
    assert_eq!(res.status, 204, "{}", res.text());
    let ended_at = unix_now();
    for (i, s) in sessions.iter().enumerate() {
        let res = me(addr, &s.access, &client(4, 30 + i));
        assert_eq!(res.status, 401, "access token {i}: {}", res.text());
        let res = refresh(addr, &s.refresh, &client(4, 40 + i));
        assert_eq!(res.status, 401, "refresh token {i}: {}", res.text());
    }
    // Token times have a one-second resolution: a token issued in the second
    // of the logout-all is refused too. Wait for the next second (bounded).
    let deadline = Instant::now() + Duration::from_secs(3);
    while unix_now() <= ended_at {
        assert!(Instant::now() < deadline, "the wall clock did not move");
        std::thread::sleep(Duration::from_millis(5));
    }
    let fresh = login(addr, email, PASSWORD, &client(4, 50));
    let res = me(addr, &fresh.access, &client(4, 50));
    assert_eq!(res.status, 200, "{}", res.text());
    let res = refresh(addr, &fresh.refresh, &client(4, 50));
    assert_eq!(res.status, 200, "{}", res.text());
}

fn password_change_needs_the_current_password_and_ends_the_other_sessions(db: Db) {
    let database = Database::start(db);
    let _cpu = shared_cpu();
    let backend = behind_proxy(&database);
    let addr = backend.addr;
    let email = "changer@example.com";
    register(addr, email, PASSWORD, &client(5, 0));
    let a = login(addr, email, PASSWORD, &client(5, 1));
    let b = login(addr, email, PASSWORD, &client(5, 2));
    let change = |current: &str, new: &str| {
        post(
            addr,
            "/auth/password",
            &json!({"current_password": current, "new_password": new}),
            Some(&a.access),
            &client(5, 1),
        )
    };

    let res = change("not the password at all", NEW_PASSWORD);
    assert_eq!(res.status, 401, "{}", res.text());
    let res = change(PASSWORD, "password");
    assert_eq!(res.status, 422, "{}", res.text());
    let errors = res.json().unwrap()["errors"].clone();
    let fields: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(
        !fields.is_empty() && fields.iter().all(|f| *f == "new_password"),
        "{errors}"
    );
    // Neither refusal ended anything.
    assert_eq!(me(addr, &b.access, &client(5, 2)).status, 200);

    let res = change(PASSWORD, NEW_PASSWORD);
    assert_eq!(res.status, 204, "{}", res.text());
    // The caller's session goes on; the other one is over.
    let res = me(addr, &a.access, &client(5, 1));
    assert_eq!(res.status, 200, "{}", res.text());
    let res = me(addr, &b.access, &client(5, 2));
    assert_eq!(res.status, 401, "{}", res.text());
    let res = refresh(addr, &b.refresh, &client(5, 2));
    assert_eq!(res.status, 401, "{}", res.text());
    let res = refresh(addr, &a.refresh, &client(5, 1));
    assert_eq!(
        res.status,
        200,
        "the caller's refresh token: {}",
        res.text()
    );

    let res = post(
        addr,
        "/auth/login",
        &creds(email, PASSWORD),
        None,
        &client(5, 3),
    );
    assert_eq!(res.status, 401, "the old password: {}", res.text());
    login(addr, email, NEW_PASSWORD, &client(5, 4));
}

/// Two instances behind one load balancer ([`Shared`]).
struct TwoInstances {
    one: Backend,
    two: Backend,
    _redis: RedisServer,
    _database: Database,
}

impl TwoInstances {
    fn start(database: Database) -> Self {
        let redis = RedisServer::start().unwrap();
        let env = Shared::new(redis.url(), &database);
        let one = env.start();
        let two = env.start();
        Self {
            one,
            two,
            _redis: redis,
            _database: database,
        }
    }

    /// One account logged in `n` times, alternating instances; session `i`
    /// logs in from `client(test, i)`.
    fn sessions(&self, test: u8, email: &str, n: usize) -> Vec<Pair> {
        register(self.one.addr, email, PASSWORD, &client(test, 999));
        let addrs = [self.one.addr, self.two.addr];
        let mut sessions = vec![None; n];
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    s.spawn(move || {
                        (w..n)
                            .step_by(4)
                            .map(|i| (i, login(addrs[i % 2], email, PASSWORD, &client(test, i))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for w in workers {
                for (i, pair) in w.join().unwrap() {
                    sessions[i] = Some(pair);
                }
            }
        });
        sessions.into_iter().map(Option::unwrap).collect()
    }
}

/// What one refresh-vs-logout race left behind.
struct RaceOutcome {
    original: Pair,
    refreshed: Option<Pair>,
    refresh_status: u16,
    logout_status: u16,
    /// The bodies of the two answers, for the failure message.
    bodies: (String, String),
}

/// Runs `f(i)` for `0..n`, `batch` at a time, each on its own thread.
fn in_batches<T: Send>(n: usize, batch: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        std::thread::scope(|s| {
            let threads: Vec<_> = (start..n.min(start + batch))
                .map(|i| {
                    let f = &f;
                    s.spawn(move || f(i))
                })
                .collect();
            out.extend(threads.into_iter().map(|t| t.join().unwrap()));
        });
    }
    out
}

/// Refresh on instance one and logout on instance two, released together
/// with one side delayed 0–3 ms.
fn race_refresh_with_logout(
    env: &TwoInstances,
    seed: &std::hash::RandomState,
    i: usize,
    session: &Pair,
) -> RaceOutcome {
    let (before_refresh, before_logout) = jitter(seed, i);
    let from = client(6, i);
    let barrier = Barrier::new(2);
    let (refreshed, logged_out) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            barrier.wait();
            std::thread::sleep(before_refresh);
            refresh(env.one.addr, &session.refresh, &from)
        });
        let l = s.spawn(|| {
            barrier.wait();
            std::thread::sleep(before_logout);
            // A 503 (a store slow to answer on a loaded machine) is what a
            // client retries: the race is about the logout that succeeds.
            // A retry answered 401 found the first attempt done (the token
            // already revoked): logged out all the same.
            let mut res = logout(env.two.addr, &session.access, &from);
            for _ in 0..20 {
                if res.status != 503 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                res = logout(env.two.addr, &session.access, &from);
                if res.status == 401 {
                    res.status = 204;
                }
            }
            res
        });
        (r.join().unwrap(), l.join().unwrap())
    });
    RaceOutcome {
        original: session.clone(),
        refreshed: (refreshed.status == 200).then(|| Pair::from_response(&refreshed)),
        refresh_status: refreshed.status,
        logout_status: logged_out.status,
        bodies: (refreshed.text(), logged_out.text()),
    }
}

/// Every token the race left behind, tried on both instances: the
/// problems found (none when every one is refused).
fn live_tokens(env: &TwoInstances, i: usize, outcome: &RaceOutcome) -> Vec<String> {
    let from = client(6, i);
    let mut problems = Vec::new();
    let pairs = std::iter::once(("original", &outcome.original))
        .chain(outcome.refreshed.iter().map(|p| ("refreshed", p)));
    for (which, pair) in pairs {
        for (instance, addr) in [("one", env.one.addr), ("two", env.two.addr)] {
            let res = refresh(addr, &pair.refresh, &from);
            if res.status != 401 {
                problems.push(format!(
                    "session {i}: {which} refresh token on instance {instance}: {} {}",
                    res.status,
                    res.text()
                ));
            }
            let res = me(addr, &pair.access, &from);
            if res.status != 401 {
                problems.push(format!(
                    "session {i}: {which} access token on instance {instance}: {} {}",
                    res.status,
                    res.text()
                ));
            }
        }
    }
    problems
}

fn refresh_races_with_logout_leave_no_live_token_across_two_instances(db: Db) {
    const N: usize = 500;
    let database = Database::start(db);
    let _cpu = shared_cpu();
    let env = TwoInstances::start(database);
    let sessions = env.sessions(6, "racer@example.com", N);
    let seed = std::hash::RandomState::new();
    let outcomes = in_batches(N, 20, |i| {
        race_refresh_with_logout(&env, &seed, i, &sessions[i])
    });

    let won = outcomes.iter().filter(|o| o.refreshed.is_some()).count();
    println!("refresh vs logout: {won} of {N} refreshes answered 200 before the logout");
    let odd: Vec<_> = outcomes
        .iter()
        .enumerate()
        // A refresh answered 503 minted nothing (the client retries it).
        .filter(|(_, o)| o.logout_status != 204 || !matches!(o.refresh_status, 200 | 401 | 503))
        .map(|(i, o)| (i, o.refresh_status, o.logout_status, &o.bodies))
        .collect();
    assert!(
        odd.is_empty(),
        "(session, refresh, logout, bodies) answers: {odd:?}"
    );
    let problems: Vec<String> = in_batches(N, 10, |i| live_tokens(&env, i, &outcomes[i]))
        .into_iter()
        .flatten()
        .collect();
    assert!(
        problems.is_empty(),
        "{} live tokens after logout:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// What one legit-refresh-vs-replay race answered.
struct ReplayOutcome {
    legit: Response,
    replay: Response,
}

/// Refreshes once (R0 → R1), then refreshes R1 on instance one while R0 is
/// replayed on instance two, one side delayed 0–3 ms.
fn race_refresh_with_replay(
    env: &TwoInstances,
    seed: &std::hash::RandomState,
    i: usize,
    session: &Pair,
) -> ReplayOutcome {
    let from = client(7, i);
    let res = refresh(env.one.addr, &session.refresh, &from);
    assert_eq!(
        res.status,
        200,
        "session {i}: first refresh: {}",
        res.text()
    );
    let r1 = Pair::from_response(&res);
    let (before_legit, before_replay) = jitter(seed, i);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let legit = s.spawn(|| {
            barrier.wait();
            std::thread::sleep(before_legit);
            refresh(env.one.addr, &r1.refresh, &from)
        });
        let replay = s.spawn(|| {
            barrier.wait();
            std::thread::sleep(before_replay);
            refresh(env.two.addr, &session.refresh, &from)
        });
        ReplayOutcome {
            legit: legit.join().unwrap(),
            replay: replay.join().unwrap(),
        }
    })
}

fn a_replay_racing_a_legit_refresh_within_the_grace_window_is_refused_without_revoking(db: Db) {
    const N: usize = 30;
    let database = Database::start(db);
    let _cpu = shared_cpu();
    let env = TwoInstances::start(database);
    let sessions = env.sessions(7, "replayer@example.com", N);
    let seed = std::hash::RandomState::new();
    let outcomes = in_batches(N, 10, |i| {
        race_refresh_with_replay(&env, &seed, i, &sessions[i])
    });
    let legit_ok = outcomes.iter().filter(|o| o.legit.status == 200).count();
    let replay_refused = outcomes.iter().filter(|o| o.replay.status == 401).count();
    println!(
        "refresh vs replay: {legit_ok} of {N} legit refreshes answered 200, \
         {replay_refused} of {N} replays 401"
    );
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(
            o.replay.status,
            401,
            "session {i}: replay: {}",
            o.replay.text()
        );
        assert_eq!(
            o.legit.status,
            200,
            "session {i}: legit: {}",
            o.legit.text()
        );
    }
    // No family was revoked: the tokens of the legit refresh work, on both
    // instances.
    let problems: Vec<String> = in_batches(N, 10, |i| {
        let from = client(7, i);
        let pair = Pair::from_response(&outcomes[i].legit);
        let mut problems = Vec::new();
        let res = me(env.two.addr, &pair.access, &from);
        if res.status != 200 {
            problems.push(format!(
                "session {i}: access token: {} {}",
                res.status,
                res.text()
            ));
        }
        let res = refresh(env.two.addr, &pair.refresh, &from);
        if res.status != 200 {
            problems.push(format!(
                "session {i}: refresh token: {} {}",
                res.status,
                res.text()
            ));
        }
        problems
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

palisade_security_tests::on_both_databases!(
    thirty_two_concurrent_logins_are_served_or_shed_with_retry_after_never_lost,
    logout_still_answers_204_when_the_per_user_quota_is_drained_from_another_token,
    a_password_registered_in_full_width_logs_in_with_its_ascii_nfkc_form,
    logout_all_ends_every_access_and_refresh_token_of_the_user,
    password_change_needs_the_current_password_and_ends_the_other_sessions,
    refresh_races_with_logout_leave_no_live_token_across_two_instances,
    a_replay_racing_a_legit_refresh_within_the_grace_window_is_refused_without_revoking,
);

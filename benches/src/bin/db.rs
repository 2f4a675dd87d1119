//! Register, login and refresh throughput of the reference backend on
//! SQLite and on PostgreSQL, in one process over loopback.
//!
//! ```sh
//! cargo run --release -p palisade-bench --bin db        # ~1 min
//! ```
//!
//! The backend is served in process (2 runtime workers); PostgreSQL is a
//! throwaway cluster on a unix socket (palisade-testkit's `PostgresServer`)
//! with `fsync` on, and the SQLite file commits with `synchronous = FULL`
//! (sqlx's default): both durable, both on the same disk. Each run: `REGISTER` registrations and `LOGIN` logins from
//! `CLIENTS` concurrent clients, then `REFRESH` refreshes, each client
//! rotating its own session's chain. Every request carries its own
//! `X-Forwarded-For` address (127.0.0.1 is a trusted proxy) so the per-IP
//! limits do not hide the cost. Medians of `RUNS` runs; the last line is
//! one JSON object.

#![allow(clippy::cast_precision_loss)] // rates for humans
#![allow(clippy::panic)] // a benchmark that cannot set up stops loudly
#![allow(clippy::indexing_slicing)] // serde_json::Value indexing yields Null; the other indices are in range by construction

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use palisade_bench::serve;
use palisade_testkit::http::Request;
use palisade_testkit::postgres::PostgresServer;
use reference_backend::{AppState, Settings, open_database, open_store, router};
use serde_json::{Value, json};

const PASSWORD: &str = "violet quartz harbor timber";
const RUNS: usize = 5;
const CLIENTS: usize = 8;
const REGISTER: usize = 32;
const LOGIN: usize = 32;
const REFRESH: usize = 2_000;

static NEXT_IP: AtomicU64 = AtomicU64::new(1);

fn next_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let res = Request::post(path)
        .header("content-type", "application/json")
        .header("x-forwarded-for", &next_ip())
        .body(body.to_string())
        .send(addr)
        .unwrap_or_else(|e| panic!("{e}"));
    (res.status, res.json().unwrap_or(Value::Null))
}

fn start(vars: Vec<(&'static str, String)>) -> SocketAddr {
    let mut all = vec![("APP_TRUSTED_PROXIES", "127.0.0.1/32".to_owned())];
    all.extend(vars);
    let settings = Settings::from_vars(all).unwrap_or_else(|e| panic!("{e}"));
    serve(move || async move {
        let db = open_database(&settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = open_store(&settings).unwrap_or_else(|e| panic!("{e}"));
        let state = AppState::new(&db, store, &settings).unwrap_or_else(|e| panic!("{e}"));
        router(&state, &settings).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Runs `per_client(client, n)` on `CLIENTS` threads, `total` calls in all;
/// returns the calls answered 2xx per second and the others' count.
fn throughput(total: usize, per_client: impl Fn(usize, usize) -> bool + Sync) -> (f64, usize) {
    let start = Instant::now();
    let ok: usize = std::thread::scope(|s| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let per_client = &per_client;
                s.spawn(move || {
                    (c..total)
                        .step_by(CLIENTS)
                        .filter(|&n| per_client(c, n))
                        .count()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| panic!("a client panicked")))
            .sum()
    });
    (ok as f64 / start.elapsed().as_secs_f64(), total - ok)
}

/// One run: register, login, refresh rates (per second) and failures.
fn run(addr: SocketAddr, run: usize) -> [(f64, usize); 3] {
    let email = |n: usize| format!("r{run}-u{n}@example.com");
    let register = throughput(REGISTER, |_, n| {
        post(
            addr,
            "/auth/register",
            &json!({"email": email(n), "password": PASSWORD}),
        )
        .0 == 201
    });
    let login = throughput(LOGIN, |_, n| {
        post(
            addr,
            "/auth/login",
            &json!({"email": email(n % REGISTER), "password": PASSWORD}),
        )
        .0 == 200
    });
    // One session per client, each rotating its own chain.
    let chains: Vec<std::sync::Mutex<String>> = (0..CLIENTS)
        .map(|c| {
            let (status, body) = post(
                addr,
                "/auth/login",
                &json!({"email": email(c), "password": PASSWORD}),
            );
            assert_eq!(status, 200, "{body}");
            std::sync::Mutex::new(
                body["refresh_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let refresh = throughput(REFRESH, |c, _| {
        let mut token = chains[c]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (status, body) = post(addr, "/auth/refresh", &json!({"refresh_token": *token}));
        if status == 200 {
            body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .clone_into(&mut token);
        }
        status == 200
    });
    [register, login, refresh]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn measure(name: &str, addr: SocketAddr) -> Value {
    let runs: Vec<[(f64, usize); 3]> = (0..RUNS).map(|r| run(addr, r)).collect();
    let mut out = serde_json::Map::new();
    for (i, what) in ["register", "login", "refresh"].iter().enumerate() {
        let rates: Vec<f64> = runs.iter().map(|r| r[i].0).collect();
        let failed: usize = runs.iter().map(|r| r[i].1).sum();
        let m = median(rates.clone());
        println!(
            "{name:>10} {what:>8}: median {m:8.1}/s over {RUNS} runs {:?}, {failed} not 2xx",
            rates.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
        out.insert(format!("{name}_{what}_per_s"), json!(m));
        out.insert(format!("{name}_{what}_not_2xx"), json!(failed));
    }
    Value::Object(out)
}

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sqlite = start(vec![("APP_DATA_DIR", dir.path().display().to_string())]);
    // fsync on, like the SQLite file's commits (synchronous = FULL).
    let pg = PostgresServer::start_durable().unwrap_or_else(|e| panic!("{e}"));
    let url = pg
        .create_database("bench")
        .unwrap_or_else(|e| panic!("{e}"));
    let pg_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let postgres = start(vec![
        ("APP_DATA_DIR", pg_dir.path().display().to_string()),
        ("APP_DATABASE_URL", url),
    ]);
    println!(
        "{CLIENTS} clients; {REGISTER} registrations, {LOGIN} logins, {REFRESH} refreshes per run"
    );
    let mut all = serde_json::Map::new();
    for part in [measure("sqlite", sqlite), measure("postgres", postgres)] {
        if let Value::Object(m) = part {
            all.extend(m);
        }
    }
    println!("{}", Value::Object(all));
    drop(pg);
}

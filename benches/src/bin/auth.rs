//! Login benchmarks against the reference backend, in one process over
//! loopback.
//!
//! ```sh
//! cargo run --release -p palisade-bench --bin auth
//! ```
//!
//! 1. **Timing**: alternating logins with a wrong password to existing
//!    accounts and to accounts that do not exist; the medians must be within
//!    10% of each other (the dummy hash does the same work).
//! 2. **Flood**: 200 concurrent clients sending wrong-password logins for
//!    10 s while one client probes `/health` every 20 ms: the probe's p99,
//!    the process's resident memory above idle, and hashes per second at
//!    saturation. Twice: clients honouring `Retry-After`, and clients
//!    retrying at once. The second is also run against a control — bare
//!    axum answering every login 503 at once — to tell what the backend
//!    costs from what the flood costs any server on this host.
//!
//! Every request carries its own `X-Forwarded-For` address (the backend
//! trusts 127.0.0.1 as a proxy) so the per-IP limits do not hide the cost
//! being measured. The last line is one JSON object.

#![allow(clippy::cast_precision_loss)] // rates for humans
#![allow(clippy::panic)] // a benchmark that cannot set up stops loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use palisade_bench::serve;
use palisade_testkit::http::Request;
use reference_backend::{AppState, Settings, open_database, open_store, router};

const PASSWORD: &str = "violet quartz harbor timber";
const ACCOUNTS: usize = 64;
const TIMING_ROUNDS: usize = 300;
const FLOOD_CLIENTS: usize = 200;
const FLOOD: Duration = Duration::from_secs(10);

static NEXT_IP: AtomicU64 = AtomicU64::new(1);

fn next_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// One login: its status, its latency and its `Retry-After` (seconds).
fn login(addr: SocketAddr, email: &str, password: &str) -> (u16, Duration, u64) {
    let body = serde_json::json!({"email": email, "password": password}).to_string();
    let start = Instant::now();
    let res = Request::post("/auth/login")
        .header("content-type", "application/json")
        .header("x-forwarded-for", &next_ip())
        .body(body)
        .send(addr);
    let elapsed = start.elapsed();
    let retry_after = res
        .as_ref()
        .ok()
        .and_then(|r| r.header("retry-after"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    (res.map_or(0, |r| r.status), elapsed, retry_after)
}

fn start_server(dir: &std::path::Path) -> SocketAddr {
    let settings = Settings::from_vars([
        ("APP_DATA_DIR", dir.display().to_string()),
        ("APP_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    serve(move || async move {
        let db = open_database(&settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = open_store(&settings).unwrap_or_else(|e| panic!("{e}"));
        let state = AppState::new(&db, store, &settings).unwrap_or_else(|e| panic!("{e}"));
        router(&state, &settings).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The control for the flood: a bare axum server on the same kind of
/// runtime whose `/auth/login` reads the body and answers 503 at once (no
/// palisade, no hashing, no database). Under the same flood, its `/health`
/// p99 is what the host and the generator allow any server.
fn start_control_server() -> SocketAddr {
    use axum::routing::{get, post};
    serve(|| async {
        axum::Router::new()
            .route(
                "/health",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .route(
                "/auth/login",
                post(|_body: String| async {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                    )
                }),
            )
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let addr = start_server(dir.path());
    for i in 0..ACCOUNTS {
        let body =
            serde_json::json!({"email": format!("user{i}@example.com"), "password": PASSWORD})
                .to_string();
        let res = Request::post("/auth/register")
            .header("content-type", "application/json")
            .header("x-forwarded-for", &next_ip())
            .body(body)
            .send(addr)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(res.status, 201, "{}", res.text());
    }

    let timing = timing(addr);
    let polite = flood(addr, true, "reference backend");
    let attack = flood(addr, false, "reference backend");
    let control = flood(
        start_control_server(),
        false,
        "control: bare axum, login = 503",
    );
    let mut all = serde_json::Map::new();
    let prefixed = |prefix: &str, v: serde_json::Value| {
        let serde_json::Value::Object(m) = v else {
            return serde_json::Value::Null;
        };
        serde_json::Value::Object(
            m.into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .collect(),
        )
    };
    for part in [
        timing,
        prefixed("polite_", polite),
        prefixed("attack_", attack),
        prefixed("control_attack_", control),
    ] {
        if let serde_json::Value::Object(m) = part {
            all.extend(m);
        }
    }
    println!("{}", serde_json::Value::Object(all));
}

/// Known account + wrong password vs unknown account, alternating.
fn timing(addr: SocketAddr) -> serde_json::Value {
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for round in 0..TIMING_ROUNDS {
        let k = || {
            login(
                addr,
                &format!("user{}@example.com", round % ACCOUNTS),
                "a wrong password",
            )
        };
        let u = || {
            login(
                addr,
                &format!("ghost{round}@example.com"),
                "a wrong password",
            )
        };
        let (a, b) = if round % 2 == 0 {
            (k(), u())
        } else {
            let b = u();
            (k(), b)
        };
        assert_eq!((a.0, b.0), (401, 401), "round {round}");
        known.push(a.1);
        unknown.push(b.1);
    }
    let (mk, mu) = (median(known), median(unknown));
    let timing_ratio = mu.as_secs_f64() / mk.as_secs_f64();
    println!(
        "timing: median login, existing account {:.2} ms, unknown account {:.2} ms (ratio {timing_ratio:.3})",
        mk.as_secs_f64() * 1e3,
        mu.as_secs_f64() * 1e3
    );
    serde_json::json!({
        "login_known_median_ms": mk.as_secs_f64() * 1e3,
        "login_unknown_median_ms": mu.as_secs_f64() * 1e3,
        "unknown_vs_known": (timing_ratio * 1000.0).round() / 1000.0,
    })
}

/// 200 clients of wrong-password logins while `/health` is probed. With
/// `polite`, clients wait the `Retry-After` of a 503 (200 concurrent logins);
/// without, they retry at once (an attacker's closed loop).
fn flood(addr: SocketAddr, polite: bool, server: &str) -> serde_json::Value {
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("{e}"));
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let ok = Request::get("/health")
                    .header("x-forwarded-for", &next_ip())
                    .send(addr)
                    .is_ok_and(|r| r.status == 200);
                if ok {
                    let _ =
                        hist.record(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            hist
        })
    };
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let start = Instant::now();
    let clients: Vec<_> = (0..FLOOD_CLIENTS)
        .map(|c| {
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while start.elapsed() < FLOOD {
                    let (status, _, retry_after) = login(
                        addr,
                        &format!("flood{c}-{n}@example.com"),
                        "a wrong password",
                    );
                    if status == 503 && polite {
                        // A well-behaved client honours `Retry-After`.
                        std::thread::sleep(Duration::from_secs(retry_after));
                    }
                    let slot = match status {
                        401 => 0,
                        503 => 1,
                        429 => 2,
                        _ => 3,
                    };
                    if let Some(c) = counts.get(slot) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let hist = prober.join().unwrap_or_else(|_| panic!("prober"));
    let _ = sampler.join();
    let get = |i: usize| counts.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
    let (checked, busy, limited, other) = (get(0), get(1), get(2), get(3));
    let hashes_per_s = checked as f64 / elapsed.as_secs_f64();
    let grown_mib = (peak.load(Ordering::Relaxed).saturating_sub(idle)) as f64 / (1024.0 * 1024.0);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "flood on {server} ({}): {FLOOD_CLIENTS} clients for {:.1} s: {checked} checked (401), {busy} busy (503), {limited} limited (429), {other} other; \
         {hashes_per_s:.0} hashes/s; /health p50 {:.2} ms, p99 {p99_ms:.2} ms over {} probes; memory +{grown_mib:.1} MiB above idle (budget {} MiB)",
        if polite {
            "clients honour Retry-After"
        } else {
            "clients retry at once"
        },
        elapsed.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.len(),
        cores * 19,
    );
    serde_json::json!({
        "flood_hashes_per_s": hashes_per_s.round(),
        "flood_health_p99_ms": p99_ms,
        "flood_memory_above_idle_mib": (grown_mib * 10.0).round() / 10.0,
        "flood_busy_503": busy,
        "flood_other": other,
    })
}

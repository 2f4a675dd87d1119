//! Store benchmarks against their baselines, measured in one run.
//!
//! ```sh
//! cargo run --release -p palisade-bench --bin store            # everything, ~1 min
//! cargo run --release -p palisade-bench --bin store -- memory  # decisions/s vs governor
//! cargo run --release -p palisade-bench --bin store -- redis   # vs raw redis-rs EVALSHA
//! ```
//!
//! - **memory**: decisions/s over 100,000 `u64` keys on one thread, governor's
//!   keyed limiter vs `MemoryStore::gcra`, alternating rounds; bytes per key
//!   (resident memory growth, each measured in a fresh child process, 1 M
//!   keys); 10 M distinct keys through a store capped at 1 M keys.
//! - **redis**: decisions/s with 64 tasks on one multiplexed connection, a
//!   raw redis-rs `EVALSHA` of a minimal GCRA script vs `Store::gcra`, over
//!   a `redis-server` on a unix socket; then Redis is killed and the p99 of a
//!   decision once the breaker is open is measured for each fail policy.
//!
//! The last line is one JSON object with every figure.

#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // rates for humans
#![allow(clippy::panic)] // a benchmark that cannot set up stops loudly

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{Quota as GovQuota, RateLimiter};
use hdrhistogram::Histogram;
use palisade::store::{
    FailPolicy, GcraRequest, Key, MemoryStore, Part, Quota, RedisOptions, Store,
};
use palisade_testkit::redis::RedisServer;

const KEYS: u64 = 100_000;
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(2);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Runs `f` over the key space for `ROUND`, returns decisions per second.
fn rate(mut f: impl FnMut(u64) -> bool) -> f64 {
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut allowed = 0u64;
    while start.elapsed() < ROUND {
        for _ in 0..10_000 {
            // A cheap scramble so consecutive keys are not neighbours.
            let key = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS;
            allowed += u64::from(f(key));
            n += 1;
        }
    }
    std::hint::black_box(allowed);
    n as f64 / start.elapsed().as_secs_f64()
}

fn memory() -> serde_json::Value {
    let quota = NonZeroU32::new(1_000_000).unwrap_or(NonZeroU32::MIN);
    let governor = RateLimiter::keyed(GovQuota::per_second(quota));
    let store = MemoryStore::builder().max_keys(1_000_000).build();
    let q = Quota::per_second(1_000_000);
    let (mut gov, mut pal) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let g = rate(|k| governor.check_key(&k).is_ok());
        let p = rate(|k| {
            store
                .gcra(&[GcraRequest::new(Key::new("k").with(Part::Int(k)), q)])
                .allowed()
        });
        println!(
            "round {round}: governor {:.1} M/s, palisade memory {:.1} M/s",
            g / 1e6,
            p / 1e6
        );
        gov.push(g);
        pal.push(p);
    }
    let (g, p) = (median(gov), median(pal));
    let exe = std::env::current_exe().unwrap_or_default();
    let child = |what: &str| -> f64 {
        let out = std::process::Command::new(&exe)
            .arg("child")
            .arg(what)
            .output();
        out.ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let gov_bytes = child("governor");
    let pal_bytes = child("palisade");
    let flood = child("flood");
    println!(
        "memory: governor {:.1} M/s, palisade {:.1} M/s ({:.2}x); bytes/key governor {gov_bytes:.1}, palisade {pal_bytes:.1} ({:.2}x); 10 M keys into a 1 M cap: memory grew {:.1}% past the cap's",
        g / 1e6,
        p / 1e6,
        p / g,
        pal_bytes / gov_bytes,
        flood * 100.0,
    );
    serde_json::json!({
        "governor_decisions_per_s": g.round(),
        "memory_decisions_per_s": p.round(),
        "memory_vs_governor": (p / g * 100.0).round() / 100.0,
        "governor_bytes_per_key": gov_bytes,
        "memory_bytes_per_key": pal_bytes,
        "flood_growth_past_cap": flood,
    })
}

/// In a fresh process: resident bytes per key after 1 M keys, or the growth
/// in MiB after 10 M distinct keys into a 1 M cap.
fn child(what: &str) {
    const N: u64 = 1_000_000;
    let before = rss_bytes();
    let value = match what {
        "governor" => {
            let quota = NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN);
            let limiter = RateLimiter::keyed(GovQuota::per_hour(quota));
            for k in 0..N {
                let _ = limiter.check_key(&k);
            }
            let grown = rss_bytes() - before;
            std::hint::black_box(&limiter);
            grown as f64 / N as f64
        }
        "palisade" => {
            let store = MemoryStore::builder().max_keys(N as usize).build();
            let q = Quota::per_hour(10);
            for k in 0..N {
                store.gcra(&[GcraRequest::new(Key::new("k").with(Part::Int(k)), q)]);
            }
            let grown = rss_bytes() - before;
            std::hint::black_box(&store);
            grown as f64 / N as f64
        }
        _ => {
            let store = MemoryStore::builder().max_keys(N as usize).build();
            let q = Quota::per_hour(10);
            let mut at_cap = 0;
            for k in 0..10 * N {
                store.gcra(&[GcraRequest::new(Key::new("k").with(Part::Int(k)), q)]);
                if k == N {
                    at_cap = rss_bytes();
                }
            }
            assert!(store.len() <= store.capacity());
            let end = rss_bytes();
            eprintln!(
                "flood: {} keys held (cap {}); resident at the cap {} MiB, after 10 M keys {} MiB",
                store.len(),
                store.capacity(),
                (at_cap - before) >> 20,
                (end - before) >> 20,
            );
            // Growth after the cap was reached, relative to the memory at the cap.
            (end - at_cap) as f64 / (at_cap - before) as f64
        }
    };
    println!("{value}");
}

const RAW_GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + tonumber(ARGV[1])
if new - now > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
return 1
";

async fn drive<F, Fut>(tasks: usize, f: F) -> (f64, Histogram<u64>)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (stop, count, f) = (stop.clone(), count.clone(), f.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    std::hint::black_box(f(i % KEYS).await);
                    let _ = hist.record(t0.elapsed().as_nanos() as u64);
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 64;
                    // Calls that never wait (an open breaker) must still let
                    // the timer and the other tasks run.
                    tokio::task::consume_budget().await;
                }
                hist
            })
        })
        .collect();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    for h in handles {
        if let Ok(h2) = h.await {
            let _ = hist.add(h2);
        }
    }
    (
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        hist,
    )
}

async fn redis_bench() -> serde_json::Value {
    let mut server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{e}"));
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let script = Arc::new(redis::Script::new(RAW_GCRA));
    let options = RedisOptions::default();
    let store = Store::redis(&url, "bench", &options, MemoryStore::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let q = Quota::per_second(1_000_000);
    let (mut raw, mut pal) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (r, _) = drive(64, {
            let (conn, script) = (conn.clone(), script.clone());
            move |k| {
                let (mut conn, script) = (conn.clone(), script.clone());
                async move {
                    script
                        .key(format!("raw:{{rl}}:{k}"))
                        .arg(1)
                        .arg(1_000_000)
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .is_ok_and(|v| v == 1)
                }
            }
        })
        .await;
        let (p, _) = drive(64, {
            let store = store.clone();
            move |k| {
                let store = store.clone();
                async move {
                    let req = [GcraRequest::new(Key::new("k").with(Part::Int(k)), q)];
                    store
                        .gcra("rl", &req, FailPolicy::FailClosed)
                        .await
                        .is_ok_and(|d| d.allowed())
                }
            }
        })
        .await;
        println!(
            "round {round}: raw EVALSHA {:.0} k/s, palisade Store {:.0} k/s",
            r / 1e3,
            p / 1e3
        );
        raw.push(r);
        pal.push(p);
    }
    let (r, p) = (median(raw), median(pal));

    // Redis dies: decisions once the breaker is open.
    server.kill();
    let mut dead = serde_json::Map::new();
    for (name, fail) in [
        ("fail_closed", FailPolicy::FailClosed),
        ("local_fallback", FailPolicy::LocalFallback),
    ] {
        // Open the breaker first (three failed calls).
        for _ in 0..5 {
            let req = [GcraRequest::new(Key::new("warm"), q)];
            let _ = store.gcra("rl", &req, fail).await;
        }
        let (rate, hist) = drive(64, {
            let store = store.clone();
            move |k| {
                let store = store.clone();
                async move {
                    let req = [GcraRequest::new(Key::new("k").with(Part::Int(k)), q)];
                    store.gcra("rl", &req, fail).await.is_ok()
                }
            }
        })
        .await;
        let p99_us = hist.value_at_quantile(0.99) as f64 / 1000.0;
        println!(
            "redis down, {name}: {:.0} k decisions/s, p99 {p99_us:.1} us",
            rate / 1e3
        );
        dead.insert(format!("dead_{name}_p99_us"), serde_json::json!(p99_us));
    }
    println!(
        "redis: raw EVALSHA {:.0} k/s, palisade {:.0} k/s ({:.2}x)",
        r / 1e3,
        p / 1e3,
        p / r
    );
    let mut out = serde_json::json!({
        "raw_evalsha_per_s": r.round(),
        "store_redis_per_s": p.round(),
        "redis_vs_raw": (p / r * 100.0).round() / 100.0,
    });
    if let Some(o) = out.as_object_mut() {
        o.extend(dead);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [first, what] = args.as_slice()
        && first == "child"
    {
        child(what);
        return;
    }
    let which = args.first().map_or("all", String::as_str);
    let mut result = serde_json::Map::new();
    if matches!(which, "all" | "memory")
        && let serde_json::Value::Object(m) = memory()
    {
        result.extend(m);
    }
    if matches!(which, "all" | "redis") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        if let serde_json::Value::Object(m) = rt.block_on(redis_bench()) {
            result.extend(m);
        }
    }
    println!("{}", serde_json::Value::Object(result));
}

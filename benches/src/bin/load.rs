//! The loopback load harness: bare axum, the palisade secure stack and the
//! equivalent tower-http stack, measured alternately in one run; the secure
//! stack is served twice, by `axum::serve` and by `palisade::serve`.
//!
//! ```sh
//! cargo run --release -p palisade-bench --bin load            # ~1 minute
//! cargo run --release -p palisade-bench --bin load -- --rounds 5 --seconds 5 --connections 64
//! cargo run --release -p palisade-bench --bin load -- --servers   # axum::serve vs palisade::serve only
//! ```
//!
//! The server runs on one thread (a current-thread tokio runtime) pinned to
//! CPU 0 together with the log writer threads it starts, the load generator
//! on another thread pinned to CPU 1 (as `taskset` for the server and a
//! generator on the other core would; `--no-pin` leaves placement to the
//! scheduler, where a log writer can borrow the generator's core): N
//! keep-alive HTTP/1.1 connections sending `GET /health` back to back for a
//! fixed time, every latency in an HDR histogram.
//! Stacks that log write one JSON line per request to a file through a
//! non-blocking writer (palisade: its own format with a top-level
//! `request_id`; tower-http: `TraceLayer` with tracing-subscriber's JSON
//! format). Rounds alternate a, b, b', c so that drift of a noisy machine spreads
//! over all of them; the report gives the median over rounds. After each
//! throughput phase, one connection sends one request at a time for a
//! second: its p99 is the latency a stack adds without queueing (under N
//! saturating connections every request also waits for the N - 1 ahead of
//! it, so the p99 there mostly restates the throughput). The last line is
//! one JSON object for scripts.
//!
//! `--breakdown` also serves each part of the secure stack alone (security
//! headers; request ids; request ids with the client address and the access
//! log; the guards: CORS, cross-origin protection, panic catcher, timeout,
//! body limit) and the whole stack with logging off, and reports what each
//! adds to bare axum's server CPU per request (the median of the rounds'
//! differences, each against the bare run of the same round).
//!
//! `palisade::serve` serves the same secure stack with its defaults (the
//! connection watchdog, the connection cap, the peer address on every
//! request); the report gives its throughput and server CPU per request as
//! ratios against `axum::serve` (each the median of the rounds' ratios).
//! `--servers` runs only those two.
#![allow(clippy::expect_used)] // a benchmark harness: a failed setup aborts the run loudly

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use palisade_bench::{Part, bare, secured, tower_http};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    Bare,
    Palisade,
    /// The same secure stack served by `palisade::serve` (its defaults:
    /// connection watchdog, cap, peer address) instead of `axum::serve`.
    PalisadeServe,
    TowerHttp,
    /// One part of the palisade stack alone (`--breakdown`).
    Part(Part),
    /// The palisade stack with its log filter off (`--breakdown`).
    Unlogged,
}

impl Stack {
    const ALL: [Self; 4] = [
        Self::Bare,
        Self::Palisade,
        Self::PalisadeServe,
        Self::TowerHttp,
    ];

    /// What `--breakdown` adds: every part alone, then the stack unlogged.
    fn breakdown() -> impl Iterator<Item = Self> {
        Part::ALL
            .into_iter()
            .map(Self::Part)
            .chain([Self::Unlogged])
    }

    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare axum",
            Self::Palisade => "palisade stack",
            Self::PalisadeServe => "palisade::serve",
            Self::TowerHttp => "tower-http stack",
            Self::Part(Part::Headers) => "headers only",
            Self::Part(Part::RequestId) => "request id only",
            Self::Part(Part::Observe) => "id + ip + access",
            Self::Part(Part::Guards) => "guards only",
            Self::Unlogged => "palisade, no log",
        }
    }

    /// The JSON key of a breakdown entry.
    fn key(self) -> &'static str {
        match self {
            Self::Part(Part::Headers) => "headers",
            Self::Part(Part::RequestId) => "request_id",
            Self::Part(Part::Observe) => "request_id_client_ip_access_log",
            Self::Part(Part::Guards) => "cors_cross_origin_panic_timeout_body_limit",
            Self::Unlogged => "palisade_without_log_line",
            Self::Bare => "bare",
            Self::Palisade => "palisade",
            Self::PalisadeServe => "palisade_serve",
            Self::TowerHttp => "towerhttp",
        }
    }
}

struct Options {
    rounds: usize,
    seconds: u64,
    connections: usize,
    only: Option<Stack>,
    /// Server (with its log writer threads) on CPU 0, load generator on CPU 1.
    pin: bool,
    /// Also serve each part of the stack alone.
    breakdown: bool,
    /// Only the secure stack, served by `axum::serve` and by `palisade::serve`.
    servers: bool,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        seconds: 4,
        connections: 32,
        only: None,
        pin: true,
        breakdown: false,
        servers: false,
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--no-pin") {
        args.remove(at);
        o.pin = false;
    }
    if let Some(at) = args.iter().position(|a| a == "--breakdown") {
        args.remove(at);
        o.breakdown = true;
    }
    if let Some(at) = args.iter().position(|a| a == "--servers") {
        args.remove(at);
        o.servers = true;
    }
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .max(1);
        match pair.first().map(String::as_str) {
            Some("--only") => {
                o.only = Stack::ALL.into_iter().find(|s| {
                    pair.get(1)
                        .is_some_and(|v| s.name().starts_with(v.as_str()))
                });
            }
            Some("--rounds") => o.rounds = usize::try_from(value).unwrap_or(3),
            Some("--seconds") => o.seconds = value,
            Some("--connections") => o.connections = usize::try_from(value).unwrap_or(32),
            _ => {
                eprintln!(
                    "usage: load [--rounds N] [--seconds S] [--connections C] [--only bare|palisade|palisade::serve|tower-http] [--no-pin] [--breakdown] [--servers]"
                );
                std::process::exit(64);
            }
        }
    }
    o
}

/// Serves `stack` on a thread of its own until `stop`; returns the address.
fn serve(
    stack: Stack,
    log_dir: &std::path::Path,
    stop: Arc<AtomicBool>,
    pin: bool,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let log_path = log_dir.join(format!("{stack:?}.log"));
    let handle = std::thread::spawn(move || {
        // Before the log writers start: they share the server's CPU, as
        // they would under `taskset -c 0 server`.
        if pin {
            palisade_bench::pin_to_cpu(0);
        }
        let file = std::fs::File::create(&log_path).expect("log file");
        // palisade: the writer palisade_telemetry::init uses; tower-http: the
        // usual tracing_appender::non_blocking(file).
        let (writer, _palisade_guard) =
            palisade::telemetry::non_blocking(file.try_clone().expect("log file"), 128_000);
        let (plain_writer, _plain_guard) = tracing_appender::non_blocking(file);
        let filter = tracing_subscriber::filter::LevelFilter::INFO;
        let palisade_subscriber = |filter| {
            tracing::subscriber::set_default(palisade_bench::json_subscriber(filter, writer))
        };
        // The subscriber is this thread's default: the current-thread runtime
        // runs every request here.
        let _subscriber = match stack {
            Stack::Bare => None,
            Stack::Palisade | Stack::PalisadeServe | Stack::Part(_) => {
                Some(palisade_subscriber(filter))
            }
            Stack::Unlogged => Some(palisade_subscriber(
                tracing_subscriber::filter::LevelFilter::OFF,
            )),
            Stack::TowerHttp => Some(tracing::subscriber::set_default(
                tracing_subscriber::registry().with(filter).with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(plain_writer),
                ),
            )),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let app: Router = match stack {
                Stack::Bare => bare(),
                Stack::Palisade | Stack::PalisadeServe | Stack::Unlogged => secured(),
                Stack::TowerHttp => tower_http(),
                Stack::Part(part) => part.around_routes(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send addr");
            let shutdown = async move {
                while !stop.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            if stack == Stack::PalisadeServe {
                palisade::serve::Server::from_listener(listener)
                    .shutdown_signal(shutdown)
                    .serve(app)
                    .await
                    .expect("serve");
            } else {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown)
                .await
                .expect("serve");
            }
        });
    });
    (rx.recv().expect("server address"), handle)
}

/// Drives `connections` keep-alive connections for `duration`.
fn load(addr: SocketAddr, connections: usize, duration: Duration) -> (u64, Histogram<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async move {
        let deadline = Instant::now() + duration;
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                tokio::spawn(async move {
                    let mut hist =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    stream.set_nodelay(true).expect("nodelay");
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .expect("handshake");
                    tokio::spawn(conn);
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        let req = hyper::Request::get("/health")
                            .header("host", "127.0.0.1")
                            .header("origin", "https://app.example.com")
                            .body(Empty::<Bytes>::new())
                            .expect("request");
                        let start = Instant::now();
                        let Ok(res) = sender.send_request(req).await else {
                            break;
                        };
                        let ok = res.status() == 200;
                        let _ = res.into_body().collect().await;
                        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(micros.max(1));
                        if ok {
                            done += 1;
                        }
                    }
                    (done, hist)
                })
            })
            .collect();
        let mut total = 0;
        let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for t in tasks {
            let (done, hist) = t.await.expect("client task");
            total += done;
            merged.add(&hist).expect("merge");
        }
        (total, merged)
    })
}

#[derive(Clone, Copy)]
enum Cpu {
    Process,
    Thread,
}

/// CPU time used so far by the whole process or by the calling thread.
fn cpu_time(which: Cpu) -> Duration {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(match which {
        Cpu::Process => ClockId::ProcessCPUTime,
        Cpu::Thread => ClockId::ThreadCPUTime,
    });
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The single-connection phase after each throughput phase.
const SINGLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    /// Server CPU time (its thread and its log writers) per request: unlike
    /// throughput, it does not depend on which side of the loopback is the
    /// bottleneck, and time the VM spends elsewhere is not counted.
    server_cpu_us: f64,
    p50_us: u64,
    p99_us: u64,
    /// One connection, one request at a time: latency without queueing.
    single_p50_us: u64,
    single_p99_us: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[allow(clippy::cast_precision_loss)] // request counts and microseconds are far below 2^52
fn main() {
    let mut o = options();
    // The generator (this thread) on the other CPU.
    o.pin = o.pin && palisade_bench::pin_to_cpu(1);
    let log_dir = tempfile::tempdir().expect("temp dir");
    let keep = std::env::var_os("KEEP_LOGS").map(std::path::PathBuf::from);
    let mut samples: Vec<(usize, Stack, Sample)> = Vec::new();
    let started = Instant::now();
    for round in 1..=o.rounds {
        for stack in Stack::ALL
            .into_iter()
            .chain(Stack::breakdown().filter(|_| o.breakdown))
            .filter(|s| o.only.is_none_or(|only| only == *s))
            .filter(|s| !o.servers || matches!(s, Stack::Palisade | Stack::PalisadeServe))
        {
            let stop = Arc::new(AtomicBool::new(false));
            let (addr, server) = serve(stack, log_dir.path(), stop.clone(), o.pin);
            let _ = load(addr, o.connections, Duration::from_millis(500)); // warm-up
            let seconds = Duration::from_secs(o.seconds);
            let (process, generator) = (cpu_time(Cpu::Process), cpu_time(Cpu::Thread));
            let (done, hist) = load(addr, o.connections, seconds);
            // Everything but this thread (the generator): the server thread
            // and the log writers it started.
            let server_cpu = cpu_time(Cpu::Process)
                .saturating_sub(process)
                .saturating_sub(cpu_time(Cpu::Thread).saturating_sub(generator));
            let (_, single) = load(addr, 1, SINGLE);
            stop.store(true, Ordering::Release);
            let _ = server.join();
            let sample = Sample {
                rps: done as f64 / seconds.as_secs_f64(),
                server_cpu_us: server_cpu.as_secs_f64() * 1e6 / done.max(1) as f64,
                p50_us: hist.value_at_quantile(0.50),
                p99_us: hist.value_at_quantile(0.99),
                single_p50_us: single.value_at_quantile(0.50),
                single_p99_us: single.value_at_quantile(0.99),
            };
            println!(
                "round {round} {:<17} {:>9.0} req/s  {:>5.2} µs CPU/req  p50 {:>5} µs  p99 {:>5} µs  | 1 conn p50 {:>4} µs  p99 {:>4} µs",
                stack.name(),
                sample.rps,
                sample.server_cpu_us,
                sample.p50_us,
                sample.p99_us,
                sample.single_p50_us,
                sample.single_p99_us
            );
            samples.push((round, stack, sample));
        }
    }
    if let Some(keep) = keep {
        for entry in std::fs::read_dir(log_dir.path())
            .expect("log dir")
            .flatten()
        {
            let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
        }
    }
    report(&o, &samples, started);
}

/// Prints the medians, the ratios and the final JSON line.
#[allow(clippy::cast_precision_loss)] // microseconds are far below 2^52
fn report(o: &Options, samples: &[(usize, Stack, Sample)], started: Instant) {
    let stat = |stack: Stack, f: fn(&Sample) -> f64| stat(samples, stack, f);
    let rps = |s| stat(s, |x| x.rps);
    let cpu = |s| stat(s, |x| x.server_cpu_us);
    let p50 = |s| stat(s, |x| x.p50_us as f64);
    let p99 = |s| stat(s, |x| x.p99_us as f64);
    let single_p50 = |s| stat(s, |x| x.single_p50_us as f64);
    let single_p99 = |s| stat(s, |x| x.single_p99_us as f64);
    println!(
        "\nmedian of {} rounds, {} connections, {} s each, {}:",
        o.rounds,
        o.connections,
        o.seconds,
        if o.pin {
            "server on CPU 0, generator on CPU 1"
        } else {
            "threads not pinned"
        }
    );
    for stack in Stack::ALL
        .into_iter()
        .chain(Stack::breakdown().filter(|_| o.breakdown))
        .filter(|stack| samples.iter().any(|(_, s, _)| s == stack))
    {
        println!(
            "  {:<17} {:>9.0} req/s  {:>5.2} µs CPU/req  p50 {:>5.0} µs  p99 {:>5.0} µs  | 1 conn p50 {:>4.0} µs  p99 {:>4.0} µs",
            stack.name(),
            rps(stack),
            cpu(stack),
            p50(stack),
            p99(stack),
            single_p50(stack),
            single_p99(stack)
        );
    }
    let (a, b, c) = (
        rps(Stack::Bare),
        rps(Stack::Palisade),
        rps(Stack::TowerHttp),
    );
    if o.servers {
        let served = report_serve(samples);
        println!("{}", serde_json::json!({ "palisade_serve": served }));
        return;
    }
    if o.only.is_some() {
        return;
    }
    println!("  palisade / bare       {:.2}x", b / a);
    println!("  palisade / tower-http {:.2}x", b / c);
    let (cpu_a, cpu_b, cpu_c) = (
        cpu(Stack::Bare),
        cpu(Stack::Palisade),
        cpu(Stack::TowerHttp),
    );
    println!(
        "  server CPU per request, as throughput ratios: palisade / bare {:.2}x, palisade / tower-http {:.2}x",
        cpu_a / cpu_b,
        cpu_c / cpu_b
    );
    let added = single_p99(Stack::Palisade) - single_p99(Stack::Bare);
    println!("  palisade p99 added, 1 connection: {added:.0} µs");
    let served = report_serve(samples);
    let parts = if o.breakdown {
        report_breakdown(samples)
    } else {
        serde_json::Map::new()
    };
    println!("  elapsed {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "bare_rps": a.round(),
            "palisade_rps": b.round(),
            "towerhttp_rps": c.round(),
            "palisade_over_bare": (b / a * 1000.0).round() / 1000.0,
            "palisade_over_towerhttp": (b / c * 1000.0).round() / 1000.0,
            "palisade_serve": served,
            "bare_p50_us": p50(Stack::Bare),
            "bare_p99_us": p99(Stack::Bare),
            "palisade_p50_us": p50(Stack::Palisade),
            "palisade_p99_us": p99(Stack::Palisade),
            "towerhttp_p99_us": p99(Stack::TowerHttp),
            "bare_p99_1conn_us": single_p99(Stack::Bare),
            "palisade_p99_1conn_us": single_p99(Stack::Palisade),
            "towerhttp_p99_1conn_us": single_p99(Stack::TowerHttp),
            "palisade_added_p99_1conn_us": added,
            "bare_cpu_us_per_request": (cpu_a * 100.0).round() / 100.0,
            "palisade_cpu_us_per_request": (cpu_b * 100.0).round() / 100.0,
            "towerhttp_cpu_us_per_request": (cpu_c * 100.0).round() / 100.0,
            "palisade_over_bare_by_cpu": (cpu_a / cpu_b * 1000.0).round() / 1000.0,
            "palisade_over_towerhttp_by_cpu": (cpu_c / cpu_b * 1000.0).round() / 1000.0,
            "rounds": o.rounds,
            "connections": o.connections,
            "seconds": o.seconds,
            "pinned": o.pin,
            "added_cpu_us_by_part": parts,
        })
    );
}

/// The median of `f` over the rounds of `stack`.
fn stat(samples: &[(usize, Stack, Sample)], stack: Stack, f: fn(&Sample) -> f64) -> f64 {
    median(
        samples
            .iter()
            .filter(|(_, s, _)| *s == stack)
            .map(|(_, _, x)| f(x))
            .collect(),
    )
}

/// Prints how the secure stack does served by `palisade::serve` against
/// the same stack served by `axum::serve` (target: within 5 %), and returns
/// the same figures for the JSON line.
#[allow(clippy::cast_precision_loss)] // microseconds are far below 2^52
fn report_serve(samples: &[(usize, Stack, Sample)]) -> serde_json::Value {
    let (axum, ours) = (Stack::Palisade, Stack::PalisadeServe);
    let rps = |s| stat(samples, s, |x| x.rps);
    let cpu = |s| stat(samples, s, |x| x.server_cpu_us);
    let p99_1conn = |s| stat(samples, s, |x| x.single_p99_us as f64);
    // Each round's ratio, then their median: both ran in the same round.
    let per_round = |f: fn(&Sample) -> f64, invert: bool| {
        median(
            samples
                .iter()
                .filter(|(_, s, _)| *s == ours)
                .filter_map(|(round, _, x)| {
                    samples
                        .iter()
                        .find(|(r, s, _)| r == round && *s == axum)
                        .map(|(_, _, y)| if invert { f(y) / f(x) } else { f(x) / f(y) })
                })
                .collect(),
        )
    };
    let by_rps = per_round(|x| x.rps, false);
    let by_cpu = per_round(|x| x.server_cpu_us, true);
    let added_p99 = p99_1conn(ours) - p99_1conn(axum);
    println!(
        "  palisade::serve / axum::serve, same stack (median of the rounds' ratios): {by_rps:.3}x throughput, {by_cpu:.3}x by server CPU ({:.2} vs {:.2} µs), p99 1 conn {added_p99:+.0} µs",
        cpu(ours),
        cpu(axum)
    );
    serde_json::json!({
        "rps": rps(ours).round(),
        "over_axum_serve": (by_rps * 1000.0).round() / 1000.0,
        "over_axum_serve_by_cpu": (by_cpu * 1000.0).round() / 1000.0,
        "cpu_us_per_request": (cpu(ours) * 100.0).round() / 100.0,
        "p99_us": stat(samples, ours, |x| x.p99_us as f64),
        "p99_1conn_us": p99_1conn(ours),
        "added_p99_1conn_us": added_p99,
    })
}

/// Prints what each part adds to bare axum's server CPU per request and
/// returns the same figures for the JSON line.
fn report_breakdown(
    samples: &[(usize, Stack, Sample)],
) -> serde_json::Map<String, serde_json::Value> {
    // What `stack` adds to bare axum's server CPU per request: the median
    // of each round's difference against that round's bare run.
    let added_cpu = |stack: Stack| {
        median(
            samples
                .iter()
                .filter(|(_, s, _)| *s == stack)
                .filter_map(|(round, _, x)| {
                    samples
                        .iter()
                        .find(|(r, s, _)| r == round && *s == Stack::Bare)
                        .map(|(_, _, bare)| x.server_cpu_us - bare.server_cpu_us)
                })
                .collect(),
        )
    };
    println!("  server CPU per request added to bare axum, by part (median of the rounds):");
    let mut parts = serde_json::Map::new();
    for stack in Stack::breakdown().chain([Stack::Palisade]) {
        let us = added_cpu(stack);
        println!("    {:<17} {us:>+6.2} µs", stack.name());
        parts.insert(
            stack.key().to_owned(),
            ((us * 100.0).round() / 100.0).into(),
        );
    }
    parts
}

//! The cost of rate limiting per request: the limiter layer (memory store,
//! the contract's global per-IP policy, always allowing) against the same
//! router without it; and one keyed decision against governor's.
#![allow(clippy::unwrap_used, missing_docs)] // bench harness: a failed setup should abort loudly

use std::num::NonZeroU32;

use axum::Router;
use axum::routing::get;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palisade::core::client_ip::{ClientIpLayer, ClientIpResolver};
use palisade::ratelimit::{Policy, RateLimit};
use palisade::store::{GcraRequest, Key, MemoryStore, Part, Quota, Store};
use palisade_bench::get_request;
use tower::ServiceExt;

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let routes = || Router::new().route("/health", get(|| async { "ok" }));
    let with_ip = routes().layer(ClientIpLayer::new(ClientIpResolver::default()));
    let limits = RateLimit::new(Store::memory(MemoryStore::default()))
        .policy(Policy::new("global", Quota::per_second(1_000_000_000)))
        .build()
        .unwrap();
    let limited = routes()
        .layer(limits)
        .layer(ClientIpLayer::new(ClientIpResolver::default()));
    let mut group = c.benchmark_group("ratelimit_layer");
    for (name, app) in [
        ("client_ip_only", with_ip),
        ("client_ip_and_limiter", limited),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let app = app.clone();
                async move {
                    let res = app.oneshot(get_request("/health")).await.unwrap();
                    assert_eq!(res.status(), 200);
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("keyed_decision");
    let governor = governor::RateLimiter::keyed(governor::Quota::per_second(
        NonZeroU32::new(1_000_000).unwrap(),
    ));
    let store = MemoryStore::default();
    let q = Quota::per_second(1_000_000);
    for k in 0..100_000u64 {
        let _ = governor.check_key(&k);
        store.gcra(&[GcraRequest::new(Key::new("k").with(Part::Int(k)), q)]);
    }
    let mut i = 0u64;
    group.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            governor.check_key(&i).is_ok()
        });
    });
    group.bench_function("palisade_memory", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            store
                .gcra(&[GcraRequest::new(Key::new("k").with(Part::Int(i)), q)])
                .allowed()
        });
    });
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);

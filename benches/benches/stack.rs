//! The cost of the secure-defaults stack per request, against the same router
//! without it. In-process (`oneshot`), so the numbers isolate the layers from
//! the network and the kernel. Routers are finalised with `with_state(())`
//! as `axum::serve` does (otherwise axum rebuilds each route per call).
#![allow(clippy::unwrap_used, missing_docs)] // bench harness: a failed setup should abort loudly

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palisade_bench::{bare, get_request, post_request, secured, tower_http};
use tower::ServiceExt;

fn stack(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("get_json");
    for (name, app) in [
        ("bare_axum", bare().with_state(())),
        ("tower_http_stack", tower_http().with_state(())),
        ("palisade_stack", secured().with_state(())),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let app = app.clone();
                async move {
                    let res = app.oneshot(get_request("/health")).await.unwrap();
                    assert_eq!(res.status(), 200);
                    axum::body::to_bytes(res.into_body(), 1024).await.unwrap()
                }
            });
        });
    }
    // The same stack with the JSON log format active (access line formatted,
    // written to a sink): the cost of one access line per request.
    {
        let _guard = tracing::subscriber::set_default(palisade_bench::json_to_sink());
        let app: axum::Router = secured().with_state(());
        group.bench_function(
            BenchmarkId::from_parameter("palisade_stack_json_log"),
            |b| {
                b.to_async(&rt).iter(|| {
                    let app = app.clone();
                    async move {
                        let res = app.oneshot(get_request("/health")).await.unwrap();
                        axum::body::to_bytes(res.into_body(), 1024).await.unwrap()
                    }
                });
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("post_64k_body");
    for (name, app) in [
        ("bare_axum", bare().with_state(())),
        ("tower_http_stack", tower_http().with_state(())),
        ("palisade_stack", secured().with_state(())),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.to_async(&rt).iter(|| {
                let app = app.clone();
                async move {
                    let res = app.oneshot(post_request(64 * 1024)).await.unwrap();
                    assert_eq!(res.status(), 200);
                    axum::body::to_bytes(res.into_body(), 1 << 20)
                        .await
                        .unwrap()
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);

//! The cost of a call refused by an open circuit breaker (issue 19: under
//! 10 µs): the breaker alone, and a whole outbound call through
//! palisade-resilience's layer once its breaker is open; a closed breaker's
//! admit-and-settle for comparison.
#![allow(clippy::unwrap_used, missing_docs)] // bench harness: a failed setup should abort loudly

use std::convert::Infallible;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use palisade::core::SystemClock;
use palisade_resilience::breaker::{BreakerConfig, CircuitBreaker};
use palisade_resilience::outbound::{Outbound, OutboundError};
use tower::{Layer, ServiceExt, service_fn};

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");
    let open = CircuitBreaker::new(
        "bench",
        BreakerConfig::consecutive_failures(1).open_for(Duration::from_secs(3600)),
        SystemClock::shared(),
    );
    open.try_acquire().unwrap().failure();
    group.bench_function("short_circuit", |b| {
        b.iter(|| assert!(open.try_acquire().is_err()));
    });
    let closed = CircuitBreaker::new("bench", BreakerConfig::default(), SystemClock::shared());
    group.bench_function("closed_admit_and_settle", |b| {
        b.iter(|| closed.try_acquire().unwrap().success());
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outbound = Outbound::builder("bench")
        .breaker(BreakerConfig::consecutive_failures(1).open_for(Duration::from_secs(3600)))
        .build();
    let client = outbound
        .layer()
        .layer(service_fn(|_req: Request<String>| async {
            let mut res = Response::new(String::new());
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            Ok::<_, Infallible>(res)
        }));
    let get = || Request::get("http://dep/").body(String::new()).unwrap();
    rt.block_on(client.clone().oneshot(get())).unwrap();
    group.bench_function("outbound_call_short_circuited", |b| {
        b.to_async(&rt).iter(|| {
            let client = client.clone();
            async move {
                let err = client.oneshot(get()).await.unwrap_err();
                assert!(matches!(err, OutboundError::ShortCircuited));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, breaker);
criterion_main!(benches);

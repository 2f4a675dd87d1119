//! The secure stack (or bare axum) called in a loop, in process, with the
//! JSON access line formatted: a steady workload for profilers that count
//! instructions, which, unlike timings, repeat exactly on a noisy machine.
//!
//! ```sh
//! cargo build --release -p palisade-bench --example profile_stack
//! valgrind --tool=callgrind ./target/release/examples/profile_stack palisade 20000
//! valgrind --tool=callgrind ./target/release/examples/profile_stack bare 20000
//! ```
//!
//! The first argument picks the stack: `bare`, `palisade` (the default), or
//! one part of it alone: `headers`, `request-id`, `observe` (request ids,
//! client address, access log) or `guards` (CORS, cross-origin protection,
//! panic catcher, timeout, body limit); `identity` is the routes behind one
//! `Router::layer` call that does nothing: axum's own cost of a layer.
//!
//! The router is finalised with `with_state` first, as `axum::serve` does:
//! otherwise axum would build each route's service again on every call.
#![allow(missing_docs, clippy::unwrap_used)] // a profiling harness

use palisade_bench::{Part, bare, get_request, secured};
use tower::ServiceExt;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let n: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(palisade_bench::json_to_sink());
    let app: axum::Router = match which.as_str() {
        "bare" => bare(),
        "headers" => Part::Headers.around_routes(),
        "request-id" => Part::RequestId.around_routes(),
        "observe" => Part::Observe.around_routes(),
        "guards" => Part::Guards.around_routes(),
        "identity" => palisade_bench::routes().layer(tower::layer::util::Identity::new()),
        _ => secured(),
    }
    .with_state(());
    let start = std::time::Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            let res = app.clone().oneshot(get_request("/health")).await.unwrap();
            axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        }
    });
    eprintln!("{which}: {:?} per request", start.elapsed() / n);
}

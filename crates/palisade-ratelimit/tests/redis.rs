#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! The limiter over a real `redis-server`: two instances share limits, and
//! each fail policy holds when Redis dies.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use palisade_core::client_ip::{ClientIpLayer, ClientIpResolver, PeerAddr};
use palisade_ratelimit::{Policy, RateLimit};
use palisade_store::{FailPolicy, MemoryStore, Quota, RedisOptions, Store};
use palisade_testkit::redis::RedisServer;
use tower::ServiceExt;

fn instance(server: &RedisServer) -> Router {
    let options = RedisOptions::default().call_timeout(Duration::from_millis(500));
    let store = Store::redis(&server.url(), "redis", &options, MemoryStore::default()).unwrap();
    let limits = RateLimit::new(store)
        .policy(Policy::new("global", Quota::per_hour(40)))
        .policy(
            Policy::new("login", Quota::per_hour(5))
                .routes(["/auth/login"])
                .fail(FailPolicy::FailClosed)
                .hide_headers(),
        )
        .build()
        .unwrap();
    Router::new()
        .route("/auth/login", post(|| async { "ok" }))
        .route("/health", get(|| async { "ok" }))
        .layer(limits)
        .layer(ClientIpLayer::new(ClientIpResolver::default()))
}

fn req(method: &str, uri: &str, peer: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .extension(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 1234)))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_allow_more_than_the_limit_between_them() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (instance(&server), instance(&server));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                app.oneshot(req("GET", "/health", "198.51.100.1"))
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(ok, 40);
}

#[tokio::test]
async fn with_redis_dead_login_fails_closed_and_the_rest_falls_back() {
    let mut server = RedisServer::start().unwrap();
    let app = instance(&server);
    let status = |method: &'static str, uri: &'static str| {
        let app = app.clone();
        async move { app.oneshot(req(method, uri, "203.0.113.3")).await.unwrap() }
    };
    assert_eq!(status("POST", "/auth/login").await.status(), StatusCode::OK);
    server.kill();
    let res = status("POST", "/auth/login").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    // Non-auth routes are decided locally: served, then limited per instance.
    let mut allowed = 0;
    for _ in 0..50 {
        if status("GET", "/health").await.status() == StatusCode::OK {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 40, "the local fallback enforces the same quota");
}

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! The rate-limit layer through real axum routers, with an injected clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_core::client_ip::{ClientIpLayer, ClientIpResolver, PeerAddr};
use palisade_core::{ManualClock, Principal};
use palisade_ratelimit::{ClientConcurrencyLayer, KeyBy, Policy, RateLimit, RateLimitLayer};
use palisade_store::{FailPolicy, MemoryStore, Quota, Store};
use tower::{ServiceBuilder, ServiceExt};

fn memory() -> (Arc<ManualClock>, Store) {
    let (clock, shared) = ManualClock::shared();
    let store = Store::memory(MemoryStore::builder().clock(shared).build());
    (clock, store)
}

fn contract_limits(store: Store) -> RateLimitLayer {
    RateLimit::new(store)
        .policy(Policy::new("global", Quota::per_second(30).with_burst(50)))
        .policy(
            Policy::new("login", Quota::per_minute(5))
                .routes(["/auth/login"])
                .fail(FailPolicy::FailClosed)
                .hide_headers(),
        )
        .policy(
            Policy::new("login-account", Quota::per_minute(10))
                .key(KeyBy::json_field("email"))
                .routes(["/auth/login"])
                .fail(FailPolicy::FailClosed)
                .hide_headers(),
        )
        .policy(
            Policy::new("register", Quota::per_minute(3))
                .routes(["/auth/register"])
                .fail(FailPolicy::FailClosed)
                .hide_headers(),
        )
        .policy(Policy::new("api", Quota::per_minute(100)).key(KeyBy::user()))
        .build()
        .unwrap()
}

fn app(limits: RateLimitLayer, resolver: ClientIpResolver) -> Router {
    Router::new()
        .route(
            "/auth/login",
            post(|body: String| async move { format!("got {} bytes", body.len()) }),
        )
        .route("/auth/register", post(|| async { "registered" }))
        .route("/me", get(|| async { "me" }))
        .route("/health", get(|| async { "ok" }))
        .layer(limits)
        .layer(
            ServiceBuilder::new()
                .map_request(|mut req: Request<Body>| {
                    // Stands in for the auth layer: a bearer token names the user.
                    let user = req
                        .headers()
                        .get("x-test-user")
                        .and_then(|v| v.to_str().ok())
                        .map(Principal::new);
                    if let Some(user) = user {
                        req.extensions_mut().insert(user);
                    }
                    req
                })
                .layer(ClientIpLayer::new(resolver)),
        )
}

fn from(peer: &str, req: http::request::Builder) -> http::request::Builder {
    req.extension(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 40_000)))
}

fn login(peer: &str, email: &str) -> Request<Body> {
    from(peer, Request::post("/auth/login"))
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"email":"{email}","password":"wrong"}}"#
        )))
        .unwrap()
}

async fn status(app: &Router, req: Request<Body>) -> http::Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

async fn json(res: http::Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn sixth_login_from_one_ip_is_429_with_retry_after_and_no_quota_headers() {
    let (clock, store) = memory();
    let app = app(contract_limits(store), ClientIpResolver::default());
    for i in 0..5 {
        let res = status(&app, login("198.51.100.7", &format!("user{i}@example.com"))).await;
        assert_eq!(res.status(), StatusCode::OK, "attempt {i}");
        assert!(
            res.headers().get("ratelimit").is_none(),
            "login hides its quota"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"got 4"), "the handler got the whole body");
    }
    let res = status(&app, login("198.51.100.7", "user9@example.com")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "12");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().get("ratelimit").is_none());
    assert!(res.headers().get("ratelimit-policy").is_none());
    let body = json(res).await;
    assert_eq!(body["status"], 429);
    assert_eq!(body["type"], "urn:palisade:problem:rate-limited");

    // Another client is not affected.
    let res = status(&app, login("198.51.100.8", "user1@example.com")).await;
    assert_eq!(res.status(), StatusCode::OK);

    // The clock edge: one slot back after exactly 12 s, not before.
    clock.advance(Duration::from_millis(11_999));
    let res = status(&app, login("198.51.100.7", "a@example.com")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");
    clock.advance(Duration::from_millis(1));
    let res = status(&app, login("198.51.100.7", "a@example.com")).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn fourth_registration_is_429() {
    let (_clock, store) = memory();
    let app = app(contract_limits(store), ClientIpResolver::default());
    let register = || {
        from("203.0.113.5", Request::post("/auth/register"))
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(status(&app, register()).await.status(), StatusCode::OK);
    }
    assert_eq!(
        status(&app, register()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn per_account_limit_follows_the_json_field_across_ips() {
    let (_clock, store) = memory();
    let app = app(contract_limits(store), ClientIpResolver::default());
    // 10 attempts on one account from 10 addresses, with varying case.
    for i in 0..10 {
        let email = if i % 2 == 0 {
            "Victim@Example.com"
        } else {
            " victim@example.com"
        };
        let res = status(&app, login(&format!("192.0.2.{i}"), email)).await;
        assert_eq!(res.status(), StatusCode::OK, "attempt {i}");
    }
    let res = status(&app, login("192.0.2.200", "victim@example.com")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Other accounts from that address are fine.
    let res = status(&app, login("192.0.2.200", "other@example.com")).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_refused_request_consumes_no_other_policy() {
    let (_clock, store) = memory();
    let limits = contract_limits(store);
    let app = app(limits.clone(), ClientIpResolver::default());
    for _ in 0..5 {
        status(&app, login("198.51.100.1", "a@example.com")).await;
    }
    for _ in 0..40 {
        let res = status(&app, login("198.51.100.1", "a@example.com")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // The global burst of 50 lost only the 5 allowed logins.
    for i in 0..45 {
        let res = status(
            &app,
            from("198.51.100.1", Request::get("/health"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "health {i}");
    }
    let res = status(
        &app,
        from("198.51.100.1", Request::get("/health"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limits.decisions("login", "limited"), 40);
    assert_eq!(limits.decisions("login", "allowed"), 5);
    assert_eq!(limits.decisions("global", "limited"), 1);
}

#[tokio::test]
async fn quota_headers_follow_the_draft_on_open_routes() {
    let (_clock, store) = memory();
    let app = app(contract_limits(store), ClientIpResolver::default());
    let req = || {
        from("203.0.113.1", Request::get("/health"))
            .body(Body::empty())
            .unwrap()
    };
    let res = status(&app, req()).await;
    // The bucket: 50 at once, refilled at 30/s (full again within 2 s).
    assert_eq!(res.headers()["ratelimit-policy"], "\"global\";q=50;w=2");
    assert_eq!(res.headers()["ratelimit"], "\"global\";r=49;t=1");
    let res = status(&app, req()).await;
    assert_eq!(res.headers()["ratelimit"], "\"global\";r=48;t=1");
}

#[tokio::test]
async fn per_user_limit_applies_to_authenticated_requests_only() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(Policy::new("api", Quota::per_minute(3)).key(KeyBy::user()))
        .build()
        .unwrap();
    let app = app(limits, ClientIpResolver::default());
    let me = |user: Option<&str>, ip: &str| {
        let mut b = from(ip, Request::get("/me"));
        if let Some(u) = user {
            b = b.header("x-test-user", u);
        }
        b.body(Body::empty()).unwrap()
    };
    for i in 0..3 {
        // The same user from different addresses shares one budget.
        let res = status(&app, me(Some("u1"), &format!("192.0.2.{i}"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(
        status(&app, me(Some("u1"), "192.0.2.99")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status(&app, me(Some("u2"), "192.0.2.0")).await.status(),
        StatusCode::OK
    );
    for _ in 0..10 {
        assert_eq!(
            status(&app, me(None, "192.0.2.0")).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(Policy::new("login", Quota::per_minute(2)))
        .build()
        .unwrap();
    let resolver = ClientIpResolver::builder()
        .trusted_proxy("10.0.0.0/8")
        .build()
        .unwrap();
    let app = app(limits, resolver);
    let spoof = |xff: &str, peer: &str| {
        from(peer, Request::get("/health"))
            .header("x-forwarded-for", xff)
            .body(Body::empty())
            .unwrap()
    };
    // An attacker rotating X-Forwarded-For from one untrusted address.
    assert_eq!(
        status(&app, spoof("1.1.1.1", "203.0.113.66"))
            .await
            .status(),
        200
    );
    assert_eq!(
        status(&app, spoof("2.2.2.2", "203.0.113.66"))
            .await
            .status(),
        200
    );
    assert_eq!(
        status(&app, spoof("3.3.3.3", "203.0.113.66"))
            .await
            .status(),
        429
    );
    // Through the trusted proxy, the rightmost untrusted hop is the client:
    // a spoofed leftmost entry does not help.
    assert_eq!(
        status(&app, spoof("9.9.9.9, 198.51.100.4", "10.1.2.3"))
            .await
            .status(),
        200
    );
    assert_eq!(
        status(&app, spoof("8.8.8.8, 198.51.100.4", "10.1.2.3"))
            .await
            .status(),
        200
    );
    assert_eq!(
        status(&app, spoof("7.7.7.7, 198.51.100.4", "10.9.9.9"))
            .await
            .status(),
        429
    );
    // A different real client behind the proxy has its own budget.
    assert_eq!(
        status(&app, spoof("198.51.100.5", "10.1.2.3"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn ipv6_clients_are_grouped_by_prefix() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(Policy::new("g", Quota::per_minute(2)))
        .build()
        .unwrap();
    let app = app(limits, ClientIpResolver::default());
    let req = |ip: &str| {
        from(ip, Request::get("/health"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(status(&app, req("2001:db8:1:1::1")).await.status(), 200);
    assert_eq!(
        status(&app, req("2001:db8:1:1:ffff::9")).await.status(),
        200
    );
    assert_eq!(status(&app, req("2001:db8:1:1::abcd")).await.status(), 429);
    assert_eq!(status(&app, req("2001:db8:1:2::1")).await.status(), 200);
}

#[tokio::test]
async fn dry_run_counts_but_never_refuses_and_bypass_skips() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(Policy::new("trial", Quota::per_minute(2)).dry_run())
        .policy(
            Policy::new("strict", Quota::per_minute(1))
                .bypass_networks(["192.0.2.0/24".parse().unwrap()])
                .bypass_if(|parts| parts.headers.contains_key("x-admin")),
        )
        .build()
        .unwrap();
    let app = app(limits.clone(), ClientIpResolver::default());
    let req = |ip: &str, admin: bool| {
        let mut b = from(ip, Request::get("/health"));
        if admin {
            b = b.header("x-admin", "1");
        }
        b.body(Body::empty()).unwrap()
    };
    for _ in 0..5 {
        assert_eq!(status(&app, req("192.0.2.1", false)).await.status(), 200);
        assert_eq!(status(&app, req("203.0.113.1", true)).await.status(), 200);
    }
    assert_eq!(limits.decisions("trial", "dry_run_limited"), 6);
    assert_eq!(limits.decisions("strict", "bypassed"), 10);
    assert_eq!(status(&app, req("203.0.113.2", false)).await.status(), 200);
    assert_eq!(status(&app, req("203.0.113.2", false)).await.status(), 429);
}

#[tokio::test]
async fn oversized_body_on_a_body_keyed_route_is_413_and_non_json_is_400() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(
            Policy::new("acct", Quota::per_minute(1))
                .key(KeyBy::json_field("email"))
                .routes(["/auth/login"]),
        )
        .max_body(1024)
        .build()
        .unwrap();
    let app = app(limits, ClientIpResolver::default());
    let big = from("192.0.2.1", Request::post("/auth/login"))
        .header("content-type", "application/json")
        .body(Body::from(vec![b' '; 4096]))
        .unwrap();
    assert_eq!(
        status(&app, big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let text = from("192.0.2.1", Request::post("/auth/login"))
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"email":"a@b.c"}"#))
        .unwrap();
    assert_eq!(status(&app, text).await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_key_that_fails_open_lets_unkeyed_bodies_through_unlimited() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(
            Policy::new("acct", Quota::per_minute(1))
                .key(KeyBy::json_field("email").fail_open_when_missing())
                .routes(["/auth/login"]),
        )
        .policy(
            Policy::new("trial", Quota::per_minute(1))
                .key(KeyBy::json_field("email"))
                .routes(["/auth/login"])
                .dry_run(),
        )
        .build()
        .unwrap();
    let app = app(limits.clone(), ClientIpResolver::default());
    for (content_type, body) in [
        ("text/plain", r#"{"email":"a@b.c"}"#),
        ("application/json", r#"{"email":7}"#),
        ("application/json", "{}"),
    ] {
        for _ in 0..3 {
            let req = from("192.0.2.1", Request::post("/auth/login"))
                .header("content-type", content_type)
                .body(Body::from(body))
                .unwrap();
            let res = status(&app, req).await;
            assert_eq!(res.status(), StatusCode::OK, "{body}");
            let got = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, format!("got {} bytes", body.len()).as_bytes());
        }
    }
    // The dry-run policy that could not key counted it, and refused nothing.
    assert_eq!(limits.decisions("trial", "unkeyed"), 9);
    assert_eq!(limits.decisions("acct", "unkeyed"), 0);
    // With the field, the loosened policy still limits.
    assert_eq!(
        status(&app, login("192.0.2.2", "a@b.c")).await.status(),
        200
    );
    assert_eq!(
        status(&app, login("192.0.2.3", "a@b.c")).await.status(),
        429
    );
}

#[tokio::test]
async fn missing_client_ip_layer_is_a_loud_500() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(Policy::new("g", Quota::per_minute(2)))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(limits);
    let res = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn bad_configurations_are_refused() {
    let (_clock, store) = memory();
    let dup = RateLimit::new(store.clone())
        .policy(Policy::new("a", Quota::per_minute(1)))
        .policy(Policy::new("a", Quota::per_minute(2)))
        .build();
    assert!(dup.is_err());
    let bad_name = RateLimit::new(store.clone())
        .policy(Policy::new("a{b}", Quota::per_minute(1)))
        .build();
    assert!(bad_name.is_err());
    let four_parts = RateLimit::new(store)
        .policy(
            Policy::new("a", Quota::per_minute(1)).key(
                KeyBy::client_ip()
                    .and(KeyBy::user())
                    .and(KeyBy::route())
                    .and(KeyBy::json_field("x")),
            ),
        )
        .build();
    assert!(four_parts.is_err());
}

/// A response body that never ends.
struct Endless;

impl http_body::Body for Endless {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// Polls `done` between yields of the (current-thread) runtime until it holds
/// or 10,000 yields pass: the spawned requests run only while this yields.
async fn settle(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..10_000 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

#[tokio::test]
async fn concurrent_requests_per_client_are_capped() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handler_gate = Arc::clone(&gate);
    let cap = ClientConcurrencyLayer::new(3);
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let gate = Arc::clone(&handler_gate);
                async move {
                    gate.acquire().await.unwrap().forget();
                    "done"
                }
            }),
        )
        .layer(cap.clone())
        .layer(ClientIpLayer::new(ClientIpResolver::default()));
    let req = |ip: &str| from(ip, Request::get("/slow")).body(Body::empty()).unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let app = app.clone();
        let r = req("192.0.2.1");
        held.push(tokio::spawn(async move { app.oneshot(r).await.unwrap() }));
    }
    // Wait (bounded, no sleeping across a window) until all three are inside.
    assert!(settle(|| cap.in_flight() == 3).await);
    let res = app.clone().oneshot(req("192.0.2.1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");
    // Another client still gets in (and waits on the gate like the others).
    let other = tokio::spawn({
        let app = app.clone();
        let r = req("192.0.2.2");
        async move { app.oneshot(r).await.unwrap() }
    });
    gate.add_permits(4);
    for h in held {
        let res = h.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // The slot is held until the body is done.
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(other.await.unwrap().status(), StatusCode::OK);
    assert_eq!(cap.in_flight(), 0);
    gate.add_permits(1);
    let res = app.oneshot(req("192.0.2.1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the slots were given back");
}

/// Issue 18 item 15: a request dropped mid-flight (the client went away, a
/// deadline fired) gives its slot back, whether it is dropped while the
/// handler runs or after the response head, with its body unread. After many
/// such requests the full cap is still available.
#[tokio::test]
async fn requests_dropped_mid_flight_give_their_slots_back() {
    const CAP: u32 = 3;
    let cap = ClientConcurrencyLayer::new(CAP);
    let app = Router::new()
        // Never answers: dropped while the handler waits.
        .route("/hang", get(std::future::pending::<&'static str>))
        // Answers with a body that never ends: dropped with the response.
        .route("/stream", get(|| async { Body::new(Endless) }))
        .route("/ok", get(|| async { "ok" }))
        .layer(cap.clone())
        .layer(ClientIpLayer::new(ClientIpResolver::default()));
    let req = |path: &str| {
        from("192.0.2.1", Request::get(path))
            .body(Body::empty())
            .unwrap()
    };
    for round in 0..50 {
        // Fill the cap with requests that hang in the handler...
        let hung: Vec<_> = (0..CAP)
            .map(|_| tokio::spawn(app.clone().oneshot(req("/hang"))))
            .collect();
        assert!(
            settle(|| cap.in_flight() == u64::from(CAP)).await,
            "round {round}"
        );
        let res = app.clone().oneshot(req("/ok")).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "round {round}");
        // ...then drop them: each future is dropped mid-flight.
        for task in hung {
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
        }
        assert_eq!(cap.in_flight(), 0, "round {round}: slots leaked");

        // Responses whose bodies are dropped unread.
        let mut streams = Vec::new();
        for _ in 0..CAP {
            let res = app.clone().oneshot(req("/stream")).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            streams.push(res);
        }
        assert_eq!(cap.in_flight(), u64::from(CAP), "round {round}");
        drop(streams);
        assert_eq!(cap.in_flight(), 0, "round {round}: slots leaked");
    }
    // The full cap is available: CAP requests get in, one more does not.
    let hung: Vec<_> = (0..CAP)
        .map(|_| tokio::spawn(app.clone().oneshot(req("/hang"))))
        .collect();
    assert!(settle(|| cap.in_flight() == u64::from(CAP)).await);
    let res = app.clone().oneshot(req("/ok")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    for task in hung {
        task.abort();
        let _ = task.await;
    }
    let res = app.oneshot(req("/ok")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_drained_per_user_quota_never_blocks_the_excepted_self_defence_routes() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(
            Policy::new("api", Quota::per_minute(3))
                .key(KeyBy::user())
                .except_routes(["/auth/logout"]),
        )
        .build()
        .unwrap();
    let app = Router::new()
        .route("/me", get(|| async { "me" }))
        .route("/auth/logout", post(|| async { "bye" }))
        .layer(limits)
        .layer(
            ServiceBuilder::new()
                .map_request(|mut req: Request<Body>| {
                    req.extensions_mut().insert(Principal::new("victim"));
                    req
                })
                .layer(ClientIpLayer::new(ClientIpResolver::default())),
        );
    // Someone holding another of the victim's tokens drains the quota.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = status(
            &app,
            from("203.0.113.9", Request::get("/me"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    for _ in 0..5 {
        let res = status(
            &app,
            from("198.51.100.7", Request::post("/auth/logout"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "logout is not under the user quota"
        );
        assert!(res.headers().get("ratelimit-policy").is_none());
    }
}

/// Issue 17, finding 4: a per-account policy keyed by a JSON field must not
/// be dodged by leaving the field out, sending it with another type, or
/// sending a body that is not JSON.
#[tokio::test]
async fn a_body_the_account_key_cannot_be_read_from_is_refused_not_let_through() {
    let (_clock, store) = memory();
    let limits = RateLimit::new(store)
        .policy(
            Policy::new("login-account", Quota::per_minute(1))
                .key(KeyBy::json_field("email"))
                .routes(["/auth/login"]),
        )
        .build()
        .unwrap();
    let app = app(limits.clone(), ClientIpResolver::default());
    let cases: [(&str, &str); 10] = [
        ("application/json", r#"{"password":"wrong"}"#),
        (
            "application/json",
            r#"{"email":1337133713,"password":"wrong"}"#,
        ),
        ("application/json", r#"{"email":null}"#),
        ("application/json", r#"{"email":["<script>x</script>"]}"#),
        ("application/json", r#"{"email":{"$ne":"zz-nested-zz"}}"#),
        ("application/json", r#"{"email":"   "}"#),
        ("application/json", r#"["victim@example.com"]"#),
        ("application/json", "not json at all"),
        ("text/plain", r#"{"email":"victim@example.com"}"#),
        (
            "application/x-www-form-urlencoded",
            "email=victim%40example.com",
        ),
    ];
    for (i, (content_type, body)) in cases.iter().enumerate() {
        // Twice each: with the policy applied, the second would be 429.
        for attempt in 0..2 {
            let req = from(&format!("192.0.2.{i}"), Request::post("/auth/login"))
                .header("content-type", *content_type)
                .body(Body::from(*body))
                .unwrap();
            let res = status(&app, req).await;
            assert_eq!(
                res.status(),
                StatusCode::BAD_REQUEST,
                "case {i} attempt {attempt}: {body}"
            );
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            assert_eq!(
                res.extensions()
                    .get::<palisade_core::Rejection>()
                    .map(|r| r.reason),
                Some("unkeyed")
            );
            let text =
                String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
                    .unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["type"], "urn:palisade:problem:bad-request");
            assert!(
                json["detail"].as_str().unwrap().contains("\"email\""),
                "the detail names the field: {text}"
            );
            for echoed in ["1337133713", "script", "zz-nested-zz", "victim", "wrong"] {
                assert!(!text.contains(echoed), "{echoed} echoed in {text}");
            }
        }
    }
    assert_eq!(limits.decisions("login-account", "unkeyed"), 20);
    assert_eq!(limits.decisions("login-account", "allowed"), 0);
    // A keyed request still goes through and is limited as before.
    assert_eq!(
        status(&app, login("192.0.2.100", "a@example.com"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        status(&app, login("192.0.2.101", "A@example.com"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Issue 17, finding 8: `RateLimit` never reports more remaining units than
/// `RateLimit-Policy` advertises, and both describe the GCRA bucket.
#[tokio::test]
async fn ratelimit_remaining_never_exceeds_the_advertised_quota_through_a_burst() {
    fn param(item: &str, name: &str) -> u64 {
        item.split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {item}"))
            .parse()
            .unwrap()
    }
    let (clock, store) = memory();
    let app = app(contract_limits(store), ClientIpResolver::default());
    let health = || {
        from("203.0.113.77", Request::get("/health"))
            .body(Body::empty())
            .unwrap()
    };
    // 30/s with a burst of 50: a bucket of 50 that refills in 50/30 s.
    let mut allowed = 0u64;
    for i in 0..60u64 {
        let res = status(&app, health()).await;
        let policy = res.headers()["ratelimit-policy"].to_str().unwrap();
        let limit = res.headers()["ratelimit"].to_str().unwrap();
        assert!(policy.starts_with("\"global\";") && limit.starts_with("\"global\";"));
        let (q, w) = (param(policy, "q"), param(policy, "w"));
        let (r, t) = (param(limit, "r"), param(limit, "t"));
        assert_eq!((q, w), (50, 2), "response {i}: {policy}");
        assert!(r <= q, "response {i}: r={r} > q={q} ({policy} / {limit})");
        assert!(t <= w, "response {i}: t={t} > w={w}");
        if res.status() == StatusCode::OK {
            allowed += 1;
            assert_eq!(r, q - allowed, "response {i}: {limit}");
        } else {
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r, 0, "response {i}: {limit}");
        }
    }
    assert_eq!(allowed, 50);
    // After w seconds the whole quota is back.
    clock.advance(Duration::from_secs(2));
    let res = status(&app, health()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["ratelimit"], "\"global\";r=49;t=1");
}

fn v6(peer: &str) -> Request<Body> {
    from(peer, Request::get("/health"))
        .body(Body::empty())
        .unwrap()
}

fn per_ip(aggregates: impl FnOnce(RateLimit) -> RateLimit) -> Router {
    let (_clock, store) = memory();
    let limits =
        aggregates(RateLimit::new(store).policy(Policy::new("global", Quota::per_minute(2))))
            .build()
            .unwrap();
    app(limits, ClientIpResolver::default())
}

/// A tunnel broker hands out a /48: 65,536 /64s, each with its own per-IP
/// quota unless the /48 is counted too.
#[tokio::test]
async fn an_ipv6_slash_48_gets_sixteen_times_the_per_ip_quota_not_sixty_five_thousand() {
    let app = per_ip(|r| r);
    let mut allowed = 0;
    for i in 0..40 {
        let res = status(&app, v6(&format!("2001:db8:1:{i:x}::1"))).await;
        if res.status() == StatusCode::OK {
            allowed += 1;
            // The headers describe the client's own quota, not the /48's.
            assert_eq!(res.headers()["ratelimit-policy"], "\"global\";q=2;w=60");
        } else {
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(allowed, 32, "16 x the per-/64 quota of 2 for the whole /48");
    // Another /48 has its own budget; one /64 still has only its own 2.
    assert_eq!(
        status(&app, v6("2001:db8:2::1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        status(&app, v6("2001:db8:2::2")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        status(&app, v6("2001:db8:2::3")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // IPv4 clients are not aggregated.
    for i in 1..=40 {
        let res = status(&app, v6(&format!("198.51.{i}.7"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_slash_56_aggregate_can_be_added_and_aggregates_turned_off_loudly() {
    let app = per_ip(|r| r.ipv6_aggregate(56, 4));
    let mut allowed = 0;
    for i in 0..20 {
        let res = status(&app, v6(&format!("2001:db8:1:{i:x}::1"))).await;
        allowed += u32::from(res.status() == StatusCode::OK);
    }
    assert_eq!(allowed, 8, "4 x 2 for the /56 the first 20 /64s share");
    let app = per_ip(RateLimit::without_ipv6_aggregates);
    for i in 0..40 {
        let res = status(&app, v6(&format!("2001:db8:1:{i:x}::1"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[test]
fn more_keys_than_one_decision_holds_is_a_build_error() {
    let (_clock, store) = memory();
    let mut limits = RateLimit::new(store);
    for name in ["a", "b", "c", "d", "e"] {
        limits = limits.policy(Policy::new(name, Quota::per_minute(5)));
    }
    let err = limits.build().unwrap_err();
    assert_eq!(err.setting(), "ratelimit.policies");
    // Route-scoped policies on different routes never meet: the contract's
    // set (global + one scoped per route + per user) fits.
    let (_clock, store) = memory();
    contract_limits(store);
    assert!(
        RateLimit::new(memory().1)
            .policy(Policy::new("p", Quota::per_minute(5)))
            .ipv6_aggregate(8, 2)
            .build()
            .is_err()
    );
}

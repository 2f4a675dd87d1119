use super::*;
use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use palisade_core::client_ip::PeerAddr;
use std::time::Duration;
use tower::ServiceExt;

fn app() -> Router {
    SecureStack::api()
        .cors(
            Cors::new()
                .allow_origin("https://app.example.com")
                .allow_methods([http::Method::GET, http::Method::POST]),
        )
        .timeout(Timeout::new(Duration::from_secs(5)))
        .body_limit(64)
        .build()
        .unwrap()
        .apply(
            Router::new()
                .route(
                    "/ok",
                    get(|| async { "ok" }).post(|body: String| async move { body }),
                )
                .route("/panic", get(boom))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        "late"
                    }),
                )
                .route("/form", post(|| async { "changed" }))
                .route(
                    "/admin",
                    get(|| async { "admin" }).layer(
                        palisade_http::allowlist::IpAllowlist::new(["10.0.0.0/8"])
                            .build()
                            .unwrap(),
                    ),
                ),
        )
}

async fn boom() -> &'static str {
    panic!("boom with secret s3cr3t")
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let mut r = b.body(Body::from(body.to_owned())).unwrap();
    r.extensions_mut()
        .insert(PeerAddr("192.0.2.1:4444".parse().unwrap()));
    r
}

async fn send(r: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let res = app().oneshot(r).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn assert_hardened(headers: &http::HeaderMap) {
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(palisade_core::RequestId::parse(id).is_some(), "{id}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.contains_key("content-security-policy"));
    assert!(headers.contains_key("strict-transport-security"));
    assert!(!headers.contains_key("server"));
}

/// A 403 of the stack: hardened, a problem document of `kind` carrying the
/// request id of the `X-Request-Id` header.
fn assert_forbidden_problem(headers: &http::HeaderMap, body: &str, kind: &str) {
    assert_hardened(headers);
    assert_eq!(headers["content-type"], "application/problem+json");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["status"], 403, "{json}");
    assert_eq!(
        json["type"],
        format!("urn:palisade:problem:{kind}"),
        "{json}"
    );
    assert_eq!(
        json["request_id"],
        headers["x-request-id"].to_str().unwrap(),
        "{json}"
    );
}

const FROM_APP: (&str, &str) = ("origin", "https://app.example.com");

#[tokio::test]
async fn every_rejection_is_hardened_and_readable_cross_origin() {
    let (status, h, body) = send(req("GET", "/panic", &[FROM_APP], "")).await;
    assert_eq!(status, 500);
    assert_hardened(&h);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(!body.contains("s3cr3t"));

    let (status, h, _) = send(req("POST", "/ok", &[FROM_APP], &"x".repeat(65))).await;
    assert_eq!(status, 413);
    assert_hardened(&h);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");

    let (status, h, body) = send(req("GET", "/nope", &[FROM_APP], "")).await;
    assert_eq!(status, 404);
    assert_hardened(&h);
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(body.contains("urn:palisade:problem:not-found"));

    let (status, h, body) = send(req("DELETE", "/ok", &[], "")).await;
    assert_eq!(status, 405);
    assert_hardened(&h);
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(h["allow"].to_str().unwrap().contains("GET"), "{h:?}");
    assert!(body.contains("method-not-allowed"));
}

#[tokio::test(start_paused = true)]
async fn timeout_is_hardened() {
    let (status, h, body) = send(req("GET", "/slow", &[FROM_APP], "")).await;
    assert_eq!(status, 503);
    assert_hardened(&h);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(body.contains("timeout"));
}

#[tokio::test]
async fn preflights_and_cross_site_posts() {
    let preflight = [FROM_APP, ("access-control-request-method", "POST")];
    let (status, h, _) = send(req("OPTIONS", "/ok", &preflight, "")).await;
    assert_eq!(status, 204);
    assert_hardened(&h);

    // A cross-site form post from elsewhere is refused...
    let evil = [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    let (status, h, body) = send(req("POST", "/form", &evil, "")).await;
    assert_eq!(status, 403);
    assert_forbidden_problem(&h, &body, "cross-origin-denied");
    assert!(!h.contains_key("access-control-allow-origin"));
    // A preflight from that origin is refused the same way.
    let denied = [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
    ];
    let (status, h, body) = send(req("OPTIONS", "/ok", &denied, "")).await;
    assert_eq!(status, 403);
    assert_forbidden_problem(&h, &body, "cors-denied");
    assert!(
        h.keys().all(|n| !n.as_str().starts_with("access-control-")),
        "{h:?}"
    );
    // ...but the CORS origin is trusted for state-changing requests.
    let ok = [FROM_APP, ("sec-fetch-site", "cross-site")];
    let (status, _, body) = send(req("POST", "/form", &ok, "")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "changed");
}

/// A browser without `Sec-Fetch-Site` posting from the service's own page:
/// `https://` + `Host` by default; `http://` + `Host` only for a stack
/// declared as served over plain http.
#[tokio::test]
async fn the_own_origin_is_https_unless_the_stack_is_served_over_http() {
    let stack = |plain: bool| {
        let stack = SecureStack::api();
        let stack = if plain {
            stack.served_over_http()
        } else {
            stack
        };
        stack
            .build()
            .unwrap()
            .apply(Router::new().route("/form", post(|| async { "changed" })))
    };
    let post_from = |origin: &str| {
        req(
            "POST",
            "/form",
            &[("host", "app.example.com"), ("origin", origin)],
            "",
        )
    };
    for (plain, origin, expected) in [
        (false, "https://app.example.com", 200),
        (false, "http://app.example.com", 403),
        (true, "http://app.example.com", 200),
        (true, "https://evil.example", 403),
    ] {
        let res = stack(plain).oneshot(post_from(origin)).await.unwrap();
        assert_eq!(res.status(), expected, "plain http {plain}, {origin}");
    }
}

#[tokio::test]
async fn a_client_outside_a_route_allowlist_gets_a_hardened_403_problem() {
    let (status, h, body) = send(req("GET", "/admin", &[], "")).await;
    assert_eq!(status, 403);
    assert_forbidden_problem(&h, &body, "ip-denied");
}

#[tokio::test]
async fn no_peer_address_is_refused_loudly() {
    let mut r = req("GET", "/ok", &[], "");
    r.extensions_mut().remove::<PeerAddr>();
    let (status, h, _) = send(r).await;
    assert_eq!(status, 500);
    assert_hardened(&h);
}

#[tokio::test]
async fn html_stack_has_a_nonce() {
    let app = SecureStack::html()
        .build()
        .unwrap()
        .apply(Router::new().route(
            "/",
            get(|n: palisade_http::CspNonce| async move { n.as_str().to_owned() }),
        ));
    let res = app.oneshot(req("GET", "/", &[], "")).await.unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert!(
        csp.contains(&format!("'nonce-{}'", String::from_utf8_lossy(&body))),
        "{csp}"
    );
}

#[tokio::test]
async fn rejections_are_counted_by_reason() {
    let layer = SecureStack::api().body_limit(8).build().unwrap();
    let metrics = layer.metrics();
    let app = layer.apply(
        Router::new()
            .route("/echo", post(|body: String| async move { body }))
            .route("/panic", get(boom)),
    );
    let send = |r: Request<Body>| app.clone().oneshot(r);
    assert_eq!(
        send(req("POST", "/echo", &[], "123456789"))
            .await
            .unwrap()
            .status(),
        413
    );
    assert_eq!(
        send(req("GET", "/panic", &[], "")).await.unwrap().status(),
        500
    );
    let evil = [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    assert_eq!(
        send(req("POST", "/echo", &evil, "x"))
            .await
            .unwrap()
            .status(),
        403
    );
    let preflight = [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
    ];
    assert_eq!(
        send(req("OPTIONS", "/echo", &preflight, ""))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(req("POST", "/echo", &[], "ok"))
            .await
            .unwrap()
            .status(),
        200
    );
    for reason in [
        "payload_too_large",
        "panic",
        "cross_origin_denied",
        "cors_denied",
    ] {
        assert_eq!(metrics.rejections(reason), 1, "{reason}");
    }
    let text = metrics.encode();
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/echo",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("http_requests_in_flight 0"), "{text}");
}

#[test]
fn invalid_parts_are_errors() {
    assert!(
        SecureStack::api()
            .timeout(Timeout::new(Duration::ZERO))
            .build()
            .is_err()
    );
    assert!(SecureStack::api().trust_origin("*").build().is_err());
    assert!(
        SecureStack::api()
            .headers(SecurityHeaders::api().csp_report_only(true))
            .build()
            .is_err()
    );
}

/// A rate limit in its slot counts every request: routes, unknown paths
/// (404), wrong methods (405) and CORS preflights alike.
#[cfg(feature = "ratelimit")]
#[tokio::test]
async fn the_rate_limit_slot_covers_fallbacks_and_preflights() {
    use palisade_ratelimit::{Policy, RateLimit};
    use palisade_store::{MemoryStore, Quota, Store};
    let limits = RateLimit::new(Store::memory(MemoryStore::default()))
        .policy(Policy::new("global", Quota::per_minute(4)))
        .build()
        .unwrap();
    let app = SecureStack::api()
        .cors(Cors::new().allow_origin("https://app.example.com"))
        .rate_limit(limits)
        .build()
        .unwrap()
        .apply(Router::new().route("/ok", get(|| async { "ok" })));
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "GET"),
    ];
    let mut statuses = Vec::new();
    for (method, uri, headers) in [
        ("GET", "/nope", &[][..]),
        ("DELETE", "/ok", &[][..]),
        ("OPTIONS", "/ok", &preflight[..]),
        ("GET", "/ok", &[][..]),
        ("GET", "/nope", &[][..]),
        ("DELETE", "/ok", &[][..]),
        ("OPTIONS", "/ok", &preflight[..]),
    ] {
        let res = app
            .clone()
            .oneshot(req(method, uri, headers, ""))
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [404, 405, 204, 200, 429, 429, 429]);
}

/// The auth slot runs before the limits: a per-user policy sees the user.
#[cfg(feature = "ratelimit")]
#[tokio::test]
async fn the_auth_slot_runs_before_the_rate_limit_slot() {
    use palisade_core::Principal;
    use palisade_ratelimit::{KeyBy, Policy, RateLimit};
    use palisade_store::{MemoryStore, Quota, Store};
    let limits = RateLimit::new(Store::memory(MemoryStore::default()))
        .policy(Policy::new("api", Quota::per_minute(2)).key(KeyBy::user()))
        .build()
        .unwrap();
    let fake_auth = tower::util::MapRequestLayer::new(|mut r: Request<Body>| {
        r.extensions_mut().insert(Principal::new("user-1"));
        r
    });
    let app = SecureStack::api()
        .rate_limit(limits)
        .auth(fake_auth)
        .build()
        .unwrap()
        .apply(Router::new().route("/me", get(|| async { "me" })));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let res = app
            .clone()
            .oneshot(req("GET", "/me", &[], ""))
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn a_fallback_of_the_application_is_kept() {
    let app = SecureStack::api().build().unwrap().apply(
        Router::new()
            .route("/ok", get(|| async { "ok" }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "our own page") }),
    );
    let res = app.oneshot(req("GET", "/nope", &[], "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    assert_eq!(&body[..], b"our own page");
}

/// Problems made by handlers and layers carry the request id without
/// anyone passing it.
#[tokio::test]
async fn every_problem_carries_the_request_id() {
    let app = SecureStack::api().body_limit(8).build().unwrap().apply(
        Router::new()
            .route(
                "/forbidden",
                get(|| async {
                    palisade_core::ProblemDetails::new(palisade_core::ProblemType::FORBIDDEN)
                }),
            )
            .route("/bare", get(|| async { StatusCode::FORBIDDEN }))
            .route("/post", post(|body: String| async move { body })),
    );
    for (method, uri, body) in [
        ("GET", "/forbidden", ""),
        ("GET", "/bare", ""),
        ("GET", "/nope", ""),
        ("DELETE", "/bare", ""),
        ("POST", "/post", "far more than eight bytes"),
    ] {
        let res = app
            .clone()
            .oneshot(req(method, uri, &[("x-request-id", "trace-me-42")], body))
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{uri}: {}", res.status());
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{uri}"
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["request_id"], "trace-me-42", "{method} {uri}: {json}");
    }
}

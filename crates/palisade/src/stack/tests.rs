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
                .route("/form", post(|| async { "changed" })),
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
    assert!(body.contains("cross-origin-denied"));
    assert!(!h.contains_key("access-control-allow-origin"));
    // ...but the CORS origin is trusted for state-changing requests.
    let ok = [FROM_APP, ("sec-fetch-site", "cross-site")];
    let (status, _, body) = send(req("POST", "/form", &ok, "")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "changed");
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

use super::*;
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::{ServiceBuilder, ServiceExt};

fn layer(credentials: bool) -> CorsLayer {
    Cors::new()
        .allow_origins(["https://app.example.com", "http://localhost:3000"])
        .allow_credentials(credentials)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(["content-type", "authorization", "x-request-id"])
        .expose_headers(["x-request-id"])
        .build()
        .unwrap()
}

async fn send(
    layer: CorsLayer,
    req: Request<Full<Bytes>>,
) -> (Response<ResponseBody<Full<Bytes>>>, usize) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_req: Request<Full<Bytes>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("vary", "accept-encoding")
                        .body(Full::<Bytes>::from("data"))
                        .unwrap(),
                )
            }
        });
    let res = svc.oneshot(req).await.unwrap();
    (res, hits.load(Ordering::SeqCst))
}

fn get(origin: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get("/");
    if let Some(o) = origin {
        b = b.header("origin", o);
    }
    b.body(Full::default()).unwrap()
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::options("/")
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        b = b.header("access-control-request-headers", h);
    }
    b.body(Full::default()).unwrap()
}

fn cors_headers(res: &Response<impl Sized>) -> Vec<String> {
    res.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn varies_on_origin(res: &Response<impl Sized>) -> bool {
    res.headers()
        .get_all(VARY)
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

#[tokio::test]
async fn allowed_origin_gets_its_exact_origin() {
    let (res, hits) = send(layer(false), get(Some("https://app.example.com"))).await;
    assert_eq!(hits, 1);
    assert_eq!(
        res.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert_eq!(res.headers()[ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
    assert!(
        res.headers()
            .get(ACCESS_CONTROL_ALLOW_CREDENTIALS)
            .is_none()
    );
    assert!(varies_on_origin(&res));
    // The handler's Vary is kept.
    assert!(
        res.headers()
            .get_all(VARY)
            .iter()
            .any(|v| v == "accept-encoding")
    );

    let (res, _) = send(layer(true), get(Some("http://localhost:3000"))).await;
    assert_eq!(
        res.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://localhost:3000"
    );
    assert_eq!(res.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
}

#[tokio::test]
async fn other_origins_are_never_reflected() {
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "https://evilapp.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        "https://app.example.com/",
        "*",
        "",
    ] {
        let (res, hits) = send(layer(true), get(Some(origin))).await;
        assert_eq!(hits, 1, "the request is still served");
        assert_eq!(cors_headers(&res), Vec::<String>::new(), "{origin:?}");
        assert!(varies_on_origin(&res));
    }
    let (res, _) = send(layer(true), get(None)).await;
    assert!(cors_headers(&res).is_empty());
    assert!(varies_on_origin(&res));
}

#[tokio::test]
async fn allowed_preflight() {
    let req = preflight(
        "https://app.example.com",
        "DELETE",
        Some("Authorization, X-Request-Id"),
    );
    let (res, hits) = send(layer(true), req).await;
    assert_eq!(hits, 0, "preflights never reach the handler");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST, DELETE");
    assert_eq!(
        h[ACCESS_CONTROL_ALLOW_HEADERS],
        "content-type, authorization, x-request-id"
    );
    assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
    assert!(varies_on_origin(&res));
}

#[tokio::test]
async fn denied_preflights_are_403_without_cors_headers() {
    let cases = [
        preflight("https://evil.example", "GET", None),
        preflight("https://app.example.com", "PUT", None),
        preflight("https://app.example.com", "GET", Some("x-secret")),
        preflight(
            "https://app.example.com",
            "GET",
            Some("content-type, x-secret"),
        ),
        preflight("https://app.example.com", "not a method", None),
        preflight("null", "GET", None),
    ];
    for req in cases {
        let (res, hits) = send(layer(true), req).await;
        assert_eq!(hits, 0);
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(cors_headers(&res), Vec::<String>::new());
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn options_without_request_method_is_not_a_preflight() {
    let req = Request::options("/")
        .header("origin", "https://app.example.com")
        .body(Full::default())
        .unwrap();
    let (res, hits) = send(layer(false), req).await;
    assert_eq!(hits, 1);
    assert_eq!(
        res.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn any_origin_mode() {
    let layer = Cors::new().allow_any_origin().build().unwrap();
    let (res, _) = send(layer.clone(), get(Some("https://whoever.example"))).await;
    assert_eq!(res.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(
        res.headers()
            .get(ACCESS_CONTROL_ALLOW_CREDENTIALS)
            .is_none()
    );
    let (res, _) = send(
        layer,
        preflight("https://whoever.example", "POST", Some("content-type")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[test]
fn unsafe_configurations_are_errors() {
    let errors = [
        Cors::new().allow_any_origin().allow_credentials(true),
        Cors::new()
            .allow_any_origin()
            .allow_origin("https://a.example"),
        Cors::new().allow_origin("*"),
        Cors::new().allow_origin("null"),
        Cors::new().allow_origin("https://*.example.com"),
        Cors::new().allow_origin("https://a.example/path"),
        Cors::new()
            .allow_origin("https://a.example")
            .allow_credentials(true)
            .allow_headers(["*"]),
        Cors::new()
            .allow_origin("https://a.example")
            .allow_methods([]),
        Cors::new()
            .allow_origin("https://a.example")
            .allow_headers(["bad header"]),
    ];
    for (i, cors) in errors.into_iter().enumerate() {
        assert!(cors.build().is_err(), "case {i}");
    }
    let err = Cors::new()
        .allow_any_origin()
        .allow_credentials(true)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "cors.origins");
}

use super::*;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::routing::{get, post};
use std::sync::atomic::AtomicBool;
use tower::ServiceExt;

fn layer(total: u64) -> TimeoutLayer {
    Timeout::new(Duration::from_secs(total)).build().unwrap()
}

async fn sleepy(secs: u64) -> &'static str {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    "done"
}

async fn call(app: Router, uri: &str) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let res = app
        .oneshot(Request::get(uri).body(AxumBody::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

#[tokio::test(start_paused = true)]
async fn slow_handler_is_cancelled_with_503() {
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let guard = DropFlag(flag.clone());
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(guard);
                    "never"
                }
            }),
        )
        .layer(layer(30));
    let start = Instant::now();
    let (status, headers, json) = call(app, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(json["type"], "urn:palisade:problem:timeout");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler future was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn fast_handler_is_untouched() {
    let app = Router::new()
        .route("/", get(|| sleepy(29)))
        .layer(layer(30));
    let (status, _, _) = call(app, "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn status_and_retry_after_are_configurable() {
    let layer = Timeout::new(Duration::from_secs(1))
        .status(StatusCode::GATEWAY_TIMEOUT)
        .retry_after(None)
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| sleepy(2))).layer(layer);
    let (status, headers, json) = call(app, "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json["status"], 504);
    assert!(headers.get("retry-after").is_none());
}

#[tokio::test(start_paused = true)]
async fn route_layer_overrides_both_ways() {
    let app = Router::new()
        .route("/long", get(|| sleepy(60)).layer(layer(120)))
        .route("/short", get(|| sleepy(5)).layer(layer(2)))
        .route("/default", get(|| sleepy(20)))
        .layer(layer(10));
    let start = Instant::now();
    assert_eq!(call(app.clone(), "/long").await.0, StatusCode::OK);
    assert_eq!(Instant::now() - start, Duration::from_secs(60));

    let start = Instant::now();
    assert_eq!(
        call(app.clone(), "/short").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(Instant::now() - start, Duration::from_secs(2));

    let start = Instant::now();
    assert_eq!(
        call(app, "/default").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(Instant::now() - start, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn handler_sees_remaining_time() {
    let app = Router::new()
        .route(
            "/",
            get(|req: axum::extract::Request| async move {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let d = req.extensions().get::<RequestDeadline>().unwrap();
                d.remaining().as_secs().to_string()
            }),
        )
        .layer(layer(10));
    let res = app
        .oneshot(Request::get("/").body(AxumBody::empty()).unwrap())
        .await
        .unwrap();
    let body = axum::body::to_bytes(res.into_body(), 64).await.unwrap();
    assert_eq!(&body[..], b"6");
}

/// A body that sends one chunk, then nothing, ever (a slow-loris upload).
struct Stalled(bool);

impl Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.0 {
            Poll::Pending
        } else {
            self.0 = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"a\":")))))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stalled_body_gets_408_at_the_body_deadline() {
    let layer = Timeout::new(Duration::from_secs(30))
        .body_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", post(|body: String| async move { body }))
        .layer(layer);
    let start = Instant::now();
    let res = app
        .oneshot(
            Request::post("/")
                .body(AxumBody::new(Stalled(false)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
    assert_eq!(res.headers()["connection"], "close");
    let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["type"], "urn:palisade:problem:body-timeout");
}

#[tokio::test(start_paused = true)]
async fn stalled_body_without_body_deadline_hits_the_request_deadline() {
    let app = Router::new()
        .route("/", post(|body: String| async move { body }))
        .layer(layer(30));
    let start = Instant::now();
    let res = app
        .oneshot(
            Request::post("/")
                .body(AxumBody::new(Stalled(false)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn route_can_extend_the_body_deadline() {
    let strict = Timeout::new(Duration::from_secs(30))
        .body_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let upload = Timeout::new(Duration::from_secs(600))
        .body_timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/upload",
            post(|body: String| async move { body }).layer(upload),
        )
        .layer(strict);
    let start = Instant::now();
    let res = app
        .oneshot(
            Request::post("/upload")
                .body(AxumBody::new(Stalled(false)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(Instant::now() - start, Duration::from_secs(300));
}

#[test]
fn invalid_configurations() {
    let d = Duration::from_secs;
    assert!(Timeout::new(Duration::ZERO).build().is_err());
    assert!(Timeout::new(d(5)).body_timeout(d(6)).build().is_err());
    assert!(
        Timeout::new(d(5))
            .body_timeout(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(Timeout::new(d(5)).status(StatusCode::OK).build().is_err());
    assert!(
        Timeout::new(d(5))
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .build()
            .is_err()
    );
    assert!(
        Timeout::new(d(5))
            .status(StatusCode::REQUEST_TIMEOUT)
            .build()
            .is_ok()
    );
}

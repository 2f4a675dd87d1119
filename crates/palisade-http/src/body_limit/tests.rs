use super::*;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::routing::post;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use tower::ServiceExt;

/// An endless chunked body that counts the chunks pulled from it.
struct Endless(Arc<AtomicUsize>);

impl Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))))
    }
}

async fn echo(body: String) -> String {
    body
}

/// A handler that streams the body itself and ignores the error.
async fn careless(body: AxumBody) -> &'static str {
    let _ = axum::body::to_bytes(body, usize::MAX).await;
    "stored"
}

async fn status_of(
    app: Router,
    req: Request<AxumBody>,
) -> (http::StatusCode, Bytes, http::HeaderMap) {
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (
        status,
        axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap(),
        headers,
    )
}

fn app(limit: u64) -> Router {
    Router::new()
        .route("/echo", post(echo))
        .route("/careless", post(careless))
        .layer(BodyLimitLayer::new(limit))
}

#[tokio::test]
async fn small_bodies_pass() {
    let (status, body, _) = status_of(
        app(16),
        Request::post("/echo")
            .body(AxumBody::from("0123456789abcdef"))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"0123456789abcdef");
}

/// A body that declares `declared` bytes (as a `Content-Length` does) and
/// records whether anything polled it; polled, it yields `data` once.
struct Declared {
    length: u64,
    data: Option<Bytes>,
    polled: Arc<AtomicBool>,
}

impl Declared {
    fn new(declared: u64, data: &'static [u8]) -> (Self, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicBool::new(false));
        let body = Self {
            length: declared,
            data: Some(Bytes::from_static(data)),
            polled: polled.clone(),
        };
        (body, polled)
    }
}

impl Body for Declared {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.polled.store(true, Ordering::SeqCst);
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}

#[tokio::test]
async fn declared_length_over_the_limit_is_refused_before_reading() {
    for route in ["/echo", "/careless"] {
        // A gigabyte declared: refused without polling the body once.
        let (body, polled) = Declared::new(1 << 30, b"x");
        let req = Request::post(route).body(AxumBody::new(body)).unwrap();
        let (status, body, headers) = status_of(app(16), req).await;
        assert_eq!(status, 413, "{route}");
        assert!(!polled.load(Ordering::SeqCst), "{route}: the body was read");
        assert_eq!(headers["connection"], "close");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], "urn:palisade:problem:payload-too-large");
        // One byte over: refused the same way.
        let (body, polled) = Declared::new(17, b"0123456789abcdefg");
        let req = Request::post(route).body(AxumBody::new(body)).unwrap();
        assert_eq!(status_of(app(16), req).await.0, 413, "{route}");
        assert!(!polled.load(Ordering::SeqCst), "{route}: the body was read");
    }
    // Control: exactly the limit declared is read and served.
    let (body, polled) = Declared::new(16, b"0123456789abcdef");
    let req = Request::post("/echo").body(AxumBody::new(body)).unwrap();
    let (status, body, _) = status_of(app(16), req).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"0123456789abcdef");
    assert!(polled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn endless_chunked_body_is_cut_at_the_limit() {
    for route in ["/echo", "/careless"] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let req = Request::post(route)
            .body(AxumBody::new(Endless(pulled.clone())))
            .unwrap();
        let (status, _, _) = status_of(app(64 * 1024), req).await;
        assert_eq!(status, 413, "{route}");
        // 64 chunks fit, the 65th crosses the limit; nothing more is read.
        assert_eq!(pulled.load(Ordering::SeqCst), 65, "{route}");
    }
}

#[tokio::test]
async fn route_layer_replaces_the_limit() {
    let app = Router::new()
        .route("/upload", post(echo).layer(BodyLimitLayer::new(4096)))
        .route("/json", post(echo))
        .layer(BodyLimitLayer::new(16));
    let big = || AxumBody::from("y".repeat(1000));
    let (status, _, _) =
        status_of(app.clone(), Request::post("/upload").body(big()).unwrap()).await;
    assert_eq!(status, 200);
    let (status, _, _) = status_of(app.clone(), Request::post("/json").body(big()).unwrap()).await;
    assert_eq!(status, 413);
    let (status, _, _) = status_of(
        app,
        Request::post("/upload")
            .body(AxumBody::from("z".repeat(4097)))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn request_id_is_in_the_problem() {
    let mut req = Request::post("/echo")
        .body(AxumBody::from("x".repeat(100)))
        .unwrap();
    req.extensions_mut()
        .insert(RequestId::parse("req-413").unwrap());
    let (_, body, _) = status_of(app(10), req).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["request_id"], "req-413");
}

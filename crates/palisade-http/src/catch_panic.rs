//! Turns a panicking handler into a 500 problem instead of a dropped connection.
//!
//! The client gets a generic `internal` problem with the request id, never the
//! panic message. The panic is logged at ERROR with the request id, method,
//! path (without the query string, which may carry tokens) and the panic's
//! location (`file:line:column`); the message itself is written as
//! `[redacted: N bytes]`, because `panic!("bad token {t}")` would otherwise
//! put a secret in the log. [`CatchPanicLayer::without_panic_message_redaction`]
//! logs it as it is. The server keeps serving: only the panicking request is
//! affected.
//!
//! The location is known only to the process's panic hook: building the layer
//! wraps the hook in place (once) with one that notes the location of each
//! panic for the thread it happens on, then calls the previous hook (std's
//! text on stderr, or the JSON line of `palisade_telemetry::init`). If
//! another hook later replaces it, the next caught panic is logged with
//! `location = "unknown"` and the note-taking hook is put back in front.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::Request;
//! use palisade_http::catch_panic::CatchPanicLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! async fn boom() -> &'static str { panic!("secret state: hunter2") }
//! let app = Router::new().route("/", get(boom)).layer(CatchPanicLayer::new());
//! let res = app.oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 500);
//! let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
//! assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
//! # });
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use palisade_core::body::ResponseBody;
use palisade_core::panic_message::{self, PanicMessage};
use palisade_core::{ProblemDetails, ProblemType, RequestId};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Catches panics of the inner service. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct CatchPanicLayer {
    redact: bool,
}

impl Default for CatchPanicLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CatchPanicLayer {
    /// The layer: panic messages are logged redacted.
    pub fn new() -> Self {
        Self { redact: true }
    }

    /// **Loosens security.** Logs the panic message as it is instead of
    /// `[redacted: N bytes]`: whatever a `panic!` formats — a token, a
    /// password, a user's data — then reaches the log. The response never
    /// carries it either way.
    pub fn without_panic_message_redaction(mut self) -> Self {
        self.redact = false;
        self
    }

    /// Whether panic messages are logged redacted (the default).
    pub fn redacts_panic_messages(&self) -> bool {
        self.redact
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        site::install();
        CatchPanic {
            inner,
            redact: self.redact,
        }
    }
}

/// The service of [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
    redact: bool,
}

/// Where the last panic of each thread happened, noted by the panic hook
/// for the next `catch_unwind` of that thread.
mod site {
    use super::{AtomicU32, Once, Ordering, PanicHookInfo, RefCell, panic_message};

    /// A panic's location and the length of its message (to tell it from
    /// an older note the hook left for another panic).
    pub(super) struct Site {
        pub(super) location: String,
        message_len: Option<usize>,
    }

    thread_local! {
        static LAST: RefCell<Option<Site>> = const { RefCell::new(None) };
    }

    static INSTALL: Once = Once::new();
    /// Times the hook was put back after being replaced: bounded, so a hook
    /// that keeps replacing it cannot make the chain grow without end.
    static REINSTALLS: AtomicU32 = AtomicU32::new(0);
    const MAX_REINSTALLS: u32 = 8;

    /// Wraps the current panic hook once per process.
    pub(super) fn install() {
        INSTALL.call_once(wrap);
    }

    fn wrap() {
        // `take_hook` panics on a panicking thread.
        if std::thread::panicking() {
            return;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            note(info);
            previous(info);
        }));
    }

    fn note(info: &PanicHookInfo<'_>) {
        let Some(location) = info.location() else {
            return;
        };
        let site = Site {
            location: location.to_string(),
            message_len: panic_message::text(info.payload()).map(str::len),
        };
        let _ = LAST.try_with(|last| {
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = Some(site);
            }
        });
    }

    /// The location of the panic whose payload this is, if the hook noted
    /// it on this thread; puts the hook back when it did not.
    pub(super) fn take(payload: &(dyn std::any::Any + Send)) -> Option<String> {
        let site = LAST
            .try_with(|last| last.try_borrow_mut().ok().and_then(|mut l| l.take()))
            .ok()
            .flatten();
        match site {
            Some(site) if site.message_len == panic_message::text(payload).map(str::len) => {
                Some(site.location)
            }
            _ => {
                if REINSTALLS.fetch_add(1, Ordering::Relaxed) < MAX_REINSTALLS {
                    wrap();
                }
                None
            }
        }
    }
}

/// What is logged about a request that panicked.
#[derive(Debug)]
struct RequestInfo {
    request_id: Option<RequestId>,
    method: Method,
    /// A reference-counted clone; only the path is logged, never the query.
    path: Option<PathAndQuery>,
    redact: bool,
}

impl RequestInfo {
    fn report(&self, payload: &(dyn Any + Send)) -> ProblemDetails {
        let location = site::take(payload);
        tracing::error!(
            request_id = self.request_id.as_ref().map(RequestId::as_str),
            method = %self.method,
            path = self.path.as_ref().map_or("/", PathAndQuery::path),
            location = location.as_deref().unwrap_or("unknown"),
            panic = %PanicMessage::new(payload, self.redact),
            "handler panicked"
        );
        ProblemDetails::new(ProblemType::INTERNAL)
            .with_detail("an unexpected error occurred; quote the request id when reporting it")
            .with_optional_request_id(self.request_id.as_ref())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CatchPanic<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let info = RequestInfo {
            request_id: req.extensions().get::<RequestId>().cloned(),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            redact: self.redact,
        };
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(future) => CatchPanicFuture {
                future: Some(future),
                panicked: None,
                info,
            },
            Err(payload) => CatchPanicFuture {
                future: None,
                panicked: Some(Box::new(info.report(payload.as_ref()))),
                info,
            },
        }
    }
}

pin_project! {
    /// The response future of [`CatchPanic`].
    pub struct CatchPanicFuture<F> {
        #[pin]
        future: Option<F>,
        // Boxed: only a panic in `call` fills it, and every request's
        // future (moved through each outer layer) stays smaller.
        panicked: Option<Box<ProblemDetails>>,
        info: RequestInfo,
    }
}

impl<F, B, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            // `call` itself panicked (already logged), or this future is polled
            // after completion.
            let problem = this
                .panicked
                .take()
                .map_or_else(|| ProblemDetails::new(ProblemType::INTERNAL), |p| *p);
            return Poll::Ready(Ok(problem.rejection("panic").map(ResponseBody::full)));
        };
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(result.map(|r| r.map(ResponseBody::inner))),
            Err(payload) => {
                let problem = this.info.report(payload.as_ref());
                // Never poll a future that panicked again.
                this.future.set(None);
                Poll::Ready(Ok(problem.rejection("panic").map(ResponseBody::full)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};
    use tower::{ServiceBuilder, ServiceExt};

    /// A minimal subscriber: each event as `name=value` pairs (this crate
    /// has no tracing-subscriber).
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl tracing::Subscriber for Lines {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    let _ = write!(line, "{}={value:?} ", field.name());
                },
            );
            self.0.lock().unwrap().push(line);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    const SECRET: &str = "tok_5up3r5ecret";

    #[allow(clippy::manual_assert)] // the panic under test
    async fn panicking(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        if req.uri().path() == "/panic" {
            panic!("bad token {SECRET} for {}", req.uri().path());
        }
        Ok(Response::new(Full::from("fine")))
    }

    /// The line of the `panic!` in [`panicking`].
    const PANIC_LINE: u32 = line!() - 6;

    /// Issue 17, finding 7: the log line says where, never what.
    #[tokio::test]
    async fn the_log_line_has_the_location_and_not_the_message() {
        let lines = Lines::default();
        let _default = tracing::subscriber::set_default(lines.clone());
        let svc = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service_fn(panicking);
        let mut req = Request::get("/panic?token=q")
            .body(Full::default())
            .unwrap();
        req.extensions_mut()
            .insert(RequestId::parse("rid-9").unwrap());
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 500);
        let lines = lines.0.lock().unwrap().clone();
        let line = lines
            .iter()
            .find(|l| l.contains("handler panicked"))
            .unwrap_or_else(|| panic!("no panic line in {lines:?}"));
        let location = format!("location=\"{}:{PANIC_LINE}:", file!());
        assert!(line.contains(&location), "{location} not in {line}");
        let length = format!("bad token {SECRET} for /panic").len();
        assert!(
            line.contains(&format!("[redacted: {length} bytes]")),
            "{line}"
        );
        assert!(
            line.contains("rid-9") && line.contains("path=\"/panic\""),
            "{line}"
        );
        for l in &lines {
            assert!(!l.contains("5up3r5ecret") && !l.contains("token=q"), "{l}");
        }
    }

    #[tokio::test]
    async fn the_message_is_logged_only_when_redaction_is_turned_off() {
        let lines = Lines::default();
        let _default = tracing::subscriber::set_default(lines.clone());
        let layer = CatchPanicLayer::new().without_panic_message_redaction();
        assert!(!layer.redacts_panic_messages());
        assert!(CatchPanicLayer::default().redacts_panic_messages());
        let svc = ServiceBuilder::new().layer(layer).service_fn(panicking);
        let res = svc
            .oneshot(Request::get("/panic").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("5up3r5ecret"));
        let svc = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service_fn(|_: Request<Full<Bytes>>| async move {
                std::panic::panic_any(42_u32);
                #[allow(unreachable_code)]
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            });
        let res = svc
            .oneshot(Request::get("/").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let lines = lines.0.lock().unwrap().clone();
        let logged: Vec<_> = lines
            .iter()
            .filter(|l| l.contains("handler panicked"))
            .collect();
        assert_eq!(logged.len(), 2, "{lines:?}");
        assert!(
            logged[0].contains(&format!("panic=bad token {SECRET} for /panic")),
            "{}",
            logged[0]
        );
        assert!(logged[0].contains(&format!("{}:{PANIC_LINE}:", file!())));
        assert!(
            logged[1].contains("panic=[non-string panic payload]"),
            "{}",
            logged[1]
        );
        assert!(logged[1].contains(file!()), "{}", logged[1]);
    }

    #[tokio::test]
    async fn panic_in_call_and_in_future() {
        #[derive(Clone)]
        struct PanicsInCall;
        impl Service<Request<Full<Bytes>>> for PanicsInCall {
            type Response = Response<Full<Bytes>>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
                panic!("in call")
            }
        }
        // Every test reaching the log line has a subscriber: tracing caches a
        // callsite's interest when first hit, and a thread without one could
        // make it "never" for the test that reads the lines.
        let lines = Lines::default();
        let _default = tracing::subscriber::set_default(lines.clone());
        let mut req = Request::new(Full::default());
        req.extensions_mut()
            .insert(RequestId::parse("rid-7").unwrap());
        let res = CatchPanicLayer::new()
            .layer(PanicsInCall)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["request_id"], "rid-7");
        assert!(!String::from_utf8_lossy(&body).contains("in call"));
        let logged = lines.0.lock().unwrap().clone();
        assert!(
            logged
                .iter()
                .any(|l| l.contains("rid-7") && l.contains(&format!("location=\"{}:", file!()))),
            "{logged:?}"
        );

        let svc = ServiceBuilder::new()
            .layer(CatchPanicLayer::new())
            .service_fn(|req: Request<Full<Bytes>>| async move {
                if req.uri().path() == "/panic" {
                    let owned = String::from("owned payload with token abc123");
                    std::panic::panic_any(owned);
                }
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("fine")))
            });
        let res = svc
            .clone()
            .oneshot(Request::get("/panic").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("abc123"));
        // The service keeps serving.
        let res = svc
            .oneshot(Request::get("/ok").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

//! Turns a panicking handler into a 500 problem instead of a dropped connection.
//!
//! The client gets a generic `internal` problem with the request id, never the
//! panic message; the panic is logged at ERROR with the request id, method and
//! path (without the query string, which may carry tokens). The server keeps
//! serving: only the panicking request is affected.
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
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use palisade_core::body::ResponseBody;
use palisade_core::{ProblemDetails, ProblemType, RequestId};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Catches panics of the inner service. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl CatchPanicLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

/// The service of [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

/// What is logged about a request that panicked.
#[derive(Debug)]
struct RequestInfo {
    request_id: Option<RequestId>,
    method: Method,
    /// A reference-counted clone; only the path is logged, never the query.
    path: Option<PathAndQuery>,
}

impl RequestInfo {
    fn report(&self, payload: &(dyn Any + Send)) -> ProblemDetails {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic payload)");
        tracing::error!(
            request_id = self.request_id.as_ref().map(RequestId::as_str),
            method = %self.method,
            path = self.path.as_ref().map_or("/", PathAndQuery::path),
            panic = message,
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
    use tower::{ServiceBuilder, ServiceExt};

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

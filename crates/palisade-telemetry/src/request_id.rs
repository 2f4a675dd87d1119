//! Request ids: accepted when valid, generated otherwise, echoed on every
//! response, carried into logs, spawned tasks and outbound calls.
//!
//! [`RequestIdLayer`] gives each request a [`RequestId`]:
//!
//! 1. the incoming `X-Request-Id` when it is 1–128 characters of
//!    `[A-Za-z0-9._-]` (anything else, from log-injection payloads to
//!    kilobytes of junk, is ignored);
//! 2. otherwise the trace-id of a valid W3C `traceparent`, so logs join the
//!    caller's trace;
//! 3. otherwise a fresh UUIDv7 (time-ordered, so ids sort by arrival).
//!
//! The id is in the request's extensions (handlers take it as an extractor),
//! in a tracing span around the request (so [`JsonFormat`](crate::JsonFormat)
//! writes it on every line), in a request-scoped [`current`] for outbound calls and
//! [`spawn`]ed tasks, and in the `X-Request-Id` response header — also on
//! answers that inner layers produce (413, 429, 503, panics), because this
//! layer sits outside them.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use palisade_core::RequestId;
//! use palisade_telemetry::RequestIdLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let svc = ServiceBuilder::new().layer(RequestIdLayer::new()).service_fn(|req: Request<()>| async move {
//!     let id = req.extensions().get::<RequestId>().unwrap().clone();
//!     Ok::<_, std::convert::Infallible>(Response::new(id.to_string()))
//! });
//! let req = Request::builder().header("x-request-id", "order-42").body(()).unwrap();
//! let res = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.headers()["x-request-id"], "order-42");
//!
//! // A header-injection attempt is replaced by a UUIDv7.
//! let req = Request::builder().header("x-request-id", "a\"}{\"admin\":true").body(()).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()["x-request-id"].len(), 36);
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use palisade_core::RequestId;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

pub use palisade_core::request_id::{RequestContext, TraceId, current};
use palisade_core::request_id::{enter, with_current};

/// Runs `f` with the current request id, without copying it (for log formatters).
pub(crate) fn with_current_id<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    with_current(|c| f(c.id.as_str()))
}

pin_project! {
    /// A spawned task's future, polled with its request's context.
    struct Scoped<F> {
        #[pin]
        future: F,
        context: Arc<RequestContext>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = enter(this.context);
        this.future.poll(cx)
    }
}

/// Spawns `future` on the tokio runtime carrying the current request's
/// context and span, so its log lines and outbound calls keep the request id.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    let future = future.instrument(Span::current());
    match with_current(Arc::clone) {
        Some(context) => tokio::spawn(Scoped { future, context }),
        None => tokio::spawn(future),
    }
}

/// Parses a W3C `traceparent` (version 00) and returns its trace id.
pub fn parse_traceparent(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some(trace)
}

/// Chooses the request's id and trace id. See the [module docs](self).
fn resolve(headers: &HeaderMap, trust_incoming: bool) -> RequestContext {
    let incoming_trace = trust_incoming
        .then(|| {
            headers
                .get(TRACEPARENT)
                .and_then(|v| parse_traceparent(v.as_bytes()))
        })
        .flatten();
    let incoming_id = trust_incoming
        .then(|| {
            headers
                .get(X_REQUEST_ID)
                .and_then(|v| RequestId::from_bytes(v.as_bytes()))
        })
        .flatten();
    if let Some(trace) = incoming_trace.and_then(TraceId::from_hex) {
        let id = incoming_id
            .or_else(|| incoming_trace.and_then(RequestId::parse))
            .unwrap_or_else(|| RequestId::sanitized(&trace.to_string()));
        return RequestContext {
            id,
            trace_id: trace,
        };
    }
    // A new trace starts here; a generated id and the trace id are the same UUIDv7.
    let uuid = uuid::Uuid::now_v7();
    let id = incoming_id.unwrap_or_else(|| {
        let mut buf = uuid::Uuid::encode_buffer();
        let text = uuid.hyphenated().encode_lower(&mut buf);
        // A hyphenated UUID is a valid id: `parse` accepts it with one
        // allocation; `sanitized` is only the no-panic fallback.
        RequestId::parse(text).unwrap_or_else(|| RequestId::sanitized(text))
    });
    RequestContext {
        id,
        trace_id: TraceId(uuid.into_bytes()),
    }
}

/// Assigns request ids. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct RequestIdLayer {
    trust_incoming: bool,
    span: bool,
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIdLayer {
    /// Accepts valid incoming ids and trace contexts.
    pub fn new() -> Self {
        Self {
            trust_incoming: true,
            span: false,
        }
    }

    /// Also opens a `request` span with a `request_id` field around each
    /// request, for span-based tooling (OpenTelemetry, the pretty format).
    /// [`JsonFormat`](crate::JsonFormat) does not need it: it reads the id of
    /// the task's request directly, which costs nothing per request.
    #[must_use]
    pub fn with_span(mut self) -> Self {
        self.span = true;
        self
    }

    /// Ignores incoming `X-Request-Id` and `traceparent` (for services
    /// exposed directly to the internet that want ids only they chose).
    #[must_use]
    pub fn ignore_incoming(mut self) -> Self {
        self.trust_incoming = false;
        self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService {
            inner,
            trust_incoming: self.trust_incoming,
            span: self.span,
        }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
    trust_incoming: bool,
    span: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestIdService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let context = Arc::new(resolve(req.headers(), self.trust_incoming));
        req.extensions_mut().insert(context.id.clone());
        // ERROR level: the span exists whatever the filter, so even WARN and
        // ERROR lines of a request carry its id.
        let span = if self.span {
            tracing::error_span!("request", request_id = %context.id)
        } else {
            Span::none()
        };
        let entered = (span.enter(), enter(&context));
        let future = self.inner.call(req);
        drop(entered);
        RequestIdFuture {
            future,
            span,
            context,
        }
    }
}

pin_project! {
    /// The response future of [`RequestIdService`].
    pub struct RequestIdFuture<F> {
        #[pin]
        future: F,
        span: Span,
        context: Arc<RequestContext>,
    }
}

impl<F, B, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = (this.span.enter(), enter(this.context));
        let result = this.future.poll(cx);
        drop(entered);
        let mut response = std::task::ready!(result)?;
        // An id is visible ASCII: it always converts.
        if let Ok(value) = HeaderValue::from_str(this.context.id.as_str()) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
    }
}

/// Forwards the current request's id and trace context on outbound requests
/// of a tower client (`X-Request-Id`, and a `traceparent` with the request's
/// trace id and a fresh parent id), unless the request already has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateRequestIdLayer;

impl<S> Layer<S> for PropagateRequestIdLayer {
    type Service = PropagateRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateRequestId { inner }
    }
}

/// The service of [`PropagateRequestIdLayer`].
#[derive(Debug, Clone)]
pub struct PropagateRequestId<S> {
    inner: S,
}

/// Sets `X-Request-Id` and `traceparent` on an outbound request from the
/// current request context (for clients that are not tower services).
pub fn propagate(headers: &mut HeaderMap) {
    let Some(context) = current() else {
        return;
    };
    if !headers.contains_key(X_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(context.id.as_str())
    {
        headers.insert(X_REQUEST_ID, v);
    }
    if !headers.contains_key(TRACEPARENT) {
        let trace = context.trace_id;
        let parent = uuid::Uuid::now_v7().simple().to_string();
        let parent = parent.get(16..).unwrap_or("0000000000000001");
        if let Ok(v) = HeaderValue::from_str(&format!("00-{trace}-{parent}-01")) {
            headers.insert(TRACEPARENT, v);
        }
    }
}

impl<S, B> Service<Request<B>> for PropagateRequestId<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        propagate(req.headers_mut());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests;

//! A request body limit that holds for streamed bodies too.
//!
//! Extractor limits (axum's `DefaultBodyLimit`) only protect handlers that use
//! them; a handler that streams the body to disk is unprotected. This layer
//! wraps the body itself: a declared `Content-Length` over the limit is refused
//! before a byte is read, and a chunked body fails as soon as it crosses the
//! limit. Either way the client gets a 413 problem (whatever the handler did
//! with the body error) and `Connection: close`.
//!
//! A `BodyLimitLayer` on a route inside one applied to the whole router
//! replaces the outer limit for that route (the innermost layer wins), so an
//! upload route can accept 10 MiB while JSON routes stay at 1 MiB.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::post};
//! use http::Request;
//! use palisade_http::body_limit::BodyLimitLayer;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Router::new()
//!     .route("/echo", post(|body: String| async move { body }))
//!     .layer(BodyLimitLayer::new(16));
//! let req = Request::post("/echo").body(Body::from("x".repeat(17))).unwrap();
//! let res = app.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 413);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use palisade_core::body::ResponseBody;
use palisade_core::{ProblemDetails, ProblemType, RequestId};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::trip::{Trip, rejection};

/// The default limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 20;

/// The error a limited body returns once it crosses the limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body is larger than the limit")]
pub struct BodyTooLarge;

/// The limit in force for a request, shared between nested layers.
#[derive(Debug, Clone)]
struct LimitHandle(Trip<AtomicU64>);

/// Limits request bodies to a number of bytes. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    limit: u64,
}

impl BodyLimitLayer {
    /// A limit of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self { limit }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Default for BodyLimitLayer {
    fn default() -> Self {
        Self::new(DEFAULT_BODY_LIMIT)
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`BodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BodyLimit<S>
where
    S: Service<Request<LimitedBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = BodyLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(handle) = req.extensions().get::<LimitHandle>() {
            // An outer layer already guards this body: override its limit.
            handle.0.state().store(self.limit, Ordering::Release);
            let req = req.map(LimitedBody::passthrough);
            return BodyLimitFuture {
                future: self.inner.call(req),
                trip: None,
                request_id: None,
            };
        }
        let handle = LimitHandle(Trip::new(AtomicU64::new(self.limit)));
        let request_id = req.extensions().get::<RequestId>().cloned();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(handle.clone());
        let body = LimitedBody::guarded(body, handle.clone());
        BodyLimitFuture {
            future: self.inner.call(Request::from_parts(parts, body)),
            trip: Some(handle.0),
            request_id,
        }
    }
}

pin_project! {
    /// The response future of [`BodyLimit`].
    pub struct BodyLimitFuture<F> {
        #[pin]
        future: F,
        trip: Option<Trip<AtomicU64>>,
        request_id: Option<RequestId>,
    }
}

impl<F, B, E> Future for BodyLimitFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.future.poll(cx))?;
        if this.trip.as_ref().is_some_and(Trip::is_tripped) {
            tracing::info!(reason = "body_too_large", "request rejected");
            let problem = ProblemDetails::new(ProblemType::PAYLOAD_TOO_LARGE)
                .with_detail("the request body is larger than this route accepts")
                .with_optional_request_id(this.request_id.as_ref());
            return Poll::Ready(Ok(rejection(problem, "payload_too_large")));
        }
        Poll::Ready(Ok(response.map(ResponseBody::inner)))
    }
}

pin_project! {
    /// A request body that fails with [`BodyTooLarge`] past the limit.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        guard: Option<Guard>,
    }
}

#[derive(Debug)]
struct Guard {
    handle: LimitHandle,
    read: u64,
    checked_length: bool,
}

impl<B> LimitedBody<B> {
    fn guarded(inner: B, handle: LimitHandle) -> Self {
        Self {
            inner,
            guard: Some(Guard {
                handle,
                read: 0,
                checked_length: false,
            }),
        }
    }

    fn passthrough(inner: B) -> Self {
        Self { inner, guard: None }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let Some(guard) = this.guard else {
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        if guard.handle.0.is_tripped() {
            return Poll::Ready(Some(Err(BodyTooLarge.into())));
        }
        let limit = guard.handle.0.state().load(Ordering::Acquire);
        // Refuse a declared length over the limit before reading anything.
        if !guard.checked_length {
            guard.checked_length = true;
            if this.inner.size_hint().lower() > limit {
                guard.handle.0.trip();
                return Poll::Ready(Some(Err(BodyTooLarge.into())));
            }
        }
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            guard.read = guard.read.saturating_add(data.len() as u64);
            if guard.read > limit {
                guard.handle.0.trip();
                return Poll::Ready(Some(Err(BodyTooLarge.into())));
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;

//! Request deadlines: one for the whole request, one for receiving its body.
//!
//! A request that outlives its deadline is cancelled (its handler future is
//! dropped) and answered with a 503 problem whose `type` says timeout, with
//! `Retry-After` (status and header configurable). A client that sends its body
//! too slowly (a slow-loris upload) is cut off at the body deadline with a 408
//! problem and `Connection: close`.
//!
//! The deadlines live in a [`RequestDeadline`] in the request's extensions:
//! handlers can read the time left (to bound their own outbound calls), and a
//! `TimeoutLayer` on one route inside one applied to the whole router replaces
//! the durations for that route (the innermost layer wins) without a second
//! timer.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use http::Request;
//! use palisade_http::timeout::Timeout;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let app = Router::new()
//!     .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(60)).await; "done" }))
//!     .layer(Timeout::new(Duration::from_secs(30)).build().unwrap());
//! let res = app.oneshot(Request::get("/slow").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 503);
//! assert_eq!(res.headers()["retry-after"], "5");
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use palisade_core::body::ResponseBody;
use palisade_core::{ConfigError, ProblemDetails, ProblemType, RequestId};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::trip::{Trip, rejection};

/// The default request deadline: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `Retry-After` of a timeout response, in seconds.
pub const DEFAULT_RETRY_AFTER: u64 = 5;

const NO_DEADLINE: u64 = u64::MAX;

/// The error a request body returns once its deadline has passed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body not received before its deadline")]
pub struct BodyTimedOut;

/// The deadlines of a request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestDeadline(Trip<Deadlines>);

#[derive(Debug)]
struct Deadlines {
    start: Instant,
    /// Nanoseconds after `start`.
    total: AtomicU64,
    /// Nanoseconds after `start`, or `NO_DEADLINE`.
    body: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NO_DEADLINE - 1)
}

impl RequestDeadline {
    fn new(total: Duration, body: Option<Duration>) -> Self {
        Self(Trip::new(Deadlines {
            start: Instant::now(),
            total: AtomicU64::new(nanos(total)),
            body: AtomicU64::new(body.map_or(NO_DEADLINE, nanos)),
        }))
    }

    fn set(&self, total: Duration, body: Option<Duration>) {
        self.0.state().total.store(nanos(total), Ordering::Release);
        self.0
            .state()
            .body
            .store(body.map_or(NO_DEADLINE, nanos), Ordering::Release);
    }

    fn total_at(&self) -> Instant {
        self.0.state().start + Duration::from_nanos(self.0.state().total.load(Ordering::Acquire))
    }

    fn body_at(&self) -> Option<Instant> {
        match self.0.state().body.load(Ordering::Acquire) {
            NO_DEADLINE => None,
            n => Some(self.0.state().start + Duration::from_nanos(n)),
        }
    }

    /// When the request will be cancelled.
    pub fn deadline(&self) -> std::time::Instant {
        self.total_at().into_std()
    }

    /// The time left before the request is cancelled (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.total_at().saturating_duration_since(Instant::now())
    }
}

/// Builder of [`TimeoutLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Timeout {
    total: Duration,
    body: Option<Duration>,
    status: StatusCode,
    retry_after: Option<u64>,
}

impl Timeout {
    /// A deadline of `total` for the whole request; 503 with `Retry-After: 5`.
    pub fn new(total: Duration) -> Self {
        Self {
            total,
            body: None,
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(DEFAULT_RETRY_AFTER),
        }
    }

    /// A deadline for receiving the whole request body, counted from the
    /// start of the request (must not exceed the request deadline).
    pub fn body_timeout(mut self, body: Duration) -> Self {
        self.body = Some(body);
        self
    }

    /// The status of a timeout response: 503 (default), 504 or 408.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The `Retry-After` of a timeout response, in seconds; `None` sends none.
    pub fn retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after = seconds;
        self
    }

    /// Validates and builds the layer.
    pub fn build(self) -> Result<TimeoutLayer, ConfigError> {
        if self.total.is_zero() {
            return Err(ConfigError::new(
                "timeout.total",
                "must be greater than zero",
            ));
        }
        if let Some(body) = self.body
            && (body.is_zero() || body > self.total)
        {
            return Err(ConfigError::new(
                "timeout.body",
                "must be greater than zero and at most the request timeout",
            ));
        }
        if !matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::REQUEST_TIMEOUT
        ) {
            return Err(ConfigError::new(
                "timeout.status",
                "must be 503, 504 or 408",
            ));
        }
        Ok(TimeoutLayer {
            config: Arc::new(self),
        })
    }
}

/// Applies request and body deadlines. Build it with [`Timeout`].
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    config: Arc<Timeout>,
}

impl Default for TimeoutLayer {
    /// 30 seconds, 503, `Retry-After: 5`, no separate body deadline.
    fn default() -> Self {
        Self {
            config: Arc::new(Timeout::new(DEFAULT_TIMEOUT)),
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    config: Arc<Timeout>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TimeoutService<S>
where
    S: Service<Request<DeadlineBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        if let Some(deadline) = req.extensions().get::<RequestDeadline>() {
            // An outer layer times this request: give it our durations.
            deadline.set(config.total, config.body);
            return TimeoutFuture {
                future: self.inner.call(req.map(DeadlineBody::passthrough)),
                sleep: None,
                state: None,
            };
        }
        let deadline = RequestDeadline::new(config.total, config.body);
        let request_id = req.extensions().get::<RequestId>().cloned();
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(deadline.clone());
        let body = DeadlineBody::guarded(body, deadline.clone());
        TimeoutFuture {
            future: self.inner.call(Request::from_parts(parts, body)),
            sleep: None,
            state: Some(State {
                deadline,
                request_id,
                config: config.clone(),
            }),
        }
    }
}

#[derive(Debug)]
struct State {
    deadline: RequestDeadline,
    request_id: Option<RequestId>,
    config: Arc<Timeout>,
}

impl State {
    fn problem(&self, kind: ProblemType) -> ProblemDetails {
        ProblemDetails::new(kind).with_optional_request_id(self.request_id.as_ref())
    }
}

pin_project! {
    /// The response future of [`TimeoutService`].
    pub struct TimeoutFuture<F> {
        #[pin]
        future: F,
        // Made at the first `Pending` (most requests finish on their first
        // poll): no timer registration, and a small future, for them.
        sleep: Option<Pin<Box<Sleep>>>,
        state: Option<State>,
    }
}

impl<F, B, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.future.poll(cx) {
            let response = result?;
            if let Some(state) = this.state.as_ref().filter(|s| s.deadline.0.is_tripped()) {
                tracing::info!(reason = "body_timeout", "request rejected");
                let problem = state
                    .problem(ProblemType::BODY_TIMEOUT)
                    .with_detail("the request body was not received in time");
                return Poll::Ready(Ok(rejection(problem, "body_timeout")));
            }
            return Poll::Ready(Ok(response.map(ResponseBody::inner)));
        }
        let Some(state) = this.state.as_ref() else {
            return Poll::Pending;
        };
        // A route-level layer may have moved the deadline while the inner
        // future ran; follow it before waiting.
        let at = state.deadline.total_at();
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        std::task::ready!(sleep.as_mut().poll(cx));
        let total = Duration::from_nanos(state.deadline.0.state().total.load(Ordering::Acquire));
        tracing::warn!(
            reason = "timeout",
            timeout_ms = u64::try_from(total.as_millis()).unwrap_or(u64::MAX),
            "request cancelled at its deadline"
        );
        let mut problem = state
            .problem(ProblemType::TIMEOUT)
            .with_detail("the request took longer than its deadline")
            .with_status(state.config.status);
        if let Some(seconds) = state.config.retry_after {
            problem = problem.with_retry_after(seconds);
        }
        Poll::Ready(Ok(problem.rejection("timeout").map(ResponseBody::full)))
    }
}

pin_project! {
    /// A request body that fails with [`BodyTimedOut`] after the body deadline.
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Option<Sleep>,
        guard: Option<BodyGuard>,
    }
}

#[derive(Debug)]
struct BodyGuard {
    deadline: RequestDeadline,
}

impl<B> DeadlineBody<B> {
    fn guarded(inner: B, deadline: RequestDeadline) -> Self {
        Self {
            inner,
            sleep: None,
            guard: Some(BodyGuard { deadline }),
        }
    }

    fn passthrough(inner: B) -> Self {
        Self {
            inner,
            sleep: None,
            guard: None,
        }
    }
}

impl<B> Body for DeadlineBody<B>
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
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(guard) = this.guard.as_ref() else {
            return Poll::Pending;
        };
        // Read the deadline now (not at construction): a route-level layer may
        // have replaced it before the handler started reading.
        let Some(at) = guard.deadline.body_at() else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(at)));
        }
        let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        std::task::ready!(sleep.poll(cx));
        guard.deadline.0.trip();
        Poll::Ready(Some(Err(BodyTimedOut.into())))
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

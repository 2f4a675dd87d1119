//! Outbound calls with a deadline, budgeted retries and a circuit breaker:
//! a tower layer for any HTTP client service, and [`Outbound::call`] for
//! any other future.
//!
//! # The order
//!
//! ```text
//! bulkhead → total deadline → retry → breaker → attempt timeout → the call
//! ```
//!
//! - **bulkhead** (outside this layer: a concurrency limit such as
//!   `tower::limit::ConcurrencyLimitLayer`, put before it): caps the calls in
//!   flight, so a slow dependency holds a bounded number of tasks;
//! - **total deadline**: `min(now + total, the caller's deadline)` — the
//!   caller's being a [`Deadline`] in the request's extensions (for example
//!   the inbound request's remaining time, `palisade_http::RequestDeadline`);
//!   retries and their waits all fit inside it;
//! - **retry** ([`Retry`]): only for idempotent methods or requests marked
//!   [`Retryable`]; on connection errors, attempt timeouts and 502, 503, 504
//!   and 429; waits honour `Retry-After` and never pass the deadline; each
//!   retry is paid from the budget;
//! - **breaker** ([`CircuitBreaker`]): each attempt asks it first; an open
//!   breaker fails the call at once with [`OutboundError::ShortCircuited`]
//!   (not retried); errors, timeouts and 5xx answers count as failures;
//! - **attempt timeout**: one attempt may take at most this long (and never
//!   past the total deadline).
//!
//! The request id of the request being served
//! ([`palisade_core::request_id::current`]) is sent as `X-Request-Id`
//! unless the request already has one; [`Outbound::call`] hands it, with the
//! attempt's deadline, to the closure as an [`Attempt`].
//!
//! The remaining deadline is not sent as a header (there is no standard one
//! for HTTP): it bounds the call.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use palisade_resilience::outbound::{Outbound, OutboundError};
//! use palisade_resilience::breaker::BreakerConfig;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let outbound = Outbound::builder("inventory")
//!     .total(Duration::from_secs(2))
//!     .attempt_timeout(Duration::from_millis(500))
//!     .breaker(BreakerConfig::default())
//!     .build();
//! // Any client service: here one that hangs.
//! let client = ServiceBuilder::new().layer(outbound.layer()).service(service_fn(
//!     |_req: Request<String>| async {
//!         tokio::time::sleep(Duration::from_secs(60)).await;
//!         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//!     },
//! ));
//! let err = client.oneshot(Request::get("http://inventory/items").body(String::new()).unwrap()).await;
//! assert!(matches!(err, Err(OutboundError::TimedOut))); // after 3 attempts of 500 ms at most
//!
//! // The same for a future that is not a tower service.
//! let value = outbound.call(true, |_attempt| async { Ok::<_, std::io::Error>(7) }).await.unwrap();
//! assert_eq!(value, 7);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use palisade_core::{Clock, RequestId, SharedClock, SystemClock};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::retry::{Retry, parse_retry_after};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The latest a call may finish, set by the caller in the request's
/// extensions (the inbound request's remaining time, typically).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// Marks a request with a non-idempotent method as safe to retry (it
/// carries an idempotency key, say). Put it in the request's extensions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retryable;

/// A clock on tokio's time: what the breaker reads when the rest of the call
/// runs on tokio timers, so tests with paused time (`tokio::time::pause`)
/// move both together.
#[derive(Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    origin_unix: Duration,
}

impl TokioClock {
    /// A tokio clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self {
            origin: tokio::time::Instant::now(),
            origin_unix: SystemClock.unix_now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn unix_now(&self) -> Duration {
        self.origin_unix + self.origin.elapsed()
    }
}

/// Why an outbound call gave no answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutboundError<E> {
    /// The total deadline passed.
    DeadlineExceeded,
    /// The last attempt timed out.
    TimedOut,
    /// The breaker is open: no call was made.
    ShortCircuited,
    /// The call failed (the last attempt's error).
    Call(E),
}

impl<E: fmt::Display> fmt::Display for OutboundError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DeadlineExceeded => f.write_str("outbound call deadline exceeded"),
            Self::TimedOut => f.write_str("outbound call attempt timed out"),
            Self::ShortCircuited => f.write_str("circuit breaker open: call not made"),
            Self::Call(e) => write!(f, "outbound call failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for OutboundError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Call(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> OutboundError<E> {
    /// A metric or log label: `deadline`, `timeout`, `short_circuited`, `error`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::DeadlineExceeded => "deadline",
            Self::TimedOut => "timeout",
            Self::ShortCircuited => "short_circuited",
            Self::Call(_) => "error",
        }
    }
}

/// What one attempt may know about itself.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When this attempt will be cancelled.
    pub deadline: Instant,
    /// The request id of the request being served, to send along.
    pub request_id: Option<RequestId>,
}

/// How an answer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    failure: bool,
    retry: bool,
    retry_after: Option<Duration>,
}

/// Builder of [`Outbound`].
#[derive(Debug)]
#[must_use]
pub struct OutboundBuilder {
    name: &'static str,
    total: Duration,
    attempt: Duration,
    breaker: Option<BreakerConfig>,
    retry: Option<Retry>,
    clock: Option<SharedClock>,
}

impl OutboundBuilder {
    /// The deadline of the whole call, retries included (default 10 s).
    pub fn total(mut self, d: Duration) -> Self {
        self.total = d;
        self
    }

    /// The timeout of one attempt (default 2 s).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt = d;
        self
    }

    /// A circuit breaker named after the call (default: none).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Retries (default: [`Retry::new`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// No retries: one attempt per call.
    pub fn no_retry(mut self) -> Self {
        self.retry = Some(Retry::new().max_attempts(1));
        self
    }

    /// The clock of the breaker and of `Retry-After` dates (default:
    /// [`TokioClock`], the time the timeouts run on).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The policy.
    pub fn build(self) -> Outbound {
        let clock = self.clock.unwrap_or_else(TokioClock::shared);
        let breaker = self
            .breaker
            .map(|config| CircuitBreaker::new(self.name, config, Arc::clone(&clock)));
        Outbound {
            inner: Arc::new(Inner {
                name: self.name,
                total: self.total,
                attempt: self.attempt,
                breaker,
                retry: self.retry.unwrap_or_default(),
                clock,
            }),
        }
    }
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    total: Duration,
    attempt: Duration,
    breaker: Option<CircuitBreaker>,
    retry: Retry,
    clock: SharedClock,
}

/// The policy of one dependency's calls. Cheap to clone: clones share the
/// breaker and the retry budget.
#[derive(Clone, Debug)]
pub struct Outbound {
    inner: Arc<Inner>,
}

impl Outbound {
    /// A policy for the calls to `name` (in logs and metrics).
    pub fn builder(name: &'static str) -> OutboundBuilder {
        OutboundBuilder {
            name,
            total: Duration::from_secs(10),
            attempt: Duration::from_secs(2),
            breaker: None,
            retry: None,
            clock: None,
        }
    }

    /// The breaker, if any (its state, its metrics).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    /// The layer to put on a client service.
    pub fn layer(&self) -> OutboundLayer {
        OutboundLayer {
            outbound: self.clone(),
        }
    }

    /// Runs `call` under the policy: `retryable` says whether it may be
    /// repeated (it is idempotent); any error is a failure to retry.
    pub async fn call<T, E, F, Fut>(&self, retryable: bool, call: F) -> Result<T, OutboundError<E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_until(None, retryable, call).await
    }

    /// Like [`Outbound::call`], never past `deadline` (the caller's).
    pub async fn call_until<T, E, F, Fut>(
        &self,
        deadline: Option<Instant>,
        retryable: bool,
        call: F,
    ) -> Result<T, OutboundError<E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run(deadline, retryable, call, |r: &Result<T, E>| Verdict {
            failure: r.is_err(),
            retry: r.is_err(),
            retry_after: None,
        })
        .await
    }

    async fn run<T, E, F, Fut, C>(
        &self,
        deadline: Option<Instant>,
        retryable: bool,
        mut call: F,
        classify: C,
    ) -> Result<T, OutboundError<E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Verdict,
    {
        let inner = &*self.inner;
        let now = tokio::time::Instant::now().into_std();
        let own = now + inner.total;
        let deadline = deadline.map_or(own, |d| d.min(own));
        let request_id = palisade_core::request_id::with_current(|c| c.id.clone());
        inner.retry.deposit();
        let mut number = 0u32;
        loop {
            number += 1;
            let permit = match &inner.breaker {
                Some(b) => Some(b.try_acquire().map_err(|_| OutboundError::ShortCircuited)?),
                None => None,
            };
            let now = tokio::time::Instant::now().into_std();
            let attempt_deadline = deadline.min(now + inner.attempt);
            let attempt = Attempt {
                number,
                deadline: attempt_deadline,
                request_id: request_id.clone(),
            };
            let outcome = tokio::time::timeout_at(attempt_deadline.into(), call(attempt)).await;
            let (result, verdict) = if let Ok(result) = outcome {
                let verdict = classify(&result);
                (result.map_err(OutboundError::Call), verdict)
            } else {
                // Timed out: the attempt's own timeout, or the call's deadline.
                let error = if attempt_deadline >= deadline {
                    OutboundError::DeadlineExceeded
                } else {
                    OutboundError::TimedOut
                };
                let verdict = Verdict {
                    failure: true,
                    retry: true,
                    retry_after: None,
                };
                (Err(error), verdict)
            };
            if let Some(permit) = permit {
                permit.record(!verdict.failure);
            }
            if !(retryable && verdict.retry) || number >= inner.retry.attempts() {
                return result;
            }
            let wait = verdict
                .retry_after
                .unwrap_or_else(|| inner.retry.delay(number));
            let now = tokio::time::Instant::now().into_std();
            if now + wait >= deadline {
                tracing::debug!(target: "palisade::outbound", call = inner.name, attempt = number, "no retry: the wait would pass the deadline");
                return result;
            }
            if !inner.retry.withdraw() {
                tracing::debug!(target: "palisade::outbound", call = inner.name, attempt = number, "no retry: the retry budget is spent");
                return result;
            }
            tracing::debug!(target: "palisade::outbound", call = inner.name, attempt = number, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn classify<B, E>(&self, result: &Result<Response<B>, E>) -> Verdict {
        let Ok(response) = result else {
            return Verdict {
                failure: true,
                retry: true,
                retry_after: None,
            };
        };
        let status = response.status();
        let retry = matches!(
            status,
            StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        );
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.inner.clock.unix_now()));
        Verdict {
            failure: status.is_server_error(),
            retry,
            retry_after,
        }
    }
}

/// Whether the request may be repeated: an idempotent method (RFC 9110
/// §9.2.2), or a [`Retryable`] mark.
fn retryable<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || req.extensions().get::<Retryable>().is_some()
}

/// The layer of [`Outbound`].
#[derive(Clone, Debug)]
pub struct OutboundLayer {
    outbound: Outbound,
}

impl<S> Layer<S> for OutboundLayer {
    type Service = OutboundService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutboundService {
            inner,
            outbound: self.outbound.clone(),
        }
    }
}

/// The service of [`OutboundLayer`]. Always ready: each attempt waits for
/// the inner service's readiness inside the call, under its deadline.
#[derive(Clone, Debug)]
pub struct OutboundService<S> {
    inner: S,
    outbound: Outbound,
}

/// The future of [`OutboundService`].
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, OutboundError<E>>> + Send>>;

impl<S, B, RB> Service<Request<B>> for OutboundService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Clone + Send + Sync + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = OutboundError<S::Error>;
    type Future = ResponseFuture<Response<RB>, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was ready is the one to use (tower's convention).
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let outbound = self.outbound.clone();
        if !req.headers().contains_key(&X_REQUEST_ID) {
            let id = palisade_core::request_id::with_current(|c| {
                HeaderValue::from_str(c.id.as_str()).ok()
            });
            if let Some(Some(id)) = id {
                req.headers_mut().insert(X_REQUEST_ID, id);
            }
        }
        let deadline = req.extensions().get::<Deadline>().map(|d| d.0);
        let retryable = retryable(&req);
        Box::pin(async move {
            let classify = |r: &Result<Response<RB>, S::Error>| outbound.classify(r);
            outbound
                .run(
                    deadline,
                    retryable,
                    move |_attempt| {
                        let (mut svc, req) = (service.clone(), clone_request(&req));
                        async move { svc.ready().await?.call(req).await }
                    },
                    classify,
                )
                .await
        })
    }
}

fn clone_request<B: Clone>(req: &Request<B>) -> Request<B> {
    let mut clone = Request::new(req.body().clone());
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    clone
}

#[cfg(test)]
mod tests;

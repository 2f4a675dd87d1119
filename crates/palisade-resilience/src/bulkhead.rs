//! Bounded concurrency: a [`Bulkhead`] (a cap on work in flight with a
//! bounded queue, refusing beyond it) and [`for_each_bounded`] (a batch run at
//! most N at a time, with one outcome per item, stopping on cancellation).
//!
//! Per-tenant work run one item at a time overruns its schedule; run all at
//! once it floods the database or the API it calls. `for_each_bounded` keeps
//! at most `max_in_flight` items running, each in a task of its own (carrying
//! the current request id, as [`palisade_telemetry::spawn`] does), and returns
//! every item's outcome in item order: a failure or a panic of one item never
//! stops the others. When the cancellation token fires, no new item starts
//! (they are reported [`ItemOutcome::NotStarted`]); the items in flight get
//! the same token and finish their own way. Dropping the returned future
//! aborts the items in flight.
//!
//! A [`Bulkhead`] is shared between callers (requests, jobs) that use one
//! scarce resource: at most `max_in_flight` run, at most `max_queued` wait
//! (optionally for a bounded time), and the rest are refused at once with
//! [`Rejected::QueueFull`] instead of piling up. [`BulkheadLayer`] puts one
//! in front of any tower service (the first step of an outbound stack), so
//! calls are refused rather than queued without bound
//! (`tower::limit::ConcurrencyLimit` queues every caller): a call that finds
//! a free slot costs no allocation; one that must queue is boxed. The slot is
//! held until the inner service's response future completes (for HTTP: the
//! response head, not the body).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_resilience::bulkhead::{Bulkhead, ItemOutcome, Rejected, for_each_bounded};
//! use palisade_resilience::supervisor::CancellationToken;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! // Sync 10 tenants, 3 at a time; tenant 4 fails, the others are synced.
//! let token = CancellationToken::new();
//! let report = for_each_bounded(0..10, 3, &token, |tenant, _token| async move {
//!     if tenant == 4 { Err(format!("tenant {tenant}: API refused")) } else { Ok(tenant * 10) }
//! })
//! .await;
//! assert_eq!(report.succeeded(), 9);
//! assert_eq!(report.errors().collect::<Vec<_>>(), [(4, &"tenant 4: API refused".to_owned())]);
//! assert!(matches!(report.outcomes[9], ItemOutcome::Done(90)));
//!
//! // One call in flight, one waiting, the third refused at once.
//! let bulkhead = Bulkhead::new(1, 1).unwrap();
//! let first = bulkhead.acquire().await.unwrap();
//! let waiting = tokio::spawn({
//!     let bulkhead = bulkhead.clone();
//!     async move { bulkhead.run(async { "second" }).await }
//! });
//! while bulkhead.queued() == 0 { tokio::task::yield_now().await; }
//! assert_eq!(bulkhead.run(async { "third" }).await, Err(Rejected::QueueFull));
//! drop(first);
//! assert_eq!(waiting.await.unwrap(), Ok("second"));
//!
//! // The same in front of a tower service: refused calls fail with `Rejected`.
//! use tower::{Layer, ServiceExt, service_fn};
//! use palisade_resilience::bulkhead::BulkheadLayer;
//!
//! let full = Bulkhead::new(1, 0).unwrap();
//! let held = full.acquire().await.unwrap();
//! let api = BulkheadLayer::new(full).layer(service_fn(|name: &'static str| async move {
//!     Ok::<_, std::io::Error>(format!("hello {name}"))
//! }));
//! let err = api.clone().oneshot("ada").await.unwrap_err();
//! assert_eq!(err.downcast_ref::<Rejected>(), Some(&Rejected::QueueFull));
//! drop(held);
//! assert_eq!(api.oneshot("ada").await.unwrap(), "hello ada");
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use palisade_core::ConfigError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tower_layer::Layer;
use tower_service::Service;

/// The error of a [`BulkheadService`]: [`Rejected`] or the inner service's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a [`Bulkhead`] refused work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Every slot was busy and the queue was full.
    QueueFull,
    /// It waited in the queue longer than the queue timeout.
    QueueTimeout,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::QueueFull => "bulkhead full: too much work in flight and queued",
            Self::QueueTimeout => "bulkhead full: waited too long in the queue",
        })
    }
}

impl std::error::Error for Rejected {}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    max_queued: usize,
    queued: AtomicUsize,
}

/// A cap on work in flight with a bounded queue. Cheap to clone (clones
/// share the slots and the queue). See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
    queue_timeout: Option<Duration>,
}

/// A slot in a [`Bulkhead`], given back when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// At most `max_in_flight` at once and `max_queued` waiting (0: refuse
    /// whenever every slot is busy).
    ///
    /// # Errors
    ///
    /// `max_in_flight` is zero, or above tokio's semaphore limit.
    pub fn new(max_in_flight: usize, max_queued: usize) -> Result<Self, ConfigError> {
        if max_in_flight == 0 {
            return Err(ConfigError::new(
                "bulkhead.max_in_flight",
                "must be at least 1",
            ));
        }
        if max_in_flight > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "bulkhead.max_in_flight",
                "is above the largest semaphore",
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                max_queued,
                queued: AtomicUsize::new(0),
            }),
            queue_timeout: None,
        })
    }

    /// Waiting in the queue longer than `timeout` is refused with
    /// [`Rejected::QueueTimeout`] (default: no limit but the caller's own).
    /// Applies to this handle and the clones made from it afterwards.
    #[must_use]
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = Some(timeout);
        self
    }

    /// A free slot now, or `None` (no waiting, the queue untouched).
    pub fn try_acquire(&self) -> Option<BulkheadPermit> {
        Arc::clone(&self.inner.permits)
            .try_acquire_owned()
            .ok()
            .map(|permit| BulkheadPermit { _permit: permit })
    }

    /// A slot: at once when one is free, after waiting in the queue when the
    /// queue has room, else refused.
    pub async fn acquire(&self) -> Result<BulkheadPermit, Rejected> {
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let inner = &self.inner;
        let max_queued = inner.max_queued;
        inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max_queued).then_some(q + 1)
            })
            .map_err(|_| Rejected::QueueFull)?;
        // Leaves the queue however the wait ends (a permit, a timeout, the
        // caller dropping this future).
        let _queued = Queued(&inner.queued);
        let wait = Arc::clone(&inner.permits).acquire_owned();
        let permit = match self.queue_timeout {
            None => wait.await,
            Some(limit) => tokio::time::timeout(limit, wait)
                .await
                .map_err(|_| Rejected::QueueTimeout)?,
        };
        // The semaphore is never closed.
        permit
            .map(|permit| BulkheadPermit { _permit: permit })
            .map_err(|_| Rejected::QueueFull)
    }

    /// Runs `work` in a slot (see [`acquire`](Self::acquire)).
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Rejected> {
        let _permit = self.acquire().await?;
        Ok(work.await)
    }

    /// Work running now.
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight - self.inner.permits.available_permits()
    }

    /// Callers waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }
}

/// Puts a [`Bulkhead`] in front of a service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// Calls through the layered services share `bulkhead` (clone it to
    /// share it with other work too).
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// A service whose calls take a slot of a [`Bulkhead`] first.
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(permit) = self.bulkhead.try_acquire() {
            return ResponseFuture {
                state: State::Admitted {
                    future: self.inner.call(req),
                    permit: Some(permit),
                },
            };
        }
        // Wait in the queue with the service made ready by `poll_ready`,
        // leaving a clone in its place (tower's pattern for deferred calls).
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let bulkhead = self.bulkhead.clone();
        ResponseFuture {
            state: State::Queued {
                future: Box::pin(async move {
                    let _permit = bulkhead.acquire().await?;
                    ready.call(req).await.map_err(Into::into)
                }),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`BulkheadService`].
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        // A slot was free: the inner call runs, holding it.
        Admitted {
            #[pin]
            future: F,
            permit: Option<BulkheadPermit>,
        },
        // Waiting in the queue, then the inner call.
        Queued {
            future: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
        },
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { future, permit } => {
                let output = ready!(future.poll(cx));
                // The slot is free as soon as the response is.
                permit.take();
                Poll::Ready(output.map_err(Into::into))
            }
            StateProj::Queued { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::Admitted { .. } => "ResponseFuture(admitted)",
            State::Queued { .. } => "ResponseFuture(queued)",
        })
    }
}

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What became of one item of a [`for_each_bounded`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome<R, E> {
    /// It returned `Ok`.
    Done(R),
    /// It returned `Err`.
    Failed(E),
    /// It panicked, building its future or in it (or its task was aborted
    /// by the runtime shutting down).
    Panicked,
    /// The batch was cancelled before it started.
    NotStarted,
}

/// Every item's outcome, in item order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport<R, E> {
    /// One outcome per item, in the order of the items.
    pub outcomes: Vec<ItemOutcome<R, E>>,
}

impl<R, E> BatchReport<R, E> {
    /// Items that returned `Ok`.
    pub fn succeeded(&self) -> usize {
        self.count(|o| matches!(o, ItemOutcome::Done(_)))
    }

    /// Items that returned `Err` or panicked.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, ItemOutcome::Failed(_) | ItemOutcome::Panicked))
    }

    /// Items never started (the batch was cancelled).
    pub fn not_started(&self) -> usize {
        self.count(|o| matches!(o, ItemOutcome::NotStarted))
    }

    /// Whether every item returned `Ok`.
    pub fn all_succeeded(&self) -> bool {
        self.succeeded() == self.outcomes.len()
    }

    /// The errors, with the index of their item.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &E)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                ItemOutcome::Failed(e) => Some((i, e)),
                _ => None,
            })
    }

    fn count(&self, f: impl Fn(&ItemOutcome<R, E>) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(o)).count()
    }
}

/// Runs `work` on every item of a finite batch, at most `max_in_flight` at
/// once (0 is taken as 1), each in its own task; stops starting items once
/// `token` is cancelled (the items in flight get `token` and are awaited).
/// See the [module docs](self).
///
/// # Panics
///
/// Outside a tokio runtime.
pub async fn for_each_bounded<I, F, Fut, R, E>(
    items: I,
    max_in_flight: usize,
    token: &CancellationToken,
    mut work: F,
) -> BatchReport<R, E>
where
    I: IntoIterator,
    F: FnMut(I::Item, CancellationToken) -> Fut,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    let max_in_flight = max_in_flight.max(1);
    let mut items = items.into_iter();
    let mut outcomes: Vec<Option<ItemOutcome<R, E>>> = Vec::new();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < max_in_flight && !token.is_cancelled() {
            let Some(item) = items.next() else { break };
            let index = outcomes.len();
            // A panic while building the item's future counts like one in it.
            let Ok(future) =
                std::panic::catch_unwind(AssertUnwindSafe(|| work(item, token.clone())))
            else {
                outcomes.push(Some(ItemOutcome::Panicked));
                continue;
            };
            outcomes.push(None);
            let task = AbortOnDropHandle::new(palisade_telemetry::spawn(future));
            running.push(async move { (index, task.await) });
        }
        let Some((index, result)) = running.next().await else {
            break;
        };
        let outcome = match result {
            Ok(Ok(value)) => ItemOutcome::Done(value),
            Ok(Err(error)) => ItemOutcome::Failed(error),
            Err(_) => ItemOutcome::Panicked,
        };
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = Some(outcome);
        }
    }
    // Only cancellation leaves items unstarted.
    let mut outcomes: Vec<ItemOutcome<R, E>> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(ItemOutcome::Panicked))
        .collect();
    outcomes.extend(items.map(|_| ItemOutcome::NotStarted));
    BatchReport { outcomes }
}

#[cfg(test)]
mod tests;

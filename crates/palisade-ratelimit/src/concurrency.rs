//! [`ClientConcurrencyLayer`]: at most N requests in flight per client (the
//! equivalent of nginx's `limit_conn`), per instance.
//!
//! A request counts from the moment it enters until its response body has
//! been sent (or dropped), so a slow download holds its slot. Over the cap:
//! 429 problem+json with `Retry-After: 1` and the `Rejection` reason
//! `concurrency_limited`. Clients are keyed by [`ClientIp`]'s limiter key
//! (IPv6 by prefix); entries disappear when their last request ends, so
//! memory is bounded by the requests in flight.
//!
//! # Example
//!
//! ```
//! use palisade_ratelimit::ClientConcurrencyLayer;
//!
//! let layer = ClientConcurrencyLayer::new(16);
//! assert_eq!(layer.max_per_client(), 16);
//! assert_eq!(layer.in_flight(), 0);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use ipnet::IpNet;
use palisade_core::body::ResponseBody;
use palisade_core::future::ResponseFuture;
use palisade_core::{ClientIp, ProblemDetails, ProblemType};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Counts {
    max: u32,
    shards: [Mutex<HashMap<IpNet, u32>>; SHARDS],
}

impl Counts {
    fn shard(&self, key: &IpNet) -> &Mutex<HashMap<IpNet, u32>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        let index = usize::try_from(h % SHARDS as u64).unwrap_or(0);
        // SHARDS is a constant and index < SHARDS.
        let [first, ..] = &self.shards;
        self.shards.get(index).unwrap_or(first)
    }

    fn enter(self: &Arc<Self>, key: IpNet) -> Option<Slot> {
        let mut map = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: Arc::clone(self),
            key,
        })
    }

    fn leave(&self, key: &IpNet) {
        let mut map = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(key);
            }
        }
    }
}

/// One request's place; gives it back when dropped.
struct Slot {
    counts: Arc<Counts>,
    key: IpNet,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.leave(&self.key);
    }
}

/// Caps the requests in flight per client.
#[derive(Debug, Clone)]
pub struct ClientConcurrencyLayer {
    counts: Arc<Counts>,
}

impl ClientConcurrencyLayer {
    /// At most `max_per_client` requests in flight per client (at least 1).
    pub fn new(max_per_client: u32) -> Self {
        Self {
            counts: Arc::new(Counts {
                max: max_per_client.max(1),
                shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            }),
        }
    }

    /// The cap.
    pub fn max_per_client(&self) -> u32 {
        self.counts.max
    }

    /// Requests in flight across all clients.
    pub fn in_flight(&self) -> u64 {
        self.counts
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .map(|&c| u64::from(c))
                    .sum::<u64>()
            })
            .sum()
    }
}

impl<S> Layer<S> for ClientConcurrencyLayer {
    type Service = ClientConcurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientConcurrency {
            inner,
            counts: Arc::clone(&self.counts),
        }
    }
}

/// The service of [`ClientConcurrencyLayer`].
#[derive(Debug, Clone)]
pub struct ClientConcurrency<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientConcurrency<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<SlotBody<ResBody>>>;
    type Error = S::Error;
    type Future = SlotFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(ip) = req.extensions().get::<ClientIp>().map(ClientIp::key) else {
            let response = ProblemDetails::new(ProblemType::INTERNAL)
                .with_request_id_from(req.extensions())
                .rejection("no_client_ip");
            return SlotFuture {
                inner: ResponseFuture::early(response),
                slot: None,
            };
        };
        if let Some(slot) = self.counts.enter(ip) {
            return SlotFuture {
                inner: ResponseFuture::inner(self.inner.call(req)),
                slot: Some(slot),
            };
        }
        let response = ProblemDetails::new(ProblemType::RATE_LIMITED)
            .with_detail("too many concurrent requests from this client")
            .with_retry_after(1)
            .with_request_id_from(req.extensions())
            .rejection("concurrency_limited");
        SlotFuture {
            inner: ResponseFuture::early(response),
            slot: None,
        }
    }
}

pin_project! {
    /// The response future of [`ClientConcurrency`]: moves the slot into the body.
    pub struct SlotFuture<F> {
        #[pin]
        inner: ResponseFuture<F>,
        slot: Option<Slot>,
    }
}

impl<F> fmt::Debug for SlotFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotFuture")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for SlotFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<SlotBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let slot = this.slot.take();
        Poll::Ready(Ok(
            response.map(|body| ResponseBody::inner(SlotBody { inner: body, slot }))
        ))
    }
}

pin_project! {
    /// A response body that holds the client's slot until it is done.
    pub struct SlotBody<B> {
        #[pin]
        inner: ResponseBody<B>,
        slot: Option<Slot>,
    }
}

impl<B> fmt::Debug for SlotBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotBody")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl<B> Body for SlotBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            // The body is complete: the request is over.
            this.slot.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

//! One connection: the IO, service and body wrappers that record what the
//! connection is doing in its [`Tracker`], and the task that drives it.
//!
//! The hot path only writes a few uncontended atomics: no clock read, no
//! timer. The server's watchdog ([`super::watch`]) reads them a few times a
//! second and tells a connection to close, through [`Tracker::command`].

use std::error::Error as StdError;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker, ready};

use futures_util::task::AtomicWaker;
use http::{Extensions, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use palisade_core::client_ip::PeerAddr;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tower_service::Service;

use super::watch::Registered;

/// What the server asks of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Command {
    /// Shut down gracefully: finish what is in flight (HTTP/2: `GOAWAY`),
    /// then close.
    Close = 1,
    /// Close now.
    Cut = 2,
}

/// What a connection is doing, written by its IO, service and bodies, read
/// by the watchdog.
#[derive(Default)]
pub(super) struct Tracker {
    /// Requests whose response is not done (its body not dropped).
    pub(super) in_flight: AtomicUsize,
    /// Requests started so far.
    pub(super) requests: AtomicU64,
    /// HTTP/1: bytes of a new request head arrived while nothing was in flight.
    pub(super) head_begun: AtomicBool,
    /// A write returned `Pending` and none succeeded since.
    pub(super) write_blocked: AtomicBool,
    /// Response bodies that handed a frame over and were not asked for the
    /// next one yet: hyper cannot send it (socket or flow control).
    pub(super) bodies_waiting: AtomicUsize,
    /// Output progress: frames handed over, blocked writes that resumed.
    pub(super) progress: AtomicU64,
    /// The connection speaks HTTP/2: reads are frames (pings, window
    /// updates), not request heads.
    pub(super) h2: AtomicBool,
    /// A `101 Switching Protocols` was sent: the connection leaves HTTP.
    pub(super) upgraded: AtomicBool,
    /// The strongest [`Command`] given so far (0: none).
    command: AtomicU8,
    pub(super) waker: AtomicWaker,
}

impl Tracker {
    /// Asks the connection to close; a later command never weakens an
    /// earlier one. Wakes the connection only when the command changes: the
    /// connection re-registers its waker exactly when it sees a change.
    pub(super) fn command(&self, command: Command) {
        if self.command.fetch_max(command as u8, Ordering::AcqRel) < command as u8 {
            self.waker.wake();
        }
    }

    fn pending_command(&self) -> Option<Command> {
        match self.command.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Command::Close),
            _ => Some(Command::Cut),
        }
    }

    /// Bytes arrived. With nothing in flight on HTTP/1, they begin a request head.
    pub(super) fn on_read(&self) {
        if !self.h2.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_begun.load(Ordering::Relaxed)
        {
            self.head_begun.store(true, Ordering::Release);
        }
    }

    pub(super) fn on_write_blocked(&self) {
        if !self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked.store(true, Ordering::Release);
        }
    }

    pub(super) fn on_written(&self) {
        if self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked.store(false, Ordering::Release);
            // A slow reader that reads is progress.
            self.progress.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A request being served: counted in flight from the service call until
/// its response body is dropped.
pub(super) struct InFlight {
    tracker: Arc<Tracker>,
    /// This response's body handed a frame over and was not polled since.
    waiting: bool,
}

impl InFlight {
    pub(super) fn start(tracker: &Arc<Tracker>, version: Version) -> Self {
        tracker.in_flight.fetch_add(1, Ordering::AcqRel);
        tracker.requests.fetch_add(1, Ordering::AcqRel);
        tracker.head_begun.store(false, Ordering::Release);
        if version == Version::HTTP_2 && !tracker.h2.load(Ordering::Relaxed) {
            tracker.h2.store(true, Ordering::Relaxed);
        }
        Self {
            tracker: Arc::clone(tracker),
            waiting: false,
        }
    }

    /// The body handed a frame over.
    pub(super) fn produced(&mut self) {
        self.tracker.progress.fetch_add(1, Ordering::AcqRel);
        if !self.waiting {
            self.waiting = true;
            self.tracker.bodies_waiting.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// hyper asks the body for more: what it had is on its way.
    pub(super) fn resumed(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.tracker.bodies_waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.resumed();
        self.tracker.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The accepted socket, recording reads and writes. Holds the connection's
/// permit, so that the cap counts a connection until its socket is closed
/// (also after an upgrade).
pub(super) struct TrackedIo {
    stream: TcpStream,
    tracker: Arc<Tracker>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.tracker.on_read();
        }
        result
    }
}

impl TrackedIo {
    fn record(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.tracker.on_write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.tracker.on_written(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.record(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.record(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The hyper service of one connection: inserts the peer address, counts the
/// request in flight, and calls a clone of the application.
pub(super) struct ConnService<S> {
    inner: S,
    tracker: Arc<Tracker>,
    /// What every request of the connection starts with.
    extensions: Extensions,
}

/// The extensions every request of a connection from `peer` starts with:
/// [`PeerAddr`] and, with the `axum` feature, `ConnectInfo<SocketAddr>`.
///
/// Cloned into each request. The map has room for a dozen more entries, so
/// that the application's layers add theirs without the map growing (and
/// rehashing) twice more per request: a clone keeps the capacity, and
/// removing entries does not shrink it.
pub(super) fn peer_extensions(peer: SocketAddr) -> Extensions {
    #[derive(Clone, Copy)]
    struct Room<const N: u8>;
    let mut extensions = Extensions::new();
    extensions.insert(PeerAddr(peer));
    #[cfg(feature = "axum")]
    extensions.insert(axum::extract::ConnectInfo(peer));
    // Eight entries make the map grow to room for 14.
    extensions.insert(Room::<0>);
    extensions.insert(Room::<1>);
    extensions.insert(Room::<2>);
    extensions.insert(Room::<3>);
    extensions.insert(Room::<4>);
    extensions.insert(Room::<5>);
    extensions.insert(Room::<6>);
    extensions.remove::<Room<0>>();
    extensions.remove::<Room<1>>();
    extensions.remove::<Room<2>>();
    extensions.remove::<Room<3>>();
    extensions.remove::<Room<4>>();
    extensions.remove::<Room<5>>();
    extensions.remove::<Room<6>>();
    extensions
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::start(&self.tracker, request.version());
        request.extensions_mut().extend(self.extensions.clone());
        ResponseFuture {
            state: State::Ready {
                service: self.inner.clone(),
                request: Some(request),
            },
            guard: Some(guard),
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        Ready { service: S, request: Option<Request<Incoming>> },
        Called { #[pin] future: F },
    }
}

pin_project! {
    /// Waits for the application to be ready, calls it, and wraps the
    /// response body so that the request stays in flight until it is sent.
    pub(super) struct ResponseFuture<S, F> {
        #[pin]
        state: State<S, F>,
        guard: Option<InFlight>,
    }
}

impl<S, B> Future for ResponseFuture<S, S::Future>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Output = Result<Response<TrackedBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { service, request } => {
                    ready!(service.poll_ready(cx))?;
                    // Taken only here, right before leaving this state.
                    let Some(request) = request.take() else {
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx))?;
                    let guard = this.guard.take();
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(guard) = &guard
                    {
                        guard.tracker.upgraded.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, guard })));
                }
            }
        }
    }
}

pin_project! {
    /// A response body that keeps its request in flight until dropped, and
    /// records when it hands a frame over and when hyper asks for the next.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(guard) = this.guard.as_mut() {
            guard.resumed();
        }
        let frame = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(Ok(_))), Some(guard)) = (&frame, this.guard.as_mut()) {
            guard.produced();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection the accept loop hands over.
pub(super) struct Accepted {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) tracker: Arc<Tracker>,
}

/// Serves one connection until it ends or the watchdog or the server cuts it.
pub(super) async fn serve_connection<S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    accepted: Accepted,
    service: S,
    _registered: Registered,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let Accepted {
        stream,
        peer,
        permit,
        tracker,
    } = accepted;
    let io = TokioIo::new(TrackedIo {
        stream,
        tracker: Arc::clone(&tracker),
        _permit: permit,
    });
    let service = ConnService {
        inner: service,
        tracker: Arc::clone(&tracker),
        extensions: peer_extensions(peer),
    };
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut registered: Option<Waker> = None;
    let mut seen = None;
    let mut shut_down = false;

    poll_fn(|cx| {
        // Register the task's waker for commands: once, and again after each
        // change of command (its wake-up used the registration up; nothing
        // else wakes through it). Register first, then read, so that no
        // command goes unseen.
        loop {
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                tracker.waker.register(cx.waker());
                registered = Some(cx.waker().clone());
            }
            let command = tracker.pending_command();
            if command == seen {
                break;
            }
            seen = command;
            registered = None;
        }
        match seen {
            Some(Command::Cut) => return Poll::Ready(()),
            Some(Command::Close) if !shut_down => {
                shut_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        conn.as_mut().poll(cx).map(|result| {
            if let Err(err) = result {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        })
    })
    .await;
}

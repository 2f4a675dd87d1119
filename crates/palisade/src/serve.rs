//! A hardened HTTP/1.1 and HTTP/2 server: [`Server`] and [`serve()`].
//!
//! `axum::serve` gives hyper no timer: a client that sends its request head
//! one byte a second (slowloris), a keep-alive connection that never sends
//! another request and a client that never reads its response all hold a
//! connection, a task and a file descriptor forever, and nothing caps how
//! many connections are open. Forgetting
//! `into_make_service_with_connect_info::<SocketAddr>()` makes every request a
//! 500 at run time. This server bounds every phase of a connection and always
//! knows the peer:
//!
//! | phase | default | what happens |
//! | --- | --- | --- |
//! | request head | [10 s](DEFAULT_HEADER_READ_TIMEOUT) | a connection's first request head must be complete within this time of the accept (whatever the protocol), every later HTTP/1 head within this time of its first byte; else the connection is closed, without a response |
//! | idle keep-alive | [60 s](DEFAULT_IDLE_TIMEOUT) | a connection with no request in flight and no request begun is closed (HTTP/2: `GOAWAY` first); a keep-alive connection is *not* closed at the head timeout |
//! | response writing | [30 s](DEFAULT_WRITE_PROGRESS_TIMEOUT) | a response that makes no write progress for this long (the client stopped reading, or never grants HTTP/2 flow-control window) is cut |
//! | open connections | [10,000](DEFAULT_MAX_CONNECTIONS) | at the cap, accepting **pauses** until a connection closes; nothing fails |
//! | headers | [16 KiB](DEFAULT_MAX_HEADER_BYTES) | a larger HTTP/1 head is answered 431; HTTP/2 advertises and enforces the same header list size |
//! | HTTP/2 streams | [100](DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS) concurrent | streams reset by the client before they are served (rapid reset, CVE-2023-44487) and streams the server had to reset because of client errors are capped too: past 20 and 1,024 the connection gets a `GOAWAY` |
//! | shutdown | [30 s](DEFAULT_DRAIN_TIMEOUT) drain | see below |
//!
//! Every request carries the TCP peer address as
//! [`PeerAddr`](palisade_core::client_ip::PeerAddr), which
//! [`ClientIpLayer`](palisade_core::ClientIpLayer) reads, and, with the `axum`
//! feature, as axum's `ConnectInfo<SocketAddr>` too: there is nothing to
//! forget.
//!
//! How long a handler may take, and how long reading a request body may take,
//! is the request deadline's business (`TimeoutLayer`, part of
//! `SecureStack`), not the server's.
//!
//! The timeouts are enforced by one watchdog thread per server, which looks
//! at every connection every quarter of the shortest timeout (at most every
//! second; the hot path of a request only writes a few atomics, and the
//! runtime gets no timer). A connection
//! is closed no sooner than its timeout after a phase began and at most two
//! of those looks later: with the defaults, a head that has not arrived
//! after 10 s is cut before 10.5 s.
//!
//! Logs (`tracing`, targets under `palisade::serve`, peer addresses only): INFO for
//! each connection closed for a slow head or a stalled response; WARN when the
//! connection cap pauses accepting (at most every 10 s) and when the drain
//! deadline cuts connections (with how many); ERROR when `accept` fails
//! (with the back-off); DEBUG for idle closes and connection errors.
//!
//! # Shutdown
//!
//! When the shutdown signal fires (SIGTERM or SIGINT unless
//! [`Server::shutdown_signal`] sets another), the server
//!
//! 1. calls the [`Server::on_shutdown`] hook (turn readiness red there),
//! 2. stops accepting (closes the listener),
//! 3. lets the requests in flight finish, closing each connection once its
//!    last response is sent (HTTP/2: `GOAWAY`), and closes the connections
//!    with nothing in flight: idle ones at once, one in the middle of
//!    sending a request head after a grace of one second (or the head
//!    timeout, if shorter),
//! 4. at the drain deadline, cuts whatever is still open and logs a WARN with
//!    how many connections it cut,
//!
//! and returns `Ok(())` so the caller can stop its background tasks and flush
//! its logs. Dropping the future [`Server::serve`] returns also stops
//! accepting and drains the open connections, each within the drain
//! deadline.
//!
//! Upgraded connections (HTTP/1 `101 Switching Protocols`, e.g. WebSocket)
//! leave the server's watch once the upgrade is done: they count against the
//! connection cap until the handler drops them, and bounding them is the
//! handler's business.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use palisade::serve::Server;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!
//! let server = tokio::spawn(
//!     Server::from_listener(listener)
//!         .header_read_timeout(Duration::from_secs(5))
//!         .shutdown_signal(async { stopped.await.unwrap_or_default() })
//!         .serve(app),
//! );
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
//! client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
//! let mut response = String::new();
//! client.read_to_string(&mut response).await.unwrap();
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(response.ends_with("hello"));
//!
//! stop.send(()).unwrap();
//! server.await.unwrap().unwrap(); // drained: Ok(())
//!
//! // Unsafe settings are refused before anything is served:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let err = Server::from_listener(listener).max_connections(0).serve(Router::new()).await.unwrap_err();
//! assert_eq!(err.config().unwrap().setting(), "serve.max_connections");
//! # });
//! ```

mod conn;
#[cfg(test)]
mod tests;
mod watch;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_core::ConfigError;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use self::conn::Tracker;
use self::watch::{Registered, Registry, Watch};

/// The default for [`Server::header_read_timeout`]: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default for [`Server::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default for [`Server::write_progress_timeout`]: 30 s.
pub const DEFAULT_WRITE_PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
/// The default for [`Server::drain_timeout`]: 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The default for [`Server::max_connections`]: 10,000.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default for [`Server::max_header_bytes`]: 16 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// The default for [`Server::http2_max_concurrent_streams`]: 100.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// HTTP/2 streams the client may reset before the server accepted them
/// (rapid reset, CVE-2023-44487) before the connection gets a `GOAWAY`.
const HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// HTTP/2 streams the server may reset because of client errors before the
/// connection gets a `GOAWAY` (RUSTSEC-2024-0003).
const HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// The longest timeout any setting accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The smallest and largest header limits.
const MIN_HEADER_BYTES: usize = 8 * 1024;
const MAX_HEADER_BYTES: usize = 256 * 1024;
/// How long a connection asked to close (idle, or draining with nothing in
/// flight) may take to do so (an HTTP/2 `GOAWAY` round trip) before it is
/// cut; never more than the header read timeout.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long `serve` waits for cut connections to go after the drain deadline.
const CUT_WAIT: Duration = Duration::from_secs(1);
/// Back-off after an accept error (EMFILE, ENOMEM, ...): doubles up to the cap.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one "connection cap reached" WARN per this interval.
const CAP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The error of [`Server::serve`] and [`serve()`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting is invalid; nothing was bound or served.
    Config(ConfigError),
    /// The address given to [`Server::bind`] could not be bound.
    Bind(io::Error),
    /// The default shutdown signal handlers (SIGTERM, SIGINT) could not be
    /// installed; nothing was served.
    Signal(io::Error),
    /// The watchdog thread could not be started; nothing was served.
    Watchdog(io::Error),
}

impl ServeError {
    /// The configuration error, if this is one.
    pub fn config(&self) -> Option<&ConfigError> {
        match self {
            Self::Config(err) => Some(err),
            Self::Bind(_) | Self::Signal(_) | Self::Watchdog(_) => None,
        }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(err) => err.fmt(f),
            Self::Bind(err) => write!(f, "cannot bind the listen address: {err}"),
            Self::Signal(err) => write!(f, "cannot install the shutdown signal handlers: {err}"),
            Self::Watchdog(err) => write!(f, "cannot start the connection watchdog thread: {err}"),
        }
    }
}

impl StdError for ServeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Config(err) => Some(err),
            Self::Bind(err) | Self::Signal(err) | Self::Watchdog(err) => Some(err),
        }
    }
}

impl From<ConfigError> for ServeError {
    fn from(err: ConfigError) -> Self {
        Self::Config(err)
    }
}

/// Serves `service` on `listener` with the secure defaults until SIGTERM or
/// SIGINT, then drains: `Server::from_listener(listener).serve(service)`.
///
/// `service` is typically an `axum::Router`; see [`Server::serve`] for what
/// else it may be, and the [module docs](self) for the defaults.
///
/// # Errors
///
/// [`ServeError::Signal`] when the signal handlers cannot be installed,
/// [`ServeError::Watchdog`] when the watchdog thread cannot be started.
///
/// # Panics
///
/// When called outside a tokio runtime with IO and time enabled (as
/// `#[tokio::main]` builds it).
pub async fn serve<S, B>(listener: TcpListener, service: S) -> Result<(), ServeError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    Server::from_listener(listener).serve(service).await
}

enum Listen {
    Addr(SocketAddr),
    Listener(TcpListener),
}

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;
type Hook = Box<dyn FnOnce() + Send>;

/// The settings, checked by [`Settings::check`].
#[derive(Debug, Clone, Copy)]
struct Settings {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    write_progress_timeout: Duration,
    drain_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    http2_max_concurrent_streams: u32,
    tcp_nodelay: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_progress_timeout: DEFAULT_WRITE_PROGRESS_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            tcp_nodelay: true,
        }
    }
}

impl Settings {
    fn check(&self) -> Result<(), ConfigError> {
        for (setting, value) in [
            ("serve.header_read_timeout", self.header_read_timeout),
            ("serve.idle_timeout", self.idle_timeout),
            ("serve.write_progress_timeout", self.write_progress_timeout),
            ("serve.drain_timeout", self.drain_timeout),
        ] {
            if value < Duration::from_millis(1) {
                return Err(ConfigError::new(setting, "must be at least 1 ms"));
            }
            if value > MAX_TIMEOUT {
                return Err(ConfigError::new(setting, "must be at most 24 hours"));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                "serve.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_connections > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "serve.max_connections",
                "is larger than the largest connection cap supported",
            ));
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(ConfigError::new(
                "serve.max_header_bytes",
                "must be between 8 KiB and 256 KiB",
            ));
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "serve.http2_max_concurrent_streams",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn limits(&self) -> watch::Limits {
        watch::Limits::new(
            self.header_read_timeout,
            self.idle_timeout,
            self.write_progress_timeout,
            self.drain_timeout,
            CLOSE_GRACE.min(self.header_read_timeout),
        )
    }

    fn http(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_bytes = u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX);
        builder
            .http1()
            .timer(TokioTimer::new())
            // The head and idle timeouts are the connection watchdog's: hyper's
            // header timer also runs while a keep-alive connection waits for
            // its next request, so it would close idle connections at the
            // head timeout, and it does not run during protocol detection.
            .header_read_timeout(None)
            .keep_alive(true)
            // The read buffer's cap is the head's cap (hyper-util exposes no
            // other): a longer head is answered 431, and a connection never
            // buffers more than this for reading.
            .max_buf_size(self.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_concurrent_streams)
            .max_header_list_size(header_bytes)
            .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS);
        builder
    }
}

/// A hardened HTTP/1.1 and HTTP/2 server. See the [module docs](self) for
/// what each setting bounds, and for the shutdown sequence.
///
/// Every setting has a safe default; invalid values are reported by
/// [`Server::check`] and by [`Server::serve`] as a [`ConfigError`] naming the
/// setting (`serve.max_connections`, ...), before anything is bound.
#[must_use]
pub struct Server {
    listen: Listen,
    settings: Settings,
    signal: Option<Signal>,
    on_shutdown: Option<Hook>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listen = match &self.listen {
            Listen::Addr(addr) => Some(*addr),
            Listen::Listener(listener) => listener.local_addr().ok(),
        };
        f.debug_struct("Server")
            .field("listen", &listen)
            .field("settings", &self.settings)
            .field("custom_shutdown_signal", &self.signal.is_some())
            .field("on_shutdown", &self.on_shutdown.is_some())
            .finish()
    }
}

impl Server {
    /// A server that binds `addr` when [`serve`](Self::serve) is called.
    ///
    /// To learn the port of `127.0.0.1:0`, bind a `TcpListener` yourself and
    /// use [`from_listener`](Self::from_listener).
    pub fn bind(addr: impl Into<SocketAddr>) -> Self {
        Self::new(Listen::Addr(addr.into()))
    }

    /// A server accepting on `listener`.
    pub fn from_listener(listener: TcpListener) -> Self {
        Self::new(Listen::Listener(listener))
    }

    fn new(listen: Listen) -> Self {
        Self {
            listen,
            settings: Settings::default(),
            signal: None,
            on_shutdown: None,
        }
    }

    /// How long a request head may take to arrive: the first one from the
    /// accept, every later one from its first byte (default 10 s). A
    /// connection that misses it is closed without a response.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.settings.header_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in flight and
    /// no request begun (default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// How long a response may make no write progress before its connection
    /// is cut (default 30 s): the socket accepts no byte, or (HTTP/2) the
    /// client grants no flow-control window. A slow reader that keeps
    /// reading is not cut.
    pub fn write_progress_timeout(mut self, timeout: Duration) -> Self {
        self.settings.write_progress_timeout = timeout;
        self
    }

    /// How long in-flight requests may take to finish after the shutdown
    /// signal before their connections are cut (default 30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self
    }

    /// The most connections open at once (default 10,000). At the cap the
    /// server stops accepting until one closes: new clients wait in the
    /// listen backlog, nothing fails.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.settings.max_connections = max;
        self
    }

    /// The largest request head (HTTP/1: request line and headers; HTTP/2:
    /// the header list), between 8 KiB and 256 KiB (default 16 KiB). A larger
    /// HTTP/1 head is answered 431; HTTP/1 connections also never buffer more
    /// than this for reading.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.settings.max_header_bytes = max;
        self
    }

    /// The most concurrent streams of an HTTP/2 connection (default 100).
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.settings.http2_max_concurrent_streams = max;
        self
    }

    /// Whether accepted sockets set `TCP_NODELAY` (default true: a
    /// response written in several parts is not delayed by Nagle's
    /// algorithm).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.settings.tcp_nodelay = enabled;
        self
    }

    /// The future whose completion starts the shutdown (default: SIGTERM or
    /// SIGINT; on other platforms than Unix, Ctrl-C).
    pub fn shutdown_signal(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// A hook called first when the shutdown signal fires, while the
    /// listener still accepts: turn readiness red here so that load
    /// balancers stop sending before the server stops accepting.
    pub fn on_shutdown(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_shutdown = Some(Box::new(hook));
        self
    }

    /// Checks the settings without serving.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.settings.check()
    }

    /// Serves `service` until the shutdown signal, then drains (see the
    /// [module docs](self)); returns `Ok(())` once the connections are
    /// closed or the drain deadline has passed.
    ///
    /// `service` is any cloneable tower service of `http::Request<hyper::body::Incoming>`,
    /// typically an `axum::Router` (no `into_make_service_with_connect_info`
    /// needed): it is cloned for each request, as `axum::serve` does. A
    /// `Router` is finalised (`with_state(())`) once, as `axum::serve` does;
    /// finalise a `Router` you wrap in other services yourself.
    ///
    /// # Errors
    ///
    /// [`ServeError::Config`] for an invalid setting, [`ServeError::Bind`]
    /// when [`Server::bind`]'s address cannot be bound,
    /// [`ServeError::Signal`] when the default signal handlers cannot be
    /// installed, [`ServeError::Watchdog`] when the watchdog thread cannot be
    /// started. Nothing is served then. Errors of single connections
    /// and of `accept` (EMFILE, ...) are logged and never end the server.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime with IO and time enabled (as
    /// `#[tokio::main]` builds it).
    pub async fn serve<S, B>(self, service: S) -> Result<(), ServeError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn StdError + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let Self {
            listen,
            settings,
            signal,
            on_shutdown,
        } = self;
        settings.check()?;
        let mut signal = match signal {
            Some(signal) => signal,
            None => default_signal().map_err(ServeError::Signal)?,
        };
        let listener = match listen {
            Listen::Listener(listener) => listener,
            Listen::Addr(addr) => TcpListener::bind(addr).await.map_err(ServeError::Bind)?,
        };
        tracing::debug!(addr = ?listener.local_addr().ok(), "serving");
        let service = finalize(service);
        let registry = Arc::new(Registry::default());
        // Dropping this future (instead of signalling) drains too.
        let _drain_on_drop = DrainOnDrop(Arc::clone(&registry));
        watch::start(&registry, settings.limits()).map_err(ServeError::Watchdog)?;
        accept_loop(&listener, &mut signal, &settings, &registry, &service).await;

        // The hook first, while the listener still accepts.
        if let Some(hook) = on_shutdown {
            hook();
        }
        drop(listener);
        drain(&registry, settings.drain_timeout).await;
        Ok(())
    }
}

/// Accepts connections and spawns their tasks until `signal` fires.
async fn accept_loop<S, B>(
    listener: &TcpListener,
    signal: &mut Signal,
    settings: &Settings,
    registry: &Arc<Registry>,
    service: &S,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = Arc::new(settings.http());
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut next_id = 0u64;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut last_cap_warning: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut *signal => return,
            permit = acquire(&permits, &mut last_cap_warning) => permit,
        };
        let accepted = tokio::select! {
            biased;
            () = &mut *signal => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(err) if is_connection_error(&err) => {
                tracing::debug!(error = %err, "accept: connection gone before it was accepted");
                continue;
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "accept failed; still serving"
                );
                tokio::select! {
                    biased;
                    () = &mut *signal => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        if settings.tcp_nodelay
            && let Err(err) = stream.set_nodelay(true)
        {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let tracker = Arc::new(Tracker::default());
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        registry.insert(id, Watch::new(Arc::clone(&tracker), peer, Instant::now()));
        let registered = Registered {
            registry: Arc::clone(registry),
            id,
        };
        tokio::spawn(conn::serve_connection(
            Arc::clone(&builder),
            conn::Accepted {
                stream,
                peer,
                permit,
                tracker,
            },
            service.clone(),
            registered,
        ));
    }
}

/// Asks every connection to drain; cuts what is left at the deadline.
async fn drain(registry: &Registry, deadline: Duration) {
    tracing::info!(
        connections = registry.len(),
        drain_timeout_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        "shutdown: stopped accepting, draining"
    );
    registry.drain();
    if tokio::time::timeout(deadline, registry.wait_empty())
        .await
        .is_ok()
    {
        tracing::info!("shutdown: every connection closed");
        return;
    }
    tracing::warn!(
        connections = registry.len(),
        "shutdown: drain deadline passed, cutting the connections still open"
    );
    registry.cut();
    let _ = tokio::time::timeout(CUT_WAIT, registry.wait_empty()).await;
}

/// An `axum::Router` is finalised once, as `axum::serve` does: otherwise
/// axum turns every handler into a route again on every request.
#[cfg(feature = "axum")]
fn finalize<S: 'static>(mut service: S) -> S {
    if let Some(router) = (&mut service as &mut dyn std::any::Any).downcast_mut::<axum::Router>() {
        *router = std::mem::take(router).with_state(());
    }
    service
}

#[cfg(not(feature = "axum"))]
fn finalize<S>(service: S) -> S {
    service
}

/// A permit for one more connection; warns (at most every
/// [`CAP_WARN_INTERVAL`]) when the cap makes accepting pause.
async fn acquire(
    permits: &Arc<Semaphore>,
    last_warning: &mut Option<Instant>,
) -> OwnedSemaphorePermit {
    if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
        return permit;
    }
    if last_warning.is_none_or(|at| at.elapsed() >= CAP_WARN_INTERVAL) {
        *last_warning = Some(Instant::now());
        tracing::warn!("connection cap reached: accepting paused until a connection closes");
    }
    match Arc::clone(permits).acquire_owned().await {
        Ok(permit) => permit,
        // The semaphore is never closed.
        Err(_) => std::future::pending().await,
    }
}

/// Errors of one connection that is gone before `accept` returned it: try
/// the next one at once.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

fn default_signal() -> io::Result<Signal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(Box::pin(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            }
        }))
    }
    #[cfg(not(unix))]
    {
        Ok(Box::pin(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C received");
            }
        }))
    }
}

/// Drains when `serve` returns or its future is dropped.
struct DrainOnDrop(Arc<Registry>);

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

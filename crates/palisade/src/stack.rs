//! The secure-defaults stack: every Palisade layer, in the right order, in one call.
//!
//! From the outside in:
//!
//! | # | layer | why here |
//! | --- | --- | --- |
//! | 1 | [`RequestIdLayer`] | outermost: every response, whichever layer produced it, carries `X-Request-Id`, and every log line below has the id |
//! | 2 | [`SecurityHeadersLayer`] | every response gets the headers, including the rejections and 500s produced by the layers below |
//! | 3 | [`ClientIpLayer`] | resolves the client address once, before anything that keys on it (access log, allowlists, rate limits) |
//! | 4 | [`AccessLogLayer`] | one line per request with its client address, and with the final status of every rejection below |
//! | 5 | your auth layer ([`SecureStack::auth`]) | after the client address, before the limits: per-user limits know the user |
//! | 6 | your rate limits ([`SecureStack::rate_limit`]) | after the client address and the user, outside CORS: preflights, 404s and 405s count too |
//! | 7 | [`CorsLayer`] | answers preflights before any work is done, and sits outside the rejecting layers so a browser can read their 413/503 problems |
//! | 8 | [`CrossOriginProtectionLayer`] | refuses cross-site state-changing requests before they cost anything; trusts the CORS origins |
//! | 9 | [`CatchPanicLayer`] | around everything that runs handler code, so a panic becomes a 500 that still passes through 1–8 |
//! | 10 | [`TimeoutLayer`] | deadlines for the handler and its body reading |
//! | 11 | [`BodyLimitLayer`] | wraps the very body the handler reads |
//! | 12 | [`ProblemFallbackLayer`] | innermost: the router's bare 404 and 405 (and any bare error status) become problem documents |
//!
//! Slots 5 and 6 are empty unless set (an empty slot costs nothing). Every
//! problem document carries the request id, whichever layer or handler made
//! it: the request-id layer makes the request current while its inner
//! layers run, and a problem without an id takes it from there.
//!
//! The defaults: the `api` (or `html`) header profile; no CORS origin (preflights
//! refused, no CORS headers); cross-origin protection on; the TCP peer as the
//! client (no trusted proxy); 30 s per request; 1 MiB bodies. A route needing
//! other values puts its own `TimeoutLayer`, `BodyLimitLayer` or
//! `SecurityHeadersLayer` on itself: the innermost layer wins.
//!
//! The stack is one layer, so axum wraps each route once. Assembling the
//! same layers with one `Router::layer` call each costs more per request:
//! axum clones a boxed service, boxes the future and boxes the response body
//! at every call (five guards applied one by one took 45 % more instructions
//! per request than the same five in one `tower::ServiceBuilder`; see
//! `benches/README.md`). Compose your own layers the same way.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use palisade::prelude::*;
//!
//! let layer = SecureStack::api()
//!     .cors(Cors::new().allow_origin("https://app.example.com"))
//!     .timeout(Timeout::new(Duration::from_secs(10)))
//!     .body_limit(64 * 1024)
//!     .build()
//!     .unwrap();
//! let app: Router = layer.apply(Router::new().route("/items", post(|| async { "created" })));
//!
//! // Unsafe configurations never reach production:
//! let err = SecureStack::api()
//!     .cors(Cors::new().allow_any_origin().allow_credentials(true))
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err.setting(), "cors.origins");
//! ```

use palisade_core::client_ip::{ClientIpLayer, ClientIpService};
use palisade_core::{ClientIpResolver, ConfigError};
use palisade_http::body_limit::BodyLimit;
use palisade_http::catch_panic::CatchPanic;
use palisade_http::cors::CorsService;
use palisade_http::cross_origin::CrossOriginProtectionService;
use palisade_http::headers::SecurityHeadersService;
use palisade_http::problem_fallback::ProblemFallback;
use palisade_http::timeout::TimeoutService;
use palisade_http::{
    BodyLimitLayer, CatchPanicLayer, Cors, CorsLayer, CrossOriginProtection,
    CrossOriginProtectionLayer, ProblemFallbackLayer, SecurityHeaders, SecurityHeadersLayer,
    Timeout, TimeoutLayer,
};
use palisade_telemetry::access::AccessLog;
use palisade_telemetry::request_id::RequestIdService;
use palisade_telemetry::{AccessLogLayer, Metrics, RequestIdLayer};
use tower_layer::{Identity, Layer};

/// Builder of [`SecureLayer`]. See the [module docs](self) for the order and defaults.
///
/// `A` and `R` are the auth and rate-limit slots ([`Identity`] when empty).
#[derive(Debug, Clone)]
#[must_use]
pub struct SecureStack<A = Identity, R = Identity> {
    headers: SecurityHeaders,
    cors: Cors,
    trusted_origins: Vec<String>,
    plain_http: bool,
    client_ip: ClientIpResolver,
    timeout: Timeout,
    body_limit: u64,
    metrics: Metrics,
    auth: A,
    rate_limit: R,
}

impl SecureStack {
    /// The stack of a JSON API.
    pub fn api() -> Self {
        Self {
            headers: SecurityHeaders::api(),
            cors: Cors::new(),
            trusted_origins: Vec::new(),
            plain_http: false,
            client_ip: ClientIpResolver::default(),
            timeout: Timeout::new(palisade_http::timeout::DEFAULT_TIMEOUT),
            body_limit: palisade_http::body_limit::DEFAULT_BODY_LIMIT,
            metrics: Metrics::new(),
            auth: Identity::new(),
            rate_limit: Identity::new(),
        }
    }

    /// The stack of a server-rendered site (the `html` header profile with CSP nonces).
    pub fn html() -> Self {
        Self {
            headers: SecurityHeaders::html(),
            ..Self::api()
        }
    }
}

impl<A, R> SecureStack<A, R> {
    /// Puts the authenticating layer (e.g. `palisade_auth::AuthLayer`) in
    /// its slot: after the client address is resolved, before the limits.
    pub fn auth<L>(self, layer: L) -> SecureStack<L, R> {
        self.map_slots(|_, rate_limit| (layer, rate_limit))
    }

    /// Puts the rate-limit layer (e.g. `palisade_ratelimit::RateLimitLayer`,
    /// or a stack of it and a concurrency cap) in its slot: after the client
    /// address and the user are known, outside CORS and the router's
    /// fallbacks, so every request counts — preflights, 404s and 405s too.
    pub fn rate_limit<L>(self, layer: L) -> SecureStack<A, L> {
        self.map_slots(|auth, _| (auth, layer))
    }

    /// The same settings with other slot layers (the slots are type
    /// parameters, so filling one makes a new type).
    fn map_slots<A2, R2>(self, f: impl FnOnce(A, R) -> (A2, R2)) -> SecureStack<A2, R2> {
        let (auth, rate_limit) = f(self.auth, self.rate_limit);
        SecureStack {
            headers: self.headers,
            cors: self.cors,
            trusted_origins: self.trusted_origins,
            plain_http: self.plain_http,
            client_ip: self.client_ip,
            timeout: self.timeout,
            body_limit: self.body_limit,
            metrics: self.metrics,
            auth,
            rate_limit,
        }
    }

    /// Replaces the security headers.
    pub fn headers(mut self, headers: SecurityHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the CORS policy (default: no cross-origin access).
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = cors;
        self
    }

    /// Trusts a cross-site origin for state-changing requests, beyond the CORS origins.
    pub fn trust_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// The service's own pages are served over plain `http` (local
    /// development without TLS): a browser that sends no `Sec-Fetch-Site`
    /// is judged against `http://` and `Host` as the service's own origin,
    /// not `https://`. Browsers that send the header are not affected.
    pub fn served_over_http(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Sets how the client address is resolved (default: the TCP peer).
    pub fn client_ip(mut self, resolver: ClientIpResolver) -> Self {
        self.client_ip = resolver;
        self
    }

    /// Sets the request deadlines (default: 30 s).
    pub fn timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the request body limit in bytes (default: 1 MiB).
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Records into these metrics (default: a fresh set, see [`SecureLayer::metrics`]).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Validates every part and builds the layer.
    pub fn build(self) -> Result<SecureLayer<A, R>, ConfigError> {
        let cors = self.cors.build()?;
        let request_id = RequestIdLayer::new();
        let own = if self.plain_http {
            CrossOriginProtection::new().served_over_http()
        } else {
            CrossOriginProtection::new()
        };
        let cross_origin = cors
            .origins()
            .map(str::to_owned)
            .chain(self.trusted_origins)
            .fold(own, CrossOriginProtection::trust_origin)
            .build()?;
        Ok(SecureLayer {
            request_id,
            access_log: AccessLogLayer::new().with_metrics(self.metrics.clone()),
            metrics: self.metrics,
            headers: self.headers.build()?,
            client_ip: ClientIpLayer::new(self.client_ip),
            cors,
            cross_origin,
            catch_panic: CatchPanicLayer::new(),
            timeout: self.timeout.build()?,
            body_limit: BodyLimitLayer::new(self.body_limit),
            auth: self.auth,
            rate_limit: self.rate_limit,
        })
    }
}

/// Every Palisade layer in order. Build it with [`SecureStack`].
#[derive(Debug, Clone)]
pub struct SecureLayer<A = Identity, R = Identity> {
    request_id: RequestIdLayer,
    access_log: AccessLogLayer,
    metrics: Metrics,
    headers: SecurityHeadersLayer,
    client_ip: ClientIpLayer,
    cors: CorsLayer,
    cross_origin: CrossOriginProtectionLayer,
    catch_panic: CatchPanicLayer,
    timeout: TimeoutLayer,
    body_limit: BodyLimitLayer,
    auth: A,
    rate_limit: R,
}

/// The guards inside the slots: CORS down to the problem fallback.
pub type GuardService<S> = CorsService<
    CrossOriginProtectionService<CatchPanic<TimeoutService<BodyLimit<ProblemFallback<S>>>>>,
>;

/// The service [`SecureLayer`] produces around `S`, with the auth and
/// rate-limit slots' services `AS` and `RS`.
pub type SecureService<AS> =
    RequestIdService<SecurityHeadersService<ClientIpService<AccessLog<AS>>>>;

impl<S, A, R> Layer<S> for SecureLayer<A, R>
where
    R: Layer<GuardService<S>>,
    A: Layer<R::Service>,
{
    type Service = SecureService<A::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = ProblemFallbackLayer::new().layer(inner);
        let inner = self.body_limit.layer(inner);
        let inner = self.timeout.layer(inner);
        let inner = self.catch_panic.layer(inner);
        let inner = self.cross_origin.layer(inner);
        let inner = self.cors.layer(inner);
        let inner = self.rate_limit.layer(inner);
        let inner = self.auth.layer(inner);
        let inner = self.access_log.layer(inner);
        let inner = self.client_ip.layer(inner);
        let inner = self.headers.layer(inner);
        self.request_id.layer(inner)
    }
}

impl<A, R> SecureLayer<A, R> {
    /// The metrics the stack records into, to serve on `/metrics`.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }
}

#[cfg(feature = "axum")]
impl<A, R> SecureLayer<A, R> {
    /// Wraps every route of `router` and its fallbacks (add the routes and
    /// any fallback of your own first). The router's bare 404 (unknown path)
    /// and 405 (known path, wrong method; `Allow` kept) become problem
    /// documents; a fallback you set is kept as it is.
    ///
    /// Serve the router with `palisade::serve`, which always provides the
    /// client address (or with
    /// `into_make_service_with_connect_info::<SocketAddr>()`).
    pub fn apply<St>(self, router: axum::Router<St>) -> axum::Router<St>
    where
        St: Clone + Send + Sync + 'static,
        Self: Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        <Self as Layer<axum::routing::Route>>::Service:
            tower_service::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
        <<Self as Layer<axum::routing::Route>>::Service as tower_service::Service<
            axum::extract::Request,
        >>::Response: axum::response::IntoResponse + 'static,
        <<Self as Layer<axum::routing::Route>>::Service as tower_service::Service<
            axum::extract::Request,
        >>::Error: Into<std::convert::Infallible> + 'static,
        <<Self as Layer<axum::routing::Route>>::Service as tower_service::Service<
            axum::extract::Request,
        >>::Future: Send + 'static,
    {
        router.layer(self)
    }
}

#[cfg(test)]
#[cfg(feature = "axum")]
mod tests;

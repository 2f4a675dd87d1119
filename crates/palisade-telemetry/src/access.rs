//! The access log: one INFO line per request, after the response.
//!
//! Fields: `method`, `route` (the matched route pattern such as
//! `/users/{id}`, never the raw path, so scanners cannot create unbounded
//! values and ids or tokens in paths stay out of logs; unmatched requests get
//! the fixed label `<unmatched>`), `status`, `latency_ms`, `client_ip` (from
//! [`ClientIp`](palisade_core::ClientIp), when resolved) and — through the
//! request span — `request_id`. No header and no query string is logged.
//! With [`with_metrics`](AccessLogLayer::with_metrics) the same observation
//! feeds the [`Metrics`](crate::Metrics).
//!
//! Put it inside [`RequestIdLayer`](crate::RequestIdLayer) and
//! [`ClientIpLayer`](palisade_core::ClientIpLayer), and apply it with
//! `Router::layer` so that axum's `MatchedPath` is known.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_telemetry::AccessLogLayer;
//!
//! let app: Router = Router::new().route("/users/{id}", get(|| async { "u" })).layer(AccessLogLayer::new());
//! # let _ = app;
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use palisade_core::{ClientIp, Rejection};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::{InFlight, Metrics, Route, method_label};

/// The `route` of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";

/// Logs one line per request, and records [`Metrics`] when given some. See
/// the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct AccessLogLayer {
    metrics: Option<Metrics>,
}

impl AccessLogLayer {
    /// An access log without metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also records every request (and every refusal) into `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Option<Metrics>,
}

fn route_of(extensions: &http::Extensions) -> Route {
    #[cfg(feature = "axum")]
    if let Some(path) = extensions.get::<axum::extract::MatchedPath>() {
        return Route::Matched(path.clone());
    }
    let _ = extensions;
    Route::Unmatched
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AccessLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        AccessLogFuture {
            method: req.method().clone(),
            route: route_of(req.extensions()),
            client_ip: req.extensions().get::<ClientIp>().map(ClientIp::ip),
            start: Instant::now(),
            in_flight: self.metrics.as_ref().map(Metrics::enter),
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`AccessLog`].
    pub struct AccessLogFuture<F> {
        #[pin]
        future: F,
        method: Method,
        route: Route,
        client_ip: Option<IpAddr>,
        start: Instant,
        // Counts the request in flight until dropped; holds the metrics.
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.future.poll(cx));
        let elapsed = this.start.elapsed();
        let seconds = elapsed.as_secs_f64();
        // Whole microseconds, so the line shows 0.347 rather than 0.34778899999999996.
        #[allow(clippy::cast_precision_loss)] // microseconds of one request fit in 2^52
        let latency_ms = elapsed.as_micros() as f64 / 1_000.0;
        let route = this.route.as_str();
        let (status, rejection) = match &result {
            Ok(response) => (
                response.status().as_u16(),
                response.extensions().get::<Rejection>().map(|r| r.reason),
            ),
            Err(_) => (500, None),
        };
        if let Some(in_flight) = this.in_flight.take() {
            in_flight.metrics().record_route(
                method_label(this.method),
                this.route.clone(),
                status,
                seconds,
                rejection,
            );
        }
        // A `None` field is simply left out of the line.
        let client_ip = this.client_ip.map(IpText::new);
        let client_ip = client_ip.as_ref().map(IpText::as_str);
        // `message` as a plain string field: no `format_args!` to run.
        tracing::info!(
            target: "palisade::access",
            message = "request",
            method = this.method.as_str(),
            route,
            status,
            latency_ms,
            client_ip,
        );
        Poll::Ready(result)
    }
}

/// An address as text in a stack buffer, for the access line's hot path:
/// IPv4 digit by digit (`Display` for `IpAddr` costs more than the rest of
/// the line), IPv6 through its `Display`.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut text = Self {
            buf: [0; 48],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            // At most 39 characters: always fits.
            IpAddr::V6(v6) => drop(fmt::Write::write_fmt(&mut text, format_args!("{v6}"))),
        }
        text
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn addresses_read_as_display_writes_them(ip in proptest::prelude::any::<IpAddr>()) {
            let text = IpText::new(ip);
            proptest::prop_assert_eq!(text.as_str(), ip.to_string());
        }
    }

    #[test]
    fn ipv4_edges() {
        for ip in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "127.0.0.1"] {
            assert_eq!(IpText::new(ip.parse().unwrap()).as_str(), ip);
        }
    }
}

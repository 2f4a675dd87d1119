//! The access log: one INFO line per request, after the response.
//!
//! Fields: `method`, `route` (the matched route pattern such as
//! `/users/{id}`, never the raw path, so scanners cannot create unbounded
//! values and ids or tokens in paths stay out of logs; unmatched requests get
//! the fixed label `<unmatched>`), `status`, `latency_ms`, `client_ip` (from
//! [`ClientIp`](palisade_core::ClientIp), when resolved) and — through the
//! request span — `request_id`. No header and no query string is logged.
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
//! let app: Router = Router::new().route("/users/{id}", get(|| async { "u" })).layer(AccessLogLayer);
//! # let _ = app;
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use palisade_core::ClientIp;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The `route` of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";

/// Logs one line per request. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The service of [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

fn route_of(extensions: &http::Extensions) -> Option<std::sync::Arc<str>> {
    #[cfg(feature = "axum")]
    if let Some(path) = extensions.get::<axum::extract::MatchedPath>() {
        return Some(std::sync::Arc::from(path.as_str()));
    }
    let _ = extensions;
    None
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
            client_ip: req.extensions().get::<ClientIp>().copied(),
            start: Instant::now(),
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
        route: Option<std::sync::Arc<str>>,
        client_ip: Option<ClientIp>,
        start: Instant,
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
        let latency_ms = this.start.elapsed().as_secs_f64() * 1_000.0;
        let route = this.route.as_deref().unwrap_or(UNMATCHED_ROUTE);
        let status = match &result {
            Ok(response) => response.status().as_u16(),
            Err(_) => 500,
        };
        if let Some(ip) = this.client_ip {
            tracing::info!(
                target: "palisade::access",
                method = %this.method,
                route,
                status,
                latency_ms,
                client_ip = %ip.ip(),
                "request"
            );
        } else {
            tracing::info!(
                target: "palisade::access",
                method = %this.method,
                route,
                status,
                latency_ms,
                "request"
            );
        }
        Poll::Ready(result)
    }
}

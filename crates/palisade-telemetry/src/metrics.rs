//! Prometheus metrics of the HTTP service: requests, latency, requests in
//! flight, and every refusal of a Palisade layer by reason.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `http_requests_total` | counter | `method`, `route`, `status` |
//! | `http_request_duration_seconds` | histogram (0.5 ms – 30 s) | `method`, `route`, `status` |
//! | `http_requests_in_flight` | gauge | — |
//! | `palisade_rejections_total` | counter | `reason` (`payload_too_large`, `timeout`, `body_timeout`, `cors_denied`, `cross_origin_denied`, `ip_denied`, `panic`...) |
//!
//! Label values are bounded: `route` is the matched pattern (or `<unmatched>`),
//! `method` one of the standard methods or `OTHER`, `reason` a fixed word set
//! by the layer (the [`Rejection`](palisade_core::Rejection) extension of its
//! response). [`AccessLogLayer::with_metrics`](crate::AccessLogLayer::with_metrics)
//! records them; [`Metrics::encode`] renders the text format for `/metrics`.
//!
//! # Example
//!
//! ```
//! use palisade_telemetry::Metrics;
//!
//! let metrics = Metrics::new();
//! metrics.record("GET", "/health", 200, 0.0012, None);
//! metrics.record("POST", "/upload", 413, 0.0004, Some("payload_too_large"));
//! let text = metrics.encode();
//! assert!(text.contains(r#"http_requests_total{method="GET",route="/health",status="200"} 1"#));
//! assert!(text.contains(r#"palisade_rejections_total{reason="payload_too_large"} 1"#));
//! ```

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

/// The latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A route label, built without allocating: axum's matched path is shared.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// A route given as text.
    Shared(Arc<str>),
    /// The pattern axum matched.
    #[cfg(feature = "axum")]
    Matched(axum::extract::MatchedPath),
    /// No route matched.
    Unmatched,
}

impl Route {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Shared(s) => s,
            #[cfg(feature = "axum")]
            Self::Matched(m) => m.as_str(),
            Self::Unmatched => crate::access::UNMATCHED_ROUTE,
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectionLabels {
    reason: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Each label set's counter and histogram (shared with the families), found
/// with one fast-hash lookup under a read lock instead of two lookups in
/// the families (which hash with the standard library's `SipHash`).
type RouteCache = HashMap<RequestLabels, (Counter, Histogram), foldhash::fast::RandomState>;

#[derive(Debug)]
struct Inner {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    routes: RwLock<RouteCache>,
    in_flight: Gauge<i64, AtomicI64>,
    rejections: Family<RejectionLabels, Counter>,
}

/// The service's metrics. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A bounded method label.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from the request to its response head",
            latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "palisade_rejections",
            "Requests refused by a Palisade layer, by reason",
            rejections.clone(),
        );
        Self(Arc::new(Inner {
            registry: Mutex::new(registry),
            requests,
            latency,
            routes: RwLock::default(),
            in_flight,
            rejections,
        }))
    }

    /// Records one finished request.
    pub fn record(
        &self,
        method: &'static str,
        route: &str,
        status: u16,
        seconds: f64,
        rejection: Option<&'static str>,
    ) {
        self.record_route(
            method,
            Route::Shared(Arc::from(route)),
            status,
            seconds,
            rejection,
        );
    }

    pub(crate) fn record_route(
        &self,
        method: &'static str,
        route: Route,
        status: u16,
        seconds: f64,
        rejection: Option<&'static str>,
    ) {
        let labels = RequestLabels {
            method,
            route,
            status,
        };
        let routes = self.0.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((count, latency)) = routes.get(&labels) {
            count.inc();
            latency.observe(seconds);
        } else {
            drop(routes);
            let mut routes = self
                .0
                .routes
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let (count, latency) = routes.entry(labels).or_insert_with_key(|labels| {
                (
                    self.0.requests.get_or_create(labels).clone(),
                    self.0.latency.get_or_create(labels).clone(),
                )
            });
            count.inc();
            latency.observe(seconds);
        }
        if let Some(reason) = rejection {
            self.0
                .rejections
                .get_or_create(&RejectionLabels { reason })
                .inc();
        }
    }

    /// Counts a request entering; the returned guard counts it leaving, also
    /// when the request is cancelled.
    pub(crate) fn enter(&self) -> InFlight {
        self.0.in_flight.inc();
        InFlight(self.clone())
    }

    /// How many requests were refused for `reason` so far.
    pub fn rejections(&self, reason: &'static str) -> u64 {
        self.0
            .rejections
            .get_or_create(&RejectionLabels { reason })
            .get()
    }

    /// Adds metrics of other components (the rate limiter's, the store's) to
    /// the same exposition.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self
            .0
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let registry = self
            .0
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Metrics);

impl InFlight {
    /// The metrics the request is counted in.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_guards() {
        let m = Metrics::new();
        let a = m.enter();
        let b = m.enter();
        assert!(m.encode().contains("http_requests_in_flight 2"));
        drop(a);
        drop(b);
        assert!(m.encode().contains("http_requests_in_flight 0"));
    }

    #[test]
    fn histogram_has_the_explicit_buckets() {
        let m = Metrics::new();
        m.record("GET", "/x", 200, 0.003, None);
        let text = m.encode();
        let bucket = |le: &str, n: u32| {
            format!(r#"_bucket{{le="{le}",method="GET",route="/x",status="200"}} {n}"#)
        };
        assert!(text.contains(&bucket("0.0025", 0)), "{text}");
        assert!(text.contains(&bucket("0.005", 1)), "{text}");
        assert!(text.contains(&bucket("30.0", 1)), "{text}");
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    }

    #[test]
    fn counts_land_in_the_families_through_the_cache() {
        let m = Metrics::new();
        for (route, status) in [("/a", 200), ("/a", 200), ("/a", 404), ("/b", 200)] {
            m.record("GET", route, status, 0.001, None);
        }
        let text = m.encode();
        for (route, status, n) in [("/a", 200, 2), ("/a", 404, 1), ("/b", 200, 1)] {
            let labels = format!(r#"method="GET",route="{route}",status="{status}""#);
            assert!(
                text.contains(&format!("http_requests_total{{{labels}}} {n}")),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "http_request_duration_seconds_count{{{labels}}} {n}"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
    }
}

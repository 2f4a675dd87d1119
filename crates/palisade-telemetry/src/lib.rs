//! Correlated observability for tower services.
//!
//! - [`RequestIdLayer`]: a validated or generated (UUIDv7, W3C `traceparent`)
//!   request id on every request and response, in logs, spawned tasks
//!   ([`spawn`]) and outbound calls ([`PropagateRequestIdLayer`], [`propagate`]);
//! - [`JsonFormat`] and [`init`]: JSON lines with `request_id` at the top
//!   level, redacted secret fields, a non-blocking bounded writer that counts
//!   what it drops, `RUST_LOG` filtering, a pretty format for development;
//! - [`PanicHook`] (installed by [`init`]): a panic is one log line with its
//!   location, thread and request id, its message redacted, instead of
//!   std's text on stderr;
//! - [`AccessLogLayer`]: one line per request by route, never by raw path;
//! - [`Metrics`]: Prometheus requests, latency, in-flight and rejections by reason;
//! - [`Readiness`]: named checks in parallel with their own deadlines, cached,
//!   critical (red) or degradable (200 `degraded`), red as soon as shutdown
//!   starts.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_telemetry::{AccessLogLayer, RequestIdLayer};
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hi" }))
//!     .layer(ServiceBuilder::new().layer(RequestIdLayer::new()).layer(AccessLogLayer::new()));
//! # let _ = app;
//! ```

pub mod access;
pub mod format;
mod init;
pub mod metrics;
pub mod panic;
pub mod readiness;
pub mod request_id;
pub mod writer;

pub use access::AccessLogLayer;
pub use format::{JsonFormat, RequestIdRecorder};
pub use init::{InitError, LogConfig, LogFormat, LogGuard, init, init_with_writer, non_blocking};
pub use metrics::Metrics;
pub use panic::PanicHook;
pub use readiness::{CheckStatus, Health, Readiness, ReadinessReport};
pub use request_id::{
    PropagateRequestIdLayer, RequestContext, RequestIdLayer, current, propagate, spawn,
};

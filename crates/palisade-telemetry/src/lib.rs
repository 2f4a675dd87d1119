//! Correlated observability for tower services.
//!
//! - [`RequestIdLayer`]: a validated or generated (UUIDv7, W3C `traceparent`)
//!   request id on every request and response, in logs, spawned tasks
//!   ([`spawn`]) and outbound calls ([`PropagateRequestIdLayer`], [`propagate`]);
//! - [`JsonFormat`] and [`init`]: JSON lines with `request_id` at the top
//!   level, redacted secret fields, a non-blocking bounded writer that counts
//!   what it drops, `RUST_LOG` filtering, a pretty format for development;
//! - [`AccessLogLayer`]: one line per request by route, never by raw path.
//!
//! Metrics, the readiness registry and the loopback load harness are not in
//! this crate yet.
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
//!     .layer(ServiceBuilder::new().layer(RequestIdLayer::new()).layer(AccessLogLayer));
//! # let _ = app;
//! ```

pub mod access;
pub mod format;
mod init;
pub mod request_id;

pub use access::AccessLogLayer;
pub use format::{JsonFormat, RequestIdRecorder};
pub use init::{InitError, LogConfig, LogFormat, LogGuard, init, init_with_writer};
pub use request_id::{
    PropagateRequestIdLayer, RequestContext, RequestIdLayer, current, propagate, spawn,
};

//! Secure-by-default tower layers for HTTP services.
//!
//! | module | what it defends |
//! | --- | --- |
//! | [`headers`] | clickjacking, MIME sniffing, XSS (CSP with nonces), referrer leaks, HSTS |
//! | [`cors`] | other sites reading responses: exact origins, no reflection |
//! | [`cross_origin`] | CSRF against cookie sessions, from `Sec-Fetch-Site`/`Origin` |
//! | [`timeout`] | requests and slow bodies that hold resources forever |
//! | [`body_limit`] | memory and disk exhaustion by large or endless bodies |
//! | [`catch_panic`] | a panicking handler dropping connections or leaking its message |
//! | [`allowlist`] | admin and webhook routes reached from outside their network |
//! | [`problem_fallback`] | bare error responses (a router's 404/405) without a problem body |
//! | [`json`] | malformed and invalid input reaching handlers (feature `axum`) |
//!
//! Each layer has a builder whose defaults are the safe ones; a combination
//! that cannot be safe is a [`ConfigError`](palisade_core::ConfigError) from
//! `build()`, never a panic. Rejections are RFC 9457 problem documents.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use http::Request;
//! use palisade_http::{body_limit::BodyLimitLayer, headers::SecurityHeaders, timeout::Timeout};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let app = Router::new().route("/", get(|| async { "hi" })).layer(
//!     ServiceBuilder::new()
//!         .layer(SecurityHeaders::api().build().unwrap())
//!         .layer(Timeout::new(Duration::from_secs(30)).build().unwrap())
//!         .layer(BodyLimitLayer::new(1 << 20)),
//! );
//! let res = app.oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["x-frame-options"], "DENY");
//! # });
//! ```

pub mod allowlist;
pub mod body_limit;
pub mod catch_panic;
pub mod cors;
pub mod cross_origin;
pub mod headers;
#[cfg(feature = "axum")]
pub mod json;
mod origin;
pub mod problem_fallback;
pub mod timeout;
mod trip;

/// The error type of request bodies wrapped by Palisade layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use allowlist::{IpAllowlist, IpAllowlistLayer};
pub use body_limit::BodyLimitLayer;
pub use catch_panic::CatchPanicLayer;
pub use cors::{Cors, CorsLayer};
pub use cross_origin::{CrossOriginProtection, CrossOriginProtectionLayer};
pub use headers::{CspNonce, SecurityHeaders, SecurityHeadersLayer};
#[cfg(feature = "axum")]
pub use json::ValidatedJson;
pub use problem_fallback::ProblemFallbackLayer;
pub use timeout::{RequestDeadline, Timeout, TimeoutLayer};

//! Palisade: production-hard axum/tower services in an afternoon.
//!
//! This crate re-exports the Palisade crates behind features and offers
//! [`SecureStack`](stack::SecureStack): every protection in the right order,
//! with safe defaults, in one call.
//!
//! | feature | brings |
//! | --- | --- |
//! | `http` (default) | [`http`]: headers, CORS, timeouts, body limits, panics, CSRF, allowlists; [`telemetry`]: request ids, JSON logs, access logs |
//! | `axum` (default) | extractors (`ValidatedJson`, `ClientIp`, `CspNonce`), `IntoResponse` for problems, [`SecureLayer::apply`](stack::SecureLayer::apply) |
//! | `ratelimit` | `store` (memory store: GCRA, counters, marks) and `ratelimit` (policies, the limiting layer, per-client concurrency caps) |
//! | `redis` | the Redis store behind `store::Store`, with fail policies and a circuit breaker |
//! | `auth` | `auth`: the login and session flows (`Login`, `Sessions`), password policy, argon2id pool, lockout, JWT and refresh tokens, `AuthLayer`; with `axum`, `AuthUser` and responses (no axum without it) |
//! | `fs` | `fs`: path rules, `SafeRoot`, uploads and downloads; with `axum`, errors are responses |
//! | `config` | `config`: figment loading with profiles, `*_FILE` secrets, keys that refuse defaults and low entropy |
//! | `resilience` | `resilience`: the `Supervisor` of background tasks (backoff with jitter, restart budget, readiness), `Outbound` calls (deadlines, budgeted retries, the circuit breaker), bounded fan-out |
//! | `serve` (default) | [`serve`](mod@serve): a hardened HTTP/1.1 and HTTP/2 server — request head, idle, write-progress and drain timeouts, a connection cap, the peer address on every request |
//!
//! [`core`] (problem details, client IP, clock, request id) is always there.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade::prelude::*;
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let app = SecureStack::api()
//!     .build()
//!     .unwrap()
//!     .apply(Router::new().route("/health", get(|| async { "ok" })));
//!
//! let mut req = http::Request::get("/nope").body(axum::body::Body::empty()).unwrap();
//! req.extensions_mut().insert(palisade::core::client_ip::PeerAddr("127.0.0.1:1".parse().unwrap()));
//! let res = app.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 404);
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(res.headers()["x-content-type-options"], "nosniff");
//! # });
//! ```

#[cfg(feature = "auth")]
pub use palisade_auth as auth;
#[cfg(feature = "config")]
pub use palisade_config as config;
pub use palisade_core as core;
#[cfg(feature = "fs")]
pub use palisade_fs as fs;
#[cfg(feature = "http")]
pub use palisade_http as http;
#[cfg(feature = "ratelimit")]
pub use palisade_ratelimit as ratelimit;
#[cfg(feature = "resilience")]
pub use palisade_resilience as resilience;
#[cfg(feature = "ratelimit")]
pub use palisade_store as store;
#[cfg(feature = "http")]
pub use palisade_telemetry as telemetry;

#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "serve")]
pub use serve::serve;
#[cfg(feature = "http")]
pub mod stack;

/// The names most services need.
pub mod prelude {
    pub use palisade_core::{
        ClientIp, ClientIpResolver, ConfigError, FieldError, ProblemDetails, ProblemType, RequestId,
    };
    #[cfg(feature = "axum")]
    pub use palisade_http::ValidatedJson;
    #[cfg(feature = "http")]
    pub use palisade_http::{
        BodyLimitLayer, CatchPanicLayer, Cors, CrossOriginProtection, CspNonce, IpAllowlist,
        SecurityHeaders, Timeout,
    };

    #[cfg(feature = "http")]
    pub use palisade_telemetry::{AccessLogLayer, RequestIdLayer};

    #[cfg(feature = "http")]
    pub use palisade_telemetry::{Metrics, Readiness};

    #[cfg(feature = "ratelimit")]
    pub use palisade_ratelimit::{ClientConcurrencyLayer, KeyBy, Policy, RateLimit};
    #[cfg(feature = "ratelimit")]
    pub use palisade_store::{FailPolicy, MemoryStore, Quota, Store};

    #[cfg(all(feature = "auth", feature = "axum"))]
    pub use palisade_auth::AuthUser;
    #[cfg(feature = "auth")]
    pub use palisade_auth::{
        AuthLayer, Hasher, Jwt, JwtConfig, Lockout, LockoutPolicy, Login, LoginError,
        PasswordPolicy, Revocations, SessionError, Sessions, UserDirectory,
    };

    #[cfg(feature = "fs")]
    pub use palisade_fs::{FsError, SafePath, SafeRoot, UploadPolicy};

    #[cfg(feature = "config")]
    pub use palisade_config::{Loader, Profile, SecretString};
    #[cfg(feature = "resilience")]
    pub use palisade_resilience::{CircuitBreaker, Outbound, supervisor::Supervisor};

    #[cfg(feature = "serve")]
    pub use crate::serve::{Server, serve};
    #[cfg(feature = "http")]
    pub use crate::stack::{SecureLayer, SecureStack};
}

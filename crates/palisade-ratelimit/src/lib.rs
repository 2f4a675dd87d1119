//! GCRA rate limiting for tower and axum services, over [`palisade_store`].
//!
//! - [`Policy`]: a named [`Quota`](palisade_store::Quota) (rate + burst),
//!   what it counts by ([`KeyBy`]: client IP, user, route, header, JSON body
//!   field, closures, composites), where it applies (routes, methods), its
//!   fail policy, headers on or off, dry-run, bypass lists. A JSON-field key
//!   refuses (400) a body it cannot read its field from, so a per-account
//!   limit cannot be skipped with `{"email": 1}`; see
//!   [`key`](crate::key#when-a-source-has-no-value) for every source.
//! - [`RateLimitLayer`]: all applicable policies decided in **one** store
//!   call, all or nothing; 429 problem+json with `Retry-After`; IETF
//!   `RateLimit`/`RateLimit-Policy` headers describing the GCRA bucket
//!   (`q` = burst, so `r ≤ q`); 503 when a fail-closed policy
//!   cannot reach its store; metrics by policy and outcome; one WARN line per
//!   rejection burst.
//! - [`ClientConcurrencyLayer`]: at most N requests in flight per client.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_ratelimit::{ClientConcurrencyLayer, KeyBy, Policy, RateLimit};
//! use palisade_store::{MemoryStore, Quota, Store};
//!
//! let store = Store::memory(MemoryStore::default());
//! let limits = RateLimit::new(store)
//!     .policy(Policy::new("global", Quota::per_second(30).with_burst(50)))
//!     .policy(Policy::new("api", Quota::per_minute(100)).key(KeyBy::user()))
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hi" }))
//!     .layer(limits)
//!     .layer(ClientConcurrencyLayer::new(32));
//! # let _ = app;
//! ```

pub mod concurrency;
pub mod key;
pub mod layer;
pub mod policy;

pub use concurrency::ClientConcurrencyLayer;
pub use key::KeyBy;
pub use layer::{RATELIMIT, RATELIMIT_POLICY, RateLimit, RateLimitLayer, RateLimitService};
pub use palisade_core::normalize_identifier;
pub use policy::Policy;

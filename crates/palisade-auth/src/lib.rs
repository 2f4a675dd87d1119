//! Authentication for Palisade services: the login endpoint audits keep
//! finding open, closed — as flows a service calls, not glue it copies.
//!
//! # Add login to your service
//!
//! Implement [`UserDirectory`] over your users table; [`Login`] does the
//! rest (lockout, dummy hash, rehash) and [`Sessions`] the tokens. The
//! outcomes are responses (`axum` feature), with the contract's problems.
//!
//! ```
//! use axum::{Json, Router, extract::State, response::IntoResponse, routing::post};
//! use palisade_auth::{Login, LoginError, Sessions, StorageError, StoredUser, UserDirectory};
//! use palisade_auth::{MemoryRefreshStore, SessionError};
//! use palisade_core::ClientIp;
//! use secrecy::SecretString;
//!
//! struct Users; // your table: find by (normalised) identifier or id, update a hash
//! impl UserDirectory for Users {
//!     async fn find(&self, _identifier: &str) -> Result<Option<StoredUser>, StorageError> { Ok(None) }
//!     async fn find_by_id(&self, _id: &str) -> Result<Option<StoredUser>, StorageError> { Ok(None) }
//!     async fn set_password_hash(&self, _id: &str, _phc: &str) -> Result<(), StorageError> { Ok(()) }
//! }
//!
//! #[derive(Clone)]
//! struct Auth { login: Login<Users>, sessions: Sessions<MemoryRefreshStore> }
//!
//! #[derive(serde::Deserialize)]
//! struct Form { email: String, password: SecretString }
//!
//! async fn login(State(auth): State<Auth>, client: ClientIp, Json(form): Json<Form>)
//!     -> Result<impl IntoResponse, axum::response::Response> {
//!     let user = auth.login.attempt(&form.email, &form.password, &client).await
//!         .map_err(LoginError::into_response)?; // 401, 429 locked, 503 busy
//!     auth.sessions.issue(user.id()).await.map_err(SessionError::into_response)
//! }
//!
//! # fn build() -> Auth {
//! #     use palisade_auth::{Hasher, Jwt, JwtConfig, Lockout, LockoutPolicy, Revocations};
//! #     use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
//! #     let store = palisade_store::Store::memory(palisade_store::MemoryStore::default());
//! #     let key = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
//! #     let jwt = std::sync::Arc::new(Jwt::new(KeyRing::new(key), JwtConfig::new("iss", "aud")).unwrap());
//! #     let revocations = Revocations::new(store.clone(), jwt.access_ttl());
//! #     let hasher = Hasher::builder().params(palisade_auth::HashParams::new(1024, 1, 1)).build().unwrap();
//! #     Auth {
//! #         login: Login::new(Users, hasher, Lockout::new(store, LockoutPolicy::default())),
//! #         sessions: Sessions::new(MemoryRefreshStore::default(), jwt, revocations),
//! #     }
//! # }
//! let app: Router = Router::new().route("/auth/login", post(login)).with_state(build());
//! # let _ = app;
//! ```
//!
//! Refresh, logout, "log out everywhere" and password changes are one call
//! each: [`Sessions::refresh`], [`Sessions::logout`], [`Sessions::end_all`],
//! [`Login::change_password`]. The reference backend
//! (`examples/reference-backend/src/auth.rs`) wires all of them.
//!
//! # The modules
//!
//! - [`login`]: the login flow over a [`UserDirectory`]: shed, reserve,
//!   verify (or the dummy), settle, rehash; no path leaks a lockout slot.
//! - [`session`]: token pairs, rotation in one atomic store operation, reuse
//!   detection with a grace window, logout, ending sessions; memory and
//!   SQLite (`sqlite` feature) refresh-token stores.
//! - [`password`]: the password policy (NIST SP 800-63B rev 4) with a bundled
//!   blocklist of 197,545 common and breached passwords.
//! - [`hash`]: argon2id on a bounded pool of dedicated threads (queue bounded
//!   by time), NFKC, a ceiling on stored parameters, pepper, rehash, a dummy
//!   hash for unknown accounts.
//! - [`lockout`]: account lockout over the shared store, reserve-then-settle.
//! - `pwned` (feature `pwned`): the breached-password check against a
//!   k-anonymity range API, behind a deadline and a circuit breaker, failing
//!   open.
//! - [`jwt`]: access tokens, refresh tokens, revocations.
//! - [`layer`]: the authenticating layer and the `AuthUser` extractor.
//!
//! # Performance (2-core VM, release; `benches/README.md`)
//!
//! | what | measured |
//! | --- | --- |
//! | one argon2id hash, OWASP parameters | ~15 ms |
//! | password checks per second, 200 concurrent logins (2 hashing threads) | 130 |
//! | login, unknown account vs wrong password (medians) | 16.62 vs 16.66 ms (0.997) |
//! | resident memory above idle under a 200-client login flood | +14.6 MiB (budget 38) |
//! | `/health` p99, 200 concurrent logins honouring `Retry-After` | 1.99 ms |
//! | `/health` p99, 200 clients retrying at once (bare-axum control: 8.18 ms) | 3.48 ms |
//! | blocklist lookup | < 1 µs |
//!
//! # Example
//!
//! ```
//! use palisade_auth::password::PasswordPolicy;
//!
//! let policy = PasswordPolicy::default();
//! assert!(policy.check("correct horse battery staple", &[]).is_ok());
//! assert_eq!(policy.check("Password1", &[]).unwrap_err()[0].code, "too_common");
//! ```

pub mod hash;
#[cfg(feature = "sessions")]
pub mod jwt;
#[cfg(feature = "sessions")]
pub mod layer;
pub mod lockout;
#[cfg(feature = "sessions")]
pub mod login;
pub mod password;
#[cfg(feature = "pwned")]
pub mod pwned;
#[cfg(feature = "sessions")]
pub mod session;

pub use hash::{HashError, HashParams, Hasher};
#[cfg(feature = "sessions")]
pub use jwt::{Claims, Jwt, JwtConfig, Revocations};
#[cfg(feature = "sessions")]
pub use layer::{AuthLayer, AuthUser};
pub use lockout::{Lockout, LockoutPolicy};
#[cfg(feature = "sessions")]
pub use login::{LoggedIn, Login, LoginError, PasswordError, StoredUser, UserDirectory};
pub use password::PasswordPolicy;
#[cfg(feature = "sessions")]
pub use session::{MemoryRefreshStore, RefreshStore, SessionError, Sessions, TokenPair};

/// A user or refresh-token store failed (a database error). It is logged,
/// never sent to clients; implementations must not put secrets in it.
///
/// An error made with [`StorageError::unavailable`] says the database could
/// not be reached or did not answer in time (connection refused, pool
/// exhausted, statement timeout): the flows answer 503 with `Retry-After`
/// instead of 500. With the `sqlite` or `postgres` feature, `From<sqlx::Error>`
/// sorts sqlx's errors that way.
#[derive(Debug, thiserror::Error)]
#[error("storage: {source}")]
pub struct StorageError {
    source: Box<dyn std::error::Error + Send + Sync>,
    unavailable: bool,
}

impl StorageError {
    /// Wraps the store's own error: a failure (500).
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: error.into(),
            unavailable: false,
        }
    }

    /// Wraps an error that says the database is down or overloaded: the
    /// request may succeed later (503).
    pub fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            source: error.into(),
            unavailable: true,
        }
    }

    /// Whether the database was unreachable or too slow, rather than failing.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

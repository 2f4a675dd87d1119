//! Authentication for Palisade services: the login endpoint audits keep
//! finding open, closed.
//!
//! - [`password`]: the password policy (NIST SP 800-63B rev 4) with a bundled
//!   blocklist of 197,545 common and breached passwords.
//! - [`hash`]: argon2id on a bounded pool of dedicated threads, a ceiling on
//!   stored parameters, pepper, rehash, a dummy hash for unknown accounts.
//! - [`lockout`]: account lockout over the shared store, reserve-then-settle.
//! - [`jwt`]: access tokens, refresh tokens, revocations.
//! - [`layer`]: the authenticating layer and the `AuthUser` extractor.
//!
//! The reference backend (`examples/reference-backend/src/auth.rs`) shows a
//! login handler using all of them: rate limit → lockout reservation →
//! verify (or verify the dummy) → settle → rehash → tokens.
//!
//! # Performance (2-core VM, release; `benches/README.md`)
//!
//! | what | measured |
//! | --- | --- |
//! | one argon2id hash, OWASP parameters | ~15 ms |
//! | password checks per second, 200 concurrent logins (2 hashing threads) | 132 |
//! | login, unknown account vs wrong password (medians) | 13.06 vs 13.12 ms (0.995) |
//! | resident memory above idle under a 200-client login flood | +10 to +24 MiB (budget 38) |
//! | `/health` p99, 200 concurrent logins honouring `Retry-After` | 3.62 ms |
//! | `/health` p99, 200 clients retrying at once (bare-axum control: 15.1 ms) | 20.4 ms |
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
pub mod jwt;
pub mod layer;
pub mod lockout;
pub mod login;
pub mod password;
pub mod session;

pub use hash::{HashError, HashParams, Hasher};
pub use jwt::{Claims, Jwt, JwtConfig, Revocations};
pub use layer::{AuthLayer, AuthUser};
pub use lockout::{Lockout, LockoutPolicy};
pub use login::{LoggedIn, Login, LoginError, PasswordError, StoredUser, UserDirectory};
pub use password::PasswordPolicy;
pub use session::{MemoryRefreshStore, RefreshStore, SessionError, Sessions, TokenPair};

/// A user or refresh-token store failed (a database error). It is logged,
/// never sent to clients; implementations must not put secrets in it.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(Box<dyn std::error::Error + Send + Sync>);

impl StorageError {
    /// Wraps the store's own error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

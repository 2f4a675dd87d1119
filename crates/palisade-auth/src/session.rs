//! Sessions: token pairs, refresh-token rotation with reuse detection,
//! logout, "log out everywhere", over a [`RefreshStore`].
//!
//! A login starts a **family**: an access token (a short-lived JWT) and a
//! refresh token (256 random bits, stored as SHA-256). Each refresh spends the
//! presented token and stores its successor in **one atomic operation** of
//! the store ([`RefreshStore::rotate`]), which fails when the family is
//! revoked — the family's revocation is persistent and checked inside that
//! same operation. So no interleaving of refresh, replay and logout leaves a
//! live token:
//!
//! - **Logout** revokes the family in the store *first*, then marks the
//!   access token and the family as revoked in the shared [`Revocations`]. A
//!   rotation that committed before the revocation minted its access token
//!   with a time taken *before* it committed, so that token expires before
//!   the family mark does; a rotation after it fails.
//! - **Reuse**: a spent token presented again within the grace window
//!   (default 10 s: two tabs refreshing at once) is refused without revoking;
//!   after it, the family is revoked inside the rotation and then marked — a
//!   stolen token was replayed, or the client is broken. An audit line
//!   (`palisade::audit`, `event = "refresh_reuse"`) names the user.
//! - **End every session** ([`Sessions::end_all`]): every family of the user
//!   revoked, then every access token issued until now refused
//!   ([`Revocations::end_sessions`]). **End the others**
//!   ([`Sessions::end_others`], after a password change): every other family
//!   revoked and marked; the caller's own session goes on.
//! - [`Sessions::prune`] deletes expired tokens and families with none left.
//!
//! Stores: [`MemoryRefreshStore`] (one process, tests), with the `sqlite`
//! feature [`SqliteRefreshStore`](sqlite::SqliteRefreshStore), and with the
//! `postgres` feature [`PostgresRefreshStore`](postgres::PostgresRefreshStore)
//! (several instances sharing one database). The trait is
//! small enough to implement over any database that has transactions.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use palisade_auth::jwt::{Jwt, JwtConfig, Revocations};
//! use palisade_auth::session::{MemoryRefreshStore, SessionError, Sessions};
//! use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
//! use palisade_store::{MemoryStore, Store};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let key = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
//! let jwt = Arc::new(Jwt::new(KeyRing::new(key), JwtConfig::new("https://id.example", "api")).unwrap());
//! let revocations = Revocations::new(Store::memory(MemoryStore::default()), jwt.access_ttl());
//! let sessions = Sessions::new(MemoryRefreshStore::default(), jwt.clone(), revocations.clone());
//!
//! let pair = sessions.issue("user-1").await.unwrap();
//! let next = sessions.refresh(pair.refresh_token()).await.unwrap();
//! // The first refresh token is spent.
//! assert!(matches!(sessions.refresh(pair.refresh_token()).await, Err(SessionError::Invalid)));
//! // Logout: the access token and its whole family stop working.
//! let claims = jwt.verify(next.access_token()).unwrap();
//! sessions.logout(&claims).await.unwrap();
//! assert!(revocations.is_revoked(&claims).await.unwrap());
//! assert!(matches!(sessions.refresh(next.refresh_token()).await, Err(SessionError::Invalid)));
//! # });
//! ```

mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_store::StoreError;

use crate::StorageError;
use crate::jwt::{Claims, IssuedToken, Jwt, RefreshToken, Revocations, random_id};

pub use memory::MemoryRefreshStore;

/// How long a refresh token lives by default: 14 days.
pub const REFRESH_TTL: Duration = Duration::from_secs(14 * 86_400);
/// The default reuse grace window: 10 s.
pub const REUSE_GRACE: Duration = Duration::from_secs(10);
/// The longest refresh token accepted from a client (ours are 43 bytes).
const MAX_PRESENTED: usize = 128;

/// A refresh token to store: its SHA-256 and its times (UNIX seconds).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NewToken {
    /// The SHA-256 of the token.
    pub hash: [u8; 32],
    /// When it was issued.
    pub issued_at: u64,
    /// When it stops being accepted.
    pub expires_at: u64,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What [`RefreshStore::rotate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is spent and its successor stored.
    Rotated {
        /// The user of the family.
        user_id: String,
        /// The family.
        family: String,
    },
    /// Unknown, expired, or of a revoked family: nothing changed.
    Refused,
    /// Spent within the grace window: refused, the family left alone.
    SpentWithinGrace,
    /// Spent before the grace window: the family is now revoked.
    Reused {
        /// The user of the family.
        user_id: String,
        /// The family, revoked.
        family: String,
    },
}

/// What a rotation does with the token it found: the one rule every
/// [`RefreshStore`] of this crate applies inside its atomic operation, so the
/// stores cannot drift apart on the grace window or on expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A revoked family or an expired token: refuse, change nothing.
    Refuse,
    /// Spent within the grace window: refuse, leave the family alone.
    WithinGrace,
    /// Spent before the grace window: revoke the family.
    RevokeFamily,
    /// Live: spend it and store the successor.
    Rotate,
}

impl Step {
    /// The step for a found token (times in seconds since the epoch; the
    /// stores keep them as `u64` or SQL's `i64`, both widened losslessly).
    pub(crate) fn of(
        family_revoked: bool,
        spent_at: Option<i128>,
        expires_at: i128,
        now: i128,
        grace: Duration,
    ) -> Self {
        if family_revoked {
            return Self::Refuse;
        }
        if let Some(spent) = spent_at {
            return if now - spent <= i128::from(grace.as_secs()) {
                Self::WithinGrace
            } else {
                Self::RevokeFamily
            };
        }
        if expires_at <= now {
            Self::Refuse
        } else {
            Self::Rotate
        }
    }
}

/// Where refresh tokens and families live. Implementations must make
/// [`rotate`](RefreshStore::rotate) one atomic operation with the family's
/// revocation checked inside it, and keep revocations persistent.
pub trait RefreshStore: Send + Sync + 'static {
    /// Stores the first token of a new `family` of `user_id` (a login).
    fn create(
        &self,
        family: &str,
        user_id: &str,
        first: NewToken,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// In one atomic operation: finds the token whose hash is `presented`;
    /// refuses it when unknown, expired (`expires_at <= successor.issued_at`)
    /// or of a revoked family; when already spent, refuses it and — if it was
    /// spent more than `grace` before `successor.issued_at` — revokes its
    /// family; otherwise marks it spent at `successor.issued_at` and stores
    /// `successor` in the same family.
    fn rotate(
        &self,
        presented: [u8; 32],
        successor: NewToken,
        grace: Duration,
    ) -> impl Future<Output = Result<Rotation, StorageError>> + Send;

    /// Revokes a family, persistently: none of its tokens rotates again.
    fn revoke_family(&self, family: &str) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Revokes every family of `user_id` not yet revoked, except `keep`;
    /// returns the families it revoked.
    fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;

    /// Deletes tokens expired at `now` (UNIX seconds) and families left with
    /// no token; returns how many tokens it deleted.
    fn prune(&self, now: u64) -> impl Future<Output = Result<u64, StorageError>> + Send;
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The refresh token is unknown, expired, spent or revoked: 401.
    #[error("invalid credentials")]
    Invalid,
    /// The shared revocation store is unreachable: 503 (fail closed).
    #[error("the revocation store is unavailable")]
    Unavailable(#[source] StoreError),
    /// The refresh-token store failed: 500.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No randomness, or a token could not be signed: 500.
    #[error("could not issue a token")]
    Issue,
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e)
    }
}

/// An access token and a refresh token. `Debug` shows neither.
pub struct TokenPair {
    access: IssuedToken,
    refresh: RefreshToken,
}

impl TokenPair {
    /// The access token (a JWT).
    pub fn access_token(&self) -> &str {
        self.access.token()
    }

    /// The claims of the access token.
    pub fn claims(&self) -> &Claims {
        self.access.claims()
    }

    /// The refresh token, to hand to the client once.
    pub fn refresh_token(&self) -> &str {
        self.refresh.as_str()
    }

    /// The token response body (RFC 6749 §5.1): `access_token`,
    /// `token_type`, `expires_in`, `refresh_token`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "access_token": self.access.token(),
            "token_type": "Bearer",
            "expires_in": self.access.expires_in().as_secs(),
            "refresh_token": self.refresh.as_str(),
        })
    }
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("claims", self.access.claims())
            .finish_non_exhaustive()
    }
}

/// Issues, rotates and ends sessions. Cheap to clone.
pub struct Sessions<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: S,
    jwt: Arc<Jwt>,
    revocations: Revocations,
    refresh_ttl: Duration,
    grace: Duration,
}

impl<S> Clone for Sessions<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for Sessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("refresh_ttl", &self.inner.refresh_ttl)
            .field("grace", &self.inner.grace)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: StoreError) -> SessionError {
    tracing::warn!(error = %e, "the revocation store is unavailable");
    SessionError::Unavailable(e)
}

fn storage(e: StorageError) -> SessionError {
    tracing::error!(error = %e, "the refresh-token store failed");
    SessionError::Storage(e)
}

impl<S: RefreshStore> Sessions<S> {
    /// Sessions over `store`, access tokens from `jwt` (whose clock times
    /// everything), revocations in `revocations`; refresh tokens live
    /// [`REFRESH_TTL`], reuse grace [`REUSE_GRACE`].
    pub fn new(store: S, jwt: Arc<Jwt>, revocations: Revocations) -> Self {
        Self::with_lifetimes(store, jwt, revocations, REFRESH_TTL, REUSE_GRACE)
    }

    /// Like [`Sessions::new`] with other lifetimes: refresh tokens live
    /// `refresh_ttl`; a spent token presented again within `grace` is refused
    /// without revoking its family.
    pub fn with_lifetimes(
        store: S,
        jwt: Arc<Jwt>,
        revocations: Revocations,
        refresh_ttl: Duration,
        grace: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                jwt,
                revocations,
                refresh_ttl,
                grace,
            }),
        }
    }

    /// The refresh-token store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The access-token issuer and verifier.
    pub fn jwt(&self) -> &Arc<Jwt> {
        &self.inner.jwt
    }

    /// The shared revocations.
    pub fn revocations(&self) -> &Revocations {
        &self.inner.revocations
    }

    fn new_token(&self, now: u64) -> Result<(RefreshToken, NewToken), SessionError> {
        let token = RefreshToken::generate().map_err(|_| SessionError::Issue)?;
        let stored = NewToken {
            hash: token.hash(),
            issued_at: now,
            expires_at: now.saturating_add(self.inner.refresh_ttl.as_secs()),
        };
        Ok((token, stored))
    }

    /// Starts a session (a new family) for `user_id`: after a login.
    pub async fn issue(&self, user_id: &str) -> Result<TokenPair, SessionError> {
        let now = self.inner.jwt.unix_now();
        let family = random_id().map_err(|_| SessionError::Issue)?;
        let (refresh, first) = self.new_token(now)?;
        let access = self
            .inner
            .jwt
            .issue_at(user_id, &family, now)
            .map_err(|_| SessionError::Issue)?;
        self.inner
            .store
            .create(&family, user_id, first)
            .await
            .map_err(storage)?;
        Ok(TokenPair { access, refresh })
    }

    /// Rotates a refresh token: a new pair, the presented token spent.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, SessionError> {
        if presented.is_empty() || presented.len() > MAX_PRESENTED {
            return Err(SessionError::Invalid);
        }
        // The time is taken before the rotation commits: the access token
        // minted below cannot outlive a revocation that follows the commit.
        let now = self.inner.jwt.unix_now();
        let (refresh, successor) = self.new_token(now)?;
        let rotation = self
            .inner
            .store
            .rotate(
                RefreshToken::hash_presented(presented),
                successor,
                self.inner.grace,
            )
            .await
            .map_err(storage)?;
        match rotation {
            Rotation::Rotated { user_id, family } => {
                let access = self
                    .inner
                    .jwt
                    .issue_at(&user_id, &family, now)
                    .map_err(|_| SessionError::Issue)?;
                Ok(TokenPair { access, refresh })
            }
            Rotation::Refused | Rotation::SpentWithinGrace => Err(SessionError::Invalid),
            Rotation::Reused { user_id, family } => {
                tracing::warn!(
                    target: "palisade::audit",
                    event = "refresh_reuse",
                    user_id = %user_id,
                    "a spent refresh token was presented again; its family is revoked"
                );
                self.inner
                    .revocations
                    .revoke_family(&family)
                    .await
                    .map_err(unavailable)?;
                Err(SessionError::Invalid)
            }
        }
    }

    /// Logout: the access token of `claims` and its whole family stop
    /// working, on every instance.
    pub async fn logout(&self, claims: &Claims) -> Result<(), SessionError> {
        // The persistent revocation first: a rotation racing this call either
        // fails, or minted its token before this line (see the module docs).
        self.inner
            .store
            .revoke_family(&claims.fam)
            .await
            .map_err(storage)?;
        self.inner
            .revocations
            .revoke_session(claims, self.inner.jwt.unix_now())
            .await
            .map_err(unavailable)
    }

    /// Ends every session of `user_id` on every instance: every refresh
    /// family revoked, every access token issued until now refused.
    ///
    /// Token times have a one-second resolution: a login in the same second
    /// after this call gets a token that is refused too.
    pub async fn end_all(&self, user_id: &str) -> Result<(), SessionError> {
        self.inner
            .store
            .revoke_user(user_id, None)
            .await
            .map_err(storage)?;
        self.inner
            .revocations
            .end_sessions(user_id, self.inner.jwt.unix_now())
            .await
            .map_err(unavailable)
    }

    /// Ends every session of the user of `claims` except that one (after a
    /// password change): the other families revoked and marked.
    pub async fn end_others(&self, claims: &Claims) -> Result<(), SessionError> {
        let families = self
            .inner
            .store
            .revoke_user(&claims.sub, Some(&claims.fam))
            .await
            .map_err(storage)?;
        for family in &families {
            self.inner
                .revocations
                .revoke_family(family)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Deletes expired refresh tokens and empty families; returns how many
    /// tokens went. Run it periodically.
    pub async fn prune(&self) -> Result<u64, SessionError> {
        self.inner
            .store
            .prune(self.inner.jwt.unix_now())
            .await
            .map_err(storage)
    }
}

mod response {
    #[cfg(feature = "axum")]
    use axum::Json;
    #[cfg(feature = "axum")]
    use axum::response::{IntoResponse, Response};
    use palisade_core::{ProblemDetails, ProblemType};

    use super::SessionError;
    #[cfg(feature = "axum")]
    use super::TokenPair;

    impl SessionError {
        /// The problem document of the contract: 401 `invalid credentials`,
        /// 503 with `Retry-After` when the revocation store or the database
        /// is down, 500 otherwise (no detail of the failure).
        pub fn problem(&self) -> ProblemDetails {
            match self {
                Self::Invalid => ProblemDetails::new(ProblemType::UNAUTHORIZED)
                    .with_detail("invalid credentials"),
                Self::Unavailable(_) => ProblemDetails::new(ProblemType::UNAVAILABLE)
                    .with_detail("the service is busy; retry shortly")
                    .with_retry_after(1),
                Self::Storage(e) if e.is_unavailable() => {
                    ProblemDetails::new(ProblemType::UNAVAILABLE)
                        .with_detail("the service is busy; retry shortly")
                        .with_retry_after(1)
                }
                Self::Storage(_) | Self::Issue => {
                    ProblemDetails::new(ProblemType::INTERNAL).with_detail("internal error")
                }
            }
        }
    }

    impl From<SessionError> for ProblemDetails {
        fn from(e: SessionError) -> Self {
            e.problem()
        }
    }

    #[cfg(feature = "axum")]
    impl IntoResponse for SessionError {
        fn into_response(self) -> Response {
            self.problem().into_response()
        }
    }

    #[cfg(feature = "axum")]
    impl IntoResponse for TokenPair {
        fn into_response(self) -> Response {
            Json(self.to_json()).into_response()
        }
    }
}

#[cfg(test)]
mod step_tests {
    use super::Step;
    use std::time::Duration;

    #[test]
    fn the_rotation_rule_at_its_edges() {
        let grace = Duration::from_secs(10);
        let of = |revoked, spent, expires, now| Step::of(revoked, spent, expires, now, grace);
        // A revoked family refuses whatever the token's state.
        assert_eq!(of(true, None, 200, 100), Step::Refuse);
        assert_eq!(of(true, Some(95), 200, 100), Step::Refuse);
        // Spent: within the grace window (its last second included), then reuse.
        assert_eq!(of(false, Some(90), 200, 100), Step::WithinGrace);
        assert_eq!(of(false, Some(89), 200, 100), Step::RevokeFamily);
        // A spent token is judged by the grace window even once expired.
        assert_eq!(of(false, Some(10), 50, 100), Step::RevokeFamily);
        // Live until its expiry second, refused from it on.
        assert_eq!(of(false, None, 101, 100), Step::Rotate);
        assert_eq!(of(false, None, 100, 100), Step::Refuse);
    }
}

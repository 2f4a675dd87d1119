//! [`Login`]: the login flow — and password changes and new passwords — over
//! a [`UserDirectory`] the service implements.
//!
//! [`Login::attempt`] does, in order: normalise the identifier
//! ([`normalize_identifier`]); shed the attempt when the hashing pool could
//! not take it within its queue timeout (503, nothing reserved, nothing
//! read); reserve a lockout slot (429 when locked); look the user up; verify
//! the password, or the dummy hash when there is no such user (same work,
//! same answer); settle the slot; rehash a hash weaker than the policy or
//! stored from a non-NFKC password.
//!
//! **No path leaks a lockout slot.** The slot is held by a guard: every
//! early return settles it, and when the future is dropped (the client went
//! away, a timeout fired) before the password was checked, the guard gives
//! the slot back (`Cancelled`) on a task of its own. Store calls run on
//! spawned tasks, so a drop in the middle of one cannot lose its effect
//! either. A cancelled attempt counts nothing, and tells its client nothing.
//!
//! # Example
//!
//! ```
//! use palisade_auth::hash::{HashParams, Hasher};
//! use palisade_auth::lockout::{Lockout, LockoutPolicy};
//! use palisade_auth::login::{Login, LoginError, StoredUser, UserDirectory};
//! use palisade_auth::StorageError;
//! use palisade_core::ClientIpResolver;
//! use palisade_store::{MemoryStore, Store};
//! use secrecy::SecretString;
//!
//! /// The service's users: here one, in memory.
//! struct Users(StoredUser);
//!
//! impl UserDirectory for Users {
//!     async fn find(&self, identifier: &str) -> Result<Option<StoredUser>, StorageError> {
//!         Ok((self.0.identifier == identifier).then(|| self.0.clone()))
//!     }
//!     async fn find_by_id(&self, id: &str) -> Result<Option<StoredUser>, StorageError> {
//!         Ok((self.0.id == id).then(|| self.0.clone()))
//!     }
//!     async fn set_password_hash(&self, _id: &str, _phc: &str) -> Result<(), StorageError> {
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let hasher = Hasher::builder().params(HashParams::new(1024, 1, 1)).build().unwrap();
//! let lockout = Lockout::new(Store::memory(MemoryStore::default()), LockoutPolicy::default());
//! let phc = hasher.hash(&SecretString::from("correct horse battery staple")).await.unwrap();
//! let users = Users(StoredUser::new("u1", "bob@example.com", phc));
//! let login = Login::new(users, hasher, lockout);
//! let client = ClientIpResolver::default().resolve([198, 51, 100, 7].into(), &Default::default()).unwrap();
//!
//! let ok = login.attempt(" Bob@Example.com", &SecretString::from("correct horse battery staple"), &client).await;
//! assert_eq!(ok.unwrap().id(), "u1");
//! let wrong = login.attempt("bob@example.com", &SecretString::from("guess"), &client).await;
//! assert!(matches!(wrong, Err(LoginError::InvalidCredentials)));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ClientIp, normalize_identifier};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use crate::StorageError;
use crate::hash::{HashError, Hasher, Verdict};
use crate::jwt::Claims;
use crate::lockout::{Attempt, Lockout, LockoutError, Settlement};
use crate::password::{PasswordPolicy, Violation};
use crate::session::{RefreshStore, SessionError, Sessions};

/// A user as the directory stores it. `Debug` hides the hash.
#[derive(Clone)]
pub struct StoredUser {
    /// The user id (the `sub` of its tokens).
    pub id: String,
    /// The normalised login identifier (e.g. the email address).
    pub identifier: String,
    /// The PHC string of the password hash.
    pub password_hash: String,
}

impl StoredUser {
    /// A user record.
    pub fn new(
        id: impl Into<String>,
        identifier: impl Into<String>,
        password_hash: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            identifier: identifier.into(),
            password_hash: password_hash.into(),
        }
    }
}

impl fmt::Debug for StoredUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredUser")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The service's users, as the login flow needs them. Identifiers are
/// passed normalised ([`normalize_identifier`]); store them normalised.
pub trait UserDirectory: Send + Sync + 'static {
    /// The user with this (normalised) identifier.
    fn find(
        &self,
        identifier: &str,
    ) -> impl Future<Output = Result<Option<StoredUser>, StorageError>> + Send;

    /// The user with this id.
    fn find_by_id(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredUser>, StorageError>> + Send;

    /// Replaces the user's password hash (rehash, password change).
    fn set_password_hash(
        &self,
        id: &str,
        phc: &str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// A successful login.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    id: String,
    identifier: String,
}

impl LoggedIn {
    /// The user id: start a session with it ([`Sessions::issue`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The normalised identifier.
    pub fn identifier(&self) -> &str {
        &self.identifier
    }
}

/// Why a login (or the current-password check of a password change) did
/// not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// Wrong password or no such account (indistinguishable): 401.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Locked out: 429 with `Retry-After`.
    #[error("locked out")]
    Locked {
        /// How long until an attempt can be made.
        retry_after: Duration,
    },
    /// The hashing pool cannot take the attempt within its queue timeout:
    /// 503 with `Retry-After`. Nothing was counted.
    #[error("the service is busy")]
    Busy {
        /// The estimated wait.
        retry_after: Duration,
    },
    /// The lockout store is unreachable and fails closed: 503.
    #[error("the lockout store is unavailable")]
    Unavailable,
    /// The user directory failed: 500.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Something that should not happen (a task died): 500.
    #[error("internal error")]
    Internal,
}

/// Why a new password was not set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The current password was not accepted (wrong, locked, busy...).
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The new password breaks the policy: 422 with the violations.
    #[error("the password does not meet the policy")]
    Policy(Vec<Violation>),
    /// Ending the other sessions failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The login flow. Cheap to clone.
pub struct Login<D> {
    inner: Arc<Inner<D>>,
}

struct Inner<D> {
    directory: D,
    hasher: Hasher,
    lockout: Lockout,
    policy: PasswordPolicy,
    #[cfg(feature = "pwned")]
    breach: std::sync::OnceLock<crate::pwned::PwnedCheck>,
}

impl<D> Clone for Login<D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D> fmt::Debug for Login<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("hasher", &self.inner.hasher)
            .field("lockout", &self.inner.lockout.policy())
            .finish_non_exhaustive()
    }
}

impl<D: UserDirectory> Login<D> {
    /// Logins over `directory`, verified by `hasher`, limited by `lockout`;
    /// new passwords checked by [`PasswordPolicy::default`].
    pub fn new(directory: D, hasher: Hasher, lockout: Lockout) -> Self {
        Self::with_policy(directory, hasher, lockout, PasswordPolicy::default())
    }

    /// Like [`Login::new`] with the policy new passwords must meet.
    pub fn with_policy(
        directory: D,
        hasher: Hasher,
        lockout: Lockout,
        policy: PasswordPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                directory,
                hasher,
                lockout,
                policy,
                #[cfg(feature = "pwned")]
                breach: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Also checks new passwords (of [`Login::new_password_hash`] and
    /// [`Login::change_password`]) against a breached-password API, after
    /// the policy: a breached one is refused with the `breached` violation;
    /// when the API cannot answer the password is accepted (see
    /// [`crate::pwned`]). Set it once, when building the flow: a second call
    /// (on this flow or a clone) keeps the first check.
    #[cfg(feature = "pwned")]
    #[must_use]
    pub fn breach_check(self, check: crate::pwned::PwnedCheck) -> Self {
        if self.inner.breach.set(check).is_err() {
            tracing::warn!("Login::breach_check called twice; the first check stays");
        }
        self
    }

    /// The breached-password check, if one was set ([`Login::breach_check`]).
    #[cfg(feature = "pwned")]
    pub fn breach(&self) -> Option<&crate::pwned::PwnedCheck> {
        self.inner.breach.get()
    }

    /// The user directory.
    pub fn directory(&self) -> &D {
        &self.inner.directory
    }

    /// The hashing pool.
    pub fn hasher(&self) -> &Hasher {
        &self.inner.hasher
    }

    /// The lockout.
    pub fn lockout(&self) -> &Lockout {
        &self.inner.lockout
    }

    /// One login attempt by `client` as `identifier` (as typed).
    pub async fn attempt(
        &self,
        identifier: &str,
        password: &SecretString,
        client: &ClientIp,
    ) -> Result<LoggedIn, LoginError> {
        let identifier = normalize_identifier(identifier);
        let user = self
            .verify(Lookup::Identifier(&identifier), password, client)
            .await?;
        Ok(LoggedIn {
            id: user.id,
            identifier,
        })
    }

    /// Checks `password` against the policy (with the identifier's local
    /// part and the policy's words as context, off the async runtime) and
    /// hashes it: the stored form of a new account's password.
    pub async fn new_password_hash(
        &self,
        identifier: &str,
        password: &SecretString,
    ) -> Result<String, PasswordError> {
        let identifier = normalize_identifier(identifier);
        self.check_policy(&identifier, password).await?;
        self.inner
            .hasher
            .hash(password)
            .await
            .map_err(|e| PasswordError::Login(hash_failure(e)))
    }

    /// Changes the password of the user of `claims` (an authenticated
    /// request): the current password is checked like a login (the lockout
    /// counts it), the new one against the policy; then it is stored and
    /// every other session of the user is ended (the caller's goes on).
    pub async fn change_password<S: RefreshStore>(
        &self,
        sessions: &Sessions<S>,
        claims: &Claims,
        current: &SecretString,
        new: &SecretString,
        client: &ClientIp,
    ) -> Result<(), PasswordError> {
        let user = self
            .verify(Lookup::Id(&claims.sub), current, client)
            .await?;
        self.check_policy(&user.identifier, new).await?;
        let phc = self
            .inner
            .hasher
            .hash(new)
            .await
            .map_err(|e| PasswordError::Login(hash_failure(e)))?;
        self.inner
            .directory
            .set_password_hash(&user.id, &phc)
            .await
            .map_err(|e| PasswordError::Login(storage(e)))?;
        sessions.end_others(claims).await?;
        tracing::info!(
            target: "palisade::audit",
            event = "password_changed",
            user_id = %user.id,
            "password changed; the user's other sessions are ended"
        );
        Ok(())
    }

    async fn check_policy(
        &self,
        identifier: &str,
        password: &SecretString,
    ) -> Result<(), PasswordError> {
        let local = identifier.split('@').next().unwrap_or_default().to_owned();
        let policy = self.inner.policy.clone();
        let candidate = password.clone();
        // The strength estimate takes milliseconds: keep it off the runtime.
        tokio::task::spawn_blocking(move || {
            policy.check(candidate.expose_secret(), &[local.as_str()])
        })
        .await
        .map_err(|_| PasswordError::Login(LoginError::Internal))?
        .map_err(PasswordError::Policy)?;
        // Only a password the policy accepts costs a call to the API.
        #[cfg(feature = "pwned")]
        if let Some(check) = self.inner.breach.get()
            && let crate::pwned::Breach::Found(_) = check.check(password).await
        {
            return Err(PasswordError::Policy(vec![Violation::BREACHED]));
        }
        Ok(())
    }

    /// The flow shared by logins and password changes: shed, reserve (keyed
    /// by the user's identifier), look the user up, verify or verify the
    /// dummy, settle, rehash.
    async fn verify(
        &self,
        lookup: Lookup<'_>,
        password: &SecretString,
        client: &ClientIp,
    ) -> Result<StoredUser, LoginError> {
        let hasher = &self.inner.hasher;
        // Shed a flood before it costs a lockout slot or a database read.
        if hasher.saturated() {
            return Err(LoginError::Busy {
                retry_after: hasher.retry_after(),
            });
        }
        let directory = &self.inner.directory;
        let (user, slot) = match lookup {
            Lookup::Identifier(identifier) => {
                let slot = Slot::reserve(&self.inner.lockout, identifier, client).await?;
                (directory.find(identifier).await, slot)
            }
            // A password change knows the id: the lockout is keyed by the
            // identifier either way, so look the user up first.
            Lookup::Id(id) => {
                let Some(user) = directory.find_by_id(id).await.map_err(storage)? else {
                    return Err(LoginError::InvalidCredentials);
                };
                let slot = Slot::reserve(&self.inner.lockout, &user.identifier, client).await?;
                (Ok(Some(user)), slot)
            }
        };
        let user = match user {
            Ok(user) => user,
            Err(e) => {
                slot.settle(Settlement::Cancelled).await;
                return Err(storage(e));
            }
        };
        let verdict = match &user {
            Some(user) => hasher.check(password, &user.password_hash).await,
            // The same work for an account that does not exist.
            None => hasher
                .verify_dummy(password)
                .await
                .map(|()| Verdict::Mismatch),
        };
        let verdict = match verdict {
            Ok(verdict) => verdict,
            Err(HashError::Busy { retry_after }) => {
                // Not checked: give the slots back, count nothing.
                slot.settle(Settlement::Cancelled).await;
                return Err(LoginError::Busy { retry_after });
            }
            Err(HashError::TooLong) => Verdict::Mismatch,
            Err(e) => {
                tracing::error!(error = %e, "a stored password hash could not be verified");
                Verdict::Mismatch
            }
        };
        let (Some(user), true) = (user, verdict.is_match()) else {
            slot.settle(Settlement::Failure).await;
            return Err(LoginError::InvalidCredentials);
        };
        slot.settle(Settlement::Success).await;
        if verdict == Verdict::MatchUnnormalised || hasher.needs_rehash(&user.password_hash) {
            self.rehash(&user, password).await;
        }
        Ok(user)
    }

    /// Best effort: a failure leaves the old hash, which still verifies.
    async fn rehash(&self, user: &StoredUser, password: &SecretString) {
        match self.inner.hasher.hash(password).await {
            Ok(phc) => {
                if let Err(e) = self.inner.directory.set_password_hash(&user.id, &phc).await {
                    tracing::warn!(error = %e, "could not store the rehashed password");
                }
            }
            Err(e) => tracing::debug!(error = %e, "rehash postponed"),
        }
    }
}

/// How [`Login::verify`] finds the user.
enum Lookup<'a> {
    /// A login: by normalised identifier.
    Identifier(&'a str),
    /// A password change: by user id.
    Id(&'a str),
}

fn storage(e: StorageError) -> LoginError {
    tracing::error!(error = %e, "the user directory failed");
    LoginError::Storage(e)
}

fn hash_failure(e: HashError) -> LoginError {
    match e {
        HashError::Busy { retry_after } => LoginError::Busy { retry_after },
        other => {
            tracing::error!(error = %other, "password hashing failed");
            LoginError::Internal
        }
    }
}

/// A reserved lockout slot. Settling consumes it; dropping it unsettled (the
/// login future was dropped) gives the slots back on a task of its own.
struct Slot {
    lockout: Lockout,
    attempt: Option<Attempt>,
}

impl Slot {
    /// Reserves on a spawned task: if the caller is dropped while the store
    /// call is in flight, the reservation still arrives — as a `Slot`, whose
    /// drop gives it back.
    async fn reserve(
        lockout: &Lockout,
        account: &str,
        client: &ClientIp,
    ) -> Result<Self, LoginError> {
        let (tx, rx) = oneshot::channel();
        let task_lockout = lockout.clone();
        let account = account.to_owned();
        let client = client.key();
        tokio::spawn(async move {
            let reserved = task_lockout
                .reserve(&account, client)
                .await
                .map(|attempt| Slot {
                    lockout: task_lockout.clone(),
                    attempt: Some(attempt),
                });
            // A refused send drops the slot: given back.
            let _ = tx.send(reserved);
        });
        match rx.await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(LockoutError::Locked { retry_after })) => {
                Err(LoginError::Locked { retry_after })
            }
            Ok(Err(LockoutError::Unavailable(e))) => {
                tracing::warn!(error = %e, "the lockout store is unavailable");
                Err(LoginError::Unavailable)
            }
            Err(_) => Err(LoginError::Internal),
        }
    }

    /// Settles on a spawned task, so that dropping the caller mid-call
    /// cannot lose the settlement.
    async fn settle(mut self, outcome: Settlement) {
        if let Some(attempt) = self.attempt.take() {
            let lockout = self.lockout.clone();
            let _ = tokio::spawn(async move { lockout.settle(attempt, outcome).await }).await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        let lockout = self.lockout.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { lockout.settle(attempt, Settlement::Cancelled).await });
        } else {
            tracing::error!(
                "a lockout slot was dropped outside a runtime; it stays taken until it expires"
            );
        }
    }
}

mod response {
    #[cfg(feature = "axum")]
    use axum::response::{IntoResponse, Response};
    use palisade_core::{ProblemDetails, ProblemType};

    use super::{LoginError, PasswordError};

    fn seconds(d: std::time::Duration) -> u64 {
        d.as_secs().max(1)
    }

    impl LoginError {
        /// The problem document of the contract: 401 `invalid credentials`,
        /// 429 locked out and 503 busy with `Retry-After`, 503 when the
        /// lockout store or the database is down, 500 otherwise (no detail
        /// of the failure).
        pub fn problem(&self) -> ProblemDetails {
            match self {
                Self::InvalidCredentials => ProblemDetails::new(ProblemType::UNAUTHORIZED)
                    .with_detail("invalid credentials"),
                Self::Locked { retry_after } => ProblemDetails::new(ProblemType::RATE_LIMITED)
                    .with_detail("too many failed logins; retry later")
                    .with_retry_after(seconds(*retry_after)),
                Self::Busy { retry_after } => ProblemDetails::new(ProblemType::UNAVAILABLE)
                    .with_detail("the service is busy; retry shortly")
                    .with_retry_after(seconds(*retry_after)),
                Self::Unavailable => ProblemDetails::new(ProblemType::UNAVAILABLE)
                    .with_detail("the service is busy; retry shortly")
                    .with_retry_after(1),
                Self::Storage(e) if e.is_unavailable() => {
                    ProblemDetails::new(ProblemType::UNAVAILABLE)
                        .with_detail("the service is busy; retry shortly")
                        .with_retry_after(1)
                }
                Self::Storage(_) | Self::Internal => {
                    ProblemDetails::new(ProblemType::INTERNAL).with_detail("internal error")
                }
            }
        }
    }

    impl From<LoginError> for ProblemDetails {
        fn from(e: LoginError) -> Self {
            e.problem()
        }
    }

    #[cfg(feature = "axum")]
    impl IntoResponse for LoginError {
        fn into_response(self) -> Response {
            self.problem().into_response()
        }
    }

    impl PasswordError {
        /// The problem document: the login's for the current password, 422
        /// with one `errors` entry per violation on `field`, the session's.
        pub fn problem(&self, field: &str) -> ProblemDetails {
            match self {
                Self::Login(e) => e.problem(),
                Self::Policy(violations) => violations.iter().fold(
                    ProblemDetails::new(ProblemType::VALIDATION)
                        .with_detail("the password does not meet the policy"),
                    |p, v| p.with_error(v.field_error(field)),
                ),
                Self::Session(e) => e.problem(),
            }
        }
    }
}

//! Account lockout with **reserve-then-settle**, over [`palisade_store`].
//!
//! A login attempt first [`reserves`](Lockout::reserve) a slot — atomically,
//! in one store round trip — on two counters: failures of this (account,
//! client) pair, and failures of the account from anywhere. Only then is the
//! password checked; the attempt is [`settled`](Lockout::settle) after. A
//! failure keeps its slots; a success clears the pair's counter, gives the
//! account slot back and remembers the client as known. Because the slot is
//! taken *before* the check, a burst of parallel guesses gets no more password
//! checks than the limits, on one instance or many sharing Redis.
//!
//! - **Pair lock** (default 5 consecutive failures → 15 min, counted from the
//!   last failure): stops one client guessing one account.
//! - **Account lock** (default 50 failures within an hour → 1 h): stops
//!   distributed guessing. Clients that logged into the account successfully
//!   in the last 30 days are exempt, so an attacker cannot lock the owner out.
//! - Unknown accounts go through exactly the same calls: nothing here reveals
//!   whether an account exists.
//! - Locks and unlocks are audit events: one WARN line on the
//!   `palisade::audit` target (with the request id, the client, and a digest
//!   of the account name rather than the name) and a counter.
//! - [`LockoutPolicy::describe`] prints the policy for documentation
//!   (ASVS 5.0 6.1.1).
//!
//! # Example
//!
//! ```
//! use palisade_auth::lockout::{Lockout, LockoutPolicy, Settlement};
//! use palisade_store::{MemoryStore, Store};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let lockout = Lockout::new(Store::memory(MemoryStore::default()), LockoutPolicy::default());
//! let client: ipnet::IpNet = "198.51.100.7/32".parse().unwrap();
//! let attempt = lockout.reserve("bob@example.com", client).await.unwrap();
//! // ... check the password, then:
//! lockout.settle(attempt, Settlement::Failure).await;
//! assert!(LockoutPolicy::default().describe().contains("15 minutes"));
//! # });
//! ```

use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use palisade_store::{
    FailPolicy, Key, Part, Reservation, Reserve, Settle, Source, Store, StoreError,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

const PAIR: &str = "lock-pair";
const ACCOUNT: &str = "lock-acct";
const KNOWN: &str = "known-client";

/// The thresholds and cool-offs.
#[derive(Clone, Debug)]
#[must_use]
pub struct LockoutPolicy {
    pair_limit: u32,
    pair_lock: Duration,
    account_limit: u32,
    account_window: Duration,
    known_client_for: Duration,
    fail: FailPolicy,
    tag: String,
}

impl Default for LockoutPolicy {
    /// The reference contract: 5 failures per (account, client) → 15 min;
    /// 50 per account per hour → 1 h; known clients remembered 30 days;
    /// fail closed when the store is unreachable.
    fn default() -> Self {
        Self {
            pair_limit: 5,
            pair_lock: Duration::from_secs(15 * 60),
            account_limit: 50,
            account_window: Duration::from_secs(3600),
            known_client_for: Duration::from_secs(30 * 86_400),
            fail: FailPolicy::FailClosed,
            tag: "lockout".to_owned(),
        }
    }
}

impl LockoutPolicy {
    /// Consecutive failures of one (account, client) pair before it is locked
    /// for `lock` (counted from the last failure).
    pub fn per_client(mut self, failures: u32, lock: Duration) -> Self {
        self.pair_limit = failures.max(1);
        self.pair_lock = lock;
        self
    }

    /// Failures of one account from anywhere within `window` before it is
    /// locked until the window has passed since the last failure.
    pub fn per_account(mut self, failures: u32, window: Duration) -> Self {
        self.account_limit = failures.max(1);
        self.account_window = window;
        self
    }

    /// How long a client that logged in stays exempt from the account lock.
    pub fn known_client_for(mut self, d: Duration) -> Self {
        self.known_client_for = d;
        self
    }

    /// What to do when the store is unreachable (default: fail closed).
    pub fn fail(mut self, fail: FailPolicy) -> Self {
        self.fail = fail;
        self
    }

    /// The Redis hash tag of the lockout keys (default `lockout`).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// The policy in words, for documentation and security reviews.
    pub fn describe(&self) -> String {
        format!(
            "After {} consecutive failed logins for one account from one client address, that \
             address is locked out of the account for {} after its last failure; a successful \
             login resets the count. After {} failed logins for one account from any addresses \
             within {}, the account is locked for {} after its last failure, except for addresses \
             that logged into it successfully within the last {}. A slot is reserved before each \
             password check, so parallel attempts get no more checks than these limits. Accounts \
             that do not exist are treated exactly like accounts that do. When the lockout store \
             is unreachable, logins are {}.",
            self.pair_limit,
            words(self.pair_lock),
            self.account_limit,
            words(self.account_window),
            words(self.account_window),
            words(self.known_client_for),
            match self.fail {
                FailPolicy::FailClosed => "refused (503) until it returns",
                FailPolicy::FailOpen => "allowed without lockout",
                FailPolicy::LocalFallback => "limited per instance",
            },
        )
    }
}

fn words(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s.is_multiple_of(86_400) && s >= 86_400 {
        (s / 86_400, "day")
    } else if s.is_multiple_of(3600) && s >= 3600 {
        (s / 3600, "hour")
    } else if s.is_multiple_of(60) && s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Why an attempt may not go on.
#[derive(Debug, thiserror::Error)]
pub enum LockoutError {
    /// Locked out: answer 429 with `Retry-After`.
    #[error("locked out; retry after {} s", retry_after.as_secs())]
    Locked {
        /// How long until an attempt can be made.
        retry_after: Duration,
    },
    /// The store could not decide and the policy fails closed: answer 503.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// A reserved attempt; settle it with [`Lockout::settle`]. Dropping it
/// unsettled counts as a failure (the slots stay taken).
#[must_use = "settle the attempt once the password has been checked"]
pub struct Attempt {
    account: [u8; 32],
    client: IpNet,
    reservation: Reservation,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("client", &self.client)
            .field("source", &self.reservation.source())
            .finish_non_exhaustive()
    }
}

/// How the password check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The password was right.
    Success,
    /// It was wrong (or the account does not exist).
    Failure,
    /// It could not be checked (the hashing pool was busy, the database
    /// failed): the slots are given back and nothing is counted.
    Cancelled,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
    scope: &'static str,
}

/// Account lockout over a store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lockout {
    store: Store,
    policy: LockoutPolicy,
    events: Family<EventLabels, Counter>,
}

/// The key digest of an account name: its normalised form is hashed so the
/// name never appears in the store or in logs.
fn digest(account: &str) -> [u8; 32] {
    Sha256::digest(account.trim().to_lowercase().as_bytes()).into()
}

fn hex8(d: &[u8; 32]) -> String {
    d.iter()
        .take(8)
        .fold(String::with_capacity(16), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Lockout {
    /// Lockout over `store` with `policy`.
    pub fn new(store: Store, policy: LockoutPolicy) -> Self {
        Self {
            store,
            policy,
            events: Family::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Registers `palisade_lockout_events_total{event, scope}`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "palisade_lockout_events",
            "Lockouts and unlocks, by scope (client or account)",
            self.events.clone(),
        );
    }

    /// How many `event`s (`lockout`, `unlock`) of `scope` (`client`,
    /// `account`) happened.
    pub fn events(&self, event: &'static str, scope: &'static str) -> u64 {
        self.events
            .get_or_create(&EventLabels { event, scope })
            .get()
    }

    fn keys(account: &[u8; 32], client: IpNet) -> [Key<'static>; 3] {
        // The digest as a string part would be re-hashed; as two u64 parts it
        // stays compact and exact (128 bits of the digest).
        let (a, b) = split(account);
        let acct = Key::new(ACCOUNT)
            .protected()
            .with(Part::Int(a))
            .with(Part::Int(b));
        let pair = Key::new(PAIR)
            .protected()
            .with(Part::Int(a))
            .with(Part::Int(b))
            .with(Part::Ip(client));
        let known = Key::new(KNOWN)
            .with(Part::Int(a))
            .with(Part::Int(b))
            .with(Part::Ip(client));
        [pair, acct, known]
    }

    /// Reserves one attempt for `account` (the login name as typed; it is
    /// normalised) from `client` (the limiter key of `ClientIp`).
    pub async fn reserve(&self, account: &str, client: IpNet) -> Result<Attempt, LockoutError> {
        let account = digest(account);
        let [pair, acct, known] = Self::keys(&account, client);
        let items = [
            Reserve::new(pair, self.policy.pair_limit, self.policy.pair_lock),
            Reserve::new(acct, self.policy.account_limit, self.policy.account_window)
                .unless_marked(known),
        ];
        let reservation = self
            .store
            .reserve(&self.policy.tag, &items, self.policy.fail)
            .await?;
        if !reservation.allowed() {
            return Err(LockoutError::Locked {
                retry_after: reservation.retry_after().max(Duration::from_secs(1)),
            });
        }
        Ok(Attempt {
            account,
            client,
            reservation,
        })
    }

    /// Settles an attempt. Errors reaching the store are logged, not
    /// returned: a failure's slots are already counted, and a success that
    /// cannot be recorded only leaves the counters as they were.
    pub async fn settle(&self, attempt: Attempt, outcome: Settlement) {
        let [pair, acct, known] = Self::keys(&attempt.account, attempt.client);
        let source = attempt.reservation.source();
        match outcome {
            Settlement::Success => {
                let mut steps = vec![
                    Settle::Clear(pair),
                    Settle::Mark(known, self.policy.known_client_for),
                ];
                if attempt
                    .reservation
                    .outcomes()
                    .get(1)
                    .is_some_and(|o| !o.skipped)
                {
                    steps.push(Settle::Release(acct));
                }
                if let Err(e) = self.store.settle(&self.policy.tag, &steps, source).await {
                    tracing::warn!(target: "palisade::audit", error = %e, "could not record a successful login");
                }
            }
            Settlement::Cancelled => {
                let outcomes = attempt.reservation.outcomes();
                let mut steps = Vec::with_capacity(2);
                if outcomes.first().is_some_and(|o| !o.skipped) {
                    steps.push(Settle::Release(pair));
                }
                if outcomes.get(1).is_some_and(|o| !o.skipped) {
                    steps.push(Settle::Release(acct));
                }
                if let Err(e) = self.store.settle(&self.policy.tag, &steps, source).await {
                    tracing::warn!(target: "palisade::audit", error = %e, "could not give back a login slot");
                }
            }
            Settlement::Failure => {
                let outcomes = attempt.reservation.outcomes();
                let reached = |i: usize, limit: u32| {
                    outcomes
                        .get(i)
                        .is_some_and(|o| !o.skipped && o.count >= limit)
                };
                if reached(0, self.policy.pair_limit) {
                    self.audit("lockout", "client", &attempt, self.policy.pair_lock);
                }
                if reached(1, self.policy.account_limit) {
                    self.audit("lockout", "account", &attempt, self.policy.account_window);
                }
            }
        }
    }

    /// Lifts every lock on `account` (an administrator's action, or after a
    /// password reset): clears the account counter and this client's pair.
    pub async fn unlock(&self, account: &str, client: IpNet) -> Result<(), StoreError> {
        let digest = digest(account);
        let [pair, acct, _] = Self::keys(&digest, client);
        self.store
            .settle(
                &self.policy.tag,
                &[Settle::Clear(pair), Settle::Clear(acct)],
                Source::Primary,
            )
            .await?;
        self.events
            .get_or_create(&EventLabels {
                event: "unlock",
                scope: "account",
            })
            .inc();
        tracing::warn!(
            target: "palisade::audit",
            event = "unlock",
            account_ref = %hex8(&digest),
            client = %client,
            "account unlocked"
        );
        Ok(())
    }

    fn audit(&self, event: &'static str, scope: &'static str, attempt: &Attempt, lock: Duration) {
        self.events
            .get_or_create(&EventLabels { event, scope })
            .inc();
        tracing::warn!(
            target: "palisade::audit",
            event,
            scope,
            account_ref = %hex8(&attempt.account),
            client = %attempt.client,
            locked_for_s = lock.as_secs(),
            "login locked out"
        );
    }
}

fn split(d: &[u8; 32]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    b.copy_from_slice(d.get(8..16).unwrap_or(&[0; 8]));
    (u64::from_be_bytes(a), u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(words(Duration::from_secs(900)), "15 minutes");
        assert_eq!(words(Duration::from_secs(3600)), "1 hour");
        assert_eq!(words(Duration::from_secs(30 * 86_400)), "30 days");
        assert_eq!(words(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn accounts_are_normalised_before_hashing() {
        assert_eq!(digest(" Bob@Example.com"), digest("bob@example.com"));
        assert_ne!(digest("bob@example.com"), digest("bob@example.org"));
    }

    #[test]
    fn the_policy_describes_itself() {
        let text = LockoutPolicy::default().describe();
        for part in [
            "5 consecutive",
            "15 minutes",
            "50 failed",
            "1 hour",
            "30 days",
            "refused (503)",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
    }
}

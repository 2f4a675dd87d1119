//! The state behind Palisade's rate limits, lockouts and token revocations.
//!
//! - [`MemoryStore`]: sharded, a hard cap on keys with eviction (expired
//!   first, then least recently used), every entry expiring, decisions
//!   without allocation.
//! - Redis (feature `redis`): one `EVALSHA` per decision computed on the
//!   server's clock, several keys decided atomically, every key with a TTL,
//!   cluster hash tags; `redis://`, `rediss://` (feature `redis-tls`) and
//!   `redis+unix://` URLs.
//! - [`Store`] puts either behind one API with a [`FailPolicy`] per call and a
//!   circuit breaker, so a dead Redis costs microseconds per request.
//!
//! Three primitives cover the uses: GCRA decisions ([`gcra`]) for rate
//! limits, all-or-nothing counter reservations settled afterwards
//! ([`counter`]) for lockouts, and expiring marks for revocations and known
//! clients.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_store::{FailPolicy, Key, MemoryStore, Part, Reserve, Settle, Store};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = Store::memory(MemoryStore::default());
//! let pair = Key::new("pair").with(Part::Str("bob")).with(Part::Int(1));
//! let item = [Reserve::new(pair, 2, Duration::from_secs(900))];
//! let r = store.reserve("lockout", &item, FailPolicy::FailClosed).await.unwrap();
//! assert!(r.allowed());
//! // The password was right: reset the counter.
//! store.settle("lockout", &[Settle::Clear(pair)], r.source()).await.unwrap();
//! assert_eq!(store.local().count(&pair), 0);
//! # });
//! ```

pub mod counter;
pub mod gcra;
pub mod key;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod store;

pub use counter::{CounterOutcome, Probe, Reservation, Reserve, Settle};
pub use gcra::{Batch, Decision, GcraRequest, ItemOutcome, MAX_KEYS, Outcome, Quota, Source};
pub use key::{Key, MAX_PARTS, Part, check_name};
pub use memory::{MemoryStore, MemoryStoreBuilder};
/// The circuit breaker in front of Redis: palisade-resilience's.
#[cfg(feature = "redis")]
pub use palisade_resilience::breaker::BreakerConfig;
#[cfg(feature = "redis")]
pub use redis::RedisOptions;
pub use store::{FailPolicy, Store};

/// Why the remote store did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// The call exceeded its deadline.
    #[error("timed out")]
    Timeout,
    /// No connection could be made or it broke.
    #[error("connection failed")]
    Connection,
    /// The server answered with an error or an unexpected reply.
    #[error("server error")]
    Server,
    /// The circuit breaker is open: no call was made.
    #[error("circuit open")]
    CircuitOpen,
}

impl Unavailable {
    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Server => "server",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

/// A store error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The remote store could not decide and the fail policy is `FailClosed`.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Unavailable),
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] palisade_core::ConfigError),
}

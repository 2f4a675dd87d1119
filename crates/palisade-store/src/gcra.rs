//! GCRA (generic cell rate algorithm) quotas and decisions.
//!
//! A quota is a sustained rate (`limit` per `period`) and a burst. The state of
//! a key is one number, its *theoretical arrival time* (TAT); a request of
//! cost `c` is allowed when `max(TAT, now) + c × interval − now ≤ burst ×
//! interval`, and then the TAT moves forward. A key whose TAT is in the past is
//! indistinguishable from a fresh one, so every entry expires at its TAT: no
//! separate TTL is needed and nothing outlives its usefulness.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_store::Quota;
//!
//! let login = Quota::per_minute(5);
//! assert_eq!(login.burst(), 5);
//! assert_eq!(login.interval(), Duration::from_secs(12));
//!
//! let global = Quota::per_second(30).with_burst(50);
//! assert_eq!(global.burst(), 50);
//! assert_eq!(global.limit(), 30);
//! ```

use std::time::Duration;

use palisade_core::ConfigError;

use crate::key::Key;

/// The most keys one decision can cover.
pub const MAX_KEYS: usize = 8;

/// A GCRA quota: `limit` requests per `period`, with a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    period: Duration,
    interval_ns: u64,
    burst: u32,
}

impl Quota {
    /// `limit` requests per `period`, burst = `limit`.
    ///
    /// # Errors
    ///
    /// When `limit` is zero or `period` is shorter than `limit` nanoseconds.
    pub fn new(limit: u32, period: Duration) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new("quota.limit", "must be at least 1"));
        }
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let interval_ns = period_ns / u64::from(limit);
        if interval_ns == 0 {
            return Err(ConfigError::new(
                "quota.period",
                "must be at least one nanosecond per request",
            ));
        }
        Ok(Self {
            limit,
            period,
            interval_ns,
            burst: limit,
        })
    }

    fn clamped(limit: u32, period: Duration) -> Self {
        let limit = limit.max(1);
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        Self {
            limit,
            period,
            interval_ns: (period_ns / u64::from(limit)).max(1),
            burst: limit,
        }
    }

    /// `n` per second (`n` is raised to 1 if zero).
    pub fn per_second(n: u32) -> Self {
        Self::clamped(n, Duration::from_secs(1))
    }

    /// `n` per minute (`n` is raised to 1 if zero).
    pub fn per_minute(n: u32) -> Self {
        Self::clamped(n, Duration::from_secs(60))
    }

    /// `n` per hour (`n` is raised to 1 if zero).
    pub fn per_hour(n: u32) -> Self {
        Self::clamped(n, Duration::from_secs(3600))
    }

    /// Sets how many requests may arrive at once (raised to 1 if zero).
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// The same quota for `factor` times the clients: `factor` × the limit
    /// and the burst over the same period (saturating).
    #[must_use]
    pub fn scaled(self, factor: u32) -> Self {
        Self::clamped(self.limit.saturating_mul(factor), self.period)
            .with_burst(self.burst.saturating_mul(factor))
    }

    /// The sustained number of requests per period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period of the sustained rate.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// How many requests may arrive at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one request's worth of quota takes to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// The same quota with its interval rounded down to whole microseconds,
    /// the unit of the Redis scripts, so both sides compute identically.
    pub(crate) fn rounded_to_micros(self) -> Self {
        Self {
            interval_ns: (self.interval_ns / 1000).max(1) * 1000,
            ..self
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    pub(crate) fn tolerance_ns(&self) -> u64 {
        self.interval_ns.saturating_mul(u64::from(self.burst))
    }

    /// Decides one request given how far the key's TAT is ahead of now
    /// (`offset_ns`, zero for a fresh or expired key). Returns the outcome and,
    /// when allowed, the new offset to store.
    pub(crate) fn step(&self, offset_ns: u64, cost: u32) -> (Outcome, u64) {
        let need = self.interval_ns.saturating_mul(u64::from(cost));
        let new_offset = offset_ns.saturating_add(need);
        let tolerance = self.tolerance_ns();
        if new_offset <= tolerance {
            let remaining = (tolerance - new_offset) / self.interval_ns;
            (
                Outcome {
                    allowed: true,
                    limit: self.burst,
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset: Duration::from_nanos(new_offset),
                    retry_after: Duration::ZERO,
                },
                new_offset,
            )
        } else {
            let remaining = tolerance.saturating_sub(offset_ns) / self.interval_ns;
            (
                Outcome {
                    allowed: false,
                    limit: self.burst,
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset: Duration::from_nanos(offset_ns),
                    retry_after: Duration::from_nanos(new_offset - tolerance),
                },
                offset_ns,
            )
        }
    }
}

/// One key of a GCRA decision.
#[derive(Clone, Copy, Debug)]
pub struct GcraRequest<'a> {
    /// The key.
    pub key: Key<'a>,
    /// Its quota.
    pub quota: Quota,
    /// How much of the quota the request uses (usually 1; 0 only looks).
    pub cost: u32,
}

impl<'a> GcraRequest<'a> {
    /// A request of cost 1.
    pub fn new(key: Key<'a>, quota: Quota) -> Self {
        Self {
            key,
            quota,
            cost: 1,
        }
    }
}

/// The outcome for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Whether this key alone would allow the request.
    pub allowed: bool,
    /// The burst size (the `RateLimit` header's quota).
    pub limit: u32,
    /// Requests left right now after this decision.
    pub remaining: u32,
    /// Time until the quota is full again.
    pub reset: Duration,
    /// When denied, how long until the request would be allowed.
    pub retry_after: Duration,
}

/// Where a decision was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The configured store (memory, or Redis when it answered).
    Primary,
    /// The local memory store, because Redis is unreachable (`LocalFallback`).
    Fallback,
    /// Nothing: Redis is unreachable and the policy is `FailOpen`.
    FailOpen,
}

/// The outcome of one key or counter in an all-or-nothing [`Batch`].
pub trait ItemOutcome: Copy + Default {
    /// Whether this item alone would allow.
    fn allowed(&self) -> bool;
    /// When refused, how long until it would allow.
    fn retry_after(&self) -> Duration;
    /// An allowing outcome, for a store that failed open.
    #[cfg(feature = "redis")]
    fn open() -> Self;
}

/// Implements [`ItemOutcome`] for outcome types with `allowed` and
/// `retry_after` fields.
macro_rules! item_outcome {
    ($($ty:ty),*) => {$(
        impl ItemOutcome for $ty {
            fn allowed(&self) -> bool {
                self.allowed
            }

            fn retry_after(&self) -> Duration {
                self.retry_after
            }

            #[cfg(feature = "redis")]
            fn open() -> Self {
                Self {
                    allowed: true,
                    ..Self::default()
                }
            }
        }
    )*};
}

item_outcome!(Outcome, crate::counter::CounterOutcome);

/// A duration in whole microseconds (the unit of stored times), saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An all-or-nothing answer over up to [`MAX_KEYS`] items: every item was
/// applied, or none.
#[derive(Clone, Copy, Debug)]
pub struct Batch<O> {
    allowed: bool,
    len: usize,
    outcomes: [O; MAX_KEYS],
    source: Source,
}

/// A GCRA decision over several keys.
pub type Decision = Batch<Outcome>;

impl<O: ItemOutcome> Batch<O> {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            allowed: true,
            len: 0,
            outcomes: [O::default(); MAX_KEYS],
            source,
        }
    }

    pub(crate) fn push(&mut self, outcome: O) {
        if let Some(slot) = self.outcomes.get_mut(self.len) {
            *slot = outcome;
            self.len += 1;
            self.allowed &= outcome.allowed();
        }
    }

    /// Whether every item allowed (and so all were applied).
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The outcome of each item, in request order.
    pub fn outcomes(&self) -> &[O] {
        self.outcomes.get(..self.len).unwrap_or(&[])
    }

    /// Where the answer was made.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The longest wait among the items that refused (zero when allowed).
    pub fn retry_after(&self) -> Duration {
        self.outcomes()
            .iter()
            .filter(|o| !o.allowed())
            .map(ItemOutcome::retry_after)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    #[cfg(feature = "redis")]
    pub(crate) fn fail_open(len: usize) -> Self {
        let mut batch = Self::new(Source::FailOpen);
        for _ in 0..len.min(MAX_KEYS) {
            batch.push(O::open());
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let q = Quota::per_minute(5);
        let mut offset = 0;
        for i in 0..5 {
            let (o, next) = q.step(offset, 1);
            assert!(o.allowed, "request {i}");
            assert_eq!(o.remaining, 4 - i);
            offset = next;
        }
        let (o, same) = q.step(offset, 1);
        assert!(!o.allowed);
        assert_eq!(same, offset);
        assert_eq!(o.retry_after, Duration::from_secs(12));
        assert_eq!(o.reset, Duration::from_secs(60));
        // 12 s later one slot came back.
        let (o, _) = q.step(offset - 12_000_000_000, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
    }

    #[test]
    fn cost_zero_only_looks() {
        let q = Quota::per_second(10);
        let (o, next) = q.step(0, 0);
        assert!(o.allowed);
        assert_eq!(next, 0);
        assert_eq!(o.remaining, 10);
    }

    #[test]
    fn invalid_quotas_are_refused() {
        assert!(Quota::new(0, Duration::from_secs(1)).is_err());
        assert!(Quota::new(10, Duration::from_nanos(5)).is_err());
        assert!(Quota::new(10, Duration::from_secs(1)).is_ok());
        assert_eq!(Quota::per_second(0).limit(), 1);
    }

    #[test]
    fn decision_is_all_or_nothing() {
        let mut d = Decision::new(Source::Primary);
        d.push(Outcome {
            allowed: true,
            ..Outcome::default()
        });
        d.push(Outcome {
            allowed: false,
            retry_after: Duration::from_secs(3),
            ..Outcome::default()
        });
        assert!(!d.allowed());
        assert_eq!(d.retry_after(), Duration::from_secs(3));
        assert_eq!(d.outcomes().len(), 2);
    }
}

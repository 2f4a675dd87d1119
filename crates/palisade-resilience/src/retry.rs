//! Retries that cannot turn an outage into a retry storm.
//!
//! - **A budget** shared by every call of a client: tower's
//!   [`TpsBudget`] — each call deposits, each retry withdraws, so retries
//!   stay at a fixed percentage of calls (plus a small floor per second)
//!   however many callers fail at once. Under a dependency that fails every
//!   call, the extra load is that percentage, not `max_attempts` times.
//! - **Exponential backoff with full jitter**: the wait before retry *n* is
//!   uniform in `[0, min(max_delay, base × 2ⁿ⁻¹)]` ("full jitter", which
//!   spreads synchronized callers best; tower's own backoff adds a partial
//!   jitter on top of the exponential value instead).
//! - **`Retry-After`** ([`parse_retry_after`]: delay-seconds or an HTTP-date)
//!   replaces the backoff when the dependency sends it; a wait that would
//!   pass the call's deadline is not made: the last answer is returned.
//! - Only **idempotent or explicitly retryable** calls are retried (the
//!   [outbound layer](crate::outbound) checks the method, or a
//!   [`Retryable`](crate::outbound::Retryable) marker).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_resilience::retry::{Retry, parse_retry_after};
//!
//! let retry = Retry::new()
//!     .max_attempts(3)
//!     .backoff(Duration::from_millis(100), Duration::from_secs(1))
//!     .budget(Duration::from_secs(10), 1, 0.1);
//! assert_eq!(retry.attempts(), 3);
//! // Full jitter: never more than the exponential ceiling.
//! assert!(retry.delay(2) <= Duration::from_millis(200));
//!
//! let now = Duration::from_secs(1_445_412_480); // 21 Oct 2015 07:28:00 GMT
//! assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
//! assert_eq!(
//!     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
//!     Some(Duration::from_secs(30))
//! );
//! assert_eq!(parse_retry_after("soon", now), None);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tower::retry::budget::{Budget, TpsBudget};

use crate::backoff::{Jitter, full_jitter};

/// How a call is retried. Cheap to clone: clones share the budget.
#[derive(Clone)]
#[must_use]
pub struct Retry {
    max_attempts: u32,
    base: Duration,
    max_delay: Duration,
    budget: Arc<TpsBudget>,
    jitter: Jitter,
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("max_attempts", &self.max_attempts)
            .field("base", &self.base)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

impl Retry {
    /// 3 attempts, backoff from 50 ms up to 2 s, a budget of 10 % of the
    /// calls of the last 10 s plus 1 retry per second.
    pub fn new() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.1)),
            jitter: Jitter::new(),
        }
    }

    /// Attempts in all, the first included (at least 1: 1 means no retry).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The backoff's first ceiling and its cap.
    pub fn backoff(mut self, base: Duration, max_delay: Duration) -> Self {
        self.base = base;
        self.max_delay = max_delay.max(base);
        self
    }

    /// The budget: deposits live `ttl` (clamped to 1–60 s); `min_per_sec`
    /// retries per second are always allowed; `retry_ratio` retries per call
    /// (clamped to 0–1000; 0.1 = one retry per ten calls).
    pub fn budget(mut self, ttl: Duration, min_per_sec: u32, retry_ratio: f32) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if retry_ratio.is_finite() {
            retry_ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        let min_per_sec = min_per_sec.min(1_000_000);
        self.budget = Arc::new(TpsBudget::new(ttl, min_per_sec, ratio));
        self
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait before retry `n` (1 for the first): uniform in
    /// `[0, min(max_delay, base × 2ⁿ⁻¹)]`.
    pub fn delay(&self, n: u32) -> Duration {
        full_jitter(self.base, self.max_delay, n, &self.jitter)
    }

    /// Records a call (a deposit in the budget).
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an
/// HTTP-date read against `now_unix` (the wall clock, since the epoch; a
/// date in the past is a zero delay). `None` when it is neither.
pub fn parse_retry_after(value: &str, now_unix: Duration) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate rather than fail.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(UNIX_EPOCH).ok()?;
    Some(at.saturating_sub(now_unix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling_and_spreads() {
        let retry = Retry::new().backoff(Duration::from_millis(100), Duration::from_millis(350));
        let ceilings = [100, 200, 350, 350];
        for (n, ceiling) in (1..).zip(ceilings) {
            let draws: Vec<_> = (0..200).map(|_| retry.delay(n)).collect();
            assert!(draws.iter().all(|d| *d <= Duration::from_millis(ceiling)));
            // Full jitter: some waits in the lower half, some in the upper.
            let half = Duration::from_millis(ceiling / 2);
            assert!(draws.iter().any(|d| *d < half) && draws.iter().any(|d| *d > half));
        }
    }

    #[test]
    fn retry_after_seconds_dates_and_junk() {
        let now = Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        for junk in ["", "-1", "1.5", "+3", "tomorrow", "0x10"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn the_budget_refuses_once_spent() {
        let retry = Retry::new().budget(Duration::from_secs(1), 0, 0.5);
        for _ in 0..10 {
            retry.deposit();
        }
        let granted = (0..20).filter(|_| retry.withdraw()).count();
        assert_eq!(granted, 5, "half of 10 calls");
    }

    proptest! {
        #[test]
        fn retry_after_never_panics_and_reads_digits_as_seconds(s in "\\PC{0,40}", n in 0u64..1_000_000) {
            let _ = parse_retry_after(&s, Duration::from_secs(1_700_000_000));
            prop_assert_eq!(parse_retry_after(&n.to_string(), Duration::ZERO), Some(Duration::from_secs(n)));
        }
    }
}

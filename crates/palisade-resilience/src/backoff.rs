//! Exponential backoff with full jitter and a cap, and the jitter source it
//! draws from (seedable, so tests can predict every delay).
//!
//! The delay before the `n`-th retry is drawn uniformly from
//! `[0, min(cap, base · 2ⁿ⁻¹)]` ("full jitter"): clients that failed together
//! do not come back together, and the expected wait still doubles. The
//! [`ceiling`](Backoff::ceiling) is the upper bound of each draw.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_resilience::backoff::{Backoff, Jitter};
//!
//! let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
//! assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
//! assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
//! assert_eq!(backoff.ceiling(30), Duration::from_secs(1)); // capped
//!
//! let jitter = Jitter::seeded(7);
//! for failures in 1..10 {
//!     assert!(backoff.delay(failures, &jitter) <= backoff.ceiling(failures));
//! }
//! // The same seed draws the same delays.
//! let (a, b) = (Jitter::seeded(1), Jitter::seeded(1));
//! assert_eq!(backoff.delay(4, &a), backoff.delay(4, &b));
//!
//! // A cap below the base is a configuration error, not a panic.
//! assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
//! ```

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::ConfigError;

/// Exponential backoff with full jitter, capped. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Delays starting at (up to) `base` and doubling up to `cap`.
    ///
    /// # Errors
    ///
    /// `base` is zero, or `cap` is below `base`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() {
            return Err(ConfigError::new("backoff.base", "must be above zero"));
        }
        if cap < base {
            return Err(ConfigError::new(
                "backoff.cap",
                "must be at least the base delay",
            ));
        }
        Ok(Self { base, cap })
    }

    /// The first delay's upper bound.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The upper bound of the delay after `failures` consecutive failures
    /// (`1` for the first): `min(cap, base · 2^(failures − 1))`; `base` for 0.
    pub fn ceiling(&self, failures: u32) -> Duration {
        ceiling(self.base, self.cap, failures)
    }

    /// A delay drawn uniformly from `[0, ceiling(failures)]`.
    pub fn delay(&self, failures: u32, jitter: &Jitter) -> Duration {
        full_jitter(self.base, self.cap, failures, jitter)
    }
}

/// `min(cap, base · 2^(failures − 1))`; `base` (or `cap` when smaller) for 0.
/// The one formula behind [`Backoff`] and the outbound retries.
fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(63);
    let factor = 1u64 << doublings;
    let nanos = base.as_nanos().saturating_mul(u128::from(factor));
    if nanos >= cap.as_nanos() {
        cap
    } else {
        // Below the cap, which is a Duration: the conversion cannot fail.
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A delay uniform in `[0, ceiling(base, cap, failures)]` ("full jitter").
/// Unlike [`Backoff::new`], a zero `base` is allowed (no wait at all).
pub(crate) fn full_jitter(
    base: Duration,
    cap: Duration,
    failures: u32,
    jitter: &Jitter,
) -> Duration {
    ceiling(base, cap, failures).mul_f64(jitter.fraction())
}

/// A source of jitter: a fast, lock-free pseudo-random sequence (`SplitMix64`).
/// Not for secrets: it only spreads delays. Cheap to clone (clones share the
/// sequence).
#[derive(Debug, Clone)]
pub struct Jitter(Arc<AtomicU64>);

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Jitter {
    /// A sequence seeded differently in each process (and each call).
    pub fn new() -> Self {
        // The standard library's random hasher keys are seeded by the OS.
        Self::seeded(std::hash::RandomState::new().hash_one(0x5eed_u64))
    }

    /// A sequence that is the same for the same seed (tests).
    pub fn seeded(seed: u64) -> Self {
        Self(Arc::new(AtomicU64::new(seed)))
    }

    /// The next value, uniform in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        let next = self.next_u64();
        // The top 53 bits, exactly representable in an f64.
        #[allow(clippy::cast_precision_loss)] // 53 bits fit the mantissa
        let value = (next >> 11) as f64 / ((1u64 << 53) - 1) as f64;
        value
    }

    fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_then_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).unwrap();
        let ceilings: Vec<u64> = (0..10).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn fractions_are_spread_over_the_unit_interval() {
        let jitter = Jitter::seeded(42);
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.fraction()).collect();
        assert!(draws.iter().all(|f| (0.0..=1.0).contains(f)));
        let mean = draws.iter().sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        // Every tenth of the interval gets its share (full jitter, not a band).
        for decile in 0..10 {
            let lo = f64::from(decile) / 10.0;
            let n = draws.iter().filter(|f| (lo..lo + 0.1).contains(*f)).count();
            assert!((800..1_200).contains(&n), "decile {decile}: {n}");
        }
    }

    #[test]
    fn unseeded_sequences_differ() {
        assert_ne!(Jitter::new().next_u64(), Jitter::new().next_u64());
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1))
                .unwrap_err()
                .setting(),
            "backoff.base"
        );
        assert_eq!(
            Backoff::new(Duration::from_secs(2), Duration::from_secs(1))
                .unwrap_err()
                .setting(),
            "backoff.cap"
        );
    }
}

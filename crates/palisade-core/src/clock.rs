//! Injectable time, so that limits, lockouts and token expiry are tested by
//! moving a clock instead of sleeping.
//!
//! Code that needs time takes a [`SharedClock`]; production passes
//! [`SystemClock`], tests pass a [`ManualClock`] and call
//! [`advance`](ManualClock::advance).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! let wall = clock.unix_now();
//! clock.advance(Duration::from_secs(15 * 60));
//! assert_eq!(clock.now() - start, Duration::from_secs(900));
//! assert_eq!(clock.unix_now() - wall, Duration::from_secs(900));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time, for durations and deadlines.
    fn now(&self) -> Instant;

    /// Wall-clock time since the UNIX epoch, for timestamps that other
    /// processes read (token `exp`, lockout expiry stored in a shared store).
    fn unix_now(&self) -> Duration;
}

/// A clock shared between components.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now(&self) -> Duration {
        // A wall clock set before 1970 is a broken host; report the epoch
        // rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that only moves when told to. Both of its readings advance together.
#[derive(Debug)]
pub struct ManualClock {
    base_instant: Instant,
    base_unix: Duration,
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// A manual clock starting at the current system time.
    pub fn new() -> Self {
        Self::at_unix(SystemClock.unix_now())
    }

    /// A manual clock whose wall-clock reading starts at `unix` since the epoch.
    pub fn at_unix(unix: Duration) -> Self {
        Self {
            base_instant: Instant::now(),
            base_unix: unix,
            offset_nanos: AtomicU64::new(0),
        }
    }

    /// This clock as a [`SharedClock`], keeping a handle to move it.
    pub fn shared() -> (Arc<Self>, SharedClock) {
        let clock = Arc::new(Self::new());
        let shared: SharedClock = clock.clone();
        (clock, shared)
    }

    /// Moves the clock forward by `by` (saturating after ~584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update with a saturating add: concurrent advances all count.
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(current.saturating_add(nanos))
            });
    }

    /// How far the clock has been moved since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let elapsed = self.elapsed();
        self.base_instant
            .checked_add(elapsed)
            .unwrap_or(self.base_instant)
    }

    fn unix_now(&self) -> Duration {
        self.base_unix.saturating_add(self.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_does_not_move_by_itself() {
        let clock = ManualClock::at_unix(Duration::from_secs(1_000));
        let a = clock.now();
        std::thread::yield_now();
        assert_eq!(clock.now(), a);
        assert_eq!(clock.unix_now(), Duration::from_secs(1_000));
    }

    #[test]
    fn concurrent_advances_all_count() {
        let clock = Arc::new(ManualClock::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        clock.advance(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(clock.elapsed(), Duration::from_secs(8));
    }

    #[test]
    fn advance_saturates() {
        let clock = ManualClock::at_unix(Duration::ZERO);
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.unix_now() > Duration::from_secs(1_577_836_800));
    }
}

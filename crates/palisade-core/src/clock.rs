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

/// The date and time of `unix_secs` as `YYYY-MM-DDTHH:MM:SS` (UTC, proleptic
/// Gregorian calendar, years 0000–9999).
pub fn utc_datetime(unix_secs: u64) -> [u8; 19] {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    // Days since 0000-03-01, so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9_999);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            if let Some(slot) = out.get_mut(at + i) {
                // `v % 10` is a single digit.
                *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
            }
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3_600, 2);
    put(14, rem % 3_600 / 60, 2);
    put(17, rem % 60, 2);
    out
}

/// `unix_secs` as an RFC 3339 UTC timestamp with seconds precision:
/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_seconds(unix_secs: u64) -> String {
    let mut out = String::with_capacity(20);
    out.push_str(std::str::from_utf8(&utc_datetime(unix_secs)).unwrap_or("0000-00-00T00:00:00"));
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_cross_leap_years_and_eras() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(19_723 * 86_400), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(20_514 * 86_400), "2026-03-02T00:00:00Z");
        assert_eq!(rfc3339_seconds(11_016 * 86_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_seconds(951_782_399), "2000-02-28T23:59:59Z");
    }

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

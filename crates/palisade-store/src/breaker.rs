//! The circuit breaker in front of a remote store.
//!
//! Closed: calls go through; `failure_threshold` consecutive failures open
//! it. Open: calls fail at once (microseconds, not a connection timeout) for
//! `open_for`, doubling on each failed probe up to `max_open_for`. Then one
//! call is let through as a probe (half-open): success closes the breaker,
//! failure opens it again.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_store::BreakerConfig;
//!
//! let config = BreakerConfig::default().failure_threshold(2).open_for(Duration::from_millis(200));
//! assert_eq!(config.threshold(), 2);
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use palisade_core::SharedClock;

/// When the breaker opens and for how long.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct BreakerConfig {
    failure_threshold: u32,
    open_for: Duration,
    max_open_for: Duration,
}

impl Default for BreakerConfig {
    /// 3 consecutive failures; open 500 ms, doubling up to 30 s.
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_millis(500),
            max_open_for: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// How long the breaker first stays open.
    pub fn open_for(mut self, d: Duration) -> Self {
        self.open_for = d;
        self
    }

    /// The longest it stays open after repeated failed probes.
    pub fn max_open_for(mut self, d: Duration) -> Self {
        self.max_open_for = d;
        self
    }

    /// The configured failure threshold.
    pub fn threshold(&self) -> u32 {
        self.failure_threshold
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, backoff: Duration },
    HalfOpen { backoff: Duration },
}

/// What the breaker says about a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go ahead.
    Yes,
    /// Go ahead: this call is the probe.
    Probe,
    /// Fail at once.
    No,
}

/// A state change worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    clock: SharedClock,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, clock: SharedClock) -> Self {
        Self {
            config,
            clock,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub(crate) fn admit(&self) -> Admit {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Admit::Yes,
            State::HalfOpen { .. } => Admit::No,
            State::Open { until, backoff } => {
                if self.clock.now() >= until {
                    *state = State::HalfOpen { backoff };
                    Admit::Probe
                } else {
                    Admit::No
                }
            }
        }
    }

    pub(crate) fn success(&self) -> Option<Transition> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was_closed = matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        (!was_closed).then_some(Transition::Closed)
    }

    pub(crate) fn failure(&self) -> Option<Transition> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        match *state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.config.failure_threshold {
                    *state = State::Open {
                        until: now + self.config.open_for,
                        backoff: self.config.open_for,
                    };
                    Some(Transition::Opened)
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            State::HalfOpen { backoff } => {
                let backoff = (backoff * 2).min(self.config.max_open_for);
                *state = State::Open {
                    until: now + backoff,
                    backoff,
                };
                None
            }
            // A call admitted before the breaker opened failed late.
            State::Open { .. } => None,
        }
    }

    /// Admits a call like [`Breaker::admit`]; a probe comes with a guard that
    /// counts it as a failure if it is dropped unsettled (its future was
    /// cancelled: the client went away, a deadline fired), so the breaker
    /// never stays half-open waiting for an answer that will not come.
    pub(crate) fn admit_guarded(&self) -> (Admit, ProbeGuard<'_>) {
        let admit = self.admit();
        let breaker = (admit == Admit::Probe).then_some(self);
        (admit, ProbeGuard { breaker })
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Closed { .. }
        )
    }
}

/// Settles an abandoned half-open probe as a failure (see
/// [`Breaker::admit_guarded`]).
#[must_use = "disarm the guard once the probe's outcome is recorded"]
pub(crate) struct ProbeGuard<'a> {
    breaker: Option<&'a Breaker>,
}

impl ProbeGuard<'_> {
    /// The probe's outcome was recorded (`success` or `failure`).
    pub(crate) fn disarm(mut self) {
        self.breaker = None;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            // Back to open (with the doubled backoff): a new probe is admitted
            // once it has passed.
            let _ = breaker.failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::ManualClock;

    #[test]
    fn opens_probes_backs_off_and_recovers() {
        let (clock, shared) = ManualClock::shared();
        let b = Breaker::new(
            BreakerConfig::default()
                .failure_threshold(2)
                .open_for(Duration::from_secs(1))
                .max_open_for(Duration::from_secs(3)),
            shared,
        );
        assert_eq!(b.admit(), Admit::Yes);
        assert_eq!(b.failure(), None);
        assert_eq!(b.failure(), Some(Transition::Opened));
        assert_eq!(b.admit(), Admit::No);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::No, "one probe at a time");
        assert_eq!(b.failure(), None);
        clock.advance(Duration::from_millis(1999));
        assert_eq!(b.admit(), Admit::No, "backoff doubled to 2 s");
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.admit(), Admit::Probe);
        b.failure();
        clock.advance(Duration::from_secs(3));
        assert_eq!(b.admit(), Admit::Probe, "capped at 3 s");
        assert_eq!(b.success(), Some(Transition::Closed));
        assert!(b.is_closed());
        assert_eq!(b.admit(), Admit::Yes);
    }

    /// Issue 18: a probe whose future is dropped (at its only await point,
    /// the store call) used to leave the breaker half-open for ever, every
    /// later call refused with `CircuitOpen`.
    #[test]
    fn a_cancelled_probe_counts_as_a_failure_and_a_new_probe_follows() {
        let (clock, shared) = ManualClock::shared();
        let b = Breaker::new(
            BreakerConfig::default()
                .failure_threshold(1)
                .open_for(Duration::from_secs(1)),
            shared,
        );
        assert_eq!(b.failure(), Some(Transition::Opened));
        for round in 0..3u32 {
            clock.advance(Duration::from_secs(60));
            let (admit, guard) = b.admit_guarded();
            assert_eq!(admit, Admit::Probe, "round {round}");
            drop(guard); // the probe's caller went away
            assert_eq!(b.admit(), Admit::No, "open again, not stuck half-open");
        }
        // Recovery with a probe that completes.
        clock.advance(Duration::from_secs(60));
        let (admit, guard) = b.admit_guarded();
        assert_eq!(admit, Admit::Probe);
        assert_eq!(b.success(), Some(Transition::Closed));
        guard.disarm();
        assert!(b.is_closed());
        // A guard of an ordinary (closed) call does nothing when dropped.
        let (admit, guard) = b.admit_guarded();
        assert_eq!(admit, Admit::Yes);
        drop(guard);
        assert!(b.is_closed());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let (_clock, shared) = ManualClock::shared();
        let b = Breaker::new(BreakerConfig::default().failure_threshold(2), shared);
        b.failure();
        assert_eq!(b.success(), None);
        assert_eq!(b.failure(), None);
        assert!(b.is_closed());
    }
}

//! A circuit breaker: stop calling a dependency that fails or is slow, and
//! answer at once instead.
//!
//! **Closed**: calls go through; each outcome (success or failure, and
//! whether it took at least [`slow_call_duration`](BreakerConfig::slow_call_duration))
//! is recorded in a sliding [`Window`] — the last N calls, or the calls of the
//! last T. Once the window holds at least
//! [`minimum_calls`](BreakerConfig::minimum_calls), a failure rate at or above
//! [`failure_rate`](BreakerConfig::failure_rate) or a slow-call rate at or
//! above [`slow_call_rate`](BreakerConfig::slow_call_rate) opens the breaker.
//!
//! **Open**: [`CircuitBreaker::try_acquire`] refuses at once (a mutex and a
//! clock read: well under a microsecond, see `benches/`) for
//! [`open_for`](BreakerConfig::open_for), doubled after each failed probe up
//! to [`max_open_for`](BreakerConfig::max_open_for).
//!
//! **Half-open**: then up to [`half_open_calls`](BreakerConfig::half_open_calls)
//! probes are let through; when all of them succeed the breaker closes (with
//! an empty window), the first failure opens it again. A probe whose
//! [`Permit`] is dropped unsettled (its future was cancelled: a deadline
//! fired, the client went away) counts as a failure, so the breaker never
//! waits for ever for an answer that will not come. A closed-state call
//! dropped unsettled counts only if it had already run for the slow-call
//! duration (as a slow failure): a caller giving up early says nothing about
//! the dependency.
//!
//! Every state change is logged (`palisade::breaker` target: open at WARN,
//! the others at INFO), passed to the
//! [`on_state_change`](BreakerConfig::on_state_change) callback and counted;
//! [`CircuitBreaker::register_metrics`] exports the state, the calls by
//! outcome and the short-circuits. Time comes from a [`SharedClock`], so
//! tests move a [`ManualClock`](palisade_core::ManualClock) instead of
//! sleeping.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::ManualClock;
//! use palisade_resilience::breaker::{BreakerConfig, CircuitBreaker, State, Window};
//!
//! let (clock, shared) = ManualClock::shared();
//! let breaker = CircuitBreaker::new(
//!     "pwned",
//!     BreakerConfig::default()
//!         .window(Window::Count(10))
//!         .minimum_calls(4)
//!         .failure_rate(50)
//!         .open_for(Duration::from_secs(5)),
//!     shared,
//! );
//! for ok in [true, false, true, false] {
//!     breaker.try_acquire().unwrap().record(ok);
//! }
//! assert_eq!(breaker.state(), State::Open); // 2 failures in 4 calls: 50 %
//! assert!(breaker.try_acquire().is_err()); // short-circuited, no call made
//!
//! clock.advance(Duration::from_secs(5));
//! let probe = breaker.try_acquire().unwrap();
//! assert_eq!(breaker.state(), State::HalfOpen);
//! drop(probe); // a cancelled probe is a failed probe
//! assert_eq!(breaker.state(), State::Open);
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use palisade_core::SharedClock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through and are recorded.
    Closed,
    /// Calls are refused at once.
    Open,
    /// A few probes go through; the rest are refused.
    HalfOpen,
}

impl State {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, as passed to the
/// [`on_state_change`](BreakerConfig::on_state_change) callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The breaker's name.
    pub breaker: &'static str,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// The calls the rates are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last N calls (at least 1).
    Count(u32),
    /// The calls of the last T, in ten buckets of T/10 (T at least 10 ms).
    Time(Duration),
}

type Callback = Arc<dyn Fn(StateChange) + Send + Sync>;

/// When the breaker opens, for how long, and how it probes. Cheap to clone.
#[derive(Clone)]
#[must_use]
pub struct BreakerConfig {
    window: Window,
    minimum_calls: u32,
    failure_rate: u8,
    slow_call_rate: u8,
    slow_call_duration: Duration,
    open_for: Duration,
    max_open_for: Duration,
    half_open_calls: u32,
    on_state_change: Vec<Callback>,
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate", &self.failure_rate)
            .field("slow_call_rate", &self.slow_call_rate)
            .field("slow_call_duration", &self.slow_call_duration)
            .field("open_for", &self.open_for)
            .field("max_open_for", &self.max_open_for)
            .field("half_open_calls", &self.half_open_calls)
            .finish_non_exhaustive()
    }
}

impl Default for BreakerConfig {
    /// The last 20 calls, at least 10 of them; opens at 50 % failures or
    /// 100 % calls slower than 2 s; open 5 s, doubling up to 60 s after
    /// failed probes; 3 probes.
    fn default() -> Self {
        Self {
            window: Window::Count(20),
            minimum_calls: 10,
            failure_rate: 50,
            slow_call_rate: 100,
            slow_call_duration: Duration::from_secs(2),
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_calls: 3,
            on_state_change: Vec::new(),
        }
    }
}

impl BreakerConfig {
    /// Opens after `n` failures in a row (a window of the last `n` calls, all
    /// of them needed, 100 % failures), one probe: a breaker in front of a
    /// store that should be left alone as soon as it stops answering.
    pub fn consecutive_failures(n: u32) -> Self {
        let n = n.max(1);
        Self::default()
            .window(Window::Count(n))
            .minimum_calls(n)
            .failure_rate(100)
            .half_open_calls(1)
    }

    /// The calls the rates are computed over.
    pub fn window(mut self, window: Window) -> Self {
        self.window = match window {
            Window::Count(n) => Window::Count(n.max(1)),
            Window::Time(t) => Window::Time(t.max(Duration::from_millis(10))),
        };
        self
    }

    /// Calls the window must hold before a rate can open the breaker (at least 1).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n.max(1);
        self
    }

    /// The failure rate, in percent (1–100), that opens the breaker.
    pub fn failure_rate(mut self, percent: u8) -> Self {
        self.failure_rate = percent.clamp(1, 100);
        self
    }

    /// The slow-call rate, in percent (1–100), that opens the breaker.
    pub fn slow_call_rate(mut self, percent: u8) -> Self {
        self.slow_call_rate = percent.clamp(1, 100);
        self
    }

    /// A call that takes at least this long is slow (whatever its outcome).
    pub fn slow_call_duration(mut self, d: Duration) -> Self {
        self.slow_call_duration = d;
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

    /// Probes let through when half-open; all must succeed to close (at least 1).
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.half_open_calls = n.max(1);
        self
    }

    /// Adds a callback run after every state change (outside the breaker's
    /// lock); each call adds one, so a component can add its own to a
    /// configuration it was given.
    pub fn on_state_change(mut self, f: impl Fn(StateChange) + Send + Sync + 'static) -> Self {
        self.on_state_change.push(Arc::new(f));
        self
    }

    /// How long the breaker first stays open.
    pub fn open_duration(&self) -> Duration {
        self.open_for
    }
}

/// The call was not made: the breaker is open (or half-open with its probes
/// out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker `{breaker}` is open")]
pub struct ShortCircuited {
    /// The breaker's name.
    pub breaker: &'static str,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Counts {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn remove(&mut self, failed: bool, slow: bool) {
        self.calls = self.calls.saturating_sub(1);
        self.failures = self.failures.saturating_sub(u32::from(failed));
        self.slow = self.slow.saturating_sub(u32::from(slow));
    }
}

const BUCKETS: usize = 10;
const BUCKETS_U64: u64 = 10;

#[derive(Debug)]
enum Outcomes {
    /// A ring of the last calls: bit 0 failed, bit 1 slow.
    Count {
        ring: Vec<u8>,
        next: usize,
        filled: bool,
        totals: Counts,
    },
    /// Ten buckets, each tagged with the epoch (bucket number since `origin`) it counts.
    Time {
        origin: Instant,
        bucket: Duration,
        buckets: Box<[(u64, Counts); BUCKETS]>,
    },
}

impl Outcomes {
    fn new(window: Window, now: Instant) -> Self {
        match window {
            Window::Count(n) => Self::Count {
                ring: vec![0; n as usize],
                next: 0,
                filled: false,
                totals: Counts::default(),
            },
            Window::Time(t) => Self::Time {
                origin: now,
                bucket: t / 10,
                buckets: Box::new([(u64::MAX, Counts::default()); BUCKETS]),
            },
        }
    }

    fn epoch(origin: Instant, bucket: Duration, now: Instant) -> u64 {
        let nanos = bucket.as_nanos().max(1);
        u64::try_from(now.saturating_duration_since(origin).as_nanos() / nanos).unwrap_or(u64::MAX)
    }

    fn record(&mut self, failed: bool, slow: bool, now: Instant) -> Counts {
        match self {
            Self::Count {
                ring,
                next,
                filled,
                totals,
            } => {
                let bits = u8::from(failed) | (u8::from(slow) << 1);
                if let Some(slot) = ring.get_mut(*next) {
                    if *filled {
                        totals.remove(*slot & 1 != 0, *slot & 2 != 0);
                    }
                    *slot = bits;
                }
                totals.add(failed, slow);
                *next += 1;
                if *next == ring.len() {
                    *next = 0;
                    *filled = true;
                }
                *totals
            }
            Self::Time {
                origin,
                bucket,
                buckets,
            } => {
                let epoch = Self::epoch(*origin, *bucket, now);
                let index = usize::try_from(epoch % BUCKETS_U64).unwrap_or(0);
                if let Some(b) = buckets.get_mut(index) {
                    if b.0 != epoch {
                        *b = (epoch, Counts::default());
                    }
                    b.1.add(failed, slow);
                }
                buckets
                    .iter()
                    .filter(|(e, _)| *e != u64::MAX && *e + BUCKETS_U64 > epoch)
                    .fold(Counts::default(), |mut sum, (_, c)| {
                        sum.calls += c.calls;
                        sum.failures += c.failures;
                        sum.slow += c.slow;
                        sum
                    })
            }
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Core {
    phase: Phase,
    /// The current open duration (doubles after a failed probe).
    backoff: Duration,
    outcomes: Outcomes,
    /// Bumped on every state change: a permit from an older generation
    /// (admitted while closed, settled after the breaker opened) is not
    /// counted again.
    generation: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    to: &'static str,
}

#[derive(Debug, Default)]
struct Metrics {
    calls: Family<OutcomeLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    state: Gauge,
    // Handles into `calls`, so the hot paths skip the family's lookup.
    success: Counter,
    failure: Counter,
    slow_success: Counter,
    slow_failure: Counter,
    short_circuited: Counter,
}

impl Metrics {
    fn new() -> Self {
        let calls = Family::<OutcomeLabels, Counter>::default();
        let handle = |outcome| calls.get_or_create(&OutcomeLabels { outcome }).clone();
        Self {
            success: handle("success"),
            failure: handle("failure"),
            slow_success: handle("slow_success"),
            slow_failure: handle("slow_failure"),
            short_circuited: handle("short_circuited"),
            calls,
            transitions: Family::default(),
            state: Gauge::default(),
        }
    }
}

struct Inner {
    name: &'static str,
    config: BreakerConfig,
    clock: SharedClock,
    core: Mutex<Core>,
    metrics: Metrics,
}

/// A circuit breaker. Cheap to clone (clones share the state).
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (in logs, events and metrics).
    pub fn new(name: &'static str, config: BreakerConfig, clock: SharedClock) -> Self {
        let now = clock.now();
        let core = Core {
            phase: Phase::Closed,
            backoff: config.open_for,
            outcomes: Outcomes::new(config.window, now),
            generation: 0,
        };
        Self {
            inner: Arc::new(Inner {
                name,
                config,
                clock,
                core: Mutex::new(core),
                metrics: Metrics::new(),
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The current state (an open breaker whose open time has passed still
    /// reads `Open` until a call probes it).
    pub fn state(&self) -> State {
        match self.lock().phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Asks to make a call: a [`Permit`] to settle with its outcome, or
    /// [`ShortCircuited`] (counted) when the breaker refuses.
    pub fn try_acquire(&self) -> Result<Permit, ShortCircuited> {
        let now = self.inner.clock.now();
        let mut core = self.lock();
        let mut change = None;
        let probe = match core.phase {
            Phase::Closed => false,
            Phase::Open { until } if now >= until => {
                core.phase = Phase::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                core.generation += 1;
                change = Some((State::Open, State::HalfOpen));
                true
            }
            Phase::HalfOpen {
                ref mut admitted, ..
            } if *admitted < self.inner.config.half_open_calls => {
                *admitted += 1;
                true
            }
            Phase::Open { .. } | Phase::HalfOpen { .. } => {
                drop(core);
                self.inner.metrics.short_circuited.inc();
                return Err(ShortCircuited {
                    breaker: self.inner.name,
                });
            }
        };
        let generation = core.generation;
        drop(core);
        self.changed(change);
        Ok(Permit {
            breaker: Some(self.clone()),
            started: now,
            generation,
            probe,
        })
    }

    /// Registers the breaker's metrics, labelled `breaker="<name>"`:
    /// `palisade_breaker_state` (0 closed, 1 open, 2 half-open),
    /// `palisade_breaker_calls_total{outcome}` (`success`, `failure`,
    /// `slow_success`, `slow_failure`, `short_circuited`) and
    /// `palisade_breaker_transitions_total{to}`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        let sub = registry.sub_registry_with_label((
            std::borrow::Cow::Borrowed("breaker"),
            std::borrow::Cow::Borrowed(self.inner.name),
        ));
        sub.register(
            "palisade_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            m.state.clone(),
        );
        sub.register(
            "palisade_breaker_calls",
            "Calls through the circuit breaker, by outcome",
            m.calls.clone(),
        );
        sub.register(
            "palisade_breaker_transitions",
            "Circuit breaker state changes",
            m.transitions.clone(),
        );
    }

    /// Calls counted with `outcome` (`success`, `failure`, `slow_success`,
    /// `slow_failure`, `short_circuited`).
    pub fn calls(&self, outcome: &str) -> u64 {
        let m = &self.inner.metrics;
        match outcome {
            "success" => m.success.get(),
            "failure" => m.failure.get(),
            "slow_success" => m.slow_success.get(),
            "slow_failure" => m.slow_failure.get(),
            "short_circuited" => m.short_circuited.get(),
            _ => 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.inner
            .core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn settle(&self, permit: &Permit, failed: bool, slow: bool) {
        let m = &self.inner.metrics;
        match (failed, slow) {
            (false, false) => m.success.inc(),
            (true, false) => m.failure.inc(),
            (false, true) => m.slow_success.inc(),
            (true, true) => m.slow_failure.inc(),
        };
        let config = &self.inner.config;
        let now = self.inner.clock.now();
        let mut core = self.lock();
        if core.generation != permit.generation {
            // Admitted in an earlier state: its outcome is stale.
            return;
        }
        let change = match core.phase {
            Phase::Closed => {
                let counts = core.outcomes.record(failed, slow, now);
                let over = |n: u32, percent: u8| {
                    u64::from(n) * 100 >= u64::from(percent) * u64::from(counts.calls)
                };
                let open = counts.calls >= config.minimum_calls
                    && (over(counts.failures, config.failure_rate)
                        || over(counts.slow, config.slow_call_rate));
                open.then(|| {
                    core.backoff = config.open_for;
                    core.phase = Phase::Open {
                        until: now + core.backoff,
                    };
                    (State::Closed, State::Open)
                })
            }
            Phase::HalfOpen {
                admitted,
                succeeded,
            } => {
                if failed || slow {
                    if permit.probe {
                        core.backoff = (core.backoff * 2).min(config.max_open_for);
                    }
                    core.phase = Phase::Open {
                        until: now + core.backoff,
                    };
                    Some((State::HalfOpen, State::Open))
                } else if succeeded + 1 >= config.half_open_calls {
                    core.phase = Phase::Closed;
                    core.backoff = config.open_for;
                    core.outcomes = Outcomes::new(config.window, now);
                    Some((State::HalfOpen, State::Closed))
                } else {
                    core.phase = Phase::HalfOpen {
                        admitted,
                        succeeded: succeeded + 1,
                    };
                    None
                }
            }
            Phase::Open { .. } => None,
        };
        if change.is_some() {
            core.generation += 1;
        }
        drop(core);
        self.changed(change);
    }

    fn changed(&self, change: Option<(State, State)>) {
        let Some((from, to)) = change else { return };
        let name = self.inner.name;
        let m = &self.inner.metrics;
        m.state.set(to.gauge());
        m.transitions
            .get_or_create(&TransitionLabels { to: to.as_str() })
            .inc();
        if to == State::Open {
            tracing::warn!(target: "palisade::breaker", breaker = name, from = from.as_str(), to = to.as_str(), "circuit breaker opened; calls are refused at once");
        } else {
            tracing::info!(target: "palisade::breaker", breaker = name, from = from.as_str(), to = to.as_str(), "circuit breaker state changed");
        }
        for callback in &self.inner.config.on_state_change {
            callback(StateChange {
                breaker: name,
                from,
                to,
            });
        }
    }
}

/// Leave to make one call: settle it with [`Permit::success`],
/// [`Permit::failure`] or [`Permit::record`]. Dropped unsettled, a probe
/// counts as a failure (see the module docs).
#[must_use = "settle the permit with the call's outcome"]
pub struct Permit {
    breaker: Option<CircuitBreaker>,
    started: Instant,
    generation: u64,
    probe: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded (it may still have been slow).
    pub fn success(self) {
        self.record(true);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(false);
    }

    /// The call succeeded (`true`) or failed (`false`).
    pub fn record(mut self, ok: bool) {
        if let Some(breaker) = self.breaker.take() {
            let slow = self.elapsed(&breaker) >= breaker.inner.config.slow_call_duration;
            breaker.settle(&self, !ok, slow);
        }
    }

    fn elapsed(&self, breaker: &CircuitBreaker) -> Duration {
        breaker
            .inner
            .clock
            .now()
            .saturating_duration_since(self.started)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            let slow = self.elapsed(&breaker) >= breaker.inner.config.slow_call_duration;
            if self.probe || slow {
                breaker.settle(self, true, slow);
            }
        }
    }
}

#[cfg(test)]
mod tests;

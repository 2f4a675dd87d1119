//! Supervised background tasks: restarted with backoff when they fail or
//! panic, given up (and readiness told) when they keep failing, stopped with
//! the service.
//!
//! A loop started with a bare `tokio::spawn` dies on its first error or panic
//! and nobody notices: orders stop syncing for days. A [`Supervisor`] runs
//! named [`Task`]s instead:
//!
//! - **one-shot** ([`Task::new`]): runs until it returns `Ok(())` (done) or
//!   its cancellation token fires; an `Err` or a panic restarts it;
//! - **periodic** ([`Task::periodic`]): runs now and then every interval; a
//!   failed run is retried with backoff before the next tick; runs **never
//!   overlap** (the next run is scheduled when the previous one ends, see
//!   [`MissedTicks`]).
//!
//! | what | default | set with |
//! | --- | --- | --- |
//! | restart delay | exponential from [1 s](DEFAULT_BACKOFF_BASE) to [5 min](DEFAULT_BACKOFF_CAP), full jitter ([`Backoff`]) | [`Task::backoff`] |
//! | restart budget | [10](DEFAULT_MAX_RESTARTS) restarts per [10 min](DEFAULT_RESTART_WINDOW) (sliding); the next failure gives the task up for good | [`Task::restart_budget`] |
//! | criticality | critical: a given-up task turns readiness red | [`Task::non_critical`]: degraded only |
//! | attempt timeout | none | [`Task::attempt_timeout`]: a slower attempt is dropped and counted as a failure |
//! | missed ticks (periodic) | [`MissedTicks::Skip`] | [`Task::missed_ticks`] |
//!
//! An error, a panic (caught; its message redacted as
//! [`PanicMessage`] does) and an
//! attempt timeout are all failures. The restart delay after the `n`-th
//! failure still in the budget window is drawn from `[0, min(cap, base ·
//! 2ⁿ⁻¹)]`, so a task that stops failing also stops backing off once its old
//! failures leave the window.
//!
//! **Time.** Delays, windows and schedules run on tokio's timer: tests pause
//! it (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) and never
//! really sleep. The last-success timestamp comes from the
//! [`Clock`](palisade_core::Clock) given to [`SupervisorBuilder::clock`]; the
//! jitter from [`SupervisorBuilder::jitter`] (seed it to predict delays).
//!
//! **Shutdown.** Every task gets a [`CancellationToken`] (in its
//! [`TaskContext`]), a child of the supervisor's: [`Supervisor::cancel`] (or
//! the future given to [`Supervisor::cancel_on`], e.g. the server's shutdown
//! signal) fires them all; [`Supervisor::shutdown`] then waits for the tasks
//! up to a deadline, aborts those still running and reports their names.
//! Cancellation is cooperative: a task ends its work (commits, flushes) and
//! returns; whatever it returns after cancellation is not a failure.
//!
//! **Observability.** Logs (target `palisade_resilience::supervisor`; fields
//! `task`, `attempt`, `delay_ms`, `failures`, `error`): WARN for each failure
//! with the restart delay, ERROR when a task is given up, WARN when a
//! periodic run overran its interval, INFO when a task completes, DEBUG for
//! each successful periodic run. Metrics ([`Supervisor::register_metrics`]):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `palisade_task_restarts_total` | counter | `task` |
//! | `palisade_task_failures_total` | counter | `task`, `kind` (`error`, `panic`, `timeout`) |
//! | `palisade_task_last_success_timestamp_seconds` | gauge (UNIX seconds) | `task` |
//! | `palisade_task_state` | gauge, 1 for the current state | `task`, `state` (see [`TaskState`]) |
//!
//! **Readiness.** [`Supervisor::register_readiness`] adds the `tasks` check:
//! `down` (503) when a critical task was given up, `degraded` when only
//! non-critical ones were, with their names as the reason.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use palisade_resilience::supervisor::{Supervisor, Task, TaskState};
//! use palisade_telemetry::Readiness;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let supervisor = Supervisor::new();
//! let readiness = Readiness::with_cache(Duration::ZERO, palisade_core::SystemClock::shared());
//! supervisor.register_readiness(&readiness);
//!
//! // A periodic job: runs now, then every hour, until shutdown.
//! let runs = Arc::new(AtomicU32::new(0));
//! let counter = runs.clone();
//! supervisor.spawn(
//!     Task::periodic("prune", Duration::from_secs(3600), move |ctx| {
//!         let counter = counter.clone();
//!         async move {
//!             counter.fetch_add(1, Ordering::SeqCst);
//!             // Long work checks ctx.token() / ctx.is_cancelled() to stop early.
//!             let _ = ctx.attempt();
//!             Ok::<(), std::io::Error>(())
//!         }
//!     })
//!     .non_critical(),
//! ).unwrap();
//!
//! // A critical loop that always fails: restarted twice, then given up.
//! supervisor.spawn(
//!     Task::new("sync", |_ctx| async { Err::<(), _>("upstream refused") })
//!         .restart_budget(2, Duration::from_secs(60)),
//! ).unwrap();
//!
//! tokio::time::sleep(Duration::from_secs(7201)).await; // paused time: instant
//! assert_eq!(runs.load(Ordering::SeqCst), 3); // at 0 s, 1 h and 2 h
//! assert_eq!(supervisor.status("sync").unwrap().state, TaskState::GivenUp);
//! assert_eq!(supervisor.status("sync").unwrap().restarts, 2);
//! let report = readiness.check().await;
//! assert_eq!(report.status(), 503);
//! assert_eq!(report.to_json()["checks"]["tasks"]["reason"], "given up: sync");
//!
//! let stopped = supervisor.shutdown(Duration::from_secs(5)).await;
//! assert!(stopped.not_stopped.is_empty());
//! assert_eq!(supervisor.status("prune").unwrap().state, TaskState::Stopped);
//! # });
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use palisade_core::panic_message::PanicMessage;
use palisade_core::{ConfigError, SharedClock, SystemClock};
use palisade_telemetry::readiness::{Health, Readiness};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio::time::Instant;
pub use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, Jitter};

/// The first restart delay's upper bound.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The largest restart delay.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Restarts allowed within [`DEFAULT_RESTART_WINDOW`] before a task is given up.
pub const DEFAULT_MAX_RESTARTS: u32 = 10;
/// The sliding window of the restart budget.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(600);
/// The name of the readiness check [`Supervisor::register_readiness`] adds.
pub const READINESS_CHECK: &str = "tasks";

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type RunFn = Arc<dyn Fn(TaskContext) -> TaskFuture + Send + Sync>;

/// What a periodic task does when a run (with its retries) outlasts its
/// interval. Runs never overlap either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTicks {
    /// Stay on the schedule (start + k · interval): the ticks that passed
    /// during the slow run are dropped, and the next run starts at the first
    /// tick at or after its end. A slow run costs its missed runs, never a
    /// burst of catch-up runs.
    #[default]
    Skip,
    /// Move the schedule: the next run starts one full interval after the
    /// slow run ended (and the ticks after it follow from there).
    Delay,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// An attempt is running.
    Running,
    /// A periodic task waits for its next tick.
    Idle,
    /// Waiting to restart after a failure.
    BackingOff,
    /// A one-shot task returned `Ok(())`.
    Completed,
    /// Stopped by cancellation (shutdown).
    Stopped,
    /// It failed more often than its restart budget allows: it is not run again.
    GivenUp,
}

impl TaskState {
    const ALL: [Self; 6] = [
        Self::Running,
        Self::Idle,
        Self::BackingOff,
        Self::Completed,
        Self::Stopped,
        Self::GivenUp,
    ];

    /// The state's label value (`running`, `idle`, `backing_off`,
    /// `completed`, `stopped`, `given_up`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Idle => "idle",
            Self::BackingOff => "backing_off",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::GivenUp => "given_up",
        }
    }
}

/// What a task's attempt is given: its name, attempt number and cancellation token.
#[derive(Debug, Clone)]
pub struct TaskContext {
    name: Arc<str>,
    attempt: u64,
    token: CancellationToken,
}

impl TaskContext {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This attempt's number, from 1, over the task's life (each periodic
    /// run and each restart is one attempt).
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// The token that fires when the task must stop (shutdown). Pass it on
    /// to the work the attempt starts.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether the task must stop.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the task must stop.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }
}

#[derive(Clone, Copy)]
enum Schedule {
    Once,
    Every(Duration, MissedTicks),
}

/// A task to supervise: its name, its work and its policy. See the
/// [module docs](self) for the defaults.
#[must_use]
pub struct Task {
    name: String,
    schedule: Schedule,
    run: RunFn,
    critical: bool,
    backoff: (Duration, Duration),
    budget: (u32, Duration),
    attempt_timeout: Option<Duration>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// A one-shot task: `run` is called again (after a backoff delay) when it
    /// fails or panics, and not after it returns `Ok(())`. A loop that should
    /// run until shutdown returns when its token fires.
    pub fn new<F, Fut, E>(name: impl Into<String>, run: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        Self::with_schedule(name.into(), Schedule::Once, run)
    }

    /// A periodic task: `run` is called at once, then every `interval`; a
    /// failed run is retried (after a backoff delay) before the next tick.
    pub fn periodic<F, Fut, E>(name: impl Into<String>, interval: Duration, run: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        Self::with_schedule(
            name.into(),
            Schedule::Every(interval, MissedTicks::default()),
            run,
        )
    }

    fn with_schedule<F, Fut, E>(name: String, schedule: Schedule, run: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let run: RunFn = Arc::new(move |ctx| {
            let attempt = run(ctx);
            Box::pin(async move { attempt.await.map_err(|e| e.to_string()) })
        });
        Self {
            name,
            schedule,
            run,
            critical: true,
            backoff: (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP),
            budget: (DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW),
            attempt_timeout: None,
        }
    }

    /// A given-up task only degrades readiness (the service works without it).
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }

    /// Restart delays from (up to) `base`, doubling, up to `cap`, with full jitter.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff = (base, cap);
        self
    }

    /// At most `max_restarts` restarts within any `window`: the failure after
    /// them gives the task up. `0` gives up at the first failure.
    pub fn restart_budget(mut self, max_restarts: u32, window: Duration) -> Self {
        self.budget = (max_restarts, window);
        self
    }

    /// An attempt running longer than `timeout` is dropped and counted as a
    /// failure (a hung periodic job is noticed instead of blocking every
    /// later run).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The missed-tick policy of a periodic task (no effect on one-shot tasks).
    pub fn missed_ticks(mut self, policy: MissedTicks) -> Self {
        if let Schedule::Every(interval, _) = self.schedule {
            self.schedule = Schedule::Every(interval, policy);
        }
        self
    }
}

/// A task's observable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task's name.
    pub name: String,
    /// Where it is.
    pub state: TaskState,
    /// Whether giving it up turns readiness red.
    pub critical: bool,
    /// Attempts started.
    pub attempts: u64,
    /// Failures (errors, panics, timeouts).
    pub failures: u64,
    /// Restarts after a failure.
    pub restarts: u64,
    /// When an attempt last succeeded (UNIX time of the supervisor's clock).
    pub last_success: Option<Duration>,
}

/// What [`Supervisor::shutdown`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks that stopped within the deadline.
    pub stopped: Vec<String>,
    /// Tasks still running at the deadline (they were aborted).
    pub not_stopped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    task: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    task: String,
    state: &'static str,
}

#[derive(Debug, Default)]
struct Metrics {
    restarts: Family<TaskLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    last_success: Family<TaskLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
}

#[derive(Debug)]
struct Progress {
    state: TaskState,
    attempts: u64,
    failures: u64,
    restarts: u64,
    last_success: Option<Duration>,
}

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    critical: bool,
    token: CancellationToken,
    progress: Mutex<Progress>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    root: CancellationToken,
    tasks: Mutex<Vec<Arc<Entry>>>,
    jitter: Jitter,
    clock: SharedClock,
    metrics: Metrics,
}

/// Runs and watches [`Task`]s. Cheap to clone (shared). See the [module docs](self).
#[derive(Clone)]
pub struct Supervisor(Arc<Shared>);

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.entries().iter().map(|e| e.name.to_string()).collect();
        f.debug_struct("Supervisor")
            .field("tasks", &names)
            .field("cancelled", &self.0.root.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`Supervisor`] with another clock or jitter source (tests).
#[derive(Debug, Default)]
#[must_use]
pub struct SupervisorBuilder {
    clock: Option<SharedClock>,
    jitter: Option<Jitter>,
}

impl SupervisorBuilder {
    /// The clock of last-success timestamps (default: the system's).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The jitter of restart delays (default: seeded per process).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// The supervisor.
    pub fn build(self) -> Supervisor {
        Supervisor(Arc::new(Shared {
            root: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            jitter: self.jitter.unwrap_or_default(),
            clock: self.clock.unwrap_or_else(SystemClock::shared),
            metrics: Metrics::default(),
        }))
    }
}

impl Supervisor {
    /// A supervisor on the system clock with per-process jitter.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder, to inject the clock or the jitter.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::default()
    }

    /// Starts supervising `task` (on the current tokio runtime). A task
    /// spawned after [`cancel`](Self::cancel) stops at once.
    ///
    /// # Errors
    ///
    /// An empty or already used name, a zero interval, window or attempt
    /// timeout, or an invalid backoff.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(&self, task: Task) -> Result<(), ConfigError> {
        let backoff = Backoff::new(task.backoff.0, task.backoff.1)
            .map_err(|e| ConfigError::new("task.backoff", e.rule().to_owned()))?;
        if task.name.is_empty() {
            return Err(ConfigError::new("task.name", "must not be empty"));
        }
        if task.budget.1.is_zero() {
            return Err(ConfigError::new(
                "task.restart_budget",
                "the window must be above zero",
            ));
        }
        if task.attempt_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "task.attempt_timeout",
                "must be above zero",
            ));
        }
        if let Schedule::Every(interval, _) = task.schedule
            && interval.is_zero()
        {
            return Err(ConfigError::new("task.interval", "must be above zero"));
        }
        let entry = {
            let mut tasks = self.0.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            if tasks.iter().any(|e| *e.name == *task.name) {
                return Err(ConfigError::new(
                    "task.name",
                    format!("a task named `{}` is already supervised", task.name),
                ));
            }
            let entry = Arc::new(Entry {
                name: Arc::from(task.name.as_str()),
                critical: task.critical,
                token: self.0.root.child_token(),
                progress: Mutex::new(Progress {
                    state: TaskState::Running,
                    attempts: 0,
                    failures: 0,
                    restarts: 0,
                    last_success: None,
                }),
                handle: Mutex::new(None),
            });
            tasks.push(Arc::clone(&entry));
            entry
        };
        self.publish_state(&entry, TaskState::Running);
        let run = Run {
            shared: Arc::clone(&self.0),
            entry: Arc::clone(&entry),
            work: task.run,
            backoff,
            budget: task.budget,
            attempt_timeout: task.attempt_timeout,
            failures: VecDeque::new(),
        };
        let handle = tokio::spawn(run.supervise(task.schedule));
        *entry.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(())
    }

    /// Fires every task's cancellation token (tasks spawned later start
    /// cancelled). Returns at once; [`shutdown`](Self::shutdown) waits.
    pub fn cancel(&self) {
        self.0.root.cancel();
    }

    /// Cancels every task when `signal` completes (the server's shutdown
    /// signal, a `ctrl_c()`, a oneshot receiver...).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn cancel_on(&self, signal: impl Future<Output = ()> + Send + 'static) {
        let root = self.0.root.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = signal => root.cancel(),
                () = root.cancelled() => {}
            }
        });
    }

    /// Cancels every task, waits up to `deadline` for all of them to end,
    /// aborts the ones still running, and says which stopped and which did not.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.cancel();
        let until = Instant::now() + deadline;
        let mut report = ShutdownReport::default();
        for entry in self.entries() {
            let handle = entry
                .handle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let Some(mut handle) = handle else { continue };
            if tokio::time::timeout_at(until, &mut handle).await.is_ok() {
                report.stopped.push(entry.name.to_string());
            } else {
                handle.abort();
                Run::set_state(&self.0, &entry, TaskState::Stopped);
                report.not_stopped.push(entry.name.to_string());
            }
        }
        if report.not_stopped.is_empty() {
            tracing::info!(tasks = report.stopped.len(), "every task stopped");
        } else {
            tracing::warn!(
                tasks = %report.not_stopped.join(", "),
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                "tasks did not stop within the shutdown deadline; aborted"
            );
        }
        report
    }

    /// The status of the task named `name`.
    pub fn status(&self, name: &str) -> Option<TaskStatus> {
        self.entries()
            .iter()
            .find(|e| *e.name == *name)
            .map(|e| Self::status_of(e))
    }

    /// The status of every task, in the order they were spawned.
    pub fn statuses(&self) -> Vec<TaskStatus> {
        self.entries().iter().map(|e| Self::status_of(e)).collect()
    }

    fn status_of(entry: &Entry) -> TaskStatus {
        let p = entry
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        TaskStatus {
            name: entry.name.to_string(),
            state: p.state,
            critical: entry.critical,
            attempts: p.attempts,
            failures: p.failures,
            restarts: p.restarts,
            last_success: p.last_success,
        }
    }

    /// The tasks' health: `Down` when a critical task was given up,
    /// `Degraded` when only non-critical ones were (the reason names them),
    /// `Up` otherwise.
    pub fn health(&self) -> Health {
        let (mut critical, mut optional) = (Vec::new(), Vec::new());
        for status in self.statuses() {
            if status.state == TaskState::GivenUp {
                if status.critical {
                    critical.push(status.name);
                } else {
                    optional.push(status.name);
                }
            }
        }
        if !critical.is_empty() {
            critical.extend(optional);
            Health::Down(format!("given up: {}", critical.join(", ")))
        } else if !optional.is_empty() {
            Health::Degraded(format!("given up: {}", optional.join(", ")))
        } else {
            Health::Up
        }
    }

    /// Registers the [`READINESS_CHECK`] (`tasks`) check with `readiness`:
    /// see [`health`](Self::health).
    pub fn register_readiness(&self, readiness: &Readiness) {
        let supervisor = self.clone();
        readiness.register_health(READINESS_CHECK, Duration::from_secs(1), move || {
            let health = supervisor.health();
            async move { health }
        });
    }

    /// Adds the supervisor's metrics (see the [module docs](self)) to `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.0.metrics;
        registry.register(
            "palisade_task_restarts",
            "Restarts of supervised tasks after a failure",
            m.restarts.clone(),
        );
        registry.register(
            "palisade_task_failures",
            "Failed attempts of supervised tasks, by kind",
            m.failures.clone(),
        );
        registry.register(
            "palisade_task_last_success_timestamp_seconds",
            "When an attempt of the task last succeeded (UNIX time)",
            m.last_success.clone(),
        );
        registry.register(
            "palisade_task_state",
            "1 for the state each supervised task is in",
            m.state.clone(),
        );
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        self.0
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish_state(&self, entry: &Entry, state: TaskState) {
        Run::set_state(&self.0, entry, state);
    }
}

/// Why an attempt failed.
enum Failure {
    Error(String),
    Panic(String),
    Timeout(Duration),
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Self::Error(_) => "error",
            Self::Panic(_) => "panic",
            Self::Timeout(_) => "timeout",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(e) => f.write_str(e),
            Self::Panic(message) => write!(f, "panicked: {message}"),
            Self::Timeout(t) => write!(f, "attempt timed out after {} ms", t.as_millis()),
        }
    }
}

enum Outcome {
    Succeeded,
    Cancelled,
    Failed(Failure),
}

/// One task's supervision loop.
struct Run {
    shared: Arc<Shared>,
    entry: Arc<Entry>,
    work: RunFn,
    backoff: Backoff,
    budget: (u32, Duration),
    attempt_timeout: Option<Duration>,
    /// When the failures still in the budget window happened.
    failures: VecDeque<Instant>,
}

impl Run {
    async fn supervise(mut self, schedule: Schedule) {
        match schedule {
            Schedule::Once => loop {
                match self.attempt().await {
                    Outcome::Succeeded => {
                        tracing::info!(task = %self.entry.name, "task completed");
                        return self.set(TaskState::Completed);
                    }
                    Outcome::Cancelled => return self.stopped(),
                    Outcome::Failed(failure) => {
                        if !self.restart_after(&failure).await {
                            return;
                        }
                    }
                }
            },
            Schedule::Every(interval, missed) => {
                let mut scheduled = Instant::now();
                loop {
                    self.set(TaskState::Idle);
                    tokio::select! {
                        biased;
                        () = self.entry.token.cancelled() => return self.stopped(),
                        () = tokio::time::sleep_until(scheduled) => {}
                    }
                    // One run: attempts until one succeeds.
                    loop {
                        match self.attempt().await {
                            Outcome::Succeeded => break,
                            Outcome::Cancelled => return self.stopped(),
                            Outcome::Failed(failure) => {
                                if !self.restart_after(&failure).await {
                                    return;
                                }
                            }
                        }
                    }
                    let (next, missed_ticks) =
                        next_run(scheduled, interval, missed, Instant::now());
                    if missed_ticks > 0 {
                        tracing::warn!(
                            task = %self.entry.name,
                            missed_ticks,
                            policy = ?missed,
                            "periodic task overran its interval"
                        );
                    }
                    scheduled = next;
                }
            }
        }
    }

    /// Runs one attempt: panics caught, bounded by the attempt timeout.
    /// None starts once the task is cancelled.
    async fn attempt(&mut self) -> Outcome {
        if self.entry.token.is_cancelled() {
            return Outcome::Cancelled;
        }
        let attempt = {
            let mut p = self.progress();
            p.attempts += 1;
            p.attempts
        };
        self.set(TaskState::Running);
        let ctx = TaskContext {
            name: Arc::clone(&self.entry.name),
            attempt,
            token: self.entry.token.clone(),
        };
        let run = Arc::clone(&self.work);
        // A panic while building the future counts like one while polling it.
        let work = async move { (run)(ctx).await };
        let work = AssertUnwindSafe(work).catch_unwind();
        let result = match self.attempt_timeout {
            None => Some(work.await),
            Some(limit) => tokio::time::timeout(limit, work).await.ok(),
        };
        if self.entry.token.is_cancelled() {
            return Outcome::Cancelled;
        }
        match result {
            Some(Ok(Ok(()))) => {
                let now = self.shared.clock.unix_now();
                self.progress().last_success = Some(now);
                self.shared
                    .metrics
                    .last_success
                    .get_or_create(&self.labels())
                    .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
                tracing::debug!(task = %self.entry.name, attempt, "task attempt succeeded");
                Outcome::Succeeded
            }
            Some(Ok(Err(error))) => Outcome::Failed(Failure::Error(error)),
            Some(Err(payload)) => Outcome::Failed(Failure::Panic(
                PanicMessage::new(&*payload, true).to_string(),
            )),
            None => Outcome::Failed(Failure::Timeout(self.attempt_timeout.unwrap_or_default())),
        }
    }

    /// Counts `failure`; gives the task up when the budget is spent, else
    /// waits the backoff delay (or until cancelled). Whether to try again.
    async fn restart_after(&mut self, failure: &Failure) -> bool {
        let now = Instant::now();
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.budget.1)
        {
            self.failures.pop_front();
        }
        let attempt = {
            let mut p = self.progress();
            p.failures += 1;
            p.attempts
        };
        self.shared
            .metrics
            .failures
            .get_or_create(&FailureLabels {
                task: self.entry.name.to_string(),
                kind: failure.kind(),
            })
            .inc();
        let failures = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if failures > self.budget.0 {
            tracing::error!(
                task = %self.entry.name,
                attempt,
                failures,
                window_s = self.budget.1.as_secs(),
                critical = self.entry.critical,
                error = %failure,
                "task failed more often than its restart budget allows; given up"
            );
            self.set(TaskState::GivenUp);
            return false;
        }
        let delay = self.backoff.delay(failures, &self.shared.jitter);
        tracing::warn!(
            task = %self.entry.name,
            attempt,
            failures,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %failure,
            "task failed; restarting after a delay"
        );
        self.set(TaskState::BackingOff);
        tokio::select! {
            biased;
            () = self.entry.token.cancelled() => {
                self.stopped();
                false
            }
            () = tokio::time::sleep(delay) => {
                self.progress().restarts += 1;
                self.shared.metrics.restarts.get_or_create(&self.labels()).inc();
                true
            }
        }
    }

    fn stopped(&self) {
        tracing::debug!(task = %self.entry.name, "task stopped");
        self.set(TaskState::Stopped);
    }

    fn set(&self, state: TaskState) {
        Self::set_state(&self.shared, &self.entry, state);
    }

    /// Records `state` and moves the state gauge (under the progress lock,
    /// so concurrent updates cannot leave two states at 1).
    fn set_state(shared: &Shared, entry: &Entry, state: TaskState) {
        let mut p = entry
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.state = state;
        for s in TaskState::ALL {
            shared
                .metrics
                .state
                .get_or_create(&StateLabels {
                    task: entry.name.to_string(),
                    state: s.as_str(),
                })
                .set(i64::from(s == state));
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.entry
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn labels(&self) -> TaskLabels {
        TaskLabels {
            task: self.entry.name.to_string(),
        }
    }
}

/// When the run after the one `scheduled` at, ending `now`, starts, and how
/// many ticks were missed.
fn next_run(
    scheduled: Instant,
    interval: Duration,
    policy: MissedTicks,
    now: Instant,
) -> (Instant, u64) {
    let due = scheduled + interval;
    if due >= now {
        return (due, 0);
    }
    let behind = now.saturating_duration_since(scheduled).as_nanos();
    let step = interval.as_nanos().max(1);
    let passed = u64::try_from(behind / step).unwrap_or(u64::MAX);
    match policy {
        MissedTicks::Delay => (now + interval, passed),
        MissedTicks::Skip => {
            let ticks = if behind.is_multiple_of(step) {
                passed
            } else {
                passed.saturating_add(1)
            };
            let at = u32::try_from(ticks)
                .ok()
                .and_then(|t| interval.checked_mul(t))
                .and_then(|offset| scheduled.checked_add(offset))
                .unwrap_or(now + interval);
            (at, ticks.saturating_sub(1))
        }
    }
}

#[cfg(test)]
mod tests;

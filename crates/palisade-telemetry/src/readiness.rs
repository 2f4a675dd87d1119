//! Readiness: named checks, run in parallel with their own deadlines, cached
//! briefly, degraded rather than red when a dependency with a fallback is
//! down, red as soon as shutdown starts.
//!
//! Components register a check (the database, the shared store, background
//! tasks); [`Readiness::check`] runs them all concurrently, each bounded by its
//! timeout, and reports `up`/`degraded`/`down` with the latency of each. The
//! result is cached for a short time (1 s by default) and computed by one
//! caller at a time, so a flood of probes costs one round of checks, not one
//! per probe. [`begin_shutdown`](Readiness::begin_shutdown) turns the report
//! red at once (load balancers stop sending before the drain) without running
//! checks.
//!
//! # Critical and degradable checks
//!
//! A load balancer drains every instance whose readiness is red. When a
//! dependency that *every* instance shares goes away (a Redis holding rate
//! limits), red readiness everywhere is a total outage, although the service
//! was built to fall back (per-instance memory limits). So each check says
//! what its failure means:
//!
//! | registered with | when it fails (error, timeout, panic) | the report |
//! | --- | --- | --- |
//! | [`register`](Readiness::register) (critical) | `"down"` | 503 `not_ready` |
//! | [`register_degradable`](Readiness::register_degradable) | `"degraded"` | 200 `degraded` |
//! | [`register_health`](Readiness::register_health) | what the check returns ([`Health`]); a timeout or panic is `"down"` | by the worst check |
//!
//! The body keeps one shape: `{"status":"ready"|"degraded"|"not_ready",
//! "checks":{name:{"status":"up"|"degraded"|"down","latency_ms":..,"reason":..}}}`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_telemetry::Readiness;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let readiness = Readiness::with_cache(Duration::ZERO, palisade_core::SystemClock::shared());
//! readiness.register("database", Duration::from_secs(1), || async { Ok(()) });
//! readiness.register_degradable("store", Duration::from_secs(1), || async {
//!     Err("connection refused".to_owned())
//! });
//! let report = readiness.check().await;
//! assert!(report.ready && report.degraded);
//! assert_eq!(report.status(), 200);
//! let json = report.to_json();
//! assert_eq!(json["status"], "degraded");
//! assert_eq!(json["checks"]["database"]["status"], "up");
//! assert_eq!(json["checks"]["store"]["status"], "degraded");
//! assert_eq!(json["checks"]["store"]["reason"], "connection refused");
//!
//! // A critical check failing turns the whole report red.
//! readiness.register("queue", Duration::from_secs(1), || async { Err("unreachable".to_owned()) });
//! let report = readiness.check().await;
//! assert!(!report.ready);
//! assert_eq!(report.status(), 503);
//! assert_eq!(report.to_json()["status"], "not_ready");
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use palisade_core::{SharedClock, SystemClock};
use serde_json::{Map, Value, json};

type CheckFuture = Pin<Box<dyn Future<Output = Health> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// How long a report is reused by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);

/// What a check found. Reasons are served to probes: keep them short and
/// free of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Working.
    Up,
    /// Failing, but the service still serves (a fallback took over).
    Degraded(String),
    /// Failing, and the service cannot serve without it.
    Down(String),
}

/// The state of one check in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// It passed.
    Up,
    /// It failed, and a fallback serves: the report stays 200.
    Degraded,
    /// It failed, and it is critical: the report is 503.
    Down,
}

impl CheckStatus {
    /// `up`, `degraded` or `down`, as served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

#[derive(Clone)]
struct Check {
    name: String,
    timeout: Duration,
    /// What a timeout or a panic means for this check.
    on_crash: CheckStatus,
    run: CheckFn,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Whether it passed within its timeout, and if not what that means.
    pub status: CheckStatus,
    /// How long it took, in milliseconds.
    pub latency_ms: f64,
    /// Why it failed (`timed out`, or the check's own short reason).
    pub reason: Option<String>,
}

/// A readiness report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadinessReport {
    /// No critical check is down and the service is not shutting down: the
    /// service should get traffic (200), degraded or not.
    pub ready: bool,
    /// At least one degradable check failed (the service runs on a fallback).
    pub degraded: bool,
    /// Whether shutdown has started.
    pub shutting_down: bool,
    /// Each check's outcome, in registration order.
    pub checks: Vec<CheckResult>,
}

impl ReadinessReport {
    fn new(checks: Vec<CheckResult>, shutting_down: bool) -> Self {
        Self {
            ready: !shutting_down && checks.iter().all(|c| c.status != CheckStatus::Down),
            degraded: checks.iter().any(|c| c.status == CheckStatus::Degraded),
            shutting_down,
            checks,
        }
    }

    /// `{"status":"ready"|"degraded"|"not_ready","checks":{name:{status,latency_ms,reason?}}}`,
    /// plus `"reason":"shutting down"` during shutdown.
    pub fn to_json(&self) -> Value {
        let mut checks = Map::new();
        for c in &self.checks {
            let mut entry = json!({ "status": c.status.as_str(), "latency_ms": c.latency_ms });
            if let (Some(reason), Some(obj)) = (&c.reason, entry.as_object_mut()) {
                obj.insert("reason".to_owned(), Value::from(reason.clone()));
            }
            checks.insert(c.name.clone(), entry);
        }
        let status = match (self.ready, self.degraded) {
            (false, _) => "not_ready",
            (true, true) => "degraded",
            (true, false) => "ready",
        };
        let mut body = json!({ "status": status, "checks": checks });
        if let (true, Some(obj)) = (self.shutting_down, body.as_object_mut()) {
            obj.insert("reason".to_owned(), Value::from("shutting down"));
        }
        body
    }

    /// 200 when ready (degraded included), 503 otherwise.
    pub fn status(&self) -> http::StatusCode {
        if self.ready {
            http::StatusCode::OK
        } else {
            http::StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

struct Inner {
    checks: RwLock<Vec<Check>>,
    cache: tokio::sync::Mutex<Option<(Instant, ReadinessReport)>>,
    ttl: Duration,
    clock: SharedClock,
    shutting_down: AtomicBool,
}

/// The readiness registry. Cheap to clone (shared). See the [module docs](self).
#[derive(Clone)]
pub struct Readiness(Arc<Inner>);

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ttl", &self.0.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// A registry with no check, caching reports for one second.
    pub fn new() -> Self {
        Self::with_cache(DEFAULT_CACHE_TTL, SystemClock::shared())
    }

    /// A registry caching reports for `ttl`, measured on `clock`.
    pub fn with_cache(ttl: Duration, clock: SharedClock) -> Self {
        Self(Arc::new(Inner {
            checks: RwLock::new(Vec::new()),
            cache: tokio::sync::Mutex::new(None),
            ttl,
            clock,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Registers a **critical** check: it is `down`, and the report red,
    /// when it returns `Err(reason)` (keep the reason short and free of
    /// secrets: it is served to probes), exceeds `timeout` or panics.
    pub fn register<F, Fut>(&self, name: impl Into<String>, timeout: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.push(name.into(), timeout, CheckStatus::Down, move || {
            let run = check();
            async move { run.await.map_or_else(Health::Down, |()| Health::Up) }
        });
    }

    /// Registers a **degradable** check (a dependency the service has a
    /// fallback for): when it fails (error, timeout or panic) it is
    /// `degraded` with its reason, and the report stays 200 `degraded`.
    pub fn register_degradable<F, Fut>(&self, name: impl Into<String>, timeout: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.push(name.into(), timeout, CheckStatus::Degraded, move || {
            let run = check();
            async move { run.await.map_or_else(Health::Degraded, |()| Health::Up) }
        });
    }

    /// Registers a check that decides itself how bad its failure is (the
    /// background tasks: a given-up critical task is `Down`, a given-up
    /// optional one `Degraded`). A timeout or a panic is `down`.
    pub fn register_health<F, Fut>(&self, name: impl Into<String>, timeout: Duration, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        self.push(name.into(), timeout, CheckStatus::Down, check);
    }

    fn push<F, Fut>(&self, name: String, timeout: Duration, on_crash: CheckStatus, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        let run: CheckFn = Arc::new(move || Box::pin(check()));
        if let Ok(mut checks) = self.0.checks.write() {
            checks.push(Check {
                name,
                timeout,
                on_crash,
                run,
            });
        }
    }

    /// Turns readiness red from now on (call it when SIGTERM arrives, before draining).
    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::Release);
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }

    /// The current report: cached when fresh, otherwise computed (by one
    /// caller; concurrent callers wait for it and share it).
    pub async fn check(&self) -> ReadinessReport {
        let mut cache = self.0.cache.lock().await;
        if self.is_shutting_down() {
            let checks = cache
                .as_ref()
                .map(|(_, r)| r.checks.clone())
                .unwrap_or_default();
            return ReadinessReport::new(checks, true);
        }
        let now = self.0.clock.now();
        if let Some((at, report)) = cache.as_ref()
            && now.saturating_duration_since(*at) < self.0.ttl
        {
            return report.clone();
        }
        let checks: Vec<Check> = self.0.checks.read().map(|c| c.clone()).unwrap_or_default();
        let results = futures_util::future::join_all(checks.into_iter().map(run_check)).await;
        let report = ReadinessReport::new(results, self.is_shutting_down());
        *cache = Some((self.0.clock.now(), report.clone()));
        report
    }
}

/// Runs one check in a task of its own (carrying the request's context, so
/// its log lines keep the request id): a check that panics is reported
/// failed instead of failing the whole probe.
async fn run_check(check: Check) -> CheckResult {
    let start = tokio::time::Instant::now();
    let run = check.run.clone();
    let timeout = check.timeout;
    let name = check.name.clone();
    let outcome = crate::spawn(async move {
        let outcome = tokio::time::timeout(timeout, run()).await;
        tracing::debug!(check = %name, up = matches!(outcome, Ok(Health::Up)), "readiness check");
        outcome
    })
    .await;
    let latency_ms = (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1_000.0;
    let (status, reason) = match outcome {
        Ok(Ok(Health::Up)) => (CheckStatus::Up, None),
        Ok(Ok(Health::Degraded(reason))) => (CheckStatus::Degraded, Some(reason)),
        Ok(Ok(Health::Down(reason))) => (CheckStatus::Down, Some(reason)),
        Ok(Err(_)) => (check.on_crash, Some("timed out".to_owned())),
        Err(_) => (check.on_crash, Some("check panicked".to_owned())),
    };
    if status != CheckStatus::Up {
        tracing::warn!(
            check = %check.name,
            status = status.as_str(),
            reason = reason.as_deref().unwrap_or(""),
            "readiness check failed"
        );
    }
    CheckResult {
        name: check.name,
        status,
        latency_ms,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::ManualClock;
    use std::sync::atomic::AtomicUsize;

    fn counting(readiness: &Readiness, delay: Duration) -> Arc<AtomicUsize> {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        readiness.register("database", Duration::from_secs(2), move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(())
            }
        });
        calls
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_flood_runs_the_checks_once() {
        let (clock, shared) = ManualClock::shared();
        let readiness = Readiness::with_cache(Duration::from_secs(1), shared);
        let calls = counting(&readiness, Duration::from_millis(50));
        let probes: Vec<_> = (0..200)
            .map(|_| {
                let r = readiness.clone();
                tokio::spawn(async move { r.check().await })
            })
            .collect();
        for p in probes {
            assert!(p.await.unwrap().ready);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_millis(999));
        readiness.check().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "still fresh");
        clock.advance(Duration::from_millis(1));
        readiness.check().await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "expired at exactly the ttl"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_in_parallel_with_their_own_timeouts() {
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        readiness.register("slow", Duration::from_secs(1), || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        readiness.register("fast", Duration::from_secs(5), || async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok(())
        });
        let start = tokio::time::Instant::now();
        let report = readiness.check().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "parallel, bounded by the slowest timeout"
        );
        assert!(!report.ready);
        assert_eq!(report.checks[0].reason.as_deref(), Some("timed out"));
        assert_eq!(report.checks[1].status, CheckStatus::Up);
        assert!((report.checks[1].latency_ms - 800.0).abs() < 1e-9);
        assert_eq!(report.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_panicking_check_is_down_not_fatal() {
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        readiness.register("broken", Duration::from_secs(1), || async {
            panic!("bug in a check")
        });
        let report = readiness.check().await;
        assert!(!report.ready);
        assert_eq!(report.checks[0].reason.as_deref(), Some("check panicked"));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_is_red_at_once_without_running_checks() {
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        let calls = counting(&readiness, Duration::ZERO);
        assert!(readiness.check().await.ready);
        readiness.begin_shutdown();
        let report = readiness.check().await;
        assert!(!report.ready && report.shutting_down);
        assert_eq!(report.to_json()["reason"], "shutting down");
        assert_eq!(report.to_json()["checks"]["database"]["status"], "up");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_degradable_check_degrades_but_serves() {
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        readiness.register("database", Duration::from_secs(1), || async { Ok(()) });
        readiness.register_degradable("store", Duration::from_secs(1), || async {
            Err("connection refused".to_owned())
        });
        readiness.register_degradable("cache", Duration::from_secs(1), || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        let report = readiness.check().await;
        assert!(report.ready && report.degraded && !report.shutting_down);
        assert_eq!(report.status(), http::StatusCode::OK);
        let json = report.to_json();
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["checks"]["database"]["status"], "up");
        assert_eq!(json["checks"]["store"]["status"], "degraded");
        assert_eq!(json["checks"]["store"]["reason"], "connection refused");
        assert_eq!(json["checks"]["cache"]["status"], "degraded");
        assert_eq!(json["checks"]["cache"]["reason"], "timed out");
    }

    #[tokio::test]
    async fn a_down_critical_check_is_red_whatever_the_degradable_ones_say() {
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        readiness.register_degradable("store", Duration::from_secs(1), || async {
            Err("refused".to_owned())
        });
        readiness.register("database", Duration::from_secs(1), || async {
            Err("query failed".to_owned())
        });
        let report = readiness.check().await;
        assert!(!report.ready && report.degraded);
        assert_eq!(report.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let json = report.to_json();
        assert_eq!(json["status"], "not_ready");
        assert_eq!(json["checks"]["database"]["status"], "down");
        assert_eq!(json["checks"]["store"]["status"], "degraded");
    }

    #[tokio::test]
    async fn a_health_check_decides_its_severity_and_crashes_are_down() {
        let severity = Arc::new(AtomicUsize::new(0));
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        let s = severity.clone();
        readiness.register_health("tasks", Duration::from_secs(1), move || {
            let severity = s.load(Ordering::SeqCst);
            async move {
                match severity {
                    0 => Health::Up,
                    1 => Health::Degraded("prune gave up".to_owned()),
                    2 => Health::Down("sync gave up".to_owned()),
                    _ => panic!("bug in a check"),
                }
            }
        });
        let statuses = [
            ("ready", "up", 200),
            ("degraded", "degraded", 200),
            ("not_ready", "down", 503),
            ("not_ready", "down", 503),
        ];
        for (level, (report_status, check_status, code)) in statuses.into_iter().enumerate() {
            severity.store(level, Ordering::SeqCst);
            let report = readiness.check().await;
            assert_eq!(report.status().as_u16(), code, "level {level}");
            let json = report.to_json();
            assert_eq!(json["status"], report_status, "level {level}");
            assert_eq!(
                json["checks"]["tasks"]["status"], check_status,
                "level {level}"
            );
        }
    }

    #[tokio::test]
    async fn a_degraded_service_shutting_down_is_red() {
        let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
        readiness.register_degradable("store", Duration::from_secs(1), || async {
            Err("refused".to_owned())
        });
        assert!(readiness.check().await.ready);
        readiness.begin_shutdown();
        let report = readiness.check().await;
        assert_eq!(report.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(report.to_json()["status"], "not_ready");
        assert_eq!(report.to_json()["checks"]["store"]["status"], "degraded");
    }
}

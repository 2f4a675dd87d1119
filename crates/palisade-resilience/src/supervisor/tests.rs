//! Fault tests on tokio's paused clock: no test really sleeps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use palisade_core::ManualClock;
use palisade_telemetry::CheckStatus;

use super::*;

const SEED: u64 = 0x5eed;

fn supervisor() -> Supervisor {
    Supervisor::builder().jitter(Jitter::seeded(SEED)).build()
}

/// The start time of every attempt.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Instant>>>);

impl Starts {
    fn record(&self) -> usize {
        let mut starts = self.0.lock().unwrap();
        starts.push(Instant::now());
        starts.len()
    }

    fn gaps(&self) -> Vec<Duration> {
        let starts = self.0.lock().unwrap();
        starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn offsets(&self, origin: Instant) -> Vec<u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|at| (*at - origin).as_secs())
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn readiness(supervisor: &Supervisor) -> Readiness {
    let readiness = Readiness::with_cache(Duration::ZERO, SystemClock::shared());
    supervisor.register_readiness(&readiness);
    readiness
}

fn metrics(supervisor: &Supervisor) -> String {
    let mut registry = Registry::default();
    supervisor.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

async fn wait_for(supervisor: &Supervisor, name: &str, state: TaskState) {
    for _ in 0..100_000 {
        if supervisor.status(name).map(|s| s.state) == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} never reached {state:?}: {:?}",
        supervisor.status(name)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_task_restarts_with_growing_jittered_delays_then_gives_up_and_turns_readiness_red()
 {
    let supervisor = supervisor();
    let readiness = readiness(&supervisor);
    let starts = Starts::default();
    let s = starts.clone();
    let (base, cap) = (Duration::from_secs(1), Duration::from_secs(10));
    supervisor
        .spawn(
            Task::new("sync", move |_| {
                s.record();
                async { Err::<(), _>("upstream refused") }
            })
            .backoff(base, cap)
            .restart_budget(6, Duration::from_secs(3600)),
        )
        .unwrap();
    assert!(readiness.check().await.ready);
    wait_for(&supervisor, "sync", TaskState::GivenUp).await;

    // 1 attempt + 6 restarts, then the 7th failure gives it up.
    assert_eq!(starts.len(), 7);
    let gaps = starts.gaps();
    let backoff = Backoff::new(base, cap).unwrap();
    let replay = Jitter::seeded(SEED);
    for (i, gap) in gaps.iter().enumerate() {
        let failures = u32::try_from(i + 1).unwrap();
        assert!(*gap <= backoff.ceiling(failures), "delay {i}: {gap:?}");
        // The seeded draw (tokio's timer rounds up to the millisecond): the
        // jitter is applied, and predictable.
        let drawn = backoff.delay(failures, &replay);
        assert!(
            gap.checked_sub(drawn).unwrap() < Duration::from_millis(1),
            "delay {i}: {gap:?} for {drawn:?}"
        );
    }
    // The ceilings grow (1, 2, 4, 8 s, then the 10 s cap) and the draws are
    // spread below them, not pinned to them.
    let ceilings: Vec<u64> = (1..=6).map(|n| backoff.ceiling(n).as_secs()).collect();
    assert_eq!(ceilings, [1, 2, 4, 8, 10, 10]);
    assert!(gaps.iter().zip(1..).any(|(g, n)| *g < backoff.ceiling(n)));
    let total: Duration = gaps.iter().sum();
    assert!(
        total > Duration::from_secs(3),
        "jitter is not all near zero: {total:?}"
    );

    // Given up for good: no attempt later.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(starts.len(), 7);
    let status = supervisor.status("sync").unwrap();
    assert_eq!((status.failures, status.restarts), (7, 6));

    let report = readiness.check().await;
    assert!(!report.ready);
    assert_eq!(report.checks[0].status, CheckStatus::Down);
    assert_eq!(
        report.to_json()["checks"]["tasks"]["reason"],
        "given up: sync"
    );

    let text = metrics(&supervisor);
    assert!(
        text.contains(r#"palisade_task_restarts_total{task="sync"} 6"#),
        "{text}"
    );
    assert!(text.contains(r#"palisade_task_failures_total{task="sync",kind="error"} 7"#));
    assert!(text.contains(r#"palisade_task_state{task="sync",state="given_up"} 1"#));
    assert!(text.contains(r#"palisade_task_state{task="sync",state="backing_off"} 0"#));
}

#[tokio::test(start_paused = true)]
async fn panics_are_caught_and_counted_like_errors() {
    let supervisor = supervisor();
    let readiness = readiness(&supervisor);
    let starts = Starts::default();
    let s = starts.clone();
    // Panics three times (once before even returning a future), then works.
    supervisor
        .spawn(Task::new("flaky", move |_| {
            let n = s.record();
            assert!(n != 1, "panics while building its future");
            async move {
                assert!(n > 3, "secret token abc123 in a panic message");
                Ok::<(), String>(())
            }
        }))
        .unwrap();
    wait_for(&supervisor, "flaky", TaskState::Completed).await;
    let status = supervisor.status("flaky").unwrap();
    assert_eq!(
        (status.attempts, status.failures, status.restarts),
        (4, 3, 3)
    );
    assert!(status.last_success.is_some());
    assert!(readiness.check().await.ready);
    let text = metrics(&supervisor);
    assert!(text.contains(r#"palisade_task_failures_total{task="flaky",kind="panic"} 3"#));
    assert!(text.contains(r#"palisade_task_state{task="flaky",state="completed"} 1"#));

    // One that always panics is given up like one that always fails.
    supervisor
        .spawn(
            Task::new("broken", |_| async {
                panic!("always");
                #[allow(unreachable_code)]
                Ok::<(), String>(())
            })
            .restart_budget(2, Duration::from_secs(60)),
        )
        .unwrap();
    wait_for(&supervisor, "broken", TaskState::GivenUp).await;
    assert_eq!(supervisor.status("broken").unwrap().failures, 3);
    assert_eq!(readiness.check().await.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn failures_leave_the_budget_window_so_a_flapping_task_keeps_running() {
    let supervisor = supervisor();
    // Fails after three minutes of work each time: never more than two
    // failures in any five minutes.
    supervisor
        .spawn(
            Task::new("flapping", |_| async {
                tokio::time::sleep(Duration::from_secs(180)).await;
                Err::<(), _>("lost the connection")
            })
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .restart_budget(2, Duration::from_secs(300)),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let status = supervisor.status("flapping").unwrap();
    assert_ne!(status.state, TaskState::GivenUp);
    assert!(status.failures >= 19, "{status:?}");

    // The same failures closer together spend the budget.
    supervisor
        .spawn(
            Task::new("failing-fast", |_| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Err::<(), _>("lost the connection")
            })
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .restart_budget(2, Duration::from_secs(300)),
        )
        .unwrap();
    wait_for(&supervisor, "failing-fast", TaskState::GivenUp).await;
    assert_eq!(supervisor.status("failing-fast").unwrap().failures, 3);
}

#[tokio::test(start_paused = true)]
async fn a_given_up_non_critical_task_only_degrades_readiness() {
    let supervisor = supervisor();
    let readiness = readiness(&supervisor);
    supervisor
        .spawn(
            Task::periodic("prune", Duration::from_secs(60), |_| async {
                Err::<(), _>("database locked")
            })
            .non_critical()
            .restart_budget(1, Duration::from_secs(60)),
        )
        .unwrap();
    wait_for(&supervisor, "prune", TaskState::GivenUp).await;
    let report = readiness.check().await;
    assert!(report.ready && report.degraded);
    let json = report.to_json();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["checks"]["tasks"]["status"], "degraded");
    assert_eq!(json["checks"]["tasks"]["reason"], "given up: prune");
}

/// Runs of `interval` taking `work` each, for `for_`: when each started, and
/// the most runs ever in flight at once.
async fn slow_periodic(
    interval: Duration,
    work: Duration,
    policy: MissedTicks,
    for_: Duration,
) -> (Vec<u64>, usize) {
    let supervisor = supervisor();
    let origin = Instant::now();
    let starts = Starts::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (s, f, m) = (starts.clone(), in_flight.clone(), most.clone());
    supervisor
        .spawn(
            Task::periodic("report", interval, move |_| {
                let (s, f, m) = (s.clone(), f.clone(), m.clone());
                async move {
                    s.record();
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(work).await;
                    f.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            })
            .missed_ticks(policy),
        )
        .unwrap();
    tokio::time::sleep(for_).await;
    supervisor.cancel();
    (starts.offsets(origin), most.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn a_periodic_task_slower_than_its_interval_never_overlaps_itself() {
    let (interval, work) = (Duration::from_secs(10), Duration::from_secs(25));
    // Skip: back on the 10 s grid at the first tick after each run ends.
    let (starts, most) =
        slow_periodic(interval, work, MissedTicks::Skip, Duration::from_secs(125)).await;
    assert_eq!(most, 1, "runs overlapped");
    assert_eq!(starts, [0, 30, 60, 90, 120]);
    // Delay: one full interval after each run ends.
    let (starts, most) =
        slow_periodic(interval, work, MissedTicks::Delay, Duration::from_secs(125)).await;
    assert_eq!(most, 1, "runs overlapped");
    assert_eq!(starts, [0, 35, 70, 105]);
    // A run that fits keeps the schedule.
    let (starts, _) = slow_periodic(
        interval,
        Duration::from_secs(3),
        MissedTicks::Skip,
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(starts, [0, 10, 20, 30, 40]);
}

#[test]
fn missed_ticks_policies_compute_the_next_run() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let at = |n| t0 + s(n);
    let next = |now, policy| {
        let (next, missed) = next_run(t0, s(10), policy, at(now));
        ((next - t0).as_secs(), missed)
    };
    assert_eq!(next(3, MissedTicks::Skip), (10, 0));
    assert_eq!(next(10, MissedTicks::Skip), (10, 0), "on time: no miss");
    assert_eq!(
        next(11, MissedTicks::Skip),
        (20, 1),
        "the tick at 10 s was missed"
    );
    assert_eq!(
        next(20, MissedTicks::Skip),
        (20, 1),
        "the tick at 20 s runs now"
    );
    assert_eq!(next(25, MissedTicks::Skip), (30, 2));
    assert_eq!(next(3, MissedTicks::Delay), (10, 0));
    assert_eq!(next(25, MissedTicks::Delay), (35, 2));
}

#[tokio::test(start_paused = true)]
async fn a_failed_periodic_run_is_retried_before_the_next_tick() {
    let supervisor = supervisor();
    let origin = Instant::now();
    let starts = Starts::default();
    let s = starts.clone();
    supervisor
        .spawn(
            Task::periodic("refresh", Duration::from_secs(60), move |_| {
                let n = s.record();
                async move {
                    if n == 1 {
                        Err("first run fails".to_owned())
                    } else {
                        Ok(())
                    }
                }
            })
            .backoff(Duration::from_secs(5), Duration::from_secs(5)),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let offsets = starts.offsets(origin);
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    assert!(offsets[1] <= 5, "retried within the backoff: {offsets:?}");
    assert_eq!(offsets[2], 60, "the schedule is kept: {offsets:?}");
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_times_out_and_counts_as_a_failure() {
    let supervisor = supervisor();
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    supervisor
        .spawn(
            Task::periodic("hung", Duration::from_secs(60), move |_| {
                let guard = DropFlag(d.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<Result<(), String>>().await
                }
            })
            .attempt_timeout(Duration::from_secs(10))
            .restart_budget(1, Duration::from_secs(600)),
        )
        .unwrap();
    wait_for(&supervisor, "hung", TaskState::GivenUp).await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "each hung attempt was dropped"
    );
    assert!(
        metrics(&supervisor)
            .contains(r#"palisade_task_failures_total{task="hung",kind="timeout"} 2"#)
    );
}

struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_every_task_and_names_those_that_miss_the_deadline() {
    let supervisor = supervisor();
    // Idle between ticks.
    supervisor
        .spawn(Task::periodic(
            "idle",
            Duration::from_secs(3600),
            |_| async { Ok::<(), String>(()) },
        ))
        .unwrap();
    // A loop that takes a second to wind down, and returns an error doing so
    // (not a failure: it was asked to stop).
    supervisor
        .spawn(Task::new("consumer", |ctx| async move {
            ctx.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<(), _>("connection closed")
        }))
        .unwrap();
    // Waiting to restart.
    supervisor
        .spawn(
            Task::new("restarting", |_| async { Err::<(), _>("refused") })
                .backoff(Duration::from_secs(3600), Duration::from_secs(3600)),
        )
        .unwrap();
    // Ignores its token.
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    supervisor
        .spawn(Task::new("stubborn", move |_| {
            let guard = DropFlag(d.clone());
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(86_400)).await;
                Ok::<(), String>(())
            }
        }))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;

    let start = Instant::now();
    let report = supervisor.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "bounded by the deadline"
    );
    assert_eq!(report.stopped, ["idle", "consumer", "restarting"]);
    assert_eq!(report.not_stopped, ["stubborn"]);
    tokio::task::yield_now().await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the stubborn task was aborted"
    );
    for status in supervisor.statuses() {
        assert_eq!(status.state, TaskState::Stopped, "{status:?}");
    }
    assert_eq!(supervisor.status("consumer").unwrap().failures, 0);

    // Spawned after shutdown: stops at once, without running.
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    supervisor
        .spawn(Task::new("late", move |_| {
            r.store(true, Ordering::SeqCst);
            async { Ok::<(), String>(()) }
        }))
        .unwrap();
    wait_for(&supervisor, "late", TaskState::Stopped).await;
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(supervisor.status("late").unwrap().attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn every_task_stops_within_the_deadline_when_all_cooperate() {
    let supervisor = supervisor();
    for i in 0..20u64 {
        supervisor
            .spawn(Task::new(format!("worker-{i}"), move |ctx| async move {
                ctx.cancelled().await;
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                Ok::<(), String>(())
            }))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let report = supervisor.shutdown(Duration::from_secs(5)).await;
    assert!(report.not_stopped.is_empty(), "{report:?}");
    assert_eq!(report.stopped.len(), 20);
    assert_eq!(start.elapsed(), Duration::from_millis(1_900), "in parallel");
}

#[tokio::test(start_paused = true)]
async fn a_signal_future_cancels_the_tasks() {
    let supervisor = supervisor();
    let stopped = Arc::new(AtomicBool::new(false));
    let s = stopped.clone();
    supervisor
        .spawn(Task::new("loop", move |ctx| {
            let s = s.clone();
            async move {
                ctx.cancelled().await;
                s.store(true, Ordering::SeqCst);
                Ok::<(), String>(())
            }
        }))
        .unwrap();
    let (signal, received) = tokio::sync::oneshot::channel::<()>();
    supervisor.cancel_on(async move {
        let _ = received.await;
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!stopped.load(Ordering::SeqCst));
    signal.send(()).unwrap();
    wait_for(&supervisor, "loop", TaskState::Stopped).await;
    assert!(stopped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn the_last_success_comes_from_the_injected_clock() {
    let clock = Arc::new(ManualClock::at_unix(Duration::from_secs(1_700_000_000)));
    let supervisor = Supervisor::builder()
        .clock(clock.clone())
        .jitter(Jitter::seeded(SEED))
        .build();
    supervisor
        .spawn(Task::periodic("beat", Duration::from_secs(60), |_| async {
            Ok::<(), String>(())
        }))
        .unwrap();
    wait_for(&supervisor, "beat", TaskState::Idle).await;
    assert_eq!(
        supervisor.status("beat").unwrap().last_success,
        Some(Duration::from_secs(1_700_000_000))
    );
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(60)).await;
    wait_for(&supervisor, "beat", TaskState::Idle).await;
    assert!(
        metrics(&supervisor)
            .contains(r#"palisade_task_last_success_timestamp_seconds{task="beat"} 1700000060"#)
    );
}

#[tokio::test]
async fn invalid_tasks_are_refused() {
    let supervisor = supervisor();
    let ok = || Task::new("a", |_| async { Ok::<(), String>(()) });
    supervisor.spawn(ok()).unwrap();
    let setting = |task: Task| supervisor.spawn(task).unwrap_err().setting().to_owned();
    assert_eq!(setting(ok()), "task.name");
    assert_eq!(
        setting(Task::new("", |_| async { Ok::<(), String>(()) })),
        "task.name"
    );
    assert_eq!(
        setting(Task::periodic("p", Duration::ZERO, |_| async {
            Ok::<(), String>(())
        })),
        "task.interval"
    );
    assert_eq!(
        setting(ok().backoff(Duration::from_secs(2), Duration::from_secs(1))),
        "task.backoff"
    );
    assert_eq!(
        setting(ok().restart_budget(3, Duration::ZERO)),
        "task.restart_budget"
    );
    assert_eq!(
        setting(ok().attempt_timeout(Duration::ZERO)),
        "task.attempt_timeout"
    );
}

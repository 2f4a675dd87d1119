use super::*;
use palisade_core::ManualClock;
use std::sync::atomic::{AtomicUsize, Ordering};

fn breaker(config: BreakerConfig) -> (Arc<ManualClock>, CircuitBreaker) {
    let (clock, shared) = ManualClock::shared();
    (clock, CircuitBreaker::new("test", config, shared))
}

fn call(b: &CircuitBreaker, ok: bool) {
    b.try_acquire().expect("admitted").record(ok);
}

#[test]
fn opens_at_the_failure_rate_once_the_minimum_is_reached() {
    let (_clock, b) = breaker(
        BreakerConfig::default()
            .window(Window::Count(10))
            .minimum_calls(5)
            .failure_rate(60),
    );
    // 4 failures: 100 %, but below the minimum of 5 calls.
    for _ in 0..4 {
        call(&b, false);
    }
    assert_eq!(b.state(), State::Closed);
    // 5 calls, 4 failures = 80 % >= 60 %.
    call(&b, true);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.calls("failure"), 4);
    assert_eq!(b.calls("success"), 1);
}

#[test]
fn stays_closed_just_below_the_failure_rate() {
    let (_clock, b) = breaker(
        BreakerConfig::default()
            .window(Window::Count(10))
            .minimum_calls(10)
            .failure_rate(50),
    );
    // 4 failures in 10 = 40 %, then the window slides: still 4 in the last 10.
    for i in 0..30 {
        call(&b, i % 10 >= 4);
    }
    assert_eq!(b.state(), State::Closed);
    // The fifth failure of the last 10 reaches 50 %.
    for _ in 0..4 {
        call(&b, false);
    }
    call(&b, false);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn opens_at_the_slow_call_rate_even_when_every_call_succeeds() {
    let (clock, b) = breaker(
        BreakerConfig::default()
            .window(Window::Count(4))
            .minimum_calls(4)
            .slow_call_rate(50)
            .slow_call_duration(Duration::from_secs(1)),
    );
    let slow = |b: &CircuitBreaker| {
        let permit = b.try_acquire().unwrap();
        clock.advance(Duration::from_secs(1));
        permit.success();
    };
    call(&b, true);
    slow(&b);
    call(&b, true);
    assert_eq!(b.state(), State::Closed);
    slow(&b); // 2 of 4 slow
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.calls("slow_success"), 2);
}

#[test]
fn a_time_window_forgets_old_failures() {
    let (clock, b) = breaker(
        BreakerConfig::default()
            .window(Window::Time(Duration::from_secs(10)))
            .minimum_calls(3)
            .failure_rate(100),
    );
    call(&b, false);
    call(&b, false);
    clock.advance(Duration::from_secs(11));
    // The two old failures left the window: one failure is below the minimum.
    call(&b, false);
    assert_eq!(b.state(), State::Closed);
    clock.advance(Duration::from_secs(5));
    call(&b, false);
    call(&b, false);
    assert_eq!(b.state(), State::Open, "3 failures within 10 s");
}

#[test]
fn short_circuits_while_open_then_probes_and_closes() {
    let (clock, b) = breaker(
        BreakerConfig::consecutive_failures(2)
            .open_for(Duration::from_secs(1))
            .half_open_calls(2),
    );
    call(&b, false);
    call(&b, false);
    assert_eq!(b.state(), State::Open);
    for _ in 0..5 {
        assert_eq!(
            b.try_acquire().unwrap_err(),
            ShortCircuited { breaker: "test" }
        );
    }
    assert_eq!(b.calls("short_circuited"), 5);
    clock.advance(Duration::from_millis(999));
    assert!(b.try_acquire().is_err(), "still open");
    clock.advance(Duration::from_millis(1));
    let first = b.try_acquire().unwrap();
    assert!(first.is_probe());
    assert_eq!(b.state(), State::HalfOpen);
    let second = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err(), "two probes at most");
    first.success();
    assert_eq!(b.state(), State::HalfOpen, "one probe is not enough");
    second.success();
    assert_eq!(b.state(), State::Closed);
    // Closed with an empty window: one failure does not reopen.
    call(&b, false);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_failed_probe_reopens_with_a_doubled_capped_backoff() {
    let (clock, b) = breaker(
        BreakerConfig::consecutive_failures(1)
            .open_for(Duration::from_secs(1))
            .max_open_for(Duration::from_secs(3)),
    );
    call(&b, false);
    clock.advance(Duration::from_secs(1));
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_millis(1999));
    assert!(b.try_acquire().is_err(), "backoff doubled to 2 s");
    clock.advance(Duration::from_millis(1));
    b.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(3));
    let probe = b.try_acquire().expect("capped at 3 s");
    probe.success();
    assert_eq!(b.state(), State::Closed);
    // Reopening starts again from `open_for`.
    call(&b, false);
    clock.advance(Duration::from_secs(1));
    assert!(b.try_acquire().is_ok());
}

/// Issue 18 item 1 (ported from palisade-store's breaker): a probe whose
/// future is dropped used to leave the breaker half-open for ever, every
/// later call refused.
#[test]
fn a_cancelled_probe_counts_as_a_failure_and_a_new_probe_follows() {
    let (clock, b) =
        breaker(BreakerConfig::consecutive_failures(1).open_for(Duration::from_secs(1)));
    call(&b, false);
    for round in 0..3u32 {
        clock.advance(Duration::from_secs(60));
        let probe = b.try_acquire().unwrap_or_else(|_| panic!("round {round}"));
        assert!(probe.is_probe());
        drop(probe); // the probe's caller went away
        assert_eq!(b.state(), State::Open, "open again, not stuck half-open");
        assert!(b.try_acquire().is_err());
    }
    clock.advance(Duration::from_secs(60));
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_closed_call_dropped_early_counts_nothing_but_a_slow_one_counts() {
    let (clock, b) =
        breaker(BreakerConfig::consecutive_failures(1).slow_call_duration(Duration::from_secs(2)));
    drop(b.try_acquire().unwrap());
    assert_eq!(b.state(), State::Closed, "a caller giving up early");
    let permit = b.try_acquire().unwrap();
    clock.advance(Duration::from_secs(2));
    drop(permit);
    assert_eq!(b.state(), State::Open, "abandoned after hanging 2 s");
    assert_eq!(b.calls("slow_failure"), 1);
}

#[test]
fn an_outcome_settled_after_a_state_change_is_not_counted_again() {
    let (clock, b) =
        breaker(BreakerConfig::consecutive_failures(1).open_for(Duration::from_secs(1)));
    let late = b.try_acquire().unwrap();
    call(&b, false);
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(1));
    let probe = b.try_acquire().unwrap();
    late.failure(); // admitted while closed: must not fail the probe
    assert_eq!(b.state(), State::HalfOpen);
    probe.success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn state_changes_reach_the_callback_and_the_metrics() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let (clock, b) = breaker(
        BreakerConfig::consecutive_failures(1)
            .open_for(Duration::from_secs(1))
            .on_state_change(move |c| sink.lock().unwrap().push((c.breaker, c.from, c.to))),
    );
    let mut registry = Registry::default();
    b.register_metrics(&mut registry);
    call(&b, false);
    clock.advance(Duration::from_secs(1));
    b.try_acquire().unwrap().success();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("test", State::Closed, State::Open),
            ("test", State::Open, State::HalfOpen),
            ("test", State::HalfOpen, State::Closed),
        ]
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("palisade_breaker_state{breaker=\"test\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("palisade_breaker_transitions_total{breaker=\"test\",to=\"open\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("palisade_breaker_calls_total{breaker=\"test\",outcome=\"failure\"} 1"),
        "{text}"
    );
}

/// Race: many threads ask at once when the open time has passed; exactly
/// `half_open_calls` probes are admitted, whatever the interleaving.
#[test]
fn parallel_callers_never_get_more_probes_than_allowed() {
    for _ in 0..50 {
        let (clock, b) = breaker(
            BreakerConfig::consecutive_failures(1)
                .open_for(Duration::from_secs(1))
                .half_open_calls(3),
        );
        call(&b, false);
        clock.advance(Duration::from_secs(1));
        let admitted = Arc::new(AtomicUsize::new(0));
        let permits = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for i in 0..16u64 {
                let (b, admitted, permits) = (b.clone(), admitted.clone(), permits.clone());
                s.spawn(move || {
                    std::thread::sleep(Duration::from_micros(i % 4 * 50));
                    if let Ok(p) = b.try_acquire() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        permits.lock().unwrap().push(p);
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 3);
        assert_eq!(b.calls("short_circuited"), 13);
        for p in permits.lock().unwrap().drain(..) {
            p.success();
        }
        assert_eq!(b.state(), State::Closed);
    }
}

/// Ported from palisade-store: "n failures in a row" means in a row.
#[test]
fn consecutive_failures_are_reset_by_a_success() {
    let (_clock, b) = breaker(BreakerConfig::consecutive_failures(2));
    call(&b, false);
    call(&b, true);
    call(&b, false);
    assert_eq!(b.state(), State::Closed);
    call(&b, false);
    assert_eq!(b.state(), State::Open);
}

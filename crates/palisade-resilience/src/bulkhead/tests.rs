use std::sync::atomic::AtomicUsize;

use super::*;

/// Counts work in flight and remembers the most seen at once.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// A small pseudo-random pause: a few yields and, sometimes, a sub-millisecond
/// sleep, so tasks interleave differently on every worker thread.
async fn jitter(seed: usize) {
    let spin = seed.wrapping_mul(2_654_435_761) % 7;
    for _ in 0..spin {
        tokio::task::yield_now().await;
    }
    if spin.is_multiple_of(3) {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn for_each_bounded_never_has_more_than_n_in_flight() {
    for round in 0..20 {
        let gauge = Gauge::default();
        let g = gauge.clone();
        let report = for_each_bounded(0..200usize, 5, &CancellationToken::new(), |i, _| {
            let g = g.clone();
            async move {
                g.enter();
                jitter(i + round).await;
                g.leave();
                Ok::<_, ()>(i)
            }
        })
        .await;
        assert!(
            gauge.most() <= 5,
            "round {round}: {} in flight",
            gauge.most()
        );
        assert!(report.all_succeeded());
        let values: Vec<usize> = report
            .outcomes
            .iter()
            .map(|o| match o {
                ItemOutcome::Done(v) => *v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, (0..200).collect::<Vec<_>>(), "in item order");
        if round == 19 {
            // The bound is used, not just respected.
            assert!(gauge.most() >= 2);
        }
    }
}

#[tokio::test]
async fn errors_and_panics_are_collected_per_item_and_stop_nothing() {
    let report = for_each_bounded(0..30u32, 4, &CancellationToken::new(), |i, _| {
        assert!(i != 20, "item 20 panics before it is a future");
        async move {
            assert!(i != 13, "item 13 panics");
            if i % 7 == 3 {
                Err(format!("item {i} failed"))
            } else {
                Ok(i)
            }
        }
    })
    .await;
    assert_eq!(report.outcomes.len(), 30);
    assert_eq!(report.outcomes[13], ItemOutcome::Panicked);
    assert_eq!(report.outcomes[20], ItemOutcome::Panicked);
    assert_eq!(report.outcomes[21], ItemOutcome::Done(21));
    let errors: Vec<(usize, String)> = report.errors().map(|(i, e)| (i, e.clone())).collect();
    assert_eq!(
        errors,
        [
            (3, "item 3 failed".to_owned()),
            (10, "item 10 failed".to_owned()),
            (17, "item 17 failed".to_owned()),
            (24, "item 24 failed".to_owned())
        ]
    );
    assert_eq!(report.failed(), 6);
    assert_eq!(report.succeeded(), 24);
    assert_eq!(report.not_started(), 0);
    assert_eq!(report.outcomes[29], ItemOutcome::Done(29));
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_new_items_and_reaches_those_in_flight() {
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        canceller.cancel();
    });
    let start = tokio::time::Instant::now();
    let report = for_each_bounded(0..100u32, 3, &token, |i, token| async move {
        tokio::select! {
            () = token.cancelled() => Err("stopped"),
            () = tokio::time::sleep(Duration::from_secs(1)) => Ok(i),
        }
    })
    .await;
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(2_500),
        "in-flight items saw the token"
    );
    let expected: Vec<ItemOutcome<u32, &str>> = (0..100)
        .map(|i| match i {
            0..6 => ItemOutcome::Done(i),
            6..9 => ItemOutcome::Failed("stopped"),
            _ => ItemOutcome::NotStarted,
        })
        .collect();
    assert_eq!(report.outcomes, expected);
    assert_eq!(report.not_started(), 91);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_batch_aborts_the_items_in_flight() {
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let token = CancellationToken::new();
    let batch = for_each_bounded(0..10u32, 4, &token, move |_, _| {
        let f = f.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            f.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        }
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), batch)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(finished.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bulkhead_admits_its_slots_queues_its_queue_and_refuses_the_rest() {
    for _ in 0..10 {
        let bulkhead = Bulkhead::new(4, 8).unwrap();
        let gauge = Gauge::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let refused = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..100usize)
            .map(|i| {
                let (bulkhead, gauge, refused) = (bulkhead.clone(), gauge.clone(), refused.clone());
                let mut released = released.clone();
                tokio::spawn(async move {
                    jitter(i).await;
                    let outcome = bulkhead
                        .run(async {
                            gauge.enter();
                            let _ = released.wait_for(|r| *r).await;
                            jitter(i).await;
                            gauge.leave();
                        })
                        .await;
                    if outcome == Err(Rejected::QueueFull) {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    outcome
                })
            })
            .collect();
        // Everyone has asked: 4 hold a slot, 8 wait, 88 were refused.
        while refused.load(Ordering::SeqCst) < 88 || bulkhead.queued() < 8 {
            assert!(refused.load(Ordering::SeqCst) <= 88);
            assert!(bulkhead.queued() <= 8);
            tokio::task::yield_now().await;
        }
        assert_eq!(bulkhead.in_flight(), 4);
        release.send_replace(true);
        let mut admitted = 0;
        for caller in callers {
            if caller.await.unwrap().is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 12);
        assert_eq!(refused.load(Ordering::SeqCst), 88);
        assert_eq!(gauge.most(), 4, "never more than 4 in flight");
        assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (0, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_left_on_timeout_and_when_the_caller_gives_up() {
    let bulkhead = Bulkhead::new(1, 1)
        .unwrap()
        .queue_timeout(Duration::from_secs(1));
    let held = bulkhead.acquire().await.unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(
        bulkhead.acquire().await.unwrap_err(),
        Rejected::QueueTimeout
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(bulkhead.queued(), 0);

    // A caller that stops waiting (its own deadline) frees its queue place.
    let patient = Bulkhead::new(1, 1).unwrap();
    let held2 = patient.acquire().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(10), patient.acquire())
            .await
            .is_err()
    );
    assert_eq!(patient.queued(), 0);
    drop((held, held2));
    assert!(patient.acquire().await.is_ok());
}

#[test]
fn a_bulkhead_needs_a_slot() {
    assert_eq!(
        Bulkhead::new(0, 10).unwrap_err().setting(),
        "bulkhead.max_in_flight"
    );
    assert!(Bulkhead::new(1, 0).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_layer_admits_queues_and_refuses_like_its_bulkhead() {
    use tower::{Layer, ServiceExt, service_fn};
    for _ in 0..10 {
        let bulkhead = Bulkhead::new(2, 1).unwrap();
        let gauge = Gauge::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let g = gauge.clone();
        let service = BulkheadLayer::new(bulkhead.clone()).layer(service_fn(move |i: usize| {
            let (g, mut released) = (g.clone(), released.clone());
            async move {
                g.enter();
                let _ = released.wait_for(|r| *r).await;
                jitter(i).await;
                g.leave();
                if i == 0 {
                    Err(std::io::Error::other("inner failure"))
                } else {
                    Ok(i)
                }
            }
        }));
        let calls: Vec<_> = (0..10)
            .map(|i| tokio::spawn(service.clone().oneshot(i)))
            .collect();
        // 2 in flight, 1 queued, the other 7 refused at once.
        while calls.iter().filter(|c| c.is_finished()).count() < 7 || bulkhead.queued() < 1 {
            assert!(gauge.now.load(Ordering::SeqCst) <= 2);
            tokio::task::yield_now().await;
        }
        assert_eq!(bulkhead.in_flight(), 2);
        release.send_replace(true);
        let (mut served, mut refused, mut failed) = (0, 0, 0);
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => served += 1,
                Err(e) if e.downcast_ref::<Rejected>() == Some(&Rejected::QueueFull) => {
                    refused += 1;
                }
                Err(e) => {
                    assert_eq!(e.to_string(), "inner failure");
                    failed += 1;
                }
            }
        }
        assert_eq!(served + failed, 3);
        assert_eq!(refused, 7);
        assert_eq!(gauge.most(), 2);
        assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (0, 0));
    }
}

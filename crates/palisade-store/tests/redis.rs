#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unchecked_time_subtraction
)] // test code: panics are the assertions
//! The Redis backend against a real `redis-server` on a unix socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_core::ManualClock;
use palisade_store::{
    BreakerConfig, FailPolicy, GcraRequest, Key, MemoryStore, Part, Probe, Quota, RedisOptions,
    Reserve, Settle, Source, Store, StoreError, Unavailable,
};
use std::future::Future as _;

use palisade_testkit::redis::{RedisServer, Reply};

fn connect(server: &RedisServer) -> (Arc<ManualClock>, Store) {
    let (clock, shared) = ManualClock::shared();
    let local = MemoryStore::builder().max_keys(1000).clock(shared).build();
    let options = RedisOptions::default()
        .call_timeout(Duration::from_millis(500))
        .breaker(BreakerConfig::consecutive_failures(2).open_for(Duration::from_secs(1)));
    let store = Store::redis(&server.url(), "APP_REDIS_URL", &options, local).unwrap();
    (clock, store)
}

fn keys(server: &RedisServer) -> Vec<String> {
    match server.command(&["KEYS", "*"]).unwrap() {
        Reply::Array(items) => items
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// `INFO commandstats`: the calls per command since the last `CONFIG RESETSTAT`.
fn commandstats(server: &RedisServer) -> String {
    let Reply::Bulk(stats) = server.command(&["INFO", "commandstats"]).unwrap() else {
        panic!("INFO did not answer a bulk string");
    };
    String::from_utf8(stats).unwrap()
}

fn int(reply: &Reply) -> i64 {
    match reply {
        Reply::Integer(n) => *n,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn burst_then_denied_with_retry_after_on_the_server_clock() {
    let server = RedisServer::start().unwrap();
    let (_clock, store) = connect(&server);
    let key = Key::new("login").with(Part::Ip("203.0.113.9/32".parse().unwrap()));
    let req = [GcraRequest::new(key, Quota::per_hour(5))];
    for i in 0..5 {
        let d = store
            .gcra("rl", &req, FailPolicy::FailClosed)
            .await
            .unwrap();
        assert!(d.allowed(), "request {i}");
        assert_eq!(d.source(), Source::Primary);
        assert_eq!(d.outcomes()[0].remaining, 4 - i);
    }
    let d = store
        .gcra("rl", &req, FailPolicy::FailClosed)
        .await
        .unwrap();
    assert!(!d.allowed());
    // One slot comes back every 720 s; a few ms passed since the burst.
    let wait = d.retry_after();
    assert!(
        wait <= Duration::from_secs(720) && wait > Duration::from_secs(719),
        "{wait:?}"
    );
    assert_eq!(
        d.outcomes()[0].reset,
        Duration::from_secs(3600) - (Duration::from_secs(720) - wait)
    );
}

#[tokio::test]
async fn multi_key_decisions_are_all_or_nothing() {
    let server = RedisServer::start().unwrap();
    let (_clock, store) = connect(&server);
    let ip = Key::new("ip").with(Part::Int(1));
    let acct = Key::new("acct").with(Part::Str("bob@example.com"));
    let both = [
        GcraRequest::new(ip, Quota::per_hour(10)),
        GcraRequest::new(acct, Quota::per_hour(2)),
    ];
    for _ in 0..2 {
        assert!(
            store
                .gcra("rl", &both, FailPolicy::FailClosed)
                .await
                .unwrap()
                .allowed()
        );
    }
    for _ in 0..5 {
        let d = store
            .gcra("rl", &both, FailPolicy::FailClosed)
            .await
            .unwrap();
        assert!(!d.allowed());
        assert!(d.outcomes()[0].allowed && !d.outcomes()[1].allowed);
    }
    let only_ip = [GcraRequest::new(ip, Quota::per_hour(10))];
    for i in 0..8 {
        let d = store
            .gcra("rl", &only_ip, FailPolicy::FailClosed)
            .await
            .unwrap();
        assert!(
            d.allowed(),
            "refused decisions must not have consumed ({i})"
        );
    }
    assert!(
        !store
            .gcra("rl", &only_ip, FailPolicy::FailClosed)
            .await
            .unwrap()
            .allowed()
    );
    // Every key of the call shares the {rl} hash tag (one cluster slot), and
    // the account name is not stored in clear.
    for key in keys(&server) {
        assert!(key.starts_with("palisade:{rl}:g:"), "{key}");
        assert!(!key.contains("bob"), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_allow_more_than_the_limit_between_them() {
    let server = RedisServer::start().unwrap();
    let (_c1, a) = connect(&server);
    let (_c2, b) = connect(&server);
    let allowed = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let allowed = Arc::clone(&allowed);
        tasks.push(tokio::spawn(async move {
            let req = [
                GcraRequest::new(Key::new("shared"), Quota::per_hour(50)),
                GcraRequest::new(Key::new("ip").with(Part::Int(i % 7)), Quota::per_hour(1000)),
            ];
            if store
                .gcra("rl", &req, FailPolicy::FailClosed)
                .await
                .unwrap()
                .allowed()
            {
                allowed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(allowed.load(Ordering::Relaxed), 50);
}

#[tokio::test]
async fn reservations_settle_and_marks_exempt_on_redis() {
    let server = RedisServer::start().unwrap();
    let (_clock, store) = connect(&server);
    let pair = Key::new("pair").with(Part::Str("bob")).with(Part::Int(1));
    let acct = Key::new("acct").with(Part::Str("bob"));
    let known = Key::new("known").with(Part::Str("bob")).with(Part::Int(1));
    let ttl = Duration::from_secs(900);
    let items = [
        Reserve::new(pair, 3, ttl),
        Reserve::new(acct, 4, ttl).unless_marked(known),
    ];
    for n in 1..=3 {
        let r = store
            .reserve("lock", &items, FailPolicy::FailClosed)
            .await
            .unwrap();
        assert!(r.allowed());
        assert_eq!(r.outcomes()[0].count, n);
        assert_eq!(r.outcomes()[1].count, n);
    }
    let r = store
        .reserve("lock", &items, FailPolicy::FailClosed)
        .await
        .unwrap();
    assert!(!r.allowed());
    assert!(r.retry_after() > Duration::from_secs(899) && r.retry_after() <= ttl);
    // A success: clear the pair, give the account slot back, remember the client.
    let steps = [
        Settle::Clear(pair),
        Settle::Release(acct),
        Settle::Mark(known, Duration::from_secs(30 * 86_400)),
    ];
    store.settle("lock", &steps, r.source()).await.unwrap();
    assert!(
        store
            .is_marked("lock", &known, FailPolicy::FailClosed)
            .await
            .unwrap()
    );
    let r = store
        .reserve("lock", &items, FailPolicy::FailClosed)
        .await
        .unwrap();
    assert!(r.allowed());
    assert_eq!(r.outcomes()[0].count, 1, "the pair counter was reset");
    assert!(
        r.outcomes()[1].skipped,
        "the known client skips the account counter"
    );
    let acct_key = keys(&server)
        .into_iter()
        .find(|k| k.contains(":c:acct:"))
        .unwrap();
    let count = server.command(&["GET", &acct_key]).unwrap();
    assert_eq!(
        count.as_str(),
        Some("2"),
        "3 reserved, 1 released, 1 skipped"
    );
}

#[tokio::test]
async fn stamps_decide_on_redis_as_in_memory_in_one_round_trip() {
    let server = RedisServer::start().unwrap();
    let (_clock, redis) = connect(&server);
    let memory = Store::memory(MemoryStore::builder().max_keys(100).build());
    let user = Key::new("user").with(Part::Str("u1"));
    let other = Key::new("user").with(Part::Str("u2"));
    let jti = Key::new("jti").with(Part::Str("t1"));
    let ttl = Duration::from_secs(900);
    // Around a 2^16 s boundary, where the memory store's low bits wrap.
    let at = 26_000 * 65_536 - 2;
    // (stamp set first, probe time, expected answer)
    let script: [(Option<u64>, u64, bool); 7] = [
        (None, at, false),
        (Some(at), at - 900, true),
        (None, at, true),
        (None, at + 1, false),
        // An earlier stamp arriving late keeps the later time.
        (Some(at - 30), at, true),
        (Some(at + 5), at + 5, true),
        (None, at + 6, false),
    ];
    for (stamp, since, expected) in script {
        for store in [&redis, &memory] {
            if let Some(t) = stamp {
                store
                    .settle("auth", &[Settle::Stamp(user, t, ttl)], Source::Primary)
                    .await
                    .unwrap();
            }
        }
        server.command(&["CONFIG", "RESETSTAT"]).unwrap();
        let probes = [
            Probe::Marked(jti),
            Probe::StampedSince(other, 0),
            Probe::StampedSince(user, since),
        ];
        let on_redis = redis
            .any_marked("auth", &probes, FailPolicy::FailClosed)
            .await
            .unwrap();
        let stats = commandstats(&server);
        assert!(stats.contains("cmdstat_mget:calls=1,"), "{stats}");
        let in_memory = memory
            .any_marked("auth", &probes, FailPolicy::FailClosed)
            .await
            .unwrap();
        assert_eq!(
            (on_redis, in_memory),
            (expected, expected),
            "stamp {stamp:?} since {since}"
        );
    }
    let pttl = int(&server.command(&["PTTL", &keys(&server)[0]]).unwrap());
    assert!(pttl > 0 && pttl <= 900_000, "{pttl}");
}

#[tokio::test]
async fn every_key_written_has_a_ttl() {
    let server = RedisServer::start().unwrap();
    let (_clock, store) = connect(&server);
    for i in 0..20 {
        let req = [
            GcraRequest::new(
                Key::new("ip").with(Part::Int(i)),
                Quota::per_second(30).with_burst(50),
            ),
            GcraRequest::new(
                Key::new("user").with(Part::Str("u")),
                Quota::per_minute(100),
            ),
        ];
        store
            .gcra("rl", &req, FailPolicy::FailClosed)
            .await
            .unwrap();
        let item = [Reserve::new(
            Key::new("pair").with(Part::Int(i)),
            5,
            Duration::from_secs(900),
        )];
        let r = store
            .reserve("lock", &item, FailPolicy::FailClosed)
            .await
            .unwrap();
        let steps = [
            Settle::Release(Key::new("pair").with(Part::Int(i))),
            Settle::Mark(Key::new("jti").with(Part::Int(i)), Duration::from_secs(60)),
        ];
        store.settle("lock", &steps, r.source()).await.unwrap();
    }
    let all = keys(&server);
    assert_eq!(all.len(), 20 + 1 + 20 + 20, "{all:?}");
    for key in all {
        let ttl = int(&server.command(&["PTTL", &key]).unwrap());
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn one_round_trip_per_decision_and_noscript_is_handled() {
    let server = RedisServer::start().unwrap();
    let (_clock, store) = connect(&server);
    let req = [GcraRequest::new(
        Key::new("k"),
        Quota::per_second(1_000_000),
    )];
    store
        .gcra("rl", &req, FailPolicy::FailClosed)
        .await
        .unwrap();
    server.command(&["SCRIPT", "FLUSH"]).unwrap();
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    // The first call after the flush gets NOSCRIPT, loads, retries.
    store
        .gcra("rl", &req, FailPolicy::FailClosed)
        .await
        .unwrap();
    server.command(&["CONFIG", "RESETSTAT"]).unwrap();
    for _ in 0..100 {
        store
            .gcra("rl", &req, FailPolicy::FailClosed)
            .await
            .unwrap();
    }
    let stats = commandstats(&server);
    let calls: Vec<(&str, u64)> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .map(|l| {
            let (name, rest) = l.split_once(':').unwrap();
            let calls = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .unwrap()
                .parse()
                .unwrap();
            (name, calls)
        })
        .filter(|(name, _)| !matches!(*name, "info" | "config|resetstat"))
        .collect();
    // Redis also counts the commands the script ran (TIME, GET, SET); what
    // crossed the wire was one EVALSHA per decision and nothing else — no
    // SCRIPT LOAD, no EVAL, no separate reads.
    let client_side: Vec<_> = calls
        .iter()
        .filter(|(name, _)| !matches!(*name, "time" | "get" | "set"))
        .collect();
    assert_eq!(client_side, vec![&("evalsha", 100)], "{stats}");
}

#[tokio::test]
async fn fail_policies_while_redis_is_down_and_recovery_after() {
    let mut server = RedisServer::start().unwrap();
    let (clock, store) = connect(&server);
    let req = [GcraRequest::new(Key::new("k"), Quota::per_hour(3))];
    assert!(
        store
            .gcra("rl", &req, FailPolicy::FailClosed)
            .await
            .unwrap()
            .allowed()
    );
    assert!(store.check().await.is_ok());

    server.kill();
    // Closed breaker: real failures, then it opens (threshold 2).
    for _ in 0..2 {
        let err = store
            .gcra("rl", &req, FailPolicy::FailClosed)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(u) if u != Unavailable::CircuitOpen),
            "{err}"
        );
    }
    // Open: no call is made at all.
    let err = store
        .gcra("rl", &req, FailPolicy::FailClosed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(Unavailable::CircuitOpen)),
        "{err}"
    );
    assert!(store.check().await.is_err());
    // The breaker's state is exported once, under the breakers' names.
    let mut registry = prometheus_client::registry::Registry::default();
    store.register_metrics(&mut registry);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains("palisade_breaker_state{breaker=\"store\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_breaker_transitions_total{breaker=\"store\",to=\"open\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("palisade_store_breaker"), "{metrics}");

    let open = store.gcra("rl", &req, FailPolicy::FailOpen).await.unwrap();
    assert!(open.allowed());
    assert_eq!(open.source(), Source::FailOpen);

    // Local fallback enforces the same quota per instance.
    for _ in 0..3 {
        let d = store
            .gcra("rl", &req, FailPolicy::LocalFallback)
            .await
            .unwrap();
        assert!(d.allowed());
        assert_eq!(d.source(), Source::Fallback);
    }
    assert!(
        !store
            .gcra("rl", &req, FailPolicy::LocalFallback)
            .await
            .unwrap()
            .allowed()
    );
    let items = [Reserve::new(Key::new("c"), 1, Duration::from_secs(60))];
    assert!(
        store
            .reserve("lock", &items, FailPolicy::FailClosed)
            .await
            .is_err()
    );
    assert!(
        !store
            .is_marked("lock", &Key::new("m"), FailPolicy::FailOpen)
            .await
            .unwrap()
    );
    assert!(store.degraded_decisions(FailPolicy::FailClosed) >= 4);
    assert_eq!(store.degraded_decisions(FailPolicy::LocalFallback), 4);

    server.restart().unwrap();
    // The breaker probes once its open period has passed (backoff doubles on
    // each failed probe, so advance generously) and the connection manager
    // reconnects; a few probes at most.
    // Each round, the first probe is cancelled at its await point (its
    // client went away): it must count as a failed probe, not leave the
    // breaker half-open for ever (issue 18).
    let mut recovered = None;
    for attempt in 0..20 {
        clock.advance(Duration::from_secs(31));
        let mut cancelled = Box::pin(store.gcra("rl", &req, FailPolicy::FailClosed));
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(cancelled.as_mut().poll(cx).is_ready())
        })
        .await;
        drop(cancelled);
        if polled {
            continue; // it answered in one poll: nothing was cancelled
        }
        clock.advance(Duration::from_secs(31));
        if let Ok(d) = store.gcra("rl", &req, FailPolicy::FailClosed).await {
            recovered = Some((attempt, d));
            break;
        }
    }
    let (attempt, d) = recovered.expect("the store recovers after Redis restarts");
    assert!(attempt < 5, "took {attempt} probes");
    assert_eq!(d.source(), Source::Primary);
    assert!(store.check().await.is_ok());
}

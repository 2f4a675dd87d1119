#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! Lockout over the memory store (injected clock) and a real redis-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use palisade_auth::lockout::{Lockout, LockoutError, LockoutPolicy, Settlement};
use palisade_core::ManualClock;
use palisade_store::{MemoryStore, RedisOptions, Store};
use palisade_testkit::redis::RedisServer;

fn ip(n: u32) -> IpNet {
    IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
        0xC633_6400 + n,
    )))
}

fn memory() -> (Arc<ManualClock>, Lockout) {
    let (clock, shared) = ManualClock::shared();
    let store = Store::memory(MemoryStore::builder().clock(shared).build());
    (clock, Lockout::new(store, LockoutPolicy::default()))
}

async fn fail(lockout: &Lockout, account: &str, client: IpNet) -> Result<(), LockoutError> {
    let attempt = lockout.reserve(account, client).await?;
    lockout.settle(attempt, Settlement::Failure).await;
    Ok(())
}

#[tokio::test]
async fn five_failures_lock_the_pair_for_fifteen_minutes_from_the_last() {
    let (clock, lockout) = memory();
    for _ in 0..5 {
        fail(&lockout, "bob@example.com", ip(1)).await.unwrap();
    }
    let Err(LockoutError::Locked { retry_after }) = lockout.reserve("bob@example.com", ip(1)).await
    else {
        panic!("the sixth attempt must be locked out");
    };
    assert_eq!(retry_after, Duration::from_secs(900));
    assert_eq!(lockout.events("lockout", "client"), 1);
    // Another client is not locked out of the account; the client is not
    // locked out of other accounts.
    fail(&lockout, "bob@example.com", ip(2)).await.unwrap();
    fail(&lockout, "alice@example.com", ip(1)).await.unwrap();
    // The clock edge: locked one microsecond before the end, free at it.
    clock.advance(Duration::from_secs(900) - Duration::from_micros(1));
    assert!(lockout.reserve("bob@example.com", ip(1)).await.is_err());
    clock.advance(Duration::from_micros(1));
    let attempt = lockout.reserve("bob@example.com", ip(1)).await.unwrap();
    lockout.settle(attempt, Settlement::Failure).await;
}

#[tokio::test]
async fn a_success_resets_the_consecutive_failures() {
    let (_clock, lockout) = memory();
    for _ in 0..4 {
        fail(&lockout, "bob@example.com", ip(1)).await.unwrap();
    }
    let ok = lockout.reserve("bob@example.com", ip(1)).await.unwrap();
    lockout.settle(ok, Settlement::Success).await;
    for i in 0..5 {
        fail(&lockout, "bob@example.com", ip(1))
            .await
            .unwrap_or_else(|e| panic!("failure {i} after the reset: {e}"));
    }
    assert!(lockout.reserve("bob@example.com", ip(1)).await.is_err());
}

#[tokio::test]
async fn unknown_accounts_behave_exactly_like_known_ones() {
    let (_clock, lockout) = memory();
    let mut trace = Vec::new();
    for account in ["exists@example.com", "nobody@example.com"] {
        let mut outcomes = Vec::new();
        for _ in 0..7 {
            outcomes.push(match fail(&lockout, account, ip(9)).await {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            });
        }
        trace.push(outcomes);
    }
    assert_eq!(trace[0], trace[1]);
}

#[tokio::test]
async fn distributed_guessing_locks_the_account_but_not_for_its_owner() {
    let (_clock, lockout) = memory();
    // The owner logs in once from home.
    let home = ip(1000);
    let ok = lockout.reserve("owner@example.com", home).await.unwrap();
    lockout.settle(ok, Settlement::Success).await;
    // 50 failures from 50 addresses lock the account.
    for n in 0..50 {
        fail(&lockout, "owner@example.com", ip(n)).await.unwrap();
    }
    assert_eq!(lockout.events("lockout", "account"), 1);
    let Err(LockoutError::Locked { retry_after }) =
        lockout.reserve("owner@example.com", ip(77)).await
    else {
        panic!("a new address must be locked out of the account");
    };
    assert_eq!(retry_after, Duration::from_secs(3600));
    // The owner's known address still gets its own attempts.
    let ok = lockout.reserve("owner@example.com", home).await.unwrap();
    lockout.settle(ok, Settlement::Success).await;
}

/// Issue 18 item 15: the owner's address is remembered for 30 days from its
/// last successful login, to the second: at 30 days minus 1 s it still gets
/// through an account lock, at 30 days plus 1 s it is locked out like any
/// other address.
#[tokio::test]
async fn the_known_client_mark_expires_thirty_days_after_the_last_success() {
    const THIRTY_DAYS_S: u64 = 30 * 86_400;
    let (clock, lockout) = memory();
    let home = ip(1000);
    let ok = lockout.reserve("owner@example.com", home).await.unwrap();
    lockout.settle(ok, Settlement::Success).await;

    clock.advance(Duration::from_secs(THIRTY_DAYS_S - 1));
    for n in 0..50 {
        fail(&lockout, "owner@example.com", ip(n)).await.unwrap();
    }
    assert!(lockout.reserve("owner@example.com", ip(77)).await.is_err());
    // Still known: its attempt is not stopped by the account lock. (A failed
    // attempt, so that no success renews the mark.)
    let attempt = lockout
        .reserve("owner@example.com", home)
        .await
        .expect("known 1 s before the mark expires");
    lockout.settle(attempt, Settlement::Failure).await;

    clock.advance(Duration::from_secs(2));
    let Err(LockoutError::Locked { retry_after }) =
        lockout.reserve("owner@example.com", home).await
    else {
        panic!("1 s after the mark expired, the owner's address is unknown");
    };
    assert_eq!(retry_after, Duration::from_secs(3600 - 2));
}

#[tokio::test]
async fn unlock_lifts_the_account_lock_and_is_audited() {
    let (_clock, lockout) = memory();
    for n in 0..50 {
        fail(&lockout, "carol@example.com", ip(n)).await.unwrap();
    }
    assert!(lockout.reserve("carol@example.com", ip(99)).await.is_err());
    lockout.unlock("carol@example.com", ip(99)).await.unwrap();
    assert_eq!(lockout.events("unlock", "account"), 1);
    let attempt = lockout.reserve("carol@example.com", ip(99)).await.unwrap();
    lockout.settle(attempt, Settlement::Failure).await;
}

fn redis_lockout(server: &RedisServer) -> Lockout {
    let options = RedisOptions::default().call_timeout(Duration::from_secs(1));
    let store = Store::redis(&server.url(), "redis", &options, MemoryStore::default()).unwrap();
    Lockout::new(store, LockoutPolicy::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_burst_over_two_instances_gets_at_most_fifty_password_checks() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (redis_lockout(&server), redis_lockout(&server));
    let checks = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..150u32)
        .map(|n| {
            let lockout = if n % 2 == 0 { a.clone() } else { b.clone() };
            let checks = Arc::clone(&checks);
            tokio::spawn(async move {
                if let Ok(attempt) = lockout.reserve("target@example.com", ip(n)).await {
                    // The password check happens only with a reserved slot.
                    checks.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    lockout.settle(attempt, Settlement::Failure).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(checks.load(Ordering::SeqCst), 50);
    // Every key has a TTL.
    let palisade_testkit::redis::Reply::Array(keys) = server.command(&["KEYS", "*"]).unwrap()
    else {
        panic!("KEYS");
    };
    assert!(!keys.is_empty());
    for key in keys {
        let key = key.as_str().unwrap().to_owned();
        let palisade_testkit::redis::Reply::Integer(ttl) = server.command(&["PTTL", &key]).unwrap()
        else {
            panic!("PTTL");
        };
        assert!(ttl > 0, "{key}");
        assert!(
            !key.contains("target"),
            "account names are not stored: {key}"
        );
    }
}

#[tokio::test]
async fn redis_lockout_thresholds_and_fail_closed_outage() {
    let mut server = RedisServer::start().unwrap();
    let lockout = redis_lockout(&server);
    for _ in 0..5 {
        fail(&lockout, "dave@example.com", ip(3)).await.unwrap();
    }
    let Err(LockoutError::Locked { retry_after }) =
        lockout.reserve("dave@example.com", ip(3)).await
    else {
        panic!("locked on Redis too");
    };
    assert!(retry_after > Duration::from_secs(890) && retry_after <= Duration::from_secs(900));
    server.kill();
    assert!(matches!(
        lockout.reserve("erin@example.com", ip(3)).await,
        Err(LockoutError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_cancelled_attempt_gives_its_slots_back() {
    let (_clock, lockout) = memory();
    for _ in 0..4 {
        fail(&lockout, "frank@example.com", ip(5)).await.unwrap();
    }
    for _ in 0..10 {
        let attempt = lockout.reserve("frank@example.com", ip(5)).await.unwrap();
        lockout.settle(attempt, Settlement::Cancelled).await;
    }
    // Still one failure left before the lock.
    fail(&lockout, "frank@example.com", ip(5)).await.unwrap();
    assert!(lockout.reserve("frank@example.com", ip(5)).await.is_err());
}

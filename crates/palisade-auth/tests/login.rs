#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! The login flow: cancellation at every await point, enumeration, NFKC,
//! rehash, shedding, a store outage, parallel guesses, password changes.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_auth::StorageError;
use palisade_auth::hash::{HashParams, Hasher, Verdict};
use palisade_auth::jwt::{Jwt, JwtConfig, Revocations};
use palisade_auth::lockout::{Lockout, LockoutPolicy};
use palisade_auth::login::{Login, LoginError, PasswordError, StoredUser, UserDirectory};
use palisade_auth::session::{MemoryRefreshStore, Sessions};
use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
use palisade_core::{ClientIp, ClientIpResolver, ManualClock};
use palisade_store::{MemoryStore, RedisOptions, Store};
use secrecy::SecretString;
use tokio::sync::Semaphore;

const FAST: HashParams = HashParams::new(256, 1, 1);
const PASSWORD: &str = "violet quartz harbor timber";

fn pw(s: &str) -> SecretString {
    SecretString::from(s)
}

fn client(last: u8) -> ClientIp {
    ClientIpResolver::default()
        .resolve([198, 51, 100, last].into(), &http::HeaderMap::new())
        .unwrap()
}

/// Users in memory. Each call can be made to wait at a gate the test opens,
/// and calls are counted.
#[derive(Default)]
struct Users {
    by_id: Mutex<HashMap<String, StoredUser>>,
    gate: Option<Arc<Semaphore>>,
    finds: AtomicUsize,
}

impl Users {
    fn with(users: impl IntoIterator<Item = StoredUser>) -> Self {
        Self {
            by_id: Mutex::new(users.into_iter().map(|u| (u.id.clone(), u)).collect()),
            ..Self::default()
        }
    }

    fn gated(mut self, gate: Arc<Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    async fn pass(&self) {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
    }

    fn hash_of(&self, id: &str) -> String {
        self.by_id.lock().unwrap()[id].password_hash.clone()
    }
}

impl UserDirectory for Users {
    async fn find(&self, identifier: &str) -> Result<Option<StoredUser>, StorageError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        self.pass().await;
        let users = self.by_id.lock().unwrap();
        Ok(users.values().find(|u| u.identifier == identifier).cloned())
    }

    async fn find_by_id(&self, id: &str) -> Result<Option<StoredUser>, StorageError> {
        self.pass().await;
        Ok(self.by_id.lock().unwrap().get(id).cloned())
    }

    async fn set_password_hash(&self, id: &str, phc: &str) -> Result<(), StorageError> {
        self.pass().await;
        if let Some(u) = self.by_id.lock().unwrap().get_mut(id) {
            phc.clone_into(&mut u.password_hash);
        }
        Ok(())
    }
}

fn hasher() -> Hasher {
    Hasher::builder().params(FAST).build().unwrap()
}

fn lockout(limit: u32) -> Lockout {
    let store = Store::memory(MemoryStore::default());
    Lockout::new(
        store,
        LockoutPolicy::default().per_client(limit, Duration::from_secs(900)),
    )
}

async fn bob(hasher: &Hasher) -> StoredUser {
    StoredUser::new(
        "u-bob",
        "bob@example.com",
        hasher.hash(&pw(PASSWORD)).await.unwrap(),
    )
}

/// Runs `n` failed logins to completion and says whether the next one is
/// locked out: with a limit of `limit`, exactly `limit` failures lock.
async fn failures_until_locked<D: UserDirectory>(
    login: &Login<D>,
    who: &str,
    from: &ClientIp,
) -> u32 {
    for n in 0..100 {
        match login.attempt(who, &pw("wrong guess words"), from).await {
            Err(LoginError::InvalidCredentials) => {}
            Err(LoginError::Locked { .. }) => return n,
            other => panic!("{other:?}"),
        }
    }
    panic!("never locked");
}

/// Lets spawned tasks (reservations, settlements) run on this
/// current-thread runtime.
async fn let_tasks_run() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A stored hash at the parameter ceiling (64 MiB, 10 passes): verifying
/// it keeps a hashing thread busy for a few hundred milliseconds — the
/// jobs queued behind it cannot finish before the test is done with them.
fn heavy_hash() -> String {
    format!(
        "$argon2id$v=19$m=65536,t=10,p=1$c2FsdHNhbHRzYWx0c2FsdA${}",
        "A".repeat(43)
    )
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// Drops a login at each of its await points in turn — while its lockout
/// slot is being reserved, while the user is being read, while the password
/// is being verified — and checks that the counters are exactly as before:
/// the next `limit` failures still all get a password check.
#[tokio::test]
async fn dropping_the_login_at_any_await_point_returns_its_lockout_slot() {
    const LIMIT: u32 = 3;
    let user = bob(&hasher()).await;
    let (heavy, anything) = (heavy_hash(), pw("anything"));
    for (stage, who) in [
        "reserving",
        "reading the user",
        "verifying",
        "reading an unknown user",
        "verifying the dummy",
    ]
    .into_iter()
    .zip([
        "bob@example.com",
        "bob@example.com",
        "bob@example.com",
        "eve@example.com",
        "eve@example.com",
    ]) {
        let gate = Arc::new(Semaphore::new(0));
        // One hashing thread, held by a slow job: the verifications queued
        // behind it cannot finish before they are dropped.
        let hasher = Hasher::builder().params(FAST).workers(1).build().unwrap();
        let mut blocker = Box::pin(hasher.verify(&anything, &heavy));
        assert!(poll_once(blocker.as_mut()).is_pending());
        let login = Login::new(
            Users::with([user.clone()]).gated(gate.clone()),
            hasher.clone(),
            lockout(LIMIT),
        );
        let from = client(7);
        for _ in 0..5 {
            let password = pw("wrong guess words");
            let mut attempt = Box::pin(login.attempt(who, &password, &from));
            // Poll 1: the reservation is sent to its task.
            assert!(poll_once(attempt.as_mut()).is_pending());
            if stage != "reserving" {
                let_tasks_run().await;
                // Poll 2: reserved; the user lookup waits at the gate.
                if let Poll::Ready(r) = poll_once(attempt.as_mut()) {
                    panic!("{stage}: poll 2 answered {r:?}");
                }
                assert!(
                    login.directory().finds.load(Ordering::SeqCst) > 0,
                    "{stage}"
                );
            }
            if stage.starts_with("verifying") {
                gate.add_permits(1);
                // Poll 3: the user is read; the verification is queued.
                assert!(poll_once(attempt.as_mut()).is_pending(), "{stage}");
                assert!(
                    poll_once(blocker.as_mut()).is_pending(),
                    "{stage}: the thread is still held, so no verdict came back"
                );
            }
            drop(attempt);
            let_tasks_run().await;
            login.directory().finds.store(0, Ordering::SeqCst);
        }
        // Let the slow job and the abandoned ones drain before counting.
        assert_eq!(blocker.await, Ok(false));
        while login.hasher().pending() > 0 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
        assert_eq!(
            failures_until_locked(&login, who, &from).await,
            LIMIT,
            "{stage}: five cancelled attempts must not count"
        );
    }
}

/// The other side: once the password was checked, the attempt counts even
/// if the caller goes away before the settlement has run.
#[tokio::test]
async fn an_attempt_dropped_after_its_check_still_counts() {
    const LIMIT: u32 = 3;
    let hasher = hasher();
    let gate = Arc::new(Semaphore::new(0));
    let login = Login::new(
        Users::with([bob(&hasher).await]).gated(gate.clone()),
        hasher,
        lockout(LIMIT),
    );
    let from = client(9);
    let password = pw("wrong guess words");
    let mut attempt = Box::pin(login.attempt("bob@example.com", &password, &from));
    assert!(poll_once(attempt.as_mut()).is_pending());
    let_tasks_run().await;
    assert!(poll_once(attempt.as_mut()).is_pending());
    gate.add_permits(1000);
    // The user is read and the verification queued; wait for its answer.
    assert!(poll_once(attempt.as_mut()).is_pending());
    while login.hasher().pending() > 0 {
        tokio::task::yield_now().await;
    }
    // This poll sees the verdict and hands the settlement to its task.
    assert!(poll_once(attempt.as_mut()).is_pending());
    drop(attempt);
    let_tasks_run().await;
    assert_eq!(
        failures_until_locked(&login, "bob@example.com", &from).await,
        LIMIT - 1
    );
}

#[tokio::test]
async fn unknown_and_known_accounts_get_the_same_answers_and_the_same_lockout() {
    let hasher = hasher();
    let login = Login::new(Users::with([bob(&hasher).await]), hasher, lockout(5));
    let known = failures_until_locked(&login, "bob@example.com", &client(1)).await;
    let unknown = failures_until_locked(&login, "nobody@example.com", &client(1)).await;
    assert_eq!((known, unknown), (5, 5));
    let a = login
        .attempt("bob@example.com", &pw(PASSWORD), &client(1))
        .await;
    let b = login
        .attempt("nobody@example.com", &pw(PASSWORD), &client(1))
        .await;
    let (Err(LoginError::Locked { retry_after: ra }), Err(LoginError::Locked { retry_after: rb })) =
        (a, b)
    else {
        panic!("both locked");
    };
    assert!(ra.as_secs().abs_diff(rb.as_secs()) <= 1, "{ra:?} {rb:?}");
    // The dummy hash is made with the live parameters.
    let live = login.hasher().hash(&pw("x-y-z-w")).await.unwrap();
    let params = |phc: &str| phc.split('$').nth(3).unwrap().to_owned();
    assert_eq!(params(login.hasher().dummy_hash()), params(&live));
}

#[tokio::test]
async fn identifiers_are_normalised_and_passwords_compared_in_nfkc() {
    let hasher = hasher();
    let wide = "ｖｉｏｌｅｔ ｑｕａｒｔｚ ｈａｒｂｏｒ ｔｉｍｂｅｒ";
    let phc = hasher.hash(&pw(wide)).await.unwrap();
    let user = StoredUser::new("u1", "bob@example.com", phc);
    let login = Login::new(Users::with([user]), hasher, lockout(5));
    for (who, password) in [
        (" BOB@example.com ", PASSWORD),
        ("ｂｏｂ@example.com", wide),
    ] {
        let ok = login.attempt(who, &pw(password), &client(2)).await.unwrap();
        assert_eq!((ok.id(), ok.identifier()), ("u1", "bob@example.com"));
    }
}

#[tokio::test]
async fn a_hash_of_an_unnormalised_password_verifies_and_is_rehashed_on_login() {
    let hasher = hasher();
    let wide = "ｖｉｏｌｅｔ ｑｕａｒｔｚ ｈａｒｂｏｒ ｔｉｍｂｅｒ";
    let legacy = common::unnormalised_hash(wide, FAST);
    let login = Login::new(
        Users::with([StoredUser::new("u1", "bob@example.com", legacy.clone())]),
        hasher.clone(),
        lockout(5),
    );
    // The NFKC form does not match a hash of the typed form...
    assert!(
        login
            .attempt("bob@example.com", &pw(PASSWORD), &client(3))
            .await
            .is_err()
    );
    // ...the typed form does, and the hash is replaced by an NFKC one.
    login
        .attempt("bob@example.com", &pw(wide), &client(3))
        .await
        .unwrap();
    let new = login.directory().hash_of("u1");
    assert_ne!(new, legacy);
    assert_eq!(
        hasher.check(&pw(PASSWORD), &new).await.unwrap(),
        Verdict::Match
    );
}

#[tokio::test]
async fn a_saturated_pool_sheds_logins_before_they_reserve_or_read() {
    // One thread and a queue of one, both taken by slow jobs.
    let hasher = Hasher::builder()
        .params(FAST)
        .workers(1)
        .queue(1)
        .build()
        .unwrap();
    let login = Login::new(
        Users::with([bob(&hasher).await]),
        hasher.clone(),
        lockout(3),
    );
    let (heavy, anything) = (heavy_hash(), pw("anything"));
    // Fill the pool until it refuses. A blocker takes a few hundred
    // milliseconds; on a loaded machine one may finish while the test thread
    // waits for a core, so the loop refills until the pool says it is full
    // rather than trusting a count taken earlier.
    let mut blockers = Vec::new();
    for _ in 0..1000 {
        if hasher.saturated() {
            break;
        }
        let mut blocker = Box::pin(hasher.verify(&anything, &heavy));
        let _ = poll_once(blocker.as_mut());
        blockers.push(blocker);
        tokio::task::yield_now().await;
    }
    assert!(hasher.saturated());
    let shed = login
        .attempt("bob@example.com", &pw("wrong guess words"), &client(4))
        .await;
    let Err(LoginError::Busy { retry_after }) = shed else {
        panic!("{shed:?}");
    };
    assert!(retry_after >= Duration::from_secs(1));
    assert_eq!(
        login.directory().finds.load(Ordering::SeqCst),
        0,
        "nothing was read"
    );
    drop(blockers);
    while hasher.pending() > 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        failures_until_locked(&login, "bob@example.com", &client(4)).await,
        3
    );
}

#[tokio::test]
async fn an_unreachable_lockout_store_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis+unix://{}", dir.path().join("absent.sock").display());
    let store = Store::redis(
        &url,
        "test",
        &RedisOptions::default(),
        MemoryStore::default(),
    )
    .unwrap();
    let hasher = hasher();
    let login = Login::new(
        Users::with([bob(&hasher).await]),
        hasher,
        Lockout::new(store, LockoutPolicy::default()),
    );
    let res = login
        .attempt("bob@example.com", &pw(PASSWORD), &client(5))
        .await;
    assert!(matches!(res, Err(LoginError::Unavailable)), "{res:?}");
    assert_eq!(login.directory().finds.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_burst_of_guesses_gets_no_more_checks_than_the_limit() {
    let hasher = hasher();
    let login = Login::new(Users::with([bob(&hasher).await]), hasher, lockout(5));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let login = login.clone();
            tokio::spawn(async move {
                login
                    .attempt("bob@example.com", &pw("wrong guess words"), &client(6))
                    .await
            })
        })
        .collect();
    let mut wrong = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(LoginError::InvalidCredentials) => wrong += 1,
            Err(LoginError::Locked { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wrong, 5);
    assert_eq!(login.directory().finds.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_password_change_checks_the_current_password_and_ends_the_other_sessions() {
    let clock = Arc::new(ManualClock::at_unix(Duration::from_secs(1_800_000_000)));
    let shared: palisade_core::SharedClock = clock.clone();
    let store = Store::memory(MemoryStore::builder().clock(shared.clone()).build());
    let jwt = Arc::new(
        Jwt::new(
            KeyRing::new(HmacKey::generate(HmacAlgorithm::Hs256).unwrap()),
            JwtConfig::new("https://id.example", "api"),
        )
        .unwrap()
        .with_clock(shared),
    );
    let sessions = Sessions::new(
        MemoryRefreshStore::default(),
        jwt.clone(),
        Revocations::new(store.clone(), jwt.access_ttl()),
    );
    let hasher = hasher();
    let login = Login::new(
        Users::with([bob(&hasher).await]),
        hasher,
        Lockout::new(
            store,
            LockoutPolicy::default().per_client(3, Duration::from_secs(900)),
        ),
    );
    let mine = sessions.issue("u-bob").await.unwrap();
    let other = sessions.issue("u-bob").await.unwrap();
    let new = pw("amber lantern orchard pebble");
    // A wrong current password is a failed login: the lockout counts it.
    for _ in 0..3 {
        let res = login
            .change_password(
                &sessions,
                mine.claims(),
                &pw("not it at all"),
                &new,
                &client(8),
            )
            .await;
        assert!(
            matches!(
                res,
                Err(PasswordError::Login(LoginError::InvalidCredentials))
            ),
            "{res:?}"
        );
    }
    let res = login
        .change_password(&sessions, mine.claims(), &pw(PASSWORD), &new, &client(8))
        .await;
    assert!(
        matches!(res, Err(PasswordError::Login(LoginError::Locked { .. }))),
        "{res:?}"
    );
    // From another address: the policy applies to the new password.
    let res = login
        .change_password(
            &sessions,
            mine.claims(),
            &pw(PASSWORD),
            &pw("password"),
            &client(9),
        )
        .await;
    let Err(PasswordError::Policy(violations)) = res else {
        panic!("{res:?}");
    };
    assert!(violations.iter().any(|v| v.code == "too_common"));
    login
        .change_password(&sessions, mine.claims(), &pw(PASSWORD), &new, &client(9))
        .await
        .unwrap();
    let revoked = |claims| {
        let sessions = sessions.clone();
        async move { sessions.revocations().is_revoked(&claims).await.unwrap() }
    };
    assert!(
        !revoked(mine.claims().clone()).await,
        "the caller's session goes on"
    );
    assert!(revoked(other.claims().clone()).await);
    assert!(sessions.refresh(other.refresh_token()).await.is_err());
    assert!(
        login
            .attempt("bob@example.com", &pw(PASSWORD), &client(9))
            .await
            .is_err()
    );
    login
        .attempt("bob@example.com", &new, &client(9))
        .await
        .unwrap();
}

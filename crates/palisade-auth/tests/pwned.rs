//! The breached-password check against stub range APIs on loopback: found,
//! not found, padding, the request sent, failing open (failing, hanging,
//! refusing) and the breaker; and the `breached` refusal of the login flow.

use std::time::{Duration, Instant};

use palisade_auth::StorageError;
use palisade_auth::hash::{HashParams, Hasher};
use palisade_auth::lockout::{Lockout, LockoutPolicy};
use palisade_auth::login::{Login, PasswordError, StoredUser, UserDirectory};
use palisade_auth::pwned::{Breach, PwnedCheck, range_key};
use palisade_resilience::breaker::State;
use palisade_store::{MemoryStore, Store};
use palisade_testkit::stub::{Mode, StubServer};
use secrecy::SecretString;

const BREACHED: &str = "correct horse battery staple";

fn range_with(password: &str, count: u64) -> String {
    let (_, suffix) = range_key(password);
    // Padding lines (count 0) around the real one, as the API sends.
    format!(
        "0000000000000000000000000000000000A:0\r\n{suffix}:{count}\r\n0000000000000000000000000000000000B:0\r\n"
    )
}

#[tokio::test]
async fn a_breached_password_is_found_with_only_the_prefix_sent() {
    let stub = StubServer::start(Mode::answer(200, range_with(BREACHED, 7))).unwrap();
    let check = PwnedCheck::new(&stub.url()).unwrap();
    assert_eq!(
        check.check(&SecretString::from(BREACHED)).await,
        Breach::Found(7)
    );
    assert_eq!(
        check
            .check(&SecretString::from("another fine password"))
            .await,
        Breach::NotFound
    );
    let requests = stub.requests();
    let (prefix, suffix) = range_key(BREACHED);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, format!("/range/{prefix}"));
    assert_eq!(requests[0].header("add-padding"), Some("true"));
    let everything = format!("{requests:?}");
    assert!(!everything.contains(&suffix) && !everything.contains(BREACHED));
    assert_eq!(check.checks("breached"), 1);
    assert_eq!(check.checks("clean"), 1);
}

#[tokio::test]
async fn a_padded_zero_count_line_is_not_a_breach() {
    let stub = StubServer::start(Mode::answer(200, range_with(BREACHED, 0))).unwrap();
    let check = PwnedCheck::new(&stub.url()).unwrap();
    assert_eq!(
        check.check(&SecretString::from(BREACHED)).await,
        Breach::NotFound
    );
}

#[tokio::test]
async fn failing_hanging_and_refusing_apis_fail_open_within_the_deadline() {
    let stub = StubServer::start(Mode::Fail).unwrap();
    let check = PwnedCheck::builder(&stub.url())
        .unwrap()
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let pw = SecretString::from(BREACHED);
    assert_eq!(check.check(&pw).await, Breach::Unknown);

    let stub_hang = StubServer::start(Mode::Hang).unwrap();
    let hanging = PwnedCheck::builder(&stub_hang.url())
        .unwrap()
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(hanging.check(&pw).await, Breach::Unknown);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Nothing listens on this port any more: connections are refused.
    let refused_url = {
        let gone = StubServer::start(Mode::Refuse).unwrap();
        gone.url()
    };
    std::thread::sleep(Duration::from_millis(50));
    let refusing = PwnedCheck::new(&refused_url).unwrap();
    assert_eq!(refusing.check(&pw).await, Breach::Unknown);
    assert_eq!(check.checks("unavailable"), 1);
}

#[tokio::test]
async fn once_the_breaker_opens_the_api_is_not_called() {
    let stub = StubServer::start(Mode::Fail).unwrap();
    let check = PwnedCheck::new(&stub.url()).unwrap();
    let pw = SecretString::from(BREACHED);
    for _ in 0..3 {
        assert_eq!(check.check(&pw).await, Breach::Unknown);
    }
    assert_eq!(check.breaker().unwrap().state(), State::Open);
    let before = stub.requests().len();
    stub.set_mode(Mode::Hang);
    let start = Instant::now();
    for _ in 0..100 {
        assert_eq!(check.check(&pw).await, Breach::Unknown);
    }
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(stub.requests().len(), before, "no call while open");
}

struct Users(StoredUser);

impl UserDirectory for Users {
    async fn find(&self, identifier: &str) -> Result<Option<StoredUser>, StorageError> {
        Ok((self.0.identifier == identifier).then(|| self.0.clone()))
    }
    async fn find_by_id(&self, id: &str) -> Result<Option<StoredUser>, StorageError> {
        Ok((self.0.id == id).then(|| self.0.clone()))
    }
    async fn set_password_hash(&self, _id: &str, _phc: &str) -> Result<(), StorageError> {
        Ok(())
    }
}

#[tokio::test]
async fn the_login_flow_refuses_a_breached_new_password_with_the_breached_code() {
    let stub = StubServer::start(Mode::answer(200, range_with(BREACHED, 3))).unwrap();
    let hasher = Hasher::builder()
        .params(HashParams::new(1024, 1, 1))
        .build()
        .unwrap();
    let lockout = Lockout::new(
        Store::memory(MemoryStore::default()),
        LockoutPolicy::default(),
    );
    let login = Login::new(
        Users(StoredUser::new("u1", "bob@example.com", "")),
        hasher,
        lockout,
    )
    .breach_check(PwnedCheck::new(&stub.url()).unwrap());
    let err = login
        .new_password_hash("bob@example.com", &SecretString::from(BREACHED))
        .await
        .unwrap_err();
    let PasswordError::Policy(violations) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        violations.iter().map(|v| v.code).collect::<Vec<_>>(),
        ["breached"]
    );
    let problem = serde_json::to_value(err.problem("password")).unwrap();
    assert_eq!(problem["status"], 422);
    assert_eq!(problem["errors"][0]["field"], "password");
    assert_eq!(problem["errors"][0]["code"], "breached");
    // A password the policy refuses is not sent at all.
    let before = stub.requests().len();
    assert!(
        login
            .new_password_hash("bob@example.com", &SecretString::from("short"))
            .await
            .is_err()
    );
    assert_eq!(stub.requests().len(), before);
    // A clean one passes; with the API down, it passes too (fail open).
    assert!(
        login
            .new_password_hash(
                "bob@example.com",
                &SecretString::from("another fine password")
            )
            .await
            .is_ok()
    );
    stub.set_mode(Mode::Fail);
    assert!(
        login
            .new_password_hash("bob@example.com", &SecretString::from(BREACHED))
            .await
            .is_ok()
    );
}

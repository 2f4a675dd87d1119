#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! Sessions over the memory, SQLite and PostgreSQL refresh stores (the same
//! test bodies over each): rotation, reuse, the races of refresh against
//! logout and replay, ending sessions, pruning, a revocation store outage.
//! Time is a `ManualClock`; PostgreSQL is a throwaway cluster.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use palisade_auth::jwt::{Jwt, JwtConfig, Revocations};
use palisade_auth::session::postgres::PostgresRefreshStore;
use palisade_auth::session::sqlite::SqliteRefreshStore;
use palisade_auth::session::{
    MemoryRefreshStore, NewToken, REUSE_GRACE, RefreshStore, Rotation, SessionError, Sessions,
    TokenPair,
};
use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
use palisade_core::ManualClock;
use palisade_store::{MemoryStore, RedisOptions, Store};
use palisade_testkit::postgres::PostgresServer;
use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

struct Env<S> {
    clock: Arc<ManualClock>,
    sessions: Sessions<S>,
    db: Db,
}

/// The database under a store, for looking at its tables directly; it
/// lives as long as the store.
enum Db {
    Memory,
    Sqlite(sqlx::SqlitePool, #[allow(dead_code)] tempfile::TempDir),
    Postgres(sqlx::PgPool, #[allow(dead_code)] PostgresServer),
}

impl Db {
    /// `(user_id, revoked)` of every family.
    async fn families(&self) -> Vec<(String, bool)> {
        const SQL: &str = "SELECT user_id, revoked FROM palisade_refresh_families";
        match self {
            Self::Memory => panic!("the memory store has no tables"),
            Self::Sqlite(pool, _) => sqlx::query_as::<_, (String, i64)>(SQL)
                .fetch_all(pool)
                .await
                .unwrap()
                .into_iter()
                .map(|(u, r)| (u, r != 0))
                .collect(),
            Self::Postgres(pool, _) => sqlx::query_as(SQL).fetch_all(pool).await.unwrap(),
        }
    }
}

fn parts(clock: &Arc<ManualClock>, store: Store) -> (Arc<Jwt>, Revocations) {
    let shared: palisade_core::SharedClock = clock.clone();
    let jwt = Jwt::new(
        KeyRing::new(HmacKey::generate(HmacAlgorithm::Hs256).unwrap()),
        JwtConfig::new("https://id.example", "api").access_ttl(ACCESS_TTL),
    )
    .unwrap()
    .with_clock(shared);
    let jwt = Arc::new(jwt);
    let revocations = Revocations::new(store, jwt.access_ttl());
    (jwt, revocations)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix(Duration::from_secs(1_800_000_000)))
}

fn memory_store(clock: &Arc<ManualClock>) -> Store {
    Store::memory(MemoryStore::builder().clock(clock.clone()).build())
}

fn memory() -> Env<MemoryRefreshStore> {
    let clock = clock();
    let (jwt, revocations) = parts(&clock, memory_store(&clock));
    Env {
        sessions: Sessions::new(MemoryRefreshStore::default(), jwt, revocations),
        clock,
        db: Db::Memory,
    }
}

async fn sqlite_pool(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("sessions.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap()
}

async fn sqlite() -> Env<SqliteRefreshStore> {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir).await;
    let store = SqliteRefreshStore::new(pool.clone());
    store.migrate().await.unwrap();
    // Applying the schema twice is harmless.
    store.migrate().await.unwrap();
    let clock = clock();
    let (jwt, revocations) = parts(&clock, memory_store(&clock));
    Env {
        sessions: Sessions::new(store, jwt, revocations),
        clock,
        db: Db::Sqlite(pool, dir),
    }
}

async fn postgres() -> Env<PostgresRefreshStore> {
    // The races queue a thousand rotations on 16 connections: wait for one.
    postgres_with(Duration::from_secs(60)).await
}

/// A store whose pool waits at most `acquire` for a connection.
async fn postgres_with(acquire: Duration) -> Env<PostgresRefreshStore> {
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(acquire)
        .connect(&server.url("postgres"))
        .await
        .unwrap();
    let store = PostgresRefreshStore::new(pool.clone());
    // Several instances starting at once migrate at once: harmless.
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();
    store.migrate().await.unwrap();
    let clock = clock();
    let (jwt, revocations) = parts(&clock, memory_store(&clock));
    Env {
        sessions: Sessions::new(store, jwt, revocations),
        clock,
        db: Db::Postgres(pool, server),
    }
}

/// Whether an access token still opens the API: verified and not revoked
/// (what `AuthLayer` checks).
async fn authorises<S: RefreshStore>(sessions: &Sessions<S>, token: &str) -> bool {
    match sessions.jwt().verify(token) {
        Ok(claims) => !sessions.revocations().is_revoked(&claims).await.unwrap(),
        Err(_) => false,
    }
}

async fn refreshes<S: RefreshStore>(sessions: &Sessions<S>, token: &str) -> bool {
    match sessions.refresh(token).await {
        Ok(_) => true,
        Err(SessionError::Invalid) => false,
        Err(e) => panic!("refresh failed: {e}"),
    }
}

/// A few scheduler yields, different for each task: the competing calls of
/// a race start in varying orders without sleeping.
async fn jitter(seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 29;
    for _ in 0..(x % 24) {
        tokio::task::yield_now().await;
    }
}

async fn rotation_and_reuse<S: RefreshStore>(env: Env<S>) {
    let s = &env.sessions;
    let first = s.issue("user-1").await.unwrap();
    assert!(authorises(s, first.access_token()).await);
    let second = s.refresh(first.refresh_token()).await.unwrap();
    assert_eq!(second.claims().fam, first.claims().fam, "the same family");
    assert_eq!(second.claims().sub, "user-1");
    // A replay inside the grace window (two tabs) is refused, family intact.
    env.clock.advance(REUSE_GRACE);
    assert!(!refreshes(s, first.refresh_token()).await);
    assert!(authorises(s, second.access_token()).await);
    let third = s.refresh(second.refresh_token()).await.unwrap();
    // After the window, a replay revokes the whole family at once.
    env.clock.advance(Duration::from_secs(1));
    assert!(!refreshes(s, first.refresh_token()).await);
    assert!(!refreshes(s, third.refresh_token()).await);
    assert!(!authorises(s, third.access_token()).await);
    // Garbage and oversized tokens are refused without a store error.
    assert!(!refreshes(s, "").await);
    assert!(!refreshes(s, &"a".repeat(4096)).await);
    assert!(!refreshes(s, "not-a-token").await);
    // Refresh tokens expire after 14 days.
    let other = s.issue("user-2").await.unwrap();
    env.clock.advance(Duration::from_secs(14 * 86_400));
    assert!(!refreshes(s, other.refresh_token()).await);
    assert!(!format!("{other:?}").contains(other.refresh_token()));
    assert!(!format!("{other:?}").contains(other.access_token()));
}

#[tokio::test]
async fn rotation_and_reuse_detection_memory() {
    rotation_and_reuse(memory()).await;
}

#[tokio::test]
async fn rotation_and_reuse_detection_sqlite() {
    rotation_and_reuse(sqlite().await).await;
}

#[tokio::test]
async fn rotation_and_reuse_detection_postgres() {
    rotation_and_reuse(postgres().await).await;
}

async fn ending_sessions<S: RefreshStore>(env: Env<S>) {
    let s = &env.sessions;
    let a = s.issue("user-1").await.unwrap();
    let b = s.issue("user-1").await.unwrap();
    let c = s.issue("user-1").await.unwrap();
    let other = s.issue("user-2").await.unwrap();
    // A password change with session A: the others end, A goes on.
    s.end_others(a.claims()).await.unwrap();
    assert!(authorises(s, a.access_token()).await);
    for gone in [&b, &c] {
        assert!(!authorises(s, gone.access_token()).await);
        assert!(!refreshes(s, gone.refresh_token()).await);
    }
    let a2 = s.refresh(a.refresh_token()).await.unwrap();
    // Log out everywhere: every token of the user, no one else's.
    s.end_all("user-1").await.unwrap();
    assert!(!authorises(s, a.access_token()).await);
    assert!(!authorises(s, a2.access_token()).await);
    assert!(!refreshes(s, a2.refresh_token()).await);
    assert!(authorises(s, other.access_token()).await);
    // A login a second later is a new session that works.
    env.clock.advance(Duration::from_secs(1));
    let fresh = s.issue("user-1").await.unwrap();
    assert!(authorises(s, fresh.access_token()).await);
    assert!(refreshes(s, fresh.refresh_token()).await);
}

#[tokio::test]
async fn ending_all_or_the_other_sessions_memory() {
    ending_sessions(memory()).await;
}

#[tokio::test]
async fn ending_all_or_the_other_sessions_sqlite() {
    ending_sessions(sqlite().await).await;
}

#[tokio::test]
async fn ending_all_or_the_other_sessions_postgres() {
    ending_sessions(postgres().await).await;
}

async fn pruning<S: RefreshStore>(env: Env<S>) {
    let s = &env.sessions;
    let old = s.issue("user-1").await.unwrap();
    let spent = s.refresh(old.refresh_token()).await.unwrap();
    env.clock.advance(Duration::from_secs(7 * 86_400));
    let young = s.issue("user-2").await.unwrap();
    s.logout(young.claims()).await.unwrap();
    assert_eq!(s.prune().await.unwrap(), 0);
    // 14 days after the first family: its two tokens have expired.
    env.clock.advance(Duration::from_secs(7 * 86_400));
    assert_eq!(s.prune().await.unwrap(), 2);
    assert!(!refreshes(s, spent.refresh_token()).await);
    // The revoked family still has a live token: it stays, still revoked.
    assert_eq!(env.db.families().await, [("user-2".to_owned(), true)]);
    assert!(!refreshes(s, young.refresh_token()).await);
}

#[tokio::test]
async fn pruning_deletes_expired_tokens_and_empty_families_only_sqlite() {
    pruning(sqlite().await).await;
}

#[tokio::test]
async fn pruning_deletes_expired_tokens_and_empty_families_only_postgres() {
    pruning(postgres().await).await;
}

/// 500 sessions; for each, a refresh and a logout at once. After every
/// logout has answered, no token of any of the families refreshes or
/// authorises — at once, at the edges of the access token's lifetime, and
/// after it.
async fn refresh_against_logout<S: RefreshStore>(env: Env<S>) {
    const N: usize = 500;
    let mut pairs = Vec::with_capacity(N);
    for i in 0..N {
        pairs.push(env.sessions.issue(&format!("user-{i}")).await.unwrap());
    }
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, pair)| {
            let sessions = env.sessions.clone();
            tokio::spawn(async move {
                let seed = i as u64;
                let refresh = {
                    let sessions = sessions.clone();
                    let token = pair.refresh_token().to_owned();
                    async move {
                        jitter(seed).await;
                        sessions.refresh(&token).await
                    }
                };
                let logout = {
                    let sessions = sessions.clone();
                    let claims = pair.claims().clone();
                    async move {
                        jitter(seed >> 3 ^ 0x55).await;
                        sessions.logout(&claims).await
                    }
                };
                let (refreshed, logged_out) =
                    tokio::join!(tokio::spawn(refresh), tokio::spawn(logout));
                logged_out.unwrap().unwrap();
                (pair, refreshed.unwrap())
            })
        })
        .collect();
    let mut outcomes: Vec<(TokenPair, Option<TokenPair>)> = Vec::with_capacity(N);
    for t in tasks {
        let (pair, refreshed) = t.await.unwrap();
        let refreshed = match refreshed {
            Ok(p) => Some(p),
            Err(SessionError::Invalid) => None,
            Err(e) => panic!("{e}"),
        };
        outcomes.push((pair, refreshed));
    }
    let won = outcomes.iter().filter(|(_, r)| r.is_some()).count();
    println!("{won} of {N} refreshes won the race against their logout");
    let check = |label: &'static str| {
        let env = &env;
        let outcomes = &outcomes;
        async move {
            for (pair, refreshed) in outcomes {
                for p in std::iter::once(pair).chain(refreshed) {
                    assert!(
                        !authorises(&env.sessions, p.access_token()).await,
                        "{label}: an access token outlived its logout"
                    );
                    assert!(
                        !refreshes(&env.sessions, p.refresh_token()).await,
                        "{label}: a refresh token outlived its logout"
                    );
                }
            }
        }
    };
    check("at once").await;
    // The edges: the revocation marks expire with the tokens they cover.
    env.clock
        .advance(Duration::from_secs(ACCESS_TTL.as_secs() - 1));
    check("one second before the access tokens expire").await;
    for _ in 0..7 {
        env.clock.advance(Duration::from_secs(1));
        check("around expiry and leeway").await;
    }
    env.clock.advance(ACCESS_TTL);
    check("after the access token lifetime").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_refresh_logout_races_leave_no_live_token_memory() {
    refresh_against_logout(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_refresh_logout_races_leave_no_live_token_sqlite() {
    refresh_against_logout(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_refresh_logout_races_leave_no_live_token_postgres() {
    refresh_against_logout(postgres().await).await;
}

/// 500 sessions, each refreshed once; after the grace window, the new token
/// and the spent one (a thief's replay) are presented at once. Once the
/// reuse is detected, no token of the family refreshes or authorises.
async fn refresh_against_replay<S: RefreshStore>(env: Env<S>) {
    const N: usize = 500;
    let mut sets = Vec::with_capacity(N);
    for i in 0..N {
        let first = env.sessions.issue(&format!("user-{i}")).await.unwrap();
        let second = env.sessions.refresh(first.refresh_token()).await.unwrap();
        sets.push((first, second));
    }
    env.clock.advance(REUSE_GRACE + Duration::from_secs(1));
    let tasks: Vec<_> = sets
        .into_iter()
        .enumerate()
        .map(|(i, (first, second))| {
            let sessions = env.sessions.clone();
            tokio::spawn(async move {
                let seed = i as u64;
                let legit = {
                    let sessions = sessions.clone();
                    let token = second.refresh_token().to_owned();
                    async move {
                        jitter(seed).await;
                        sessions.refresh(&token).await
                    }
                };
                let replay = {
                    let sessions = sessions.clone();
                    let token = first.refresh_token().to_owned();
                    async move {
                        jitter(seed.rotate_left(7)).await;
                        sessions.refresh(&token).await
                    }
                };
                let (legit, replay) = tokio::join!(tokio::spawn(legit), tokio::spawn(replay));
                assert!(matches!(replay.unwrap(), Err(SessionError::Invalid)));
                (first, second, legit.unwrap())
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(N * 3);
    let mut won = 0;
    for t in tasks {
        let (first, second, legit) = t.await.unwrap();
        seen.push(first);
        seen.push(second);
        match legit {
            Ok(third) => {
                won += 1;
                seen.push(third);
            }
            Err(SessionError::Invalid) => {}
            Err(e) => panic!("{e}"),
        }
    }
    println!("{won} of {N} legitimate refreshes won the race against the replay");
    for label in ["at once", "after the access token lifetime"] {
        for p in &seen {
            assert!(
                !authorises(&env.sessions, p.access_token()).await,
                "{label}"
            );
            assert!(
                !refreshes(&env.sessions, p.refresh_token()).await,
                "{label}"
            );
        }
        env.clock.advance(ACCESS_TTL + Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_refresh_replay_races_revoke_the_whole_family_memory() {
    refresh_against_replay(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_refresh_replay_races_revoke_the_whole_family_sqlite() {
    refresh_against_replay(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_refresh_replay_races_revoke_the_whole_family_postgres() {
    refresh_against_replay(postgres().await).await;
}

#[tokio::test]
async fn logout_with_the_revocation_store_down_still_ends_the_refresh_family() {
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis+unix://{}", dir.path().join("absent.sock").display());
    let down = Store::redis(
        &url,
        "test",
        &RedisOptions::default(),
        MemoryStore::builder().clock(clock.clone()).build(),
    )
    .unwrap();
    let (jwt, revocations) = parts(&clock, down);
    let sessions = Sessions::new(MemoryRefreshStore::default(), jwt, revocations);
    let pair = sessions.issue("user-1").await.unwrap();
    // The shared marks cannot be written: the caller is told (503)...
    assert!(matches!(
        sessions.logout(pair.claims()).await,
        Err(SessionError::Unavailable(_))
    ));
    // ...the family is revoked in the database all the same, and the access
    // token does not authorise while the store is down (fail closed).
    assert!(!refreshes(&sessions, pair.refresh_token()).await);
    assert!(
        sessions
            .revocations()
            .is_revoked(pair.claims())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_database_outage_is_503_not_500_and_sessions_survive_it() {
    let mut env = postgres_with(Duration::from_secs(2)).await;
    let pair = env.sessions.issue("user-1").await.unwrap();
    let Db::Postgres(_, server) = &mut env.db else {
        unreachable!()
    };
    server.kill();
    let err = env
        .sessions
        .refresh(pair.refresh_token())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SessionError::Storage(e) if e.is_unavailable()),
        "{err:?}"
    );
    assert_eq!(err.problem().status_code().as_u16(), 503);
    let Db::Postgres(_, server) = &mut env.db else {
        unreachable!()
    };
    server.restart().unwrap();
    // The pool reconnects; what was committed before the outage is there.
    let next = env.sessions.refresh(pair.refresh_token()).await.unwrap();
    assert!(refreshes(&env.sessions, next.refresh_token()).await);
}

/// PostgreSQL's deadlocks counter for the current database (its statistics
/// reach the view within a second or so: polled).
async fn deadlocks(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// A migrated store straight on a pool of its own (no sessions around it),
/// the URL for more connections, and the server it lives on. The store's
/// sessions look for deadlocks after 3 s of waiting (PostgreSQL: 1 s), so
/// a test can close a cycle on a loaded machine before the check runs.
async fn bare_postgres() -> (PostgresServer, String, PostgresRefreshStore) {
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap()
        .unwrap();
    let url = server.url("postgres");
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("deadlock_timeout", "3s")]);
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    let store = PostgresRefreshStore::new(pool);
    store.migrate().await.unwrap();
    (server, url, store)
}

/// A rotation that PostgreSQL aborts to break a deadlock (here against a
/// transaction that holds the family row, then asks for the token row the
/// rotation holds) runs again and rotates, instead of failing the refresh
/// with a 500. Pruning, which deletes tokens then families, can close the
/// same cycle.
#[tokio::test]
async fn a_rotation_aborted_to_break_a_deadlock_runs_again_postgres() {
    let (_server, url, store) = bare_postgres().await;
    let first = NewToken {
        hash: [1; 32],
        issued_at: 100,
        expires_at: 1_000,
    };
    store.create("f", "u", first).await.unwrap();
    let mut observer = sqlx::PgConnection::connect(&url).await.unwrap();
    let before = deadlocks(&mut observer).await;
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    // This side never looks for the deadlock first: the rotation, waiting
    // since before the cycle closed, finds it and is the one aborted.
    sqlx::raw_sql(
        "SET deadlock_timeout = '60s'; \
         BEGIN; SELECT 1 FROM palisade_refresh_families WHERE family = 'f' FOR UPDATE",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let next = NewToken {
        hash: [2; 32],
        issued_at: 200,
        expires_at: 1_100,
    };
    let rotation = store.rotate([1; 32], next, Duration::from_secs(10));
    let cycle = async {
        // Once the rotation holds the token row and waits for the family...
        while sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        .fetch_one(&mut observer)
        .await
        .unwrap()
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ...ask for the token row: PostgreSQL aborts one of the two.
        let asked = sqlx::query("SELECT 1 FROM palisade_refresh_tokens WHERE hash = $1 FOR UPDATE")
            .bind([1u8; 32].as_slice())
            .execute(&mut other)
            .await;
        sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
        asked
    };
    let (rotated, asked) = tokio::join!(rotation, cycle);
    asked.unwrap();
    assert!(
        matches!(rotated, Ok(Rotation::Rotated { .. })),
        "{rotated:?}"
    );
    // The cycle did close (or the test proves nothing).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while deadlocks(&mut observer).await == before {
        assert!(std::time::Instant::now() < deadline, "no deadlock happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An instance starting while another one prunes: migrating a schema that
/// is already there takes no table lock. (`CREATE INDEX IF NOT EXISTS`
/// takes a SHARE lock on its table even when the index exists: behind a
/// pruning transaction it waited, and when that transaction went on to the
/// families the two deadlocked and the starting instance exited.)
#[tokio::test]
async fn migrating_an_existing_schema_while_pruning_takes_no_lock_postgres() {
    let (_server, url, store) = bare_postgres().await;
    let mut pruning = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; DELETE FROM palisade_refresh_tokens WHERE expires_at <= 0")
        .execute(&mut pruning)
        .await
        .unwrap();
    // Bounds a hang (the failure), not a window.
    let started = tokio::time::timeout(Duration::from_secs(10), store.migrate()).await;
    assert!(matches!(started, Ok(Ok(()))), "{started:?}");
    sqlx::raw_sql(
        "DELETE FROM palisade_refresh_families f WHERE NOT EXISTS \
         (SELECT 1 FROM palisade_refresh_tokens t WHERE t.family = f.family); COMMIT",
    )
    .execute(&mut pruning)
    .await
    .unwrap();
}

//! The database: SQLite (the embedded default) or PostgreSQL (several
//! instances sharing one database), chosen by `APP_DATABASE_URL`.
//!
//! - **One set of queries** where the SQL agrees: they are written once with
//!   `$1`-style parameters (both drivers accept them) and run on either pool
//!   through [`on_db!`](crate::on_db), which expands the same code once per
//!   driver.
//! - **A clear split** where it does not: the schemas (`migrations/sqlite`
//!   and `migrations/postgres`, same version numbers), and
//!   [`Dialect::begin_locked`], the transaction that serialises one user's
//!   quota reservations — SQLite's `BEGIN IMMEDIATE` (the database's write
//!   lock) against PostgreSQL's `BEGIN` and a transaction-scoped advisory
//!   lock on the user.
//! - **Migrations** are embedded and applied at start, on a connection of
//!   their own bounded by `APP_DATABASE_MIGRATION_TIMEOUT_MS` rather than by
//!   the requests' statement timeout. On PostgreSQL sqlx's migrator holds an
//!   advisory lock while it runs, and the refresh-token store's `migrate`
//!   another: two instances starting together take turns, however long the
//!   first one's migrations take within that bound.
//! - **Fail fast**: a pool of `APP_DATABASE_POOL_SIZE` connections; a request
//!   waits at most `APP_DATABASE_CONNECT_TIMEOUT_MS` for one, and a statement
//!   runs at most `APP_DATABASE_STATEMENT_TIMEOUT_MS` (PostgreSQL's
//!   `statement_timeout`; SQLite's busy timeout, the only wait it has). A
//!   database that is down or too slow is a 503 with `Retry-After`
//!   ([`problem`]), not a hung request.
//! - The URL is a secret (it may hold a password): it is kept in a
//!   [`SecretString`] and never formatted into a log line or an error.

use std::str::FromStr;
use std::time::Duration;

use palisade::core::{ProblemDetails, ProblemType};
use palisade_auth::StorageError;
use palisade_auth::session::postgres::PostgresRefreshStore;
use palisade_auth::session::sqlite::SqliteRefreshStore;
use palisade_auth::session::{NewToken, Rotation};
use palisade_config::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

/// What [`Db::deadline`] adds to the longer of the statement and connect
/// timeouts.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// The default of `APP_DATABASE_POOL_SIZE`.
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// The default of `APP_DATABASE_CONNECT_TIMEOUT_MS`: how long a request
/// waits for a connection (a new one included) before a 503.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default of `APP_DATABASE_STATEMENT_TIMEOUT_MS`.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default of `APP_DATABASE_MIGRATION_TIMEOUT_MS`: how long one
/// migration statement, or the wait for another instance's migrations, may
/// take at start.
pub const DEFAULT_MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres://` and `postgresql://` URLs.
    Postgres,
}

/// The database settings (`APP_DATABASE_*`), checked.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `APP_DATABASE_URL` / `APP_DATABASE_URL_FILE`: a secret (`Debug`
    /// prints it redacted).
    pub url: SecretString,
    /// Which database the URL names.
    pub kind: Kind,
    /// `APP_DATABASE_POOL_SIZE`: connections per instance.
    pub pool_size: u32,
    /// `APP_DATABASE_CONNECT_TIMEOUT_MS`.
    pub connect_timeout: Duration,
    /// `APP_DATABASE_STATEMENT_TIMEOUT_MS`.
    pub statement_timeout: Duration,
    /// `APP_DATABASE_MIGRATION_TIMEOUT_MS`: the statement and lock timeout
    /// of the migrations at start (not of requests).
    pub migration_timeout: Duration,
}

/// The query parameters of a PostgreSQL URL the service passes on; any other
/// is refused (sqlx would log an unknown one with its value).
const PG_PARAMETERS: [&str; 12] = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// What is wrong with a database URL: a rule, never the value.
#[derive(Debug, PartialEq, Eq)]
pub enum UrlProblem {
    /// Neither `sqlite:` nor `postgres://`/`postgresql://`.
    Scheme,
    /// A PostgreSQL URL with a query parameter the service does not know.
    Parameter,
    /// The driver refused it.
    Invalid,
}

impl UrlProblem {
    /// The rule, as the settings report prints it.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Scheme => "must be a sqlite:, postgres:// or postgresql:// URL",
            Self::Parameter => {
                "has a query parameter other than sslmode, sslrootcert, sslcert, sslkey, host, \
                 hostaddr, port, dbname, user, password, application_name, options"
            }
            Self::Invalid => "is not a valid database URL for its scheme",
        }
    }
}

/// Which database `url` names, checked as its driver would read it.
pub fn kind_of(url: &str) -> Result<Kind, UrlProblem> {
    if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|_| UrlProblem::Invalid)?;
        return Ok(Kind::Sqlite);
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(UrlProblem::Scheme);
    }
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        let known = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .all(|pair| PG_PARAMETERS.contains(&pair.split('=').next().unwrap_or_default()));
        if !known {
            return Err(UrlProblem::Parameter);
        }
    }
    PgConnectOptions::from_str(url).map_err(|_| UrlProblem::Invalid)?;
    Ok(Kind::Postgres)
}

/// Whether a PostgreSQL URL reaches a server on another machine without
/// requiring TLS (`sslmode` other than `require`, `verify-ca`,
/// `verify-full`): what `prod` warns about. Unix sockets and loopback hosts
/// are local.
pub fn tls_off_to_remote(url: &str) -> bool {
    let Ok(options) = PgConnectOptions::from_str(url) else {
        return false;
    };
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    !local && !tls
}

/// A pool of either driver.
#[derive(Debug, Clone)]
pub enum Pool {
    /// SQLite (one instance).
    Sqlite(SqlitePool),
    /// PostgreSQL (any number of instances).
    Postgres(PgPool),
}

/// An open database: its pool and the deadline of each call. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    deadline: Duration,
}

/// Runs the same code on whichever pool `db` holds, within the database
/// deadline ([`Db::deadline`]; past it, `sqlx::Error::PoolTimedOut`, a 503):
/// `pool` is bound to a `&SqlitePool` in one expansion and a `&PgPool` in
/// the other, so the queries are written once and each is checked against
/// both drivers. The body is an expression of type `Result<T, sqlx::Error>`,
/// the same `T` for both (map driver-specific results, such as
/// `rows_affected`, inside it).
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {{
        let db: &$crate::db::Db = $db;
        $crate::db::within(db.deadline(), async {
            match db.pool() {
                $crate::db::Pool::Sqlite($pool) => $body,
                $crate::db::Pool::Postgres($pool) => $body,
            }
        })
        .await
    }};
}

/// PostgreSQL sessions whose statements and lock waits end after `timeout`,
/// and whose transactions a stuck client cannot leave open.
fn pg_session(options: &PgConnectOptions, timeout: Duration) -> PgConnectOptions {
    let timeout = timeout.as_millis().to_string();
    options.clone().options([
        ("statement_timeout", timeout.as_str()),
        // A lock wait is a statement wait: the same bound.
        ("lock_timeout", timeout.as_str()),
        ("idle_in_transaction_session_timeout", "60000"),
    ])
}

/// `call` unless it outlasts `deadline`: then `PoolTimedOut` (a database
/// that answers nothing, such as a frozen server, cannot enforce its own
/// statement timeout; this is the client's).
pub async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Connecting, or a migration, failed. sqlx's errors carry no URL and
    /// no password.
    #[error("{0}")]
    Sqlx(#[from] sqlx::Error),
    /// The embedded migrations could not be applied.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The refresh-token store's schema could not be applied.
    #[error("refresh-token store: {0}")]
    Store(#[from] StorageError),
}

impl Db {
    /// Opens the pool (connecting once, so a wrong password or an
    /// unreachable server fails the start) and applies the migrations and
    /// the refresh-token store's schema, under locks on PostgreSQL.
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, OpenError> {
        let url = settings.url.expose_secret();
        let db = match settings.kind {
            Kind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(true);
                // SQLite's only wait is for the write lock.
                let migrations = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(options.clone().busy_timeout(settings.migration_timeout))
                    .await?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(&migrations)
                    .await?;
                SqliteRefreshStore::new(migrations.clone())
                    .migrate()
                    .await?;
                migrations.close().await;
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.pool_size)
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(options.busy_timeout(settings.statement_timeout))
                    .await?;
                Pool::Sqlite(pool)
            }
            Kind::Postgres => {
                let options =
                    PgConnectOptions::from_str(url)?.application_name("reference-backend");
                // One connection, on the migration bound: an instance waits
                // for the advisory locks while another migrates, and a
                // migration may rewrite a large table.
                let migrations = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(pg_session(&options, settings.migration_timeout))
                    .await?;
                // sqlx's migrator holds pg_advisory_lock while it runs.
                sqlx::migrate!("./migrations/postgres")
                    .run(&migrations)
                    .await?;
                PostgresRefreshStore::new(migrations.clone())
                    .migrate()
                    .await?;
                migrations.close().await;
                let pool = PgPoolOptions::new()
                    .max_connections(settings.pool_size)
                    .acquire_timeout(settings.connect_timeout)
                    .connect_with(pg_session(&options, settings.statement_timeout))
                    .await?;
                Pool::Postgres(pool)
            }
        };
        // The server's timeouts answer first; this one is for a server that
        // answers nothing at all.
        let deadline = settings.statement_timeout.max(settings.connect_timeout) + DEADLINE_MARGIN;
        Ok(Self { pool: db, deadline })
    }

    /// Which database this is.
    pub fn kind(&self) -> Kind {
        match self.pool {
            Pool::Sqlite(_) => Kind::Sqlite,
            Pool::Postgres(_) => Kind::Postgres,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How long one database call (waiting for a connection included) may
    /// take: the longer of the statement and connect timeouts, plus half a
    /// second.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Answers a trivial query (the readiness check).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_db!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))
    }

    /// The refresh-token store of palisade-auth on this database.
    pub fn refresh_store(&self) -> RefreshStore {
        let store = match &self.pool {
            Pool::Sqlite(pool) => Store::Sqlite(SqliteRefreshStore::new(pool.clone())),
            Pool::Postgres(pool) => Store::Postgres(PostgresRefreshStore::new(pool.clone())),
        };
        RefreshStore {
            store,
            deadline: self.deadline,
        }
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// What differs between the drivers inside the shared code of [`on_db!`].
pub trait Dialect: sqlx::Database {
    /// A transaction in which no other transaction of the same `key` (a
    /// user id) runs: what it reads stays true until it commits.
    fn begin_locked(
        pool: &sqlx::Pool<Self>,
        key: &str,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self>, sqlx::Error>> + Send;
}

impl Dialect for sqlx::Sqlite {
    async fn begin_locked(
        pool: &SqlitePool,
        _key: &str,
    ) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        // The write lock of the whole database, taken before the first read.
        pool.begin_with("BEGIN IMMEDIATE").await
    }
}

impl Dialect for sqlx::Postgres {
    async fn begin_locked(
        pool: &PgPool,
        key: &str,
    ) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // Released at commit or rollback. Two keys hashing alike only wait
        // for each other.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// A database failure as the client sees it: 503 with `Retry-After` when the
/// database is down, overloaded or too slow (the request may succeed
/// later), else a bare 500. Logged either way, without the query's values.
pub fn problem(what: &'static str, error: sqlx::Error) -> ProblemDetails {
    let error = StorageError::from(error);
    if error.is_unavailable() {
        tracing::warn!(%error, "{what}: the database is unavailable");
        ProblemDetails::new(ProblemType::UNAVAILABLE)
            .with_detail("the service is busy; retry shortly")
            .with_retry_after(1)
    } else {
        tracing::error!(%error, "{what}");
        ProblemDetails::new(ProblemType::INTERNAL).with_detail("internal error")
    }
}

/// palisade-auth's refresh-token store on the open database, each call
/// within the database deadline (past it: unavailable, a 503).
#[derive(Debug, Clone)]
pub struct RefreshStore {
    store: Store,
    deadline: Duration,
}

#[derive(Debug, Clone)]
enum Store {
    Sqlite(SqliteRefreshStore),
    Postgres(PostgresRefreshStore),
}

impl RefreshStore {
    async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.deadline, call)
            .await
            .unwrap_or_else(|_| Err(StorageError::from(sqlx::Error::PoolTimedOut)))
    }
}

/// Runs the same call on whichever store `self` holds, within the deadline.
macro_rules! on_store {
    ($self:ident, |$s:ident| $call:expr) => {
        $self
            .within(async {
                match &$self.store {
                    Store::Sqlite($s) => $call.await,
                    Store::Postgres($s) => $call.await,
                }
            })
            .await
    };
}

impl palisade_auth::RefreshStore for RefreshStore {
    async fn create(
        &self,
        family: &str,
        user_id: &str,
        first: NewToken,
    ) -> Result<(), StorageError> {
        on_store!(self, |s| s.create(family, user_id, first))
    }

    async fn rotate(
        &self,
        presented: [u8; 32],
        successor: NewToken,
        grace: Duration,
    ) -> Result<Rotation, StorageError> {
        on_store!(self, |s| s.rotate(presented, successor, grace))
    }

    async fn revoke_family(&self, family: &str) -> Result<(), StorageError> {
        on_store!(self, |s| s.revoke_family(family))
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StorageError> {
        on_store!(self, |s| s.revoke_user(user_id, keep))
    }

    async fn prune(&self, now: u64) -> Result<u64, StorageError> {
        on_store!(self, |s| s.prune(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_testkit::postgres::PostgresServer;

    /// A server that freezes while a call holds its connection: its
    /// statement timeout cannot fire, the deadline does (and the pool
    /// serves again once it thaws).
    #[tokio::test]
    async fn a_call_in_flight_on_a_frozen_server_ends_at_the_deadline() {
        let server = tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap()
            .unwrap();
        let settings = DatabaseSettings {
            url: SecretString::from(server.create_database("app").unwrap()),
            kind: Kind::Postgres,
            pool_size: 2,
            connect_timeout: Duration::from_millis(500),
            statement_timeout: Duration::from_secs(1),
            migration_timeout: DEFAULT_MIGRATION_TIMEOUT,
        };
        let db = Db::open(&settings).await.unwrap();
        assert_eq!(db.deadline(), Duration::from_millis(1500));
        let start = std::time::Instant::now();
        let result = on_db!(&db, |pool| async {
            let mut conn = pool.acquire().await?;
            server.freeze();
            sqlx::query("SELECT 1").execute(&mut *conn).await.map(drop)
        }
        .await);
        let took = start.elapsed();
        server.thaw();
        assert!(
            matches!(result, Err(sqlx::Error::PoolTimedOut)),
            "{result:?}"
        );
        assert!(
            took >= db.deadline() && took < db.deadline() + Duration::from_millis(500),
            "{took:?}"
        );
        let status = problem("a test", sqlx::Error::PoolTimedOut).status_code();
        assert_eq!(status.as_u16(), 503);
        db.ping().await.unwrap();
    }

    /// An instance starting while another migrates (here: holds the
    /// migrations' table) waits on the migration bound, not on the requests'
    /// statement timeout, which would make it exit; its requests keep the
    /// short one.
    #[tokio::test]
    async fn start_waits_for_another_instances_migrations_past_the_statement_timeout() {
        use sqlx::Connection;
        let server = tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap()
            .unwrap();
        let url = server.create_database("app").unwrap();
        let settings = DatabaseSettings {
            url: SecretString::from(url.clone()),
            kind: Kind::Postgres,
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_millis(500),
            migration_timeout: Duration::from_secs(30),
        };
        Db::open(&settings).await.unwrap().close().await;
        let mut migrating = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("BEGIN; LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
            .execute(&mut migrating)
            .await
            .unwrap();
        // The server's clock (seen from outside the transaction, whose view
        // of pg_stat_activity is a snapshot): the second start has waited
        // on the lock for four statement timeouts; then the first one's
        // migrations end.
        let mut observer = sqlx::PgConnection::connect(&url).await.unwrap();
        let waited = "SELECT count(*) FROM pg_stat_activity \
                      WHERE wait_event_type = 'Lock' \
                      AND clock_timestamp() - query_start > interval '2 seconds'";
        let first_finishes = async {
            loop {
                let count: i64 = sqlx::query_scalar(waited)
                    .fetch_one(&mut observer)
                    .await
                    .unwrap();
                if count == 1 {
                    break;
                }

                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sqlx::raw_sql("COMMIT")
                .execute(&mut migrating)
                .await
                .unwrap();
        };
        // Run in this task (sqlx's migrator future is not `Send` for every
        // lifetime); an early error ends the join, failing below.
        let (started, ()) = tokio::join!(
            async {
                let started = Db::open(&settings).await;
                assert!(started.is_ok(), "{:?}", started.as_ref().err());
                started
            },
            first_finishes
        );
        let db = started.unwrap();
        // Requests keep the statement timeout.
        let slow = on_db!(&db, |pool| sqlx::query("SELECT pg_sleep(2)")
            .execute(pool)
            .await
            .map(drop));
        assert!(
            matches!(slow, Err(sqlx::Error::Database(_))),
            "a 2 s statement against a 0.5 s timeout: {slow:?}"
        );
        db.ping().await.unwrap();
    }

    #[test]
    fn urls_name_their_database_or_a_rule() {
        for url in ["sqlite://./data/app.db", "sqlite::memory:", "sqlite:app.db"] {
            assert_eq!(kind_of(url), Ok(Kind::Sqlite), "{url}");
        }
        for url in [
            "postgres://app:pw@db.example/app",
            "postgresql://app@db.example:6432/app?sslmode=verify-full",
            "postgres://app@localhost/app?host=/run/postgresql",
            "postgres://app@%2Frun%2Fpostgresql/app",
            "postgres:///app?host=/var/run/postgresql&sslmode=disable",
        ] {
            assert_eq!(kind_of(url), Ok(Kind::Postgres), "{url}");
        }
        assert_eq!(kind_of("mysql://a@b/c"), Err(UrlProblem::Scheme));
        assert_eq!(kind_of("postgres:/x"), Err(UrlProblem::Scheme));
        assert_eq!(
            kind_of("postgres://a@b/c?secret-value"),
            Err(UrlProblem::Parameter)
        );
        assert_eq!(
            kind_of("postgres://a@b/c?sslmode=sometimes"),
            Err(UrlProblem::Invalid)
        );
    }

    #[test]
    fn remote_postgres_without_required_tls_is_flagged() {
        for off in [
            "postgres://app:pw@db.example/app",
            "postgres://app@10.0.0.5/app?sslmode=prefer",
            "postgres://app@db.example/app?sslmode=disable",
        ] {
            assert!(tls_off_to_remote(off), "{off}");
        }
        for fine in [
            "postgres://app@db.example/app?sslmode=require",
            "postgres://app@db.example/app?sslmode=verify-full",
            "postgres://app@localhost/app",
            "postgres://app@127.0.0.1/app",
            "postgres://app@[::1]/app",
            "postgres://app@%2Frun%2Fpostgresql/app",
            "postgres://app@db.example/app?host=/run/postgresql",
        ] {
            assert!(!tls_off_to_remote(fine), "{fine}");
        }
    }
}

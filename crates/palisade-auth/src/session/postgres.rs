//! [`PostgresRefreshStore`]: refresh tokens in PostgreSQL through sqlx
//! (feature `postgres`), shared by every instance of a service.
//!
//! The tables are those of the SQLite store: `palisade_refresh_families`
//! (family, user, revoked flag) and `palisade_refresh_tokens` (SHA-256 of the
//! token, family, times), created by [`PostgresRefreshStore::migrate`]
//! (idempotent, and safe when several instances start at once: it runs under
//! a transaction-scoped advisory lock).
//!
//! A rotation is one transaction whose first statement reads the presented
//! token *and* its family with `SELECT … FOR UPDATE`: a second rotation of
//! the same token, or a revocation of the family, waits for it and then sees
//! what it wrote (READ COMMITTED re-reads a locked row once it is released),
//! so a token is spent once and a revoked family never gains a live token.
//! An operation PostgreSQL aborts to break a deadlock (a rotation against
//! pruning, two logout-alls of one user) runs again, up to three times: it
//! was rolled back whole.
//!
//! # Example
//!
//! ```no_run
//! use palisade_auth::session::{NewToken, RefreshStore, Rotation};
//! use palisade_auth::session::postgres::PostgresRefreshStore;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let pool = sqlx::PgPool::connect("postgres://app@localhost/app").await.unwrap();
//! let store = PostgresRefreshStore::new(pool);
//! store.migrate().await.unwrap();
//! let first = NewToken { hash: [1; 32], issued_at: 100, expires_at: 1_000 };
//! store.create("family-1", "user-1", first).await.unwrap();
//! let next = NewToken { hash: [2; 32], issued_at: 200, expires_at: 1_100 };
//! let grace = Duration::from_secs(10);
//! assert!(matches!(store.rotate([1; 32], next, grace).await.unwrap(), Rotation::Rotated { .. }));
//! store.revoke_family("family-1").await.unwrap();
//! let after = NewToken { hash: [3; 32], issued_at: 300, expires_at: 1_200 };
//! assert_eq!(store.rotate([2; 32], after, grace).await.unwrap(), Rotation::Refused);
//! # });
//! ```
//!
//! The crate's `sessions` tests run the same bodies over this store, the
//! SQLite one and the memory one, against a throwaway PostgreSQL cluster.

use std::time::Duration;

use sqlx::PgPool;

use super::sql::int;
use super::{NewToken, RefreshStore, Rotation, Step};
use crate::StorageError;

/// The schema, applied by [`PostgresRefreshStore::migrate`].
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS palisade_refresh_families (
    family     TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS palisade_refresh_families_user
    ON palisade_refresh_families (user_id);
CREATE TABLE IF NOT EXISTS palisade_refresh_tokens (
    hash       BYTEA PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL
               REFERENCES palisade_refresh_families (family) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at   BIGINT
);
CREATE INDEX IF NOT EXISTS palisade_refresh_tokens_family
    ON palisade_refresh_tokens (family);
CREATE INDEX IF NOT EXISTS palisade_refresh_tokens_expiry
    ON palisade_refresh_tokens (expires_at);
";

/// The tables and indexes [`SCHEMA`] creates.
const SCHEMA_OBJECTS: [&str; 5] = [
    "palisade_refresh_families",
    "palisade_refresh_families_user",
    "palisade_refresh_tokens",
    "palisade_refresh_tokens_family",
    "palisade_refresh_tokens_expiry",
];

/// The advisory lock [`PostgresRefreshStore::migrate`] holds: `CREATE …
/// IF NOT EXISTS` is not safe against itself in two sessions at once.
const MIGRATE_LOCK: i64 = 0x7061_6c69_7361_6465; // "palisade"

/// Refresh tokens in PostgreSQL. Cheap to clone (the pool is).
#[derive(Clone, Debug)]
pub struct PostgresRefreshStore {
    pool: PgPool,
}

/// `family, user_id, expires_at, spent_at, revoked` of a presented token.
type Row = (String, String, i64, Option<i64>, bool);

impl PostgresRefreshStore {
    /// A store over `pool` (give it a `statement_timeout`: a rotation waits
    /// for the row locks of a concurrent one).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the tables and indexes when they do not exist yet; several
    /// instances may call it at once, and while others use the tables.
    ///
    /// A schema that is all there is left alone without a lock: `CREATE
    /// INDEX IF NOT EXISTS` takes a SHARE lock on its table even when the
    /// index exists, so an instance starting behind a pruning transaction
    /// would wait for it, block every rotation queued behind it, and could
    /// deadlock with it.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        again_after_deadlock(|| self.migrate_once()).await
    }

    async fn migrate_once(&self) -> sqlx::Result<()> {
        if self.schema_present().await? {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Whether every table and index of [`SCHEMA`] exists (a catalog read,
    /// no lock on the tables).
    async fn schema_present(&self) -> sqlx::Result<bool> {
        let present: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
        )
        .bind(SCHEMA_OBJECTS.as_slice())
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(present).is_ok_and(|n| n == SCHEMA_OBJECTS.len()))
    }
}

/// Stores a token of `family` inside the transaction `tx`.
async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    family: &str,
    token: NewToken,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO palisade_refresh_tokens (hash, family, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token.hash.as_slice())
    .bind(family)
    .bind(int(token.issued_at))
    .bind(int(token.expires_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One attempt of each operation: a transaction (or a single statement)
/// that commits all of its effect or none; [`RefreshStore`]'s methods run
/// them through [`again_after_deadlock`].
impl PostgresRefreshStore {
    async fn create_once(&self, family: &str, user_id: &str, first: NewToken) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO palisade_refresh_families (family, user_id, created_at) \
             VALUES ($1, $2, $3)",
        )
        .bind(family)
        .bind(user_id)
        .bind(int(first.issued_at))
        .execute(&mut *tx)
        .await?;
        insert_token(&mut tx, family, first).await?;
        tx.commit().await
    }

    async fn rotate_once(
        &self,
        presented: [u8; 32],
        successor: NewToken,
        grace: Duration,
    ) -> sqlx::Result<Rotation> {
        let now = int(successor.issued_at);
        let mut tx = self.pool.begin().await?;
        // Both rows locked: a concurrent rotation of this token or a
        // revocation of its family waits for this transaction, and this one
        // reads what theirs committed.
        let row: Option<Row> = sqlx::query_as(
            "SELECT t.family, f.user_id, t.expires_at, t.spent_at, f.revoked \
             FROM palisade_refresh_tokens t \
             JOIN palisade_refresh_families f ON f.family = t.family \
             WHERE t.hash = $1 \
             FOR UPDATE OF t, f",
        )
        .bind(presented.as_slice())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((family, user_id, expires_at, spent_at, revoked)) = row else {
            return Ok(Rotation::Refused);
        };
        let step = Step::of(
            revoked,
            spent_at.map(i128::from),
            expires_at.into(),
            now.into(),
            grace,
        );
        match step {
            Step::Refuse => return Ok(Rotation::Refused),
            Step::WithinGrace => return Ok(Rotation::SpentWithinGrace),
            Step::RevokeFamily => {
                sqlx::query(
                    "UPDATE palisade_refresh_families SET revoked = TRUE WHERE family = $1",
                )
                .bind(&family)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Rotation::Reused { user_id, family });
            }
            Step::Rotate => {}
        }
        sqlx::query("UPDATE palisade_refresh_tokens SET spent_at = $1 WHERE hash = $2")
            .bind(now)
            .bind(presented.as_slice())
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, &family, successor).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id, family })
    }

    async fn revoke_family_once(&self, family: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE palisade_refresh_families SET revoked = TRUE WHERE family = $1")
            .bind(family)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoke_user_once(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar(
            "UPDATE palisade_refresh_families SET revoked = TRUE \
             WHERE user_id = $1 AND NOT revoked AND family IS DISTINCT FROM $2 \
             RETURNING family",
        )
        .bind(user_id)
        .bind(keep)
        .fetch_all(&self.pool)
        .await
    }

    async fn prune_once(&self, now: u64) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM palisade_refresh_tokens WHERE expires_at <= $1")
            .bind(int(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM palisade_refresh_families f WHERE NOT EXISTS \
             (SELECT 1 FROM palisade_refresh_tokens t WHERE t.family = f.family)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

impl RefreshStore for PostgresRefreshStore {
    async fn create(
        &self,
        family: &str,
        user_id: &str,
        first: NewToken,
    ) -> Result<(), StorageError> {
        again_after_deadlock(|| self.create_once(family, user_id, first)).await
    }

    async fn rotate(
        &self,
        presented: [u8; 32],
        successor: NewToken,
        grace: Duration,
    ) -> Result<Rotation, StorageError> {
        again_after_deadlock(|| self.rotate_once(presented, successor, grace)).await
    }

    async fn revoke_family(&self, family: &str) -> Result<(), StorageError> {
        again_after_deadlock(|| self.revoke_family_once(family)).await
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StorageError> {
        again_after_deadlock(|| self.revoke_user_once(user_id, keep)).await
    }

    async fn prune(&self, now: u64) -> Result<u64, StorageError> {
        again_after_deadlock(|| self.prune_once(now)).await
    }
}

/// How many times an operation runs when PostgreSQL keeps aborting it to
/// break deadlocks.
const ATTEMPTS: u32 = 3;

/// `attempt` again when PostgreSQL aborted it to break a deadlock (`40P01`)
/// or a serialization conflict (`40001`): it was rolled back whole, so
/// running it again is running it once. Rotations lock a token and then its
/// family, pruning deletes tokens and then families, and a logout-all
/// updates several families: under load such cycles happen, and without
/// this the refresh or logout that PostgreSQL picks answers 500.
async fn again_after_deadlock<T, F>(mut attempt: impl FnMut() -> F) -> Result<T, StorageError>
where
    F: Future<Output = sqlx::Result<T>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(e) if attempts < ATTEMPTS && aborted_to_break_a_cycle(&e) => attempts += 1,
            result => return Ok(result?),
        }
    }
}

/// `40P01` deadlock detected, `40001` serialization failure.
fn aborted_to_break_a_cycle(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objects `migrate` looks for are exactly those the schema creates
    /// (a new index missing from the list would never be created on a
    /// database that has the others).
    #[test]
    fn the_schema_objects_are_those_the_schema_creates() {
        let created: Vec<&str> = SCHEMA
            .split("IF NOT EXISTS")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert_eq!(created, SCHEMA_OBJECTS);
    }
}

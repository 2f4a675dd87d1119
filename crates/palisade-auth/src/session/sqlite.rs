//! [`SqliteRefreshStore`]: refresh tokens in SQLite through sqlx (feature
//! `sqlite`).
//!
//! Two tables, created by [`SqliteRefreshStore::migrate`] (idempotent):
//! `palisade_refresh_families` (family, user, revoked flag) and
//! `palisade_refresh_tokens` (SHA-256 of the token, family, times). A
//! rotation is one `BEGIN IMMEDIATE` transaction: SQLite takes the write lock
//! before the read, so two rotations, or a rotation and a revocation, never
//! interleave; the family's revoked flag is read inside it.
//!
//! # Example
//!
//! ```
//! use palisade_auth::session::{NewToken, RefreshStore, Rotation};
//! use palisade_auth::session::sqlite::SqliteRefreshStore;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
//! let store = SqliteRefreshStore::new(pool);
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

use std::time::Duration;

use sqlx::SqlitePool;

use super::sql::int;
use super::{NewToken, RefreshStore, Rotation, Step};
use crate::StorageError;

/// The schema, applied by [`SqliteRefreshStore::migrate`].
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS palisade_refresh_families (
    family     TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS palisade_refresh_families_user
    ON palisade_refresh_families (user_id);
CREATE TABLE IF NOT EXISTS palisade_refresh_tokens (
    hash       BLOB PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL
               REFERENCES palisade_refresh_families (family) ON DELETE CASCADE,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS palisade_refresh_tokens_family
    ON palisade_refresh_tokens (family);
CREATE INDEX IF NOT EXISTS palisade_refresh_tokens_expiry
    ON palisade_refresh_tokens (expires_at);
";

/// Refresh tokens in SQLite. Cheap to clone (the pool is).
#[derive(Clone, Debug)]
pub struct SqliteRefreshStore {
    pool: SqlitePool,
}

/// `family, user_id, expires_at, spent_at, revoked` of a presented token.
type Row = (String, String, i64, Option<i64>, i64);

impl SqliteRefreshStore {
    /// A store over `pool` (open it with a busy timeout of a few seconds:
    /// rotations wait for the write lock).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Creates the tables and indexes when they do not exist yet.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(StorageError::from)
    }
}

/// Stores a token of `family` inside the transaction `tx`.
async fn insert_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    family: &str,
    token: NewToken,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO palisade_refresh_tokens (hash, family, issued_at, expires_at) \
         VALUES (?, ?, ?, ?)",
    )
    .bind(token.hash.as_slice())
    .bind(family)
    .bind(int(token.issued_at))
    .bind(int(token.expires_at))
    .execute(&mut **tx)
    .await
    .map(drop)
    .map_err(StorageError::from)
}

impl RefreshStore for SqliteRefreshStore {
    async fn create(
        &self,
        family: &str,
        user_id: &str,
        first: NewToken,
    ) -> Result<(), StorageError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO palisade_refresh_families (family, user_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(family)
        .bind(user_id)
        .bind(int(first.issued_at))
        .execute(&mut *tx)
        .await?;
        insert_token(&mut tx, family, first).await?;
        tx.commit().await.map_err(StorageError::from)
    }

    async fn rotate(
        &self,
        presented: [u8; 32],
        successor: NewToken,
        grace: Duration,
    ) -> Result<Rotation, StorageError> {
        let now = int(successor.issued_at);
        // IMMEDIATE: the write lock is taken before the read, so what is read
        // cannot change before the writes below.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<Row> = sqlx::query_as(
            "SELECT t.family, f.user_id, t.expires_at, t.spent_at, f.revoked \
             FROM palisade_refresh_tokens t \
             JOIN palisade_refresh_families f ON f.family = t.family \
             WHERE t.hash = ?",
        )
        .bind(presented.as_slice())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((family, user_id, expires_at, spent_at, revoked)) = row else {
            return Ok(Rotation::Refused);
        };
        let step = Step::of(
            revoked != 0,
            spent_at.map(i128::from),
            expires_at.into(),
            now.into(),
            grace,
        );
        match step {
            Step::Refuse => return Ok(Rotation::Refused),
            Step::WithinGrace => return Ok(Rotation::SpentWithinGrace),
            Step::RevokeFamily => {
                sqlx::query("UPDATE palisade_refresh_families SET revoked = 1 WHERE family = ?")
                    .bind(&family)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(Rotation::Reused { user_id, family });
            }
            Step::Rotate => {}
        }
        sqlx::query("UPDATE palisade_refresh_tokens SET spent_at = ? WHERE hash = ?")
            .bind(now)
            .bind(presented.as_slice())
            .execute(&mut *tx)
            .await?;
        insert_token(&mut tx, &family, successor).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id, family })
    }

    async fn revoke_family(&self, family: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE palisade_refresh_families SET revoked = 1 WHERE family = ?")
            .bind(family)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(StorageError::from)
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StorageError> {
        sqlx::query_scalar(
            "UPDATE palisade_refresh_families SET revoked = 1 \
             WHERE user_id = ? AND revoked = 0 AND family IS NOT ? \
             RETURNING family",
        )
        .bind(user_id)
        .bind(keep)
        .fetch_all(&self.pool)
        .await
        .map_err(StorageError::from)
    }

    async fn prune(&self, now: u64) -> Result<u64, StorageError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let deleted = sqlx::query("DELETE FROM palisade_refresh_tokens WHERE expires_at <= ?")
            .bind(int(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM palisade_refresh_families WHERE NOT EXISTS \
             (SELECT 1 FROM palisade_refresh_tokens t \
              WHERE t.family = palisade_refresh_families.family)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

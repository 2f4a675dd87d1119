//! `/files`: one root per user under `<data dir>/files/<user id>/`, a storage
//! quota per user, and a listing read from the database.
//!
//! Every handler parses the raw `{*path}` tail with the path rules first
//! (decoded exactly once; 400 before any file system call), then works
//! through the caller's [`SafeRoot`] (kernel-confined on Linux). Uploads are
//! streamed with a 10 MiB cap (413 as soon as it is crossed), sniffed and
//! checked against the declared type and extension (415), stored atomically.
//! Downloads carry the sniffed type, `nosniff` and `attachment`.
//!
//! # Quota
//!
//! Each user may store `APP_FILES_MAX_BYTES` bytes (default 100 MiB) in at
//! most `APP_FILES_MAX_COUNT` files (default 1,000), uploads in flight
//! included. An upload that would go over is refused with **413** and the
//! problem type [`QUOTA_EXCEEDED`] (`urn:palisade:problem:quota-exceeded`,
//! title "Storage quota exceeded"), whose one error says which limit:
//! `{"field": "body", "code": "quota_bytes"}` or `"quota_files"`. The 10 MiB
//! upload cap keeps its own type (`urn:palisade:problem:payload-too-large`).
//! The problem names the user's own limits and nothing else: no path, no
//! user id, no usage of anyone.
//!
//! 413 rather than 507: the refusal is about this client's request and this
//! user's account, it does not go away by retrying, and the service is
//! healthy. A 5xx would tell clients, proxies and retry middleware to try
//! again, and would let any user inflate the service's server-error rate
//! (alerts, circuit breakers, error budgets) by filling their own quota.
//! 507 Insufficient Storage (RFC 4918) describes a server that cannot store
//! the representation at all; a quota is
//! "larger than the server is willing to accept" (RFC 9110 §15.5.14) for this
//! user.
//!
//! # Accounting
//!
//! The `files` table (migration `0004_files.sql`) has one row per file of
//! every user, `pending` (an upload's reservation), `stored` or `deleting`;
//! the quota is the sum of the user's rows, whatever their state. It is the
//! only bookkeeping: nothing is counted in memory.
//!
//! - **Upload.** (1) *Reserve*: one locked transaction sums the
//!   user's rows and inserts a `pending` row for the path that holds the
//!   declared `Content-Length`, or, for a body of unknown length, the upload
//!   cap bounded by what remains of the quota (refused when either limit
//!   would be crossed; 409 when the path is taken, by a file or by an upload
//!   in flight). (2) *Receive*: the body is streamed into a temporary file
//!   with a hard cap equal to the reservation ([`UploadPolicy::receive`]).
//!   (3) *Commit and settle*, on a task of their own so that nothing
//!   separates them: rename into place, then set the row `stored` with the
//!   real size and the sniffed type. Any failure releases the row (deletes
//!   it); the reservation is a guard, so a handler that is dropped (client
//!   gone, timeout) releases it on a task of its own.
//! - **Delete.** The row is marked `deleting` (still counted), the file is
//!   unlinked, the row deleted, on a task of its own; bytes and slot are back.
//!
//! Atomicity: the reservation's transaction ([`Dialect::begin_locked`]) is
//! serialised with every other of the same user before the sum is read —
//! SQLite's `BEGIN IMMEDIATE` takes the database's write lock, PostgreSQL's
//! takes a transaction-scoped advisory lock on the user id — so no two
//! reservations of a user interleave: not across the pool's connections, not
//! across processes or instances sharing the database. Each one
//! checks usage + reservation ≤ quota and inserts its row in the same
//! transaction; settling only lowers a row to the real size (never above
//! the reservation: the stream is capped at it) and releases and deletes only
//! remove rows. So the accounted total never exceeds the quota, however many
//! uploads run at once, and the bytes on disk never exceed the accounted
//! total (a file reaches its final name only while its row exists).
//!
//! # Crashes
//!
//! Every change to the disk happens while a row that counts it exists, so a
//! process that dies leaves at worst a row that is not `stored`, never a
//! file nobody counts. If it dies **between the rename and the settlement**,
//! the file is on disk and its row is still `pending` with the reserved size:
//! the quota stays charged (conservatively), the file is not listed yet
//! (nor deletable: 404; its path answers 409 to an upload) — until the
//! reconciliation below.
//! If it dies between the reservation and the rename, the row is `pending`
//! with no file; between marking and unlinking, the row is `deleting`. Such
//! rows are reconciled with the disk on the user's next upload, delete or
//! listing, and for every user by the supervised maintenance job
//! ([`FilesState::reconcile_stale`], hourly), once
//! they have not moved for [`STALE_AFTER`] (no request lives that long: the
//! stack's timeout is 30 s): a `pending` row whose file exists becomes
//! `stored` with the file's size and sniffed type (with the index below, the
//! only times a file is opened for its type outside an upload), one without
//! a file is deleted; a
//! `deleting` row has its file unlinked and goes. Each reconciliation is
//! logged. The temporary file of an upload cut by a crash stays on disk
//! (counted nowhere, never listed, refused by the path rules).
//!
//! Files stored before the table existed are indexed once per user, on the
//! user's first upload, delete or listing (the directory is walked, each file sniffed,
//! the rows and a mark in `file_roots` inserted in one transaction; at most
//! [`MAX_INDEXED`] files). A file put into a user's directory by hand later
//! is not listed or counted: the database, not the directory, is the index.
//! Instances that share the database must share the data directory too:
//! the rows say what is on *the* disk.
//!
//! # Listing
//!
//! `GET /files` reads the user's `stored` rows in path order, at most
//! [`PAGE_SIZE`] a page: `{"files": [{"path", "size", "content_type"}],
//! "next_cursor": "..." | null}`. The cursor is the base64url (no padding) of
//! the last path of the page; the next page starts after it. Files that
//! exist for the whole walk are listed exactly once; a file added or removed
//! during it appears at most once. A cursor that is not base64url of a safe
//! path is a 400 problem (`errors[0].field` = `cursor`), which does not echo
//! it. `content_type` is the type sniffed at upload, as served.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header::CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use palisade::core::{FieldError, ProblemDetails, ProblemType};
use palisade_auth::AuthUser;
use palisade_fs::path::SafePath;
use palisade_fs::serve;
use palisade_fs::sniff::{OCTET_STREAM, served_content_type};
use palisade_fs::upload::{FileType, UploadPolicy};
use palisade_fs::{FsError, PathRejection, PathRules, SafeRoot, StoredFile, UploadError};
use palisade_resilience::bulkhead::for_each_bounded;
use palisade_resilience::supervisor::CancellationToken;
use serde::Deserialize;
use serde_json::json;

use crate::Settings;
use crate::db::{self, Db, Dialect};
use crate::on_db;

/// The upload cap of the contract.
pub const MAX_UPLOAD: u64 = 10 * 1024 * 1024;
/// The most entries a page of `GET /files` holds.
pub const PAGE_SIZE: usize = 100;
/// How long a row that is not `stored` may stay unchanged before it is taken
/// for the leftover of a process that died, and reconciled with the disk.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);
/// The most files indexed from a user's directory when it is first seen.
pub const MAX_INDEXED: usize = 100_000;
/// Users whose stale rows the maintenance job reconciles at once.
pub const RECONCILE_PARALLELISM: usize = 4;
/// The longest cursor accepted (base64 of a path far longer than the rules allow).
const MAX_CURSOR_CHARS: usize = 8192;

/// 413: the upload would take the user over their storage quota.
pub const QUOTA_EXCEEDED: ProblemType = ProblemType::new(
    "urn:palisade:problem:quota-exceeded",
    "Storage quota exceeded",
    StatusCode::PAYLOAD_TOO_LARGE,
);

/// The storage each user may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes, uploads in flight included (`APP_FILES_MAX_BYTES`).
    pub max_bytes: u64,
    /// Files, uploads in flight included (`APP_FILES_MAX_COUNT`).
    pub max_files: u64,
}

/// What the file handlers share.
#[derive(Clone, Debug)]
pub struct FilesState {
    base: SafeRoot,
    uploads: Arc<UploadPolicy>,
    db: Db,
    quota: Quota,
}

impl FilesState {
    /// Files under `<data dir>/files` (created private on first use),
    /// accounted in `db` against the quota of `settings`.
    pub fn open(settings: &Settings, db: &Db) -> Result<Self, FsError> {
        // The directory name is ours, not user input.
        let base = SafeRoot::builder(settings.data_dir.join("files"))
            .create()
            .open()?;
        Ok(Self {
            base,
            uploads: Arc::new(UploadPolicy::new().max_bytes(MAX_UPLOAD)),
            db: db.clone(),
            quota: Quota {
                max_bytes: settings.files_max_bytes,
                max_files: settings.files_max_count,
            },
        })
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// A user's root, created on first use.
    async fn open_root(&self, user: &str) -> Result<SafeRoot, ProblemDetails> {
        // User ids are UUIDs we issued; the rules check them all the same.
        let id = self.base.rules().parse(user)?;
        Ok(self
            .base
            .blocking(move |base| base.sub_root(&id, true))
            .await?)
    }

    /// The caller's root with its rows in step with the disk: indexed once,
    /// rows left by a process that died reconciled.
    async fn user_root(&self, user: &AuthUser) -> Result<SafeRoot, ProblemDetails> {
        let root = self.open_root(user.id()).await?;
        self.index_once(user.id(), &root).await?;
        self.reconcile(user.id(), &root).await?;
        Ok(root)
    }

    fn path(&self, uri: &Uri) -> Result<SafePath, PathRejection> {
        let raw = uri.path().strip_prefix("/files/").unwrap_or_default();
        self.base.rules().parse_encoded(raw)
    }

    /// Imports the files of a directory that predates the accounting, once.
    async fn index_once(&self, user: &str, root: &SafeRoot) -> Result<(), ProblemDetails> {
        const INDEXED: &str = "SELECT 1 FROM file_roots WHERE user_id = $1";
        let indexed: Option<i32> = on_db!(&self.db, |pool| sqlx::query_scalar(INDEXED)
            .bind(user)
            .fetch_optional(pool)
            .await)
        .map_err(|e| db::problem("could not read the file index", e))?;
        if indexed.is_some() {
            return Ok(());
        }
        // No request of this user changes the disk before the mark exists,
        // so what is read here is what the mark will stand for.
        let found = root
            .blocking(|root| {
                let entries = root.list_files(MAX_INDEXED)?;
                Ok(entries
                    .into_iter()
                    .filter_map(|entry| {
                        let download = serve::open_download(root, &entry.path).ok()?;
                        Some((entry.path, download.len, download.sniffed))
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        if found.len() >= MAX_INDEXED {
            tracing::warn!(
                indexed = found.len(),
                "a user directory holds more files than are indexed; the rest are not listed or counted"
            );
        }
        let now = now_ms();
        on_db!(&self.db, |pool| async {
            let mut tx = Dialect::begin_locked(pool, user).await?;
            let indexed: Option<i32> = sqlx::query_scalar(INDEXED)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
            if indexed.is_some() {
                // Another request did it first; the transaction rolls back.
                return Ok::<(), sqlx::Error>(());
            }
            for (path, size, sniffed) in &found {
                sqlx::query(
                    "INSERT INTO files \
                     (user_id, path, size, content_type, state, token, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'stored', 'indexed', $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(user)
                .bind(path.as_str())
                .bind(to_db(*size))
                .bind(*sniffed)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("INSERT INTO file_roots (user_id, indexed_at) VALUES ($1, $2)")
                .bind(user)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await)
        .map_err(|e| db::problem("could not index files", e))?;
        if !found.is_empty() {
            tracing::info!(files = found.len(), "indexed the files of a user directory");
        }
        Ok(())
    }

    /// Reconciles the stale rows of every user, not only of those who come
    /// back (a user who never does would keep a charged quota and leftover
    /// rows): at most [`RECONCILE_PARALLELISM`] users at once, none started
    /// once `token` fires. Returns how many users were reconciled.
    ///
    /// # Errors
    ///
    /// The rows could not be read, or some users' could not be reconciled
    /// (each failure is logged; the others are done).
    pub async fn reconcile_stale(&self, token: &CancellationToken) -> Result<usize, String> {
        let stale_before = now_ms().saturating_sub(to_db_ms(STALE_AFTER));
        let users: Vec<String> = on_db!(&self.db, |pool| sqlx::query_scalar(
            "SELECT DISTINCT user_id FROM files WHERE state <> 'stored' AND updated_at < $1",
        )
        .bind(stale_before)
        .fetch_all(pool)
        .await)
        .map_err(|e| format!("could not read unsettled files: {e}"))?;
        let report = for_each_bounded(users, RECONCILE_PARALLELISM, token, |user, _| {
            let files = self.clone();
            async move {
                let root = files.open_root(&user).await?;
                files.reconcile(&user, &root).await
            }
        })
        .await;
        match report.failed() {
            0 => Ok(report.succeeded()),
            failed => Err(format!(
                "the files of {failed} users could not be reconciled"
            )),
        }
    }

    /// Makes the user's stale `pending` and `deleting` rows match the disk.
    async fn reconcile(&self, user: &str, root: &SafeRoot) -> Result<(), ProblemDetails> {
        let stale_before = now_ms().saturating_sub(to_db_ms(STALE_AFTER));
        let rows: Vec<(String, String, String)> = on_db!(&self.db, |pool| sqlx::query_as(
            "SELECT path, state, token FROM files \
             WHERE user_id = $1 AND state <> 'stored' AND updated_at < $2",
        )
        .bind(user)
        .bind(stale_before)
        .fetch_all(pool)
        .await)
        .map_err(|e| db::problem("could not read unsettled files", e))?;
        for (path, state, token) in rows {
            let row = Row {
                user: user.to_owned(),
                path,
                token,
            };
            if state == "deleting" {
                finish_delete(&self.db, root, &row).await?;
                tracing::warn!("reconciled a delete interrupted by a crash");
            } else {
                settle_from_disk(&self.db, root, &row).await?;
                tracing::warn!("reconciled an upload interrupted by a crash");
            }
        }
        Ok(())
    }

    /// Reserves quota for an upload of `declared` bytes (unknown: the cap
    /// bounded by what remains) and the path, in one locked
    /// transaction.
    async fn reserve(
        &self,
        user: &str,
        path: &SafePath,
        declared: Option<u64>,
    ) -> Result<Reservation, ProblemDetails> {
        let token = uuid::Uuid::now_v7().to_string();
        let now = now_ms();
        let quota = self.quota;
        on_db!(&self.db, |pool| async {
            let mut tx = Dialect::begin_locked(pool, user).await?;
            let (bytes_used, file_count): (i64, i64) = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), COUNT(*) \
                 FROM files WHERE user_id = $1",
            )
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
            let bytes_used = u64::try_from(bytes_used).unwrap_or(u64::MAX);
            if u64::try_from(file_count).unwrap_or(u64::MAX) >= quota.max_files {
                return Ok(Err(over_quota(Limit::Files, quota)));
            }
            let remaining = quota.max_bytes.saturating_sub(bytes_used);
            let bytes = match declared {
                Some(len) if len > remaining => return Ok(Err(over_quota(Limit::Bytes, quota))),
                Some(len) => len,
                None => MAX_UPLOAD.min(remaining),
            };
            let inserted = sqlx::query(
                "INSERT INTO files \
                 (user_id, path, size, content_type, state, token, created_at, updated_at) \
                 VALUES ($1, $2, $3, NULL, 'pending', $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(user)
            .bind(path.as_str())
            .bind(to_db(bytes))
            .bind(&token)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // A file, or an upload in flight, has the path.
                return Ok(Err(FsError::AlreadyExists.problem()));
            }
            // The guard exists before the commit: dropped while it is in
            // flight, it releases whatever the commit left.
            let reservation = Reservation {
                db: self.db.clone(),
                row: Row {
                    user: user.to_owned(),
                    path: path.as_str().to_owned(),
                    token: token.clone(),
                },
                bytes,
                armed: true,
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Ok(reservation))
        }
        .await)
        .map_err(|e| db::problem("could not reserve quota", e))?
    }
}

/// A `?cursor=` this service did not issue.
#[derive(Debug)]
struct BadCursor;

impl From<BadCursor> for ProblemDetails {
    fn from(_: BadCursor) -> Self {
        // The cursor is not echoed.
        ProblemDetails::new(ProblemType::BAD_REQUEST)
            .with_detail("invalid cursor")
            .with_error(FieldError::new(
                "cursor",
                "invalid_cursor",
                "the cursor is not one this service issued",
            ))
    }
}

/// The `?cursor=` of a listing: the path to start after, if any (an empty
/// cursor is the first page).
fn cursor(uri: &Uri, rules: &PathRules) -> Result<Option<String>, BadCursor> {
    #[derive(Deserialize)]
    struct ListQuery {
        cursor: Option<String>,
    }
    let Query(query) = Query::<ListQuery>::try_from_uri(uri).map_err(|_| BadCursor)?;
    let Some(cursor) = query.cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(BadCursor);
    }
    let bytes = base64url_decode(&cursor).ok_or(BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
    match rules.parse(&text) {
        Ok(path) if path.as_str() == text => Ok(Some(text)),
        _ => Err(BadCursor),
    }
}

/// A `files` row owned by one upload or delete.
#[derive(Debug)]
struct Row {
    user: String,
    path: String,
    token: String,
}

/// Quota held by an upload: a `pending` row. Settled (the row becomes
/// `stored`), released (the row is deleted), or kept for reconciliation when
/// the disk's state is unknown; dropped without any of these, it is released
/// on a task of its own.
#[derive(Debug)]
struct Reservation {
    db: Db,
    row: Row,
    bytes: u64,
    armed: bool,
}

impl Reservation {
    /// The row becomes `stored` with the file's real size and type.
    async fn settle(&mut self, stored: &StoredFile) -> Result<(), sqlx::Error> {
        let settled = on_db!(&self.db, |pool| sqlx::query(SETTLE)
            .bind(to_db(stored.size))
            .bind(stored.content_type)
            .bind(now_ms())
            .bind(&self.row.user)
            .bind(&self.row.path)
            .bind(&self.row.token)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        self.armed = false;
        if settled == 0 {
            // Only if the upload outlived STALE_AFTER and was reconciled.
            tracing::error!("an upload settled after its reservation was reconciled away");
        }
        Ok(())
    }

    /// Gives the quota back. On failure the guard stays armed and its drop
    /// tries again.
    async fn release(&mut self) {
        match release_row(&self.db, &self.row).await {
            Ok(()) => self.armed = false,
            Err(e) => tracing::warn!(error = %e, "could not release a quota reservation"),
        }
    }

    /// Leaves the row `pending` for [`FilesState::reconcile`], which looks at
    /// the disk: for when the file may or may not have reached it.
    fn keep_for_reconciliation(&mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let db = self.db.clone();
        let row = Row {
            user: std::mem::take(&mut self.row.user),
            path: std::mem::take(&mut self.row.path),
            token: std::mem::take(&mut self.row.token),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // With the request's id in its log lines.
            palisade::telemetry::spawn(async move {
                if let Err(e) = release_row(&db, &row).await {
                    tracing::warn!(error = %e, "could not release the quota of a dropped upload; reconciliation will");
                }
            });
        } else {
            tracing::warn!(
                "no runtime to release the quota of a dropped upload; reconciliation will"
            );
        }
    }
}

/// A `pending` row becomes `stored` with the file's size and type.
const SETTLE: &str = "UPDATE files SET state = 'stored', size = $1, content_type = $2, \
     updated_at = $3 WHERE user_id = $4 AND path = $5 AND token = $6 AND state = 'pending'";

async fn release_row(db: &Db, row: &Row) -> Result<(), sqlx::Error> {
    delete_row(db, row, "pending").await
}

/// Deletes `row` if it is still in `state` (and still this reservation's).
async fn delete_row(db: &Db, row: &Row, state: &str) -> Result<(), sqlx::Error> {
    on_db!(db, |pool| sqlx::query(
        "DELETE FROM files WHERE user_id = $1 AND path = $2 AND token = $3 AND state = $4"
    )
    .bind(&row.user)
    .bind(&row.path)
    .bind(&row.token)
    .bind(state)
    .execute(pool)
    .await
    .map(drop))
}

/// A `pending` row made to match the disk: `stored` with the file's size
/// and sniffed type when the file is there, deleted otherwise.
async fn settle_from_disk(db: &Db, root: &SafeRoot, row: &Row) -> Result<(), ProblemDetails> {
    // A path the rules refuse cannot be on disk.
    let found = match root.rules().parse(&row.path).ok() {
        Some(path) => {
            root.blocking(move |root| match serve::open_download(root, &path) {
                Ok(download) => Ok(Some((download.len, download.sniffed))),
                Err(e) if e.status() == StatusCode::NOT_FOUND => Ok(None),
                Err(e) => Err(e),
            })
            .await?
        }
        None => None,
    };
    let done = match found {
        Some((size, sniffed)) => {
            on_db!(db, |pool| sqlx::query(SETTLE)
                .bind(to_db(size))
                .bind(sniffed)
                .bind(now_ms())
                .bind(&row.user)
                .bind(&row.path)
                .bind(&row.token)
                .execute(pool)
                .await
                .map(drop))
        }
        None => {
            return release_row(db, row)
                .await
                .map_err(|e| db::problem("could not release a reservation", e));
        }
    };
    done.map_err(|e| db::problem("could not settle an upload", e))
}

/// The second half of a delete: unlink (already gone is fine), then the row.
/// An unlink that fails puts the row back to `stored`.
async fn finish_delete(db: &Db, root: &SafeRoot, row: &Row) -> Result<(), ProblemDetails> {
    let path = root.rules().parse(&row.path).ok();
    let unlinked = match path {
        Some(path) => root.blocking(move |root| root.remove_file(&path)).await,
        None => Ok(()),
    };
    match unlinked {
        // Not a regular file there (gone, a directory, a link): nothing to unlink.
        Ok(()) => {}
        Err(e) if e.status() == StatusCode::NOT_FOUND => {}
        Err(e) => {
            on_db!(db, |pool| sqlx::query(
                "UPDATE files SET state = 'stored', updated_at = $1 \
                 WHERE user_id = $2 AND path = $3 AND token = $4 AND state = 'deleting'",
            )
            .bind(now_ms())
            .bind(&row.user)
            .bind(&row.path)
            .bind(&row.token)
            .execute(pool)
            .await
            .map(drop))
            .map_err(|e| db::problem("could not restore a file row", e))?;
            return Err(e.problem());
        }
    }
    delete_row(db, row, "deleting")
        .await
        .map_err(|e| db::problem("could not delete a file row", e))
}

/// Which limit an upload would cross.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Bytes,
    Files,
}

/// The 413 quota problem: the user's own limits, nothing else.
fn over_quota(limit: Limit, quota: Quota) -> ProblemDetails {
    let (code, message) = match limit {
        Limit::Bytes => (
            "quota_bytes",
            format!(
                "the upload would exceed the storage quota of {} bytes",
                quota.max_bytes
            ),
        ),
        Limit::Files => (
            "quota_files",
            format!(
                "the upload would exceed the quota of {} files",
                quota.max_files
            ),
        ),
    };
    tracing::info!(reason = code, "upload refused: storage quota");
    ProblemDetails::new(QUOTA_EXCEEDED)
        .with_detail("the upload would exceed your storage quota; delete files to make room")
        .with_error(FieldError::new("body", code, message))
}

/// A 500 problem; the error is logged, never sent.
fn internal(what: &'static str, error: &dyn std::fmt::Display) -> ProblemDetails {
    tracing::error!(error = %error, "{what}");
    ProblemDetails::new(ProblemType::INTERNAL)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn to_db_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Sizes are stored as SQLite integers; quotas are validated to fit.
fn to_db(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// The type served for content sniffed as `sniffed` at upload.
fn served(sniffed: &str) -> &'static str {
    [
        FileType::TEXT,
        FileType::PNG,
        FileType::JPEG,
        FileType::GIF,
        FileType::WEBP,
        FileType::PDF,
    ]
    .iter()
    .find(|known| known.mime() == sniffed)
    .map_or(OCTET_STREAM, |known| served_content_type(known.mime()))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5).
fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let at = |i: usize| chunk.get(i).copied().unwrap_or(0);
        let group = u32::from_be_bytes([0, at(0), at(1), at(2)]);
        for i in 0..=chunk.len() {
            let shift = 18 - 6 * u32::try_from(i).unwrap_or(0);
            let sextet = usize::try_from((group >> shift) & 63).unwrap_or(0);
            out.push(char::from(BASE64URL.get(sextet).copied().unwrap_or(b'A')));
        }
    }
    out
}

/// Strict base64url without padding: no other characters, no non-zero
/// trailing bits (one encoding per value).
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.as_bytes().chunks(4) {
        let mut group = 0_u32;
        for &c in chunk {
            group = (group << 6) | value(c)?;
        }
        match chunk.len() {
            4 => {
                let [_, a, b, c] = group.to_be_bytes();
                out.extend_from_slice(&[a, b, c]);
            }
            3 if group.trailing_zeros() >= 2 => {
                let [_, _, a, b] = (group >> 2).to_be_bytes();
                out.extend_from_slice(&[a, b]);
            }
            2 if group.trailing_zeros() >= 4 => {
                let [_, _, _, a] = (group >> 4).to_be_bytes();
                out.push(a);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// `PUT /files/{*path}`: the body is the raw file, streamed.
pub async fn put(
    State(files): State<FilesState>,
    user: AuthUser,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<impl IntoResponse, ProblemDetails> {
    let path = files.path(&uri)?;
    let root = files.user_root(&user).await?;
    let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    // What needs no byte of the body is refused before any quota is held.
    files.uploads.check_declared(&path, declared)?;
    let length = body.size_hint().exact();
    if length.is_some_and(|len| len > MAX_UPLOAD) {
        return Err(UploadError::TooLarge { limit: MAX_UPLOAD }.problem());
    }
    let mut reservation = files.reserve(user.id(), &path, length).await?;
    let received = match files
        .uploads
        .receive(&root, &path, declared, body, reservation.bytes)
        .await
    {
        Ok(received) => received,
        Err(e) => {
            reservation.release().await;
            return Err(match e {
                // The cap crossed was the quota's, not the upload cap.
                UploadError::TooLarge { limit } if limit < MAX_UPLOAD => {
                    over_quota(Limit::Bytes, files.quota)
                }
                other => other.problem(),
            });
        }
    };
    // The rename and the row move together: a client that goes away now
    // does not separate them.
    let db = files.db.clone();
    let finish = palisade::telemetry::spawn(async move {
        match received.commit().await {
            Ok(stored) => match reservation.settle(&stored).await {
                Ok(()) => Ok(stored),
                Err(e) => {
                    // The file is in place: the row waits for reconciliation.
                    reservation.keep_for_reconciliation();
                    Err(db::problem("could not settle an upload", e))
                }
            },
            Err(UploadError::Fs(FsError::AlreadyExists)) => {
                reservation.release().await;
                Err(FsError::AlreadyExists.problem())
            }
            Err(e) => {
                // Renamed or not: the disk decides.
                reservation.keep_for_reconciliation();
                if let Err(problem) = settle_from_disk(&db, &root, &reservation.row).await {
                    tracing::warn!(
                        status = problem.status,
                        "an upload is left for reconciliation"
                    );
                }
                Err(internal("could not store an upload", &e))
            }
        }
    });
    let stored = finish
        .await
        .map_err(|e| internal("the upload task failed", &e))??;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "path": stored.path.as_str(),
            "size": stored.size,
            "content_type": stored.content_type,
            "sha256": stored.sha256,
        })),
    ))
}

/// `GET /files/{*path}`.
pub async fn get(
    State(files): State<FilesState>,
    user: AuthUser,
    uri: Uri,
) -> Result<Response, ProblemDetails> {
    let path = files.path(&uri)?;
    let root = files.open_root(user.id()).await?;
    Ok(serve::download(&root, &path).await?.map(Body::new))
}

/// `DELETE /files/{*path}`: the bytes and the slot go back to the quota.
pub async fn delete(
    State(files): State<FilesState>,
    user: AuthUser,
    uri: Uri,
) -> Result<StatusCode, ProblemDetails> {
    let path = files.path(&uri)?;
    let root = files.user_root(&user).await?;
    let token = uuid::Uuid::now_v7().to_string();
    let marked = on_db!(&files.db, |pool| sqlx::query(
        "UPDATE files SET state = 'deleting', token = $1, updated_at = $2 \
         WHERE user_id = $3 AND path = $4 AND state = 'stored'",
    )
    .bind(&token)
    .bind(now_ms())
    .bind(user.id())
    .bind(path.as_str())
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))
    .map_err(|e| db::problem("could not mark a file for deletion", e))?;
    if marked == 0 {
        // Not stored: an upload in flight, a delete in progress, or nothing.
        return Err(FsError::NotFound.problem());
    }
    let row = Row {
        user: user.id().to_owned(),
        path: path.as_str().to_owned(),
        token,
    };
    // The unlink and the row move together, whatever the client does.
    let db = files.db.clone();
    palisade::telemetry::spawn(async move { finish_delete(&db, &root, &row).await })
        .await
        .map_err(|e| internal("the delete task failed", &e))??;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /files?cursor=`: a page of the caller's files, with the size and the
/// type sniffed at upload, read from the database.
pub async fn list(
    State(files): State<FilesState>,
    user: AuthUser,
    uri: Uri,
) -> Result<impl IntoResponse, ProblemDetails> {
    let after = cursor(&uri, files.base.rules())?;
    files.user_root(&user).await?;
    let limit = i64::try_from(PAGE_SIZE + 1).unwrap_or(i64::MAX);
    let after = after.unwrap_or_default();
    let mut rows: Vec<(String, i64, Option<String>)> = on_db!(&files.db, |pool| sqlx::query_as(
        "SELECT path, size, content_type FROM files \
         WHERE user_id = $1 AND state = 'stored' AND path > $2 ORDER BY path LIMIT $3",
    )
    .bind(user.id())
    .bind(&after)
    .bind(limit)
    .fetch_all(pool)
    .await)
    .map_err(|e| db::problem("could not list files", e))?;
    let next_cursor = if rows.len() > PAGE_SIZE {
        rows.truncate(PAGE_SIZE);
        rows.last()
            .map(|(path, _, _)| base64url_encode(path.as_bytes()))
    } else {
        None
    };
    let listed: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|(path, size, content_type)| {
            json!({
                "path": path,
                "size": size,
                "content_type": served(content_type.as_deref().unwrap_or(OCTET_STREAM)),
            })
        })
        .collect();
    Ok(Json(json!({ "files": listed, "next_cursor": next_cursor })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_and_is_strict() {
        for text in ["", "a", "ab", "abc", "abcd", "dir/ü-file.txt", "\u{10ffff}"] {
            let encoded = base64url_encode(text.as_bytes());
            assert!(!encoded.contains(['=', '+', '/']), "{encoded}");
            assert_eq!(base64url_decode(&encoded).unwrap(), text.as_bytes());
        }
        assert_eq!(base64url_encode(b"../etc"), "Li4vZXRj");
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        // Padding, other alphabets, a lone character, non-zero trailing bits.
        for bad in ["Zm9v=", "Zm9v+w", "Zm9v/w", "Z", "Zm9vY", "Zh", "Zm9"] {
            assert_eq!(base64url_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn listed_types_are_the_served_forms_of_the_sniffed_ones() {
        assert_eq!(served("text/plain"), "text/plain; charset=utf-8");
        assert_eq!(served("image/png"), "image/png");
        assert_eq!(served("text/html"), OCTET_STREAM);
        assert_eq!(served("image/svg+xml"), OCTET_STREAM);
    }

    #[test]
    fn the_quota_problem_names_only_the_limit() {
        let quota = Quota {
            max_bytes: 100,
            max_files: 3,
        };
        let problem = over_quota(Limit::Files, quota);
        assert_eq!(problem.status, 413);
        assert_eq!(problem.type_uri, "urn:palisade:problem:quota-exceeded");
        assert_eq!(problem.errors[0].code, "quota_files");
        assert_eq!(
            over_quota(Limit::Bytes, quota).errors[0].code,
            "quota_bytes"
        );
    }
}

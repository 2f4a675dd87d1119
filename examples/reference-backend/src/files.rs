//! `/files`: one root per user under `<data dir>/files/<user id>/`.
//!
//! Every handler parses the raw `{*path}` tail with the path rules first
//! (decoded exactly once; 400 before any file system call), then works
//! through the caller's [`SafeRoot`] (kernel-confined on Linux). Uploads are
//! streamed with a 10 MiB cap (413 as soon as it is crossed), sniffed and
//! checked against the declared type and extension (415), stored atomically.
//! Downloads carry the sniffed type, `nosniff` and `attachment`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header::CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use palisade::core::ProblemDetails;
use palisade_auth::AuthUser;
use palisade_fs::path::SafePath;
use palisade_fs::serve;
use palisade_fs::upload::UploadPolicy;
use palisade_fs::{FsError, PathRejection, SafeRoot};
use serde_json::json;

/// The upload cap of the contract.
pub const MAX_UPLOAD: u64 = 10 * 1024 * 1024;
/// The most entries `GET /files` lists.
pub const MAX_LISTED: usize = 10_000;

/// What the file handlers share.
#[derive(Clone, Debug)]
pub struct FilesState {
    base: SafeRoot,
    uploads: Arc<UploadPolicy>,
}

impl FilesState {
    /// Files under `<data dir>/files`, created private on first use.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, FsError> {
        // The directory name is ours, not user input.
        let base = SafeRoot::builder(data_dir.join("files")).create().open()?;
        Ok(Self {
            base,
            uploads: Arc::new(UploadPolicy::new().max_bytes(MAX_UPLOAD)),
        })
    }

    async fn user_root(&self, user: &AuthUser) -> Result<SafeRoot, ProblemDetails> {
        // User ids are UUIDs we issued; the rules check them all the same.
        let id = self.base.rules().parse(user.id())?;
        Ok(self
            .base
            .blocking(move |base| base.sub_root(&id, true))
            .await?)
    }

    /// The caller's root and the requested path: the path is checked first,
    /// so an unsafe one never reaches the file system.
    async fn target(
        &self,
        user: &AuthUser,
        uri: &Uri,
    ) -> Result<(SafeRoot, SafePath), ProblemDetails> {
        let path = self.path(uri)?;
        Ok((self.user_root(user).await?, path))
    }

    fn path(&self, uri: &Uri) -> Result<SafePath, PathRejection> {
        let raw = uri.path().strip_prefix("/files/").unwrap_or_default();
        self.base.rules().parse_encoded(raw)
    }
}

/// `PUT /files/{*path}`: the body is the raw file, streamed.
pub async fn put(
    State(files): State<FilesState>,
    user: AuthUser,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<impl IntoResponse, ProblemDetails> {
    let (root, path) = files.target(&user, &uri).await?;
    let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let stored = files.uploads.store(&root, &path, declared, body).await?;
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
    let (root, path) = files.target(&user, &uri).await?;
    Ok(serve::download(&root, &path).await?.map(Body::new))
}

/// `DELETE /files/{*path}`.
pub async fn delete(
    State(files): State<FilesState>,
    user: AuthUser,
    uri: Uri,
) -> Result<StatusCode, ProblemDetails> {
    let (root, path) = files.target(&user, &uri).await?;
    root.blocking(move |root| root.remove_file(&path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /files`: every file of the caller, with its size and sniffed type.
pub async fn list(
    State(files): State<FilesState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ProblemDetails> {
    let root = files.user_root(&user).await?;
    let listed = root
        .blocking(|root| {
            let entries = root.list_files(MAX_LISTED)?;
            Ok::<_, FsError>(
                entries
                    .into_iter()
                    .map(|e| {
                        let sniffed = serve::open_download(root, &e.path)
                            .map_or("application/octet-stream", |d| d.sniffed);
                        json!({
                            "path": e.path.as_str(),
                            "size": e.len,
                            "content_type": palisade_fs::sniff::served_content_type(sniffed),
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
    Ok(Json(json!({ "files": listed })))
}

//! The upload pipeline: cap, sniff, agree, store.
//!
//! [`UploadPolicy::store`] takes a request body (any [`http_body::Body`], or a
//! stream of bytes with [`UploadPolicy::store_stream`]) and:
//!
//! 1. before reading a byte: checks the extension of the target name and the
//!    declared `Content-Type` against the allowlist and against each other
//!    ([`UploadError::Unsupported`], [`UploadError::Mismatch`]), and refuses a
//!    body whose size hint already exceeds the cap ([`UploadError::TooLarge`]);
//! 2. creates a temporary file next to the target, inside the root, with
//!    `O_CREAT | O_EXCL | O_NOFOLLOW` and mode `0o600`/`0o640` (parent
//!    directories are created through the root when missing, unless
//!    [`UploadPolicy::no_parent_creation`]);
//! 3. streams the body into it, computing SHA-256 and the size on the way; the
//!    chunk that would cross the cap is not written, the body is not read
//!    further and the temporary file is removed ([`UploadError::TooLarge`]);
//! 4. as soon as the first [`SNIFF_LEN`](crate::sniff::SNIFF_LEN) bytes have
//!    arrived (or at the end), [sniffs](crate::sniff) the content and requires
//!    the sniffed type to be on the allowlist and to agree with the extension
//!    and the declared type; markup in the first KiB of an image (a polyglot)
//!    sniffs as HTML and is refused;
//! 5. fsyncs the file, renames it to its final name without replacing an
//!    existing file (unless [`UploadPolicy::allow_overwrite`]:
//!    [`FsError::AlreadyExists`] otherwise), and fsyncs the directory.
//!
//! Whatever fails, the temporary file is removed.
//!
//! Steps 1–4 and step 5 are also available apart:
//! [`UploadPolicy::receive`] stops before the rename and returns a
//! [`ReceivedUpload`], which [`ReceivedUpload::commit`] moves into place
//! (dropping it removes the temporary file). It takes a per-call limit below
//! the policy's cap — e.g. what remains of a user's storage quota — and lets
//! the caller do its bookkeeping around the commit: nothing is visible under
//! the final name before `commit`, and a commit that has started on the
//! blocking pool completes even if the caller's future is dropped, so run
//! the commit and the bookkeeping that must follow it on a task of their own.
//!
//! Polyglots whose markup
//! starts after the first KiB are stored, and stay inert when served with
//! [`serve::download`](crate::serve::download) (sniffed type, `nosniff`,
//! `attachment`).
//!
//! # Example
//!
//! ```
//! use palisade_fs::{SafeRoot, path::PathRules, upload::{UploadError, UploadPolicy}};
//! use http_body_util::Full;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let root = SafeRoot::open_dir(dir.path()).unwrap();
//! let policy = UploadPolicy::new().max_bytes(1 << 20);
//! let rules = PathRules::new();
//!
//! let path = rules.parse("notes/hello.txt").unwrap();
//! let stored = policy
//!     .store(&root, &path, Some("text/plain; charset=utf-8"), Full::new(bytes::Bytes::from("hello")))
//!     .await
//!     .unwrap();
//! assert_eq!(stored.size, 5);
//! assert_eq!(stored.content_type, "text/plain");
//! assert_eq!(&stored.sha256[..8], "2cf24dba");
//!
//! let fake = rules.parse("cat.png").unwrap();
//! let err = policy.store(&root, &fake, None, Full::new(bytes::Bytes::from("<html>"))).await.unwrap_err();
//! assert!(matches!(err, UploadError::Mismatch(_)));
//! assert_eq!(err.problem().status, 415);
//!
//! // In two steps, at most 4 bytes this time (e.g. what is left of a quota).
//! let path = rules.parse("notes/big.txt").unwrap();
//! let err = policy.receive(&root, &path, None, Full::new(bytes::Bytes::from("hello")), 4).await.unwrap_err();
//! assert!(matches!(err, UploadError::TooLarge { limit: 4 }));
//! let received = policy.receive(&root, &path, None, Full::new(bytes::Bytes::from("hi")), 4).await.unwrap();
//! assert!(!dir.path().join("notes/big.txt").exists()); // not before the commit
//! assert_eq!(received.commit().await.unwrap().size, 2);
//! assert!(dir.path().join("notes/big.txt").exists());
//! # });
//! ```

use std::fmt;
use std::pin::pin;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use palisade_core::problem::FieldError;
use palisade_core::{ProblemDetails, ProblemType};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::FsError;
use crate::path::SafePath;
use crate::root::{SafeRoot, Staged};
use crate::sniff::{SNIFF_LEN, sniff};

/// The error type of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The default cap: 10 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 10 << 20;

/// A file type an upload may have: the sniffed MIME type and the extensions
/// that may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType {
    mime: &'static str,
    extensions: &'static [&'static str],
}

impl FileType {
    /// PNG images (`.png`).
    pub const PNG: Self = Self::new("image/png", &["png"]);
    /// JPEG images (`.jpg`, `.jpeg`).
    pub const JPEG: Self = Self::new("image/jpeg", &["jpg", "jpeg"]);
    /// GIF images (`.gif`).
    pub const GIF: Self = Self::new("image/gif", &["gif"]);
    /// WebP images (`.webp`).
    pub const WEBP: Self = Self::new("image/webp", &["webp"]);
    /// PDF documents (`.pdf`).
    pub const PDF: Self = Self::new("application/pdf", &["pdf"]);
    /// UTF-8 text without markup (`.txt`, `.md`, `.log`).
    pub const TEXT: Self = Self::new("text/plain", &["txt", "md", "log"]);

    /// A custom type. `mime` must be what [`sniff`](crate::sniff::sniff)
    /// reports for such content; `extensions` are lower-case, without the dot.
    pub const fn new(mime: &'static str, extensions: &'static [&'static str]) -> Self {
        Self { mime, extensions }
    }

    /// The MIME type.
    pub const fn mime(&self) -> &'static str {
        self.mime
    }

    /// The extensions.
    pub const fn extensions(&self) -> &'static [&'static str] {
        self.extensions
    }
}

/// Why an upload's type is not accepted (415).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsupportedReason {
    /// The target name has no extension.
    #[error("the file name has no extension")]
    NoExtension,
    /// The extension is not on the allowlist.
    #[error("the file extension is not allowed")]
    Extension,
    /// The declared `Content-Type` is not on the allowlist.
    #[error("the declared content type is not allowed")]
    DeclaredType,
    /// No `Content-Type` was declared and the policy requires one.
    #[error("no content type was declared")]
    MissingContentType,
    /// The content is of a type that is not on the allowlist.
    #[error("the content type of the data is not allowed")]
    Content,
}

impl UnsupportedReason {
    /// A stable, machine-readable code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::NoExtension => "no_extension",
            Self::Extension => "extension_not_allowed",
            Self::DeclaredType => "content_type_not_allowed",
            Self::MissingContentType => "content_type_missing",
            Self::Content => "content_not_allowed",
        }
    }
}

/// What disagrees in an upload (415).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MismatchReason {
    /// The extension does not match the sniffed content.
    #[error("the file extension does not match the content")]
    Extension,
    /// The declared `Content-Type` does not match the sniffed content.
    #[error("the declared content type does not match the content")]
    DeclaredType,
    /// The declared `Content-Type` does not match the extension.
    #[error("the declared content type does not match the file extension")]
    DeclaredTypeVsExtension,
}

impl MismatchReason {
    /// A stable, machine-readable code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Extension => "extension_mismatch",
            Self::DeclaredType => "content_type_mismatch",
            Self::DeclaredTypeVsExtension => "content_type_extension_mismatch",
        }
    }
}

/// An upload that was refused or failed. Nothing of it is left on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The body is larger than the cap (413).
    #[error("the upload is larger than {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The type is not on the allowlist (415).
    #[error("unsupported upload: {0}")]
    Unsupported(UnsupportedReason),
    /// The extension, declared type and content disagree (415).
    #[error("mismatched upload: {0}")]
    Mismatch(MismatchReason),
    /// Reading the request body failed (400).
    #[error("the request body could not be read")]
    Body(#[source] BoxError),
    /// A file system operation failed (see [`FsError::status`]).
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<std::io::Error> for UploadError {
    fn from(error: std::io::Error) -> Self {
        Self::Fs(FsError::from(error))
    }
}

impl From<UploadError> for ProblemDetails {
    fn from(e: UploadError) -> Self {
        e.problem()
    }
}

impl UploadError {
    /// The RFC 9457 problem document (413, 415, 400, or the file system
    /// error's). Details are fixed strings.
    pub fn problem(&self) -> ProblemDetails {
        match self {
            Self::TooLarge { .. } => ProblemDetails::new(ProblemType::PAYLOAD_TOO_LARGE)
                .with_detail("the upload is larger than allowed"),
            Self::Unsupported(reason) => ProblemDetails::new(ProblemType::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("this type of file is not accepted")
                .with_error(FieldError::new("body", reason.code(), reason.to_string())),
            Self::Mismatch(reason) => ProblemDetails::new(ProblemType::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("the content does not match the declared type or extension")
                .with_error(FieldError::new("body", reason.code(), reason.to_string())),
            Self::Body(_) => ProblemDetails::new(ProblemType::BAD_REQUEST)
                .with_detail("the request body could not be read"),
            Self::Fs(error) => error.problem(),
        }
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for UploadError {
    fn into_response(self) -> axum::response::Response {
        self.problem().into_response()
    }
}

/// A stored upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Where it was stored, relative to the root.
    pub path: SafePath,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content, lower-case hex.
    pub sha256: String,
    /// The sniffed MIME type (one of the allowlist's).
    pub content_type: &'static str,
}

/// An upload received in full and checked, written and flushed under a
/// temporary name next to its target, not yet visible under its final name
/// (see [`UploadPolicy::receive`]). [`commit`](Self::commit) moves it into
/// place; dropping it removes the temporary file.
#[must_use = "a received upload is removed when dropped: call `commit`"]
pub struct ReceivedUpload {
    root: SafeRoot,
    staged: Staged,
    file: std::fs::File,
    overwrite: bool,
    stored: StoredFile,
}

impl ReceivedUpload {
    /// What [`commit`](Self::commit) will store: the final path, the size,
    /// the SHA-256 and the sniffed type.
    pub fn file(&self) -> &StoredFile {
        &self.stored
    }

    /// Fsyncs the file, renames it to its final name without replacing an
    /// existing file (unless the policy allows overwrites:
    /// [`FsError::AlreadyExists`] otherwise), and fsyncs the directory. The
    /// work runs on the blocking pool: once started, it completes even if
    /// this future is dropped.
    pub async fn commit(self) -> Result<StoredFile, UploadError> {
        let Self {
            root,
            staged,
            file,
            overwrite,
            stored,
        } = self;
        root.blocking(move |_| staged.commit(file, overwrite))
            .await?;
        Ok(stored)
    }
}

impl fmt::Debug for ReceivedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedUpload")
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

/// What an upload may be and how it is stored. The defaults: 10 MiB, PNG,
/// JPEG, GIF, WebP, PDF and plain text, no overwrite, parents created,
/// `Content-Type` optional (checked when present).
#[derive(Debug, Clone)]
#[must_use]
pub struct UploadPolicy {
    max_bytes: u64,
    allowed: Vec<FileType>,
    overwrite: bool,
    create_parents: bool,
    require_content_type: bool,
}

impl Default for UploadPolicy {
    fn default() -> Self {
        Self::new()
    }
}

enum Target<'a> {
    Path(&'a SafePath),
    RandomIn(Option<&'a SafePath>),
}

impl UploadPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            allowed: vec![
                FileType::PNG,
                FileType::JPEG,
                FileType::GIF,
                FileType::WEBP,
                FileType::PDF,
                FileType::TEXT,
            ],
            overwrite: false,
            create_parents: true,
            require_content_type: false,
        }
    }

    /// The cap, in bytes.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Replaces the allowlist.
    pub fn allow_only(mut self, types: impl IntoIterator<Item = FileType>) -> Self {
        self.allowed = types.into_iter().collect();
        self
    }

    /// Adds a type to the allowlist.
    pub fn allow(mut self, file_type: FileType) -> Self {
        self.allowed.push(file_type);
        self
    }

    /// Lets an upload replace an existing file (refused by default).
    pub fn allow_overwrite(mut self) -> Self {
        self.overwrite = true;
        self
    }

    /// Refuses uploads whose parent directory does not exist
    /// ([`FsError::NotFound`]) instead of creating it.
    pub fn no_parent_creation(mut self) -> Self {
        self.create_parents = false;
        self
    }

    /// Refuses uploads without a specific `Content-Type` (a missing one and
    /// `application/octet-stream` count as none).
    pub fn require_content_type(mut self) -> Self {
        self.require_content_type = true;
        self
    }

    /// The cap in force.
    pub fn limit(&self) -> u64 {
        self.max_bytes
    }

    /// The checks that need no byte of the body: extension and declared type
    /// against the allowlist and each other. [`store`](Self::store) runs them
    /// first; call it yourself to answer 415 before reading anything.
    pub fn check_declared(
        &self,
        path: &SafePath,
        content_type: Option<&str>,
    ) -> Result<(), UploadError> {
        let declared = self.declared(content_type)?;
        let by_extension = self.types_for_extension(path)?;
        agree(declared, &by_extension)
    }

    /// Stores `body` at `path` (see the [module docs](self)).
    pub async fn store<B>(
        &self,
        root: &SafeRoot,
        path: &SafePath,
        content_type: Option<&str>,
        body: B,
    ) -> Result<StoredFile, UploadError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        self.run(root, Target::Path(path), content_type, body).await
    }

    /// Stores `body` under a new random name (32 hex digits and the sniffed
    /// type's extension) in `dir` (`None`: the root). No extension is checked
    /// up front; the content decides.
    pub async fn store_random<B>(
        &self,
        root: &SafeRoot,
        dir: Option<&SafePath>,
        content_type: Option<&str>,
        body: B,
    ) -> Result<StoredFile, UploadError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        self.run(root, Target::RandomIn(dir), content_type, body)
            .await
    }

    /// Steps 1–4 of [`store`](Self::store) (see the [module docs](self)):
    /// checks, streams and sniffs `body` into a temporary file next to
    /// `path`, reading at most `limit` bytes — or the policy's cap when that
    /// is smaller; [`UploadError::TooLarge`] carries the smaller of the two.
    /// A body whose size hint already exceeds it is refused before a byte is
    /// read. Nothing is visible under `path` until
    /// [`ReceivedUpload::commit`].
    pub async fn receive<B>(
        &self,
        root: &SafeRoot,
        path: &SafePath,
        content_type: Option<&str>,
        body: B,
        limit: u64,
    ) -> Result<ReceivedUpload, UploadError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        self.receive_target(root, Target::Path(path), content_type, body, limit)
            .await
    }

    /// [`store`](Self::store) for a stream of byte chunks.
    pub async fn store_stream<S, E>(
        &self,
        root: &SafeRoot,
        path: &SafePath,
        content_type: Option<&str>,
        stream: S,
    ) -> Result<StoredFile, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<BoxError>,
    {
        let body = StreamBody::new(stream.map(|chunk| chunk.map(Frame::data)));
        self.store(root, path, content_type, body).await
    }

    async fn run<B>(
        &self,
        root: &SafeRoot,
        target: Target<'_>,
        content_type: Option<&str>,
        body: B,
    ) -> Result<StoredFile, UploadError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        self.receive_target(root, target, content_type, body, self.max_bytes)
            .await?
            .commit()
            .await
    }

    async fn receive_target<B>(
        &self,
        root: &SafeRoot,
        target: Target<'_>,
        content_type: Option<&str>,
        body: B,
        limit: u64,
    ) -> Result<ReceivedUpload, UploadError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let limit = limit.min(self.max_bytes);
        let declared = self.declared(content_type)?;
        let (by_extension, stage_path, dir) = match target {
            Target::Path(path) => {
                let types = self.types_for_extension(path)?;
                agree(declared, &types)?;
                (Some(types), path.clone(), path.parent())
            }
            Target::RandomIn(dir) => {
                let placeholder = SafePath::from_checked("upload".to_owned());
                let path = dir.map_or(placeholder, |dir| dir.child("upload"));
                (None, path, dir.cloned())
            }
        };
        if body.size_hint().lower() > limit {
            return Err(UploadError::TooLarge { limit });
        }

        let create_parents = self.create_parents;
        let staging = stage_path.clone();
        let (mut staged, file) = root
            .blocking(move |root| {
                if create_parents && let Some(parent) = staging.parent() {
                    root.create_dir_all(&parent)?;
                }
                root.stage(&staging)
            })
            .await?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut size = 0_u64;
        let mut head: Vec<u8> = Vec::new();
        let mut sniffed: Option<FileType> = None;

        let mut body = pin!(body);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| UploadError::Body(error.into()))?;
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers
            };
            let chunk = data.copy_to_bytes(data.remaining());
            size = size.saturating_add(chunk.len() as u64);
            if size > limit {
                return Err(UploadError::TooLarge { limit });
            }
            if sniffed.is_none() {
                let wanted = SNIFF_LEN.saturating_sub(head.len()).min(chunk.len());
                head.extend_from_slice(chunk.get(..wanted).unwrap_or_default());
                if head.len() >= SNIFF_LEN {
                    sniffed = Some(self.check_content(&head, declared, by_extension.as_deref())?);
                }
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        let file_type = match sniffed {
            Some(file_type) => file_type,
            None => self.check_content(&head, declared, by_extension.as_deref())?,
        };
        file.flush().await?;
        let file = file.into_std().await;

        let final_path = if by_extension.is_some() {
            stage_path
        } else {
            let extension = file_type.extensions.first().copied().unwrap_or("bin");
            let name = format!("{}.{extension}", crate::root::random_hex()?);
            staged.set_name(name.clone());
            dir.map_or_else(
                || SafePath::from_checked(name.clone()),
                |dir| dir.child(&name),
            )
        };
        Ok(ReceivedUpload {
            root: root.clone(),
            staged,
            file,
            overwrite: self.overwrite,
            stored: StoredFile {
                path: final_path,
                size,
                sha256: hex(&hasher.finalize()),
                content_type: file_type.mime,
            },
        })
    }

    /// The declared type, canonical and allowed, or `None` when unspecified.
    fn declared(&self, content_type: Option<&str>) -> Result<Option<&'static str>, UploadError> {
        let essence = content_type
            .and_then(|value| value.split(';').next())
            .map(|essence| essence.trim().to_ascii_lowercase())
            .filter(|essence| !essence.is_empty() && essence != "application/octet-stream");
        let Some(essence) = essence else {
            return if self.require_content_type {
                Err(UploadError::Unsupported(
                    UnsupportedReason::MissingContentType,
                ))
            } else {
                Ok(None)
            };
        };
        let canonical = match essence.as_str() {
            "image/jpg" | "image/pjpeg" => "image/jpeg",
            "image/x-png" => "image/png",
            other => other,
        };
        self.allowed
            .iter()
            .find(|allowed| allowed.mime == canonical)
            .map(|allowed| Some(allowed.mime))
            .ok_or(UploadError::Unsupported(UnsupportedReason::DeclaredType))
    }

    fn types_for_extension(&self, path: &SafePath) -> Result<Vec<FileType>, UploadError> {
        let extension = path
            .extension()
            .ok_or(UploadError::Unsupported(UnsupportedReason::NoExtension))?
            .to_lowercase();
        let types: Vec<FileType> = self
            .allowed
            .iter()
            .filter(|allowed| allowed.extensions.contains(&extension.as_str()))
            .copied()
            .collect();
        if types.is_empty() {
            Err(UploadError::Unsupported(UnsupportedReason::Extension))
        } else {
            Ok(types)
        }
    }

    fn check_content(
        &self,
        head: &[u8],
        declared: Option<&'static str>,
        by_extension: Option<&[FileType]>,
    ) -> Result<FileType, UploadError> {
        let mime = sniff(head);
        if let Some(types) = by_extension
            && !types.iter().any(|allowed| allowed.mime == mime)
        {
            return Err(UploadError::Mismatch(MismatchReason::Extension));
        }
        if declared.is_some_and(|declared| declared != mime) {
            return Err(UploadError::Mismatch(MismatchReason::DeclaredType));
        }
        self.allowed
            .iter()
            .find(|allowed| allowed.mime == mime)
            .copied()
            .ok_or(UploadError::Unsupported(UnsupportedReason::Content))
    }
}

fn agree(declared: Option<&'static str>, by_extension: &[FileType]) -> Result<(), UploadError> {
    match declared {
        Some(mime) if !by_extension.iter().any(|allowed| allowed.mime == mime) => Err(
            UploadError::Mismatch(MismatchReason::DeclaredTypeVsExtension),
        ),
        _ => Ok(()),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::PathRules;

    fn p(text: &str) -> SafePath {
        PathRules::new().parse(text).unwrap()
    }

    #[test]
    fn declared_checks() {
        let policy = UploadPolicy::new();
        assert!(
            policy
                .check_declared(&p("a.png"), Some("image/png"))
                .is_ok()
        );
        assert!(
            policy
                .check_declared(&p("a.JPG"), Some("image/jpg"))
                .is_ok()
        );
        assert!(policy.check_declared(&p("a.png"), None).is_ok());
        assert!(
            policy
                .check_declared(&p("a.png"), Some("application/octet-stream"))
                .is_ok()
        );
        assert!(matches!(
            policy.check_declared(&p("a.png"), Some("image/jpeg")),
            Err(UploadError::Mismatch(
                MismatchReason::DeclaredTypeVsExtension
            ))
        ));
        assert!(matches!(
            policy.check_declared(&p("a.html"), None),
            Err(UploadError::Unsupported(UnsupportedReason::Extension))
        ));
        assert!(matches!(
            policy.check_declared(&p("Makefile"), None),
            Err(UploadError::Unsupported(UnsupportedReason::NoExtension))
        ));
        assert!(matches!(
            policy.check_declared(&p("a.png"), Some("text/html")),
            Err(UploadError::Unsupported(UnsupportedReason::DeclaredType))
        ));
        assert!(matches!(
            UploadPolicy::new()
                .require_content_type()
                .check_declared(&p("a.png"), None),
            Err(UploadError::Unsupported(
                UnsupportedReason::MissingContentType
            ))
        ));
    }

    #[test]
    fn problems() {
        assert_eq!(UploadError::TooLarge { limit: 1 }.problem().status, 413);
        let problem = UploadError::Mismatch(MismatchReason::Extension).problem();
        assert_eq!(problem.status, 415);
        assert_eq!(problem.errors[0].code, "extension_mismatch");
        assert_eq!(
            UploadError::Unsupported(UnsupportedReason::Content)
                .problem()
                .status,
            415
        );
        assert_eq!(UploadError::Body("x".into()).problem().status, 400);
        assert_eq!(
            UploadError::Fs(FsError::AlreadyExists).problem().status,
            409
        );
    }

    #[test]
    fn hex_digest() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}

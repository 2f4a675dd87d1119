//! Traversal-proof file access and safe uploads.
//!
//! | module | what it defends |
//! | --- | --- |
//! | [`path`] | `..`, encoded and overlong forms, backslashes, drive letters, UNC, device names (superscript digits too), streams, look-alike separators: refused with a typed reason before any file system call |
//! | [`root`] | symlinks and races leading outside a directory: every operation resolves through a directory handle (`openat2` `RESOLVE_BENEATH` on Linux, an `O_NOFOLLOW` walk elsewhere) |
//! | [`upload`] | disk exhaustion, stored HTML/SVG/script, polyglots, overwrites: hard cap, sniffing, type agreement, atomic store |
//! | [`serve`] | stored content executed by a browser: sniffed inert type, `nosniff`, `attachment` with a safe filename |
//! | [`error`] | leaks through errors: problem documents with fixed texts, 404 for anything outside the root |
//!
//! The path rules are pure and work on every OS; [`SafeRoot`], uploads and
//! serving need a Unix (kernel confinement on Linux ≥ 5.6). The HTTP-facing
//! parts are async (tokio; file system calls run on the blocking pool); the
//! core ([`SafeRoot`]) is synchronous. With the `axum` feature the error types
//! implement `IntoResponse` (RFC 9457 problems); without it, call `.problem()`.
//!
//! # Example: `PUT/GET/DELETE /files/{*path}` and `GET /files`, one root per user
//!
//! The handlers parse the *raw* path tail with
//! [`PathRules::parse_encoded`](path::PathRules::parse_encoded) (decoded exactly
//! once, 400 before any file system call), open the caller's root with
//! [`SafeRoot::sub_root`] and call one operation. Here the user id comes from a
//! header; a real service takes it from its authentication extractor.
//!
//! ```
//! use axum::{Router, body::Body, extract::State, response::{IntoResponse, Response}, routing::get};
//! use http::{HeaderMap, Request, StatusCode, Uri, header::CONTENT_TYPE};
//! use palisade_fs::{FsError, SafeRoot, path::SafePath, serve, upload::UploadPolicy};
//! use std::sync::Arc;
//! use tower::ServiceExt;
//!
//! #[derive(Clone)]
//! struct Files { base: SafeRoot, uploads: Arc<UploadPolicy> }
//!
//! // The caller's root: `<base>/<user id>/`, created on first use.
//! async fn user_root(files: &Files, headers: &HeaderMap) -> Result<SafeRoot, Response> {
//!     let user = headers.get("x-user").and_then(|v| v.to_str().ok()).unwrap_or("");
//!     let user = files.base.rules().parse(user).map_err(|_| StatusCode::UNAUTHORIZED.into_response())?;
//!     files.base.blocking(move |base| base.sub_root(&user, true)).await
//!         .map_err(|e| e.problem().into_response())
//! }
//!
//! // The `{*path}` tail, raw, decoded once by the rules.
//! fn file_path(files: &Files, uri: &Uri) -> Result<SafePath, Response> {
//!     let raw = uri.path().strip_prefix("/files/").unwrap_or_default();
//!     files.base.rules().parse_encoded(raw).map_err(|e| e.problem().into_response())
//! }
//!
//! async fn put(State(files): State<Files>, headers: HeaderMap, uri: Uri, body: Body) -> Response {
//!     let path = match file_path(&files, &uri) { Ok(p) => p, Err(r) => return r };
//!     let root = match user_root(&files, &headers).await { Ok(r) => r, Err(r) => return r };
//!     let declared = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
//!     match files.uploads.store(&root, &path, declared, body).await {
//!         Ok(stored) => (StatusCode::CREATED, format!(
//!             r#"{{"path":"{}","size":{},"content_type":"{}","sha256":"{}"}}"#,
//!             stored.path, stored.size, stored.content_type, stored.sha256,
//!         )).into_response(),   // use serde_json in real code: paths may contain `"`
//!         Err(e) => e.problem().into_response(),
//!     }
//! }
//!
//! async fn get_file(State(files): State<Files>, headers: HeaderMap, uri: Uri) -> Response {
//!     let path = match file_path(&files, &uri) { Ok(p) => p, Err(r) => return r };
//!     let root = match user_root(&files, &headers).await { Ok(r) => r, Err(r) => return r };
//!     match serve::download(&root, &path).await {
//!         Ok(response) => response.map(Body::new),
//!         Err(e) => e.problem().into_response(),
//!     }
//! }
//!
//! async fn delete(State(files): State<Files>, headers: HeaderMap, uri: Uri) -> Response {
//!     let path = match file_path(&files, &uri) { Ok(p) => p, Err(r) => return r };
//!     let root = match user_root(&files, &headers).await { Ok(r) => r, Err(r) => return r };
//!     match root.blocking(move |root| root.remove_file(&path)).await {
//!         Ok(()) => StatusCode::NO_CONTENT.into_response(),
//!         Err(e) => e.problem().into_response(),
//!     }
//! }
//!
//! async fn list(State(files): State<Files>, headers: HeaderMap) -> Response {
//!     let root = match user_root(&files, &headers).await { Ok(r) => r, Err(r) => return r };
//!     match root.blocking(|root| root.list_files(1000)).await {
//!         Ok(entries) => entries.iter().map(|e| format!("{} {}\n", e.path, e.len)).collect::<String>().into_response(),
//!         Err(e) => e.problem().into_response(),
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap().block_on(async {
//! let data = tempfile::tempdir().unwrap();
//! let files = Files {
//!     base: SafeRoot::builder(data.path()).create().open().unwrap(),
//!     uploads: Arc::new(UploadPolicy::new()),
//! };
//! let app = Router::new()
//!     .route("/files/{*path}", get(get_file).put(put).delete(delete))
//!     .route("/files", get(list))
//!     .with_state(files);
//! let send = |method: &str, uri: &str, body: &'static str| {
//!     let req = Request::builder().method(method).uri(uri).header("x-user", "u42")
//!         .header(CONTENT_TYPE, "text/plain").body(Body::from(body)).unwrap();
//!     app.clone().oneshot(req)
//! };
//!
//! assert_eq!(send("PUT", "/files/notes/a.txt", "hi").await.unwrap().status(), 201);
//! let got = send("GET", "/files/notes/a.txt", "").await.unwrap();
//! assert_eq!(got.status(), 200);
//! assert_eq!(got.headers()["content-disposition"], "attachment; filename=\"a.txt\"; filename*=UTF-8''a.txt");
//! assert_eq!(send("GET", "/files", "").await.unwrap().status(), 200);
//! assert_eq!(send("GET", "/files/..%2f..%2fetc/passwd", "").await.unwrap().status(), 400);
//! assert_eq!(send("PUT", "/files/x.png", "<html>").await.unwrap().status(), 415);
//! assert_eq!(send("DELETE", "/files/notes/a.txt", "").await.unwrap().status(), 204);
//! assert_eq!(send("DELETE", "/files/notes/a.txt", "").await.unwrap().status(), 404);
//! # });
//! ```
//!
//! # Performance
//!
//! `benches/open_read.rs` opens and reads a 4 KiB file two directories deep
//! (`docs/2024/report.txt`) through a `SafeRoot` and through `std::fs::File::open`
//! with a plain path, in the same criterion run (`cargo bench -p palisade-fs`).
//! Six runs on a shared 2-core Linux 6.18 machine (criterion point estimates;
//! the machine is noisy, so single runs vary by ±20%):
//!
//! | variant | median time | median ratio to `std::fs` | range of ratios |
//! | --- | --- | --- | --- |
//! | `std::fs` | ≈ 4.6 µs | 1 | — |
//! | `SafeRoot`, `openat2` (default on Linux) | ≈ 4.5 µs | **1.05×** | 0.83–1.14× |
//! | `SafeRoot`, user-space walk | ≈ 10 µs | 2.1× | 1.75–2.79× |
//! | rules (`parse_encoded`) + `openat2` | ≈ 6.4 µs | 1.5× | 0.97–1.92× |
//!
//! Kernel confinement costs nothing measurable: `openat2` is one system call
//! like `open`, and both paths `fstat` once. The walk opens and closes one
//! descriptor per directory level, hence ~2× for a 3-component path; it is the
//! fallback for kernels without `openat2`. Parsing a request path (decode,
//! UTF-8, rules; NFKC is skipped for ASCII) adds about 1–2 µs.

pub mod error;
pub mod path;
#[cfg(unix)]
pub mod root;
#[cfg(unix)]
pub mod serve;
pub mod sniff;
#[cfg(unix)]
pub mod upload;

pub use error::FsError;
pub use path::{PathRejection, PathRules, SafePath};
#[cfg(unix)]
pub use root::{Permissions, Resolver, SafeRoot, SymlinkPolicy};
#[cfg(unix)]
pub use upload::{ReceivedUpload, StoredFile, UploadError, UploadPolicy};

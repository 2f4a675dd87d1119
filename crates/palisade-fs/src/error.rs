//! Errors of file operations, and their HTTP problem documents.
//!
//! | error | status |
//! | --- | --- |
//! | [`PathRejection`] (any reason) | 400, with `errors: [{"field": "path", "code": ...}]` |
//! | [`FsError::NotFound`], `NotADirectory`, `NotAFile`, `IsADirectory`, `Symlink`, `Escape` | 404 |
//! | [`FsError::AlreadyExists`], `DirectoryNotEmpty` | 409 |
//! | [`FsError::Io`], `Unsupported` | 500 |
//! | [`UploadError::TooLarge`](crate::upload::UploadError::TooLarge) | 413 |
//! | [`UploadError::Unsupported`](crate::upload::UploadError::Unsupported), `Mismatch` | 415 |
//!
//! A symbolic link refused by policy and an attempt to leave the root answer
//! 404, like a missing file: the client learns nothing about the layout. No
//! message contains a path; I/O errors carry only the OS error.
//!
//! With the `axum` feature every error type implements `IntoResponse`.
//!
//! # Example
//!
//! ```
//! use palisade_fs::{FsError, path::PathRules};
//!
//! let rejection = PathRules::new().parse("../etc/passwd").unwrap_err();
//! let problem = FsError::from(rejection).problem();
//! assert_eq!(problem.status, 400);
//! assert_eq!(problem.errors[0].code, "dot_segment");
//! assert_eq!(FsError::Escape.problem().status, 404);
//! ```

use std::io;

use http::StatusCode;
use palisade_core::problem::FieldError;
use palisade_core::{ProblemDetails, ProblemType};

use crate::path::PathRejection;

/// An error of a [`SafeRoot`](crate::SafeRoot) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The path broke the path rules (nothing was looked up).
    #[error("unsafe path: {0}")]
    Path(#[from] PathRejection),
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// The file or directory already exists (create-new, no-overwrite rename).
    #[error("the file already exists")]
    AlreadyExists,
    /// A component of the path is not a directory.
    #[error("a component of the path is not a directory")]
    NotADirectory,
    /// The path names a directory where a file was expected.
    #[error("the path names a directory")]
    IsADirectory,
    /// The path names something that is not a regular file (FIFO, socket, device).
    #[error("the path does not name a regular file")]
    NotAFile,
    /// The directory to remove is not empty.
    #[error("the directory is not empty")]
    DirectoryNotEmpty,
    /// A symbolic link was met and the policy refuses it (or links loop).
    #[error("a symbolic link was refused")]
    Symlink,
    /// Resolution would have left the root (absolute symlink, `..` above the root).
    #[error("the path resolves outside the root")]
    Escape,
    /// Kernel confinement was required and the kernel does not offer it.
    #[error("kernel path confinement (openat2) is not available")]
    Unsupported,
    /// Another I/O error (the OS error only, never a path).
    #[error("file system error: {0}")]
    Io(#[source] io::Error),
}

impl FsError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Path(_) => StatusCode::BAD_REQUEST,
            Self::NotFound
            | Self::NotADirectory
            | Self::IsADirectory
            | Self::NotAFile
            | Self::Symlink
            | Self::Escape => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::DirectoryNotEmpty => StatusCode::CONFLICT,
            Self::Unsupported | Self::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 9457 problem document. The 404 ones do not say why (missing,
    /// symlink, escape), so the layout of the root does not leak.
    pub fn problem(&self) -> ProblemDetails {
        match self {
            Self::Path(rejection) => rejection.problem(),
            Self::NotFound
            | Self::NotADirectory
            | Self::IsADirectory
            | Self::NotAFile
            | Self::Symlink
            | Self::Escape => ProblemDetails::new(ProblemType::NOT_FOUND),
            Self::AlreadyExists => {
                ProblemDetails::new(ProblemType::CONFLICT).with_detail("the file already exists")
            }
            Self::DirectoryNotEmpty => {
                ProblemDetails::new(ProblemType::CONFLICT).with_detail("the directory is not empty")
            }
            Self::Unsupported | Self::Io(_) => ProblemDetails::new(ProblemType::INTERNAL),
        }
    }
}

impl From<io::Error> for FsError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::NotFound => Self::NotFound,
            io::ErrorKind::AlreadyExists => Self::AlreadyExists,
            _ => Self::Io(error),
        }
    }
}

impl PathRejection {
    /// The 400 problem document: `detail` says the path is unsafe and
    /// `errors[0]` carries the reason's code.
    pub fn problem(self) -> ProblemDetails {
        ProblemDetails::new(ProblemType::BAD_REQUEST)
            .with_detail("unsafe path")
            .with_error(FieldError::new("path", self.code(), self.to_string()))
    }
}

impl From<FsError> for ProblemDetails {
    fn from(e: FsError) -> Self {
        e.problem()
    }
}

impl From<PathRejection> for ProblemDetails {
    fn from(e: PathRejection) -> Self {
        e.problem()
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for FsError {
    fn into_response(self) -> axum::response::Response {
        self.problem().into_response()
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for PathRejection {
    fn into_response(self) -> axum::response::Response {
        self.problem().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(FsError::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(FsError::Symlink.problem().status, 404);
        assert_eq!(FsError::AlreadyExists.problem().status, 409);
        assert_eq!(FsError::Io(io::Error::other("x")).problem().status, 500);
        assert_eq!(
            FsError::Path(PathRejection::Nul).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn io_kinds_map_to_variants() {
        assert!(matches!(
            FsError::from(io::Error::from(io::ErrorKind::NotFound)),
            FsError::NotFound
        ));
        assert!(matches!(
            FsError::from(io::Error::from(io::ErrorKind::AlreadyExists)),
            FsError::AlreadyExists
        ));
    }

    #[test]
    fn path_problem_names_the_reason_not_the_path() {
        let problem = PathRejection::DriveLetter.problem();
        assert_eq!(problem.errors[0].field, "path");
        assert_eq!(problem.errors[0].code, "drive_letter");
        assert!(!String::from_utf8_lossy(&problem.to_json()).contains("c:"));
    }
}

//! Traversal-proof file access and safe uploads.
//!
//! - [`path`]: the path rules, pure and identical on every OS;
//! - [`root`]: `SafeRoot`, a directory handle every operation resolves through;
//! - [`error`]: errors and their RFC 9457 problem documents.

pub mod error;
pub mod path;
#[cfg(unix)]
pub mod root;

pub use error::FsError;
pub use path::{PathRejection, PathRules, SafePath};
#[cfg(unix)]
pub use root::{Permissions, Resolver, SafeRoot, SymlinkPolicy};

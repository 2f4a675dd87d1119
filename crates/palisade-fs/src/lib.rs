//! Traversal-proof file access and safe uploads.
//!
//! - [`path`]: the path rules, pure and identical on every OS;
//! - [`error`]: errors and their RFC 9457 problem documents.

pub mod error;
pub mod path;

pub use error::FsError;
pub use path::{PathRejection, PathRules, SafePath};

//! The authenticated caller, as a request extension.
//!
//! An authentication layer inserts a [`Principal`] once it has verified the
//! caller; other layers read it (per-user rate limits, audit logs) without
//! depending on the authentication crate.
//!
//! # Example
//!
//! ```
//! use palisade_core::Principal;
//!
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(Principal::new("user-42"));
//! let who = request.extensions().get::<Principal>().unwrap();
//! assert_eq!(who.id(), "user-42");
//! ```

use std::fmt;
use std::sync::Arc;

/// The verified identity of the caller: a stable user id (never an email or
/// a token).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    id: Arc<str>,
}

impl Principal {
    /// A principal with this user id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self { id: id.into() }
    }

    /// The user id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Principal").field(&self.id).finish()
    }
}

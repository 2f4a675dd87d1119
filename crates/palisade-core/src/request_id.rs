//! The request id that correlates a response, its problem body and its log lines.
//!
//! Palisade accepts an incoming id only when it is 1–128 characters of
//! `[A-Za-z0-9._-]`, so a client cannot inject log syntax, control characters or
//! unbounded values. The layer that assigns ids belongs to `palisade-telemetry`;
//! this type is here so every crate (problem bodies, panic logs) can read it from
//! the request's extensions.
//!
//! # Example
//!
//! ```
//! use palisade_core::RequestId;
//!
//! assert_eq!(RequestId::parse("9f2c-1.a_b").unwrap().as_str(), "9f2c-1.a_b");
//! assert!(RequestId::parse("").is_none());
//! assert!(RequestId::parse("a b").is_none());
//! assert!(RequestId::parse("x\n{\"level\":\"ERROR\"}").is_none());
//! assert!(RequestId::parse(&"a".repeat(129)).is_none());
//! ```

use std::fmt;
use std::sync::Arc;

/// The longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A validated request id (1–128 characters of `[A-Za-z0-9._-]`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Validates `value`; `None` when it is empty, too long or has another character.
    pub fn parse(value: &str) -> Option<Self> {
        is_valid(value.as_bytes()).then(|| Self(Arc::from(value)))
    }

    /// An id made from `value` whatever it holds: characters outside
    /// `[A-Za-z0-9._-]` are dropped, the rest is cut to 128; an empty result
    /// becomes `-`. For ids built from trusted material (a generated UUID).
    pub fn sanitized(value: &str) -> Self {
        let mut id: String = value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(MAX_REQUEST_ID_LEN)
            .collect();
        if id.is_empty() {
            id.push('-');
        }
        Self(Arc::from(id))
    }

    /// Validates raw header bytes.
    pub fn from_bytes(value: &[u8]) -> Option<Self> {
        std::str::from_utf8(value).ok().and_then(Self::parse)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[A-Za-z0-9._-]` as a byte table: one load per byte instead of five
/// range tests (an id is checked on every request).
#[allow(clippy::indexing_slicing)] // a u8 indexes 256 entries; `get_mut` is not const yet
const ALLOWED: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0u8;
    loop {
        table[c as usize] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
        if c == u8::MAX {
            break table;
        }
        c += 1;
    }
};

fn is_valid(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|&b| ALLOWED.get(usize::from(b)).copied().unwrap_or(false))
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&&*self.0).finish()
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn accepted_ids_only_use_the_safe_alphabet(s in "\\PC{0,140}") {
            if let Some(id) = RequestId::parse(&s) {
                prop_assert!(!id.as_str().is_empty() && id.as_str().len() <= MAX_REQUEST_ID_LEN);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            }
        }

        #[test]
        fn safe_ids_are_accepted(s in "[A-Za-z0-9._-]{1,128}") {
            let id = RequestId::parse(&s).unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }

    proptest! {
        #[test]
        fn sanitized_ids_are_always_valid(s in "\\PC{0,300}") {
            let id = RequestId::sanitized(&s);
            prop_assert!(RequestId::parse(id.as_str()).is_some());
        }
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(RequestId::from_bytes(&[0xff, b'a']).is_none());
    }
}

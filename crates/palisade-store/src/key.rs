//! Store keys: a namespace (the policy or counter name) and up to three parts.
//!
//! Keys are built on the stack and never allocate for the memory backend: it
//! keeps a 64-bit keyed fingerprint of the key, not the key itself. The Redis
//! backend renders them as `<prefix>:{<tag>}:<kind>:<namespace>:<part>...`, where
//! string parts are replaced by a SHA-256 digest so user-supplied values
//! (emails, usernames) never appear in Redis and cannot smuggle a `{` into the
//! cluster hash tag.
//!
//! # Example
//!
//! ```
//! use palisade_store::{Key, Part};
//!
//! let ip: ipnet::IpNet = "203.0.113.7/32".parse().unwrap();
//! let key = Key::new("login").with(Part::Ip(ip)).with(Part::Str("bob@example.com"));
//! assert_eq!(key.namespace(), "login");
//! assert_eq!(key.parts().count(), 2);
//! ```

use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::StoreError;

/// The most parts a key can have.
pub const MAX_PARTS: usize = 3;

/// One component of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part<'a> {
    /// A client network (an address as a /32 or /128, or an IPv6 prefix).
    Ip(IpNet),
    /// A number, such as a user id.
    Int(u64),
    /// A string, such as an account name. Rendered as a digest in Redis.
    Str(&'a str),
}

impl fmt::Debug for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(net) => write!(f, "Ip({net})"),
            Self::Int(n) => write!(f, "Int({n})"),
            // Account names are personal data: keep them out of Debug output.
            Self::Str(s) => write!(f, "Str(<{} bytes>)", s.len()),
        }
    }
}

/// A key in the store: a namespace plus up to [`MAX_PARTS`] parts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key<'a> {
    namespace: &'a str,
    parts: [Option<Part<'a>>; MAX_PARTS],
    protected: bool,
}

impl<'a> Key<'a> {
    /// A key with no parts (one shared bucket for the namespace).
    pub const fn new(namespace: &'a str) -> Self {
        Self {
            namespace,
            parts: [None; MAX_PARTS],
            protected: false,
        }
    }

    /// Marks the key as security state (a lockout counter, a revocation):
    /// the memory store keeps such keys in a budget that no volume of other
    /// keys (rate-limit buckets, known-client marks) can evict.
    #[must_use]
    pub const fn protected(mut self) -> Self {
        self.protected = true;
        self
    }

    /// Whether the key is security state ([`Key::protected`]).
    pub const fn is_protected(&self) -> bool {
        self.protected
    }

    /// Appends a part. A fourth part replaces the third: keys have at most
    /// [`MAX_PARTS`] parts, which the rate limiter's builder enforces.
    #[must_use]
    pub fn with(mut self, part: Part<'a>) -> Self {
        let free = self.parts.iter().position(Option::is_none);
        let index = free.unwrap_or(MAX_PARTS - 1);
        if let Some(slot) = self.parts.get_mut(index) {
            *slot = Some(part);
        }
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &'a str {
        self.namespace
    }

    /// The parts, in order.
    pub fn parts(&self) -> impl Iterator<Item = Part<'a>> + '_ {
        self.parts.iter().map_while(|p| *p)
    }

    /// Renders the Redis key `<prefix>:{<tag>}:<kind>:<namespace>:<parts>`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn render(&self, prefix: &str, tag: &str, kind: char, out: &mut String) {
        out.clear();
        let _ = write!(out, "{prefix}:{{{tag}}}:{kind}:{}", self.namespace);
        for part in self.parts() {
            out.push(':');
            match part {
                Part::Ip(net) => {
                    let _ = write!(out, "{net}");
                }
                Part::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Part::Str(s) => {
                    out.push('s');
                    let digest = Sha256::digest(s.as_bytes());
                    for byte in digest.iter().take(16) {
                        let _ = write!(out, "{byte:02x}");
                    }
                }
            }
        }
    }

    /// Feeds the key into a hasher without allocating.
    pub(crate) fn feed(&self, state: &mut impl Hasher) {
        self.hash(state);
    }
}

/// Checks a namespace, prefix or hash tag: 1–64 bytes of `[A-Za-z0-9._-]`.
///
/// Keeping names to this alphabet means no name can open or close a Redis
/// cluster hash tag or collide with the `:` separator.
pub fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(palisade_core::ConfigError::new(
            what,
            "must be 1-64 characters of [A-Za-z0-9._-]",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(key: &Key<'_>) -> String {
        let mut out = String::new();
        key.render("palisade", "rl", 'g', &mut out);
        out
    }

    #[test]
    fn renders_ip_and_int_plainly_and_strings_as_digests() {
        let ip: IpNet = "2001:db8::/64".parse().unwrap();
        let key = Key::new("api").with(Part::Ip(ip)).with(Part::Int(42));
        assert_eq!(render(&key), "palisade:{rl}:g:api:2001:db8::/64:42");
        let key = Key::new("login").with(Part::Str("{evil}@example.com"));
        let out = render(&key);
        assert!(out.starts_with("palisade:{rl}:g:login:s"), "{out}");
        assert!(!out.contains("evil"), "{out}");
        assert_eq!(out.matches('{').count(), 1);
    }

    #[test]
    fn debug_hides_strings() {
        let key = Key::new("login").with(Part::Str("alice@example.com"));
        let debug = format!("{key:?}");
        assert!(!debug.contains("alice"), "{debug}");
    }

    #[test]
    fn fourth_part_replaces_the_third() {
        let key = Key::new("x")
            .with(Part::Int(1))
            .with(Part::Int(2))
            .with(Part::Int(3))
            .with(Part::Int(4));
        let parts: Vec<_> = key.parts().collect();
        assert_eq!(parts, vec![Part::Int(1), Part::Int(2), Part::Int(4)]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("tag", "rl").is_ok());
        assert!(check_name("tag", "a}b").is_err());
        assert!(check_name("tag", "").is_err());
        assert!(check_name("tag", &"a".repeat(65)).is_err());
        assert!(check_name("tag", "a:b").is_err());
    }
}

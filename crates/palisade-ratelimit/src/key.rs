//! What a policy counts by: [`KeyBy`].
//!
//! A key is built from up to three sources: the client IP (from
//! [`ClientIp`], so only trusted proxies can change it, IPv6 grouped by
//! prefix), the authenticated user ([`Principal`]), the matched route, a
//! header, a field of the JSON body (read without taking the body from the
//! handler), or a closure.
//!
//! # Example
//!
//! ```
//! use palisade_ratelimit::KeyBy;
//!
//! // Per account and client: the login form's `email` with the client IP.
//! let key = KeyBy::json_field("email").and(KeyBy::client_ip());
//! assert!(key.needs_body());
//! assert!(!KeyBy::client_ip().needs_body());
//! ```

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use ipnet::IpNet;
use palisade_core::{ClientIp, Principal, normalize_identifier};
use palisade_store::{Key, MAX_PARTS, Part};

type Custom = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type Normalize = fn(&str) -> String;

#[derive(Clone)]
enum Source {
    ClientIp,
    User,
    Route,
    Header(HeaderName),
    JsonField(Arc<str>, Normalize),
    Custom(Custom),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("ClientIp"),
            Self::User => f.write_str("User"),
            Self::Route => f.write_str("Route"),
            Self::Header(h) => write!(f, "Header({h})"),
            Self::JsonField(name, _) => write!(f, "JsonField({name})"),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// How a policy builds its key from a request.
#[derive(Clone, Debug)]
#[must_use]
pub struct KeyBy {
    sources: Vec<Source>,
}

impl KeyBy {
    fn one(source: Source) -> Self {
        Self {
            sources: vec![source],
        }
    }

    /// One bucket for everyone.
    pub fn global() -> Self {
        Self { sources: vec![] }
    }

    /// The client IP from [`ClientIp`] (its limiter key: the address, or the
    /// IPv6 prefix). Requests without a `ClientIp` are refused with 500: a
    /// limiter keyed by IP without the client IP layer is a misconfiguration.
    pub fn client_ip() -> Self {
        Self::one(Source::ClientIp)
    }

    /// The authenticated user ([`Principal`]); the policy does not apply to
    /// anonymous requests.
    ///
    /// Leave the routes a user defends the account with — logout, "log out
    /// everywhere", refresh, password change — out of a per-user quota
    /// ([`Policy::except_routes`](crate::Policy::except_routes)) and give them
    /// a policy of their own: the quota is shared by every token of the user,
    /// so anyone holding one stolen access token could otherwise drain it and
    /// make the owner's logout or password change answer 429.
    pub fn user() -> Self {
        Self::one(Source::User)
    }

    /// The matched route pattern (axum's `MatchedPath`), or the path when the
    /// layer sits outside the router.
    pub fn route() -> Self {
        Self::one(Source::Route)
    }

    /// A request header's value; the policy does not apply without it.
    pub fn header(name: HeaderName) -> Self {
        Self::one(Source::Header(name))
    }

    /// A top-level string field of a JSON body, normalised with
    /// [`normalize_identifier`] (trimmed, NFKC, lower-cased) like the login
    /// flow and the lockout normalise it. The
    /// body is buffered (up to the layer's `max_body`) and handed on intact.
    /// The policy does not apply when the body is not JSON or lacks the field.
    pub fn json_field(name: &str) -> Self {
        Self::one(Source::JsonField(Arc::from(name), normalize_identifier))
    }

    /// Like [`KeyBy::json_field`] with your own normalisation.
    pub fn json_field_with(name: &str, normalize: fn(&str) -> String) -> Self {
        Self::one(Source::JsonField(Arc::from(name), normalize))
    }

    /// Any value computed from the request head; `None` = the policy does not
    /// apply.
    pub fn custom(f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        Self::one(Source::Custom(Arc::new(f)))
    }

    /// A composite key: both sources, in order.
    pub fn and(mut self, other: KeyBy) -> Self {
        self.sources.extend(other.sources);
        self
    }

    /// Whether the key reads the request body.
    pub fn needs_body(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, Source::JsonField(..)))
    }

    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }

    /// Builds the key. `Ok(None)`: the policy does not apply to this request.
    pub(crate) fn extract(
        &self,
        parts: &Parts,
        json: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<OwnedKey>, MissingClientIp> {
        let mut key = OwnedKey::default();
        for (slot, source) in key.parts.iter_mut().zip(&self.sources) {
            let part = match source {
                Source::ClientIp => match parts.extensions.get::<ClientIp>() {
                    Some(ip) => OwnedPart::Ip(ip.key()),
                    None => return Err(MissingClientIp),
                },
                Source::User => match parts.extensions.get::<Principal>() {
                    Some(p) => OwnedPart::Text(p.id().to_owned()),
                    None => return Ok(None),
                },
                Source::Route => OwnedPart::Text(route(parts).to_owned()),
                Source::Header(name) => match parts.headers.get(name).map(|v| v.to_str()) {
                    Some(Ok(v)) => OwnedPart::Text(v.to_owned()),
                    _ => return Ok(None),
                },
                Source::JsonField(name, normalize) => {
                    match json.and_then(|m| m.get(&**name)).and_then(|v| v.as_str()) {
                        Some(v) if !v.trim().is_empty() => OwnedPart::Text(normalize(v)),
                        _ => return Ok(None),
                    }
                }
                Source::Custom(f) => match f(parts) {
                    Some(v) => OwnedPart::Text(v),
                    None => return Ok(None),
                },
            };
            *slot = Some(part);
        }
        Ok(Some(key))
    }
}

fn route(parts: &Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return matched.as_str();
    }
    parts.uri.path()
}

/// The request has no [`ClientIp`] extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MissingClientIp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OwnedPart {
    Ip(IpNet),
    Text(String),
}

/// A key's values, owned so a decision can wait on Redis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OwnedKey {
    parts: [Option<OwnedPart>; MAX_PARTS],
}

impl OwnedKey {
    pub(crate) fn key<'a>(&'a self, namespace: &'a str) -> Key<'a> {
        let mut key = Key::new(namespace);
        for part in self.parts.iter().flatten() {
            key = key.with(match part {
                OwnedPart::Ip(net) => Part::Ip(*net),
                OwnedPart::Text(s) => Part::Str(s),
            });
        }
        key
    }

    /// The client network, for the log line of a rejection burst.
    pub(crate) fn ip(&self) -> Option<IpNet> {
        self.parts.iter().flatten().find_map(|p| match p {
            OwnedPart::Ip(net) => Some(*net),
            OwnedPart::Text(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(f: impl FnOnce(&mut http::Request<()>)) -> Parts {
        let mut req = http::Request::new(());
        f(&mut req);
        req.into_parts().0
    }

    #[test]
    fn client_ip_is_required() {
        let p = parts(|_| {});
        assert!(KeyBy::client_ip().extract(&p, None).is_err());
    }

    #[test]
    fn user_and_fields_are_optional() {
        let p = parts(|_| {});
        assert_eq!(KeyBy::user().extract(&p, None).unwrap(), None);
        assert_eq!(KeyBy::json_field("email").extract(&p, None).unwrap(), None);
        let p = parts(|r| {
            r.extensions_mut().insert(Principal::new("u1"));
        });
        let key = KeyBy::user().extract(&p, None).unwrap().unwrap();
        assert_eq!(key.key("api").parts().count(), 1);
    }

    #[test]
    fn json_field_is_normalised() {
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"email":"  Bob@Example.COM ","password":"x"}"#).unwrap();
        let p = parts(|_| {});
        let a = KeyBy::json_field("email").extract(&p, Some(&body)).unwrap();
        let body2: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"email":"bob@example.com"}"#).unwrap();
        let b = KeyBy::json_field("email")
            .extract(&p, Some(&body2))
            .unwrap();
        assert_eq!(a, b);
        assert!(a.is_some());
    }

    #[test]
    fn composites_keep_order() {
        let p = parts(|r| {
            r.extensions_mut().insert(Principal::new("u1"));
            r.headers_mut().insert("x-tenant", "t9".parse().unwrap());
        });
        let key = KeyBy::user()
            .and(KeyBy::header(HeaderName::from_static("x-tenant")))
            .extract(&p, None)
            .unwrap()
            .unwrap();
        let reversed = KeyBy::header(HeaderName::from_static("x-tenant"))
            .and(KeyBy::user())
            .extract(&p, None)
            .unwrap()
            .unwrap();
        assert_ne!(key, reversed);
    }
}

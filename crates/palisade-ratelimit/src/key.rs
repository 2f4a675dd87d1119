//! What a policy counts by: [`KeyBy`].
//!
//! A key is built from up to three sources: the client IP (from
//! [`ClientIp`], so only trusted proxies can change it, IPv6 grouped by
//! prefix), the authenticated user ([`Principal`]), the matched route, a
//! header, a field of the JSON body (read without taking the body from the
//! handler), or a closure.
//!
//! # When a source has no value
//!
//! A limit the client can switch off by leaving something out is no limit,
//! so each source says what happens when the request does not carry it:
//!
//! | source | without a value | why |
//! | --- | --- | --- |
//! | [`KeyBy::client_ip`] | 500 `no_client_ip` | the client IP layer is missing: a misconfiguration |
//! | [`KeyBy::json_field`] | **400 `unkeyed`** (missing, not a string, blank, body not a JSON object) | the client chooses the body: an account limit it could skip by sending `{"email": 1}` would protect nothing. [`KeyBy::fail_open_when_missing`] lets such requests through unlimited instead |
//! | [`KeyBy::user`] | the policy does not apply | anonymous requests are refused by the auth layer or counted by an IP policy |
//! | [`KeyBy::header`] | the policy does not apply when the header is **absent**; a present value is always counted (bytes that are not UTF-8 included) | a client can always omit a header: pair a header policy with an IP policy |
//! | [`KeyBy::custom`] | the closure's `None`: the policy does not apply | your closure decides; return a constant key (one shared bucket) to fail closed |
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
//! // Bodies without a string `email` are refused (400), unless loosened:
//! assert!(!key.fails_open());
//! assert!(KeyBy::json_field("email").fail_open_when_missing().fails_open());
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
    JsonField(JsonField),
    Custom(Custom),
}

#[derive(Clone)]
struct JsonField {
    name: Arc<str>,
    normalize: Normalize,
    /// Requests without the field pass unlimited instead of being refused.
    fail_open: bool,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("ClientIp"),
            Self::User => f.write_str("User"),
            Self::Route => f.write_str("Route"),
            Self::Header(h) => write!(f, "Header({h})"),
            Self::JsonField(field) if field.fail_open => {
                write!(f, "JsonField({}, fail open)", field.name)
            }
            Self::JsonField(field) => write!(f, "JsonField({})", field.name),
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

    /// A request header's value, compared exactly. The policy does not apply
    /// when the header is absent (a client can always leave it out: pair it
    /// with a [`KeyBy::client_ip`] policy); a present value is always
    /// counted, including one that is not visible ASCII.
    pub fn header(name: HeaderName) -> Self {
        Self::one(Source::Header(name))
    }

    /// A top-level string field of a JSON body, normalised with
    /// [`normalize_identifier`] (trimmed, NFKC, lower-cased) like the login
    /// flow and the lockout normalise it. The body is buffered (up to the
    /// layer's `max_body`) and handed on intact.
    ///
    /// A request whose body has no such field — the field missing, `null`,
    /// a number, an array or object, blank, or the body not a JSON object
    /// (wrong `Content-Type` included) — is **refused** with 400
    /// problem+json naming the field (never echoing a value), counted as the
    /// policy's `unkeyed` outcome and rejection reason `unkeyed`: otherwise
    /// `{"email": 1}` would skip a per-account login limit.
    /// [`KeyBy::fail_open_when_missing`] loosens that. Scope such a policy
    /// to the methods that carry the body (`Policy::methods([POST])`), or a
    /// `GET` of the route is refused too.
    pub fn json_field(name: &str) -> Self {
        Self::one(Source::JsonField(JsonField {
            name: Arc::from(name),
            normalize: normalize_identifier,
            fail_open: false,
        }))
    }

    /// Like [`KeyBy::json_field`] with your own normalisation.
    pub fn json_field_with(name: &str, normalize: fn(&str) -> String) -> Self {
        Self::one(Source::JsonField(JsonField {
            name: Arc::from(name),
            normalize,
            fail_open: false,
        }))
    }

    /// **Loosens security.** The JSON fields of this key no longer refuse
    /// requests that lack them: such requests pass **without this policy**
    /// (unlimited by it), as when the field is optional in your API. Anyone
    /// can then skip the limit by leaving the field out or sending it as
    /// another type, so keep an IP policy on the same route.
    pub fn fail_open_when_missing(mut self) -> Self {
        for source in &mut self.sources {
            if let Source::JsonField(field) = source {
                field.fail_open = true;
            }
        }
        self
    }

    /// Whether a request without one of the key's JSON fields passes
    /// unlimited ([`KeyBy::fail_open_when_missing`]) instead of being refused.
    pub fn fails_open(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, Source::JsonField(f) if f.fail_open))
    }

    /// Any value computed from the request head; `None` = the policy does not
    /// apply to this request (fails open: if a client can make your closure
    /// return `None`, it can skip the policy — return a constant key instead
    /// to count such requests in one shared bucket).
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

    /// Whether the key includes the client IP.
    pub(crate) fn has_client_ip(&self) -> bool {
        self.sources.iter().any(|s| matches!(s, Source::ClientIp))
    }

    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }

    /// Builds the key. `Ok(None)`: the policy does not apply to this request.
    pub(crate) fn extract(
        &self,
        parts: &Parts,
        json: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Option<OwnedKey>, Unkeyable> {
        let mut key = OwnedKey::default();
        for (slot, source) in key.parts.iter_mut().zip(&self.sources) {
            let part = match source {
                Source::ClientIp => match parts.extensions.get::<ClientIp>() {
                    Some(ip) => OwnedPart::Ip(ip.key()),
                    None => return Err(Unkeyable::MissingClientIp),
                },
                Source::User => match parts.extensions.get::<Principal>() {
                    Some(p) => OwnedPart::Text(p.id().to_owned()),
                    None => return Ok(None),
                },
                Source::Route => OwnedPart::Text(route(parts).to_owned()),
                Source::Header(name) => match parts.headers.get(name) {
                    Some(value) => OwnedPart::Text(header_text(value.as_bytes())),
                    None => return Ok(None),
                },
                Source::JsonField(field) => {
                    let value = json
                        .and_then(|m| m.get(&*field.name))
                        .and_then(serde_json::Value::as_str);
                    match value {
                        Some(v) if !v.trim().is_empty() => OwnedPart::Text((field.normalize)(v)),
                        _ if field.fail_open => return Ok(None),
                        _ => return Err(Unkeyable::MissingField(Arc::clone(&field.name))),
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

/// A header value as key text: itself when it is UTF-8 (visible ASCII
/// included), else NUL (which no header value contains) and the bytes in
/// hex, so distinct values stay distinct.
fn header_text(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(1 + 2 * bytes.len());
    out.push('\0');
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

fn route(parts: &Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return matched.as_str();
    }
    parts.uri.path()
}

/// Why a key could not be built.
#[derive(Debug, Clone)]
pub(crate) enum Unkeyable {
    /// The request has no [`ClientIp`] extension.
    MissingClientIp,
    /// The body has no usable value for this JSON field (and the key does
    /// not fail open).
    MissingField(Arc<str>),
}

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

    /// The key with its client network replaced by the wider `net` (an
    /// IPv6 aggregate); `None` when the key has no IPv6 network longer than
    /// `net`'s prefix.
    pub(crate) fn aggregate<'a>(&'a self, namespace: &'a str, prefix: u8) -> Option<Key<'a>> {
        let IpNet::V6(client) = self.ip()? else {
            return None;
        };
        if client.prefix_len() <= prefix {
            return None;
        }
        let wider = ipnet::Ipv6Net::new(client.network(), prefix).ok()?.trunc();
        let mut key = Key::new(namespace);
        for part in self.parts.iter().flatten() {
            key = key.with(match part {
                OwnedPart::Ip(_) => Part::Ip(IpNet::V6(wider)),
                OwnedPart::Text(s) => Part::Str(s),
            });
        }
        Some(key)
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
    fn user_is_optional_and_fields_are_required_unless_loosened() {
        let p = parts(|_| {});
        assert_eq!(KeyBy::user().extract(&p, None).unwrap(), None);
        assert!(matches!(
            KeyBy::json_field("email").extract(&p, None),
            Err(Unkeyable::MissingField(name)) if &*name == "email"
        ));
        for body in [r#"{"email":1}"#, r#"{"email":" "}"#, r#"{"mail":"a@b.c"}"#] {
            let body: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(body).unwrap();
            assert!(
                KeyBy::json_field("email")
                    .and(KeyBy::route())
                    .extract(&p, Some(&body))
                    .is_err()
            );
            let loose = KeyBy::json_field("email").fail_open_when_missing();
            assert_eq!(loose.extract(&p, Some(&body)).unwrap(), None);
        }
        assert_eq!(
            KeyBy::json_field("email")
                .fail_open_when_missing()
                .extract(&p, None)
                .unwrap(),
            None
        );
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
    fn a_present_header_is_always_counted_whatever_its_bytes() {
        let key = |value: &[u8]| {
            let p = parts(|r| {
                r.headers_mut()
                    .insert("x-tenant", http::HeaderValue::from_bytes(value).unwrap());
            });
            KeyBy::header(HeaderName::from_static("x-tenant"))
                .extract(&p, None)
                .unwrap()
        };
        let ascii = key(b"t9").unwrap();
        let latin1 = key(b"t\xe9").unwrap();
        let other = key(b"t\xe8").unwrap();
        assert_ne!(latin1, other, "distinct bytes, distinct keys");
        assert_ne!(ascii, latin1);
        assert_eq!(key("tè".as_bytes()), key("tè".as_bytes()));
        let absent = parts(|_| {});
        assert_eq!(
            KeyBy::header(HeaderName::from_static("x-tenant"))
                .extract(&absent, None)
                .unwrap(),
            None
        );
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

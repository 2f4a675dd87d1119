//! JWT access tokens and opaque refresh tokens.
//!
//! **Access tokens** are HMAC-signed JWTs (the key ring's algorithm, HS256 by
//! default) with `sub`, `iat`, `nbf`, `exp`, `iss`, `aud`, `jti`, the refresh
//! family `fam`, and the signing key's id in the header. Verification accepts
//! only the ring's algorithm (`alg: none` and RS/HS confusion are refused),
//! requires every claim, checks issuer and audience, looks the key up by
//! `kid` (previous keys until the end of their overlap window), and checks
//! the times on an injectable clock with a leeway of at most 5 s.
//!
//! **Refresh tokens** are 256 random bits, base64url; only their SHA-256 is
//! stored ([`RefreshToken::hash`]), so a database leak does not yield usable
//! tokens. Rotation and family revocation are [`crate::session`]'s (over a
//! [`RefreshStore`](crate::session::RefreshStore)); [`Revocations`] marks revoked
//! access tokens and families in the shared store until they expire, so
//! logout takes effect on every instance at once, and can end every session
//! of a user at once (a "revoked before" time: blocked account, password
//! change).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_auth::jwt::{Jwt, JwtConfig};
//! use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyRing};
//!
//! let key = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
//! let jwt = Jwt::new(KeyRing::new(key), JwtConfig::new("https://id.example", "api")).unwrap();
//! let issued = jwt.issue("user-1", "family-1").unwrap();
//! let claims = jwt.verify(issued.token()).unwrap();
//! assert_eq!(claims.sub, "user-1");
//! assert_eq!(issued.expires_in(), Duration::from_secs(900));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use palisade_config::keys::{HmacAlgorithm, KeyRing};
use palisade_core::{ConfigError, SharedClock, SystemClock};
use palisade_store::{FailPolicy, Key, Part, Probe, Settle, Source, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The longest leeway accepted on `exp`/`nbf`/`iat`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5);

/// The longest access token lifetime accepted: access tokens are meant to be
/// short (refresh tokens carry long sessions), and revocation entries, which
/// live as long as the tokens they affect, stay small and exact.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(8 * 3600);

/// Issuer, audience, lifetimes.
#[derive(Clone, Debug)]
#[must_use]
pub struct JwtConfig {
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway: Duration,
}

impl JwtConfig {
    /// Tokens for `audience` issued by `issuer`; 15-minute lifetime, 5 s leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Duration::from_secs(15 * 60),
            leeway: MAX_LEEWAY,
        }
    }

    /// The access token lifetime.
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// The clock leeway (at most [`MAX_LEEWAY`]).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

/// The claims of an access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Issued at (UNIX seconds).
    pub iat: u64,
    /// Not before (UNIX seconds).
    pub nbf: u64,
    /// Expires at (UNIX seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Token id (revocable).
    pub jti: String,
    /// The refresh-token family the token was issued with.
    pub fam: String,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

/// An issued access token. `Debug` does not show the token.
pub struct IssuedToken {
    token: String,
    claims: Claims,
    expires_in: Duration,
}

impl IssuedToken {
    /// The compact JWT, to hand to the client.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Its claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Seconds until it expires (the `expires_in` of the token response).
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused. Deliberately coarse: clients get one 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a well-formed token, a forbidden algorithm, or a missing claim.
    #[error("malformed token")]
    Malformed,
    /// No key with that `kid` (unknown or retired), or a bad signature.
    #[error("invalid signature")]
    Signature,
    /// Wrong issuer or audience.
    #[error("wrong issuer or audience")]
    Claims,
    /// Expired, or not valid yet.
    #[error("expired or not yet valid")]
    Time,
    /// The token was signed but could not be encoded (issuing side).
    #[error("could not sign the token")]
    Signing,
}

/// Issues and verifies access tokens.
pub struct Jwt {
    ring: KeyRing,
    config: JwtConfig,
    algorithm: Algorithm,
    clock: SharedClock,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("ring", &self.ring)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn algorithm(alg: HmacAlgorithm) -> Algorithm {
    match alg {
        HmacAlgorithm::Hs256 => Algorithm::HS256,
        HmacAlgorithm::Hs384 => Algorithm::HS384,
        HmacAlgorithm::Hs512 => Algorithm::HS512,
    }
}

impl Jwt {
    /// Tokens signed with the ring's current key.
    ///
    /// # Errors
    ///
    /// A leeway above [`MAX_LEEWAY`], an access token lifetime of zero or
    /// above [`MAX_ACCESS_TTL`], or an empty issuer or audience.
    pub fn new(ring: KeyRing, config: JwtConfig) -> Result<Self, ConfigError> {
        if config.leeway > MAX_LEEWAY {
            return Err(ConfigError::new("jwt.leeway", "must be at most 5 seconds"));
        }
        if config.access_ttl.as_secs() == 0 || config.access_ttl > MAX_ACCESS_TTL {
            return Err(ConfigError::new(
                "jwt.access_ttl",
                "must be between 1 second and 8 hours",
            ));
        }
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(ConfigError::new("jwt.issuer/audience", "must not be empty"));
        }
        let algorithm = algorithm(ring.current().algorithm());
        Ok(Self {
            ring,
            config,
            algorithm,
            clock: SystemClock::shared(),
        })
    }

    /// Uses `clock` for issuing and checking times (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        self.config.access_ttl
    }

    fn now(&self) -> u64 {
        self.clock.unix_now().as_secs()
    }

    /// Issues an access token for user `sub` in refresh family `family`.
    pub fn issue(&self, sub: &str, family: &str) -> Result<IssuedToken, JwtError> {
        self.issue_at(sub, family, self.now())
    }

    /// The UNIX time (seconds) on the token clock.
    pub(crate) fn unix_now(&self) -> u64 {
        self.now()
    }

    /// Issues a token whose times start at `now` (UNIX seconds): a rotation
    /// takes its time before it commits, so the token can never outlive a
    /// revocation mark set after the commit.
    pub(crate) fn issue_at(
        &self,
        sub: &str,
        family: &str,
        now: u64,
    ) -> Result<IssuedToken, JwtError> {
        let claims = Claims {
            sub: sub.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.config.access_ttl.as_secs(),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            jti: random_id().map_err(|_| JwtError::Signing)?,
            fam: family.to_owned(),
        };
        let key = self.ring.current();
        let mut header = Header::new(self.algorithm);
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key.bytes()))
            .map_err(|_| JwtError::Signing)?;
        Ok(IssuedToken {
            token,
            claims,
            expires_in: self.config.access_ttl,
        })
    }

    /// Verifies a token: algorithm, key, signature, issuer, audience, times.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        // Reject oversized input before parsing anything.
        if token.len() > 4096 {
            return Err(JwtError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != self.algorithm {
            return Err(JwtError::Malformed);
        }
        let now = self.now();
        let kid = header.kid.ok_or(JwtError::Malformed)?;
        let key = self.ring.find(&kid, now).ok_or(JwtError::Signature)?;
        let mut validation = Validation::new(self.algorithm);
        // Times are checked below on our clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]
            .into_iter()
            .map(str::to_owned)
            .collect::<HashSet<_>>();
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(key.bytes()),
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidIssuer
            | jsonwebtoken::errors::ErrorKind::InvalidAudience => JwtError::Claims,
            _ => JwtError::Malformed,
        })?;
        let claims = data.claims;
        let leeway = self.config.leeway.as_secs();
        if now >= claims.exp.saturating_add(leeway)
            || now.saturating_add(leeway) < claims.nbf
            || now.saturating_add(leeway) < claims.iat
        {
            return Err(JwtError::Time);
        }
        Ok(claims)
    }
}

/// A random 128-bit id, base64url.
pub fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// An opaque refresh token: 256 random bits, base64url. `Debug` hides it.
pub struct RefreshToken(String);

impl RefreshToken {
    /// A fresh token.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The token, to hand to the client once.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What to store: the SHA-256 of the token.
    pub fn hash(&self) -> [u8; 32] {
        Self::hash_presented(&self.0)
    }

    /// The SHA-256 of a token a client presented, to look it up.
    pub fn hash_presented(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

/// Revoked access tokens, families and users' sessions, in the shared store,
/// each until the last token it could affect has expired.
#[derive(Clone, Debug)]
pub struct Revocations {
    store: Store,
    access_ttl: Duration,
    tag: &'static str,
}

const JTI: &str = "revoked-jti";
const FAMILY: &str = "revoked-fam";
const USER: &str = "revoked-before";

impl Revocations {
    /// Revocations over `store` for tokens living `access_ttl` (at most
    /// [`MAX_ACCESS_TTL`], as [`Jwt::new`] requires).
    pub fn new(store: Store, access_ttl: Duration) -> Self {
        Self {
            store,
            access_ttl: access_ttl.min(MAX_ACCESS_TTL),
            tag: "auth",
        }
    }

    /// Ends every session of user `sub` at once, on every instance (blocked
    /// account, password change): every access token issued at or before
    /// `at_unix` (seconds) is revoked, until the last of them has expired.
    /// A later call moves the time forward; an earlier one changes nothing.
    ///
    /// Token times have a one-second resolution, so a token issued in the
    /// same second just after the call is refused too (the client signs in
    /// again a second later). Refresh tokens are not covered: revoke the
    /// user's families too, or new access tokens will be issued —
    /// [`Sessions::end_all`](crate::session::Sessions::end_all) does both.
    pub async fn end_sessions(&self, sub: &str, at_unix: u64) -> Result<(), StoreError> {
        let key = Key::new(USER).protected().with(Part::Str(sub));
        let ttl = self.access_ttl + MAX_LEEWAY + MAX_LEEWAY;
        self.store
            .settle(
                self.tag,
                &[Settle::Stamp(key, at_unix, ttl)],
                Source::Primary,
            )
            .await
    }

    /// The mark that revokes one access token until its expiry.
    fn token_mark(claims: &Claims, now_unix: u64) -> Settle<'_> {
        let ttl =
            Duration::from_secs(claims.exp.saturating_sub(now_unix).max(1) + MAX_LEEWAY.as_secs());
        Settle::Mark(Key::new(JTI).protected().with(Part::Str(&claims.jti)), ttl)
    }

    /// Revokes one access token until its expiry.
    pub async fn revoke_token(&self, claims: &Claims, now_unix: u64) -> Result<(), StoreError> {
        self.store
            .settle(
                self.tag,
                &[Self::token_mark(claims, now_unix)],
                Source::Primary,
            )
            .await
    }

    /// Revokes one access token and every token of its refresh family
    /// (logout): both marks in one store round trip.
    pub async fn revoke_session(&self, claims: &Claims, now_unix: u64) -> Result<(), StoreError> {
        let family = Key::new(FAMILY).protected().with(Part::Str(&claims.fam));
        self.store
            .settle(
                self.tag,
                &[
                    Self::token_mark(claims, now_unix),
                    Settle::Mark(family, self.access_ttl + MAX_LEEWAY),
                ],
                Source::Primary,
            )
            .await
    }

    /// Revokes every access token of a refresh family (logout, reuse of a
    /// spent refresh token) for the access token lifetime.
    pub async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let key = Key::new(FAMILY).protected().with(Part::Str(family));
        let ttl = self.access_ttl + MAX_LEEWAY;
        self.store
            .settle(self.tag, &[Settle::Mark(key, ttl)], Source::Primary)
            .await
    }

    /// Whether the token, its family or its user's sessions were revoked:
    /// one store round trip. Fails closed: an unreachable store is an error,
    /// not "not revoked".
    pub async fn is_revoked(&self, claims: &Claims) -> Result<bool, StoreError> {
        let probes = [
            Probe::Marked(Key::new(JTI).protected().with(Part::Str(&claims.jti))),
            Probe::Marked(Key::new(FAMILY).protected().with(Part::Str(&claims.fam))),
            Probe::StampedSince(
                Key::new(USER).protected().with(Part::Str(&claims.sub)),
                claims.iat,
            ),
        ];
        self.store
            .any_marked(self.tag, &probes, FailPolicy::FailClosed)
            .await
    }
}

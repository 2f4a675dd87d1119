//! Keys with a known purpose, validated when they are loaded.
//!
//! A key is built from configuration text with its algorithm and the encoding
//! the text is declared in; its length is measured on the decoded bytes and
//! checked against the algorithm (RFC 7518 §3.2), and the text against the
//! [strength rules](crate::strength). Key bytes live in a `secrecy` box
//! (zeroized on drop); `Debug` shows the algorithm and the key id only; there
//! is no `Display` and no `Serialize`.
//!
//! A [`KeyRing`] holds the current signing key and the keys it replaced, each
//! with an id, so that tokens signed before a rotation still verify during the
//! overlap window.
//!
//! # Example
//!
//! ```
//! use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyEncoding};
//!
//! let key = HmacKey::parse("rvzwooxMldAmmWb1ekYsvc2PMiDFNNd0seY78vWiAy4=", HmacAlgorithm::Hs256, KeyEncoding::Base64)
//!     .unwrap();
//! assert_eq!(key.bytes().len(), 32);
//! assert!(!format!("{key:?}").contains("6qf0"));
//!
//! let err = HmacKey::parse("changeme", HmacAlgorithm::Hs256, KeyEncoding::Raw).unwrap_err();
//! assert!(err.to_string().contains("too short"));
//! ```

use std::fmt;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

use crate::strength::{Weakness, assess};

/// An HMAC algorithm of JWS (RFC 7518 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HmacAlgorithm {
    /// HMAC with SHA-256: keys of at least 32 bytes.
    Hs256,
    /// HMAC with SHA-384: keys of at least 48 bytes.
    Hs384,
    /// HMAC with SHA-512: keys of at least 64 bytes.
    Hs512,
}

impl HmacAlgorithm {
    /// The minimum key length in bytes: the size of the hash output.
    pub const fn min_key_len(self) -> usize {
        match self {
            Self::Hs256 => 32,
            Self::Hs384 => 48,
            Self::Hs512 => 64,
        }
    }

    /// The JWS `alg` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
        }
    }
}

/// How a key is written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyEncoding {
    /// The text itself is the key (its UTF-8 bytes).
    #[default]
    Raw,
    /// Standard or URL-safe base64, padded or not.
    Base64,
    /// Hexadecimal.
    Hex,
}

/// Why a key was refused. Names the rules, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key breaks these strength rules.
    Weak(Vec<Weakness>),
    /// The text is not valid in its declared encoding.
    Undecodable(KeyEncoding),
    /// This kind of key must be written as base64 or hex.
    NeedsEncoding,
    /// The decoded key does not have the exact length required.
    WrongLength {
        /// The required length in bytes.
        expected: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Weak(weaknesses) => {
                let rules: Vec<String> = weaknesses.iter().map(Weakness::rule).collect();
                f.write_str(&rules.join("; "))
            }
            Self::Undecodable(KeyEncoding::Base64) => f.write_str("is not valid base64"),
            Self::Undecodable(KeyEncoding::Hex) => f.write_str("is not valid hexadecimal"),
            Self::Undecodable(KeyEncoding::Raw) | Self::NeedsEncoding => {
                f.write_str("must be random bytes written as base64 or hex")
            }
            Self::WrongLength { expected } => write!(f, "must decode to exactly {expected} bytes"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Decodes `text` per `encoding`; `None` when it is not valid.
pub(crate) fn decode(text: &str, encoding: KeyEncoding) -> Option<Vec<u8>> {
    let text = text.trim();
    match encoding {
        KeyEncoding::Raw => Some(text.as_bytes().to_vec()),
        KeyEncoding::Base64 => {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        }
        KeyEncoding::Hex => {
            if !text.len().is_multiple_of(2) {
                return None;
            }
            text.as_bytes()
                .chunks(2)
                .map(|pair| {
                    std::str::from_utf8(pair)
                        .ok()
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                })
                .collect()
        }
    }
}

/// Checks a secret written in `encoding` for a purpose needing `min_len`
/// decoded bytes: the text against the placeholder rules, the decoded bytes
/// against length, entropy and the guesses estimate (a key must be `min_len`
/// bytes from a CSPRNG).
pub fn check(text: &str, encoding: KeyEncoding, min_len: usize) -> Result<Vec<u8>, KeyError> {
    let Some(bytes) = decode(text, encoding) else {
        return Err(KeyError::Undecodable(encoding));
    };
    let weaknesses = if encoding == KeyEncoding::Raw {
        assess(&bytes, min_len)
    } else {
        // The text for placeholders; the real key for everything else
        // (`changeme` in base64 is still `changeme`).
        let mut weaknesses = assess(text.trim().as_bytes(), 0);
        for w in assess(&bytes, min_len) {
            if !weaknesses.contains(&w) {
                weaknesses.push(w);
            }
        }
        weaknesses
    };
    if weaknesses.is_empty() {
        Ok(bytes)
    } else {
        Err(KeyError::Weak(weaknesses))
    }
}

/// A key id derived from the key: the first 8 bytes of SHA-256 over a domain
/// prefix and the key, base64url. It identifies the key in a token header and
/// reveals nothing usable about it.
fn derive_kid(bytes: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"palisade key id\0")
        .chain_update(bytes)
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.get(..8).unwrap_or_default())
}

/// An HMAC signing key.
pub struct HmacKey {
    algorithm: HmacAlgorithm,
    kid: String,
    bytes: SecretSlice<u8>,
}

impl HmacKey {
    /// Validates `text`, written in `encoding`, as a key for `algorithm`.
    pub fn parse(
        text: &str,
        algorithm: HmacAlgorithm,
        encoding: KeyEncoding,
    ) -> Result<Self, KeyError> {
        check(text, encoding, algorithm.min_key_len())
            .map(|bytes| Self::from_bytes(algorithm, bytes))
    }

    /// A fresh random key of the algorithm's full length (for development).
    ///
    /// # Errors
    ///
    /// When the operating system's random source fails.
    pub fn generate(algorithm: HmacAlgorithm) -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; algorithm.min_key_len()];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_bytes(algorithm, bytes))
    }

    fn from_bytes(algorithm: HmacAlgorithm, bytes: Vec<u8>) -> Self {
        Self {
            algorithm,
            kid: derive_kid(&bytes),
            bytes: SecretSlice::from(bytes),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> HmacAlgorithm {
        self.algorithm
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key bytes, to hand to a signing library.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.expose_secret()
    }
}

/// A copy for another component (the copy is zeroized on drop too).
impl Clone for HmacKey {
    fn clone(&self) -> Self {
        Self::from_bytes(self.algorithm, self.bytes.expose_secret().to_vec())
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("bytes", &"[REDACTED]")
            .finish()
    }
}

/// A 256-bit symmetric key (e.g. for AES-256-GCM or XChaCha20-Poly1305).
pub struct SymmetricKey {
    bytes: SecretSlice<u8>,
}

impl SymmetricKey {
    /// The length of the key: 32 bytes.
    pub const LEN: usize = 32;

    /// Validates `text`, written in `encoding` (base64 or hex: a symmetric
    /// key is random bytes, not text), as exactly 32 bytes.
    pub fn parse(text: &str, encoding: KeyEncoding) -> Result<Self, KeyError> {
        if encoding == KeyEncoding::Raw {
            return Err(KeyError::NeedsEncoding);
        }
        let bytes = check(text, encoding, Self::LEN)?;
        if bytes.len() != Self::LEN {
            return Err(KeyError::WrongLength {
                expected: Self::LEN,
            });
        }
        Ok(Self {
            bytes: SecretSlice::from(bytes),
        })
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.expose_secret()
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey([REDACTED])")
    }
}

/// The current signing key and the keys it replaced.
///
/// Sign with [`current`](Self::current); verify with [`find`](Self::find) on
/// the token's `kid`. Previous keys are kept until `retire_at` (seconds since
/// the epoch), the end of the overlap window: the lifetime of the longest
/// token signed with them.
#[derive(Debug)]
pub struct KeyRing {
    current: HmacKey,
    previous: Vec<(HmacKey, Option<u64>)>,
}

impl KeyRing {
    /// A ring with one key.
    pub fn new(current: HmacKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a key that signed tokens before the rotation, accepted until
    /// `retire_at` (UNIX seconds; `None`: until removed from the configuration).
    #[must_use]
    pub fn with_previous(mut self, key: HmacKey, retire_at: Option<u64>) -> Self {
        self.previous.push((key, retire_at));
        self
    }

    /// The signing key.
    pub fn current(&self) -> &HmacKey {
        &self.current
    }

    /// The key with id `kid` that may verify a token at `now` (UNIX seconds).
    pub fn find(&self, kid: &str, now: u64) -> Option<&HmacKey> {
        if self.current.kid == kid {
            return Some(&self.current);
        }
        self.previous
            .iter()
            .find(|(key, retire)| key.kid == kid && retire.is_none_or(|t| now < t))
            .map(|(key, _)| key)
    }
}

#[cfg(test)]
mod tests;

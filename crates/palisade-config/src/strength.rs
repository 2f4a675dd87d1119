//! Is this secret strong? The rules a secret must pass before a service uses it.
//!
//! | rule | refuses | why |
//! | --- | --- | --- |
//! | length | fewer bytes than the purpose needs (HS256 32, HS384 48, HS512 64) | RFC 7518 §3.2: an HMAC key must be at least as long as the hash output |
//! | known default | a bundled list of secrets published in templates, docs and tutorials, found by audits in production (Superset CVE-2023-27524, Airflow CVE-2020-17526, Supabase, jose, jwt.io...) | these are the first keys an attacker tries; some look random, so only a list catches them |
//! | placeholder words | `changeme`, `change-in-production`, `your-…`, `replace…`, `placeholder`, `insecure`, `secret`, `password`, `example`, `default`, `sample`, `test`, `dummy`... | entropy alone accepts `your-secret-key-min-32-characters-change-in-production`; OWASP ASVS 5 §13.3 forbids default secrets |
//! | template syntax | a whole value like `${NAME}`, `$NAME`, `{{ .Values.name }}`, `%NAME%`, `<your key here>` | an unrendered template is not a secret |
//! | repeated characters | a run of 8 or more of one character | `aaaaaaaa…` pads a short secret to length |
//! | sequences | 8 or more consecutive characters (`abcdefgh`, `12345678`, `87654321`) | padding and guessable patterns |
//! | keyboard walks | 6 or more keys of a row with 3+ letters (`qwerty`, `asdfgh`, `1qaz2w`...) | NIST SP 800-63B §3.1.1.2 lists them among guessable values |
//! | low entropy | fewer than 3 bits per character, or fewer than 100 bits in all (Shannon estimate) | what is left of the guessable |
//!
//! Short words (4–5 letters: `test`, `dummy`, `demo`, `fake`, `temp`, `todo`)
//! count only as a whole word between separators (`my-test-key`, `test_jwt`),
//! so a random key that happens to contain `test` is not refused; longer words
//! count anywhere. With these thresholds, random keys (base64, hex of 32+ bytes, 32+
//! random printable characters) pass: the test suite checks 1,000 of each.
//!
//! # Example
//!
//! ```
//! use palisade_config::strength::{Weakness, assess};
//!
//! let weak = assess(b"your-secret-key-min-32-characters-change-in-production", 32);
//! assert!(weak.contains(&Weakness::KnownDefault));
//! assert!(assess(b"short", 32).contains(&Weakness::TooShort { min: 32 }));
//! assert!(assess(b"N2Xc8q0p3XbH6Zp2vq1Y9sRkLmT4uWe7aB5dF0gJ8hKs", 32).is_empty());
//! ```

use std::fmt;

/// Why a secret is refused. Carries no part of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Weakness {
    /// Shorter than the purpose requires.
    TooShort {
        /// The minimum length in bytes.
        min: usize,
    },
    /// A secret published as a default or an example.
    KnownDefault,
    /// Contains a placeholder word such as `changeme` or `example`.
    PlaceholderWord,
    /// An unrendered template (`<…>`, `${…}`, `{{…}}`).
    TemplateSyntax,
    /// A run of one repeated character.
    RepeatedCharacters,
    /// A run of consecutive characters (`abcdef`, `654321`).
    Sequence,
    /// A run of neighbouring keys (`qwerty`, `asdfgh`).
    KeyboardWalk,
    /// Too little entropy for its length.
    LowEntropy,
}

impl Weakness {
    /// The rule, for a report line.
    pub fn rule(&self) -> String {
        match self {
            Self::TooShort { min } => {
                format!("too short: needs at least {min} bytes (RFC 7518 §3.2)")
            }
            Self::KnownDefault => "is a published default or example value".to_owned(),
            Self::PlaceholderWord => "contains a placeholder or default word".to_owned(),
            Self::TemplateSyntax => "is an unrendered template placeholder".to_owned(),
            Self::RepeatedCharacters => "contains a run of one repeated character".to_owned(),
            Self::Sequence => "contains a run of consecutive characters".to_owned(),
            Self::KeyboardWalk => "contains a keyboard walk".to_owned(),
            Self::LowEntropy => "has too little entropy: use 32+ random bytes".to_owned(),
        }
    }
}

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rule())
    }
}

const KNOWN_DEFAULTS: &str = include_str!("known_defaults.txt");

/// The bundled published defaults, lower-cased.
pub fn known_defaults() -> impl Iterator<Item = &'static str> {
    KNOWN_DEFAULTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Words that mark a placeholder wherever they appear (after removing `-`, `_`,
/// `.` and spaces): long enough never to occur by chance in a random key.
const WORDS_ANYWHERE: &[&str] = &[
    "changeme",
    "changeit",
    "changethis",
    "changeinproduction",
    "replaceme",
    "replacewith",
    "replacethis",
    "yoursecret",
    "yourkey",
    "yourjwt",
    "yourapi",
    "yourtoken",
    "yourown",
    "placeholder",
    "insecure",
    "notsecure",
    "notasecret",
    "tobemodified",
    "donotuse",
    "secret",
    "password",
    "passwd",
    "example",
    "default",
    "sample",
    "setme",
    "fillme",
    "generateme",
];

/// Short words that mark a placeholder only as a whole word between separators
/// (`-`, `_`, `.`, space, `/`, `:`, `+`) or the ends: between letters or digits
/// they occur by chance in about one random key in 50,000.
const WHOLE_WORDS: &[&str] = &[
    "test", "tests", "dummy", "demo", "fake", "temp", "todo", "fixme", "your",
];

const KEYBOARD_ROWS: &[&str] = &[
    "`1234567890-=",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/",
    "qazwsxedcrfvtgbyhnujmikolp",
    "qwertzuiop",
    "azertyuiop",
    "qsdfghjklm",
    "wxcvbn",
];

/// Repeated or consecutive characters: 8 in a row (6 occur by chance in about
/// one random 64-digit hex key in a hundred).
const RUN: usize = 8;
/// Keyboard walks: 6 neighbouring keys, at least 3 of them letters (digit
/// runs are sequences, judged by `RUN`).
const WALK: usize = 6;
const MIN_BITS_PER_CHAR: f64 = 3.0;
const MIN_TOTAL_BITS: f64 = 100.0;

/// Every weakness of `secret` for a purpose needing `min_len` bytes; empty
/// when the secret is acceptable.
pub fn assess(secret: &[u8], min_len: usize) -> Vec<Weakness> {
    let mut found = Vec::new();
    if secret.len() < min_len {
        found.push(Weakness::TooShort { min: min_len });
    }
    let text = String::from_utf8_lossy(secret).trim().to_ascii_lowercase();
    if known_defaults().any(|d| d == text) {
        found.push(Weakness::KnownDefault);
    }
    if has_placeholder_word(&text) {
        found.push(Weakness::PlaceholderWord);
    }
    if has_template(&text) {
        found.push(Weakness::TemplateSyntax);
    }
    if has_repeat(secret) {
        found.push(Weakness::RepeatedCharacters);
    }
    if has_sequence(secret) {
        found.push(Weakness::Sequence);
    }
    if has_keyboard_walk(&text) {
        found.push(Weakness::KeyboardWalk);
    }
    if low_entropy(secret) {
        found.push(Weakness::LowEntropy);
    }
    found
}

fn has_placeholder_word(text: &str) -> bool {
    let squeezed: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    if WORDS_ANYWHERE.iter().any(|w| squeezed.contains(w)) {
        return true;
    }
    text.split(['-', '_', '.', ' ', '/', ':', '+'])
        .any(|word| WHOLE_WORDS.contains(&word))
}

/// A whole value that is an unrendered template: `${NAME}`, `$NAME`,
/// `{{ .Values.name }}`, `%NAME%` or `<your key here>`. Only whole values count:
/// `${ab}` inside a random printable key occurs by chance (about one key in
/// ten thousand).
fn has_template(text: &str) -> bool {
    let name = |s: &str| {
        let s = s.trim();
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ' ' | ':'))
    };
    let wrapped = |open: &str, close: &str| {
        text.strip_prefix(open)
            .and_then(|t| t.strip_suffix(close))
            .is_some_and(name)
    };
    wrapped("${", "}")
        || wrapped("{{", "}}")
        || wrapped("<", ">")
        || wrapped("%", "%")
        || text.strip_prefix('$').is_some_and(|t| {
            !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn has_repeat(bytes: &[u8]) -> bool {
    bytes.chunk_by(|a, b| a == b).any(|run| run.len() >= RUN)
}

fn has_sequence(bytes: &[u8]) -> bool {
    let ascending = bytes
        .chunk_by(|a, b| a.is_ascii_alphanumeric() && b.wrapping_sub(*a) == 1)
        .any(|run| run.len() >= RUN);
    let descending = bytes
        .chunk_by(|a, b| a.is_ascii_alphanumeric() && a.wrapping_sub(*b) == 1)
        .any(|run| run.len() >= RUN);
    ascending || descending
}

fn has_keyboard_walk(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(WALK).any(|w| {
        if w.iter().filter(|b| b.is_ascii_alphabetic()).count() < 3 {
            return false;
        }
        let Ok(w) = std::str::from_utf8(w) else {
            return false;
        };
        let reversed: String = w.chars().rev().collect();
        KEYBOARD_ROWS
            .iter()
            .any(|row| row.contains(w) || row.contains(reversed.as_str()))
    })
}

/// Shannon entropy of the byte distribution, per byte and in all.
fn low_entropy(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let mut counts = [0u32; 256];
    for b in bytes {
        if let Some(c) = counts.get_mut(usize::from(*b)) {
            *c += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)] // lengths of secrets are far below 2^52
    let len = bytes.len() as f64;
    let per_char: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / len;
            -p * p.log2()
        })
        .sum();
    per_char < MIN_BITS_PER_CHAR || per_char * len < MIN_TOTAL_BITS
}

#[cfg(test)]
mod tests;

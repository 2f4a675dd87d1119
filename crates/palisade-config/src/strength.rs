//! Is this secret strong? The rules a secret must pass before a service uses it.
//!
//! | rule | refuses | why |
//! | --- | --- | --- |
//! | length | fewer bytes than the purpose needs (HS256 32, HS384 48, HS512 64) | RFC 7518 §3.2: an HMAC key must be at least as long as the hash output |
//! | known default | a bundled list of secrets published in templates, docs and tutorials, found by audits in production (Superset CVE-2023-27524, Airflow CVE-2020-17526, Supabase, jose, jwt.io...) | these are the first keys an attacker tries; some look random, so only a list catches them |
//! | placeholder words | `changeme`, `change-in-production`, `your-…`, `replace…`, `placeholder`, `insecure`, `secret`, `password`, `example`, `default`, `sample`, `test`, `dummy`... | entropy alone accepts `your-secret-key-min-32-characters-change-in-production`; OWASP ASVS 5 §13.3 forbids default secrets |
//! | template syntax | a whole value like `${NAME}`, `$NAME`, `{{ .Values.name }}`, `%NAME%`, `<your key here>` | an unrendered template is not a secret |
//! | repeated characters | a run of 10 or more of one character | `aaaaaaaaaa…` pads a short secret to length |
//! | sequences | 10 or more consecutive characters (`abcdefghij`, `0123456789`, `9876543210`) | padding and guessable patterns |
//! | keyboard walks | 8 or more keys of a row with 3+ letters (`qwertyui`, `asdfghjk`, `1qaz2wsx`...) | NIST SP 800-63B §3.1.1.2 lists them among guessable values |
//! | low entropy | fewer than 3 bits per character, or fewer than 100 bits in all (Shannon estimate) | a small alphabet (`abbaabab…`) |
//! | guessable | an estimate under 5 bits per needed byte (160 bits for HS256, 240 for HS384, 320 for HS512); or patterns that make the key a third cheaper than random characters, with fewer random bits than that besides | words, passphrases, sentences, names with years, keyboard walks, repeated blocks of any period are cracked offline from one token: a key must be **32+ bytes from a CSPRNG** (`openssl rand -base64 48`) |
//!
//! **The estimate** (the `estimate` module; zxcvbn's approach, our own
//! pricing): the key is cut into the cheapest sequence of tokens (dictionary
//! words and names of a bundled 73,129-word list, forwards, reversed, in any
//! case and in leetspeak; words of configuration keys such as `prod`, `jwt`,
//! `signing`; years 1900–2099; sequences; keyboard walks on QWERTY, QWERTZ,
//! AZERTY, Dvorak and the keypad; copies of an earlier part, ignoring case and
//! which separator, so that repeated and near-repeated blocks of any period
//! cost little) and random characters, each priced at the log2 of the guesses
//! an attacker spends on it; random characters cost log2 of the key's
//! alphabet (4 bits in hex, 6 in base64, 6.57 in printable ASCII, up to 8 in
//! raw bytes). The total must reach 5 bits per byte the purpose needs: random
//! keys carry 6 (base64) to 8 (raw) bits per byte, so CSPRNG output clears it
//! with room to spare, and guessable keys do not come close. A key whose
//! patterns make it at least a third cheaper than random characters of its
//! alphabet is built, not drawn (CSPRNG output saves at most 16 %): it
//! passes only if its random part alone reaches the same total (a label in
//! front of a full-length random key is fine). A raw value that is valid hex
//! or base64 is also judged decoded (`base64(hello × 10)` is guessable).
//!
//! Measured (tests in `strength/tests.rs`): every class of the adversarial
//! review refused (a random-looking block repeated, near repeats, common
//! words with spaces, company-year-`prod`, `Name1987!` twice, leetspeak,
//! keyboard walks, sentences, base64 of a repeated word, hex of repeated
//! bytes, a label around too few random bytes); 50,000 keys from the OS
//! CSPRNG in each of base64, base64url, hex, printable ASCII and raw bytes
//! (32 to 128 bytes) accepted on every run. The `calibrate` test (release)
//! found no refusal in 1,000,000 more of each encoding at 32 to 128 bytes
//! (patterns saved at most 14 % of the random bits; the closest key, 32
//! printable characters, was 23 bits above the threshold), nor in 1,000,000
//! of each at exactly 32 bytes, the tightest case (at most 16 % saved; 32
//! printable characters, 17 bits above). The estimate reads at most 256
//! bytes and takes 5.5 µs for a 64-character base64 key in release, 10.4 µs
//! with every rule (figures in the `estimate` module).
//!
//! Short placeholder words (4–5 letters: `test`, `dummy`, `demo`, `fake`,
//! `temp`, `todo`, `setme`) count only as a whole word between separators
//! (`my-test-key`, `test_jwt`), in one case, and only to name the cause of
//! another weakness: in random keys they turn up by chance (`-fake-` in about
//! one base64url key in 200,000). Longer words count anywhere, in one case or
//! capitalised (`CHANGE_ME`, `Secret`), or in any case from 8 letters on.
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
//!
//! // Long enough, but cracked offline from one token: refused.
//! let guessable = Weakness::Guessable { min: 32 };
//! assert_eq!(assess(b"Christopher1985!Christopher1985!", 32), vec![guessable.clone()]);
//! assert!(guessable.rule().contains("`openssl rand -base64 48`"));
//! ```

use std::fmt;

mod estimate;

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
    /// Guessable: made of words, names, years, keyboard patterns or repeated
    /// blocks, or too little of it random, for a purpose needing `min` bytes.
    Guessable {
        /// The minimum length in bytes of the purpose.
        min: usize,
    },
}

impl Weakness {
    /// The rule, for a report line.
    pub fn rule(&self) -> String {
        match self {
            Self::TooShort { min } => format!(
                "too short: needs at least {min} bytes from a CSPRNG (RFC 7518 §3.2), e.g. \
                 `openssl rand -base64 {}`",
                openssl_bytes(*min)
            ),
            Self::KnownDefault => "is a published default or example value".to_owned(),
            Self::PlaceholderWord => "contains a placeholder or default word".to_owned(),
            Self::TemplateSyntax => "is an unrendered template placeholder".to_owned(),
            Self::RepeatedCharacters => "contains a run of one repeated character".to_owned(),
            Self::Sequence => "contains a run of consecutive characters".to_owned(),
            Self::KeyboardWalk => "contains a keyboard walk".to_owned(),
            Self::LowEntropy => "has too little entropy: use random bytes from a CSPRNG, e.g. \
                                 `openssl rand -base64 48`"
                .to_owned(),
            Self::Guessable { min } => format!(
                "is guessable (words, names, years, keyboard patterns, repeated blocks or too \
                 little randomness): generate {min}+ bytes with a CSPRNG, e.g. `openssl rand \
                 -base64 {}`",
                openssl_bytes(*min)
            ),
        }
    }
}

/// Random bytes to ask `openssl rand -base64` for, for a purpose needing
/// `min`: half as many again (48 for 32), so that the base64 text, read raw,
/// is 64 characters and the decoded key has room to spare.
fn openssl_bytes(min: usize) -> usize {
    min.max(32).saturating_mul(3) / 2
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

fn is_known_default(text: &str) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    SET.get_or_init(|| known_defaults().collect())
        .contains(text)
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
    "fillme",
    "generateme",
];

/// Short words that mark a placeholder only as a whole word between separators
/// (`-`, `_`, `.`, space, `/`, `:`, `+`) or the ends: between letters or digits
/// they occur by chance in about one random key in 50,000.
const WHOLE_WORDS: &[&str] = &[
    "test", "tests", "dummy", "demo", "fake", "temp", "todo", "fixme", "your", "setme",
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

/// Repeated or consecutive characters: 10 in a row (8 occur by chance in
/// about one random 256-digit hex key in two million; shorter runs are
/// priced by the guesses estimate).
const RUN: usize = 10;
/// Keyboard walks: 6 neighbouring keys, at least 3 of them letters (digit
/// runs are sequences, judged by `RUN`).
const WALK: usize = 8;
const MIN_BITS_PER_CHAR: f64 = 3.0;
const MIN_TOTAL_BITS: f64 = 100.0;

/// Every weakness of `secret` for a purpose needing `min_len` bytes; empty
/// when the secret is acceptable.
pub fn assess(secret: &[u8], min_len: usize) -> Vec<Weakness> {
    let mut found = Vec::new();
    if secret.len() < min_len {
        found.push(Weakness::TooShort { min: min_len });
    }
    let original = String::from_utf8_lossy(secret);
    let original = original.trim();
    let text = original.to_ascii_lowercase();
    if is_known_default(&text) {
        found.push(Weakness::KnownDefault);
    }
    let (anywhere, whole) = placeholder_words(original);
    if anywhere {
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
    if guessable(secret, min_len) {
        found.push(Weakness::Guessable { min: min_len });
    }
    // A short word between separators is chance in about one random key in
    // a million: it only names the cause of another weakness.
    if whole && !anywhere && !found.is_empty() {
        let at = found
            .iter()
            .position(|w| !matches!(w, Weakness::TooShort { .. } | Weakness::KnownDefault))
            .unwrap_or(found.len());
        found.insert(at, Weakness::PlaceholderWord);
    }
    found
}

/// Bits a key must be worth for each byte its purpose needs.
const BITS_PER_BYTE: f64 = 5.0;
/// A key whose patterns make it this much cheaper than as many random
/// characters (a third) is built, not drawn: CSPRNG output never comes close
/// (at most 16 % in 1,000,000 keys of each encoding). Such a key must hold
/// enough random characters besides its patterns.
const STRUCTURE: f64 = 2.0 / 3.0;

/// Whether `secret` is guessable for a purpose needing `min_len` bytes (never
/// when nothing is needed): estimated at fewer than 5 bits a needed byte, or
/// a third cheaper than as many random characters with a random part worth
/// fewer. A raw value that is valid hex or base64 is judged decoded too.
fn guessable(secret: &[u8], min_len: usize) -> bool {
    if min_len == 0 {
        return false;
    }
    let need = BITS_PER_BYTE * f64::from(u32::try_from(min_len).unwrap_or(u32::MAX));
    let weak = |bytes: &[u8]| {
        let e = estimate::estimate(bytes);
        e.bits < need || (e.bits <= STRUCTURE * e.random_key_bits && e.random_bits < need)
    };
    let text = secret.trim_ascii();
    weak(text) || decoded(text).is_some_and(|bytes| weak(&bytes))
}

/// The bytes a raw value written in hex or base64 stands for.
fn decoded(text: &[u8]) -> Option<Vec<u8>> {
    use crate::keys::{KeyEncoding, decode};
    const MIN: usize = 16;
    let text = std::str::from_utf8(text).ok().filter(|t| t.len() >= MIN)?;
    let hex = text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit());
    let encoding = if hex {
        KeyEncoding::Hex
    } else if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'='))
    {
        KeyEncoding::Base64
    } else {
        return None;
    };
    decode(text, encoding)
}

/// Whether `text` holds a placeholder word anywhere (`WORDS_ANYWHERE`), and
/// as a whole word between separators (`WHOLE_WORDS`). A word counts written
/// in one case or capitalised (`changeme`, `CHANGE_ME`, `Secret`); one of 8
/// letters or more in any case: in random keys the shorter ones turn up in
/// mixed case by chance (`SeCReT` in about one base64 key in 10 million).
fn placeholder_words(text: &str) -> (bool, bool) {
    let squeezed: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    let lower = squeezed.to_ascii_lowercase();
    // The pairs of letters in the text: a word whose first two letters are
    // not among them is not there.
    let mut pairs = [false; 26 * 26];
    for pair in lower.as_bytes().windows(2) {
        if let [a @ b'a'..=b'z', b @ b'a'..=b'z'] = *pair
            && let Some(seen) = pairs.get_mut(usize::from(a - b'a') * 26 + usize::from(b - b'a'))
        {
            *seen = true;
        }
    }
    let anywhere = WORDS_ANYWHERE.iter().any(|w| {
        let first = match *w.as_bytes() {
            [a, b, ..] => {
                usize::from(a.wrapping_sub(b'a')) * 26 + usize::from(b.wrapping_sub(b'a'))
            }
            _ => 0,
        };
        pairs.get(first).copied().unwrap_or(true)
            && lower.contains(w)
            && lower.match_indices(w).any(|(at, _)| {
                w.len() >= 8
                    || squeezed
                        .as_bytes()
                        .get(at..at + w.len())
                        .is_some_and(one_case)
            })
    });
    let whole = text
        .split(['-', '_', '.', ' ', '/', ':', '+'])
        .filter(|word| (4..=5).contains(&word.len()))
        .any(|word| {
            one_case(word.as_bytes()) && WHOLE_WORDS.contains(&word.to_ascii_lowercase().as_str())
        });
    (anywhere, whole)
}

/// Lower case, upper case, or capitalised.
fn one_case(word: &[u8]) -> bool {
    let rest = word.get(1..).unwrap_or_default();
    !rest.iter().any(u8::is_ascii_uppercase) || !word.iter().any(u8::is_ascii_lowercase)
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
    // For each pair of ASCII bytes (`a * 128 + b`), the rows in which `b`
    // follows `a` (bits 0–15) or precedes it (bits 16–31).
    static STEPS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let steps = STEPS.get_or_init(|| {
        let mut steps = vec![0u32; 128 * 128];
        for (i, row) in KEYBOARD_ROWS.iter().enumerate() {
            for pair in row.as_bytes().windows(2) {
                if let [a, b] = *pair {
                    let (a, b) = (usize::from(a), usize::from(b));
                    if let Some(s) = steps.get_mut(a * 128 + b) {
                        *s |= 1 << i;
                    }
                    if let Some(s) = steps.get_mut(b * 128 + a) {
                        *s |= 1 << (16 + i);
                    }
                }
            }
        }
        steps
    });
    let bytes = text.as_bytes();
    let step = |pair: &[u8]| match *pair {
        [a, b] if a < 128 && b < 128 => steps
            .get(usize::from(a) * 128 + usize::from(b))
            .copied()
            .unwrap_or(0),
        _ => 0,
    };
    // Rows along which the last k steps all went the same way, k = 1..WALK-1.
    let mut along = [0u32; WALK - 1];
    bytes.windows(2).enumerate().any(|(i, pair)| {
        let s = step(pair);
        for k in (1..along.len()).rev() {
            let shorter = along.get(k - 1).copied().unwrap_or(0);
            if let Some(longer) = along.get_mut(k) {
                *longer = shorter & s;
            }
        }
        if let Some(first) = along.first_mut() {
            *first = s;
        }
        along.last().is_some_and(|&m| m != 0)
            && bytes
                .get((i + 2).saturating_sub(WALK)..i + 2)
                .is_some_and(|w| w.iter().filter(|b| b.is_ascii_alphabetic()).count() >= 3)
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

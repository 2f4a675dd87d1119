//! Path rules: turn a request path into a [`SafePath`] or a typed [`PathRejection`].
//!
//! The rules are pure (no file system access) and identical on every OS, so a
//! service developed on Linux refuses exactly what it would refuse on Windows.
//! In order:
//!
//! 1. [`PathRules::parse_encoded`] percent-decodes **exactly once**; a `%` not
//!    followed by two hex digits is [`PathRejection::InvalidEncoding`], and a
//!    decoded result that still holds a `%XX` escape is
//!    [`PathRejection::DoubleEncoded`] (so no later layer can decode it into a
//!    separator). [`PathRules::parse`] takes text a framework already decoded
//!    once (axum's `Path` extractor) and applies the same rules from here on.
//! 2. The bytes must be UTF-8 ([`PathRejection::InvalidUtf8`]; overlong forms
//!    such as `%c0%ae` are not UTF-8).
//! 3. Whole-path rules: empty, too long, absolute (`/x`, `\x`), UNC and device
//!    namespace prefixes (`//`, `\\`, `\\?\`, `\\.\`, `\??\`), drive letters
//!    (`c:`), NUL and other control characters, invisible formatting characters
//!    (bidi overrides, zero-width), backslashes, `:` (alternate data streams),
//!    the characters Windows reserves (`<>"|?*`) and look-alike separators
//!    (`∕ ⁄ ⧸ ＼ ...`).
//! 4. Per component: empty (`a//b`), trailing slash (`a/`), `.` and `..`,
//!    over-long, trailing dots and spaces (Windows strips them: `a.txt.` is
//!    `a.txt`), Windows device names (`CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9`,
//!    `LPT0`-`LPT9`, with superscript digits `COM¹ COM² COM³` too, `CONIN$`,
//!    `CONOUT$`, `CLOCK$`, with any extension or trailing dots and spaces), and
//!    dotfiles (hidden unless [`PathRules::allow_dotfiles`]).
//! 5. The path is NFKC-normalised and the normalised form must pass the same
//!    rules; one that only fails after normalisation (`．．／x`, full-width
//!    solidus...) is [`PathRejection::LookalikeSeparator`]. The normalised form
//!    is what [`SafePath`] holds, so two spellings of one name are one file.
//!
//! Error messages are fixed strings: a rejection never echoes the path, so it
//! cannot inject anything into a log line or a response.
//!
//! # Example
//!
//! ```
//! use palisade_fs::path::{PathRejection, PathRules};
//!
//! let rules = PathRules::new();
//! let path = rules.parse_encoded("photos/2024/cat%20one.png").unwrap();
//! assert_eq!(path.as_str(), "photos/2024/cat one.png");
//! assert_eq!(path.extension(), Some("png"));
//!
//! assert_eq!(rules.parse_encoded("..%2fetc/passwd"), Err(PathRejection::DotSegment));
//! assert_eq!(rules.parse_encoded("%252e%252e/x"), Err(PathRejection::DoubleEncoded));
//! assert_eq!(rules.parse_encoded("c:%5cwindows"), Err(PathRejection::DriveLetter));
//! assert_eq!(rules.parse("COM\u{b9}.txt"), Err(PathRejection::DeviceName));
//! assert_eq!(rules.parse("a/b/"), Err(PathRejection::TrailingSlash));
//! assert_eq!(rules.parse(".env"), Err(PathRejection::Dotfile));
//! ```

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// The default longest component, in bytes (the common file system limit).
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 255;
/// The default longest path, in bytes.
pub const DEFAULT_MAX_PATH_BYTES: usize = 1024;
/// The default deepest path, in components.
pub const DEFAULT_MAX_DEPTH: usize = 16;

/// Names starting with this prefix are reserved for the temporary files of
/// atomic writes; no path may address them, whatever the dotfile policy.
pub(crate) const TEMP_PREFIX: &str = ".palisade-tmp-";

/// Why a path was refused. Messages are fixed strings that never echo the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PathRejection {
    /// The path is empty.
    #[error("the path is empty")]
    Empty,
    /// The path has an empty component (`a//b`).
    #[error("the path has an empty component")]
    EmptyComponent,
    /// The path ends with a separator (`a/`): a trailing slash makes the OS
    /// follow a final symbolic link, so it is never accepted.
    #[error("the path ends with a separator")]
    TrailingSlash,
    /// A `.` or `..` component.
    #[error("the path has a `.` or `..` component")]
    DotSegment,
    /// The path is absolute (`/etc`, `\windows`).
    #[error("the path is absolute")]
    Absolute,
    /// A backslash, a separator on Windows.
    #[error("the path contains a backslash")]
    Backslash,
    /// A drive letter (`c:`).
    #[error("the path starts with a drive letter")]
    DriveLetter,
    /// A UNC or device namespace prefix (`\\server`, `//server`, `\\?\`, `\\.\`).
    #[error("the path starts with a UNC or device namespace prefix")]
    UncPrefix,
    /// A NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// A control character (C0, DEL, C1).
    #[error("the path contains a control character")]
    ControlChar,
    /// An invisible formatting character (bidi override, zero-width...) or a
    /// Unicode noncharacter.
    #[error("the path contains an invisible formatting character")]
    FormatChar,
    /// A character Windows reserves in names (`<`, `>`, `"`, `|`, `?`, `*`).
    #[error("the path contains a character reserved on Windows")]
    ReservedChar,
    /// A Windows device name (`CON`, `NUL.txt`, `COM¹`, `CONIN$`...).
    #[error("the path names a Windows device")]
    DeviceName,
    /// A component ending with a dot or a space.
    #[error("a path component ends with a dot or a space")]
    TrailingDotOrSpace,
    /// A `:` (drive-relative path or NTFS alternate data stream).
    #[error("the path contains a colon")]
    Colon,
    /// A separator or dot look-alike (full-width, division slash...), before or
    /// after NFKC normalisation.
    #[error("the path contains a look-alike separator or dot")]
    LookalikeSeparator,
    /// The path or one of its components is too long.
    #[error("the path or one of its components is too long")]
    TooLong,
    /// The path has too many components.
    #[error("the path has too many components")]
    TooDeep,
    /// A component starts with `.` and dotfiles are hidden.
    #[error("the path names a hidden file")]
    Dotfile,
    /// A `%` not followed by two hex digits.
    #[error("the path has malformed percent-encoding")]
    InvalidEncoding,
    /// A `%XX` escape is left after decoding once.
    #[error("the path is percent-encoded more than once")]
    DoubleEncoded,
    /// The decoded bytes are not UTF-8 (this includes overlong encodings).
    #[error("the path is not valid UTF-8")]
    InvalidUtf8,
}

impl PathRejection {
    /// A stable, machine-readable code (`dot_segment`, `drive_letter`...).
    pub const fn code(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::EmptyComponent => "empty_component",
            Self::TrailingSlash => "trailing_slash",
            Self::DotSegment => "dot_segment",
            Self::Absolute => "absolute",
            Self::Backslash => "backslash",
            Self::DriveLetter => "drive_letter",
            Self::UncPrefix => "unc_prefix",
            Self::Nul => "nul",
            Self::ControlChar => "control_char",
            Self::FormatChar => "format_char",
            Self::ReservedChar => "reserved_char",
            Self::DeviceName => "device_name",
            Self::TrailingDotOrSpace => "trailing_dot_or_space",
            Self::Colon => "colon",
            Self::LookalikeSeparator => "lookalike_separator",
            Self::TooLong => "too_long",
            Self::TooDeep => "too_deep",
            Self::Dotfile => "dotfile",
            Self::InvalidEncoding => "invalid_encoding",
            Self::DoubleEncoded => "double_encoded",
            Self::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// A relative path that passed [`PathRules`]: NFKC-normalised, `/`-separated,
/// at least one component, no `.`/`..`/empty components, nothing Windows would
/// read differently. The only way to obtain one is through the rules (or from
/// a [`SafeRoot`](crate::SafeRoot) listing, whose names went through them too).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SafePath {
    inner: String,
}

impl SafePath {
    /// Wraps a string that already passed the rules.
    pub(crate) fn from_checked(inner: String) -> Self {
        Self { inner }
    }

    /// The path, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.inner
    }

    /// The components.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.inner.split('/')
    }

    /// The number of components.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.inner
            .rsplit_once('/')
            .map_or(self.inner.as_str(), |(_, name)| name)
    }

    /// The extension of the last component (after its last `.`), if any.
    /// `archive.tar.gz` has extension `gz`; `.env` has none.
    pub fn extension(&self) -> Option<&str> {
        let name = self.file_name();
        match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => Some(ext),
            _ => None,
        }
    }

    /// The path without its last component, or `None` for a single component.
    pub fn parent(&self) -> Option<Self> {
        self.inner
            .rsplit_once('/')
            .map(|(parent, _)| Self::from_checked(parent.to_owned()))
    }

    /// This path followed by one more component that passed the rules.
    pub(crate) fn child(&self, name: &str) -> Self {
        Self::from_checked(format!("{}/{name}", self.inner))
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Safe to print: no control or formatting characters survive the rules.
        f.write_str(&self.inner)
    }
}

impl fmt::Debug for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SafePath").field(&self.inner).finish()
    }
}

impl AsRef<str> for SafePath {
    fn as_ref(&self) -> &str {
        &self.inner
    }
}

/// The path rules. The defaults are the strict ones: dotfiles hidden, 255-byte
/// components, 1 KiB paths, 16 levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRules {
    max_component_bytes: usize,
    max_path_bytes: usize,
    max_depth: usize,
    dotfiles: bool,
}

impl Default for PathRules {
    fn default() -> Self {
        Self::new()
    }
}

impl PathRules {
    /// The strict defaults.
    pub const fn new() -> Self {
        Self {
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_path_bytes: DEFAULT_MAX_PATH_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            dotfiles: false,
        }
    }

    /// The longest component, in bytes of the normalised form.
    #[must_use]
    pub const fn max_component_bytes(mut self, bytes: usize) -> Self {
        self.max_component_bytes = bytes;
        self
    }

    /// The longest path, in bytes (checked before and after normalisation).
    #[must_use]
    pub const fn max_path_bytes(mut self, bytes: usize) -> Self {
        self.max_path_bytes = bytes;
        self
    }

    /// The deepest path, in components.
    #[must_use]
    pub const fn max_depth(mut self, components: usize) -> Self {
        self.max_depth = components;
        self
    }

    /// Accepts components starting with `.` (`.env`, `.git`): they are refused
    /// by default and left out of listings. Names reserved for temporary files
    /// stay refused.
    #[must_use]
    pub const fn allow_dotfiles(mut self) -> Self {
        self.dotfiles = true;
        self
    }

    /// Whether dotfiles are accepted.
    pub const fn dotfiles_allowed(&self) -> bool {
        self.dotfiles
    }

    /// The deepest path accepted.
    pub const fn depth_limit(&self) -> usize {
        self.max_depth
    }

    /// Percent-decodes `raw` exactly once, then applies the rules.
    pub fn parse_encoded(&self, raw: &str) -> Result<SafePath, PathRejection> {
        if raw.len() > self.max_path_bytes.saturating_mul(3) {
            return Err(PathRejection::TooLong);
        }
        check_encoding(raw.as_bytes())?;
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        self.parse_bytes(&decoded)
    }

    /// Applies the rules to bytes that were already decoded once.
    pub fn parse_bytes(&self, decoded: &[u8]) -> Result<SafePath, PathRejection> {
        let text = std::str::from_utf8(decoded).map_err(|_| PathRejection::InvalidUtf8)?;
        self.parse(text)
    }

    /// Applies the rules to text that was already decoded once (for instance
    /// by axum's `Path` extractor). It is **not** decoded again: a `%XX` left
    /// in it is [`PathRejection::DoubleEncoded`].
    pub fn parse(&self, decoded: &str) -> Result<SafePath, PathRejection> {
        self.check(decoded)?;
        // NFKC leaves ASCII unchanged: skip it for the common case.
        let normalised: String = if decoded.is_ascii() {
            decoded.to_owned()
        } else {
            decoded.nfkc().collect()
        };
        if normalised != decoded {
            self.check(&normalised).map_err(|reason| match reason {
                PathRejection::TooLong
                | PathRejection::TooDeep
                | PathRejection::DeviceName
                | PathRejection::Dotfile => reason,
                _ => PathRejection::LookalikeSeparator,
            })?;
        }
        Ok(SafePath::from_checked(normalised))
    }

    fn check(&self, path: &str) -> Result<(), PathRejection> {
        if path.is_empty() {
            return Err(PathRejection::Empty);
        }
        if path.len() > self.max_path_bytes {
            return Err(PathRejection::TooLong);
        }
        check_prefix(path)?;
        for c in path.chars() {
            check_char(c)?;
        }
        if has_escape(path.as_bytes()) {
            return Err(PathRejection::DoubleEncoded);
        }
        let mut depth = 0_usize;
        let mut components = path.split('/').peekable();
        while let Some(component) = components.next() {
            depth += 1;
            if depth > self.max_depth {
                return Err(PathRejection::TooDeep);
            }
            let last = components.peek().is_none();
            self.check_component(component, last)?;
        }
        Ok(())
    }

    fn check_component(&self, component: &str, last: bool) -> Result<(), PathRejection> {
        if component.is_empty() {
            return Err(if last {
                PathRejection::TrailingSlash
            } else {
                PathRejection::EmptyComponent
            });
        }
        if component == "." || component == ".." {
            return Err(PathRejection::DotSegment);
        }
        if component.len() > self.max_component_bytes {
            return Err(PathRejection::TooLong);
        }
        if component.ends_with(['.', ' ']) {
            return Err(PathRejection::TrailingDotOrSpace);
        }
        if is_device_name(component) {
            return Err(PathRejection::DeviceName);
        }
        if component.starts_with(TEMP_PREFIX) || (!self.dotfiles && component.starts_with('.')) {
            return Err(PathRejection::Dotfile);
        }
        Ok(())
    }
}

/// Every `%` must start a two-hex-digit escape.
fn check_encoding(raw: &[u8]) -> Result<(), PathRejection> {
    let mut rest = raw;
    while let Some(pos) = rest.iter().position(|&b| b == b'%') {
        let escape = rest
            .get(pos + 1..pos + 3)
            .ok_or(PathRejection::InvalidEncoding)?;
        if !escape.iter().all(u8::is_ascii_hexdigit) {
            return Err(PathRejection::InvalidEncoding);
        }
        rest = rest.get(pos + 3..).unwrap_or_default();
    }
    Ok(())
}

/// Whether a `%XX` escape is present.
fn has_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| matches!(w, [b'%', a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()))
}

fn check_prefix(path: &str) -> Result<(), PathRejection> {
    let bytes = path.as_bytes();
    match bytes {
        [b'/' | b'\\', b'/' | b'\\', ..] | [b'\\', b'?' | b'.', ..] => {
            Err(PathRejection::UncPrefix)
        }
        [b'/' | b'\\', ..] => Err(PathRejection::Absolute),
        [letter, b':', ..] if letter.is_ascii_alphabetic() => Err(PathRejection::DriveLetter),
        _ => Ok(()),
    }
}

fn check_char(c: char) -> Result<(), PathRejection> {
    match c {
        '\0' => Err(PathRejection::Nul),
        '\\' => Err(PathRejection::Backslash),
        ':' => Err(PathRejection::Colon),
        '<' | '>' | '"' | '|' | '?' | '*' => Err(PathRejection::ReservedChar),
        c if c.is_control() => Err(PathRejection::ControlChar),
        c if is_format_char(c) => Err(PathRejection::FormatChar),
        c if is_lookalike_separator(c) => Err(PathRejection::LookalikeSeparator),
        _ => Ok(()),
    }
}

/// Invisible characters that make a name display differently from what it
/// is, and noncharacters.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' // soft hyphen
        | '\u{034F}' // combining grapheme joiner
        | '\u{061C}' // Arabic letter mark
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{180E}' // Mongolian vowel separator
        | '\u{200B}'..='\u{200F}' // zero-width, LRM/RLM
        | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
        | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
        | '\u{FE00}'..='\u{FE0F}' // variation selectors
        | '\u{FEFF}' // byte order mark
        | '\u{FDD0}'..='\u{FDEF}' // noncharacters
        | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
        | '\u{E0000}'..='\u{E007F}' // tags
    ) || (u32::from(c) & 0xFFFE) == 0xFFFE // noncharacters U+xFFFE, U+xFFFF
}

/// Characters that look like `/` or `\` but are not (NFKC keeps most of them).
fn is_lookalike_separator(c: char) -> bool {
    matches!(
        c,
        '\u{2044}' // ⁄ fraction slash
        | '\u{2215}' // ∕ division slash
        | '\u{2216}' // ∖ set minus
        | '\u{2571}' | '\u{2572}' // ╱ ╲ box drawings
        | '\u{27CB}' | '\u{27CD}' // ⟋ ⟍ mathematical rising/falling diagonal
        | '\u{29F5}' // ⧵ reverse solidus operator
        | '\u{29F8}' | '\u{29F9}' // ⧸ ⧹ big solidus, big reverse solidus
        | '\u{FE68}' // ﹨ small reverse solidus
        | '\u{FF0F}' | '\u{FF3C}' // ／ ＼ full-width solidus and reverse solidus
        | '\u{1735}' // ᜵ Philippine single punctuation
        | '\u{2024}' | '\u{2025}' | '\u{2026}' // ․ ‥ … dot leaders
        | '\u{FE52}' | '\u{FF0E}' // ﹒ ． small and full-width full stop
    )
}

/// Windows device names, matched the way Windows matches them: on the part
/// before the first dot, ignoring case and trailing spaces and dots, with the
/// superscript digits `¹²³` counted as digits (RUSTSEC-2024-0445).
fn is_device_name(component: &str) -> bool {
    let stem = component
        .split_once('.')
        .map_or(component, |(stem, _)| stem)
        .trim_end_matches([' ', '.']);
    // The longest device name, `CONOUT$`, is 7 bytes.
    if stem.len() > 7 {
        return false;
    }
    let mut chars = stem.chars();
    let prefix: String = chars
        .by_ref()
        .take(3)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let rest: String = chars.map(|c| c.to_ascii_uppercase()).collect();
    match (prefix.as_str(), rest.as_str()) {
        ("CON" | "PRN" | "AUX" | "NUL", "") | ("CON", "IN$" | "OUT$") | ("CLO", "CK$") => true,
        ("COM" | "LPT", digit) => {
            let mut digits = digit.chars();
            matches!(
                (digits.next(), digits.next()),
                (Some('0'..='9' | '\u{B9}' | '\u{B2}' | '\u{B3}'), None)
            )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(input: &str) -> PathRejection {
        PathRules::new().parse(input).unwrap_err()
    }

    #[test]
    fn accepts_ordinary_paths() {
        let rules = PathRules::new();
        for ok in [
            "a",
            "a/b/c.txt",
            "Übersicht.pdf",
            "日本語/ファイル.png",
            "100%.txt",
            "a b/c d",
            "com10",
            "console.log",
            "CONNECT.txt",
            "lpt",
            "nul_thing",
            "a.b.c",
        ] {
            assert!(rules.parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn each_reason() {
        assert_eq!(rejects(""), PathRejection::Empty);
        assert_eq!(rejects("a//b"), PathRejection::EmptyComponent);
        assert_eq!(rejects("a/"), PathRejection::TrailingSlash);
        assert_eq!(rejects(".."), PathRejection::DotSegment);
        assert_eq!(rejects("a/./b"), PathRejection::DotSegment);
        assert_eq!(rejects("/etc/passwd"), PathRejection::Absolute);
        assert_eq!(rejects("\\windows"), PathRejection::Absolute);
        assert_eq!(rejects("a\\b"), PathRejection::Backslash);
        assert_eq!(rejects("c:/x"), PathRejection::DriveLetter);
        assert_eq!(rejects("C:x"), PathRejection::DriveLetter);
        assert_eq!(rejects("\\\\?\\C:\\x"), PathRejection::UncPrefix);
        assert_eq!(rejects("\\\\.\\pipe\\x"), PathRejection::UncPrefix);
        assert_eq!(rejects("//server/share"), PathRejection::UncPrefix);
        assert_eq!(rejects("\\??\\C:\\x"), PathRejection::UncPrefix);
        assert_eq!(rejects("a\0b"), PathRejection::Nul);
        assert_eq!(rejects("a\nb"), PathRejection::ControlChar);
        assert_eq!(rejects("a\u{85}b"), PathRejection::ControlChar);
        assert_eq!(rejects("a\u{202E}gnp.exe"), PathRejection::FormatChar);
        assert_eq!(rejects("a\u{200B}b"), PathRejection::FormatChar);
        assert_eq!(rejects("a?b"), PathRejection::ReservedChar);
        assert_eq!(rejects("a|b"), PathRejection::ReservedChar);
        assert_eq!(rejects("CON"), PathRejection::DeviceName);
        assert_eq!(rejects("x/nul.tar.gz"), PathRejection::DeviceName);
        assert_eq!(rejects("Com1 .txt"), PathRejection::DeviceName);
        assert_eq!(rejects("conin$"), PathRejection::DeviceName);
        assert_eq!(rejects("CONOUT$.x"), PathRejection::DeviceName);
        assert_eq!(rejects("lpt\u{b2}"), PathRejection::DeviceName);
        assert_eq!(rejects("a."), PathRejection::TrailingDotOrSpace);
        assert_eq!(rejects("a "), PathRejection::TrailingDotOrSpace);
        assert_eq!(rejects("..."), PathRejection::TrailingDotOrSpace);
        assert_eq!(rejects("a:b"), PathRejection::DriveLetter);
        assert_eq!(rejects("ab:c"), PathRejection::Colon);
        assert_eq!(rejects("file.txt::$DATA"), PathRejection::Colon);
        assert_eq!(rejects("a\u{2215}b"), PathRejection::LookalikeSeparator);
        assert_eq!(rejects("a\u{FF0F}b"), PathRejection::LookalikeSeparator);
        assert_eq!(
            rejects("\u{FF0E}\u{FF0E}"),
            PathRejection::LookalikeSeparator
        );
        assert_eq!(rejects(&"a".repeat(256)), PathRejection::TooLong);
        assert_eq!(rejects(&"a/".repeat(600)), PathRejection::TooLong);
        assert_eq!(rejects(&["a"; 17].join("/")), PathRejection::TooDeep);
        assert_eq!(rejects(".git/config"), PathRejection::Dotfile);
        assert_eq!(rejects("%2e%2e"), PathRejection::DoubleEncoded);
    }

    #[test]
    fn lookalikes_that_only_appear_after_nfkc() {
        // U+FE30 PRESENTATION FORM FOR VERTICAL TWO DOT LEADER → "..", and
        // U+FE55 SMALL COLON → ":".
        assert_eq!(rejects("\u{FE30}"), PathRejection::LookalikeSeparator);
        assert_eq!(rejects("a\u{FE55}b"), PathRejection::LookalikeSeparator);
        // Superscript device names keep their own reason.
        assert_eq!(rejects("COM\u{B3}"), PathRejection::DeviceName);
        // A ligature is just normalised.
        assert_eq!(
            PathRules::new().parse("\u{FB01}le").unwrap().as_str(),
            "file"
        );
    }

    #[test]
    fn encoding_rules() {
        let rules = PathRules::new();
        assert_eq!(
            rules.parse_encoded("a%2").unwrap_err(),
            PathRejection::InvalidEncoding
        );
        assert_eq!(
            rules.parse_encoded("a%zz").unwrap_err(),
            PathRejection::InvalidEncoding
        );
        assert_eq!(
            rules.parse_encoded("%c0%ae%c0%ae").unwrap_err(),
            PathRejection::InvalidUtf8
        );
        assert_eq!(rules.parse_encoded("%00").unwrap_err(), PathRejection::Nul);
        assert_eq!(
            rules.parse_encoded("100%25.txt").unwrap().as_str(),
            "100%.txt"
        );
        assert_eq!(
            rules.parse_encoded("a%252fb").unwrap_err(),
            PathRejection::DoubleEncoded
        );
    }

    #[test]
    fn dotfile_policy() {
        let rules = PathRules::new().allow_dotfiles();
        assert!(rules.parse(".env").is_ok());
        assert_eq!(
            rules.parse(".palisade-tmp-1234").unwrap_err(),
            PathRejection::Dotfile
        );
        assert_eq!(rules.parse("..").unwrap_err(), PathRejection::DotSegment);
    }

    #[test]
    fn safe_path_accessors() {
        let path = PathRules::new().parse("a/b/archive.tar.gz").unwrap();
        assert_eq!(path.file_name(), "archive.tar.gz");
        assert_eq!(path.extension(), Some("gz"));
        assert_eq!(path.parent().unwrap().as_str(), "a/b");
        assert_eq!(path.depth(), 3);
        assert_eq!(
            path.components().collect::<Vec<_>>(),
            ["a", "b", "archive.tar.gz"]
        );
        let single = PathRules::new().parse("README").unwrap();
        assert!(single.parent().is_none());
        assert_eq!(single.extension(), None);
        assert_eq!(single.to_string(), "README");
    }

    #[test]
    fn codes_are_distinct() {
        use std::collections::HashSet;
        let all = [
            PathRejection::Empty,
            PathRejection::EmptyComponent,
            PathRejection::TrailingSlash,
            PathRejection::DotSegment,
            PathRejection::Absolute,
            PathRejection::Backslash,
            PathRejection::DriveLetter,
            PathRejection::UncPrefix,
            PathRejection::Nul,
            PathRejection::ControlChar,
            PathRejection::FormatChar,
            PathRejection::ReservedChar,
            PathRejection::DeviceName,
            PathRejection::TrailingDotOrSpace,
            PathRejection::Colon,
            PathRejection::LookalikeSeparator,
            PathRejection::TooLong,
            PathRejection::TooDeep,
            PathRejection::Dotfile,
            PathRejection::InvalidEncoding,
            PathRejection::DoubleEncoded,
            PathRejection::InvalidUtf8,
        ];
        let codes: HashSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}

//! One normalisation of login identifiers (email addresses, user names), used
//! everywhere an account is named: the login flow, the lockout keys, the
//! rate-limit keys and the user store.
//!
//! Two spellings of one account must be one account everywhere, or an
//! attacker gets a fresh lockout counter per spelling (`Bob@example.com`,
//! `bob@example.com `, `ｂｏｂ@example.com`) while the user store finds the
//! same row. [`normalize_identifier`] trims white space, applies Unicode NFKC
//! (full-width and compatibility forms become their plain forms) and
//! lower-cases, and is idempotent.
//!
//! # Example
//!
//! ```
//! use palisade_core::identifier::normalize_identifier;
//!
//! assert_eq!(normalize_identifier("  Bob@Example.COM "), "bob@example.com");
//! // Full-width letters are the same account.
//! assert_eq!(normalize_identifier("ＢＯＢ@example.com"), "bob@example.com");
//! let once = normalize_identifier("Ǆemal@ﬁrm.example");
//! assert_eq!(normalize_identifier(&once), once);
//! ```

use unicode_normalization::UnicodeNormalization;

/// Trims, applies NFKC and lower-cases: the one form of an identifier that
/// stores, keys and comparisons use. Idempotent.
pub fn normalize_identifier(value: &str) -> String {
    // NFKC before lower-casing (compatibility forms such as `Ⅻ` lower-case
    // only once decomposed) and after it (lower-casing can leave a string
    // that is not in NFKC); then trim, since NFKC can turn a compatibility
    // space into a plain one.
    let folded: String = value.nfkc().collect::<String>().to_lowercase();
    let folded: String = folded.nfkc().collect();
    folded.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spellings_of_one_account_are_one_account() {
        for spelling in [
            "bob@example.com",
            "Bob@Example.com",
            " bob@example.com\t",
            "ＢＯＢ@ｅｘａｍｐｌｅ.ｃｏｍ",
            "\u{3000}bob@example.com",
        ] {
            assert_eq!(
                normalize_identifier(spelling),
                "bob@example.com",
                "{spelling:?}"
            );
        }
        assert_ne!(normalize_identifier("bob@example.org"), "bob@example.com");
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(s in "\\PC{0,40}") {
            let once = normalize_identifier(&s);
            prop_assert_eq!(normalize_identifier(&once), once);
        }

        #[test]
        fn case_and_width_never_split_an_account(s in "[a-zA-Z0-9@._-]{1,30}") {
            let wide: String = s.chars().map(|c| match c {
                '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
                other => other,
            }).collect();
            prop_assert_eq!(normalize_identifier(&wide), normalize_identifier(&s.to_uppercase()));
        }
    }
}

use super::*;
use base64::Engine as _;
use proptest::prelude::*;

/// Placeholders and weak values that are not verbatim in the bundled list:
/// the rules must catch them.
const RULE_CASES: &[&str] = &[
    "change-in-production-please-do-it-now-0000",
    "please-change-me-before-deploying-this-app",
    "replace-with-a-long-random-value-in-prod!",
    "${JWT_SECRET}",
    "{{ jwt_secret }}",
    "${JWT_SIGNING_SECRET_FOR_THE_PRODUCTION_CLUSTER}",
    "<insert-your-secret-here>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "abcdefghijklmnopqrstuvwxyz0123456789ABCD",
    "qwertyuiopasdfghjklzxcvbnm1234567890QWER",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p1qaz",
    "this-is-a-very-long-sample-key-for-ci-only",
    "my-app-dummy-key-32-bytes-long-padding-xx",
    "0000000000000000000000000000000000000000",
    "ThisIsMyExampleKeyForTheDemoApp1234567890",
    "testtesttesttesttesttesttesttesttesttest",
    "98765432109876543210987654321098765432109",
    "abababababababababababababababababababab",
    "my-jwt-password-for-the-api-server-2024!!",
    "default-key-do-not-use-in-production-1234",
    "insecure-dev-key-0f3a9c2b7d1e4f5a6b8c9d0e",
    "test_jwt_key_f3a9c2b7d1e4f5a6b8c9d0e1f2a3",
    "short",
];

#[test]
fn every_published_default_is_refused() {
    let defaults: Vec<&str> = known_defaults().collect();
    assert!(defaults.len() >= 40, "{} defaults bundled", defaults.len());
    for d in defaults {
        let found = assess(d.as_bytes(), 32);
        assert!(found.contains(&Weakness::KnownDefault), "{d}: {found:?}");
        // Upper-case and padded copies are still known.
        let shouted = format!("  {}\n", d.to_ascii_uppercase());
        assert!(
            assess(shouted.as_bytes(), 32).contains(&Weakness::KnownDefault),
            "{d}"
        );
    }
}

#[test]
fn placeholder_rules_refuse_what_the_list_does_not_hold() {
    for case in RULE_CASES {
        let found = assess(case.as_bytes(), 32);
        assert!(!found.is_empty(), "{case} was accepted");
    }
    let word = |s: &str| assess(s.as_bytes(), 0).contains(&Weakness::PlaceholderWord);
    assert!(word("Kq8w-CHANGE_ME-Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7"));
    assert!(word("n4Bm6Yt8Hs1Jd3Fg7/test/Kq8wZr5v0Lp2X"));
    // A short word among letters or digits is chance, not a placeholder.
    assert!(!word("n4Bm6Yt8Hs1JdattestedFg7Kq8wZr5v0Lp2X"));
    assert!(!word("n4Bm6Yt8Hs1Jd3test7Fg7Kq8wZr5v0Lp2X"));
    let template = |s: &str| assess(s.as_bytes(), 0).contains(&Weakness::TemplateSyntax);
    for t in [
        "${APP_SECRET}",
        "$APP_SECRET",
        "{{ .Values.jwt.secret }}",
        "%JWT_SECRET%",
        "<paste the key here>",
    ] {
        assert!(template(t), "{t}");
    }
    assert!(
        !template("k<9x${Qab}>zz"),
        "templates inside a value are chance"
    );
}

#[test]
fn each_rule_fires_alone() {
    let cases: &[(&str, Weakness)] = &[
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wAAAAAAAAp3Xw",
            Weakness::RepeatedCharacters,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wlmnopqrsp3Xw",
            Weakness::Sequence,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wasdfghp3Xw",
            Weakness::KeyboardWalk,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wytrewqp3Xw",
            Weakness::KeyboardWalk,
        ),
    ];
    for (case, weakness) in cases {
        assert_eq!(
            assess(case.as_bytes(), 32),
            vec![weakness.clone()],
            "{case}"
        );
    }
    // Chance-length runs in a hex key are not weaknesses.
    assert_eq!(
        assess(
            b"3f9a0c7e51b2d8e4a6f1c3b5d7e9f0a2c4e6b8d0f1a3c5e7b9d2123456aaaaaa",
            32
        ),
        vec![]
    );
    assert_eq!(
        assess(b"Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3F", 32),
        vec![Weakness::TooShort { min: 32 }]
    );
}

#[test]
fn rules_are_fixed_texts_independent_of_the_secret() {
    let every_rule: Vec<String> = [
        Weakness::TooShort { min: 32 },
        Weakness::KnownDefault,
        Weakness::PlaceholderWord,
        Weakness::TemplateSyntax,
        Weakness::RepeatedCharacters,
        Weakness::Sequence,
        Weakness::KeyboardWalk,
        Weakness::LowEntropy,
    ]
    .iter()
    .map(Weakness::rule)
    .collect();
    for case in RULE_CASES {
        for w in assess(case.as_bytes(), 32) {
            assert!(every_rule.contains(&w.rule()), "{w:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn random_base64_keys_pass(bytes in proptest::collection::vec(any::<u8>(), 32..96)) {
        let std = base64::engine::general_purpose::STANDARD.encode(&bytes);
        prop_assert_eq!(assess(std.as_bytes(), 32), vec![], "{}", std);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert_eq!(assess(url.as_bytes(), 32), vec![], "{}", url);
    }

    #[test]
    fn random_hex_keys_pass(bytes in proptest::collection::vec(any::<u8>(), 32..96)) {
        let hex: String = bytes.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        prop_assert_eq!(assess(hex.as_bytes(), 32), vec![], "{}", hex);
    }

    #[test]
    fn random_printable_keys_pass(key in "[!-~]{32,96}") {
        prop_assert_eq!(assess(key.as_bytes(), 32), vec![], "{}", key);
    }

    #[test]
    fn random_raw_keys_pass(bytes in proptest::collection::vec(any::<u8>(), 32..96)) {
        prop_assert_eq!(assess(&bytes, 32), vec![]);
    }

    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = assess(&bytes, 64);
    }
}

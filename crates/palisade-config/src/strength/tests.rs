use super::*;
use base64::Engine as _;
use proptest::prelude::*;

/// Guessable keys, each at least 32 bytes, that an attacker cracks offline
/// from one issued token: every one must be refused for an HS256 key.
const GUESSABLE: &[(&str, &[&str])] = &[
    (
        "a random-looking block repeated",
        &[
            "Xk9#mQ2$pXk9#mQ2$pXk9#mQ2$pXk9#mQ2$p",
            "7Rt!zW4qL7Rt!zW4qL7Rt!zW4qL7Rt!zW4qL",
            "hN3vB8sKd-hN3vB8sKd-hN3vB8sKd-hN3vB8sKd",
            "q8Lw2vZ7xT4nB9cR1mK6pH3sq8Lw2vZ7xT4nB9cR1mK6pH3s",
        ],
    ),
    (
        "a block repeated with another separator or case",
        &[
            "Gq7Tz2Wm9-Gq7Tz2Wm9_GQ7TZ2WM9.gq7tz2wm9",
            "pL4xR8nQ2vpL4xR8nQ2vPL4XR8NQ2Vpl4xr8nq2v",
            "k3Y9-mZ2q.W8vR k3Y9_mZ2q,W8vR K3Y9+MZ2Q/W8VR",
        ],
    ),
    (
        "common English words with spaces",
        &[
            "beautiful mountain summer holiday",
            "orange umbrella sunday breakfast",
            "elephant keyboard sunshine tomorrow",
            "Purple Monkey Dishwasher Elephant",
        ],
    ),
    (
        "a company name, a year and prod",
        &[
            "microsoft-azure-platform-2024-prod",
            "acme-corporation-holdings-2023-prod",
            "globex-corporation-2024-prod-jwt",
            "oracle_financial_services_2019_prod",
        ],
    ),
    (
        "a capitalised name, a year and ! written twice",
        &[
            "Christopher1985!Christopher1985!",
            "Bartholomew1975!Bartholomew1975!",
            "Christiansen2003!Christiansen2003!",
            "Montgomery-1968!Montgomery-1968!",
        ],
    ),
    (
        "words in leetspeak",
        &[
            "3l3ph4nt-k3yb04rd-5un5h1n3-t0m0rr0w",
            "c0rr3ct h0rs3 b4tt3ry st4pl3 n0w!",
            "M0unt41nSumm3rH0l1d4y0r4ng3Umbr3ll4",
        ],
    ),
    (
        "keyboard walks",
        &[
            "!QAZ@WSX#EDC$RFV%TGB^YHN&UJM*IK<",
            "zaq1xsw2cde3vfr4bgt5nhy6mju7,ki8",
            "mju7nhy6bgt5vfr4cde3xsw2zaq1MJU&NHY^",
            "qwertyuiop[]asdfghjkl;'zxcvbnm,./",
        ],
    ),
    (
        "a sentence",
        &[
            "the quick brown fox jumps over the lazy dog",
            "we will deploy the new service to the cluster tomorrow morning",
            "I love my dog and my cat very much, honestly.",
        ],
    ),
    (
        "base64 of a short word repeated",
        &[
            "aGVsbG9oZWxsb2hlbGxvaGVsbG9oZWxsb2hlbGxvaGVsbG9oZWxsb2hlbGxvaGVsbG8=",
            "d2VsY29tZXdlbGNvbWV3ZWxjb21ld2VsY29tZXdlbGNvbWV3ZWxjb21ld2VsY29tZXdlbGNvbWU=",
            "YWRtaW5hZG1pbmFkbWluYWRtaW5hZG1pbmFkbWluYWRtaW5hZG1pbmFkbWlu",
        ],
    ),
    (
        "hex of repeated bytes",
        &[
            "deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
            "13371337133713371337133713371337133713371337133713371337133713371337",
            "616263616263616263616263616263616263616263616263616263616263616263",
        ],
    ),
    (
        "a label around too few random bytes",
        &[
            "prod-jwt-5473f1997beeb2173e80d100536f996b",
            "Zr5v0Lp2Xn4Bm6Yt-production-2024-jwt-signing",
        ],
    ),
];

/// CSPRNG output (`openssl rand`) in the encodings operators paste.
const CSPRNG: &[&str] = &[
    "JG7/LlDztFtU01P2OvByvTClyYWf5s8GPm5w6r52Nz8=",
    "nr1kQgPGv+Q219ELy97hkYVOvvoB+vfeuiFexDgaw+q4QrF/COsfaOsYJKNPsXeJ",
    "k6RQ6MlNtysyLPvflcAUOE6lUN/9SfiSer4whs4z8gIrxXQpbOXFIG/09Kbks1KfeEP7SnjuUUP1BVBoC//u3A==",
    "7YZReZLUQBU44Hcmj4mWXKuA6V0z5oDAY8guvPce5zYIuu9UwVetitL3hLxg8UH9EJ+w23eIQLea4N38Zi6StVFkNmCmvZc6vGVJXG0k/HtFFRmUY9UYFB1PPPLaF9w9",
    "NSUkJSWOa+S8ixlkDvw8HgcHyPuY/N4fhqJnr3MaqMZ3GBRNeUFYsDt/9Rk/Nq7rEOTAX0ZJ3z3N2/nD5+Ta+Q8kpvvK8gt6Edk0Shm4CxNBEJSAGT6C6C2jftOmKdKpObqF8sYSRpiHi4MjaKc8bUoL4pPRbr4uvlY57St+rko=",
    "HLYd7b_AfdlvPdXyL0tV3nPxrFNyq9luVW7X5sqaQbQ=",
    "sU889zEKgIib_IAJtkCfMPUzTJLCB17JKzNsmSfhX44aGAvHycK0kQtp1XmIAT7JxAnAstu_F0WgOqc5yTLhIA==",
    "5473f1997beeb2173e80d100536f996b11109f6fcca426578136bc6328feba65",
    "2c2277f743de5715e25fa0130116b9d89e47d6b8dee37dd58cc0625016b021f6e04e465ad6a3cd5baa3d09ad620a17d977cf643da0b99b5cb6d7e0969d609962",
    "c046a616e88e0846b96498dd0af4731f0d68ef1632161353cd9c9b7576c7de8b65a230b0455a0a2b9454d49cdae7de90fe3b97265969c84b184662dfbec883d1709362bb5ce90f54e16d977572f851e62ba34e03cafcdd19b97216571320045f70020f0002052cd216d5902b1efe7b44c61ee31ba423449e19f5366f2f7f35e4",
    // Hand-typed test keys of the workspace: as random as CSPRNG output.
    "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8",
    "q8Lw2vZ7xT4nB9cR1mK6pH3sD0fG5jYuE8aN2oW7iVb",
    "Qm9Xc2Vy7dLk3pT8vZ1nR4wY6hF0aJ2sG5bN8cE3",
    "N2Xc8q0p3XbH6Zp2vq1Y9sRkLmT4uWe7aB5dF0gJ8hKs",
    // A label in front of a full-length random key is fine.
    "prod-jwt-k6RQ6MlNtysyLPvflcAUOE6lUN/9SfiSer4whs4z8gI=",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The encodings of random bytes an operator may paste as a key.
fn encodings(bytes: &[u8]) -> [String; 3] {
    [
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        hex(bytes),
    ]
}

#[test]
fn guessable_keys_are_refused() {
    let mut accepted = Vec::new();
    for (class, keys) in GUESSABLE {
        for key in *keys {
            assert!(key.len() >= 32, "{class}: {key} is short");
            let found = assess(key.as_bytes(), 32);
            if !found.contains(&Weakness::Guessable { min: 32 }) {
                accepted.push(format!("{class}: {key} {found:?}"));
            }
        }
    }
    assert!(accepted.is_empty(), "accepted:\n{}", accepted.join("\n"));
}

#[test]
fn csprng_output_is_accepted_in_every_encoding() {
    for key in CSPRNG {
        assert_eq!(assess(key.as_bytes(), 32), vec![], "{key}");
    }
    for len in [32, 33, 40, 48, 64, 96, 128] {
        for _ in 0..50 {
            let mut bytes = vec![0u8; len];
            getrandom::fill(&mut bytes).unwrap();
            assert_eq!(assess(&bytes, 32), vec![], "{bytes:?}");
            for text in encodings(&bytes) {
                assert_eq!(assess(text.as_bytes(), 32), vec![], "{text}");
            }
        }
    }
}

#[test]
fn longer_keys_need_more_randomness() {
    // 5 bits a needed byte: 160 for HS256, 240 for HS384, 320 for HS512.
    // 32 random bytes in hex (256 bits) are enough for HS256, not HS512;
    // 64 random bytes in hex are enough for HS512.
    let key = CSPRNG[7];
    assert!(assess(key.as_bytes(), 32).is_empty());
    assert_eq!(
        assess(key.as_bytes(), 64),
        vec![Weakness::Guessable { min: 64 }]
    );
    assert!(assess(CSPRNG[8].as_bytes(), 64).is_empty());
    // Nothing to require, nothing estimated (the text of an encoded key).
    assert!(assess(b"Christopher1985!Christopher1985!", 0).is_empty());
}

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
    // The count SECURITY.md states: a line lost or added changes it.
    assert_eq!(defaults.len(), 53, "{} defaults bundled", defaults.len());
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
    let word = |s: &str| assess(s.as_bytes(), 32).contains(&Weakness::PlaceholderWord);
    assert!(word("Kq8w-CHANGE_ME-Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7"));
    assert!(word("Kq8w-ChangeMe-Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7"));
    assert!(word("Kq8w-my-Secret-Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7"));
    // A short word between separators names the cause of another weakness.
    assert!(word("n4Bm6Yt8Hs1Jd3Fg7/test/Kq8wZ"));
    assert_eq!(
        assess(b"my-test-key-2024-prod-jwt-signing", 32),
        vec![Weakness::PlaceholderWord, Weakness::Guessable { min: 32 }]
    );
    // Chance, not placeholders: a short word among letters or digits, in
    // mixed case, or between separators of an otherwise random key.
    assert!(!word("n4Bm6Yt8Hs1JdattestedFg7Kq8wZr5v0Lp2X"));
    assert!(!word("n4Bm6Yt8Hs1Jd3test7Fg7Kq8wZr5v0Lp2X"));
    assert!(!word("n4Bm6Yt8Hs1Jd3SeCReT7Fg7Kq8wZr5v0Lp2X"));
    assert!(!word("n4Bm6Yt8Hs1Jd3Fg7/test/Kq8wZr5v0Lp2XmW3sQe9R"));
    assert!(!word(
        "faKe-MysPtSQdnw5HXghNDJyOqu4Mf0utmSI3CD9UrQD-_rb6rMfgcIg"
    ));
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
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wAAAAAAAAAAp3Xw",
            Weakness::RepeatedCharacters,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wlmnopqrstup3Xw",
            Weakness::Sequence,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wasdfghjkp3Xw",
            Weakness::KeyboardWalk,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq8wiuytrewqp3Xw",
            Weakness::KeyboardWalk,
        ),
        (
            "Zr5v0Lp2Xn4Bm6Yt-production-2024-jwt-signing",
            Weakness::Guessable { min: 32 },
        ),
        // Long enough, no default, word, run or walk, and not guessable,
        // but drawn from six symbols: at most 2.6 bits a character.
        (
            "K7q777q227qXKqKXKz7qqXK72z27zq2Kq2z7Kz27KKK2zXKKqKX2Kq2KzKKKzXXX",
            Weakness::LowEntropy,
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
        assess(b"Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7K", 32),
        vec![Weakness::TooShort { min: 32 }]
    );
    // Short and too little randomness: both said.
    assert_eq!(
        assess(b"Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3F", 32),
        vec![
            Weakness::TooShort { min: 32 },
            Weakness::Guessable { min: 32 }
        ]
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
        Weakness::Guessable { min: 32 },
    ]
    .iter()
    .map(Weakness::rule)
    .collect();
    let guessable = GUESSABLE.iter().flat_map(|(_, keys)| keys.iter());
    for case in RULE_CASES.iter().chain(guessable) {
        for w in assess(case.as_bytes(), 32) {
            assert!(every_rule.contains(&w.rule()), "{w:?}");
        }
    }
    let rule = Weakness::Guessable { min: 32 }.rule();
    assert!(
        rule.contains("CSPRNG") && rule.contains("`openssl rand -base64 48`"),
        "{rule}"
    );
    assert!(
        Weakness::Guessable { min: 64 }
            .rule()
            .contains("-base64 96`")
    );
    assert!(Weakness::TooShort { min: 32 }.rule().contains("CSPRNG"));
}

/// No false refusal: `KEYS` keys of 32 to 128 bytes from the operating
/// system's CSPRNG, written with `encode`, are all accepted for HS256.
fn no_false_refusal(encode: fn(&[u8]) -> Vec<u8>) {
    const KEYS: usize = 50_000;
    let mut pool = vec![0u8; 128 * 1024];
    let mut refused = Vec::new();
    for i in 0..KEYS {
        if i % 1024 == 0 {
            getrandom::fill(&mut pool).unwrap();
        }
        let len = 32 + i % 97;
        let at = (i % 1024) * 128;
        let key = encode(&pool[at..at + len]);
        let found = assess(&key, 32);
        if !found.is_empty() {
            refused.push(format!("{:?}: {found:?}", String::from_utf8_lossy(&key)));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

#[test]
fn csprng_base64_keys_pass() {
    no_false_refusal(|b| {
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes()
    });
}

#[test]
fn csprng_base64url_keys_pass() {
    no_false_refusal(|b| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(b)
            .into_bytes()
    });
}

#[test]
fn csprng_hex_keys_pass() {
    no_false_refusal(|b| hex(b).into_bytes());
}

/// Printable ASCII, `!` to `~` (one random byte a character, modulo 94).
#[test]
fn csprng_printable_keys_pass() {
    no_false_refusal(|b| b.iter().map(|x| b'!' + x % 94).collect());
}

#[test]
fn csprng_raw_keys_pass() {
    no_false_refusal(<[u8]>::to_vec);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn random_printable_keys_pass(key in "[!-~]{32,128}") {
        prop_assert_eq!(assess(key.as_bytes(), 32), vec![], "{}", key);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = assess(&bytes, 64);
    }
}

/// Refusals among `N` (default 100,000) CSPRNG keys per encoding, and the
/// closest calls: `N=1000000 cargo test --release -p palisade-config --lib --
/// --ignored calibrate --nocapture`.
#[test]
#[ignore = "a measurement, run in release"]
fn calibrate() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let fixed: Option<usize> = std::env::var("LEN").ok().and_then(|v| v.parse().ok());
    let printable =
        |bytes: &[u8]| -> String { bytes.iter().map(|b| char::from(b'!' + b % 94)).collect() };
    for (name, make) in [
        (
            "base64",
            (|b: &[u8]| {
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .into_bytes()
            }) as fn(&[u8]) -> Vec<u8>,
        ),
        ("base64url", |b: &[u8]| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(b)
                .into_bytes()
        }),
        ("hex", |b: &[u8]| hex(b).into_bytes()),
        ("printable", |b: &[u8]| {
            b.iter().map(|x| b'!' + x % 94).collect()
        }),
        ("raw", |b: &[u8]| b.to_vec()),
    ] {
        let _ = printable;
        let mut refused = 0;
        let mut worst: Vec<(f64, f64, f64, String)> = Vec::new();
        let mut saved = 0f64;
        let mut above = [0usize; 4];
        let mut ratio = 0f64;
        for i in 0..n {
            let len = fixed.unwrap_or(32 + i % 97);
            let mut bytes = vec![0u8; len];
            getrandom::fill(&mut bytes).unwrap();
            let key = make(&bytes);
            let e = estimate::estimate(&key);
            let found = assess(&key, 32);
            if !found.is_empty() {
                refused += 1;
                if refused <= 5 {
                    println!(
                        "  refused {:?}: {found:?} {e:?}",
                        String::from_utf8_lossy(&key)
                    );
                }
            }
            let margin = e.bits - 160.0;
            saved = saved.max(e.random_key_bits - e.bits);
            for (k, t) in [20.0, 25.0, 30.0, 35.0].iter().enumerate() {
                if e.random_key_bits - e.bits >= *t {
                    above[k] += 1;
                }
            }
            ratio = ratio.max(1.0 - e.bits / e.random_key_bits);
            worst.push((
                margin,
                e.random_bits,
                e.random_key_bits - e.bits,
                String::from_utf8_lossy(&key).into_owned(),
            ));
            if worst.len() > 1000 {
                worst.sort_by(|a, b| a.0.total_cmp(&b.0));
                worst.truncate(5);
            }
        }
        worst.sort_by(|a, b| a.0.total_cmp(&b.0));
        worst.truncate(3);
        for (class, keys) in GUESSABLE {
            for key in *keys {
                let e = estimate::estimate(key.as_bytes());
                if name == "raw" {
                    println!(
                        "  {class}: {key} bits {:.0} random {:.0} saved {:.0} ({:.2})",
                        e.bits,
                        e.random_bits,
                        e.random_key_bits - e.bits,
                        1.0 - e.bits / e.random_key_bits
                    );
                }
            }
        }
        println!(
            "{name}: {refused} of {n} refused; most saved {saved:.1} bits, {ratio:.3}, saved 20/25/30/35+ bits: {above:?}; closest: {worst:?}"
        );
    }
}

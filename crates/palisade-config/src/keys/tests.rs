use super::*;

const STRONG_B64_32: &str = "rvzwooxMldAmmWb1ekYsvc2PMiDFNNd0seY78vWiAy4=";

#[test]
fn lengths_follow_rfc_7518() {
    let raw = |n: usize| -> String {
        // A strong-looking key of exactly n bytes.
        let pool = "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8Sd0Gh3Jk5Lz7Xc9VbNmQwEr";
        pool.chars().cycle().take(n).collect()
    };
    for (alg, min) in [
        (HmacAlgorithm::Hs256, 32),
        (HmacAlgorithm::Hs384, 48),
        (HmacAlgorithm::Hs512, 64),
    ] {
        assert!(
            HmacKey::parse(&raw(min), alg, KeyEncoding::Raw).is_ok(),
            "{alg:?}"
        );
        let err = HmacKey::parse(&raw(min - 1), alg, KeyEncoding::Raw).unwrap_err();
        assert_eq!(
            err,
            KeyError::Weak(vec![Weakness::TooShort { min }]),
            "{alg:?}"
        );
    }
}

#[test]
fn encoded_keys_are_measured_decoded() {
    // 44 characters of base64, but 32 bytes: enough for HS256, not for HS384.
    let key = HmacKey::parse(STRONG_B64_32, HmacAlgorithm::Hs256, KeyEncoding::Base64).unwrap();
    assert_eq!(key.bytes().len(), 32);
    let err = HmacKey::parse(STRONG_B64_32, HmacAlgorithm::Hs384, KeyEncoding::Base64).unwrap_err();
    assert!(matches!(err, KeyError::Weak(ref w) if w.contains(&Weakness::TooShort { min: 48 })));
    // The same text taken raw is 44 bytes.
    assert_eq!(
        HmacKey::parse(STRONG_B64_32, HmacAlgorithm::Hs256, KeyEncoding::Raw)
            .unwrap()
            .bytes()
            .len(),
        44
    );
    let hex = "3f9a0c7e51b2d8e4a6f1c3b5d7e9f0a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3";
    assert_eq!(
        HmacKey::parse(hex, HmacAlgorithm::Hs256, KeyEncoding::Hex)
            .unwrap()
            .bytes()
            .len(),
        32
    );
    // Whitespace and a trailing newline (from a file) are ignored.
    assert!(HmacKey::parse(&format!("{hex}\n"), HmacAlgorithm::Hs256, KeyEncoding::Hex).is_ok());
}

#[test]
fn placeholders_hidden_in_an_encoding_are_found() {
    use base64::Engine as _;
    let disguised = base64::engine::general_purpose::STANDARD
        .encode("your-secret-key-min-32-characters-change-in-production");
    let err = HmacKey::parse(&disguised, HmacAlgorithm::Hs256, KeyEncoding::Base64).unwrap_err();
    assert!(
        matches!(err, KeyError::Weak(ref w) if w.contains(&Weakness::KnownDefault)),
        "{err:?}"
    );
    let zeros = "00".repeat(32);
    assert!(HmacKey::parse(&zeros, HmacAlgorithm::Hs256, KeyEncoding::Hex).is_err());
}

#[test]
fn guessable_keys_are_refused_in_every_encoding() {
    use base64::Engine as _;
    for weak in [
        "Christopher1985!Christopher1985!",
        "beautiful mountain summer holiday",
        "acme-corporation-holdings-2023-prod",
        "Xk9#mQ2$pXk9#mQ2$pXk9#mQ2$pXk9#mQ2$p",
    ] {
        let guessable = |err: KeyError| matches!(err, KeyError::Weak(ref w) if w.contains(&Weakness::Guessable { min: 32 }));
        let raw = HmacKey::parse(weak, HmacAlgorithm::Hs256, KeyEncoding::Raw).unwrap_err();
        assert!(guessable(raw), "{weak}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(weak);
        let err = HmacKey::parse(&b64, HmacAlgorithm::Hs256, KeyEncoding::Base64).unwrap_err();
        assert!(guessable(err.clone()), "{weak}: {err:?}");
        // The message names the rule and the remedy, never the key.
        let text = err.to_string();
        assert!(text.contains("openssl rand -base64 48"), "{text}");
        for window in weak.as_bytes().windows(5) {
            assert!(!text.as_bytes().windows(5).any(|w| w == window), "{text}");
        }
    }
    // A CSPRNG key passes however it is written.
    assert!(HmacKey::parse(STRONG_B64_32, HmacAlgorithm::Hs256, KeyEncoding::Base64).is_ok());
    assert!(HmacKey::parse(STRONG_B64_32, HmacAlgorithm::Hs256, KeyEncoding::Raw).is_ok());
}

#[test]
fn undecodable_text_is_refused() {
    for (text, enc) in [
        ("not base64!!", KeyEncoding::Base64),
        ("abc", KeyEncoding::Hex),
        ("zz", KeyEncoding::Hex),
    ] {
        assert_eq!(
            HmacKey::parse(text, HmacAlgorithm::Hs256, enc).unwrap_err(),
            KeyError::Undecodable(enc)
        );
    }
}

#[test]
fn symmetric_keys_are_exactly_32_encoded_bytes() {
    assert!(SymmetricKey::parse(STRONG_B64_32, KeyEncoding::Base64).is_ok());
    assert_eq!(
        SymmetricKey::parse(STRONG_B64_32, KeyEncoding::Raw).unwrap_err(),
        KeyError::NeedsEncoding
    );
    let long = "3f9a0c7e51b2d8e4a6f1c3b5d7e9f0a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3aa";
    assert_eq!(
        SymmetricKey::parse(long, KeyEncoding::Hex).unwrap_err(),
        KeyError::WrongLength { expected: 32 }
    );
}

#[test]
fn debug_and_errors_never_show_the_key() {
    let key = HmacKey::parse(STRONG_B64_32, HmacAlgorithm::Hs256, KeyEncoding::Base64).unwrap();
    let debug = format!("{key:?}");
    assert!(
        debug.contains("REDACTED") && debug.contains("Hs256"),
        "{debug}"
    );
    for window in STRONG_B64_32.as_bytes().windows(5) {
        assert!(!debug.as_bytes().windows(5).any(|w| w == window), "{debug}");
    }
    let sym = SymmetricKey::parse(STRONG_B64_32, KeyEncoding::Base64).unwrap();
    assert_eq!(format!("{sym:?}"), "SymmetricKey([REDACTED])");
    let weak = "my-jwt-password-for-the-api-server-2024!!";
    let err = HmacKey::parse(weak, HmacAlgorithm::Hs256, KeyEncoding::Raw).unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        for window in weak.as_bytes().windows(5) {
            assert!(!text.as_bytes().windows(5).any(|w| w == window), "{text}");
        }
    }
}

#[test]
fn generated_keys_are_full_length_and_distinct() {
    let a = HmacKey::generate(HmacAlgorithm::Hs512).unwrap();
    let b = HmacKey::generate(HmacAlgorithm::Hs512).unwrap();
    assert_eq!(a.bytes().len(), 64);
    assert_ne!(a.bytes(), b.bytes());
    assert_ne!(a.kid(), b.kid());
}

#[test]
fn key_ring_overlap_window() {
    let old = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
    let older = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
    let current = HmacKey::generate(HmacAlgorithm::Hs256).unwrap();
    let (old_kid, older_kid, current_kid) = (
        old.kid().to_owned(),
        older.kid().to_owned(),
        current.kid().to_owned(),
    );
    let ring = KeyRing::new(current)
        .with_previous(old, Some(1_000))
        .with_previous(older, None);
    assert_eq!(ring.current().kid(), current_kid);
    assert!(ring.find(&current_kid, 5_000).is_some());
    assert!(ring.find(&old_kid, 999).is_some());
    assert!(
        ring.find(&old_kid, 1_000).is_none(),
        "retired at the end of the window"
    );
    assert!(ring.find(&older_kid, u64::MAX).is_some());
    assert!(ring.find("unknown", 0).is_none());
}

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! The password policy with real data: a held-out list of common passwords,
//! random and passphrase-style passwords, and every code's boundary.

use palisade_auth::password::{PasswordPolicy, blocklist};

fn codes(policy: &PasswordPolicy, password: &str, context: &[&str]) -> Vec<&'static str> {
    policy
        .check(password, context)
        .err()
        .unwrap_or_default()
        .iter()
        .map(|v| v.code)
        .collect()
}

fn plain() -> PasswordPolicy {
    // The strength estimate is tested separately; these tests isolate rules.
    PasswordPolicy::default().min_score(None)
}

#[test]
fn the_blocklist_refuses_common_passwords_it_was_not_built_from() {
    let holdout = include_str!("data/holdout.txt");
    let entries: Vec<&str> = holdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(entries.len(), 2000);
    let list = blocklist();
    let refused = entries
        .iter()
        .filter(|p| list.contains(&p.to_lowercase()))
        .count();
    // A different compilation of common passwords: most of it must be caught.
    println!(
        "held-out common passwords refused: {refused} of {}",
        entries.len()
    );
    assert!(
        refused * 100 >= entries.len() * 95,
        "{refused} of {}",
        entries.len()
    );
    // And the most common ones all are.
    for p in [
        "password123",
        "iloveyou1",
        "qwertyuiop",
        "1q2w3e4r5t",
        "trustno1",
        "baseball1",
        "P@ssw0rd",
    ] {
        assert_eq!(codes(&plain(), p, &[]), ["too_common"], "{p}");
    }
}

#[test]
fn random_and_passphrase_passwords_are_accepted() {
    let policy = PasswordPolicy::default();
    let words = [
        "copper", "lantern", "meadow", "quartz", "violet", "harbor", "cinder", "walnut", "glacier",
        "saddle", "orchid", "timber",
    ];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..100 {
        let random: String = (0..16)
            .map(|_| {
                char::from(
                    b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%&*"
                        [usize::try_from(next() % 61).unwrap()],
                )
            })
            .collect();
        assert_eq!(
            codes(&policy, &random, &["alice"]),
            Vec::<&str>::new(),
            "{random}"
        );
    }
    for _ in 0..30 {
        let phrase: Vec<&str> = (0..4)
            .map(|_| words[usize::try_from(next() % 12).unwrap()])
            .collect();
        let phrase = phrase.join(" ");
        assert_eq!(
            codes(&policy, &phrase, &["alice"]),
            Vec::<&str>::new(),
            "{phrase}"
        );
    }
}

#[test]
fn length_boundaries_count_characters_after_nfkc() {
    let p = plain();
    assert_eq!(codes(&p, "Zq7#kLm", &[]), ["too_short"]);
    assert!(codes(&p, "Zq7#kLmV", &[]).is_empty());
    let max = "Zq7#kLmV".repeat(16);
    assert_eq!(max.chars().count(), 128);
    assert!(codes(&p, &max, &[]).is_empty());
    assert_eq!(codes(&p, &format!("{max}x"), &[]), ["too_long"]);
    // Eight characters that NFKC turns into eight others still count as 8;
    // a decomposed "é" (2 code points) is one character after NFKC.
    assert!(codes(&p, "ｚｑ７＃ｋｌｍｖ", &[]).is_empty());
    assert_eq!(codes(&p, "Zq7#ke\u{301}m", &[]), ["too_short"]);
    // Multi-byte characters: 128 four-byte characters are allowed.
    // The single-factor preset.
    let sf = PasswordPolicy::single_factor().min_score(None);
    assert_eq!(codes(&sf, "Zq7#kLmVx2Rt9!", &[]), ["too_short"]);
    assert!(codes(&sf, "Zq7#kLmVx2Rt9!w", &[]).is_empty());
}

#[test]
fn a_megabyte_password_is_refused_as_too_long() {
    let huge = "a".repeat(1 << 20);
    assert_eq!(codes(&plain(), &huge, &[]), ["too_long"]);
    // The byte cap, not the character count: 129 four-byte characters.
    assert_eq!(codes(&plain(), &"😀".repeat(129), &[]), ["too_long"]);
}

#[test]
fn full_width_common_passwords_are_caught_on_the_normalised_form() {
    assert_eq!(
        codes(&plain(), "ｐａｓｓｗｏｒｄ１２３", &[]),
        ["too_common"]
    );
    assert_eq!(codes(&plain(), "PASSWORD123", &[]), ["too_common"]);
}

#[test]
fn context_words_are_refused_in_any_case_or_form() {
    let p = plain().service_name("Palisade");
    assert_eq!(codes(&p, "my-palisade-pw-9", &[]), ["contains_identifier"]);
    assert_eq!(
        codes(&p, "x7-JOHNNY.B-rocks", &["johnny.b"]),
        ["contains_identifier"]
    );
    assert_eq!(
        codes(&p, "x7-ｊｏｈｎｎｙ.b-rocks", &["johnny.b"]),
        ["contains_identifier"]
    );
    // Parts of the local part count too.
    assert_eq!(
        codes(&p, "x7-HOPPER-rocks", &["grace.hopper"]),
        ["contains_identifier"]
    );
    // Words under 3 characters are ignored.
    assert!(codes(&p, "x7-al-rocks-hard", &["al"]).is_empty());
}

#[test]
fn repeated_and_sequential_passwords_are_too_weak() {
    let p = plain().without_blocklist();
    for pw in ["zzzzzzzzzzzz", "xyzxyzxyzxyz", "23456789", "lkjihgfedcba"] {
        assert_eq!(codes(&p, pw, &[]), ["too_weak"], "{pw}");
    }
}

#[test]
fn the_strength_estimate_refuses_guessable_passwords() {
    let p = PasswordPolicy::default().without_blocklist();
    assert_eq!(codes(&p, "Summer2024", &[]), ["too_weak"]);
    assert!(codes(&p, "violet quartz harbor timber", &[]).is_empty());
    // Only the first 64 characters are estimated: a long crafted input is
    // cheap, and still accepted when the start is strong.
    let crafted = format!("violet quartz harbor timber {}", "a1!".repeat(30));
    assert!(codes(&p, &crafted, &[]).is_empty());
}

#[test]
fn violations_never_contain_the_password_and_map_to_field_errors() {
    for secret in ["hunter2", "hunter2password", "password1"] {
        let v = plain().check(secret, &["hunter2"]).unwrap_err()[0];
        assert!(!v.message.contains("hunter"));
        let e = v.field_error("password");
        assert!(!format!("{e:?}").contains("hunter"));
        assert!(!format!("{e:?}").contains("password1"));
    }
}

//! The path rules under random input and the traversal corpus.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

mod common;

use common::Farm;
use palisade_fs::{FsError, PathRules};
use proptest::prelude::*;

/// The payload lines of palisade-testkit's traversal corpus.
fn corpus() -> Vec<String> {
    palisade_testkit::corpus::traversal()
        .map(str::to_owned)
        .collect()
}

/// The benign lines at the end of the corpus: the rules must accept them.
const BENIGN: &[&str] = palisade_testkit::corpus::TRAVERSAL_BENIGN;

#[test]
fn corpus_is_large_and_every_attack_is_refused() {
    let lines = corpus();
    assert!(lines.len() >= 500, "{}", lines.len());
    let rules = PathRules::new();
    let mut accepted = Vec::new();
    for line in &lines {
        match rules.parse_encoded(line) {
            Ok(path) => {
                assert!(path.components().all(|c| c != ".." && c != "."), "{line:?}");
                accepted.push(line.as_str());
            }
            Err(rejection) => {
                let problem = FsError::from(rejection).problem();
                assert_eq!(problem.status, 400, "{line:?}");
                let json = String::from_utf8(problem.to_json().to_vec()).unwrap();
                assert!(
                    !json.contains("passwd") && !json.contains("win.ini"),
                    "{json}"
                );
            }
        }
    }
    // Only the benign block gets through, and two names that are a literal
    // `%` and `%2` after the one decoding: plain file names, which no later
    // decoder can turn into anything else (`%2` is not an escape).
    let unexpected: Vec<_> = accepted
        .iter()
        .filter(|l| !BENIGN.contains(l) && !["%25", "%252"].contains(l))
        .collect();
    assert_eq!(unexpected, Vec::<&&str>::new());
    for benign in BENIGN {
        assert!(accepted.contains(benign), "{benign}");
    }
}

#[test]
fn corpus_through_every_root_never_escapes_nor_fails_with_5xx() {
    let farm = Farm::new();
    let rules = PathRules::new().allow_dotfiles();
    for (config, root) in farm.roots() {
        for line in corpus() {
            let Ok(path) = rules.parse_encoded(&line) else {
                continue;
            };
            match root.open(&path) {
                Ok(file) => farm.assert_inside(&file, &format!("{config} {line:?}")),
                Err(e) => assert!(e.status().as_u16() < 500, "{config} {line:?}: {e}"),
            }
            if let Err(e) = root.write_atomic(&path, b"x", false) {
                assert!(e.status().as_u16() < 500, "{config} {line:?}: {e}");
            } else {
                root.remove_file(&path).unwrap();
            }
            farm.assert_outside_untouched();
        }
    }
}

/// An alphabet rich in dots, separators, escapes, colons, NUL, unicode
/// look-alikes and device names.
const ALPHABET: &[&str] = &[
    "a",
    "Z",
    "0",
    ".",
    "..",
    "/",
    "\\",
    "%",
    "%2",
    "%2e",
    "%2f",
    "%5c",
    "%00",
    "%25",
    "%c0%ae",
    "%e2%80%ae",
    ":",
    "c:",
    "\0",
    "\n",
    " ",
    "\u{FF0F}",
    "\u{FF3C}",
    "\u{2215}",
    "\u{FF0E}",
    "\u{2024}",
    "\u{FE30}",
    "\u{202E}",
    "\u{200B}",
    "\u{B9}",
    "\u{B2}",
    "CON",
    "nul",
    "Com",
    "lpt",
    "conin$",
    "?",
    "*",
    "~",
    "é",
    "\u{FB01}",
    "\u{2460}",
];

fn rich_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 1..16).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn accepted_paths_have_only_plain_components(raw in rich_path()) {
        let rules = PathRules::new();
        if let Ok(path) = rules.parse_encoded(&raw) {
            let text = path.as_str();
            prop_assert!(!text.starts_with('/'));
            prop_assert!(!text.contains('\\') && !text.contains(':') && !text.contains('\0'));
            prop_assert!(!text.chars().any(char::is_control));
            for component in path.components() {
                prop_assert!(!component.is_empty() && component != "." && component != "..");
                prop_assert!(!component.ends_with('.') && !component.ends_with(' '));
                prop_assert!(!component.starts_with('.'));
                let stem = component.split('.').next().unwrap().trim_end().to_ascii_uppercase();
                prop_assert!(!["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"].contains(&stem.as_str()));
                prop_assert!(!(stem.len() == 4 && (stem.starts_with("COM") || stem.starts_with("LPT"))
                    && stem.as_bytes()[3].is_ascii_digit()));
            }
            // Normalised and stable: parsing the result again gives the same path.
            prop_assert_eq!(rules.parse(text).unwrap(), path.clone());
        }
    }

    #[test]
    fn parse_is_total(raw in any::<String>(), bytes in any::<Vec<u8>>()) {
        let rules = PathRules::new();
        let _ = rules.parse_encoded(&raw);
        if let Ok(path) = rules.parse(&raw) {
            prop_assert_eq!(rules.parse(path.as_str()).unwrap(), path);
        }
        let _ = rules.parse_bytes(&bytes);
    }

    #[test]
    fn decoding_happens_exactly_once(raw in rich_path()) {
        // Whatever survives one decode must not decode into something else.
        let rules = PathRules::new();
        if let Ok(path) = rules.parse_encoded(&raw) {
            let again: Vec<u8> = percent_encoding::percent_decode_str(path.as_str()).collect();
            prop_assert_eq!(again.as_slice(), path.as_str().as_bytes());
        }
    }
}

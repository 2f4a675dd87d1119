//! One regression test per advisory named in issue 6. Each feeds the
//! advisory's shape of input through the rules (and, where the bug was in
//! resolution, through every `SafeRoot` configuration).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

mod common;

use common::Farm;
use palisade_fs::{FsError, PathRejection, PathRules, SymlinkPolicy};

fn drive_letter_forms() -> Vec<&'static str> {
    vec![
        "c:/windows/win.ini",
        "C:\\Windows\\win.ini",
        "c:%5cwindows%5cwin.ini",
        "C%3a%5cWindows",
        "c%3A/boot.ini",
        "c:boot.ini",
        "Z:",
        "%63%3a%2f",
    ]
}

fn assert_drive_letters_refused() {
    let rules = PathRules::new();
    for raw in drive_letter_forms() {
        assert_eq!(
            rules.parse_encoded(raw),
            Err(PathRejection::DriveLetter),
            "{raw}"
        );
    }
    // Behind a first component the colon is still refused: no component can
    // ever be an absolute Windows path that `Path::join` would let replace the base.
    assert_eq!(
        rules.parse_encoded("x/c:/windows"),
        Err(PathRejection::Colon)
    );
    assert_eq!(
        rules.parse_encoded("x/c%3a%5cwindows"),
        Err(PathRejection::Colon)
    );
}

/// tower-http `ServeDir`: `/C:/Windows/...` escaped the served directory on Windows.
#[test]
fn rustsec_2022_0043_drive_letter_tower_http() {
    assert_drive_letters_refused();
}

/// warp `fs::dir`: the same drive-letter escape.
#[test]
fn rustsec_2022_0082_drive_letter_warp() {
    assert_drive_letters_refused();
}

/// hyper-staticfile: the same drive-letter escape.
#[test]
fn rustsec_2022_0069_drive_letter_hyper_staticfile() {
    assert_drive_letters_refused();
    assert_eq!(
        PathRules::new().parse_encoded("\\\\?\\C:\\x"),
        Err(PathRejection::UncPrefix)
    );
}

/// cap-primitives missed `COM¹`-`COM³` and `LPT¹`-`LPT³`, which Windows
/// treats as devices.
#[test]
fn rustsec_2024_0445_superscript_digit_device_names() {
    let rules = PathRules::new();
    for raw in [
        "COM\u{b9}",
        "com\u{b2}",
        "COM\u{b3}.txt",
        "LPT\u{b9}",
        "lpt\u{b2}.log",
        "LPT\u{b3} .txt",
        "dir/COM\u{b9}",
        "COM%C2%B9",
        "lpt%c2%b3.tar.gz",
        "\u{FF23}\u{FF2F}\u{FF2D}\u{b9}",
        "COM\u{FF11}",
    ] {
        // Literal superscripts go through `parse`; escaped ones through `parse_encoded`.
        let result = if raw.contains('%') {
            rules.parse_encoded(raw)
        } else {
            rules.parse(raw)
        }
        .map(drop);
        assert_eq!(result, Err(PathRejection::DeviceName), "{raw}");
    }
    // Not devices: more digits, other superscripts.
    for raw in ["COM10", "COM\u{b9}0", "COM\u{2074}x"] {
        assert!(rules.parse(raw).is_ok(), "{raw}");
    }
}

/// Go `os.Root`: `Open("../")` (a trailing slash after `..`) reached the
/// parent directory.
#[test]
fn cve_2025_22873_trailing_slash_and_dotdot() {
    let rules = PathRules::new();
    for raw in [
        "../",
        "..%2f",
        "a/../",
        "a/..",
        "..",
        "a/%2e%2e/",
        "sub/../../",
        "%2e%2e%2f",
    ] {
        assert!(
            matches!(
                rules.parse_encoded(raw),
                Err(PathRejection::DotSegment | PathRejection::TrailingSlash)
            ),
            "{raw}"
        );
    }
    // `..` reached through a link (`parent -> ..`, `grandparent -> ../..`)
    // is refused by every resolver.
    let farm = Farm::new();
    for (config, root) in farm.roots() {
        for raw in ["parent", "grandparent", "sub/up2", "dotdot_in_sub"] {
            let result = root.open(&rules.parse(raw).unwrap());
            let expected = match root.symlink_policy() {
                SymlinkPolicy::Deny => matches!(result, Err(FsError::Symlink)),
                _ => matches!(result, Err(FsError::Escape)),
            };
            assert!(expected, "{config} {raw}: {result:?}");
        }
    }
}

/// Go `os.Root`: a trailing slash after a final symbolic link made the OS
/// follow it (`O_NOFOLLOW` does not apply to `link/`), escaping the root.
#[test]
fn cve_2026_39822_trailing_slash_and_final_symlink() {
    let rules = PathRules::new();
    for raw in [
        "final_link/",
        "final_link%2f",
        "rel_out/",
        "sub/abs/",
        "final_link//",
    ] {
        assert!(
            matches!(
                rules.parse_encoded(raw),
                Err(PathRejection::TrailingSlash | PathRejection::EmptyComponent)
            ),
            "{raw}"
        );
    }
    // Without the slash, a final link to an outside directory (whose own
    // target ends with a slash) is refused or confined by every resolver.
    let farm = Farm::new();
    for (config, root) in farm.roots() {
        for raw in [
            "final_link",
            "final_link_file",
            "rel_out",
            "sub/abs",
            "abs_out",
        ] {
            let path = rules.parse(raw).unwrap();
            for result in [
                root.open(&path).map(drop),
                root.metadata(&path).map(drop),
                root.list(Some(&path)).map(drop),
            ] {
                assert!(
                    matches!(result, Err(FsError::Symlink | FsError::Escape)),
                    "{config} {raw}: {result:?}"
                );
            }
            assert!(root.sub_root(&path, false).is_err(), "{config} {raw}");
        }
    }
    farm.assert_outside_untouched();
}

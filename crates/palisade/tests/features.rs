#![allow(clippy::unwrap_used, clippy::panic)] // test code: panics are the assertions
//! Features pull only what they need: the dependency tree of each feature
//! set, as `cargo tree` resolves it for a user crate, leaves out the heavy
//! pieces that feature does not ask for.

use std::process::Command;

/// The normal dependencies of `package` with `features` and no defaults.
fn tree_of(package: &str, features: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "--no-default-features",
            "--features",
            features,
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The normal dependencies of `palisade` with `features` and no defaults.
fn tree(features: &str) -> String {
    tree_of("palisade", features)
}

fn has(tree: &str, krate: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(krate))
}

#[test]
fn auth_without_axum_pulls_no_axum_and_no_redis() {
    let tree = tree("auth");
    assert!(has(&tree, "palisade-auth"), "{tree}");
    assert!(has(&tree, "jsonwebtoken"), "sessions are part of `auth`");
    for absent in ["axum", "axum-core", "redis", "sqlx", "hyper"] {
        assert!(!has(&tree, absent), "`auth` pulled {absent}");
    }
}

#[test]
fn the_core_alone_is_small() {
    let tree = tree("");
    for absent in [
        "axum",
        "redis",
        "jsonwebtoken",
        "argon2",
        "figment",
        "hyper",
    ] {
        assert!(!has(&tree, absent), "no features pulled {absent}");
    }
}

#[test]
fn config_and_fs_bring_their_crates() {
    assert!(has(&tree("config"), "palisade-config"));
    let fs = tree("fs");
    assert!(has(&fs, "palisade-fs") && !has(&fs, "axum"), "{fs}");
    assert!(has(&tree("fs,axum"), "axum"));
    let resilience = tree("resilience");
    assert!(
        has(&resilience, "palisade-resilience") && !has(&resilience, "axum"),
        "{resilience}"
    );
}

#[test]
fn a_password_policy_user_compiles_no_jwt_and_no_redis() {
    let tree = tree_of("palisade-auth", "strength");
    assert!(has(&tree, "argon2") && has(&tree, "zxcvbn"), "{tree}");
    for absent in ["jsonwebtoken", "redis", "axum", "sqlx", "figment"] {
        assert!(!has(&tree, absent), "the password policy pulled {absent}");
    }
}

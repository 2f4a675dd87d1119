//! Start-up configuration of the reference backend binary: weak and missing
//! secrets refused in prod with exit 78, every problem at once, never a value.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code: a failed step is a failed test

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use palisade_security_tests::http::Request;
use palisade_security_tests::{Backend, run_to_exit, run_to_exit_with_args};

/// The secret audits keep finding in production.
const WEAK: &str = "your-secret-key-min-32-characters-change-in-production";
const STRONG: &str = "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8";

/// No substring of `secret` longer than 4 characters appears in `output`.
fn assert_not_echoed(secret: &str, output: &str) {
    for window in secret.as_bytes().windows(5) {
        let w = std::str::from_utf8(window).unwrap();
        assert!(
            !output.contains(w),
            "{w:?} of the secret appears in:\n{output}"
        );
    }
}

fn secret_file(contents: &str, mode: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

#[test]
fn prod_refuses_a_weak_secret_with_78_and_never_echoes_it() {
    let (status, stdout, stderr) =
        run_to_exit(&[("APP_PROFILE", "prod"), ("APP_JWT_SECRET", WEAK)]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("APP_JWT_SECRET: "), "{stderr}");
    assert_not_echoed(WEAK, &format!("{stdout}{stderr}"));
}

#[test]
fn weak_secrets_are_refused_in_dev_too() {
    let (status, stdout, stderr) = run_to_exit(&[("APP_JWT_SECRET", "your-256-bit-secret")]);
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert_not_echoed("your-256-bit-secret", &format!("{stdout}{stderr}"));
}

#[test]
fn two_problems_are_both_reported() {
    let (status, _, stderr) = run_to_exit(&[
        ("APP_PROFILE", "prod"),
        ("APP_JWT_SECRET", WEAK),
        ("APP_CORS_ORIGINS", "*"),
        ("APP_LISTEN", "0.0.0.0"),
    ]);
    assert_eq!(status.code(), Some(78));
    for setting in ["APP_JWT_SECRET", "APP_CORS_ORIGINS", "APP_LISTEN"] {
        assert!(
            stderr.contains(&format!("  {setting}: ")),
            "{setting} not in:\n{stderr}"
        );
    }
    assert_not_echoed(WEAK, &stderr);
}

#[test]
fn prod_requires_the_secret() {
    let (status, _, stderr) = run_to_exit(&[("APP_PROFILE", "prod")]);
    assert_eq!(status.code(), Some(78));
    assert!(
        stderr.contains("APP_JWT_SECRET: is required in the prod profile"),
        "{stderr}"
    );
}

#[test]
fn secret_file_indirection_works_in_prod() {
    let file = secret_file(&format!("{STRONG}\n"), 0o600);
    let backend = Backend::start_with(&[
        ("APP_PROFILE", "prod"),
        ("APP_JWT_SECRET_FILE", file.path().to_str().unwrap()),
    ]);
    assert_eq!(
        Request::get("/health").send(backend.addr).unwrap().status,
        200
    );
    let logs = backend.settled_logs().join("\n");
    assert!(!logs.contains("\"WARN\""), "{logs}");
    assert_not_echoed(STRONG, &logs);

    // Readable by others: it starts, and says so.
    let shared = secret_file(STRONG, 0o644);
    let backend = Backend::start_with(&[
        ("APP_PROFILE", "prod"),
        ("APP_JWT_SECRET_FILE", shared.path().to_str().unwrap()),
    ]);
    let warn = backend
        .logs()
        .into_iter()
        .find(|l| l.contains("\"WARN\""))
        .unwrap();
    assert!(
        warn.contains("APP_JWT_SECRET_FILE") && warn.contains("chmod 600"),
        "{warn}"
    );
}

#[test]
fn dev_without_a_secret_starts_and_warns() {
    let backend = Backend::start();
    let warn = backend
        .logs()
        .into_iter()
        .find(|l| l.contains("\"WARN\""))
        .expect("a WARN line about the generated key");
    let line: serde_json::Value = serde_json::from_str(&warn).unwrap();
    assert_eq!(line["setting"], "APP_JWT_SECRET");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("will not survive a restart")
    );
}

#[test]
fn check_config_mode() {
    let (status, stdout, _) = run_to_exit_with_args(
        &["--check-config"],
        &[("APP_PROFILE", "prod"), ("APP_JWT_SECRET", STRONG)],
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        stdout.contains("configuration ok (profile prod)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("listening"),
        "it must not start the server"
    );

    let (status, stdout, stderr) = run_to_exit_with_args(
        &["--check-config"],
        &[("APP_PROFILE", "prod"), ("APP_JWT_SECRET", WEAK)],
    );
    assert_eq!(status.code(), Some(78));
    assert_not_echoed(WEAK, &format!("{stdout}{stderr}"));

    let (status, _, _) = run_to_exit_with_args(&["--bogus"], &[]);
    assert_eq!(status.code(), Some(64));
}

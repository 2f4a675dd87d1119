use super::*;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::io::Write;
use validator::Validate;

#[derive(Debug, Deserialize, Validate)]
#[serde(default)]
struct Config {
    listen: String,
    #[validate(range(min = 1, max = 64, message = "must be between 1 and 64"))]
    pool_size: u32,
    #[validate(url(message = "must be a URL"))]
    redis_url: Option<String>,
    jwt_secret: Option<SecretString>,
    api_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::new(),
            pool_size: 4,
            redis_url: None,
            jwt_secret: None,
            api_key: None,
        }
    }
}

const STRONG: &str = "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8";

fn load(env: &[(&str, &str)]) -> Result<Loaded<Config>, Report> {
    Loader::new("APP")
        .with_env(env.iter().copied())
        .load::<Config>()
}

fn secret_file(contents: &str, mode: u32) -> tempfile::NamedTempFile {
    use std::os::unix::fs::PermissionsExt;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

#[test]
fn defaults_and_dev_profile() {
    let loaded = load(&[]).unwrap();
    assert_eq!(loaded.profile, Profile::Dev);
    assert_eq!(loaded.config.pool_size, 4);
    assert!(!loaded.is_explicit("listen"));
}

#[test]
fn env_wins_over_the_file() {
    let file = secret_file(
        "listen = \"0.0.0.0:1\"\npool_size = 4\nprofile = \"prod\"\n",
        0o600,
    );
    let path = file.path().to_str().unwrap();
    let loaded = load(&[("APP_CONFIG", path), ("APP_LISTEN", "127.0.0.1:2")]).unwrap();
    assert_eq!(loaded.config.listen, "127.0.0.1:2");
    assert_eq!(loaded.config.pool_size, 4);
    assert_eq!(
        loaded.profile,
        Profile::Prod,
        "the file may set the profile"
    );
    assert!(loaded.is_explicit("pool_size") && loaded.is_explicit("listen"));
    let loaded = load(&[("APP_CONFIG", path), ("APP_PROFILE", "staging")]).unwrap();
    assert_eq!(loaded.profile, Profile::Custom("staging".into()));
    assert!(!loaded.profile.is_dev());
}

#[test]
fn bad_file_and_profile_are_problems() {
    let file = secret_file("listen = [unclosed\n", 0o600);
    let report = load(&[
        ("APP_CONFIG", file.path().to_str().unwrap()),
        ("APP_PROFILE", "Prod!"),
    ])
    .unwrap_err();
    let lines: Vec<String> = report.problems().iter().map(ToString::to_string).collect();
    assert!(
        lines
            .iter()
            .any(|l| l == "APP_CONFIG: the file is not valid TOML"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("APP_PROFILE: ")),
        "{lines:?}"
    );
    let report = load(&[("APP_CONFIG", "/nonexistent/secret-path.toml")]).unwrap_err();
    assert_eq!(
        report.problems()[0].to_string(),
        "APP_CONFIG: cannot read the file"
    );
}

#[test]
fn secret_files() {
    let file = secret_file(&format!("{STRONG}\r\n"), 0o600);
    let loaded = load(&[("APP_JWT_SECRET_FILE", file.path().to_str().unwrap())]).unwrap();
    assert_eq!(
        loaded.config.jwt_secret.as_ref().unwrap().expose_secret(),
        STRONG
    );
    assert!(loaded.warnings.warnings().is_empty());
    assert!(loaded.is_explicit("jwt_secret"));

    let shared = secret_file(STRONG, 0o644);
    let loaded = load(&[("APP_JWT_SECRET_FILE", shared.path().to_str().unwrap())]).unwrap();
    let warning = loaded.warnings.warnings()[0].to_string();
    assert!(
        warning.starts_with("APP_JWT_SECRET_FILE: ") && warning.contains("chmod 600"),
        "{warning}"
    );

    let report = load(&[
        ("APP_JWT_SECRET_FILE", file.path().to_str().unwrap()),
        ("APP_JWT_SECRET", STRONG),
    ])
    .unwrap_err();
    assert!(
        report.problems()[0]
            .rule
            .contains("set only one of APP_JWT_SECRET and APP_JWT_SECRET_FILE")
    );

    let report = load(&[("APP_JWT_SECRET_FILE", "/run/secrets/missing-xyz")]).unwrap_err();
    assert_eq!(
        report.problems()[0].to_string(),
        "APP_JWT_SECRET_FILE: cannot read the file"
    );
}

/// What an application does: load, then check its secrets into the same report.
fn load_and_check(env: &[(&str, &str)]) -> Report {
    let mut report = Report::default();
    match load(env) {
        Ok(loaded) => {
            let c = &loaded.config;
            let _ = crate::hmac_key(
                c.jwt_secret.as_ref(),
                "APP_JWT_SECRET",
                crate::keys::HmacAlgorithm::Hs256,
                crate::keys::KeyEncoding::Raw,
                &loaded.profile,
                &mut report,
            );
        }
        Err(r) => report.merge(r),
    }
    report
}

/// Panics if any 6-character piece of any of `values` (a shorter value
/// whole) is in the report's `Display` or `Debug`, or in a problem's.
fn assert_no_value_in(report: &Report, values: &[&str]) {
    let mut texts = vec![report.to_string(), format!("{report:?}")];
    for p in report.problems().iter().chain(report.warnings()) {
        texts.push(p.to_string());
        texts.push(format!("{p:?}"));
    }
    for value in values {
        let chars: Vec<char> = value.chars().collect();
        for piece in chars.windows(chars.len().min(6)) {
            let piece: String = piece.iter().collect();
            for text in &texts {
                assert!(!text.contains(&piece), "{piece:?} of a value in {text}");
            }
        }
    }
}

#[test]
fn every_problem_at_once_and_no_value_quoted() {
    let values = ["9731", "qq-not-a-url-zq", "many-kq7x"];
    let report = load(&[
        ("APP_POOL_SIZE", "9731"),
        ("APP_REDIS_URL", "qq-not-a-url-zq"),
    ])
    .unwrap_err();
    let text = report.to_string();
    assert_eq!(report.problems().len(), 2, "{text}");
    for setting in ["APP_POOL_SIZE", "APP_REDIS_URL"] {
        assert!(
            text.contains(&format!("  {setting}: ")),
            "{setting} in {text}"
        );
    }
    assert_no_value_in(&report, &values);
    // A value of the wrong type is not quoted either.
    let report = load(&[("APP_POOL_SIZE", "many-kq7x")]).unwrap_err();
    assert_eq!(report.problems().len(), 1);
    assert_no_value_in(&report, &values);

    let secret = "changeme-changeme-changeme-changeme-zzzz";
    let report = load_and_check(&[("APP_PROFILE", "prod"), ("APP_JWT_SECRET", secret)]);
    assert_eq!(report.problems().len(), 1);
    let text = report.to_string();
    assert!(text.contains("  APP_JWT_SECRET: "), "{text}");
    assert_no_value_in(&report, &[secret]);
}

#[test]
fn missing_secret_is_generated_in_dev_only() {
    let report = load_and_check(&[]);
    assert!(report.is_ok());
    assert!(
        report.warnings()[0]
            .rule
            .contains("will not survive a restart")
    );
    let report = load_and_check(&[("APP_PROFILE", "prod")]);
    assert_eq!(
        report.problems()[0].to_string(),
        "APP_JWT_SECRET: is required in the prod profile"
    );
    let report = load_and_check(&[("APP_PROFILE", "staging")]);
    assert!(!report.is_ok(), "custom profiles are strict");
}

#[test]
fn weak_secret_is_refused_in_dev_too() {
    let report = load_and_check(&[("APP_JWT_SECRET", "your-256-bit-secret")]);
    assert!(!report.is_ok());
}

#[test]
fn type_errors_are_translated_without_values() {
    let report = load(&[("APP_POOL_SIZE", "many-xyz")]).unwrap_err();
    let line = report.problems()[0].to_string();
    assert!(line.starts_with("APP_POOL_SIZE: must be "), "{line}");
    assert!(!line.contains("xyz"), "{line}");
}

#[test]
fn secret_looking_values_stay_strings() {
    // Parsed as a number, "12345" could not become a String field.
    let loaded = load(&[("APP_API_KEY", "12345"), ("APP_POOL_SIZE", "8")]).unwrap();
    assert_eq!(loaded.config.api_key.as_deref(), Some("12345"));
    assert_eq!(loaded.config.pool_size, 8);
}

#[test]
fn loaded_config_debug_is_redacted() {
    let loaded = load(&[("APP_JWT_SECRET", STRONG)]).unwrap();
    let debug = format!("{loaded:?}");
    assert!(!debug.contains(&STRONG[..8]), "{debug}");
}

#[test]
fn profile_names() {
    assert_eq!(Profile::parse("dev"), Some(Profile::Dev));
    assert_eq!(Profile::parse("prod"), Some(Profile::Prod));
    assert_eq!(Profile::parse("ci-2"), Some(Profile::Custom("ci-2".into())));
    for bad in ["", "PROD", "a b", &"x".repeat(33)] {
        assert_eq!(Profile::parse(bad), None, "{bad}");
    }
}

#[test]
fn remote_defaults_are_refused_local_ones_and_explicit_ones_pass() {
    let loaded = load(&[("APP_LISTEN", "127.0.0.1:1")]).unwrap();
    let check = |key: &str, url: &str| {
        let mut report = Report::default();
        loaded.check_url_fallback(key, "APP_X", Some(url), &mut report);
        report.is_ok()
    };
    for local in [
        "sqlite://./data/app.db",
        "redis+unix:///run/redis.sock",
        "redis://127.0.0.1:6379",
        "redis://localhost",
        "postgres://user:pw@[::1]:5432/db",
        "http://127.0.0.2/x",
    ] {
        assert!(check("redis_url", local), "{local}");
    }
    for remote in [
        "redis://cache.prod.internal:6379",
        "postgres://app:pw@db.example.com/app",
        "redis://10.0.0.5",
        "https://localhost.evil.example",
        "not a url",
    ] {
        assert!(!check("redis_url", remote), "{remote}");
    }
    // Set explicitly, a remote URL is the operator's choice.
    assert!(check("listen", "redis://cache.prod.internal:6379"));
}

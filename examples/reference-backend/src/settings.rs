//! The backend's settings (`API.md`, "Settings"), loaded
//! and validated by palisade-config: `APP_*` variables, an optional TOML file
//! (`APP_CONFIG`), `APP_*_FILE` secret files.
//!
//! Every problem is collected into one report, one line per setting, naming the
//! rule and never the value; the binary prints it and exits 78.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use palisade::core::client_ip::parse_network;
use palisade::prelude::*;
use palisade::telemetry::LogFormat;
use palisade_config::keys::{HmacAlgorithm, HmacKey, KeyEncoding};
use palisade_config::{ExposeSecret, Loader, Profile, Report, SecretString};
use serde::{Deserialize, Deserializer};
use validator::Validate;

use crate::db::{self, DatabaseSettings, Kind};

/// The settings as written by the operator, before checking.
#[derive(Debug, Deserialize, Validate)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    listen: String,
    data_dir: PathBuf,
    database_url: Option<SecretString>,
    database_pool_size: Count,
    database_connect_timeout_ms: Count,
    database_statement_timeout_ms: Count,
    database_migration_timeout_ms: Count,
    #[validate(url(message = "must be a redis://, rediss:// or redis+unix:// URL"))]
    redis_url: Option<String>,
    #[serde(deserialize_with = "list")]
    trusted_proxies: Vec<String>,
    #[serde(deserialize_with = "list")]
    cors_origins: Vec<String>,
    metrics_token: Option<SecretString>,
    metrics_listen: Option<String>,
    jwt_secret: Option<SecretString>,
    log_format: Option<String>,
    files_max_bytes: Count,
    files_max_count: Count,
    pwned_api_url: Option<String>,
    redis_timeout_ms: Count,
    /// Accepted so that a file may name its profile; read by the loader.
    profile: Option<String>,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_pool_size: Count::Whole(u64::from(db::DEFAULT_POOL_SIZE)),
            database_connect_timeout_ms: Count::Whole(millis(db::DEFAULT_CONNECT_TIMEOUT)),
            database_statement_timeout_ms: Count::Whole(millis(db::DEFAULT_STATEMENT_TIMEOUT)),
            database_migration_timeout_ms: Count::Whole(millis(db::DEFAULT_MIGRATION_TIMEOUT)),
            redis_url: None,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            metrics_token: None,
            metrics_listen: None,
            jwt_secret: None,
            log_format: None,
            files_max_bytes: Count::Whole(DEFAULT_FILES_MAX_BYTES),
            files_max_count: Count::Whole(DEFAULT_FILES_MAX_COUNT),
            pwned_api_url: None,
            redis_timeout_ms: Count::Whole(DEFAULT_REDIS_TIMEOUT_MS),
            profile: None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A comma-separated string (environment) or a list (TOML).
fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    let items = match Either::deserialize(d)? {
        Either::One(s) => s.split(',').map(str::to_owned).collect(),
        Either::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A count as written: a whole number (from the environment, a TOML integer
/// or string), or anything else, refused with the rule rather than the
/// deserializer's wording (and every such setting reported, not the first).
#[derive(Debug, Clone, Copy)]
enum Count {
    Whole(u64),
    Invalid,
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Whole(u64),
            Text(String),
            // Negative and fractional numbers, booleans, lists, tables.
            Other(serde::de::IgnoredAny),
        }
        Ok(match Written::deserialize(d) {
            Ok(Written::Whole(n)) => Self::Whole(n),
            Ok(Written::Text(text)) => text.trim().parse().map_or(Self::Invalid, Self::Whole),
            Ok(Written::Other(_)) | Err(_) => Self::Invalid,
        })
    }
}

/// Validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Where to listen (`APP_LISTEN`).
    pub listen: SocketAddr,
    /// `APP_PROFILE`.
    pub profile: Profile,
    /// `APP_DATA_DIR`: the SQLite file (by default) and uploads live here.
    pub data_dir: PathBuf,
    /// `APP_DATABASE_URL` (default `sqlite://<data dir>/app.db`; or
    /// `postgres://`, `postgresql://`), a secret, and the pool's settings.
    pub database: DatabaseSettings,
    /// `APP_REDIS_URL`: the shared store of limits, lockouts and revocations;
    /// absent = in-process memory. A secret: the URL may hold a password.
    pub redis_url: Option<SecretString>,
    /// `APP_TRUSTED_PROXIES`: networks whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `APP_CORS_ORIGINS`: exact origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
    /// The JWT signing key (`APP_JWT_SECRET` / `APP_JWT_SECRET_FILE`), HS256.
    pub jwt_key: HmacKey,
    /// `APP_LOG_FORMAT`: `json` (default) or `pretty` for local development.
    pub log_format: LogFormat,
    /// `APP_METRICS_TOKEN`: the bearer token `/metrics` requires; without it
    /// `/metrics` is served only to a loopback peer that is not a trusted
    /// proxy and sends no forwarding header (and, in `prod`, not at all on
    /// the main listener).
    pub metrics_token: Option<SecretString>,
    /// `APP_METRICS_LISTEN`: a second (internal) address serving `/metrics`
    /// alone; the main listener then answers 404 there.
    pub metrics_listen: Option<SocketAddr>,
    /// `APP_FILES_MAX_BYTES`: the bytes each user may store under `/files`
    /// (default 100 MiB), uploads in flight included.
    pub files_max_bytes: u64,
    /// `APP_FILES_MAX_COUNT`: the files each user may store (default 1,000),
    /// uploads in flight included.
    pub files_max_count: u64,
    /// `APP_PWNED_API_URL`: the base URL of a k-anonymity range API
    /// (`https://api.pwnedpasswords.com`, or a mirror) checked for every new
    /// password at registration and password change; unset = no check. It
    /// fails open within 2 s behind a circuit breaker. Must be `http://` or
    /// `https://` with a host; in `prod`, `https://` unless the host is
    /// loopback.
    pub pwned_api_url: Option<String>,
    /// `APP_REDIS_TIMEOUT_MS`: how long one call to Redis may take before it
    /// counts as failed (default 50 ms: limits and lockouts fail fast, and
    /// auth routes answer 503, when Redis stalls). Raise it for a Redis
    /// reached over a slow network, or on a host too loaded to answer in 50 ms.
    pub redis_timeout: std::time::Duration,
    /// Warnings to log once logging is up (a generated key, a shared secret file).
    pub warnings: Report,
}

const PREFIX: &str = "APP";

/// The default of `APP_FILES_MAX_BYTES`: 100 MiB per user.
pub const DEFAULT_FILES_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The default of `APP_FILES_MAX_COUNT`: 1,000 files per user.
pub const DEFAULT_FILES_MAX_COUNT: u64 = 1_000;
/// The default of `APP_REDIS_TIMEOUT_MS`: palisade-store's own default.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 50;
/// The longest `APP_REDIS_TIMEOUT_MS` accepted: a minute.
const MAX_REDIS_TIMEOUT_MS: u64 = 60_000;

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, Report> {
        Self::load(&Loader::new(PREFIX))
    }

    /// Reads the settings from the given `APP_*` variables (tests, tools).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, Report>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::load(&Loader::new(PREFIX).with_env(vars))
    }

    fn load(loader: &Loader) -> Result<Self, Report> {
        let mut result = loader.load::<Raw>()?;
        let mut report = std::mem::take(&mut result.warnings);
        let profile = result.profile.clone();
        let raw = std::mem::take(&mut result.config);

        let listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
            report.problem(
                loader.setting("listen"),
                "must be an IP address and port, e.g. 127.0.0.1:8080",
            );
        });
        let database = database(&raw, &result, loader, &profile, &mut report);
        if let Some(url) = &raw.redis_url {
            let scheme_ok = ["redis://", "rediss://", "redis+unix://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !scheme_ok {
                report.problem(
                    loader.setting("redis_url"),
                    "must be a redis://, rediss:// or redis+unix:// URL",
                );
            }
        }
        let trusted_proxies = trusted_proxies(&raw.trusted_proxies, &profile, loader, &mut report);
        let metrics_listen = raw.metrics_listen.as_deref().and_then(|addr| {
            addr.parse::<SocketAddr>()
                .map_err(|_| {
                    report.problem(
                        loader.setting("metrics_listen"),
                        "must be an IP address and port, e.g. 127.0.0.1:9090",
                    );
                })
                .ok()
        });
        if let Err(e) = Cors::new()
            .allow_origins(raw.cors_origins.iter().cloned())
            .build()
        {
            report.problem(loader.setting("cors_origins"), e.rule().to_owned());
        }
        let metrics_ok = palisade_config::secret(
            raw.metrics_token.as_ref(),
            &loader.setting("metrics_token"),
            32,
            &mut report,
        )
        .is_some();
        let metrics_token = raw.metrics_token.filter(|_| metrics_ok);
        let jwt_key = palisade_config::hmac_key(
            raw.jwt_secret.as_ref(),
            &loader.setting("jwt_secret"),
            HmacAlgorithm::Hs256,
            KeyEncoding::Raw,
            &profile,
            &mut report,
        );
        let log_format = log_format(raw.log_format.as_deref(), loader, &mut report);
        let pwned_api_url = pwned_api_url(raw.pwned_api_url, &profile, loader, &mut report);
        let files_max_bytes = count(raw.files_max_bytes, "files_max_bytes", loader, &mut report);
        let files_max_count = count(raw.files_max_count, "files_max_count", loader, &mut report);
        let redis_timeout = redis_timeout(raw.redis_timeout_ms, loader, &mut report);
        match (listen, jwt_key) {
            (Ok(listen), Some(jwt_key)) if report.is_ok() => Ok(Self {
                listen,
                profile,
                data_dir: raw.data_dir,
                database,
                redis_url: raw.redis_url.map(SecretString::from),
                trusted_proxies,
                cors_origins: raw.cors_origins,
                jwt_key,
                log_format,
                metrics_token,
                metrics_listen,
                files_max_bytes,
                files_max_count,
                pwned_api_url,
                redis_timeout,
                warnings: report,
            }),
            _ => Err(report),
        }
    }
}

/// `APP_LOG_FORMAT`: `json` (the default) or `pretty`.
fn log_format(value: Option<&str>, loader: &Loader, report: &mut Report) -> LogFormat {
    match value {
        None | Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        Some(_) => {
            report.problem(loader.setting("log_format"), "must be `json` or `pretty`");
            LogFormat::Json
        }
    }
}

/// `APP_PWNED_API_URL` when it is usable; reports why not.
fn pwned_api_url(
    url: Option<String>,
    profile: &Profile,
    loader: &Loader,
    report: &mut Report,
) -> Option<String> {
    let setting = loader.setting("pwned_api_url");
    let usable = match palisade_auth::pwned::parse_url(url.as_deref()?) {
        Err(e) => {
            report.problem(setting, e.to_string());
            false
        }
        Ok(uri)
            if *profile == Profile::Prod
                && uri.scheme_str() != Some("https")
                && !palisade_auth::pwned::is_loopback(&uri) =>
        {
            report.problem(
                setting,
                "must be an https:// URL in prod (plain http:// only to a loopback address)",
            );
            false
        }
        Ok(_) => true,
    };
    url.filter(|_| usable)
}

/// `APP_REDIS_TIMEOUT_MS`: 1 ms to a minute.
fn redis_timeout(value: Count, loader: &Loader, report: &mut Report) -> std::time::Duration {
    let ms = match value {
        Count::Whole(ms) if (1..=MAX_REDIS_TIMEOUT_MS).contains(&ms) => ms,
        _ => {
            report.problem(
                loader.setting("redis_timeout_ms"),
                "must be a whole number of milliseconds from 1 to 60000",
            );
            DEFAULT_REDIS_TIMEOUT_MS
        }
    };
    std::time::Duration::from_millis(ms)
}

/// A count from 1 to `i64::MAX` (quotas are kept in SQL integers).
fn count(value: Count, key: &str, loader: &Loader, report: &mut Report) -> u64 {
    bounded(value, key, i64::MAX.unsigned_abs(), loader, report)
}

/// A count from 1 to `max`.
fn bounded(value: Count, key: &str, max: u64, loader: &Loader, report: &mut Report) -> u64 {
    match value {
        Count::Whole(n) if n > 0 && n <= max => n,
        _ => {
            report.problem(
                loader.setting(key),
                format!("must be a whole number from 1 to {max}"),
            );
            0
        }
    }
}

/// The longest statement timeout accepted: 10 minutes.
const MAX_STATEMENT_TIMEOUT_MS: u64 = 600_000;
/// The longest migration timeout accepted: 1 hour.
const MAX_MIGRATION_TIMEOUT_MS: u64 = 3_600_000;
/// The longest connect timeout accepted: 1 minute.
const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
/// The largest pool accepted.
const MAX_POOL_SIZE: u64 = 1_000;

/// `APP_DATABASE_*`: the URL (default: SQLite in the data directory), its
/// driver, the pool; in `prod`, a warning for a PostgreSQL server on another
/// machine reached without TLS. Rules only in the report: the URL may hold a
/// password.
fn database(
    raw: &Raw,
    result: &palisade_config::Loaded<Raw>,
    loader: &Loader,
    profile: &Profile,
    report: &mut Report,
) -> DatabaseSettings {
    let setting = loader.setting("database_url");
    let url = raw.database_url.clone().unwrap_or_else(|| {
        SecretString::from(format!(
            "sqlite://{}",
            raw.data_dir.join("app.db").display()
        ))
    });
    let text = url.expose_secret();
    result.check_url_fallback("database_url", &setting, Some(text), report);
    let kind = db::kind_of(text).unwrap_or_else(|problem| {
        report.problem(&setting, problem.rule());
        Kind::Sqlite
    });
    if kind == Kind::Postgres && *profile == Profile::Prod && db::tls_off_to_remote(text) {
        report.warn(
            &setting,
            "reaches a PostgreSQL server on another machine without TLS: \
             add sslmode=verify-full (or sslmode=require)",
        );
    }
    let pool_size = bounded(
        raw.database_pool_size,
        "database_pool_size",
        MAX_POOL_SIZE,
        loader,
        report,
    );
    let connect = bounded(
        raw.database_connect_timeout_ms,
        "database_connect_timeout_ms",
        MAX_CONNECT_TIMEOUT_MS,
        loader,
        report,
    );
    let statement = bounded(
        raw.database_statement_timeout_ms,
        "database_statement_timeout_ms",
        MAX_STATEMENT_TIMEOUT_MS,
        loader,
        report,
    );
    let migration = bounded(
        raw.database_migration_timeout_ms,
        "database_migration_timeout_ms",
        MAX_MIGRATION_TIMEOUT_MS,
        loader,
        report,
    );
    DatabaseSettings {
        url,
        kind,
        pool_size: u32::try_from(pool_size).unwrap_or(1),
        connect_timeout: Duration::from_millis(connect),
        statement_timeout: Duration::from_millis(statement),
        migration_timeout: Duration::from_millis(migration),
    }
}

/// `APP_TRUSTED_PROXIES` parsed; in `prod`, networks wider than /8 (IPv4)
/// or /32 (IPv6) are refused.
fn trusted_proxies(
    proxies: &[String],
    profile: &Profile,
    loader: &Loader,
    report: &mut Report,
) -> Vec<IpNet> {
    let mut trusted_proxies = Vec::with_capacity(proxies.len());
    for proxy in proxies {
        match parse_network(proxy, "APP_TRUSTED_PROXIES") {
            Ok(net) => trusted_proxies.push(net),
            Err(e) => {
                report.problem(loader.setting("trusted_proxies"), e.rule().to_owned());
                break;
            }
        }
    }
    if *profile == Profile::Prod && trusted_proxies.iter().any(too_wide) {
        report.problem(
            loader.setting("trusted_proxies"),
            "must not contain a network wider than /8 (IPv4) or /32 (IPv6) in prod: \
         anyone inside it could set the client address",
        );
    }
    trusted_proxies
}

/// A trusted-proxy network so wide that trusting it makes forwarding
/// headers spoofable by a large part of the Internet.
fn too_wide(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() < 8,
        IpNet::V6(v6) => v6.prefix_len() < 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8";

    #[test]
    fn defaults_in_dev() {
        let s = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.profile, Profile::Dev);
        assert_eq!(s.database.url.expose_secret(), "sqlite://./data/app.db");
        assert_eq!(s.database.kind, Kind::Sqlite);
        assert_eq!(s.database.pool_size, db::DEFAULT_POOL_SIZE);
        assert_eq!(s.database.connect_timeout, db::DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(s.database.statement_timeout, db::DEFAULT_STATEMENT_TIMEOUT);
        assert_eq!(s.database.migration_timeout, db::DEFAULT_MIGRATION_TIMEOUT);
        assert!(s.cors_origins.is_empty() && s.trusted_proxies.is_empty());
        // The generated key is announced.
        assert_eq!(s.warnings.warnings()[0].setting, "APP_JWT_SECRET");
    }

    #[test]
    fn all_problems_reported_at_once_without_values() {
        let report = Settings::from_vars([
            ("APP_LISTEN", "nowhere-value"),
            ("APP_PROFILE", "prod"),
            ("APP_DATABASE_URL", "mysql://user:pw-value@db/app"),
            ("APP_DATABASE_POOL_SIZE", "0"),
            ("APP_TRUSTED_PROXIES", "10.0.0.0/8, bogus-value"),
            ("APP_CORS_ORIGINS", "*"),
            ("APP_REDIS_URL", "http://cache-value"),
            ("APP_METRICS_TOKEN", "token-value"),
        ])
        .unwrap_err();
        let text = report.to_string();
        for setting in [
            "APP_LISTEN",
            "APP_DATABASE_URL",
            "APP_DATABASE_POOL_SIZE",
            "APP_TRUSTED_PROXIES",
            "APP_CORS_ORIGINS",
            "APP_REDIS_URL",
            "APP_METRICS_TOKEN",
            "APP_JWT_SECRET",
        ] {
            assert!(
                text.contains(&format!("  {setting}: ")),
                "{setting} missing from {text}"
            );
        }
        assert!(!text.contains("-value"), "{text}");
    }

    #[test]
    fn lists_from_env_and_prod_with_a_strong_key() {
        let s = Settings::from_vars([
            ("APP_PROFILE", "prod"),
            ("APP_JWT_SECRET", STRONG),
            (
                "APP_CORS_ORIGINS",
                " https://a.example , https://b.example,",
            ),
            ("APP_TRUSTED_PROXIES", "10.0.0.0/8,::1"),
        ])
        .unwrap();
        assert_eq!(s.cors_origins, ["https://a.example", "https://b.example"]);
        let proxies: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
        assert!(s.warnings.warnings().is_empty());
        assert!(!format!("{s:?}").contains(&STRONG[..8]));
    }

    #[test]
    fn the_pwned_api_url_must_be_an_http_url_and_https_in_prod_off_loopback() {
        let s = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(s.pwned_api_url, None, "off by default");
        for bad in [
            "api.pwnedpasswords.com",
            "ftp://x",
            "http://",
            "https://u:p@x/",
        ] {
            let report = Settings::from_vars([("APP_PWNED_API_URL", bad)]).unwrap_err();
            assert!(
                report
                    .to_string()
                    .contains("APP_PWNED_API_URL: must be an http:// or https:// URL"),
                "{bad}: {report}"
            );
        }
        let prod = |url: &str| {
            Settings::from_vars([
                ("APP_PROFILE", "prod"),
                ("APP_JWT_SECRET", STRONG),
                ("APP_PWNED_API_URL", url),
            ])
        };
        let report = prod("http://pwned.internal:8080").unwrap_err();
        assert!(
            report
                .to_string()
                .contains("APP_PWNED_API_URL: must be an https:// URL in prod")
        );
        for fine in [
            "https://api.pwnedpasswords.com",
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
            "http://localhost:9000",
        ] {
            assert_eq!(prod(fine).unwrap().pwned_api_url.as_deref(), Some(fine));
        }
        // dev accepts plain http anywhere (a local experiment).
        assert!(Settings::from_vars([("APP_PWNED_API_URL", "http://pwned.internal")]).is_ok());
    }

    #[test]
    fn prod_refuses_trusted_proxy_networks_wider_than_a_slash_8_or_32() {
        for wide in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/7",
            "2001:db8::/31",
            "0.0.0.0/0,::/0",
        ] {
            let report = Settings::from_vars([
                ("APP_PROFILE", "prod"),
                ("APP_JWT_SECRET", STRONG),
                ("APP_TRUSTED_PROXIES", wide),
            ])
            .unwrap_err();
            assert!(
                report
                    .to_string()
                    .contains("APP_TRUSTED_PROXIES: must not contain"),
                "{wide}"
            );
        }
        for fine in ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"] {
            Settings::from_vars([
                ("APP_PROFILE", "prod"),
                ("APP_JWT_SECRET", STRONG),
                ("APP_TRUSTED_PROXIES", fine),
            ])
            .unwrap();
        }
        // dev accepts them (a local experiment), prod never does.
        assert!(Settings::from_vars([("APP_TRUSTED_PROXIES", "0.0.0.0/0")]).is_ok());
    }

    #[test]
    fn the_metrics_listener_is_an_address() {
        let s = Settings::from_vars([("APP_METRICS_LISTEN", "127.0.0.1:9090")]).unwrap();
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9090".parse().unwrap()));
        let report = Settings::from_vars([("APP_METRICS_LISTEN", "everywhere")]).unwrap_err();
        assert!(
            report
                .to_string()
                .contains("APP_METRICS_LISTEN: must be an IP address")
        );
    }

    #[test]
    fn the_files_quota_defaults_to_100_mib_and_1000_files_and_is_checked() {
        let s = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!((s.files_max_bytes, s.files_max_count), (104_857_600, 1_000));
        let s = Settings::from_vars([
            ("APP_FILES_MAX_BYTES", "1048576"),
            ("APP_FILES_MAX_COUNT", "10"),
        ])
        .unwrap();
        assert_eq!((s.files_max_bytes, s.files_max_count), (1_048_576, 10));
        for bad in ["0", "-1", "ten", "1.5", "9223372036854775808", "100MiB"] {
            let report =
                Settings::from_vars([("APP_FILES_MAX_BYTES", bad), ("APP_FILES_MAX_COUNT", bad)])
                    .unwrap_err();
            let text = report.to_string();
            for setting in ["APP_FILES_MAX_BYTES", "APP_FILES_MAX_COUNT"] {
                assert!(
                    text.contains(&format!("  {setting}: must ")),
                    "{bad}: {text}"
                );
            }
        }
    }

    #[test]
    fn the_redis_timeout_defaults_to_the_store_default_and_is_checked() {
        let s = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert_eq!(
            s.redis_timeout,
            palisade::store::RedisOptions::default().timeout()
        );
        let s = Settings::from_vars([("APP_REDIS_TIMEOUT_MS", "2000")]).unwrap();
        assert_eq!(s.redis_timeout, std::time::Duration::from_secs(2));
        for bad in ["0", "-1", "60001", "1.5", "50ms"] {
            let text = Settings::from_vars([("APP_REDIS_TIMEOUT_MS", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                text.contains("  APP_REDIS_TIMEOUT_MS: must "),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn postgres_urls_are_secrets_with_pool_settings() {
        const URL: &str = "postgres://app:pw-value-1234@db.example:5432/app?sslmode=verify-full";
        let s = Settings::from_vars([
            ("APP_PROFILE", "prod"),
            ("APP_JWT_SECRET", STRONG),
            ("APP_DATABASE_URL", URL),
            ("APP_DATABASE_POOL_SIZE", "32"),
            ("APP_DATABASE_CONNECT_TIMEOUT_MS", "1500"),
            ("APP_DATABASE_STATEMENT_TIMEOUT_MS", "2500"),
            ("APP_DATABASE_MIGRATION_TIMEOUT_MS", "900000"),
        ])
        .unwrap();
        assert_eq!(s.database.kind, Kind::Postgres);
        assert_eq!(s.database.url.expose_secret(), URL);
        assert_eq!(s.database.pool_size, 32);
        assert_eq!(s.database.connect_timeout, Duration::from_millis(1500));
        assert_eq!(s.database.statement_timeout, Duration::from_millis(2500));
        assert_eq!(s.database.migration_timeout, Duration::from_secs(900));
        assert!(s.warnings.warnings().is_empty(), "{:?}", s.warnings);
        assert!(!format!("{s:?}").contains("pw-value"));
        // `postgresql://` and a unix socket.
        for url in [
            "postgresql://app@localhost/app",
            "postgres://app:pw-value@%2Frun%2Fpostgresql/app",
            "postgres://app:pw-value@localhost/app?host=/run/postgresql",
        ] {
            let s = Settings::from_vars([("APP_DATABASE_URL", url)]).unwrap();
            assert_eq!(s.database.kind, Kind::Postgres, "{url}");
        }
    }

    #[test]
    fn prod_warns_about_a_remote_postgres_without_tls_and_never_prints_the_url() {
        for (url, warned) in [
            ("postgres://app:pw-value@db.example/app", true),
            (
                "postgres://app:pw-value@db.example/app?sslmode=prefer",
                true,
            ),
            (
                "postgres://app:pw-value@db.example/app?sslmode=require",
                false,
            ),
            ("postgres://app:pw-value@127.0.0.1/app", false),
            ("postgres://app:pw-value@x/app?host=/run/postgresql", false),
        ] {
            let s = Settings::from_vars([
                ("APP_PROFILE", "prod"),
                ("APP_JWT_SECRET", STRONG),
                ("APP_DATABASE_URL", url),
            ])
            .unwrap();
            let text = s.warnings.to_string();
            assert_eq!(
                text.contains("APP_DATABASE_URL: reaches"),
                warned,
                "{url}: {text}"
            );
            assert!(
                !text.contains("pw-value") && !text.contains("db.example"),
                "{text}"
            );
            // dev does not warn: a local experiment.
            let dev = Settings::from_vars([("APP_DATABASE_URL", url)]).unwrap();
            assert!(!dev.warnings.to_string().contains("APP_DATABASE_URL"));
        }
    }

    #[test]
    fn database_settings_are_checked_without_printing_the_url() {
        for (url, rule) in [
            ("mysql://a:pw-value@b/c", "must be a sqlite:, postgres://"),
            (
                "postgres://a:pw-value@b/c?pw-value",
                "has a query parameter",
            ),
            (
                "postgres://a:pw-value@b/c?sslmode=pw-value",
                "is not a valid",
            ),
        ] {
            let text = Settings::from_vars([("APP_DATABASE_URL", url)])
                .unwrap_err()
                .to_string();
            assert!(
                text.contains(&format!("APP_DATABASE_URL: {rule}")),
                "{text}"
            );
            assert!(!text.contains("pw-value"), "{text}");
        }
        for (key, bad) in [
            ("APP_DATABASE_POOL_SIZE", "1001"),
            ("APP_DATABASE_POOL_SIZE", "none"),
            ("APP_DATABASE_CONNECT_TIMEOUT_MS", "0"),
            ("APP_DATABASE_CONNECT_TIMEOUT_MS", "60001"),
            ("APP_DATABASE_STATEMENT_TIMEOUT_MS", "600001"),
            ("APP_DATABASE_MIGRATION_TIMEOUT_MS", "0"),
            ("APP_DATABASE_MIGRATION_TIMEOUT_MS", "3600001"),
        ] {
            let text = Settings::from_vars([(key, bad)]).unwrap_err().to_string();
            assert!(
                text.contains(&format!("{key}: must be a whole number")),
                "{text}"
            );
        }
    }

    #[test]
    fn the_database_url_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("database_url");
        std::fs::write(&file, "postgres://app:pw-value@localhost/app\n").unwrap();
        let s = Settings::from_vars([("APP_DATABASE_URL_FILE", file.to_str().unwrap())]).unwrap();
        assert_eq!(s.database.kind, Kind::Postgres);
        assert_eq!(
            s.database.url.expose_secret(),
            "postgres://app:pw-value@localhost/app"
        );
    }

    #[test]
    fn unknown_settings_are_reported() {
        let report = Settings::from_vars([("APP_JWT_SECRT", STRONG)]).unwrap_err();
        assert_eq!(
            report.problems()[0].to_string(),
            "APP_JWT_SECRT: is not a known setting"
        );
    }
}

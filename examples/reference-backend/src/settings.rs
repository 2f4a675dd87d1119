//! The backend's settings, read from `APP_*` environment variables.
//!
//! Every problem is collected and reported at once, one line per setting,
//! naming the rule and never the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use palisade::core::ConfigError;
use palisade::core::client_ip::parse_network;
use palisade::prelude::*;

/// The deployment profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Local development.
    Dev,
    /// Production: every protection enforced, nothing generated.
    Prod,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dev => "dev",
            Self::Prod => "prod",
        })
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen (`APP_LISTEN`).
    pub listen: SocketAddr,
    /// `APP_PROFILE`.
    pub profile: Profile,
    /// `APP_DATA_DIR`: the SQLite file and uploads live here.
    pub data_dir: PathBuf,
    /// `APP_DATABASE_URL`, default `sqlite://<data dir>/app.db`.
    pub database_url: String,
    /// `APP_TRUSTED_PROXIES`: CIDRs whose forwarding headers are believed.
    pub trusted_proxies: Vec<String>,
    /// `APP_CORS_ORIGINS`: exact origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
}

/// Every problem found in the settings.
#[derive(Debug, Default)]
pub struct SettingsReport {
    problems: Vec<ConfigError>,
}

impl SettingsReport {
    fn push(&mut self, error: ConfigError) {
        self.problems.push(error);
    }

    /// The problems found.
    pub fn problems(&self) -> &[ConfigError] {
        &self.problems
    }
}

impl fmt::Display for SettingsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "configuration refused ({} problem(s)):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

fn list(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsReport> {
        Self::from_map(
            &std::env::vars()
                .filter(|(k, _)| k.starts_with("APP_"))
                .collect(),
        )
    }

    /// Reads the settings from `APP_*` variables in `env`.
    pub fn from_map(env: &BTreeMap<String, String>) -> Result<Self, SettingsReport> {
        let mut report = SettingsReport::default();
        let listen = env
            .get("APP_LISTEN")
            .map_or("127.0.0.1:8080", String::as_str)
            .parse::<SocketAddr>()
            .unwrap_or_else(|_| {
                report.push(ConfigError::new(
                    "APP_LISTEN",
                    "must be an IP address and port, e.g. 127.0.0.1:8080",
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            });
        let profile = match env.get("APP_PROFILE").map(String::as_str) {
            None | Some("dev") => Profile::Dev,
            Some("prod") => Profile::Prod,
            Some(_) => {
                report.push(ConfigError::new("APP_PROFILE", "must be `dev` or `prod`"));
                Profile::Dev
            }
        };
        let data_dir = PathBuf::from(env.get("APP_DATA_DIR").map_or("./data", String::as_str));
        let database_url = env
            .get("APP_DATABASE_URL")
            .cloned()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("app.db").display()));
        if !database_url.starts_with("sqlite:") {
            report.push(ConfigError::new(
                "APP_DATABASE_URL",
                "must be a sqlite: URL (the only database this build supports)",
            ));
        }
        let trusted_proxies = list(env.get("APP_TRUSTED_PROXIES"));
        for proxy in &trusted_proxies {
            if let Err(e) = parse_network(proxy, "APP_TRUSTED_PROXIES") {
                report.push(e);
                break;
            }
        }
        let cors_origins = list(env.get("APP_CORS_ORIGINS"));
        if let Err(e) = Cors::new()
            .allow_origins(cors_origins.iter().cloned())
            .build()
        {
            report.push(ConfigError::new("APP_CORS_ORIGINS", e.rule().to_owned()));
        }
        if report.problems.is_empty() {
            Ok(Self {
                listen,
                profile,
                data_dir,
                database_url,
                trusted_proxies,
                cors_origins,
            })
        } else {
            Err(report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults() {
        let s = Settings::from_map(&env(&[])).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.profile, Profile::Dev);
        assert_eq!(s.database_url, "sqlite://./data/app.db");
        assert!(s.cors_origins.is_empty() && s.trusted_proxies.is_empty());
    }

    #[test]
    fn all_problems_reported_at_once_without_values() {
        let report = Settings::from_map(&env(&[
            ("APP_LISTEN", "nowhere-value"),
            ("APP_PROFILE", "staging-value"),
            ("APP_DATABASE_URL", "postgres://user:pw-value@db/app"),
            ("APP_TRUSTED_PROXIES", "10.0.0.0/8, bogus-value"),
            ("APP_CORS_ORIGINS", "*"),
        ]))
        .unwrap_err();
        let text = report.to_string();
        for setting in [
            "APP_LISTEN",
            "APP_PROFILE",
            "APP_DATABASE_URL",
            "APP_TRUSTED_PROXIES",
            "APP_CORS_ORIGINS",
        ] {
            assert!(text.contains(setting), "{setting} missing from {text}");
        }
        assert_eq!(report.problems().len(), 5);
        assert!(!text.contains("-value"), "{text}");
    }

    #[test]
    fn lists_are_trimmed() {
        let s = Settings::from_map(&env(&[
            (
                "APP_CORS_ORIGINS",
                " https://a.example , https://b.example,",
            ),
            ("APP_TRUSTED_PROXIES", "10.0.0.0/8,::1"),
        ]))
        .unwrap();
        assert_eq!(s.cors_origins, ["https://a.example", "https://b.example"]);
        assert_eq!(s.trusted_proxies, ["10.0.0.0/8", "::1"]);
    }
}

//! The figment-based loader: defaults < optional TOML file < `PREFIX_*`
//! environment variables < `PREFIX_*_FILE` secret files.
//!
//! - The profile comes from `PREFIX_PROFILE` (or `profile` in the file):
//!   `dev` (the default), `prod`, or any custom name, which is as strict as `prod`.
//! - The file is named by `PREFIX_CONFIG` and uses the same keys, lower-case,
//!   without the prefix.
//! - `PREFIX_X_FILE=/run/secrets/x` reads the value of `x` from a file (Docker
//!   and Kubernetes secrets), trailing newline removed; a file readable by group
//!   or others is a warning; setting both `PREFIX_X` and `PREFIX_X_FILE` is a
//!   problem.
//! - Values of keys that look like secrets (`*secret*`, `*password*`,
//!   `*token*`, `*key*`) are always strings; other values are parsed as figment
//!   parses environment variables (numbers, booleans, arrays).
//! - figment's own errors quote the offending values; they are translated into
//!   rules that name the setting only.
//!
//! # Example
//!
//! ```
//! use palisade_config::{Loader, Profile};
//! use serde::Deserialize;
//! use validator::Validate;
//!
//! #[derive(Debug, Default, Deserialize, Validate)]
//! #[serde(default)]
//! struct Config {
//!     #[validate(range(min = 1, max = 64, message = "must be between 1 and 64"))]
//!     pool_size: u32,
//! }
//!
//! let loaded = Loader::new("APP")
//!     .with_env([("APP_PROFILE", "prod"), ("APP_POOL_SIZE", "8")])
//!     .load::<Config>()
//!     .unwrap();
//! assert_eq!(loaded.profile, Profile::Prod);
//! assert_eq!(loaded.config.pool_size, 8);
//!
//! let report = Loader::new("APP").with_env([("APP_POOL_SIZE", "1000")]).load::<Config>().unwrap_err();
//! assert_eq!(report.problems()[0].to_string(), "APP_POOL_SIZE: must be between 1 and 64");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Provider};
use serde::de::DeserializeOwned;
use validator::Validate;

use crate::report::Report;

/// A deployment profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Profile {
    /// Local development: missing secrets may be generated.
    #[default]
    Dev,
    /// Production.
    Prod,
    /// Any other name (staging, ci...): as strict as `prod`.
    Custom(String),
}

impl Profile {
    /// Parses a profile name (`[a-z0-9_-]{1,32}`).
    pub fn parse(name: &str) -> Option<Self> {
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        match name {
            "dev" => Some(Self::Dev),
            "prod" => Some(Self::Prod),
            _ if valid => Some(Self::Custom(name.to_owned())),
            _ => None,
        }
    }

    /// Whether this is the development profile (the only lenient one).
    pub fn is_dev(&self) -> bool {
        *self == Self::Dev
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Dev => "dev",
            Self::Prod => "prod",
            Self::Custom(name) => name,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The configuration.
    pub config: T,
    /// The profile.
    pub profile: Profile,
    /// Warnings to log (e.g. a secret file readable by others).
    pub warnings: Report,
    explicit: BTreeSet<String>,
}

impl<T> Loaded<T> {
    /// Whether `key` (lower-case, without prefix) was set by the file, the
    /// environment or a secret file, rather than left at its default.
    pub fn is_explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Refuses a URL setting that was left at a default pointing at another
    /// machine: a default like `redis://cache.prod.internal` silently sends a
    /// developer's (or a misconfigured instance's) traffic to production.
    /// Defaults may only point at the local machine (loopback, `localhost`,
    /// unix sockets, local files).
    pub fn check_url_fallback(
        &self,
        key: &str,
        setting: &str,
        url: Option<&str>,
        report: &mut Report,
    ) {
        if let Some(url) = url
            && !self.is_explicit(key)
            && !is_local_url(url)
        {
            report.problem(
                setting,
                "defaults to a URL on another machine; set it explicitly",
            );
        }
    }
}

/// Whether `url` designates this machine: a file or unix socket, or a host
/// that is loopback or `localhost`.
fn is_local_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    if scheme == "sqlite" || scheme == "file" || scheme.ends_with("+unix") || scheme == "unix" {
        return true;
    }
    let Some(authority) = rest.strip_prefix("//") else {
        return false;
    };
    let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Loads a configuration. See the [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct Loader {
    prefix: String,
    env: Option<BTreeMap<String, String>>,
}

fn is_secret_key(key: &str) -> bool {
    ["secret", "password", "token", "key"]
        .iter()
        .any(|w| key.contains(w))
}

impl Loader {
    /// A loader for variables named `<prefix>_*` (e.g. `APP`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('_').to_ascii_uppercase(),
            env: None,
        }
    }

    /// Uses these variables instead of the process environment (for tests and tools).
    pub fn with_env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The name of the variable for `key` (`jwt_secret` → `APP_JWT_SECRET`).
    pub fn setting(&self, key: &str) -> String {
        format!("{}_{}", self.prefix, key.to_ascii_uppercase())
    }

    fn vars(&self) -> BTreeMap<String, String> {
        let prefix = format!("{}_", self.prefix);
        match &self.env {
            Some(env) => env
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => std::env::vars()
                .filter(|(k, _)| k.starts_with(&prefix))
                .collect(),
        }
    }

    /// Loads, deserialises and validates `T`; every problem is in the report.
    pub fn load<T: DeserializeOwned + Validate>(&self) -> Result<Loaded<T>, Report> {
        let mut report = Report::default();
        let vars = self.vars();
        let prefix = format!("{}_", self.prefix);
        let profile_var = self.setting("profile");
        let config_var = self.setting("config");

        let mut figment = Figment::new();
        let mut explicit = BTreeSet::new();
        let mut file_profile = None;
        if let Some(path) = vars.get(&config_var) {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(table) => {
                        explicit.extend(table.keys().cloned());
                        file_profile = table
                            .get("profile")
                            .and_then(|p| p.as_str().map(str::to_owned));
                        figment = figment.merge(Toml::string(&text));
                    }
                    Err(_) => report.problem(&config_var, "the file is not valid TOML"),
                },
                Err(_) => report.problem(&config_var, "cannot read the file"),
            }
        }

        let mut env = Dict::new();
        let mut files = Dict::new();
        for (name, value) in &vars {
            if *name == profile_var || *name == config_var {
                continue;
            }
            let Some(key) = name.strip_prefix(&prefix).map(str::to_ascii_lowercase) else {
                continue;
            };
            if let Some(key) = key.strip_suffix("_file") {
                if vars.contains_key(&self.setting(key)) {
                    report.problem(
                        name.clone(),
                        format!("set only one of {} and {name}", self.setting(key)),
                    );
                    continue;
                }
                match read_secret_file(Path::new(value)) {
                    Ok((secret, shared)) => {
                        if shared {
                            report.warn(
                                name.clone(),
                                "the file is readable by group or others; restrict it to the service user (chmod 600)",
                            );
                        }
                        files.insert(key.to_owned(), Value::from(secret));
                        explicit.insert(key.to_owned());
                    }
                    Err(()) => report.problem(name.clone(), "cannot read the file"),
                }
                continue;
            }
            let parsed = if is_secret_key(&key) {
                Value::from(value.clone())
            } else {
                Value::from_str(value).unwrap_or_else(|never| match never {})
            };
            env.insert(key.clone(), parsed);
            explicit.insert(key);
        }
        figment = figment
            .merge(DictProvider("environment", env))
            .merge(DictProvider("secret files", files));

        let profile_name = vars.get(&profile_var).cloned().or(file_profile);
        let profile = match profile_name.as_deref().map(Profile::parse) {
            None => Profile::Dev,
            Some(Some(p)) => p,
            Some(None) => {
                report.problem(
                    &profile_var,
                    "must be dev, prod or a name of lower-case letters, digits, '-' and '_'",
                );
                Profile::Dev
            }
        };

        let config = match figment.extract::<T>() {
            Ok(config) => Some(config),
            Err(errors) => {
                for e in errors {
                    let (setting, rule) = self.describe(&e);
                    report.problem(setting, rule);
                }
                None
            }
        };
        if let Some(Err(errors)) = config.as_ref().map(Validate::validate) {
            report.validation(&self.prefix, &errors);
        }
        match config {
            Some(config) if report.is_ok() => Ok(Loaded {
                config,
                profile,
                warnings: report,
                explicit,
            }),
            _ => Err(report),
        }
    }

    /// Translates a figment error into a setting and a rule, dropping the value.
    fn describe(&self, error: &figment::Error) -> (String, String) {
        use figment::error::Kind;
        let path = error.path.join("_");
        let setting = |key: &str| {
            if key.is_empty() {
                format!("{}_*", self.prefix)
            } else {
                self.setting(key)
            }
        };
        match &error.kind {
            Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
                (setting(&path), format!("must be {expected}"))
            }
            Kind::InvalidLength(_, expected) => (setting(&path), format!("must have {expected}")),
            Kind::UnknownVariant(_, expected) => (
                setting(&path),
                format!("must be one of: {}", expected.join(", ")),
            ),
            Kind::UnknownField(field, _) => {
                // figment's path already ends with the unknown field.
                let key = if path.is_empty() {
                    field.clone()
                } else {
                    path.clone()
                };
                (setting(&key), "is not a known setting".to_owned())
            }
            Kind::MissingField(field) => {
                let key = if path.is_empty() {
                    field.to_string()
                } else {
                    format!("{path}_{field}")
                };
                (setting(&key), "is required".to_owned())
            }
            Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
                (setting(&path), "is out of range".to_owned())
            }
            _ => (setting(&path), "is invalid".to_owned()),
        }
    }
}

/// Reads a secret file: trailing CR/LF removed; `true` when group or others can read it.
fn read_secret_file(path: &Path) -> Result<(String, bool), ()> {
    let meta = std::fs::metadata(path).map_err(|_| ())?;
    let text = std::fs::read_to_string(path).map_err(|_| ())?;
    #[cfg(unix)]
    let shared = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o077 != 0
    };
    #[cfg(not(unix))]
    let shared = {
        let _ = &meta;
        false
    };
    Ok((text.trim_end_matches(['\n', '\r']).to_owned(), shared))
}

/// A figment provider over a dictionary built by the loader.
struct DictProvider(&'static str, Dict);

impl Provider for DictProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.0)
    }

    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.1.clone()))
    }
}

#[cfg(test)]
mod tests;

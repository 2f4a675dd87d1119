//! Secrets and configuration validated at start-up.
//!
//! Audits of production backends keep finding `secret_key =
//! "your-secret-key-min-32-characters-change-in-production"`: nothing refused
//! it. This crate refuses it, and reports every other configuration problem in
//! the same run, one line each, naming the setting and the rule but never the
//! value.
//!
//! - [`Loader`]: figment with profiles (`dev`, `prod`, custom), an optional
//!   TOML file, `PREFIX_*` variables and `PREFIX_*_FILE` secret files;
//! - [`keys`]: HMAC and symmetric keys with a known purpose, a [`KeyRing`](keys::KeyRing) for rotation;
//! - [`strength`]: the rules a secret must pass;
//! - [`hmac_key`] and [`secret`]: check the secrets of your config struct,
//!   profile-aware, into the same report;
//! - [`Report`] and [`exit_with`]: one report, exit status 78.
//!
//! Secrets are [`SecretString`]s (from `secrecy`): `Debug` prints
//! `[REDACTED]`, there is no `Display` and no `Serialize`, and the memory is
//! zeroized on drop.
//!
//! Non-secret fields use `validator` rules on your config struct (ranges, URLs,
//! your own functions); the loader reports them with everything else. Secrets
//! are checked with [`hmac_key`] and [`secret`] instead, never with a
//! `validator` rule: `validator` copies a field's value into the error it
//! returns (which is why it requires `Serialize`, and why `secrecy` refuses).
//!
//! # The rules
//!
//! | rule | refuses | rationale | source |
//! | --- | --- | --- | --- |
//! | key length | HS256 keys under 32 bytes, HS384 under 48, HS512 under 64 (measured decoded for base64/hex) | a shorter key weakens the MAC below its hash size | RFC 7518 §3.2 |
//! | published defaults | 50+ secrets from templates, docs and audits (Superset CVE-2023-27524, Airflow CVE-2020-17526, Supabase, jose, jwt.io, Strapi...) | attackers try them first; several look random | OWASP ASVS 5 V13.3 (no default secrets) |
//! | placeholder words | `changeme`, `change-in-production`, `your-…`, `replace…`, `secret`, `password`, `example`, `default`, `sample`, `insecure`, `placeholder`, whole-word `test`/`dummy`/`demo` | a placeholder is a public value; entropy alone accepts long ones | OWASP ASVS 5 V13.3, CWE-1392 (default credentials) |
//! | template syntax | `${NAME}`, `{{ name }}`, `<your key here>` | an unrendered template | CWE-1392 |
//! | runs, sequences, keyboard walks | 10+ repeated or consecutive, 8+ neighbouring characters | padding and guessable patterns | NIST SP 800-63B §3.1.1.2 |
//! | entropy | under 3 bits per character or 100 bits in all (Shannon) | a small alphabet | NIST SP 800-63B §3.1.1.2 (guessable values), OWASP Cryptographic Storage |
//! | guessable | a guesses estimate (zxcvbn-style: dictionary words and names, passphrases, years, leetspeak, keyboard walks, sequences, repeated and near-repeated blocks of any period) under 5 bits per needed byte (160 bits for HS256), or a key a third cheaper than random characters without that much randomness besides ([`strength`]) | an HMAC key is cracked offline from any token it signed, then every token forged: **a key must be 32+ bytes from a CSPRNG**, e.g. `openssl rand -base64 48` | RFC 7518 §3.2, RFC 8725 §3.5 (human-memorizable passwords must not be used as keys), NIST SP 800-63B §3.1.1.2 |
//! | missing secret | in `prod` and custom profiles; in `dev` a random key is generated with a WARN (tokens do not survive a restart) | no implicit weak fallback | OWASP ASVS 5 V13.3 |
//! | remote fallback URL | a URL setting left at a default that points at another machine ([`Loaded::check_url_fallback`]) | a default must never route traffic to production silently | OWASP ASVS 5 V13.1 (configuration) |
//! | both `X` and `X_FILE` | ambiguous source | which one is live? | — |
//! | secret file readable by others | warning | other local users can read the key | CIS Docker benchmark 5.x |
//! | figment type errors | reported by setting, without the value | values may be secrets | — |
//!
//! # Example
//!
//! ```
//! use palisade_config::keys::{HmacAlgorithm, KeyEncoding};
//! use palisade_config::{Profile, Report, SecretString, hmac_key};
//!
//! let mut report = Report::default();
//! let weak = SecretString::from("your-secret-key-min-32-characters-change-in-production");
//! let key = hmac_key(Some(&weak), "APP_JWT_SECRET", HmacAlgorithm::Hs256, KeyEncoding::Raw, &Profile::Dev, &mut report);
//! assert!(key.is_none());
//! let line = report.problems()[0].to_string();
//! assert!(line.starts_with("APP_JWT_SECRET: ") && !line.contains("change-in-production"));
//!
//! // In dev, a missing secret is generated with a warning.
//! let mut report = Report::default();
//! let key = hmac_key(None, "APP_JWT_SECRET", HmacAlgorithm::Hs256, KeyEncoding::Raw, &Profile::Dev, &mut report);
//! assert!(key.is_some() && report.is_ok() && report.warnings().len() == 1);
//! ```

pub mod keys;
mod loader;
mod report;
pub mod strength;

pub use loader::{Loaded, Loader, Profile};
pub use report::{EX_CONFIG, Problem, Report, exit_with};
pub use secrecy::{ExposeSecret, SecretString};

use keys::{HmacAlgorithm, HmacKey, KeyEncoding};

/// An optional secret of `setting` (an API token, a password for a service):
/// when set it must pass the strength rules for `min_len` bytes; when missing
/// it stays missing. Returns the secret only when it is acceptable.
pub fn secret<'a>(
    value: Option<&'a SecretString>,
    setting: &str,
    min_len: usize,
    report: &mut Report,
) -> Option<&'a SecretString> {
    let value = value?;
    match keys::check(value.expose_secret(), KeyEncoding::Raw, min_len) {
        Ok(_) => Some(value),
        Err(e) => {
            report.problem(setting, e.to_string());
            None
        }
    }
}

/// The signing key of `setting`: validated when set; generated (with a
/// warning) when missing in `dev`; a problem when missing in any other profile.
pub fn hmac_key(
    value: Option<&SecretString>,
    setting: &str,
    algorithm: HmacAlgorithm,
    encoding: KeyEncoding,
    profile: &Profile,
    report: &mut Report,
) -> Option<HmacKey> {
    match value {
        Some(secret) => match HmacKey::parse(secret.expose_secret(), algorithm, encoding) {
            Ok(key) => Some(key),
            Err(e) => {
                report.problem(setting, e.to_string());
                None
            }
        },
        None if profile.is_dev() => {
            if let Ok(key) = HmacKey::generate(algorithm) {
                report.warn(
                    setting,
                    "not set: generated a random key for this run; tokens will not survive a restart",
                );
                Some(key)
            } else {
                report.problem(setting, "not set, and no random key could be generated");
                None
            }
        }
        None => {
            report.problem(setting, format!("is required in the {profile} profile"));
            None
        }
    }
}

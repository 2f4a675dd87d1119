//! The security audit: named checks against a running service or an
//! in-process tower service, each reporting what it sent, what came back,
//! what was expected and how to fix it.
//!
//! The `palisade-audit` command is a thin wrapper around [`Audit`]; in a
//! service's own tests the same checks are assertions:
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use palisade_testkit::audit::{Audit, Check, Target};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A bare service: no security headers, no request id.
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let report = Audit::new(Target::service(app))
//!     .only(&[Check::SecurityHeaders, Check::RequestId])
//!     .run()
//!     .await;
//! assert!(!report.passed());
//! let headers = report.result(Check::SecurityHeaders).unwrap();
//! assert!(headers.is_fail());
//! assert!(headers.to_string().contains("Content-Security-Policy"));
//! # });
//! ```
//!
//! In a `#[tokio::test]`, `report.assert_passed()` fails the test with every
//! finding spelled out.
//!
//! # What it sends
//!
//! Only requests to the target: nothing is resolved or fetched elsewhere,
//! and redirects are reported, never followed. The login checks spend the
//! login budget of the auditing address and leave the audited account locked
//! (use a dedicated account, or let the audit register one); the rate-limit
//! check runs last because it spends the address's request budget.

mod checks;
mod report;
mod target;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use report::{CheckResult, Finding, Outcome, Report};
pub use target::{EXCHANGE_TIMEOUT, Target, UrlError};

/// One named check, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Check {
    /// CSP (no `unsafe-inline` scripts without a nonce or hash), HSTS of at
    /// least a year, `nosniff`, framing, referrer policy; `no-store` for APIs.
    SecurityHeaders,
    /// No `Server`, `X-Powered-By` or framework version header.
    NoBanner,
    /// Error answers (404, 405) keep `nosniff` and the CSP.
    HeadersOnErrors,
    /// A valid incoming `X-Request-Id` echoed; invalid ones replaced; one
    /// generated when none is sent.
    RequestId,
    /// Errors are `application/problem+json` and leak no stack trace, SQL or
    /// path.
    ProblemJson,
    /// A foreign origin is not reflected, its preflight is refused, `*` never
    /// comes with credentials.
    Cors,
    /// A body declared far above any limit is refused with 413 before it is
    /// sent; a chunked one is cut with 413 at the limit.
    BodyLimit,
    /// A request head trickled byte by byte is cut within a bound.
    Slowloris,
    /// `TRACE` and an unknown method: no 5xx, nothing echoed.
    UnsafeMethods,
    /// A 64 KiB header and 500 headers: no 5xx, nothing echoed.
    OversizedHeaders,
    /// The traversal corpus never yields a file outside the root (a canary
    /// planted through the API, system files) nor a 5xx.
    FileTraversal,
    /// Forged JWTs (alg none, wrong key, algorithm confusion, tampered
    /// claims, expired, future nbf, unknown kid...) are all refused.
    JwtForgeries,
    /// A wrong password for a known and for an unknown account answer the
    /// same.
    LoginEnumeration,
    /// After the configured failures, the correct password is refused.
    LoginLockout,
    /// The per-client login limit answers 429 with `Retry-After`.
    LoginRateLimit,
    /// A burst of requests from one client meets a 429 with `Retry-After`.
    RateLimit,
}

impl Check {
    /// Every check, in run order.
    pub const ALL: [Self; 16] = [
        Self::SecurityHeaders,
        Self::NoBanner,
        Self::HeadersOnErrors,
        Self::RequestId,
        Self::ProblemJson,
        Self::Cors,
        Self::BodyLimit,
        Self::Slowloris,
        Self::UnsafeMethods,
        Self::OversizedHeaders,
        Self::FileTraversal,
        Self::JwtForgeries,
        Self::LoginEnumeration,
        Self::LoginLockout,
        Self::LoginRateLimit,
        Self::RateLimit,
    ];

    /// The name used by `--only`/`--skip` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::SecurityHeaders => "security-headers",
            Self::NoBanner => "no-banner",
            Self::HeadersOnErrors => "headers-on-errors",
            Self::RequestId => "request-id",
            Self::ProblemJson => "problem-json",
            Self::Cors => "cors",
            Self::BodyLimit => "body-limit",
            Self::Slowloris => "slowloris",
            Self::UnsafeMethods => "unsafe-methods",
            Self::OversizedHeaders => "oversized-headers",
            Self::FileTraversal => "file-traversal",
            Self::JwtForgeries => "jwt-forgeries",
            Self::LoginEnumeration => "login-enumeration",
            Self::LoginLockout => "login-lockout",
            Self::LoginRateLimit => "login-rate-limit",
            Self::RateLimit => "rate-limit",
        }
    }

    /// One line saying what the check proves.
    pub fn description(self) -> &'static str {
        match self {
            Self::SecurityHeaders => {
                "CSP present and no unsafe-inline scripts without a nonce or hash; HSTS >= 1 year; \
                 nosniff; framing denied; a referrer policy; no-store on APIs"
            }
            Self::NoBanner => "no Server, X-Powered-By or framework version header",
            Self::HeadersOnErrors => "404 and 405 answers keep nosniff and the CSP",
            Self::RequestId => {
                "a valid X-Request-Id is echoed, invalid ones (too long, bad characters, encoded \
                 CR/LF, a bare CR on the wire) replaced, one generated when none is sent"
            }
            Self::ProblemJson => {
                "errors are application/problem+json and show no stack trace, SQL or file path"
            }
            Self::Cors => {
                "a foreign Origin is not reflected, its preflight gets no permission, `*` never \
                 with credentials"
            }
            Self::BodyLimit => {
                "a declared 1 GiB body gets 413 after 64 KiB were sent, a chunked one 413 before \
                 32 MiB: the server does not read bodies whole"
            }
            Self::Slowloris => "a request head trickled one line a second is cut within the bound",
            Self::UnsafeMethods => "TRACE and an unknown method: no 5xx, no echo of the request",
            Self::OversizedHeaders => {
                "a 64 KiB header and 500 headers: refused or ignored, no 5xx, no echo"
            }
            Self::FileTraversal => {
                "traversal payloads (encodings single/double, overlong UTF-8, backslashes, drive \
                 and UNC paths, NUL, device names) never store or read a file outside the root, \
                 never a 5xx"
            }
            Self::JwtForgeries => {
                "alg none, wrong and empty keys, algorithm confusion, tampered claims, expired, \
                 future nbf, unknown or injected kid, embedded jwk: all refused (without \
                 --jwt-secret-file, expired and nbf forgeries carry a wrong signature too)"
            }
            Self::LoginEnumeration => {
                "a wrong password for a known and an unknown account get the same status, body \
                 and headers (timing is not measured)"
            }
            Self::LoginLockout => {
                "after the configured failures the correct password is refused (a login for \
                 another account right after tells the lockout from a per-IP limit, whose \
                 refusal from one address leaves the lockout unproven: the notes say which)"
            }
            Self::LoginRateLimit => {
                "login attempts for fresh unknown accounts meet 429 with Retry-After within the \
                 configured limit + 1"
            }
            Self::RateLimit => "a burst of GET / meets 429 with Retry-After",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Check {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|c| c.name()).collect();
                format!("unknown check `{s}`; the checks are: {}", names.join(", "))
            })
    }
}

/// Which header set [`Check::SecurityHeaders`] expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// A JSON API: also `Cache-Control: no-store`.
    #[default]
    Api,
    /// Pages a browser renders: a CSP that restricts scripts.
    Html,
}

/// The login route and how to use it.
#[derive(Clone)]
#[must_use]
pub struct Login {
    path: String,
    template: String,
    account: Option<(String, String)>,
    register: Option<String>,
    token_pointer: String,
    lockout_after: u32,
    limit: u32,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("path", &self.path)
            .field("template", &self.template)
            .field("user", &self.account.as_ref().map(|(u, _)| u))
            .field("register", &self.register)
            .field("token_pointer", &self.token_pointer)
            .field("lockout_after", &self.lockout_after)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// Logins are `POST path` with `template` as a JSON body, where `{user}`
    /// and `{password}` are replaced by the JSON-escaped values (e.g.
    /// `{"email":"{user}","password":"{password}"}`).
    pub fn new(path: &str, template: &str) -> Self {
        Self {
            path: path.to_owned(),
            template: template.to_owned(),
            account: None,
            register: None,
            token_pointer: "/access_token".to_owned(),
            lockout_after: 5,
            limit: 5,
        }
    }

    /// A known account (the lockout check leaves it locked).
    pub fn account(mut self, user: &str, password: &str) -> Self {
        self.account = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Registers a fresh account through `POST path` with the same template
    /// (a random `palisade-audit-…@example.com` and a random password).
    pub fn register(mut self, path: &str) -> Self {
        self.register = Some(path.to_owned());
        self
    }

    /// The JSON pointer of the access token in a successful login's answer
    /// (default `/access_token`).
    pub fn token_pointer(mut self, pointer: &str) -> Self {
        pointer.clone_into(&mut self.token_pointer);
        self
    }

    /// Consecutive failures after which the account is locked (default 5).
    pub fn lockout_after(mut self, failures: u32) -> Self {
        self.lockout_after = failures;
        self
    }

    /// Login attempts one client may make before a 429 (default 5).
    pub fn limit(mut self, attempts: u32) -> Self {
        self.limit = attempts;
        self
    }

    pub(crate) fn body(&self, user: &str, password: &str) -> String {
        let esc = |v: &str| {
            let quoted = serde_json::Value::from(v).to_string();
            quoted
                .get(1..quoted.len().saturating_sub(1))
                .unwrap_or_default()
                .to_owned()
        };
        self.template
            .replace("{user}", &esc(user))
            .replace("{password}", &esc(password))
    }
}

/// An audit of one target: which checks, with which options.
#[derive(Debug, Clone)]
#[must_use]
pub struct Audit {
    target: Target,
    profile: Profile,
    body_path: Option<String>,
    head_timeout: Duration,
    flood: u32,
    login: Option<Login>,
    files: Option<String>,
    protected: Option<String>,
    token: Option<Token>,
    jwt_secret: Option<Token>,
    selected: Vec<Check>,
}

/// A token or key: never in `Debug` output.
#[derive(Clone)]
struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Audit {
    /// Every check against `target`; those needing options not given are
    /// skipped (and say which option).
    pub fn new(target: Target) -> Self {
        Self {
            target,
            profile: Profile::Api,
            body_path: None,
            head_timeout: Duration::from_secs(15),
            flood: 200,
            login: None,
            files: None,
            protected: None,
            token: None,
            jwt_secret: None,
            selected: Check::ALL.to_vec(),
        }
    }

    /// The header profile (default [`Profile::Api`]).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The route that takes a body, for [`Check::BodyLimit`] (default: the
    /// login route, else `/`).
    pub fn body_path(mut self, path: &str) -> Self {
        self.body_path = Some(path.to_owned());
        self
    }

    /// How long a trickled request head may stay open (default 15 s).
    pub fn head_timeout(mut self, bound: Duration) -> Self {
        self.head_timeout = bound;
        self
    }

    /// How many requests [`Check::RateLimit`] sends at most (default 200).
    pub fn flood(mut self, requests: u32) -> Self {
        self.flood = requests;
        self
    }

    /// The login route, for the login checks (and a token for the others).
    pub fn login(mut self, login: Login) -> Self {
        self.login = Some(login);
        self
    }

    /// The file route prefix (`/files`: files live at `/files/<path>`, `PUT`
    /// stores, `GET` reads, `DELETE` removes), for [`Check::FileTraversal`].
    pub fn files(mut self, prefix: &str) -> Self {
        self.files = Some(prefix.trim_end_matches('/').to_owned());
        self
    }

    /// A route that needs a bearer token, for [`Check::JwtForgeries`].
    pub fn protected(mut self, path: &str) -> Self {
        self.protected = Some(path.to_owned());
        self
    }

    /// A valid bearer token (otherwise one is obtained through the login).
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(Token(token.as_bytes().to_vec()));
        self
    }

    /// The service's HMAC signing key, for exactly signed expired and
    /// not-yet-valid forgeries.
    pub fn jwt_secret(mut self, key: &[u8]) -> Self {
        self.jwt_secret = Some(Token(key.to_vec()));
        self
    }

    /// Runs only these checks.
    pub fn only(mut self, checks: &[Check]) -> Self {
        self.selected.retain(|c| checks.contains(c));
        self
    }

    /// Leaves these checks out.
    pub fn skip(mut self, checks: &[Check]) -> Self {
        self.selected.retain(|c| !checks.contains(c));
        self
    }

    /// What `check` needs that was not given, if anything.
    pub fn missing_option(&self, check: Check) -> Option<&'static str> {
        let has_account = self
            .login
            .as_ref()
            .is_some_and(|l| l.account.is_some() || l.register.is_some());
        let has_token = self.token.is_some() || has_account;
        match check {
            Check::FileTraversal if self.files.is_none() || !has_token => {
                Some("a file route (--files) and a token (--token, or a login with an account)")
            }
            Check::JwtForgeries if self.protected.is_none() || !has_token => Some(
                "a protected route (--protected) and a token (--token, or a login with an account)",
            ),
            Check::LoginEnumeration | Check::LoginLockout if !has_account => Some(
                "a login route (--login, --login-body) and an account (--user/--password) or a \
                 register route (--register)",
            ),
            Check::LoginRateLimit if self.login.is_none() => {
                Some("a login route (--login, --login-body)")
            }
            Check::Slowloris if self.target.wire().is_none() => {
                Some("a base URL: connection timeouts live outside an in-process service")
            }
            _ => None,
        }
    }

    /// Runs the selected checks in order.
    pub async fn run(self) -> Report {
        let mut ctx = checks::Ctx::new(&self);
        let mut results = Vec::new();
        for check in self.selected.clone() {
            let result = match self.missing_option(check) {
                Some(missing) => CheckResult::skipped(check, format!("needs {missing}")),
                None => ctx.run(check).await,
            };
            results.push(result);
        }
        Report {
            target: self.target.describe(),
            results,
        }
    }
}

//! The breached-password check: is a new password in a known breach?
//!
//! Asks a range API compatible with the public k-anonymity one ("Pwned
//! Passwords"): `GET {url}/range/{first 5 hex digits of the SHA-1, upper
//! case}` answers lines `SUFFIX:COUNT` for every breached hash with that
//! prefix. Only the prefix leaves the process: the API never sees the
//! password or its full hash. The request sends `Add-Padding: true` (the
//! answer's size then says nothing about the prefix) and padded lines, with
//! a count of 0, are ignored.
//!
//! The call runs through palisade-resilience's [`Outbound`]: a 2 s deadline
//! (body included), retries from a budget, and a circuit breaker (once the
//! API has failed 3 of its last 5 calls it is left alone for 30 s; while the
//! breaker is open the check costs a mutex and a clock read). **It fails
//! open**: when the API is slow, failing or down, [`PwnedCheck::check`]
//! answers [`Breach::Unknown`], logs one WARN line (`palisade::pwned`
//! target, never the password or its hash) and counts it
//! (`palisade_pwned_checks_total{outcome="unavailable"}`): a new password is
//! not refused because a third party is down.
//!
//! [`Login::breach_check`](crate::Login::breach_check) runs it for new
//! passwords, after the policy: a breached one is refused with the
//! `breached` violation (422).
//!
//! Plain `http://` is for a local mirror or a test stub; `https://` needs the
//! `pwned-tls` feature (rustls, with the Mozilla roots compiled in).
//!
//! # Example
//!
//! ```
//! use palisade_auth::pwned::{PwnedCheck, breached_count, range_key};
//!
//! // What is sent, and how the answer is read.
//! let (prefix, suffix) = range_key("password");
//! assert_eq!(prefix, "5BAA6");
//! let body = "1E4C9B93F3F0682250B6CF8331B7EE68FD8:3303003\r\n\
//!             0000000000000000000000000000000000A:0\r\n";
//! assert_eq!(breached_count(body, &suffix), Some(3_303_003));
//! assert_eq!(breached_count(body, "0000000000000000000000000000000000A"), None); // padding
//!
//! // A malformed URL is a configuration error.
//! assert!(PwnedCheck::new("not a url").is_err());
//! assert!(PwnedCheck::new("http://127.0.0.1:9000").is_ok());
//! ```

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_resilience::breaker::{BreakerConfig, CircuitBreaker, Window};
use palisade_resilience::outbound::{Outbound, OutboundError, X_REQUEST_ID};
use palisade_resilience::retry::Retry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};

/// The largest answer read (a padded answer is ~40 KB).
const MAX_BODY: usize = 512 * 1024;

#[cfg(feature = "pwned-tls")]
type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
#[cfg(not(feature = "pwned-tls"))]
type Connector = hyper_util::client::legacy::connect::HttpConnector;

/// Why a range-API URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PwnedUrlError {
    /// Not an absolute `http://` or `https://` URL with a host and no
    /// credentials, query or fragment.
    #[error(
        "must be an http:// or https:// URL with a host, and no credentials, query or fragment"
    )]
    Malformed,
    /// `https://` without the `pwned-tls` feature.
    #[error("https:// needs the `pwned-tls` feature of palisade-auth")]
    TlsUnavailable,
    /// The TLS client could not be set up.
    #[error("the TLS client could not be set up")]
    Tls,
}

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// The password is in this many breached records.
    Found(u64),
    /// Not in any known breach.
    NotFound,
    /// The API did not answer in time or failed: unknown (fail open).
    Unknown,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The breached-password check. Cheap to clone (clones share the breaker).
#[derive(Clone)]
pub struct PwnedCheck {
    base: Arc<str>,
    outbound: Outbound,
    client: Client<Connector, Empty<Bytes>>,
    checks: Family<OutcomeLabels, Counter>,
}

impl fmt::Debug for PwnedCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PwnedCheck")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Checks a range-API base URL: absolute, `http` or `https`, a host, no
/// credentials, query or fragment. Returns it without a trailing `/`.
pub fn parse_url(url: &str) -> Result<Uri, PwnedUrlError> {
    let url = url.trim().trim_end_matches('/');
    if url.contains(['?', '#']) {
        return Err(PwnedUrlError::Malformed);
    }
    let uri: Uri = url.parse().map_err(|_| PwnedUrlError::Malformed)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri
        .authority()
        .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'));
    if scheme_ok && host_ok {
        Ok(uri)
    } else {
        Err(PwnedUrlError::Malformed)
    }
}

/// Whether the URL's host is a loopback address or `localhost` (where plain
/// `http://` is acceptable even in production).
pub fn is_loopback(uri: &Uri) -> bool {
    let Some(host) = uri.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The range key of `password`: the first 5 hex digits of its SHA-1 (sent)
/// and the other 35 (compared locally), upper case.
pub fn range_key(password: &str) -> (String, String) {
    let digest = Sha1::digest(password.as_bytes());
    let mut hex = String::with_capacity(40);
    for b in digest {
        let _ = write!(hex, "{b:02X}");
    }
    let (prefix, suffix) = hex.split_at(5);
    (prefix.to_owned(), suffix.to_owned())
}

/// The count of `suffix` in a range answer (`SUFFIX:COUNT` lines, any line
/// ending, suffixes compared without regard to case); `None` when absent or
/// only present as padding (a count of 0). Malformed lines are skipped.
pub fn breached_count(body: &str, suffix: &str) -> Option<u64> {
    body.lines().find_map(|line| {
        let (s, count) = line.trim().split_once(':')?;
        if !s.trim().eq_ignore_ascii_case(suffix) {
            return None;
        }
        let count: u64 = count.trim().parse().ok()?;
        (count > 0).then_some(count)
    })
}

/// Builder of [`PwnedCheck`].
#[derive(Debug)]
#[must_use]
pub struct PwnedCheckBuilder {
    base: Uri,
    outbound: palisade_resilience::outbound::OutboundBuilder,
}

impl PwnedCheckBuilder {
    /// The deadline of one check, retries and body included (default 2 s).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.outbound = self.outbound.total(d).attempt_timeout(d);
        self
    }

    /// The breaker (default: opens at 3 failures or slow calls of the last
    /// 5, open 30 s doubling up to 5 min after failed probes, slow at 1 s).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.outbound = self.outbound.breaker(config);
        self
    }

    /// The clock of the breaker (tests).
    pub fn clock(mut self, clock: palisade_core::SharedClock) -> Self {
        self.outbound = self.outbound.clock(clock);
        self
    }

    /// The check.
    pub fn build(self) -> Result<PwnedCheck, PwnedUrlError> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector(&self.base)?);
        let checks = Family::<OutcomeLabels, Counter>::default();
        for outcome in ["breached", "clean", "unavailable"] {
            let _ = checks.get_or_create(&OutcomeLabels { outcome });
        }
        Ok(PwnedCheck {
            base: Arc::from(self.base.to_string().trim_end_matches('/')),
            outbound: self.outbound.build(),
            client,
            checks,
        })
    }
}

#[cfg(feature = "pwned-tls")]
fn connector(_base: &Uri) -> Result<Connector, PwnedUrlError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|_| PwnedUrlError::Tls)?
        .https_or_http()
        .enable_http1()
        .build())
}

#[cfg(not(feature = "pwned-tls"))]
fn connector(base: &Uri) -> Result<Connector, PwnedUrlError> {
    if base.scheme_str() == Some("https") {
        return Err(PwnedUrlError::TlsUnavailable);
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    Ok(http)
}

/// Why one attempt failed (for logs: no password, no hash).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed")]
    Request,
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("answer unreadable or too large")]
    Body,
}

impl PwnedCheck {
    /// A check against the range API at `url`, with the defaults.
    pub fn new(url: &str) -> Result<Self, PwnedUrlError> {
        Self::builder(url)?.build()
    }

    /// A builder for a check against the range API at `url`.
    pub fn builder(url: &str) -> Result<PwnedCheckBuilder, PwnedUrlError> {
        let base = parse_url(url)?;
        let outbound = Outbound::builder("pwned")
            .total(Duration::from_secs(2))
            .attempt_timeout(Duration::from_secs(2))
            .retry(
                Retry::new()
                    .max_attempts(2)
                    .backoff(Duration::from_millis(50), Duration::from_millis(200)),
            )
            .breaker(
                BreakerConfig::default()
                    .window(Window::Count(5))
                    .minimum_calls(3)
                    .failure_rate(60)
                    .slow_call_rate(60)
                    .slow_call_duration(Duration::from_secs(1))
                    .open_for(Duration::from_secs(30))
                    .max_open_for(Duration::from_secs(300))
                    .half_open_calls(1),
            );
        Ok(PwnedCheckBuilder { base, outbound })
    }

    /// The circuit breaker in front of the API.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.outbound.breaker()
    }

    /// Registers `palisade_pwned_checks_total{outcome}` (`breached`,
    /// `clean`, `unavailable`) and the breaker's metrics (`breaker="pwned"`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "palisade_pwned_checks",
            "Breached-password checks, by outcome (unavailable = failed open)",
            self.checks.clone(),
        );
        if let Some(breaker) = self.breaker() {
            breaker.register_metrics(registry);
        }
    }

    /// Checks checks made with `outcome` (`breached`, `clean`, `unavailable`).
    pub fn checks(&self, outcome: &'static str) -> u64 {
        self.checks.get_or_create(&OutcomeLabels { outcome }).get()
    }

    /// Is `password` in a known breach? Never fails: an API that cannot
    /// answer gives [`Breach::Unknown`] (logged at WARN and counted).
    pub async fn check(&self, password: &SecretString) -> Breach {
        let (prefix, suffix) = range_key(password.expose_secret());
        let url = format!("{}/range/{prefix}", self.base);
        let result = self
            .outbound
            .call(true, |attempt| {
                let url = url.clone();
                let client = self.client.clone();
                async move {
                    let mut req = Request::get(url)
                        .header("add-padding", "true")
                        .header(http::header::USER_AGENT, "palisade-auth");
                    if let Some(id) = &attempt.request_id {
                        req = req.header(X_REQUEST_ID, id.as_str());
                    }
                    let req = req.body(Empty::new()).map_err(|_| FetchError::Request)?;
                    let res = client.request(req).await.map_err(|_| FetchError::Request)?;
                    if res.status() != StatusCode::OK {
                        return Err(FetchError::Status(res.status()));
                    }
                    let body = Limited::new(res.into_body(), MAX_BODY)
                        .collect()
                        .await
                        .map_err(|_| FetchError::Body)?
                        .to_bytes();
                    String::from_utf8(body.to_vec()).map_err(|_| FetchError::Body)
                }
            })
            .await;
        let (breach, outcome) = match result {
            Ok(body) => match breached_count(&body, &suffix) {
                Some(n) => (Breach::Found(n), "breached"),
                None => (Breach::NotFound, "clean"),
            },
            Err(e) => {
                let detail = match &e {
                    OutboundError::Call(inner) => inner.to_string(),
                    other => other.label().to_owned(),
                };
                tracing::warn!(
                    target: "palisade::pwned",
                    reason = e.label(),
                    detail = %detail,
                    "breached-password check unavailable; the password is accepted without it (fail open)"
                );
                (Breach::Unknown, "unavailable")
            }
        };
        self.checks.get_or_create(&OutcomeLabels { outcome }).inc();
        breach
    }
}

#[cfg(test)]
mod tests;

//! [`Policy`]: a named quota, what it counts by, where it applies, and how it
//! behaves when the store is down.
//!
//! # Example
//!
//! ```
//! use palisade_ratelimit::{KeyBy, Policy};
//! use palisade_store::{FailPolicy, Quota};
//!
//! let login = Policy::new("login", Quota::per_minute(5))
//!     .key(KeyBy::client_ip())
//!     .routes(["/auth/login"])
//!     .methods([http::Method::POST])
//!     .fail(FailPolicy::FailClosed)
//!     .hide_headers();
//! assert_eq!(login.name(), "login");
//! assert!(!login.shows_headers());
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Method};
use ipnet::IpNet;
use palisade_core::ClientIp;
use palisade_store::{FailPolicy, Quota};

use crate::key::KeyBy;

type Predicate = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// One rate limit.
#[derive(Clone)]
#[must_use]
pub struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) key: KeyBy,
    routes: Option<Vec<String>>,
    except_routes: Vec<String>,
    methods: Option<Vec<Method>>,
    pub(crate) fail: FailPolicy,
    pub(crate) headers: bool,
    pub(crate) dry_run: bool,
    bypass_nets: Vec<IpNet>,
    bypass_if: Option<Predicate>,
    pub(crate) warn: Arc<WarnState>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("key", &self.key)
            .field("routes", &self.routes)
            .field("except_routes", &self.except_routes)
            .field("methods", &self.methods)
            .field("fail", &self.fail)
            .field("headers", &self.headers)
            .field("dry_run", &self.dry_run)
            .field("bypass_nets", &self.bypass_nets)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// A policy keyed by client IP on every route, falling back to local
    /// limits when a remote store is down, advertising `RateLimit` headers.
    pub fn new(name: &str, quota: Quota) -> Self {
        Self {
            name: Arc::from(name),
            quota,
            key: KeyBy::client_ip(),
            routes: None,
            except_routes: Vec::new(),
            methods: None,
            fail: FailPolicy::LocalFallback,
            headers: true,
            dry_run: false,
            bypass_nets: Vec::new(),
            bypass_if: None,
            warn: Arc::default(),
        }
    }

    /// What the policy counts by.
    pub fn key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// Applies only to these route patterns (axum's `MatchedPath`, e.g.
    /// `/files/{*path}`), or these exact paths outside a router.
    pub fn routes<I, S>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routes = Some(routes.into_iter().map(Into::into).collect());
        self
    }

    /// Does not apply to these route patterns (matched like
    /// [`Policy::routes`]): e.g. the self-defence routes of a per-user quota
    /// (see [`KeyBy::user`]).
    pub fn except_routes<I, S>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.except_routes
            .extend(routes.into_iter().map(Into::into));
        self
    }

    /// Applies only to these methods.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Some(methods.into_iter().collect());
        self
    }

    /// What to do when the remote store is unreachable (default
    /// `LocalFallback`; use `FailClosed` for authentication routes).
    pub fn fail(mut self, fail: FailPolicy) -> Self {
        self.fail = fail;
        self
    }

    /// Does not send `RateLimit`/`RateLimit-Policy` (auth routes should not
    /// advertise remaining attempts). `Retry-After` is still sent on 429.
    pub fn hide_headers(mut self) -> Self {
        self.headers = false;
        self
    }

    /// Decides, logs and counts, but never refuses: to try a limit on live
    /// traffic first.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Clients in these networks bypass the policy.
    pub fn bypass_networks(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.bypass_nets.extend(nets);
        self
    }

    /// Requests for which `f` is true bypass the policy (e.g. an admin role
    /// set by your auth layer).
    pub fn bypass_if(mut self, f: impl Fn(&Parts) -> bool + Send + Sync + 'static) -> Self {
        self.bypass_if = Some(Arc::new(f));
        self
    }

    /// The routes the policy is limited to, if it is.
    pub(crate) fn scoped_routes(&self) -> Option<&[String]> {
        self.routes.as_deref()
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Whether it sends `RateLimit` headers.
    pub fn shows_headers(&self) -> bool {
        self.headers
    }

    pub(crate) fn applies(&self, parts: &Parts) -> bool {
        if let Some(methods) = &self.methods
            && !methods.contains(&parts.method)
        {
            return false;
        }
        if self.routes.is_none() && self.except_routes.is_empty() {
            return true;
        }
        let route = matched_route(parts);
        if self.except_routes.iter().any(|r| r == route) {
            return false;
        }
        self.routes
            .as_ref()
            .is_none_or(|routes| routes.iter().any(|r| r == route))
    }

    pub(crate) fn bypassed(&self, parts: &Parts) -> bool {
        if let Some(ip) = parts.extensions.get::<ClientIp>()
            && self.bypass_nets.iter().any(|n| n.contains(&ip.ip()))
        {
            return true;
        }
        self.bypass_if.as_ref().is_some_and(|f| f(parts))
    }

    /// `"name";q=<burst>;w=<seconds the burst takes to refill, rounded
    /// up>` — IETF draft `draft-ietf-httpapi-ratelimit-headers`
    /// `RateLimit-Policy` item for the GCRA bucket, so that the `RateLimit`
    /// item's `r` (requests left in the bucket) never exceeds `q` (see the
    /// [layer docs](crate::layer#what-the-quota-headers-say)).
    pub(crate) fn policy_header(&self) -> Option<HeaderValue> {
        let burst = self.quota.burst();
        let refill = self
            .quota
            .interval()
            .checked_mul(burst)
            .unwrap_or(Duration::MAX);
        let window = refill
            .as_secs()
            .saturating_add(u64::from(refill.subsec_nanos() > 0))
            .max(1);
        HeaderValue::try_from(format!("\"{}\";q={burst};w={window}", self.name)).ok()
    }
}

fn matched_route(parts: &Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return matched.as_str();
    }
    parts.uri.path()
}

/// One WARN line per rejection burst: the first rejection after a quiet
/// minute logs, the rest are counted into the next line.
#[derive(Debug, Default)]
pub(crate) struct WarnState {
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// The quiet period that ends a burst.
pub(crate) const BURST_WINDOW_SECS: u64 = 60;

impl WarnState {
    /// Returns `Some(suppressed since the last line)` when this rejection
    /// should be logged.
    pub(crate) fn note(&self, now_secs: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now_secs < last.saturating_add(BURST_WINDOW_SECS) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last
            .compare_exchange(last, now_secs.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| self.suppressed.swap(0, Ordering::Relaxed))
            .or_else(|| {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods_scope_a_policy() {
        let p = Policy::new("login", Quota::per_minute(5))
            .routes(["/auth/login"])
            .methods([Method::POST]);
        let (post, ()) = http::Request::post("/auth/login")
            .body(())
            .unwrap()
            .into_parts();
        let (get, ()) = http::Request::get("/auth/login")
            .body(())
            .unwrap()
            .into_parts();
        let (other, ()) = http::Request::post("/auth/register")
            .body(())
            .unwrap()
            .into_parts();
        assert!(p.applies(&post));
        assert!(!p.applies(&get));
        assert!(!p.applies(&other));
    }

    #[test]
    fn one_warning_per_burst() {
        let w = WarnState::default();
        assert_eq!(w.note(1000), Some(0));
        for t in 1001..1059 {
            assert_eq!(w.note(t), None);
        }
        assert_eq!(w.note(1060), Some(58));
        assert_eq!(w.note(1061), None);
    }

    #[test]
    fn policy_header_advertises_the_bucket() {
        let header = |quota| Policy::new("p", quota).policy_header().unwrap();
        // 50 at once, refilled at 30/s: an empty bucket is full after 5/3 s.
        assert_eq!(
            header(Quota::per_second(30).with_burst(50)),
            "\"p\";q=50;w=2"
        );
        assert_eq!(header(Quota::per_minute(5)), "\"p\";q=5;w=60");
        assert_eq!(header(Quota::per_minute(7)), "\"p\";q=7;w=60");
        assert_eq!(header(Quota::per_second(3)), "\"p\";q=3;w=1");
        // A smaller burst than the rate: 10 refilled at 100/min.
        assert_eq!(
            header(Quota::per_minute(100).with_burst(10)),
            "\"p\";q=10;w=6"
        );
        assert_eq!(header(Quota::per_hour(1)), "\"p\";q=1;w=3600");
    }
}

//! [`RateLimitLayer`]: every applicable policy decided in one store call.
//!
//! For each request the layer picks the policies whose routes and methods
//! match and that the client does not bypass, builds each policy's key, and
//! asks the store once for all of them (all or nothing: a refused request
//! consumes no policy's quota). With the memory store this is synchronous and
//! allocation-free for IP and user keys; with Redis it is one `EVALSHA`.
//!
//! - Allowed: the response carries `RateLimit-Policy` and `RateLimit` for the
//!   most constrained policy (IETF `draft-ietf-httpapi-ratelimit-headers`),
//!   unless one of the request's policies hides them: then none are sent.
//! - Refused: 429 problem+json with `Retry-After` (whole seconds, rounded up)
//!   and the same headers unless the refusing policy hides them.
//! - Store unreachable: each policy's [`FailPolicy`] applies; if any
//!   applicable policy fails closed, 503 problem+json with `Retry-After: 1`.
//! - A [`KeyBy::json_field`](crate::KeyBy::json_field) key without its
//!   field (or a body that is not a JSON object): 400 problem+json naming the
//!   field, reason `unkeyed`, before any quota is spent — unless the key
//!   [fails open](crate::KeyBy::fail_open_when_missing).
//! - Dry-run policies are decided in a second call, counted and logged, and
//!   never refuse.
//!
//! Every decision is counted by policy and outcome
//! (`palisade_ratelimit_decisions_total`); rejections carry the `Rejection`
//! reason `rate_limited` (or `store_unavailable`, `unkeyed`) for the access
//! log; one WARN line per policy per rejection burst.
//!
//! # What the quota headers say
//!
//! A GCRA policy of `limit` per `period` with a `burst` is a bucket of
//! `burst` requests refilling at one per `period / limit`. The headers
//! describe that bucket, so that `r` is always a part of `q`:
//!
//! - `RateLimit-Policy: "name";q=<burst>;w=<seconds an empty bucket takes
//!   to refill, rounded up>` — `Quota::per_second(30).with_burst(50)` is
//!   `q=50;w=2`; without a burst (`burst = limit`) it is simply
//!   `q=<limit>;w=<period>` (`per_minute(5)`: `q=5;w=60`);
//! - `RateLimit: "name";r=<requests left now>;t=<seconds until the bucket
//!   is full again>`, with `r ≤ q` and `t ≤ w` on every response.
//!
//! A client of the draft that spends `r` and then waits `t`, or that paces
//! itself at `q` per `w`, is never refused; the rounding of `w` only makes
//! the advertised rate a little lower than the real one (`50 per 2 s` for
//! 30/s), never higher. Advertising `q=<limit>;w=<period>` instead would
//! let `r` (up to the burst) exceed `q`, which the draft's clients read as
//! more than the whole quota left.
//!
//! Place it inside the router (`Router::layer`) so route patterns are known,
//! and after `ClientIpLayer`.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use palisade_ratelimit::{KeyBy, Policy, RateLimit};
//! use palisade_store::{MemoryStore, Quota, Store};
//!
//! let store = Store::memory(MemoryStore::default());
//! let limits = RateLimit::new(store)
//!     .policy(Policy::new("global", Quota::per_second(30).with_burst(50)))
//!     .policy(
//!         Policy::new("login", Quota::per_minute(5))
//!             .routes(["/auth/login"])
//!             .hide_headers(),
//!     )
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/auth/login", post(|| async { "ok" }))
//!     .layer(limits);
//! # let _ = app;
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{HeaderName, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use palisade_core::body::ResponseBody;
use palisade_core::{ConfigError, ProblemDetails, ProblemType, SharedClock};
use palisade_store::{
    Decision, FailPolicy, GcraRequest, Key, MAX_KEYS, Outcome, Quota, Source, Store, StoreError,
    check_name,
};
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower_layer::Layer;
use tower_service::Service;

use crate::key::{OwnedKey, Unkeyable};
use crate::policy::Policy;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `RateLimit-Policy` header.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The outcomes counted per policy.
const OUTCOMES: [&str; 7] = [
    "allowed",
    "limited",
    "dry_run_limited",
    "bypassed",
    "unavailable",
    "degraded",
    "unkeyed",
];

/// The largest body read to find a JSON key field.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: Arc<str>,
    outcome: &'static str,
}

struct Shared {
    store: Store,
    tag: String,
    policies: Vec<Policy>,
    policy_headers: Vec<Option<HeaderValue>>,
    max_body: usize,
    ipv6_aggregates: Vec<(u8, u32)>,
    decisions: Family<DecisionLabels, Counter>,
    /// Per policy, one counter per entry of [`OUTCOMES`], resolved once so a
    /// decision counts with one atomic increment.
    counters: Vec<[Counter; OUTCOMES.len()]>,
    clock: SharedClock,
    epoch: Instant,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("tag", &self.tag)
            .field("policies", &self.policies)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimitLayer`].
#[derive(Debug)]
#[must_use]
pub struct RateLimit {
    store: Store,
    tag: String,
    policies: Vec<Policy>,
    max_body: usize,
    ipv6_aggregates: Vec<(u8, u32)>,
}

/// The default IPv6 aggregate: every per-IP policy also counts per /48 at
/// 16 times its quota (a tunnel broker hands out a /48, 65,536 /64s).
pub const DEFAULT_IPV6_AGGREGATES: [(u8, u32); 1] = [(48, 16)];

/// Marks an entry of a decision's `which` as an IPv6 aggregate of its policy.
const AGGREGATE: usize = 1 << (usize::BITS - 1);

/// The policy index of a `which` entry, and whether it is an aggregate.
fn policy_of(which: usize) -> (usize, bool) {
    (which & !AGGREGATE, which & AGGREGATE != 0)
}

impl RateLimit {
    /// A limiter over `store` with no policies yet; hash tag `rl`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            tag: "rl".to_owned(),
            policies: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
            ipv6_aggregates: DEFAULT_IPV6_AGGREGATES.to_vec(),
        }
    }

    /// Also counts every policy keyed by client IP per IPv6 `/prefix` (16 to
    /// 63) at `factor` times its quota, in the same atomic decision, so a
    /// client holding a whole prefix cannot multiply its quota by the number
    /// of /64s in it. The default is [`DEFAULT_IPV6_AGGREGATES`] (/48 at
    /// 16×); calling this adds one (e.g. `/56` at 4×).
    pub fn ipv6_aggregate(mut self, prefix: u8, factor: u32) -> Self {
        self.ipv6_aggregates.push((prefix, factor));
        self
    }

    /// **Loosens security**: per-IP policies count only the client's own
    /// network (an IPv6 /64), so a client with a /48 gets 65,536 quotas.
    pub fn without_ipv6_aggregates(mut self) -> Self {
        self.ipv6_aggregates.clear();
        self
    }

    /// Adds a policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// The Redis hash tag of this limiter's keys (one cluster slot; give
    /// independent limiters different tags to spread them).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// The largest body buffered to read a JSON key field (default 64 KiB);
    /// larger bodies are refused with 413 on routes with such a policy.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Checks names and limits and builds the layer.
    ///
    /// # Errors
    ///
    /// A policy name or the tag outside `[A-Za-z0-9._-]{1,64}`, two policies
    /// with one name, more than 8 policies, or a key of more than 3 parts.
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        check_name("ratelimit.tag", &self.tag)
            .map_err(|_| ConfigError::new("ratelimit.tag", "must be 1-64 of [A-Za-z0-9._-]"))?;
        if self.policies.len() > MAX_KEYS {
            return Err(ConfigError::new(
                "ratelimit.policies",
                "at most 8 policies per layer (one store call decides them all)",
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            check_name("ratelimit.policy", &p.name).map_err(|_| {
                ConfigError::new("ratelimit.policy", "names must be 1-64 of [A-Za-z0-9._-]")
            })?;
            if self.policies.iter().take(i).any(|q| q.name == p.name) {
                return Err(ConfigError::new(
                    "ratelimit.policy",
                    "policy names must be unique",
                ));
            }
            if p.key.len() > palisade_store::MAX_PARTS {
                return Err(ConfigError::new(
                    "ratelimit.policy.key",
                    "a key combines at most 3 sources",
                ));
            }
        }
        if self
            .ipv6_aggregates
            .iter()
            .any(|&(prefix, factor)| !(16..=63).contains(&prefix) || factor == 0)
        {
            return Err(ConfigError::new(
                "ratelimit.ipv6_aggregate",
                "the prefix must be 16 to 63 and the factor at least 1",
            ));
        }
        if worst_case_keys(&self.policies, self.ipv6_aggregates.len()) > MAX_KEYS {
            return Err(ConfigError::new(
                "ratelimit.policies",
                "one request may meet at most 8 keys (each per-IP policy counts once more per \
                 IPv6 aggregate): scope policies to fewer routes or use fewer aggregates",
            ));
        }
        let policy_headers = self.policies.iter().map(Policy::policy_header).collect();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let counters = self
            .policies
            .iter()
            .map(|p| {
                OUTCOMES.map(|outcome| {
                    decisions
                        .get_or_create(&DecisionLabels {
                            policy: Arc::clone(&p.name),
                            outcome,
                        })
                        .clone()
                })
            })
            .collect();
        let clock = self.store.local().clock();
        let epoch = clock.now();
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                store: self.store,
                tag: self.tag,
                policies: self.policies,
                policy_headers,
                max_body: self.max_body,
                ipv6_aggregates: self.ipv6_aggregates,
                decisions,
                counters,
                clock,
                epoch,
            }),
        })
    }
}

/// The rate-limiting layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// Registers `palisade_ratelimit_decisions_total{policy, outcome}`;
    /// outcomes: `allowed`, `limited`, `dry_run_limited`, `bypassed`,
    /// `unavailable`, `degraded` (decided by a fallback or failed open),
    /// `unkeyed` (a JSON-field key found no value: refused with 400, or
    /// only counted for a dry-run policy).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "palisade_ratelimit_decisions",
            "Rate limit decisions by policy and outcome",
            self.shared.decisions.clone(),
        );
    }

    /// How many decisions `policy` made with `outcome` so far.
    pub fn decisions(&self, policy: &str, outcome: &'static str) -> u64 {
        self.shared
            .decisions
            .get_or_create(&DecisionLabels {
                policy: Arc::from(policy),
                outcome,
            })
            .get()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The policies that apply to one request, with their keys.
#[derive(Default)]
struct Plan {
    // (policy index, key); `None` key = policy needs the body, not read yet.
    items: [Option<(usize, Option<OwnedKey>)>; MAX_KEYS],
    needs_body: bool,
    has_dry_run: bool,
}

/// What happens to the request.
enum Verdict {
    Allow(Option<(HeaderValue, HeaderValue)>),
    Refuse(Response<Bytes>),
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 { secs + 1 } else { secs }
}

impl Shared {
    fn count(&self, policy: usize, outcome: &'static str) {
        let position = OUTCOMES.iter().position(|o| *o == outcome);
        let counter = self.counters.get(policy).and_then(|c| c.get(position?));
        if let Some(counter) = counter {
            counter.inc();
        }
    }

    /// Picks the policies and builds the keys that need no body.
    fn plan(&self, parts: &Parts) -> Result<Plan, Box<Response<Bytes>>> {
        let mut plan = Plan::default();
        let mut slots = plan.items.iter_mut();
        for (index, policy) in self.policies.iter().enumerate() {
            if !policy.applies(parts) {
                continue;
            }
            if policy.bypassed(parts) {
                self.count(index, "bypassed");
                continue;
            }
            let key = if policy.key.needs_body() {
                plan.needs_body = true;
                None
            } else {
                match policy.key.extract(parts, None) {
                    Ok(Some(key)) => Some(key),
                    Ok(None) => continue,
                    Err(why) => return Err(Box::new(self.unkeyable(index, parts, &why))),
                }
            };
            if let Some(slot) = slots.next() {
                plan.has_dry_run |= policy.dry_run;
                *slot = Some((index, key));
            }
        }
        Ok(plan)
    }

    /// Fills in the keys that come from the JSON body (`None` when the body
    /// is not a JSON object).
    fn complete(
        &self,
        plan: &mut Plan,
        parts: &Parts,
        json: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), Box<Response<Bytes>>> {
        for item in &mut plan.items {
            let Some((index, key)) = item else { continue };
            if key.is_some() {
                continue;
            }
            let Some(policy) = self.policies.get(*index) else {
                continue;
            };
            match policy.key.extract(parts, json) {
                Ok(Some(k)) => *key = Some(k),
                Ok(None) => *item = None,
                // A dry-run policy never refuses: counted, then left out.
                Err(Unkeyable::MissingField(_)) if policy.dry_run => {
                    self.count(*index, "unkeyed");
                    *item = None;
                }
                Err(why) => return Err(Box::new(self.unkeyable(*index, parts, &why))),
            }
        }
        Ok(())
    }

    /// The refusal of a request a policy cannot key.
    fn unkeyable(&self, index: usize, parts: &Parts, why: &Unkeyable) -> Response<Bytes> {
        match why {
            Unkeyable::MissingClientIp => no_client_ip(parts),
            Unkeyable::MissingField(field) => {
                self.count(index, "unkeyed");
                // The field's name is configuration; the value is never
                // quoted (it may be a password sent in the wrong place).
                ProblemDetails::new(ProblemType::BAD_REQUEST)
                    .with_detail(format!(
                        "this route needs a JSON object body with a non-empty string field \"{field}\""
                    ))
                    .with_request_id_from(&parts.extensions)
                    .rejection("unkeyed")
            }
        }
    }

    fn requests<'a>(
        &'a self,
        plan: &'a Plan,
        dry_run: bool,
        out: &mut [GcraRequest<'a>; MAX_KEYS],
        which: &mut [usize; MAX_KEYS],
    ) -> usize {
        let mut n = 0;
        let picked = plan.items.iter().flatten().filter_map(|(index, key)| {
            let policy = self.policies.get(*index)?;
            let key = key.as_ref()?;
            (policy.dry_run == dry_run).then_some((*index, policy, key))
        });
        let mut aggregates = 0;
        for ((slot, w), (index, policy, key)) in out.iter_mut().zip(which.iter_mut()).zip(picked) {
            *slot = GcraRequest::new(key.key(&policy.name), policy.quota);
            *w = index;
            n += 1;
            if policy.key.has_client_ip() {
                aggregates += 1;
            }
        }
        if aggregates == 0 || self.ipv6_aggregates.is_empty() {
            return n;
        }
        // The same policies once more per IPv6 aggregate, in the same call
        // (the builder checked that they fit).
        let main = n;
        for i in 0..main {
            let Some(&index) = which.get(i) else { break };
            let Some(policy) = self.policies.get(index) else {
                continue;
            };
            let key = plan
                .items
                .iter()
                .flatten()
                .find(|(j, _)| *j == index)
                .and_then(|(_, k)| k.as_ref());
            let Some(key) = key.filter(|_| policy.key.has_client_ip()) else {
                continue;
            };
            for &(prefix, factor) in &self.ipv6_aggregates {
                let Some(wider) = key.aggregate(&policy.name, prefix) else {
                    continue;
                };
                let (Some(slot), Some(w)) = (out.get_mut(n), which.get_mut(n)) else {
                    return n;
                };
                *slot = GcraRequest::new(wider, policy.quota.scaled(factor));
                *w = index | AGGREGATE;
                n += 1;
            }
        }
        n
    }

    fn fail_policy(&self, which: &[usize]) -> FailPolicy {
        let fails = which
            .iter()
            .filter_map(|&w| self.policies.get(policy_of(w).0))
            .map(|p| p.fail);
        let mut fail = FailPolicy::FailOpen;
        for f in fails {
            fail = match (fail, f) {
                (_, FailPolicy::FailClosed) | (FailPolicy::FailClosed, _) => FailPolicy::FailClosed,
                (_, FailPolicy::LocalFallback) | (FailPolicy::LocalFallback, _) => {
                    FailPolicy::LocalFallback
                }
                _ => FailPolicy::FailOpen,
            };
        }
        fail
    }

    fn now_secs(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.epoch)
            .as_secs()
            + 1
    }

    /// Turns the store's answer into a verdict, counting and logging.
    fn verdict(
        &self,
        parts: &Parts,
        plan: &Plan,
        which: &[usize],
        decision: &Result<Decision, StoreError>,
    ) -> Verdict {
        let Ok(decision) = decision else {
            for &w in which {
                if let (i, false) = policy_of(w) {
                    self.count(i, "unavailable");
                }
            }
            let problem = ProblemDetails::new(ProblemType::UNAVAILABLE)
                .with_detail("the rate limit store is unavailable; retry shortly")
                .with_retry_after(1)
                .with_request_id_from(&parts.extensions);
            return Verdict::Refuse(problem.rejection("store_unavailable"));
        };
        let degraded = decision.source() != Source::Primary;
        let outcomes = decision.outcomes();
        for (&w, o) in which.iter().zip(outcomes) {
            let (i, aggregate) = policy_of(w);
            let Some(policy) = self.policies.get(i) else {
                continue;
            };
            // An aggregate counts only when it is what refused the request
            // (its own policy's entry allowed it): once per policy.
            if aggregate && (o.allowed || !main_allowed(which, outcomes, i)) {
                continue;
            }
            let outcome = match (decision.allowed(), o.allowed) {
                (true, _) if degraded => "degraded",
                (true, _) => "allowed",
                (false, false) => "limited",
                // Refused because another policy of the same call refused.
                (false, true) => continue,
            };
            self.count(i, outcome);
            if !o.allowed {
                self.warn_burst(policy, plan, i, o);
            }
        }
        // Headers: the most constrained policy, unless any applicable policy
        // hides them (a login route advertises nothing, not even the global
        // quota).
        let hidden = which
            .iter()
            .any(|i| self.policies.get(*i).is_some_and(|p| !p.headers));
        let shown = which
            .iter()
            .zip(outcomes)
            .filter(|_| !hidden)
            // Headers describe the policy's own quota, never an aggregate's.
            .filter(|(w, _)| !policy_of(**w).1)
            .filter(|(_, o)| decision.allowed() || !o.allowed)
            .min_by_key(|(_, o)| (o.allowed, o.remaining));
        let headers = shown.and_then(|(&i, o)| {
            let policy = self.policies.get(i)?;
            let item = HeaderValue::try_from(format!(
                "\"{}\";r={};t={}",
                policy.name,
                o.remaining,
                ceil_secs(o.reset)
            ))
            .ok()?;
            Some((self.policy_headers.get(i).cloned().flatten()?, item))
        });
        if decision.allowed() {
            return Verdict::Allow(headers);
        }
        let retry = ceil_secs(decision.retry_after()).max(1);
        let mut response = ProblemDetails::new(ProblemType::RATE_LIMITED)
            .with_detail("too many requests; retry after the time in Retry-After")
            .with_retry_after(retry)
            .with_request_id_from(&parts.extensions)
            .rejection("rate_limited");
        if let Some((policy, item)) = headers {
            response.headers_mut().insert(RATELIMIT_POLICY, policy);
            response.headers_mut().insert(RATELIMIT, item);
        }
        Verdict::Refuse(response)
    }

    fn warn_burst(&self, policy: &Policy, plan: &Plan, index: usize, outcome: &Outcome) {
        let Some(suppressed) = policy.warn.note(self.now_secs()) else {
            return;
        };
        let client = plan
            .items
            .iter()
            .flatten()
            .find(|(i, _)| *i == index)
            .and_then(|(_, k)| k.as_ref())
            .and_then(OwnedKey::ip);
        tracing::warn!(
            target: "palisade::ratelimit",
            policy = &*policy.name,
            client = client.map(tracing::field::display),
            retry_after_s = ceil_secs(outcome.retry_after),
            suppressed_since_last = suppressed,
            "rate limit engaged; further rejections of this policy within a minute are counted, not logged"
        );
    }

    fn dry_run_verdicts(&self, which: &[usize], decision: &Result<Decision, StoreError>) {
        let Ok(decision) = decision else { return };
        for (&w, o) in which.iter().zip(decision.outcomes()) {
            let (i, aggregate) = policy_of(w);
            let Some(policy) = self.policies.get(i) else {
                continue;
            };
            if aggregate && (o.allowed || !main_allowed(which, decision.outcomes(), i)) {
                continue;
            }
            if o.allowed {
                self.count(i, "allowed");
            } else {
                self.count(i, "dry_run_limited");
                if policy.warn.note(self.now_secs()).is_some() {
                    tracing::warn!(
                        target: "palisade::ratelimit",
                        policy = &*policy.name,
                        "dry-run rate limit would refuse requests"
                    );
                }
            }
        }
    }

    /// Decides synchronously (memory store); `None` when the store is remote.
    fn decide_now(&self, parts: &Parts, plan: &Plan) -> Option<Verdict> {
        if self.store.is_remote() {
            return None;
        }
        let placeholder = GcraRequest::new(Key::new(""), Quota::per_second(1));
        if plan.has_dry_run {
            let mut dry = [placeholder; MAX_KEYS];
            let mut dry_which = [0usize; MAX_KEYS];
            let n = self.requests(plan, true, &mut dry, &mut dry_which);
            let decision = self.store.try_gcra_now(dry.get(..n)?)?;
            self.dry_run_verdicts(dry_which.get(..n)?, &Ok(decision));
        }
        let mut reqs = [placeholder; MAX_KEYS];
        let mut which = [0usize; MAX_KEYS];
        let n = self.requests(plan, false, &mut reqs, &mut which);
        if n == 0 {
            return Some(Verdict::Allow(None));
        }
        let decision = self.store.try_gcra_now(reqs.get(..n)?)?;
        Some(self.verdict(parts, plan, which.get(..n)?, &Ok(decision)))
    }

    async fn decide(&self, parts: &Parts, plan: &Plan) -> Verdict {
        let placeholder = GcraRequest::new(Key::new(""), Quota::per_second(1));
        if plan.has_dry_run {
            let mut dry = [placeholder; MAX_KEYS];
            let mut dry_which = [0usize; MAX_KEYS];
            let n = self.requests(plan, true, &mut dry, &mut dry_which);
            if let (Some(reqs), Some(which)) = (dry.get(..n), dry_which.get(..n)) {
                let fail = self.fail_policy(which);
                let decision = self.store.gcra(&self.tag, reqs, fail).await;
                self.dry_run_verdicts(which, &decision);
            }
        }
        let mut reqs = [placeholder; MAX_KEYS];
        let mut which = [0usize; MAX_KEYS];
        let n = self.requests(plan, false, &mut reqs, &mut which);
        let (Some(reqs), Some(which)) = (reqs.get(..n), which.get(..n)) else {
            return Verdict::Allow(None);
        };
        if n == 0 {
            return Verdict::Allow(None);
        }
        let fail = self.fail_policy(which);
        let decision = self.store.gcra(&self.tag, reqs, fail).await;
        self.verdict(parts, plan, which, &decision)
    }
}

/// Whether policy `index`'s own entry of a decision allowed the request.
fn main_allowed(which: &[usize], outcomes: &[Outcome], index: usize) -> bool {
    which
        .iter()
        .zip(outcomes)
        .any(|(&w, o)| w == index && o.allowed)
}

/// The most keys one request can meet: every policy that applies to all
/// routes, plus the largest set of route-scoped policies sharing a route;
/// each per-IP policy counts once more per IPv6 aggregate.
fn worst_case_keys(policies: &[Policy], aggregates: usize) -> usize {
    let cost = |p: &Policy| 1 + if p.key.has_client_ip() { aggregates } else { 0 };
    let everywhere: usize = policies
        .iter()
        .filter(|p| p.scoped_routes().is_none())
        .map(cost)
        .sum();
    let routes = policies.iter().filter_map(Policy::scoped_routes).flatten();
    let busiest = routes
        .map(|route| {
            policies
                .iter()
                .filter(|p| p.scoped_routes().is_some_and(|rs| rs.contains(route)))
                .map(cost)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    everywhere + busiest
}

fn no_client_ip(parts: &Parts) -> Response<Bytes> {
    tracing::error!(
        target: "palisade::ratelimit",
        "a policy keyed by client IP ran without ClientIpLayer in front of it"
    );
    ProblemDetails::new(ProblemType::INTERNAL)
        .with_request_id_from(&parts.extensions)
        .rejection("no_client_ip")
}

fn is_json(parts: &Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim();
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5
                    && m.get(m.len() - 5..)
                        .is_some_and(|t| t.eq_ignore_ascii_case("+json")))
        })
}

fn add_headers<B>(response: &mut Response<B>, headers: Option<(HeaderValue, HeaderValue)>) {
    if let Some((policy, item)) = headers {
        response.headers_mut().insert(RATELIMIT_POLICY, policy);
        response.headers_mut().insert(RATELIMIT, item);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The response future of [`RateLimitService`].
    pub struct RateLimitFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Inner { #[pin] future: F, headers: Option<(HeaderValue, HeaderValue)> },
        Early { response: Option<Response<Bytes>> },
        Boxed { future: BoxFuture<Result<Response<ResponseBody<B>>, E>> },
    }
}

impl<F, B, E> fmt::Debug for RateLimitFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RateLimitFuture")
    }
}

impl<F, B, E> Future for RateLimitFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, headers } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                add_headers(&mut response, headers.take());
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            KindProj::Early { response } => {
                let response = response.take().unwrap_or_else(|| {
                    ProblemDetails::new(ProblemType::INTERNAL).into_bytes_response()
                });
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let plan = match self.shared.plan(&parts) {
            Ok(plan) => plan,
            Err(response) => return early(*response),
        };
        let now = (!plan.needs_body)
            .then(|| self.shared.decide_now(&parts, &plan))
            .flatten();
        match now {
            Some(Verdict::Refuse(response)) => return early(response),
            Some(Verdict::Allow(headers)) => {
                return RateLimitFuture {
                    kind: Kind::Inner {
                        future: self.inner.call(Request::from_parts(parts, body)),
                        headers,
                    },
                };
            }
            None => {}
        }
        // Remote store or a body key: decide asynchronously. The clone that
        // was driven to readiness goes into the future (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let future = async move {
            let mut plan = plan;
            let body = if plan.needs_body {
                let (bytes, json) = match read_json(&parts, body, shared.max_body).await {
                    Ok(read) => read,
                    Err(response) => return Ok(response.map(ResponseBody::full)),
                };
                if let Err(response) = shared.complete(&mut plan, &parts, json.as_ref()) {
                    return Ok(response.map(ResponseBody::full));
                }
                ReqBody::from(bytes)
            } else {
                body
            };
            match shared.decide(&parts, &plan).await {
                Verdict::Refuse(response) => Ok(response.map(ResponseBody::full)),
                Verdict::Allow(headers) => {
                    let mut response = inner.call(Request::from_parts(parts, body)).await?;
                    add_headers(&mut response, headers);
                    Ok(response.map(ResponseBody::inner))
                }
            }
        };
        RateLimitFuture {
            kind: Kind::Boxed {
                future: Box::pin(future),
            },
        }
    }
}

fn early<F, B, E>(response: Response<Bytes>) -> RateLimitFuture<F, B, E> {
    RateLimitFuture {
        kind: Kind::Early {
            response: Some(response),
        },
    }
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// Buffers the body (bounded) and parses it when it is JSON. A body that is
/// not JSON, or not an object, yields no fields: the handler reports that.
async fn read_json<B>(
    parts: &Parts,
    body: B,
    max: usize,
) -> Result<(Bytes, Option<JsonMap>), Response<Bytes>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let collected = http_body_util::Limited::new(body, max).collect().await;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (kind, reason) = if too_large {
                (ProblemType::PAYLOAD_TOO_LARGE, "payload_too_large")
            } else {
                (ProblemType::BAD_REQUEST, "body_read_failed")
            };
            return Err(ProblemDetails::new(kind)
                .with_request_id_from(&parts.extensions)
                .rejection(reason));
        }
    };
    let json = if is_json(parts) {
        serde_json::from_slice::<JsonMap>(&bytes).ok()
    } else {
        None
    };
    Ok((bytes, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(12)), 12);
        assert_eq!(ceil_secs(Duration::from_millis(12_001)), 13);
    }

    #[test]
    fn json_content_types() {
        let parts = |ct: &str| {
            http::Request::post("/")
                .header(CONTENT_TYPE, ct)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert!(is_json(&parts("application/json")));
        assert!(is_json(&parts("Application/JSON; charset=utf-8")));
        assert!(is_json(&parts("application/merge-patch+json")));
        assert!(!is_json(&parts("text/plain")));
        assert!(!is_json(&parts("json")));
    }
}

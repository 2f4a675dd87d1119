//! [`Store`]: the memory store, or Redis with a local fallback, behind one
//! API with a fail policy per call.
//!
//! With Redis, every call goes through a circuit breaker: while Redis is
//! unreachable, calls fail in microseconds and the call's [`FailPolicy`]
//! decides — `FailClosed` returns [`StoreError::Unavailable`] (the caller
//! answers 503), `FailOpen` allows, `LocalFallback` decides from the local
//! memory store. The breaker probes Redis again by itself and closes when it
//! answers; every transition is logged once and counted.
//!
//! # Example
//!
//! ```
//! use palisade_store::{FailPolicy, GcraRequest, Key, MemoryStore, Quota, Store};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = Store::memory(MemoryStore::default());
//! let req = [GcraRequest::new(Key::new("api"), Quota::per_second(1))];
//! let first = store.gcra("rl", &req, FailPolicy::FailClosed).await.unwrap();
//! assert!(first.allowed());
//! // The memory store also answers synchronously, without a future.
//! assert!(!store.try_gcra_now(&req).unwrap().allowed());
//! # });
//! ```

// Without Redis the API stays async so callers do not change with the feature.
#![cfg_attr(not(feature = "redis"), allow(clippy::unused_async))]

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::StoreError;
#[cfg(feature = "redis")]
use crate::Unavailable;
use crate::counter::{Probe, Reservation, Reserve, Settle};
use crate::gcra::{Decision, GcraRequest, Source};
use crate::key::Key;
use crate::memory::MemoryStore;

#[cfg(feature = "redis")]
use crate::redis::{RedisBackend, RedisOptions};
#[cfg(feature = "redis")]
use palisade_resilience::breaker::{CircuitBreaker, State};

/// What a call does when the remote store cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailPolicy {
    /// Return [`StoreError::Unavailable`]; the caller refuses (503).
    FailClosed,
    /// Allow, and say so in the decision's [`Source`].
    FailOpen,
    /// Decide from the local memory store (per-instance limits).
    LocalFallback,
}

impl FailPolicy {
    fn label(self) -> &'static str {
        match self {
            Self::FailClosed => "fail_closed",
            Self::FailOpen => "fail_open",
            Self::LocalFallback => "local_fallback",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Debug, Default, Clone)]
struct StoreMetrics {
    degraded: Family<PolicyLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
}

#[cfg(feature = "redis")]
#[derive(Debug)]
struct Remote {
    backend: RedisBackend,
    breaker: CircuitBreaker,
}

#[derive(Debug)]
struct Inner {
    local: MemoryStore,
    #[cfg(feature = "redis")]
    remote: Option<Remote>,
    metrics: StoreMetrics,
}

/// The store behind limits, lockouts and revocations. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store(Arc<Inner>);

impl Store {
    /// A store kept in this process only.
    pub fn memory(store: MemoryStore) -> Self {
        Self(Arc::new(Inner {
            local: store,
            #[cfg(feature = "redis")]
            remote: None,
            metrics: StoreMetrics::default(),
        }))
    }

    /// A Redis store; `local` serves `LocalFallback` calls while Redis is
    /// unreachable. No I/O happens here: the connection is made on first use,
    /// so a service can start while Redis is down (its readiness says so).
    ///
    /// `setting` names the configuration entry in errors (the URL itself is
    /// never echoed: it may hold a password).
    #[cfg(feature = "redis")]
    pub fn redis(
        url: &str,
        setting: &'static str,
        options: &RedisOptions,
        local: MemoryStore,
    ) -> Result<Self, StoreError> {
        let backend = RedisBackend::new(url, setting, options)?;
        let metrics = StoreMetrics::default();
        // The breaker exports its own state and transitions
        // (`palisade_breaker_*{breaker="store"}`); these lines say what
        // they mean for decisions.
        let config = options
            .breaker
            .clone()
            .on_state_change(|change| match change.to {
                State::Open => tracing::warn!(
                    target: "palisade::store",
                    "store unreachable; circuit opened, calls follow their fail policy"
                ),
                State::Closed => tracing::info!(
                    target: "palisade::store",
                    "store reachable again; circuit closed, decisions shared again"
                ),
                State::HalfOpen => {}
            });
        let breaker = CircuitBreaker::new("store", config, local.clock());
        Ok(Self(Arc::new(Inner {
            local,
            remote: Some(Remote { backend, breaker }),
            metrics,
        })))
    }

    /// Whether decisions go to a remote store.
    pub fn is_remote(&self) -> bool {
        #[cfg(feature = "redis")]
        {
            self.0.remote.is_some()
        }
        #[cfg(not(feature = "redis"))]
        {
            false
        }
    }

    /// The local memory store (the whole store, or Redis's fallback).
    pub fn local(&self) -> &MemoryStore {
        &self.0.local
    }

    /// Decides synchronously when the store is memory-only; `None` for Redis.
    pub fn try_gcra_now(&self, requests: &[GcraRequest<'_>]) -> Option<Decision> {
        (!self.is_remote()).then(|| self.0.local.gcra(requests))
    }

    /// A GCRA decision over every key, all or nothing. `tag` groups the keys
    /// in one Redis cluster slot.
    pub async fn gcra(
        &self,
        tag: &str,
        requests: &[GcraRequest<'_>],
        fail: FailPolicy,
    ) -> Result<Decision, StoreError> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.0.remote {
            let result = self
                .guarded(remote, remote.backend.gcra(tag, requests))
                .await;
            return match result {
                Ok(decision) => Ok(decision),
                Err(e) => self.degrade(fail, e, |source| match source {
                    Source::Fallback => self.0.local.gcra_as(requests, Source::Fallback),
                    _ => Decision::fail_open(requests.len()),
                }),
            };
        }
        let _ = (tag, fail);
        Ok(self.0.local.gcra(requests))
    }

    /// Reserves a slot on every counter, or none.
    pub async fn reserve(
        &self,
        tag: &str,
        items: &[Reserve<'_>],
        fail: FailPolicy,
    ) -> Result<Reservation, StoreError> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.0.remote {
            let result = self
                .guarded(remote, remote.backend.reserve(tag, items))
                .await;
            return match result {
                Ok(r) => Ok(r),
                Err(e) => self.degrade(fail, e, |source| match source {
                    Source::Fallback => self.0.local.reserve_as(items, Source::Fallback),
                    _ => Reservation::fail_open(items.len()),
                }),
            };
        }
        let _ = (tag, fail);
        Ok(self.0.local.reserve(items))
    }

    /// Settles where the reservation was made (`source` from it): the remote
    /// store for [`Source::Primary`], the local one for a fallback.
    pub async fn settle(
        &self,
        tag: &str,
        steps: &[Settle<'_>],
        source: Source,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "redis")]
        if let (Some(remote), Source::Primary) = (&self.0.remote, source) {
            return self
                .guarded(remote, remote.backend.settle(tag, steps))
                .await
                .map_err(StoreError::Unavailable);
        }
        let _ = (tag, source);
        self.0.local.settle(steps);
        Ok(())
    }

    /// Whether a mark exists. With `FailOpen` an unreachable store answers
    /// "no"; with `FailClosed`, an error.
    pub async fn is_marked(
        &self,
        tag: &str,
        key: &Key<'_>,
        fail: FailPolicy,
    ) -> Result<bool, StoreError> {
        self.any_marked(tag, &[Probe::Marked(*key)], fail).await
    }

    /// Whether any of the probes holds (a mark exists, or a stamp at or
    /// after a time), in one round trip.
    pub async fn any_marked(
        &self,
        tag: &str,
        probes: &[Probe<'_>],
        fail: FailPolicy,
    ) -> Result<bool, StoreError> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.0.remote {
            let result = self
                .guarded(remote, remote.backend.any_marked(tag, probes))
                .await;
            return match result {
                Ok(marked) => Ok(marked),
                Err(e) => self.degrade(fail, e, |source| match source {
                    Source::Fallback => self.0.local.any_marked(probes),
                    _ => false,
                }),
            };
        }
        let _ = (tag, fail);
        Ok(self.0.local.any_marked(probes))
    }

    /// Readiness: the memory store is always up; Redis must answer `PING`.
    /// While the breaker is open this answers at once without a call.
    pub async fn check(&self) -> Result<(), StoreError> {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.0.remote {
            return self
                .guarded(remote, remote.backend.ping())
                .await
                .map_err(StoreError::Unavailable);
        }
        Ok(())
    }

    /// Registers the store's metrics: degraded decisions by fail policy and
    /// errors by kind; with Redis, also its breaker's
    /// (`palisade_breaker_*{breaker="store"}`: state, transitions, calls by
    /// outcome and short-circuits).
    pub fn register_metrics(&self, registry: &mut Registry) {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.0.remote {
            remote.breaker.register_metrics(registry);
        }
        let m = &self.0.metrics;
        registry.register(
            "palisade_store_degraded_decisions",
            "Decisions made without the remote store, by fail policy",
            m.degraded.clone(),
        );
        registry.register(
            "palisade_store_errors",
            "Remote store calls that failed, by kind",
            m.errors.clone(),
        );
    }

    /// How many decisions were made under `policy` because the remote store
    /// was unavailable.
    pub fn degraded_decisions(&self, policy: FailPolicy) -> u64 {
        self.0
            .metrics
            .degraded
            .get_or_create(&PolicyLabels {
                policy: policy.label(),
            })
            .get()
    }

    #[cfg(feature = "redis")]
    async fn guarded<T>(
        &self,
        remote: &Remote,
        call: impl Future<Output = Result<T, Unavailable>>,
    ) -> Result<T, Unavailable> {
        // A probe dropped at the await below (cancelled) settles as a failure.
        let permit = remote
            .breaker
            .try_acquire()
            .map_err(|_| Unavailable::CircuitOpen)?;
        match call.await {
            Ok(v) => {
                permit.success();
                Ok(v)
            }
            Err(e) => {
                permit.failure();
                self.0
                    .metrics
                    .errors
                    .get_or_create(&ErrorLabels { kind: e.label() })
                    .inc();
                tracing::debug!(target: "palisade::store", error = e.label(), "store call failed");
                Err(e)
            }
        }
    }

    #[cfg(feature = "redis")]
    fn degrade<T>(
        &self,
        fail: FailPolicy,
        error: Unavailable,
        otherwise: impl FnOnce(Source) -> T,
    ) -> Result<T, StoreError> {
        self.0
            .metrics
            .degraded
            .get_or_create(&PolicyLabels {
                policy: fail.label(),
            })
            .inc();
        match fail {
            FailPolicy::FailClosed => Err(StoreError::Unavailable(error)),
            FailPolicy::FailOpen => Ok(otherwise(Source::FailOpen)),
            FailPolicy::LocalFallback => Ok(otherwise(Source::Fallback)),
        }
    }
}

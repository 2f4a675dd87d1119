//! The Redis backend: one `EVALSHA` per decision, on the server's clock.
//!
//! Each operation is a Lua script (`src/lua/*.lua`) loaded once and invoked
//! by its SHA; a `NOSCRIPT` reply (after a restart or `SCRIPT FLUSH`) loads it
//! again and retries, so steady state is exactly one round trip per decision.
//! Time comes from the server's `TIME`, so instances whose clocks disagree
//! still share one timeline. Every key written gets a TTL. Keys are
//! `<prefix>:{<tag>}:<kind>:<namespace>:<parts>`: every key of one call shares
//! the `{<tag>}` hash tag and so one cluster slot.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_store::RedisOptions;
//!
//! let options = RedisOptions::default().call_timeout(Duration::from_millis(20));
//! assert_eq!(options.timeout(), Duration::from_millis(20));
//! ```

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::counter::{CounterOutcome, Probe, Reservation, Reserve, Settle};
use crate::gcra::{Decision, GcraRequest, Source, micros};
use crate::key::{Key, check_name};
use crate::{StoreError, Unavailable};
use palisade_resilience::breaker::BreakerConfig;

/// How to reach Redis and how patient to be.
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisOptions {
    prefix: String,
    call_timeout: Duration,
    connect_timeout: Duration,
    pub(crate) breaker: BreakerConfig,
}

impl Default for RedisOptions {
    /// Prefix `palisade`, 50 ms per call, 250 ms to connect; the breaker opens
    /// after 3 failures in a row, for 500 ms doubling up to 30 s.
    fn default() -> Self {
        Self {
            prefix: "palisade".to_owned(),
            call_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            breaker: BreakerConfig::consecutive_failures(3)
                .open_for(Duration::from_millis(500))
                .max_open_for(Duration::from_secs(30)),
        }
    }
}

impl RedisOptions {
    /// The prefix of every key (1–64 characters of `[A-Za-z0-9._-]`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The deadline of one call, connection included.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The deadline of one connection attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The circuit breaker.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// The configured call timeout.
    pub fn timeout(&self) -> Duration {
        self.call_timeout
    }
}

const GCRA: &str = include_str!("lua/gcra.lua");
const RESERVE: &str = include_str!("lua/reserve.lua");
const SETTLE: &str = include_str!("lua/settle.lua");

pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    gcra: Script,
    reserve: Script,
    settle: Script,
    prefix: String,
    call_timeout: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Checks the URL's scheme without ever echoing the URL (it may hold a password).
fn client(url: &str, setting: &'static str) -> Result<Client, StoreError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis" | "redis+unix" | "unix") => {}
        Some("rediss") if cfg!(feature = "redis-tls") => {}
        Some("rediss") => {
            return Err(StoreError::Config(palisade_core::ConfigError::new(
                setting,
                "rediss:// needs palisade-store's `redis-tls` feature",
            )));
        }
        _ => {
            return Err(StoreError::Config(palisade_core::ConfigError::new(
                setting,
                "must be a redis://, rediss:// or redis+unix:// URL",
            )));
        }
    }
    Client::open(url).map_err(|_| {
        StoreError::Config(palisade_core::ConfigError::new(
            setting,
            "must be a well-formed Redis URL",
        ))
    })
}

fn millis_ceil(d: Duration) -> u64 {
    micros(d).div_ceil(1000).max(1)
}

impl RedisBackend {
    /// Prepares a lazily connecting backend (no I/O here).
    pub(crate) fn new(
        url: &str,
        setting: &'static str,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        check_name("redis prefix", &options.prefix)?;
        let client = client(url, setting)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.call_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|_| {
            StoreError::Config(palisade_core::ConfigError::new(
                setting,
                "could not prepare a Redis connection",
            ))
        })?;
        Ok(Self {
            conn,
            gcra: Script::new(GCRA),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            prefix: options.prefix.clone(),
            call_timeout: options.call_timeout,
        })
    }

    fn key(&self, tag: &str, kind: char, key: &Key<'_>) -> String {
        let mut out = String::with_capacity(64);
        key.render(&self.prefix, tag, kind, &mut out);
        out
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.call_timeout, invocation.invoke_async(&mut conn)).await {
            Err(_) => Err(Unavailable::Timeout),
            Ok(Err(e)) if e.is_timeout() => Err(Unavailable::Timeout),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                Err(Unavailable::Connection)
            }
            Ok(Err(_)) => Err(Unavailable::Server),
            Ok(Ok(v)) => Ok(v),
        }
    }

    pub(crate) async fn gcra(
        &self,
        tag: &str,
        requests: &[GcraRequest<'_>],
    ) -> Result<Decision, Unavailable> {
        let mut invocation = self.gcra.prepare_invoke();
        let mut quotas = Vec::with_capacity(requests.len());
        for r in requests {
            let quota = r.quota.rounded_to_micros();
            invocation
                .key(self.key(tag, 'g', &r.key))
                .arg(quota.interval_ns() / 1000)
                .arg(quota.tolerance_ns() / 1000)
                .arg(r.cost);
            quotas.push((quota, r.cost));
        }
        let reply: Vec<i64> = self.run(invocation).await?;
        let (allowed, offsets) = reply.split_first().ok_or(Unavailable::Server)?;
        if offsets.len() != quotas.len() {
            return Err(Unavailable::Server);
        }
        let mut decision = Decision::new(Source::Primary);
        for ((quota, cost), offset_us) in quotas.iter().zip(offsets) {
            let offset_ns = u64::try_from(*offset_us).unwrap_or(0).saturating_mul(1000);
            let (outcome, _) = quota.step(offset_ns, *cost);
            decision.push(outcome);
        }
        // The server's verdict is authoritative; the outcomes agree with it by
        // construction (same integer arithmetic in microseconds).
        if (*allowed == 1) != decision.allowed() {
            return Err(Unavailable::Server);
        }
        Ok(decision)
    }

    pub(crate) async fn reserve(
        &self,
        tag: &str,
        items: &[Reserve<'_>],
    ) -> Result<Reservation, Unavailable> {
        let mut invocation = self.reserve.prepare_invoke();
        for item in items {
            invocation.key(self.key(tag, 'c', &item.key));
        }
        for item in items {
            let mark = item.unless_marked.unwrap_or(item.key);
            invocation.key(self.key(tag, 'm', &mark));
        }
        for item in items {
            invocation
                .arg(item.limit)
                .arg(millis_ceil(item.ttl))
                .arg(u8::from(item.unless_marked.is_some()));
        }
        let reply: Vec<i64> = self.run(invocation).await?;
        let (_, rest) = reply.split_first().ok_or(Unavailable::Server)?;
        if rest.len() != items.len() * 3 {
            return Err(Unavailable::Server);
        }
        let mut reservation = Reservation::new(Source::Primary);
        for chunk in rest.chunks_exact(3) {
            let [state, count, wait] = chunk else {
                return Err(Unavailable::Server);
            };
            reservation.push(CounterOutcome {
                skipped: *state == 2,
                allowed: *state != 0,
                count: u32::try_from(*count).unwrap_or(u32::MAX),
                retry_after: Duration::from_millis(u64::try_from(*wait).unwrap_or(0)),
            });
        }
        Ok(reservation)
    }

    pub(crate) async fn settle(&self, tag: &str, steps: &[Settle<'_>]) -> Result<(), Unavailable> {
        let mut invocation = self.settle.prepare_invoke();
        for step in steps {
            let (kind, key, op, ttl, at) = match step {
                Settle::Release(k) => ('c', k, "release", 0, 0),
                Settle::Clear(k) => ('c', k, "clear", 0, 0),
                Settle::Mark(k, ttl) => ('m', k, "mark", millis_ceil(*ttl), 0),
                Settle::Unmark(k) => ('m', k, "unmark", 0, 0),
                Settle::Stamp(k, at, ttl) => ('s', k, "stamp", millis_ceil(*ttl), *at),
            };
            invocation
                .key(self.key(tag, kind, key))
                .arg(op)
                .arg(ttl)
                .arg(at);
        }
        let _: i64 = self.run(invocation).await?;
        Ok(())
    }

    pub(crate) async fn any_marked(
        &self,
        tag: &str,
        probes: &[Probe<'_>],
    ) -> Result<bool, Unavailable> {
        let mut conn = self.conn.clone();
        // MGET, not EXISTS: a stamp's time is compared here. One round trip
        // either way; `MGET` keeps the key order for the comparison.
        let mut cmd = redis::cmd("MGET");
        for probe in probes {
            let key = match probe {
                Probe::Marked(key) => self.key(tag, 'm', key),
                Probe::StampedSince(key, _) => self.key(tag, 's', key),
            };
            cmd.arg(key);
        }
        let fut = cmd.query_async::<Vec<Option<u64>>>(&mut conn);
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(values)) => {
                Ok(probes
                    .iter()
                    .zip(values)
                    .any(|(probe, value)| match (probe, value) {
                        (_, None) => false,
                        (Probe::Marked(_), Some(_)) => true,
                        (Probe::StampedSince(_, since), Some(at)) => at >= *since,
                    }))
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                Err(Unavailable::Connection)
            }
            Ok(Err(_)) => Err(Unavailable::Server),
            Err(_) => Err(Unavailable::Timeout),
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), Unavailable> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let fut = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Unavailable::Connection),
            Err(_) => Err(Unavailable::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        let err = client("http://user:hunter2@host", "APP_REDIS_URL").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("APP_REDIS_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(client("redis://127.0.0.1:6379", "x").is_ok());
        assert!(client("redis+unix:///tmp/redis.sock", "x").is_ok());
    }

    #[test]
    fn ttl_rounds_up_to_a_millisecond() {
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_micros(1001)), 2);
        assert_eq!(millis_ceil(Duration::ZERO), 1);
    }
}

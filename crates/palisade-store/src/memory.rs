//! The memory backend: sharded, bounded, every entry expiring.
//!
//! Keys are kept as 64-bit fingerprints from a hasher seeded at random per
//! store (foldhash), so an entry is 16 bytes whatever the key — the
//! fingerprint and one word packing the expiry (microseconds since the
//! store's start, 48 bits: 8.9 years) with a 16-bit value —, deciding never
//! allocates, and an attacker who cannot see the seed cannot aim collisions
//! at a victim's bucket. Entries live in `shards` mutex-protected tables
//! that grow up to the cap and no further; a decision over several keys locks their shards in ascending
//! order, so multi-key decisions are atomic and cannot deadlock. Times are
//! kept in microseconds, the unit of the Redis scripts, so both backends
//! decide identically.
//!
//! **Hard cap.** Each shard holds at most `max_keys / shards` entries. When a
//! new key arrives at a full shard, expired entries are dropped first; if none
//! expired, the sixteenth closest to expiring goes (a one-pass selection).
//! For keys of one quota and equal use that is the least recently used; a key
//! that used more of its quota lives longer, as evicting it would forgive
//! more. A flood of distinct keys costs amortised constant time per key and
//! never grows memory.
//!
//! **Security state has its own budget.** Keys marked
//! [`Key::protected`] (lockout counters, revoked tokens and families, "ended
//! sessions" stamps) are never evicted to make room for other keys: a new
//! ordinary key (a rate-limit bucket, a 30-day known-client mark) evicts only
//! ordinary keys, and is not stored when a shard holds nothing else (its
//! limiter then starts afresh, which only costs the attacker's own budget).
//! Protected keys may take up to half of a shard at the expense of ordinary
//! ones; beyond that half they evict among themselves. Expiry is what lets
//! security state go, not volume.
//!
//! # Example
//!
//! ```
//! use palisade_store::{GcraRequest, Key, MemoryStore, Part, Quota};
//!
//! let store = MemoryStore::builder().max_keys(10_000).build();
//! let key = Key::new("login").with(Part::Int(7));
//! let quota = Quota::per_minute(2);
//! assert!(store.gcra(&[GcraRequest::new(key, quota)]).allowed());
//! assert!(store.gcra(&[GcraRequest::new(key, quota)]).allowed());
//! assert!(!store.gcra(&[GcraRequest::new(key, quota)]).allowed());
//! assert_eq!(store.len(), 1);
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use palisade_core::{SharedClock, SystemClock};

use crate::counter::{
    CounterOutcome, Probe, Reservation, Reserve, Settle, stamp_at_or_after, stamp_bits,
};
use crate::gcra::{Decision, GcraRequest, MAX_KEYS, Source, micros};
use crate::key::Key;

const KIND_GCRA: u8 = 0;
const KIND_COUNTER: u8 = 1;
const KIND_MARK: u8 = 2;
const KIND_STAMP: u8 = 3;

/// Most shards locked by one call: every reservation item may carry a mark.
const MAX_LOCKS: usize = MAX_KEYS * 2;

/// The default hard cap on keys.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// Passes fingerprints through: they are already keyed hashes.
#[derive(Default, Clone, Copy)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One entry's state in one word: the expiry in microseconds since the
/// store's epoch (48 bits; for a GCRA key its theoretical arrival time) and a
/// 16-bit value (a counter's count, 1 for a mark, the low bits of a stamp's
/// time, unused for GCRA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot(u64);

const EXPIRY_BITS: u32 = 48;
const EXPIRY_MAX: u64 = (1 << EXPIRY_BITS) - 1;

impl Slot {
    fn new(expires: u64, value: u16) -> Self {
        Self(expires.min(EXPIRY_MAX) | (u64::from(value) << EXPIRY_BITS))
    }

    fn expires(self) -> u64 {
        self.0 & EXPIRY_MAX
    }

    fn value(self) -> u16 {
        u16::try_from(self.0 >> EXPIRY_BITS).unwrap_or(u16::MAX)
    }
}

type Table = HashMap<u64, Slot, BuildHasherDefault<Identity>>;

#[derive(Debug, Default)]
struct Shard {
    table: Table,
}

impl Shard {
    fn alive(&self, fp: u64, now: u64) -> Option<Slot> {
        self.table.get(&fp).copied().filter(|s| s.expires() > now)
    }

    fn alive_mut(&mut self, fp: u64, now: u64) -> Option<&mut Slot> {
        self.table.get_mut(&fp).filter(|s| s.expires() > now)
    }

    /// Inserts or replaces, making room first when the shard is full.
    fn put(&mut self, fp: u64, slot: Slot, now: u64, cap: usize, stats: &Stats) {
        if let Some(existing) = self.table.get_mut(&fp) {
            *existing = slot;
            return;
        }
        if self.table.len() >= cap && !self.make_room(fp, now, cap, stats) {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.table.insert(fp, slot);
    }

    /// Makes room for the key `fp`; `false` when it may not be stored (an
    /// ordinary key at a shard full of security state).
    fn make_room(&mut self, fp: u64, now: u64, cap: usize, stats: &Stats) -> bool {
        let before = self.table.len();
        self.table.retain(|_, s| s.expires() > now);
        let expired = before - self.table.len();
        stats.expired.fetch_add(expired as u64, Ordering::Relaxed);
        if self.table.len() < cap {
            return true;
        }
        let protected = self.table.keys().filter(|&&k| is_protected(k)).count();
        let ordinary = self.table.len() - protected;
        // The pool the batch is taken from: ordinary keys, unless a protected
        // key arrives while security state holds its half (or all) of the shard.
        let from_protected = is_protected(fp) && (protected >= cap / 2 || ordinary == 0);
        if !from_protected && ordinary == 0 {
            return false;
        }
        let pool = if from_protected { protected } else { ordinary };
        self.evict_closest(pool, from_protected, stats);
        true
    }

    /// Drops the sixteenth of `pool` (the protected or the ordinary keys)
    /// closest to expiring.
    fn evict_closest(&mut self, pool: usize, protected: bool, stats: &Stats) {
        let batch = (pool / 16).max(1);
        let mut expiries: Vec<u64> = self
            .table
            .iter()
            .filter(|&(&k, _)| is_protected(k) == protected)
            .map(|(_, s)| s.expires())
            .collect();
        let (below, nth, _) = expiries.select_nth_unstable(batch - 1);
        let threshold = *nth;
        // Everything strictly closer to expiry goes; ties at the threshold
        // fill the rest of the batch (in table order).
        // (`below` holds values <= the threshold, not only smaller ones.)
        let strictly_below = below.iter().filter(|&&e| e < threshold).count();
        let mut ties = batch - strictly_below;
        let mut left = batch;
        self.table.retain(|&k, s| {
            if is_protected(k) != protected {
                return true;
            }
            let e = s.expires();
            let evict = e < threshold || (e == threshold && ties > 0);
            if evict {
                if e == threshold {
                    ties -= 1;
                }
                left -= 1;
            }
            !evict
        });
        stats
            .evicted
            .fetch_add((batch - left) as u64, Ordering::Relaxed);
    }
}

/// Whether a fingerprint is of a protected key (its lowest bit).
fn is_protected(fp: u64) -> bool {
    fp & 1 == 1
}

#[derive(Debug, Default)]
struct Stats {
    expired: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: usize,
    shard_cap: usize,
    hasher: foldhash::quality::RandomState,
    clock: SharedClock,
    epoch: Instant,
    stats: Stats,
}

/// The bounded in-process store. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct MemoryStore(Arc<Inner>);

/// Builds a [`MemoryStore`].
#[derive(Debug)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_keys: usize,
    shards: Option<usize>,
    clock: Option<SharedClock>,
}

impl MemoryStoreBuilder {
    /// The hard cap on keys (default [`DEFAULT_MAX_KEYS`], at least 1).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The number of shards, rounded up to a power of two (default: one per
    /// thousand keys of the cap, between 1 and 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1));
        self
    }

    /// The clock (tests inject a manual one).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let shards = self
            .shards
            .unwrap_or_else(|| (self.max_keys / 1024).clamp(1, 64))
            .min(self.max_keys)
            .next_power_of_two();
        // Never more than the cap in total, even if the power of two rounded up.
        let shard_cap = (self.max_keys / shards).max(1);
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let epoch = clock.now();
        MemoryStore(Arc::new(Inner {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            shard_mask: shards - 1,
            shard_cap,
            hasher: foldhash::quality::RandomState::default(),
            clock,
            epoch,
            stats: Stats::default(),
        }))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Shards locked in ascending order for one call.
struct Locked<'a> {
    index: [usize; MAX_LOCKS],
    guards: [Option<MutexGuard<'a, Shard>>; MAX_LOCKS],
}

impl Locked<'_> {
    fn shard(&mut self, shard: usize) -> Option<&mut Shard> {
        let pos = self.index.iter().position(|&i| i == shard)?;
        self.guards.get_mut(pos)?.as_deref_mut()
    }
}

impl MemoryStore {
    /// A builder with the default cap and the system clock.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            clock: None,
        }
    }

    /// The store's clock.
    pub fn clock(&self) -> SharedClock {
        Arc::clone(&self.0.clock)
    }

    fn now(&self) -> u64 {
        let since = self.0.clock.now().saturating_duration_since(self.0.epoch);
        // Microseconds, starting at 1 so that an expiry of 0 is always past.
        u64::try_from(since.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn fingerprint(&self, kind: u8, key: &Key<'_>) -> u64 {
        let mut h = self.0.hasher.build_hasher();
        kind.hash(&mut h);
        key.feed(&mut h);
        // The lowest bit says whether the key is security state.
        (h.finish() & !1) | u64::from(key.is_protected())
    }

    fn shard_of(&self, fp: u64) -> usize {
        // Bits 32.. pick the shard; the table itself uses the low bits for
        // the bucket and the top seven as the control byte.
        usize::try_from(fp >> 32).unwrap_or(0) & self.0.shard_mask
    }

    fn lock(&self, fps: &[u64]) -> Locked<'_> {
        let mut wanted = [usize::MAX; MAX_LOCKS];
        for (slot, &fp) in wanted.iter_mut().zip(fps) {
            *slot = self.shard_of(fp);
        }
        wanted.sort_unstable();
        let mut locked = Locked {
            index: [usize::MAX; MAX_LOCKS],
            guards: [const { None }; MAX_LOCKS],
        };
        let mut last = usize::MAX;
        let slots = locked.index.iter_mut().zip(locked.guards.iter_mut());
        let unique = wanted.iter().filter(|&&i| {
            let fresh = i != last && i != usize::MAX;
            last = i;
            fresh
        });
        for ((index, guard), &shard) in slots.zip(unique) {
            if let Some(mutex) = self.0.shards.get(shard) {
                *index = shard;
                *guard = Some(mutex.lock().unwrap_or_else(PoisonError::into_inner));
            }
        }
        locked
    }

    /// Decides a request against every key: all are consumed, or none.
    ///
    /// At most [`MAX_KEYS`] keys are considered; the rest are ignored.
    pub fn gcra(&self, requests: &[GcraRequest<'_>]) -> Decision {
        self.gcra_as(requests, Source::Primary)
    }

    pub(crate) fn gcra_as(&self, requests: &[GcraRequest<'_>], source: Source) -> Decision {
        let requests = requests.get(..MAX_KEYS).unwrap_or(requests);
        let now = self.now();
        let mut decision = Decision::new(source);
        if let [single] = requests {
            let fp = self.fingerprint(KIND_GCRA, &single.key);
            let mutex = self.0.shards.get(self.shard_of(fp));
            let Some(mutex) = mutex else { return decision };
            let mut shard = mutex.lock().unwrap_or_else(PoisonError::into_inner);
            let offset = shard.alive(fp, now).map_or(0, |s| s.expires() - now);
            let (outcome, new_offset) = step_micros(single, offset);
            decision.push(outcome);
            if outcome.allowed && single.cost > 0 {
                let slot = Slot::new(now.saturating_add(new_offset), 0);
                shard.put(fp, slot, now, self.0.shard_cap, &self.0.stats);
            }
            return decision;
        }
        let mut fps = [0u64; MAX_KEYS];
        for (fp, r) in fps.iter_mut().zip(requests) {
            *fp = self.fingerprint(KIND_GCRA, &r.key);
        }
        let fps = fps.get(..requests.len()).unwrap_or(&[]);
        let mut locked = self.lock(fps);
        let mut offsets = [0u64; MAX_KEYS];
        for (i, (r, &fp)) in requests.iter().zip(fps).enumerate() {
            // A key repeated in one request sees the earlier tentative state.
            let earlier = fps
                .iter()
                .zip(offsets.iter())
                .take(i)
                .rev()
                .find(|(f, _)| **f == fp)
                .map(|(_, o)| *o);
            let offset = earlier.unwrap_or_else(|| {
                let shard = self.shard_of(fp);
                locked
                    .shard(shard)
                    .and_then(|s| s.alive(fp, now))
                    .map_or(0, |s| s.expires() - now)
            });
            let (outcome, new_offset) = step_micros(r, offset);
            if let Some(o) = offsets.get_mut(i) {
                *o = new_offset;
            }
            decision.push(outcome);
        }
        if decision.allowed() {
            for ((r, &fp), &offset) in requests.iter().zip(fps).zip(offsets.iter()) {
                if r.cost == 0 {
                    continue;
                }
                let slot = Slot::new(now.saturating_add(offset), 0);
                if let Some(shard) = locked.shard(self.shard_of(fp)) {
                    shard.put(fp, slot, now, self.0.shard_cap, &self.0.stats);
                }
            }
        }
        decision
    }

    /// Reserves one slot on every counter, or on none (see [`crate::counter`]).
    pub fn reserve(&self, items: &[Reserve<'_>]) -> Reservation {
        self.reserve_as(items, Source::Primary)
    }

    pub(crate) fn reserve_as(&self, items: &[Reserve<'_>], source: Source) -> Reservation {
        let items = items.get(..MAX_KEYS).unwrap_or(items);
        let now = self.now();
        let mut fps = [0u64; MAX_LOCKS];
        let n = items.len();
        for (i, item) in items.iter().enumerate() {
            if let Some(fp) = fps.get_mut(i) {
                *fp = self.fingerprint(KIND_COUNTER, &item.key);
            }
            if let (Some(fp), Some(mark)) = (fps.get_mut(n + i), item.unless_marked.as_ref()) {
                *fp = self.fingerprint(KIND_MARK, mark);
            }
        }
        let used = fps.get(..2 * n).unwrap_or(&[]);
        let mut locked = self.lock(used);
        let (counters, marks) = used.split_at(n);
        let mut reservation = Reservation::new(source);
        let mut skipped = [false; MAX_KEYS];
        for (i, ((item, &fp), &mark_fp)) in items.iter().zip(counters).zip(marks).enumerate() {
            let skip = item.unless_marked.is_some()
                && locked
                    .shard(self.shard_of(mark_fp))
                    .is_some_and(|s| s.alive(mark_fp, now).is_some());
            if let Some(s) = skipped.get_mut(i) {
                *s = skip;
            }
            if skip {
                reservation.push(CounterOutcome {
                    skipped: true,
                    allowed: true,
                    ..CounterOutcome::default()
                });
                continue;
            }
            let (stored, expires) = locked
                .shard(self.shard_of(fp))
                .and_then(|s| s.alive(fp, now))
                .map_or((0, now), |s| (u32::from(s.value()), s.expires()));
            // A counter repeated in one reservation counts its earlier items.
            let repeats = counters
                .iter()
                .zip(skipped.iter())
                .take(i)
                .filter(|(f, s)| **f == fp && !**s)
                .count();
            let count = stored.saturating_add(u32::try_from(repeats).unwrap_or(u32::MAX));
            let allowed = count < item.limit.min(u32::from(u16::MAX));
            reservation.push(CounterOutcome {
                skipped: false,
                allowed,
                count: if allowed { count + 1 } else { count },
                retry_after: if allowed {
                    Duration::ZERO
                } else {
                    Duration::from_micros(expires - now)
                },
            });
        }
        if reservation.allowed() {
            for ((item, &fp), &skip) in items.iter().zip(counters).zip(skipped.iter()) {
                if skip {
                    continue;
                }
                let cap = self.0.shard_cap;
                let Some(shard) = locked.shard(self.shard_of(fp)) else {
                    continue;
                };
                let value = shard.alive(fp, now).map_or(0, Slot::value);
                let slot = Slot::new(
                    now.saturating_add(micros(item.ttl)),
                    value.saturating_add(1),
                );
                shard.put(fp, slot, now, cap, &self.0.stats);
            }
        }
        reservation
    }

    /// Applies the steps of a settlement atomically.
    pub fn settle(&self, steps: &[Settle<'_>]) {
        let steps = steps.get(..MAX_KEYS).unwrap_or(steps);
        let now = self.now();
        let mut fps = [0u64; MAX_KEYS];
        for (fp, step) in fps.iter_mut().zip(steps) {
            *fp = match step {
                Settle::Release(k) | Settle::Clear(k) => self.fingerprint(KIND_COUNTER, k),
                Settle::Mark(k, _) | Settle::Unmark(k) => self.fingerprint(KIND_MARK, k),
                Settle::Stamp(k, _, _) => self.fingerprint(KIND_STAMP, k),
            };
        }
        let fps = fps.get(..steps.len()).unwrap_or(&[]);
        let mut locked = self.lock(fps);
        let cap = self.0.shard_cap;
        for (step, &fp) in steps.iter().zip(fps) {
            let Some(shard) = locked.shard(self.shard_of(fp)) else {
                continue;
            };
            match step {
                Settle::Release(_) => {
                    if let Some(slot) = shard.alive_mut(fp, now) {
                        *slot = Slot::new(slot.expires(), slot.value().saturating_sub(1));
                    }
                }
                Settle::Clear(_) | Settle::Unmark(_) => {
                    shard.table.remove(&fp);
                }
                Settle::Mark(_, ttl) => {
                    let slot = Slot::new(now.saturating_add(micros(*ttl)), 1);
                    shard.put(fp, slot, now, cap, &self.0.stats);
                }
                Settle::Stamp(_, at, ttl) => {
                    let at = stamp_bits(*at);
                    let later = shard
                        .alive(fp, now)
                        .is_some_and(|s| s.value() != at && stamp_at_or_after(s.value(), at));
                    if !later {
                        let slot = Slot::new(now.saturating_add(micros(*ttl)), at);
                        shard.put(fp, slot, now, cap, &self.0.stats);
                    }
                }
            }
        }
    }

    /// Whether a mark exists.
    pub fn is_marked(&self, key: &Key<'_>) -> bool {
        self.any_marked(&[Probe::Marked(*key)])
    }

    /// Whether any of the probes holds: a mark exists, or a stamp at or
    /// after a time.
    pub fn any_marked(&self, probes: &[Probe<'_>]) -> bool {
        let now = self.now();
        probes.iter().any(|probe| {
            let (fp, since) = match probe {
                Probe::Marked(key) => (self.fingerprint(KIND_MARK, key), None),
                Probe::StampedSince(key, since) => {
                    (self.fingerprint(KIND_STAMP, key), Some(stamp_bits(*since)))
                }
            };
            self.0.shards.get(self.shard_of(fp)).is_some_and(|m| {
                m.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .alive(fp, now)
                    .is_some_and(|slot| since.is_none_or(|t| stamp_at_or_after(slot.value(), t)))
            })
        })
    }

    /// The current value of a counter (0 when absent or expired).
    pub fn count(&self, key: &Key<'_>) -> u32 {
        let now = self.now();
        let fp = self.fingerprint(KIND_COUNTER, key);
        self.0.shards.get(self.shard_of(fp)).map_or(0, |m| {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .alive(fp, now)
                .map_or(0, |s| u32::from(s.value()))
        })
    }

    /// Entries held, live or expired but not yet dropped.
    pub fn len(&self) -> usize {
        self.0
            .shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner).table.len())
            .sum()
    }

    /// Whether the store holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hard cap actually enforced (`max_keys` rounded down to a multiple
    /// of the shard count).
    pub fn capacity(&self) -> usize {
        self.0.shard_cap * self.0.shards.len()
    }

    /// Bytes allocated for the tables (entries, control bytes), excluding the
    /// fixed per-shard overhead.
    pub fn table_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<(u64, Slot)>() + 1;
        self.0
            .shards
            .iter()
            .map(|m| {
                let cap = m
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .table
                    .capacity();
                // hashbrown keeps buckets at 8/7 of capacity, a power of two.
                if cap == 0 {
                    0
                } else {
                    (cap * 8 / 7).next_power_of_two() * per_bucket
                }
            })
            .sum()
    }

    /// Entries dropped because they had expired, and live entries evicted
    /// because the cap was reached.
    pub fn evictions(&self) -> (u64, u64) {
        (
            self.0.stats.expired.load(Ordering::Relaxed),
            self.0.stats.evicted.load(Ordering::Relaxed),
        )
    }

    /// Ordinary keys that were not stored because their shard held nothing
    /// but security state ([`Key::protected`]).
    pub fn refused(&self) -> u64 {
        self.0.stats.refused.load(Ordering::Relaxed)
    }

    /// Drops every expired entry now (they are otherwise dropped lazily when
    /// a shard fills up).
    pub fn purge_expired(&self) {
        let now = self.now();
        for mutex in &*self.0.shards {
            let mut shard = mutex.lock().unwrap_or_else(PoisonError::into_inner);
            let before = shard.table.len();
            shard.table.retain(|_, s| s.expires() > now);
            let gone = before - shard.table.len();
            self.0
                .stats
                .expired
                .fetch_add(gone as u64, Ordering::Relaxed);
        }
    }
}

/// One GCRA step in microseconds, exactly as the Redis script computes it.
fn step_micros(request: &GcraRequest<'_>, offset_us: u64) -> (crate::gcra::Outcome, u64) {
    let quota = request.quota.rounded_to_micros();
    let (outcome, new_offset_ns) = quota.step(offset_us.saturating_mul(1000), request.cost);
    (outcome, new_offset_ns / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcra::Quota;
    use crate::key::Part;
    use palisade_core::ManualClock;

    fn store(max_keys: usize) -> (Arc<ManualClock>, MemoryStore) {
        let (manual, clock) = ManualClock::shared();
        let store = MemoryStore::builder()
            .max_keys(max_keys)
            .clock(clock)
            .build();
        (manual, store)
    }

    #[test]
    fn an_entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<(u64, Slot)>(), 16);
        let s = Slot::new(123_456_789, 42);
        assert_eq!((s.expires(), s.value()), (123_456_789, 42));
        let s = Slot::new(u64::MAX, u16::MAX);
        assert_eq!((s.expires(), s.value()), (EXPIRY_MAX, u16::MAX));
    }

    #[test]
    fn stamps_answer_at_or_after_keep_the_later_time_and_expire() {
        let (clock, store) = store(100);
        let user = Key::new("user").with(Part::Str("u1"));
        let ttl = Duration::from_secs(900);
        // A cut-off just past a 2^16 s boundary, where the low bits wrap.
        let at = 26_000 * 65_536 + 3;
        assert!(!store.any_marked(&[Probe::StampedSince(user, 0)]));
        store.settle(&[Settle::Stamp(user, at, ttl)]);
        for (since, expected) in [
            (at - 899, true),
            (at - 4, true),
            (at, true),
            (at + 1, false),
        ] {
            assert_eq!(
                store.any_marked(&[Probe::StampedSince(user, since)]),
                expected,
                "since {since}"
            );
        }
        // Stamps and marks live apart.
        assert!(!store.is_marked(&user));
        // An earlier stamp arriving late does not move the time back...
        store.settle(&[Settle::Stamp(user, at - 10, ttl)]);
        assert!(store.any_marked(&[Probe::StampedSince(user, at)]));
        // ...a later one moves it forward.
        store.settle(&[Settle::Stamp(user, at + 60, ttl)]);
        assert!(store.any_marked(&[Probe::StampedSince(user, at + 60)]));
        assert!(!store.any_marked(&[Probe::StampedSince(user, at + 61)]));
        clock.advance(Duration::from_micros(899_999_999));
        assert!(store.any_marked(&[Probe::StampedSince(user, at + 60)]));
        clock.advance(Duration::from_micros(1));
        assert!(!store.any_marked(&[Probe::StampedSince(user, 0)]));
    }

    proptest::proptest! {
        /// The 16-bit comparison agrees with the full one whenever the two
        /// times are less than 2^15 s apart, across every wrap point.
        #[test]
        fn stamp_comparison_matches_full_precision(
            at in 0u64..(1 << 40),
            delta in -32_767i64..=32_767,
        ) {
            let since = at.saturating_add_signed(delta);
            proptest::prop_assert_eq!(
                stamp_at_or_after(stamp_bits(at), stamp_bits(since)),
                at >= since
            );
        }
    }

    #[test]
    fn gcra_window_edges_are_exact() {
        let (clock, store) = store(100);
        let key = Key::new("login").with(Part::Int(1));
        let req = [GcraRequest::new(key, Quota::per_minute(5))];
        for _ in 0..5 {
            assert!(store.gcra(&req).allowed());
        }
        let denied = store.gcra(&req);
        assert!(!denied.allowed());
        assert_eq!(denied.retry_after(), Duration::from_secs(12));
        clock.advance(Duration::from_secs(12) - Duration::from_micros(1));
        assert!(!store.gcra(&req).allowed(), "one microsecond early");
        clock.advance(Duration::from_micros(1));
        assert!(store.gcra(&req).allowed(), "exactly at the edge");
        assert!(!store.gcra(&req).allowed());
        clock.advance(Duration::from_secs(60));
        for _ in 0..5 {
            assert!(
                store.gcra(&req).allowed(),
                "full burst after a quiet minute"
            );
        }
    }

    #[test]
    fn multi_key_is_all_or_nothing() {
        let (_clock, store) = store(100);
        let ip = Key::new("ip").with(Part::Int(1));
        let acct = Key::new("acct").with(Part::Str("bob"));
        let wide = Quota::per_minute(10);
        let narrow = Quota::per_minute(2);
        let both = [GcraRequest::new(ip, wide), GcraRequest::new(acct, narrow)];
        assert!(store.gcra(&both).allowed());
        assert!(store.gcra(&both).allowed());
        for _ in 0..5 {
            assert!(!store.gcra(&both).allowed());
        }
        // The refused decisions consumed nothing from the wide key: 8 left.
        let only_ip = [GcraRequest::new(ip, wide)];
        for _ in 0..8 {
            assert!(store.gcra(&only_ip).allowed());
        }
        assert!(!store.gcra(&only_ip).allowed());
    }

    #[test]
    fn repeated_key_in_one_request_counts_twice() {
        let (_clock, store) = store(100);
        let key = Key::new("k");
        let q = Quota::per_minute(3);
        let twice = [GcraRequest::new(key, q), GcraRequest::new(key, q)];
        assert!(store.gcra(&twice).allowed());
        assert!(!store.gcra(&twice).allowed());
        assert!(store.gcra(&[GcraRequest::new(key, q)]).allowed());
    }

    #[test]
    fn entries_expire_at_their_tat() {
        let (clock, store) = store(1000);
        let q = Quota::per_second(1);
        for i in 0..100 {
            assert!(
                store
                    .gcra(&[GcraRequest::new(Key::new("k").with(Part::Int(i)), q)])
                    .allowed()
            );
        }
        assert_eq!(store.len(), 100);
        clock.advance(Duration::from_secs(1));
        store.purge_expired();
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn cap_holds_under_a_key_flood_that_cannot_evict_lockout_state() {
        let (clock, store) = store(1024);
        let cap = store.capacity();
        assert!(cap <= 1024);
        // A victim's lockout counter (15 min) and a revoked token (1 h)...
        let counter = Key::new("pair").with(Part::Str("victim"));
        let revoked = Key::new("jti").with(Part::Int(7));
        let ttl = Duration::from_secs(900);
        assert!(store.reserve(&[Reserve::new(counter, 5, ttl)]).allowed());
        store.settle(&[Settle::Mark(revoked, Duration::from_secs(3600))]);
        // ...then an attacker floods distinct client IPs through the global
        // per-IP limit, hoping to push them out.
        let global = Quota::per_second(30).with_burst(50);
        for i in 0..100_000u64 {
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            store.gcra(&[GcraRequest::new(
                Key::new("flood").with(Part::Int(i)),
                global,
            )]);
            assert!(store.len() <= cap);
        }
        let (_, evicted) = store.evictions();
        assert!(evicted > 90_000, "{evicted}");
        assert_eq!(store.count(&counter), 1, "the lockout counter survived");
        assert!(store.is_marked(&revoked), "the revocation survived");
    }

    /// The attack of issue 17: long-lived cheap marks (30-day "known client"
    /// marks an attacker creates from accounts of their own over many /64s)
    /// outlive a victim's 15-minute lockout counter and the revocation marks,
    /// so "closest to expiry goes" would evict the security state. Protected
    /// keys are out of the ordinary keys' reach.
    #[test]
    fn long_lived_marks_cannot_evict_protected_security_state() {
        let (clock, store) = store(1024);
        let counter = Key::new("lock-pair").protected().with(Part::Str("victim"));
        let revoked = Key::new("revoked-jti").protected().with(Part::Int(7));
        assert!(
            store
                .reserve(&[Reserve::new(counter, 5, Duration::from_secs(900))])
                .allowed()
        );
        store.settle(&[Settle::Mark(revoked, Duration::from_secs(900))]);
        let month = Duration::from_secs(30 * 86_400);
        for i in 0..50_000u64 {
            if i % 1000 == 0 {
                clock.advance(Duration::from_millis(1));
            }
            store.settle(&[Settle::Mark(
                Key::new("known-client").with(Part::Int(i)),
                month,
            )]);
            store.gcra(&[GcraRequest::new(
                Key::new("flood").with(Part::Int(i)),
                Quota::per_minute(1),
            )]);
            assert!(store.len() <= store.capacity());
        }
        assert_eq!(store.count(&counter), 1, "the lockout counter survived");
        assert!(store.is_marked(&revoked), "the revocation survived");
        // Unprotected, the same counter is gone: the flood is a real attack.
        let (_clock, plain) = self::store(1024);
        let exposed = Key::new("lock-pair").with(Part::Str("victim"));
        assert!(
            plain
                .reserve(&[Reserve::new(exposed, 5, Duration::from_secs(900))])
                .allowed()
        );
        for i in 0..50_000u64 {
            plain.settle(&[Settle::Mark(
                Key::new("known-client").with(Part::Int(i)),
                month,
            )]);
        }
        assert_eq!(plain.count(&exposed), 0);
        drop(clock);
    }

    #[test]
    fn security_state_takes_at_most_half_a_shard_from_ordinary_keys() {
        let (_clock, store) = store(64);
        let cap = store.capacity();
        let hour = Duration::from_secs(3600);
        for i in 0..cap as u64 {
            store.settle(&[Settle::Mark(Key::new("ordinary").with(Part::Int(i)), hour)]);
        }
        // A flood of protected keys takes up to half the shard...
        for i in 0..(4 * cap) as u64 {
            store.settle(&[Settle::Mark(
                Key::new("revoked").protected().with(Part::Int(i)),
                hour,
            )]);
        }
        let ordinary = (0..cap as u64)
            .filter(|&i| store.is_marked(&Key::new("ordinary").with(Part::Int(i))))
            .count();
        assert!(
            ordinary >= cap / 2 - cap / 16,
            "{ordinary} of {cap} ordinary keys left"
        );
        // ...the newest protected keys are there (the oldest made room).
        let newest = Key::new("revoked")
            .protected()
            .with(Part::Int((4 * cap - 1) as u64));
        assert!(store.is_marked(&newest));
        // An ordinary key at a shard full of security state is not stored.
        let full = {
            let (_c, s) = self::store(64);
            for i in 0..s.capacity() as u64 {
                s.settle(&[Settle::Mark(
                    Key::new("revoked").protected().with(Part::Int(i)),
                    hour,
                )]);
            }
            s.settle(&[Settle::Mark(Key::new("ordinary"), hour)]);
            assert_eq!(s.refused(), 1);
            s
        };
        assert!(!full.is_marked(&Key::new("ordinary")));
        assert!(full.is_marked(&Key::new("revoked").protected().with(Part::Int(0))));
    }

    #[test]
    fn among_keys_of_one_quota_the_least_recently_used_go_first() {
        let (clock, store) = store(64);
        let q = Quota::per_minute(10);
        let old = Key::new("old");
        assert!(store.gcra(&[GcraRequest::new(old, q)]).allowed());
        clock.advance(Duration::from_secs(1));
        for i in 0..200u64 {
            store.gcra(&[GcraRequest::new(Key::new("new").with(Part::Int(i)), q)]);
        }
        // Evicted: a fresh bucket again (kept, it would have 8 left).
        let d = store.gcra(&[GcraRequest::new(old, q)]);
        assert_eq!(d.outcomes()[0].remaining, 9);
    }

    #[test]
    fn reserve_is_all_or_nothing_and_settles() {
        let (clock, store) = store(100);
        let pair = Key::new("pair").with(Part::Str("bob")).with(Part::Int(1));
        let acct = Key::new("acct").with(Part::Str("bob"));
        let ttl = Duration::from_secs(900);
        let items = [Reserve::new(pair, 5, ttl), Reserve::new(acct, 7, ttl)];
        for n in 1..=5 {
            let r = store.reserve(&items);
            assert!(r.allowed());
            assert_eq!(r.outcomes()[0].count, n);
        }
        let r = store.reserve(&items);
        assert!(!r.allowed());
        assert_eq!(r.retry_after(), ttl);
        assert_eq!(
            store.count(&acct),
            5,
            "the refused reservation took nothing"
        );
        store.settle(&[Settle::Clear(pair), Settle::Release(acct)]);
        assert_eq!(store.count(&pair), 0);
        assert_eq!(store.count(&acct), 4);
        clock.advance(ttl);
        assert_eq!(store.count(&acct), 0, "counters expire");
    }

    #[test]
    fn marks_exempt_items_and_expire() {
        let (clock, store) = store(100);
        let acct = Key::new("acct").with(Part::Str("bob"));
        let known = Key::new("known").with(Part::Str("bob")).with(Part::Int(9));
        let item = [Reserve::new(acct, 1, Duration::from_secs(60)).unless_marked(known)];
        assert!(store.reserve(&item).allowed());
        assert!(!store.reserve(&item).allowed());
        store.settle(&[Settle::Mark(known, Duration::from_secs(30))]);
        assert!(store.is_marked(&known));
        let r = store.reserve(&item);
        assert!(r.allowed());
        assert!(r.outcomes()[0].skipped);
        clock.advance(Duration::from_secs(30));
        assert!(!store.is_marked(&known));
        assert!(!store.reserve(&item).allowed());
    }

    #[test]
    fn concurrent_decisions_never_exceed_the_quota() {
        let (_clock, store) = store(10_000);
        let q = Quota::per_hour(500);
        let allowed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let req = [
                            GcraRequest::new(Key::new("shared"), q),
                            GcraRequest::new(Key::new("other"), Quota::per_hour(100_000)),
                        ];
                        if store.gcra(&req).allowed() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 500);
    }
}

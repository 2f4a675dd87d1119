//! Counters and marks: the primitives behind lockouts and revocations.
//!
//! A **reservation** atomically takes one slot on each of several counters,
//! or none if any counter is already at its limit: this is how a login
//! attempt reserves its right to a password check *before* the check, so a
//! burst of parallel guesses cannot slip past the limit. The caller then
//! **settles**: a failure keeps the slots, a success releases or clears them.
//! Each counter lives `ttl` after its last reservation.
//!
//! A **mark** is a key with a lifetime: a revoked token id, or an (account,
//! client) pair that logged in successfully. A reservation item can be made
//! conditional on a mark (`unless_marked`), so "skip the account-wide counter
//! for a known client" costs no extra round trip.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_store::{Key, Part, Reserve};
//!
//! let pair = Key::new("lock-pair").with(Part::Str("bob")).with(Part::Int(7));
//! let item = Reserve::new(pair, 5, Duration::from_secs(900));
//! assert_eq!(item.limit, 5);
//! assert!(item.unless_marked.is_none());
//! ```

use std::time::Duration;

use crate::gcra::Batch;
use crate::key::Key;

/// One counter of a reservation.
#[derive(Clone, Copy, Debug)]
pub struct Reserve<'a> {
    /// The counter.
    pub key: Key<'a>,
    /// The reservation is refused when the counter already holds this many.
    pub limit: u32,
    /// How long the counter lives after each reservation.
    pub ttl: Duration,
    /// When this mark exists, the item is skipped (neither checked nor counted).
    pub unless_marked: Option<Key<'a>>,
}

impl<'a> Reserve<'a> {
    /// An unconditional item.
    pub fn new(key: Key<'a>, limit: u32, ttl: Duration) -> Self {
        Self {
            key,
            limit,
            ttl,
            unless_marked: None,
        }
    }

    /// Skips this item when `mark` exists.
    #[must_use]
    pub fn unless_marked(mut self, mark: Key<'a>) -> Self {
        self.unless_marked = Some(mark);
        self
    }
}

/// The state of one counter after a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CounterOutcome {
    /// The item was skipped because its mark exists.
    pub skipped: bool,
    /// Whether this counter had room.
    pub allowed: bool,
    /// The count after the reservation (or the blocking count when refused).
    pub count: u32,
    /// When refused, how long until the counter expires.
    pub retry_after: Duration,
}

/// An all-or-nothing reservation over several counters.
pub type Reservation = Batch<CounterOutcome>;

/// One step of a settlement; a settlement's steps are applied atomically.
#[derive(Clone, Copy, Debug)]
pub enum Settle<'a> {
    /// Gives one reserved slot back (the count never goes below zero).
    Release(Key<'a>),
    /// Deletes the counter (a success resets consecutive failures).
    Clear(Key<'a>),
    /// Sets a mark for `ttl` (refreshing it if present).
    Mark(Key<'a>, Duration),
    /// Deletes a mark.
    Unmark(Key<'a>),
    /// Sets a stamp: a mark carrying a time in unix seconds, for `ttl`. A
    /// stamp already there with a later time is kept as it is. Stamps live
    /// apart from marks: [`Probe::StampedSince`] asks about them.
    Stamp(Key<'a>, u64, Duration),
}

/// One question of [`Store::any_marked`](crate::Store::any_marked).
#[derive(Clone, Copy, Debug)]
pub enum Probe<'a> {
    /// The mark exists.
    Marked(Key<'a>),
    /// A stamp exists whose time is at or after this one (unix seconds).
    ///
    /// The memory store keeps the low 16 bits of a stamp's time, so the
    /// answer is exact only while the two times are less than 9 hours
    /// apart; give stamps a shorter time to live (both backends then
    /// decide identically).
    StampedSince(Key<'a>, u64),
}

/// Whether the 16-bit `stamp` is at or after `since`, modulo 2^16 seconds:
/// exact while the two full times are less than 2^15 s (about 9 h) apart.
pub(crate) fn stamp_at_or_after(stamp: u16, since: u16) -> bool {
    stamp.wrapping_sub(since) < 0x8000
}

/// The low 16 bits of a stamp's time, as the memory store keeps it.
pub(crate) fn stamp_bits(at: u64) -> u16 {
    // Truncation is the point: see `stamp_at_or_after`.
    u16::try_from(at & 0xffff).unwrap_or_default()
}

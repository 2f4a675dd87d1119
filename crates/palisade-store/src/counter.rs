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

use crate::gcra::{MAX_KEYS, Source};
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

/// An all-or-nothing reservation over up to [`MAX_KEYS`] counters.
#[derive(Clone, Copy, Debug)]
pub struct Reservation {
    allowed: bool,
    len: usize,
    outcomes: [CounterOutcome; MAX_KEYS],
    source: Source,
}

impl Reservation {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            allowed: true,
            len: 0,
            outcomes: [CounterOutcome::default(); MAX_KEYS],
            source,
        }
    }

    pub(crate) fn push(&mut self, outcome: CounterOutcome) {
        if let Some(slot) = self.outcomes.get_mut(self.len) {
            *slot = outcome;
            self.len += 1;
            self.allowed &= outcome.allowed;
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn fail_open(len: usize) -> Self {
        let mut r = Self::new(Source::FailOpen);
        for _ in 0..len.min(MAX_KEYS) {
            r.push(CounterOutcome {
                allowed: true,
                ..CounterOutcome::default()
            });
        }
        r
    }

    /// Whether every counter had room (and so every slot was taken).
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Each item's outcome, in request order.
    pub fn outcomes(&self) -> &[CounterOutcome] {
        self.outcomes.get(..self.len).unwrap_or(&[])
    }

    /// Where the reservation was decided.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The longest wait among refusing counters (zero when allowed).
    pub fn retry_after(&self) -> Duration {
        self.outcomes()
            .iter()
            .filter(|o| !o.allowed)
            .map(|o| o.retry_after)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

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
}

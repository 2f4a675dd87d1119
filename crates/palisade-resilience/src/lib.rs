//! Resilience for the calls and tasks a service depends on.
//!
//! A background loop started with a bare `tokio::spawn` dies on its first
//! error and nobody notices; an outbound call without a deadline holds a
//! request for as long as the other side likes; a batch run one item at a
//! time overruns its schedule. This crate gives each of those one answer.
//!
//! Outbound calls: [`outbound`] puts a total deadline, budgeted
//! [`retry`]s and a [`breaker`] around any HTTP client service (a tower
//! layer) or any future, in the order bulkhead → total deadline → retry →
//! breaker → attempt timeout. Each module's documentation has a compiled
//! example.

pub mod breaker;
pub mod outbound;
pub mod retry;

pub use breaker::{BreakerConfig, CircuitBreaker, ShortCircuited};
pub use outbound::{Outbound, OutboundError, OutboundLayer};
pub use retry::Retry;

//! Resilience for the calls and tasks a service depends on.
//!
//! A background loop started with a bare `tokio::spawn` dies on its first
//! error and nobody notices; an outbound call without a deadline holds a
//! request for as long as the other side likes; a batch run one item at a
//! time overruns its schedule. This crate gives each of those one answer.
//!
//! Background work: the [`supervisor`] restarts named one-shot and periodic
//! tasks with [`backoff`] under a restart budget and reports them to
//! readiness; [`bulkhead`] bounds batch fan-out and queues.
//!
//! Outbound calls: [`outbound`] puts a total deadline, budgeted
//! [`retry`]s and a [`breaker`] around any HTTP client service (a tower
//! layer) or any future, in the order bulkhead → total deadline → retry →
//! breaker → attempt timeout. Each module's documentation has a compiled
//! example.

pub mod backoff;
pub mod breaker;
pub mod bulkhead;
pub mod outbound;
pub mod retry;
pub mod supervisor;

pub use breaker::{BreakerConfig, CircuitBreaker, ShortCircuited};
pub use outbound::{Outbound, OutboundError, OutboundLayer};
pub use retry::Retry;

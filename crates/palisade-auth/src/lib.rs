//! Authentication for Palisade services.
//!
//! - [`lockout`]: account lockout over the shared store, reserve-then-settle.
//! - [`jwt`]: access tokens, refresh tokens, revocations.

pub mod jwt;
pub mod lockout;

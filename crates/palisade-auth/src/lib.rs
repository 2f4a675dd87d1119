//! Authentication for Palisade services.
//!
//! - [`lockout`]: account lockout over the shared store, reserve-then-settle.
//! - [`jwt`]: access tokens, refresh tokens, revocations.
//! - [`layer`]: the authenticating layer and the `AuthUser` extractor.

pub mod hash;
pub mod jwt;
pub mod layer;
pub mod lockout;
pub mod password;

//! Shared primitives of the Palisade crates.
//!
//! - [`problem`]: RFC 9457 problem details, the one error body of every response;
//! - [`client_ip`]: the client address behind trusted reverse proxies, and the
//!   limiter key that groups IPv6 clients by prefix;
//! - [`clock`]: injectable time, so tests move a clock instead of sleeping;
//! - [`request_id`]: the validated request id that correlates responses and logs;
//! - [`identifier`]: the one normalisation of login identifiers (trim, NFKC,
//!   lower case) shared by logins, lockouts, limits and user stores;
//! - [`principal`]: the authenticated caller, set by an auth layer, read by others;
//! - [`body`] and [`future`]: the response body and future of layers that can
//!   answer on their own;
//! - [`ConfigError`]: the error of every fallible builder.
//!
//! This crate has no heavy dependency; axum integration (`IntoResponse`,
//! extractors) is behind the `axum` feature.
//!
//! # Example
//!
//! ```
//! use palisade_core::problem::{ProblemDetails, ProblemType};
//!
//! let response = ProblemDetails::new(ProblemType::PAYLOAD_TOO_LARGE)
//!     .with_detail("the body is larger than 1 MiB")
//!     .into_bytes_response();
//! assert_eq!(response.status(), 413);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! ```

pub mod body;
pub mod client_ip;
pub mod clock;
mod error;
pub mod future;
pub mod identifier;
pub mod panic_message;
pub mod principal;
pub mod problem;
pub mod request_id;

pub use client_ip::{ClientIp, ClientIpLayer, ClientIpResolver};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::ConfigError;
pub use identifier::normalize_identifier;
pub use principal::Principal;
pub use problem::{FieldError, ProblemDetails, ProblemType, Rejection};
pub use request_id::RequestId;

//! Security assertions and attack corpora any service can run in its own
//! tests, and `palisade-audit`, the command that checks a running service
//! from CI (`cargo install palisade-testkit`; `palisade-audit --help`).
//!
//! Features: `cli` (default) builds the command and pulls `clap`; `audit`
//! gives the checks as a library. In `[dev-dependencies]`,
//! `default-features = false, features = ["audit"]` leaves the argument
//! parser out.
//!
//! - [`http`]: a raw HTTP/1.1 client that sends exactly the bytes it is given,
//!   for malformed and hostile requests that ordinary clients refuse to build;
//! - `audit` (feature `audit`): the security checks of `palisade-audit`
//!   as assertions, against an in-process tower service or a base URL;
//! - [`corpus`]: attack corpora (path traversal, request ids, JWT forgeries);
//! - [`logs`]: an in-memory writer to capture and search log output;
//! - [`redis`]: a real, throwaway `redis-server` on a unix socket, for tests of
//!   anything that keeps its state in Redis (rate limits, lockouts, revoked
//!   tokens), including what happens when the store goes away;
//! - [`postgres`]: a real, throwaway PostgreSQL cluster on a unix socket, for
//!   tests of anything that keeps its data in PostgreSQL, outages included;
//! - [`stub`]: a stub HTTP dependency on loopback that answers, hangs, fails
//!   or refuses, for tests of outbound calls;
//! - [`TestkitError`]: the error of every helper.
//!
//! Tests that need an external program (such as `redis-server` or
//! PostgreSQL) start it
//! themselves and fail with a message saying how to install it when it is
//! missing: a security test that silently skips protects nothing.
//!
//! # Example
//!
//! ```
//! use palisade_testkit::redis::RedisServer;
//!
//! let redis = RedisServer::start().unwrap();
//! assert!(redis.socket_path().exists());
//! redis.ping().unwrap();
//! ```

#[cfg(feature = "audit")]
pub mod audit;
pub mod corpus;
mod error;
pub mod http;
pub mod logs;
#[cfg(unix)]
pub mod postgres;
#[cfg(unix)]
pub mod redis;
#[cfg(unix)]
mod server;
pub mod stub;

pub use error::TestkitError;

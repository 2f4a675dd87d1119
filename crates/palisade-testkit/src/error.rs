//! The error of the test kit's helpers.

use std::io;
use std::path::PathBuf;

/// What went wrong while starting, driving or stopping a test helper.
///
/// Messages carry paths, exit statuses and the tail of a helper's own log,
/// never a value a test stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// The `redis-server` binary could not be found.
    #[error(
        "redis-server not found ({searched}): install it (`apt-get install redis-server`, \
         or run ./scripts/test, which installs it) or set PALISADE_REDIS_SERVER to its path; \
         tests that need Redis fail, they never skip"
    )]
    RedisNotFound {
        /// Where the binary was looked for.
        searched: String,
    },

    /// The PostgreSQL server binaries (`initdb`, `postgres`, `pg_isready`,
    /// `psql`) could not be found.
    #[error(
        "PostgreSQL not found ({searched}): install it (`apt-get install postgresql`, \
         or run ./scripts/test, which installs it) or set PALISADE_PG_BINDIR to the directory \
         of initdb and postgres (Debian: /usr/lib/postgresql/<version>/bin); \
         tests that need PostgreSQL fail, they never skip"
    )]
    PostgresNotFound {
        /// Where the binaries were looked for.
        searched: String,
    },

    /// A server binary was found but could not be started.
    #[error("could not start `{}`: {source}", binary.display())]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A server exited or stayed silent instead of answering its readiness
    /// probe (`PING`, `pg_isready`).
    #[error("{server} did not become ready: {reason}\n{log_tail}")]
    NotReady {
        /// The server (`redis-server`, `postgres`).
        server: &'static str,
        /// Why the wait ended (early exit with its status, or the timeout).
        reason: String,
        /// The last lines the server wrote to its log and to stderr.
        log_tail: String,
    },

    /// A file-system or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The server answered a command with an error reply.
    #[error("redis error reply: {0}")]
    Redis(String),

    /// A PostgreSQL tool (`initdb`, `psql`) failed; its own message.
    #[error("{tool} failed: {message}")]
    Postgres {
        /// The tool that failed.
        tool: &'static str,
        /// Its exit status and the end of its output.
        message: String,
    },

    /// The server's answer was not valid RESP, or not the one expected.
    #[error("unexpected redis reply: {0}")]
    Protocol(String),
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

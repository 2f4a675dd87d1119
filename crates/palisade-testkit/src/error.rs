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

    /// `redis-server` was found but could not be started.
    #[error("could not start `{}`: {source}", binary.display())]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// `redis-server` exited or stayed silent instead of answering `PING`.
    #[error("redis-server did not become ready: {reason}\n{log_tail}")]
    NotReady {
        /// Why the wait ended (early exit with its status, or the timeout).
        reason: String,
        /// The last lines redis-server wrote to its log and to stderr.
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

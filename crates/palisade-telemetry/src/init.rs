//! One call to set up logging: JSON lines (or a pretty format for local
//! development) on stdout through a non-blocking, bounded writer, filtered by
//! `RUST_LOG`.
//!
//! The writer never blocks a request: lines go to a bounded queue drained by
//! a background thread, and when the queue is full (a stalled pipe, a slow
//! collector) new lines are dropped and counted — see
//! [`LogGuard::dropped_lines`] — instead of waited for. Keep the returned
//! [`LogGuard`] alive; dropping it flushes what is queued.
//!
//! It also replaces the process's panic hook with [`PanicHook`]: a panic is
//! one ERROR line (target `palisade::panic`) with its location, thread and
//! request id, its message written as `[redacted: N bytes]`
//! ([`LogConfig::without_panic_message_redaction`] to log it), instead of
//! std's plain text on stderr.
//!
//! # Example
//!
//! ```no_run
//! let logs = palisade_telemetry::init(&palisade_telemetry::LogConfig::default()).unwrap();
//! tracing::info!(addr = "127.0.0.1:8080", "listening");
//! assert_eq!(logs.dropped_lines(), 0);
//! ```

use std::io::Write;

use crate::writer::{BatchGuard, BatchWriter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::format::{JsonFormat, RequestIdRecorder};
use crate::panic::PanicHook;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (production).
    #[default]
    Json,
    /// Human-readable, coloured lines (local development).
    Pretty,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The line format.
    pub format: LogFormat,
    /// The filter when `RUST_LOG` is not set.
    pub default_filter: String,
    /// Bytes buffered before new lines are dropped.
    pub buffer_bytes: usize,
    /// Field names written as `[REDACTED]` (JSON format).
    pub redacted_fields: Vec<String>,
    /// Whether panic messages are logged as `[redacted: N bytes]` (default
    /// `true`); see [`LogConfig::without_panic_message_redaction`].
    pub redact_panic_messages: bool,
}

impl LogConfig {
    /// **Loosens security.** The panic hook logs panic messages as they
    /// are: whatever a `panic!` formats — a token, a password, a user's
    /// data — then reaches the log.
    #[must_use]
    pub fn without_panic_message_redaction(mut self) -> Self {
        self.redact_panic_messages = false;
        self
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            default_filter: "info".to_owned(),
            buffer_bytes: 8 << 20,
            redacted_fields: crate::format::DEFAULT_REDACTED_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            redact_panic_messages: true,
        }
    }
}

/// Keeps the background writer alive; dropping it flushes what is buffered.
#[derive(Debug)]
pub struct LogGuard {
    writer: BatchWriter,
    _guard: BatchGuard,
}

impl LogGuard {
    /// Lines dropped because the buffer was full.
    pub fn dropped_lines(&self) -> u64 {
        self.writer.dropped_lines()
    }
}

/// Why logging could not be set up.
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot initialise logging: {}", self.0)
    }
}

impl std::error::Error for InitError {}

/// Installs the global subscriber writing to stdout, and the [`PanicHook`].
/// The panic hook logs messages redacted unless
/// [`LogConfig::redact_panic_messages`] is off.
pub fn init(config: &LogConfig) -> Result<LogGuard, InitError> {
    init_with_writer(config, std::io::stdout())
}

/// The non-blocking writer [`init`] uses: a [`BatchWriter`] over `writer`
/// buffering at most `capacity` bytes.
pub fn non_blocking<W: Write + Send + 'static>(
    writer: W,
    capacity: usize,
) -> (BatchWriter, LogGuard) {
    let (writer, guard) = BatchWriter::new(writer, capacity);
    (
        writer.clone(),
        LogGuard {
            writer,
            _guard: guard,
        },
    )
}

/// Like [`init`], writing to `writer` (the panic hook included).
pub fn init_with_writer<W: Write + Send + 'static>(
    config: &LogConfig,
    writer: W,
) -> Result<LogGuard, InitError> {
    let (writer, guard) = non_blocking(writer, config.buffer_bytes);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.default_filter))
        .map_err(|e| InitError(e.to_string()))?;
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(RequestIdRecorder);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonFormat::with_redacted_fields(&config.redacted_fields))
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    .with_writer(writer),
            )
            .try_init(),
    };
    result.map_err(|e| InitError(e.to_string()))?;
    let hook = PanicHook::new();
    if config.redact_panic_messages {
        hook.install();
    } else {
        hook.without_message_redaction().install();
    }
    Ok(guard)
}

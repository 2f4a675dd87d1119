//! A panic hook that writes one JSON log line instead of std's text.
//!
//! Rust's default hook prints `thread 'x' panicked at src/a.rs:3:5:` and the
//! message on stderr: plain text outside the JSON log, without the request
//! id, and with whatever the `panic!` formatted — `panic!("bad token {t}")`
//! puts a secret there. [`PanicHook`] replaces it (and [`init`](crate::init)
//! installs it) with one ERROR event through `tracing`, target
//! `palisade::panic`, carrying:
//!
//! - `location`: `file:line:column`;
//! - `thread`: the thread's name (`<unnamed>` without one);
//! - `request_id`: when the panic happens while serving a request
//!   ([`palisade_core::request_id::current`]);
//! - `panic`: `[redacted: N bytes]` — the message only with
//!   [`PanicHook::without_message_redaction`]
//!   ([`LogConfig::without_panic_message_redaction`](crate::LogConfig::without_panic_message_redaction));
//! - `backtrace`: when `RUST_BACKTRACE` asks for one.
//!
//! The line goes through the subscriber like any other, so it lands in the
//! same JSON stream (or the pretty format). Where no subscriber would take
//! it (none set, or a filter leaving `palisade::panic` out), the same fields
//! are written to stderr as one JSON object: a panic is never lost.
//!
//! # Example
//!
//! ```
//! use palisade_telemetry::PanicHook;
//!
//! let hook = PanicHook::new();
//! assert!(hook.redacts_messages());
//! assert!(!hook.without_message_redaction().redacts_messages());
//! // `hook.install()` replaces the process's panic hook; `init` does it.
//! ```

use std::backtrace::{Backtrace, BacktraceStatus};
use std::panic::PanicHookInfo;

use palisade_core::panic_message::PanicMessage;
use palisade_core::request_id::with_current;

/// The tracing target of panic lines.
pub const PANIC_TARGET: &str = "palisade::panic";

/// Builds the JSON panic hook. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct PanicHook {
    redact: bool,
}

impl Default for PanicHook {
    fn default() -> Self {
        Self::new()
    }
}

impl PanicHook {
    /// The hook: messages redacted to their length.
    pub fn new() -> Self {
        Self { redact: true }
    }

    /// **Loosens security.** Logs the panic message as it is: whatever a
    /// `panic!` formats — a token, a password, a user's data — then reaches
    /// the log.
    pub fn without_message_redaction(mut self) -> Self {
        self.redact = false;
        self
    }

    /// Whether messages are logged redacted (the default).
    pub fn redacts_messages(&self) -> bool {
        self.redact
    }

    /// Replaces the process's panic hook (std's stderr text, or a hook set
    /// before) with this one. Does nothing on a thread that is panicking.
    pub fn install(self) {
        if std::thread::panicking() {
            return;
        }
        let redact = self.redact;
        std::panic::set_hook(Box::new(move |info| report(info, redact)));
    }
}

fn report(info: &PanicHookInfo<'_>, redact: bool) {
    let message = PanicMessage::new(info.payload(), redact);
    let location = info.location();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("<unnamed>");
    let backtrace = Backtrace::capture();
    let backtrace = (backtrace.status() == BacktraceStatus::Captured)
        .then(|| tracing::field::display(&backtrace));
    let emit = |request_id: Option<&str>| {
        if !tracing::enabled!(target: PANIC_TARGET, tracing::Level::ERROR) {
            // No subscriber, or one filtering panics out: a panic is never
            // lost, it goes to stderr as the same JSON object.
            let line = serde_json::json!({
                "level": "ERROR",
                "target": PANIC_TARGET,
                "message": "thread panicked",
                "location": location.map(ToString::to_string),
                "thread": thread,
                "request_id": request_id,
                "panic": message.to_string(),
            });
            eprintln!("{line}");
            return;
        }
        tracing::error!(
            target: PANIC_TARGET,
            location = location.map(tracing::field::display),
            thread,
            request_id,
            panic = %message,
            backtrace,
            "thread panicked"
        );
    };
    if with_current(|context| emit(Some(context.id.as_str()))).is_none() {
        emit(None);
    }
}

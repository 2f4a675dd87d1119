//! How a panic's message is written to a log: redacted to its length by
//! default, because messages are formatted by code that may put a token or a
//! password in them (`panic!("bad token {t}")`). One rule for every place
//! that logs a panic (the panic-catching layer, the JSON panic hook).
//!
//! # Example
//!
//! ```
//! use palisade_core::panic_message::PanicMessage;
//!
//! let payload: Box<dyn std::any::Any + Send> = Box::new(String::from("bad token abc123"));
//! assert_eq!(PanicMessage::new(&*payload, true).to_string(), "[redacted: 16 bytes]");
//! assert_eq!(PanicMessage::new(&*payload, false).to_string(), "bad token abc123");
//! ```

use std::any::Any;
use std::fmt;

/// A panic payload's message, displayed redacted (`[redacted: N bytes]`)
/// unless asked otherwise.
#[derive(Debug, Clone, Copy)]
pub struct PanicMessage<'a> {
    text: Option<&'a str>,
    redact: bool,
}

impl<'a> PanicMessage<'a> {
    /// The message of `payload` (a `&str` or a `String`, as `panic!` makes).
    pub fn new(payload: &'a (dyn Any + Send), redact: bool) -> Self {
        Self {
            text: text(payload),
            redact,
        }
    }
}

/// The text of a `panic!` payload (`&str` or `String`).
pub fn text(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Display for PanicMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.text, self.redact) {
            (None, _) => f.write_str("[non-string panic payload]"),
            (Some(text), true) => write!(f, "[redacted: {} bytes]", text.len()),
            (Some(text), false) => f.write_str(text),
        }
    }
}
